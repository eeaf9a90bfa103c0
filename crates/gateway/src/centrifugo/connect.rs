//! The `connect` and `refresh` commands: who the connection is (a token, the
//! connect proxy, or anonymous), its server-side subscriptions, and its expiry.

use std::collections::HashMap;

use switchboard_core::Disconnect;
use switchboard_protocol::centrifugo::codes::ErrorCode;
use switchboard_protocol::centrifugo::pb;

use super::auth::TokenError;
use super::expiry::{close_at, expiry, instant_of};
use super::session::{error_reply, refuse, reply, Outcome, Session};
use super::subscribe::Authority;
use crate::connection::subscriptions::member;
use crate::registry::ConnHandle;

impl Session {
    pub(super) async fn connect(&mut self, id: u32, req: pb::ConnectRequest) -> Outcome {
        if self.connected.is_some() {
            return Outcome::Disconnect(Disconnect::BAD_REQUEST);
        }
        let proxy = self.front.node.config.proxies.connect.clone();
        let (user, conn_info, expires_at, channels, data) =
            if let (true, Some(endpoint)) = (req.token.is_empty(), proxy) {
                match self.connect_by_proxy(id, &endpoint, &req).await {
                    Ok(c) => {
                        self.proxied = true;
                        (c.user, c.info, c.expire_at, c.channels, c.data)
                    }
                    Err(outcome) => {
                        refuse("proxy");
                        return outcome;
                    }
                }
            } else if req.token.is_empty() {
                if !self.front.node.config.anonymous_connect() {
                    refuse("no_token");
                    return error_reply(id, ErrorCode::UNAUTHORIZED);
                }
                (String::new(), None, None, Vec::new(), None)
            } else {
                let Some(verifier) = &self.front.verifier else {
                    refuse("invalid_token");
                    return Outcome::Disconnect(Disconnect::INVALID_TOKEN);
                };
                match verifier.connection(&req.token) {
                    Ok(t) => (t.user, t.info, t.expires_at, t.channels, None),
                    Err(TokenError::Expired) => {
                        refuse("token_expired");
                        return error_reply(id, ErrorCode::TOKEN_EXPIRED);
                    }
                    Err(TokenError::Invalid(e)) => {
                        tracing::debug!(error = %e, "connection token refused");
                        refuse("invalid_token");
                        return Outcome::Disconnect(Disconnect::INVALID_TOKEN);
                    }
                }
            };
        self.identity.user = user.clone();
        self.identity.conn_info = conn_info;
        // The refresh proxy is asked at the expiry itself; a client with a token
        // gets the close delay to bring a new one.
        let server_refresh = self.proxied && self.front.node.config.proxies.refresh.is_some();
        self.connected = Some(match server_refresh {
            true => expires_at.map(instant_of),
            false => expires_at.map(close_at),
        });
        self.unauthenticated = None;
        self.front.node.registry.add(
            self.identity.client.clone(),
            ConnHandle {
                app: None,
                user,
                outbound: self.outbound.clone(),
                mailbox: self.mailbox.clone(),
            },
        );
        metrics::counter!("switchboard_connections_accepted_total").increment(1);

        // Server-side subscriptions from the token; the client may ask to recover them.
        let mut subs = HashMap::new();
        let mut pending = Vec::new();
        for channel in channels {
            let mut sub_req = req.subs.get(&channel).cloned().unwrap_or_default();
            sub_req.channel = channel.clone();
            match self
                .prepare_subscription(&sub_req, Authority::Server(None), false)
                .await
            {
                Ok((result, live)) => {
                    subs.insert(channel, result);
                    pending.push(live);
                }
                Err(code) => {
                    tracing::debug!(channel, code = code.code, "server-side subscription failed")
                }
            }
        }
        // The client refreshes only what it can: a token. The refresh proxy's
        // expiry is the server's business.
        let (expires, ttl) = expiry(expires_at.filter(|_| !server_refresh));
        self.send(&pb::Reply {
            id,
            connect: Some(pb::ConnectResult {
                client: self.identity.client.to_string(),
                version: env!("CARGO_PKG_VERSION").into(),
                expires,
                ttl,
                data: data.unwrap_or_default(),
                subs,
                ping: self.front.node.config.ping_interval.as_secs() as u32,
                pong: true,
                node: self.front.node.id.clone(),
                session: self.stream.as_deref().unwrap_or_default().to_owned(),
            }),
            ..Default::default()
        });
        let member = member!(self, self.format);
        for live in pending {
            self.subs.go_live(&member, live).await;
        }
        Outcome::Done
    }

    pub(super) fn refresh(&mut self, id: u32, req: pb::RefreshRequest) -> Outcome {
        let Some(verifier) = &self.front.verifier else {
            return error_reply(id, ErrorCode::NOT_AVAILABLE);
        };
        let token = match verifier.connection(&req.token) {
            Ok(t) => t,
            Err(TokenError::Expired) => return error_reply(id, ErrorCode::TOKEN_EXPIRED),
            Err(TokenError::Invalid(_)) => return Outcome::Disconnect(Disconnect::INVALID_TOKEN),
        };
        let Some(connected) = self.connected.as_mut() else {
            return Outcome::Disconnect(Disconnect::BAD_REQUEST);
        };
        if token.user != self.identity.user {
            return Outcome::Disconnect(Disconnect::INVALID_TOKEN);
        }
        *connected = token.expires_at.map(close_at);
        if token.info.is_some() {
            self.identity.conn_info = token.info;
        }
        let (expires, ttl) = expiry(token.expires_at);
        let client = self.identity.client.to_string();
        reply(id, |r| {
            r.refresh = Some(pb::RefreshResult {
                client,
                version: env!("CARGO_PKG_VERSION").into(),
                expires,
                ttl,
            })
        })
    }
}
