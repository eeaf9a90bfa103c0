//! The Centrifugo protocol state machine of one connection: commands in,
//! replies out. Driven by a transport through [`crate::connection::Session`].

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use switchboard_core::hub::FormatId;
use switchboard_core::queue::{Outbound, Record};
use switchboard_core::Disconnect;
use switchboard_protocol::centrifugo::codec::is_pong;
use switchboard_protocol::centrifugo::codes::{ErrorCode, UNSUBSCRIBE_SERVER};
use switchboard_protocol::centrifugo::{pb, Encoding};
use tokio::time::Instant;

use super::errors;
use super::expiry::{instant_of, never};
use super::proxy::ClientRequest;
use super::Centrifugo;
use crate::connection::identity::Identity;
use crate::connection::limits::CommandRate;
use crate::connection::subscriptions::member;
use crate::connection::subscriptions::Subscriptions;
use crate::connection::{Framing, Goodbye};
use crate::node::UnauthenticatedSlot;
use crate::registry::{Control, Mailbox};

pub struct Session {
    pub(super) front: Arc<Centrifugo>,
    pub(super) encoding: Encoding,
    pub(super) format: FormatId,
    pub(super) outbound: Arc<Outbound>,
    pub(super) identity: Identity,
    pub(super) mailbox: Arc<Mailbox>,
    /// Set once the connect command succeeded: when the credentials expire.
    pub(super) connected: Option<Option<Instant>>,
    pub(super) subs: Subscriptions,
    rate: CommandRate,
    opened: Instant,
    pong_deadline: Option<Instant>,
    /// Counted as not authenticated until the connect command succeeds.
    pub(super) unauthenticated: Option<UnauthenticatedSlot>,
    /// Over an HTTP stream: the session its client names in emulation requests,
    /// told in the connect reply.
    pub(super) stream: Option<Arc<str>>,
    /// The transport and forwarded headers, for the proxies.
    pub(super) request: ClientRequest,
    /// Let in by the connect proxy: the refresh proxy decides at its expiry.
    pub(super) proxied: bool,
    /// The refresh proxy's call under way, stopped with the connection.
    pub(super) refresher: Option<tokio::task::AbortHandle>,
    /// Subscriptions whose expiry the sub_refresh proxy decides, by channel:
    /// its endpoint and the call under way.
    pub(super) sub_refreshers: HashMap<String, SubRefresher>,
}

/// A subscription the backend refreshes: where to ask, and the call under way.
pub(super) struct SubRefresher {
    pub endpoint: http::Uri,
    pub call: Option<tokio::task::AbortHandle>,
}

impl Drop for SubRefresher {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.abort();
        }
    }
}

/// What a command handler returns: the reply to send, or a disconnect.
pub(super) enum Outcome {
    Reply(Box<pb::Reply>),
    /// A reply already queued (subscribe queues its own before going live).
    Done,
    Disconnect(Disconnect),
}

pub(super) fn error_reply(id: u32, code: ErrorCode) -> Outcome {
    Outcome::Reply(Box::new(pb::Reply {
        id,
        error: Some(pb::Error {
            code: code.code,
            message: code.message.to_owned(),
            temporary: code.temporary,
        }),
        ..Default::default()
    }))
}

pub(super) fn reply(id: u32, fill: impl FnOnce(&mut pb::Reply)) -> Outcome {
    let mut r = pb::Reply {
        id,
        ..Default::default()
    };
    fill(&mut r);
    Outcome::Reply(Box::new(r))
}

fn method_of(c: &pb::Command) -> &'static str {
    match c {
        c if c.connect.is_some() => "connect",
        c if c.subscribe.is_some() => "subscribe",
        c if c.unsubscribe.is_some() => "unsubscribe",
        c if c.publish.is_some() => "publish",
        c if c.presence.is_some() => "presence",
        c if c.presence_stats.is_some() => "presence_stats",
        c if c.history.is_some() => "history",
        c if c.ping.is_some() => "ping",
        c if c.send.is_some() => "send",
        c if c.rpc.is_some() => "rpc",
        c if c.refresh.is_some() => "refresh",
        c if c.sub_refresh.is_some() => "sub_refresh",
        _ => "unknown",
    }
}

pub(super) fn refuse(reason: &'static str) {
    metrics::counter!("switchboard_connections_refused_total", "reason" => reason).increment(1);
}

impl Session {
    pub fn new(
        front: Arc<Centrifugo>,
        encoding: Encoding,
        outbound: Arc<Outbound>,
        mailbox: Arc<Mailbox>,
        unauthenticated: Option<UnauthenticatedSlot>,
        stream: Option<Arc<str>>,
        request: ClientRequest,
    ) -> Session {
        let rate = front.node.config.limits.max_commands_per_second;
        Session {
            format: front.format(encoding),
            front,
            encoding,
            outbound,
            identity: Identity::new(),
            mailbox,
            connected: None,
            subs: Subscriptions::default(),
            rate: CommandRate::new(rate),
            opened: Instant::now(),
            pong_deadline: None,
            unauthenticated,
            stream,
            request,
            proxied: false,
            refresher: None,
            sub_refreshers: HashMap::new(),
        }
    }

    pub(super) fn user(&self) -> &str {
        &self.identity.user
    }

    /// Queues a reply or push for the writer.
    pub(super) fn send(&self, reply: &pb::Reply) {
        match self.encoding.encode_reply(reply) {
            Ok(data) => {
                let _ = self.outbound.push_reply(Record::new(data));
            }
            Err(e) => {
                tracing::debug!(client = %self.identity.client, error = %e, "reply cannot be encoded");
                self.outbound
                    .close(Disconnect::INAPPROPRIATE_PROTOCOL, true);
            }
        }
    }

    /// Runs every command of one frame.
    async fn on_frame(&mut self, data: &[u8], binary: bool) -> Result<(), Disconnect> {
        if binary != self.encoding.is_binary() {
            tracing::debug!(client = %self.identity.client, "frame type does not match the connection's encoding");
            return Err(Disconnect::BAD_REQUEST);
        }
        let limits = &self.front.node.config.limits;
        let commands = self
            .encoding
            .decode_commands(data, limits.max_commands_per_frame)
            .map_err(|e| {
                tracing::debug!(client = %self.identity.client, error = %e, "malformed frame");
                metrics::counter!("switchboard_commands_total", "method" => "malformed", "result" => "bad_request").increment(1);
                Disconnect::BAD_REQUEST
            })?;
        // Any frame proves the client is alive.
        self.pong_deadline = None;
        for command in commands {
            if is_pong(&command) {
                continue;
            }
            if !self.rate.take() {
                return Err(Disconnect::TOO_MANY_REQUESTS);
            }
            let method = method_of(&command);
            let outcome = self.dispatch(command).await;
            let result = match &outcome {
                Outcome::Reply(r) if r.error.is_some() => "error",
                Outcome::Disconnect(_) => "disconnect",
                _ => "ok",
            };
            metrics::counter!("switchboard_commands_total", "method" => method, "result" => result)
                .increment(1);
            match outcome {
                Outcome::Reply(reply) => self.send(&reply),
                Outcome::Done => {}
                Outcome::Disconnect(d) => return Err(d),
            }
        }
        Ok(())
    }

    async fn dispatch(&mut self, c: pb::Command) -> Outcome {
        let id = c.id;
        if let Some(send) = c.send {
            if self.connected.is_none() {
                return Outcome::Disconnect(Disconnect::BAD_REQUEST);
            }
            return self.send_message(send).await;
        }
        if id == 0 {
            // Every command but send and pong expects a reply, so needs an id.
            return Outcome::Disconnect(Disconnect::BAD_REQUEST);
        }
        if let Some(req) = c.connect {
            return self.connect(id, req).await;
        }
        if self.connected.is_none() {
            return Outcome::Disconnect(Disconnect::BAD_REQUEST);
        }
        if let Some(req) = c.subscribe {
            return self.subscribe_command(id, req).await;
        }
        if let Some(req) = c.unsubscribe {
            let member = member!(self, self.format);
            self.subs.leave(&member, &req.channel).await;
            return reply(id, |r| r.unsubscribe = Some(pb::UnsubscribeResult {}));
        }
        if let Some(req) = c.publish {
            return self.publish(id, req).await;
        }
        if let Some(req) = c.presence {
            return self.presence(id, req.channel).await;
        }
        if let Some(req) = c.presence_stats {
            return self.presence_stats(id, req.channel).await;
        }
        if let Some(req) = c.history {
            return self.history(id, req).await;
        }
        if c.ping.is_some() {
            return reply(id, |r| r.ping = Some(pb::PingResult {}));
        }
        if let Some(req) = c.refresh {
            return self.refresh(id, req);
        }
        if let Some(req) = c.sub_refresh {
            return self.sub_refresh(id, req);
        }
        if let Some(req) = c.rpc {
            return self.rpc(id, req).await;
        }
        error_reply(id, ErrorCode::METHOD_NOT_FOUND)
    }
}

impl crate::connection::Session for Session {
    fn id(&self) -> &str {
        &self.identity.client
    }

    fn framing(&self) -> &'static Framing {
        const JSON: Framing = Framing {
            binary: false,
            join: Some(Encoding::Json.separator()),
        };
        const PROTOBUF: Framing = Framing {
            binary: true,
            join: Some(Encoding::Protobuf.separator()),
        };
        match self.encoding {
            Encoding::Json => &JSON,
            Encoding::Protobuf => &PROTOBUF,
        }
    }

    async fn on_message(&mut self, data: Bytes, binary: bool) -> Result<(), Disconnect> {
        self.on_frame(&data, binary).await
    }

    async fn on_control(&mut self, control: Control) {
        match control {
            Control::Unsubscribe { channel } => {
                let member = member!(self, self.format);
                if self.subs.leave(&member, &channel).await {
                    self.send(&pb::Reply {
                        push: Some(pb::Push {
                            channel,
                            unsubscribe: Some(pb::Unsubscribe {
                                code: UNSUBSCRIBE_SERVER,
                                reason: "server unsubscribe".into(),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
            Control::Subscribe {
                channel,
                info,
                data,
                recover_since,
            } => {
                if self.connected.is_some() && !self.subs.contains(&channel) {
                    self.server_subscribe(channel, info, data, recover_since)
                        .await;
                }
            }
            Control::SubRefresh {
                channel,
                expire_at,
                info,
            } => {
                if let Some(entry) = self.subs.get_mut(&channel) {
                    entry.expires_at = expire_at.map(instant_of);
                    if info.is_some() {
                        entry.chan_info = info;
                    }
                }
            }
            Control::Refresh { expire_at, info } => {
                if let Some(connected) = self.connected.as_mut() {
                    // The transport asks for the deadline again after a control
                    // message: a past expiry closes the connection as expired.
                    *connected = expire_at.map(instant_of);
                    if info.is_some() {
                        self.identity.conn_info = info;
                    }
                }
            }
        }
    }

    /// The connect timeout, a pong deadline, or a token expiry.
    fn deadline(&self) -> Instant {
        let mut at = match &self.connected {
            None => self.opened + self.front.node.config.connect_timeout,
            Some(expires_at) => expires_at.unwrap_or_else(never),
        };
        if let Some(pong) = self.pong_deadline {
            at = at.min(pong);
        }
        if let Some(exp) = self.subs.next_expiry() {
            at = at.min(exp);
        }
        at
    }

    fn on_deadline(&mut self) -> Result<(), Disconnect> {
        let now = Instant::now();
        let connected = self.connected;
        match connected {
            None if now >= self.opened + self.front.node.config.connect_timeout => {
                return Err(Disconnect::STALE)
            }
            Some(Some(expires_at)) if now >= expires_at && !self.refresh_by_proxy() => {
                return Err(Disconnect::EXPIRED)
            }
            _ => {}
        }
        if self.pong_deadline.is_some_and(|p| now >= p) {
            return Err(Disconnect::NO_PONG);
        }
        for channel in self.subs.expired(now) {
            if !self.sub_refresh_by_proxy(&channel) {
                return Err(Disconnect::SUB_EXPIRED);
            }
        }
        Ok(())
    }

    fn on_ping_tick(&mut self) -> Result<(), Disconnect> {
        if self.connected.is_none() {
            return Ok(());
        }
        if self.pong_deadline.is_none() {
            let _ = self.outbound.push(Record::new(self.encoding.ping_record()));
            self.pong_deadline = Some(Instant::now() + self.front.node.config.pong_timeout);
        }
        Ok(())
    }

    fn goodbye(disconnect: &Disconnect) -> Goodbye {
        errors::goodbye(disconnect)
    }

    /// A disconnect push: code, reason and advice, as the close frame would carry them.
    fn farewell(&self, disconnect: &Disconnect) -> Option<Bytes> {
        let goodbye = errors::goodbye(disconnect);
        let push = pb::Reply {
            push: Some(pb::Push {
                disconnect: Some(pb::Disconnect {
                    code: goodbye.code.into(),
                    reason: disconnect.message.to_string(),
                    reconnect: goodbye.reconnect,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.encoding.encode_reply(&push).ok()
    }

    async fn close(&mut self) {
        if let Some(refresher) = self.refresher.take() {
            refresher.abort();
        }
        self.sub_refreshers.clear();
        let member = member!(self, self.format);
        self.subs.leave_all(&member).await;
        if self.connected.is_some() {
            self.front.node.registry.remove(&self.identity.client);
        }
    }
}
