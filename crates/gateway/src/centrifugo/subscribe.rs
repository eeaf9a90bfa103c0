//! The Centrifugo side of subscribing: permissions (subscription tokens,
//! user-limited channels, namespace rules), join/leave wishes, and the reply.
//! The algorithm itself is [`crate::connection::subscriptions`].

use bytes::Bytes;
use switchboard_core::channel;
use switchboard_core::hub::JoinLeave;
use switchboard_core::namespace::NamespaceOptions;
use switchboard_core::StreamPosition;
use switchboard_protocol::centrifugo::codes::ErrorCode;
use switchboard_protocol::centrifugo::pb;

use super::auth::TokenError;
use super::encode;
use super::errors::error_code;
use super::expiry::{close_at, expiry, instant_of};
use super::session::{error_reply, reply, Outcome, Session, SubRefresher};
use crate::connection::subscriptions::member;
use crate::connection::subscriptions::{Pending, Positioning, Request};

/// Who allows a subscription.
pub(super) enum Authority {
    /// The client asked: namespace rules and subscription tokens decide.
    Client,
    /// The server (the connection token's channels, the server API) granted it,
    /// with this channel info.
    Server(Option<Bytes>),
    /// The subscribe proxy granted it, with this channel info, until
    /// `expire_at` (Unix seconds; `None`: for good).
    Backend {
        info: Option<Bytes>,
        expire_at: Option<u64>,
    },
}

impl Session {
    pub(super) async fn subscribe_command(
        &mut self,
        id: u32,
        req: pb::SubscribeRequest,
    ) -> Outcome {
        // The subscribe proxy decides for a client without a subscription token.
        let mut authority = Authority::Client;
        let mut data = None;
        if let Some(endpoint) = self.subscribe_proxy(&req) {
            if let Err(code) = self.admissible(&req.channel) {
                return error_reply(id, code);
            }
            match self.subscribe_by_proxy(id, &endpoint, &req).await {
                Ok(granted) => {
                    authority = Authority::Backend {
                        info: granted.info,
                        expire_at: granted.expire_at,
                    };
                    data = granted.data;
                }
                Err(outcome) => return outcome,
            }
        }
        // Whatever refreshed this channel before, a new subscription starts over.
        self.sub_refreshers.remove(&req.channel);
        let refreshed_by = match &authority {
            Authority::Backend {
                expire_at: Some(_), ..
            } => self.sub_refresh_proxy(&req.channel),
            _ => None,
        };
        let server_refreshed = refreshed_by.is_some();
        match self
            .prepare_subscription(&req, authority, server_refreshed)
            .await
        {
            Ok((mut result, live)) => {
                if let Some(data) = data {
                    result.data = data;
                }
                if let Some(endpoint) = refreshed_by {
                    let refresher = SubRefresher {
                        endpoint,
                        call: None,
                    };
                    self.sub_refreshers.insert(req.channel.clone(), refresher);
                }
                self.send(&pb::Reply {
                    id,
                    subscribe: Some(result),
                    ..Default::default()
                });
                let member = member!(self, self.format);
                self.subs.go_live(&member, live).await;
                Outcome::Done
            }
            Err(code) => error_reply(id, code),
        }
    }

    /// Checks permission (unless the server granted it), then subscribes
    /// (pending) and builds the reply.
    /// A subscription the backend refreshes (`server_refreshed`) expires at its
    /// `expire_at` exactly, and its client is not told to refresh it.
    pub(super) async fn prepare_subscription(
        &mut self,
        req: &pb::SubscribeRequest,
        authority: Authority,
        server_refreshed: bool,
    ) -> Result<(pb::SubscribeResult, Pending), ErrorCode> {
        let options = self
            .front
            .node
            .channel_options(&req.channel)
            .map_err(error_code)?
            .clone();
        self.readable(&options)?;
        self.subs
            .admit(&self.front.node, &req.channel)
            .map_err(error_code)?;
        let (chan_info, token_exp) = match authority {
            Authority::Server(info) => (info, None),
            Authority::Backend { info, expire_at } => (info, expire_at),
            Authority::Client => self.check_subscribe_permission(req, &options)?,
        };
        let expires_at = match server_refreshed {
            true => token_exp.map(instant_of),
            false => token_exp.map(close_at),
        };
        let join_leave =
            match options.join_leave && (req.join_leave || options.force_push_join_leave) {
                false => JoinLeave::None,
                true if options.join_leave_per_user => JoinLeave::PerUser,
                true => JoinLeave::EveryConnection,
            };
        let request = Request {
            channel: &req.channel,
            options: &options,
            join_leave,
            position: Positioning {
                recoverable: req.recoverable,
                recover_from: req.recover.then(|| StreamPosition {
                    offset: req.offset,
                    epoch: req.epoch.clone(),
                }),
                last: false,
            },
            chan_info,
            expires_at,
            user: None,
        };
        let member = member!(self, self.format);
        let (position, pending) = self
            .subs
            .prepare(&member, request)
            .await
            .map_err(error_code)?;
        let mut result = pb::SubscribeResult {
            recoverable: position.positioned,
            positioned: position.positioned,
            was_recovering: position.was_recovering,
            recovered: position.recovered,
            publications: position.missed.iter().map(encode::publication).collect(),
            epoch: position.stream.epoch,
            offset: position.stream.offset,
            ..Default::default()
        };
        if token_exp.is_some() && !server_refreshed {
            (result.expires, result.ttl) = expiry(token_exp);
        }
        Ok((result, pending))
    }

    /// Subscribes the connection on the server API's word and tells the client
    /// with a subscribe push, then the publications it recovers, then live ones.
    pub(super) async fn server_subscribe(
        &mut self,
        channel: String,
        info: Option<Bytes>,
        data: Option<Bytes>,
        recover_since: Option<StreamPosition>,
    ) {
        let recovering = recover_since.is_some();
        let since = recover_since.unwrap_or_default();
        let req = pb::SubscribeRequest {
            channel: channel.clone(),
            recoverable: recovering,
            recover: recovering,
            offset: since.offset,
            epoch: since.epoch,
            ..Default::default()
        };
        let (result, live) = match self
            .prepare_subscription(&req, Authority::Server(info), false)
            .await
        {
            Ok(prepared) => prepared,
            Err(code) => {
                tracing::debug!(client = %self.identity.client, channel, code = code.code, "server subscribe failed");
                return;
            }
        };
        let push = |push: pb::Push| pb::Reply {
            push: Some(push),
            ..Default::default()
        };
        self.send(&push(pb::Push {
            channel: channel.clone(),
            subscribe: Some(pb::Subscribe {
                recoverable: result.recoverable,
                epoch: result.epoch,
                offset: result.offset,
                positioned: result.positioned,
                data: data.unwrap_or_default(),
            }),
            ..Default::default()
        }));
        for publication in result.publications {
            self.send(&push(pb::Push {
                channel: channel.clone(),
                r#pub: Some(publication),
                ..Default::default()
            }));
        }
        let member = member!(self, self.format);
        self.subs.go_live(&member, live).await;
    }

    /// The subscribe proxy to ask about `req`, if its namespace has one and the
    /// client brings no token. A user-limited channel needs no backend to say
    /// whose it is.
    fn subscribe_proxy(&self, req: &pb::SubscribeRequest) -> Option<http::Uri> {
        if !req.token.is_empty() || channel::user_allowed(&req.channel, self.user()).is_some() {
            return None;
        }
        let node = &self.front.node;
        let options = node.channel_options(&req.channel).ok()?;
        node.config
            .proxies
            .subscribe_endpoint(options)
            .ok()
            .flatten()
    }

    /// Where the sub_refresh proxy of `channel`'s namespace is, if it has one.
    fn sub_refresh_proxy(&self, channel: &str) -> Option<http::Uri> {
        let node = &self.front.node;
        let options = node.channel_options(channel).ok()?;
        node.config
            .proxies
            .sub_refresh_endpoint(options)
            .ok()
            .flatten()
    }

    /// What is checked before the backend is asked: the namespace, the
    /// encoding, room for the subscription.
    fn admissible(&self, channel: &str) -> Result<(), ErrorCode> {
        let node = &self.front.node;
        let options = node.channel_options(channel).map_err(error_code)?;
        self.readable(options)?;
        self.subs.admit(node, channel).map_err(error_code)
    }

    /// Refuses a JSON connection a namespace whose data may be any bytes.
    pub(super) fn readable(&self, options: &NamespaceOptions) -> Result<(), ErrorCode> {
        if options.binary_data && !self.encoding.is_binary() {
            return Err(ErrorCode::NOT_AVAILABLE);
        }
        Ok(())
    }

    /// Returns the channel info and expiry a subscription token grants, or refuses.
    /// A token given is always checked; without one, `insecure` lets a client into
    /// any channel (Centrifugo's development mode).
    fn check_subscribe_permission(
        &self,
        req: &pb::SubscribeRequest,
        options: &NamespaceOptions,
    ) -> Result<(Option<Bytes>, Option<u64>), ErrorCode> {
        if !req.token.is_empty() {
            let verifier = self
                .front
                .verifier
                .as_ref()
                .ok_or(ErrorCode::PERMISSION_DENIED)?;
            return match verifier.subscription(&req.token) {
                Ok(t) if t.user == self.user() && t.channel == req.channel => {
                    Ok((t.info, t.expires_at))
                }
                Ok(_) => Err(ErrorCode::PERMISSION_DENIED),
                Err(TokenError::Expired) => Err(ErrorCode::TOKEN_EXPIRED),
                Err(TokenError::Invalid(e)) => {
                    tracing::debug!(error = %e, "subscription token refused");
                    Err(ErrorCode::PERMISSION_DENIED)
                }
            };
        }
        if self.front.node.config.insecure {
            return Ok((None, None));
        }
        match channel::user_allowed(&req.channel, self.user()) {
            Some(true) => Ok((None, None)),
            Some(false) => Err(ErrorCode::PERMISSION_DENIED),
            None if options.allow_subscribe_for_client => Ok((None, None)),
            None => Err(ErrorCode::PERMISSION_DENIED),
        }
    }

    pub(super) fn sub_refresh(&mut self, id: u32, req: pb::SubRefreshRequest) -> Outcome {
        let Some(verifier) = &self.front.verifier else {
            return error_reply(id, ErrorCode::NOT_AVAILABLE);
        };
        let token = match verifier.subscription(&req.token) {
            Ok(t) => t,
            Err(TokenError::Expired) => return error_reply(id, ErrorCode::TOKEN_EXPIRED),
            Err(TokenError::Invalid(_)) => return error_reply(id, ErrorCode::PERMISSION_DENIED),
        };
        if token.user != self.user() || token.channel != req.channel {
            return error_reply(id, ErrorCode::PERMISSION_DENIED);
        }
        let Some(entry) = self.subs.get_mut(&req.channel) else {
            return error_reply(id, ErrorCode::PERMISSION_DENIED);
        };
        entry.expires_at = token.expires_at.map(close_at);
        let (expires, ttl) = expiry(token.expires_at);
        reply(id, |r| {
            r.sub_refresh = Some(pb::SubRefreshResult { expires, ttl })
        })
    }
}
