//! The protocol state machine of one connection: commands in, replies out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::OpCode;
use switchboard_core::hub::FormatId;
use switchboard_core::queue::{Outbound, Record};
use switchboard_core::{ClientInfo, Disconnect, HistoryQuery, StreamPosition};
use switchboard_protocol::centrifugo::codec::is_pong;
use switchboard_protocol::centrifugo::codes::ErrorCode;
use switchboard_protocol::centrifugo::pb;
use switchboard_protocol::centrifugo::Encoding;
use tokio::time::Instant;

use super::subscribe::SubEntry;
use crate::auth::{now_secs, TokenError};
use crate::encode;
use crate::node::Node;
use crate::registry::{ConnHandle, Control, Mailbox};

/// A far-away instant for "no deadline".
fn never() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// An instant `exp` (seconds since the Unix epoch) from now.
pub(super) fn instant_of(exp: u64) -> Instant {
    Instant::now() + Duration::from_secs(exp.saturating_sub(now_secs()))
}

/// Token bucket limiting commands per second.
struct Bucket {
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            tokens: f64::from(rate),
            rate: f64::from(rate),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a read command asks for.
enum Read {
    Presence,
    History,
}

pub(super) struct Connected {
    pub user: String,
    pub conn_info: Option<Bytes>,
    pub expires_at: Option<Instant>,
}

pub struct Session {
    pub(super) node: Arc<Node>,
    pub(super) encoding: Encoding,
    pub(super) format: FormatId,
    pub(super) outbound: Arc<Outbound>,
    pub(super) id: Arc<str>,
    mailbox: Arc<Mailbox>,
    pub(super) connected: Option<Connected>,
    pub(super) subs: HashMap<String, SubEntry>,
    bucket: Bucket,
    opened: Instant,
    pong_deadline: Option<Instant>,
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

impl Session {
    pub fn new(
        node: Arc<Node>,
        encoding: Encoding,
        outbound: Arc<Outbound>,
        mailbox: Arc<Mailbox>,
    ) -> Session {
        let rate = node.config.limits.max_commands_per_second;
        Session {
            node,
            encoding,
            format: encode::format_of(encoding),
            outbound,
            id: uuid::Uuid::new_v4().to_string().into(),
            mailbox,
            connected: None,
            subs: HashMap::new(),
            bucket: Bucket::new(rate),
            opened: Instant::now(),
            pong_deadline: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn user(&self) -> &str {
        self.connected.as_ref().map_or("", |c| c.user.as_str())
    }

    pub(super) fn client_info(&self, chan_info: Option<Bytes>) -> ClientInfo {
        ClientInfo {
            user: self.user().to_owned(),
            client: self.id.to_string(),
            conn_info: self.connected.as_ref().and_then(|c| c.conn_info.clone()),
            chan_info,
        }
    }

    /// Queues a reply or push for the writer.
    pub(super) fn send(&self, reply: &pb::Reply) {
        match self.encoding.encode_reply(reply) {
            Ok(data) => {
                let _ = self.outbound.push_reply(Record::new(data));
            }
            Err(e) => {
                tracing::debug!(client = %self.id, error = %e, "reply cannot be encoded");
                self.outbound
                    .close(Disconnect::INAPPROPRIATE_PROTOCOL, true);
            }
        }
    }

    /// The next instant something must happen without client input: the connect
    /// timeout, a pong deadline, or a token expiry.
    pub fn deadline(&self) -> Instant {
        let mut at = match &self.connected {
            None => self.opened + self.node.config.connect_timeout,
            Some(c) => c.expires_at.unwrap_or_else(never),
        };
        if let Some(pong) = self.pong_deadline {
            at = at.min(pong);
        }
        for sub in self.subs.values() {
            if let Some(exp) = sub.expires_at {
                at = at.min(exp);
            }
        }
        at
    }

    pub fn on_deadline(&mut self) -> Result<(), Disconnect> {
        let now = Instant::now();
        match &self.connected {
            None if now >= self.opened + self.node.config.connect_timeout => {
                return Err(Disconnect::STALE)
            }
            Some(c) if c.expires_at.is_some_and(|e| now >= e) => return Err(Disconnect::EXPIRED),
            _ => {}
        }
        if self.pong_deadline.is_some_and(|p| now >= p) {
            return Err(Disconnect::NO_PONG);
        }
        if self
            .subs
            .values()
            .any(|s| s.expires_at.is_some_and(|e| now >= e))
        {
            return Err(Disconnect::SUB_EXPIRED);
        }
        Ok(())
    }

    pub fn on_ping_tick(&mut self) -> Result<(), Disconnect> {
        if self.connected.is_none() {
            return Ok(());
        }
        if self.pong_deadline.is_none() {
            let _ = self.outbound.push(Record::new(self.encoding.ping_record()));
            self.pong_deadline = Some(Instant::now() + self.node.config.pong_timeout);
        }
        Ok(())
    }

    pub async fn on_control(&mut self, control: Control) {
        match control {
            Control::Unsubscribe { channel } => {
                if self.subs.contains_key(&channel) {
                    self.unsubscribe_channel(&channel).await;
                    self.send(&pb::Reply {
                        push: Some(pb::Push {
                            channel,
                            unsubscribe: Some(pb::Unsubscribe {
                                code: switchboard_protocol::centrifugo::codes::UNSUBSCRIBE_SERVER,
                                reason: "server unsubscribe".into(),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
        }
    }

    /// Runs every command of one frame.
    pub async fn on_frame(&mut self, data: &[u8], opcode: OpCode) -> Result<(), Disconnect> {
        if opcode != super::ws::data_opcode(self.encoding) {
            tracing::debug!(client = %self.id, "frame type does not match the connection's encoding");
            return Err(Disconnect::BAD_REQUEST);
        }
        let limits = &self.node.config.limits;
        let commands = self
            .encoding
            .decode_commands(data, limits.max_commands_per_frame)
            .map_err(|e| {
                tracing::debug!(client = %self.id, error = %e, "malformed frame");
                metrics::counter!("switchboard_commands_total", "method" => "malformed", "result" => "bad_request").increment(1);
                Disconnect::BAD_REQUEST
            })?;
        // Any frame proves the client is alive.
        self.pong_deadline = None;
        for command in commands {
            if is_pong(&command) {
                continue;
            }
            if !self.bucket.take() {
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
            // An asynchronous message needs a handler; none is configured.
            let _ = send;
            return Outcome::Disconnect(Disconnect::NOT_AVAILABLE);
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
            self.unsubscribe_channel(&req.channel).await;
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
        if c.rpc.is_some() {
            return error_reply(id, ErrorCode::NOT_AVAILABLE);
        }
        error_reply(id, ErrorCode::METHOD_NOT_FOUND)
    }

    async fn connect(&mut self, id: u32, req: pb::ConnectRequest) -> Outcome {
        if self.connected.is_some() {
            return Outcome::Disconnect(Disconnect::BAD_REQUEST);
        }
        let (user, conn_info, expires_at, channels) = if req.token.is_empty() {
            if !self.node.config.insecure {
                refuse("no_token");
                return error_reply(id, ErrorCode::UNAUTHORIZED);
            }
            (String::new(), None, None, Vec::new())
        } else {
            let Some(verifier) = &self.node.verifier else {
                refuse("invalid_token");
                return Outcome::Disconnect(Disconnect::INVALID_TOKEN);
            };
            match verifier.connection(&req.token) {
                Ok(t) => (t.user, t.info, t.expires_at, t.channels),
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
        self.connected = Some(Connected {
            user: user.clone(),
            conn_info,
            expires_at: expires_at.map(instant_of),
        });
        self.node.registry.add(
            self.id.clone(),
            ConnHandle {
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
            match self.prepare_subscription(&sub_req, true).await {
                Ok((result, live)) => {
                    subs.insert(channel, result);
                    pending.push(live);
                }
                Err(code) => {
                    tracing::debug!(channel, code = code.code, "server-side subscription failed")
                }
            }
        }
        let (expires, ttl) = match expires_at {
            Some(exp) => (true, exp.saturating_sub(now_secs()) as u32),
            None => (false, 0),
        };
        self.send(&pb::Reply {
            id,
            connect: Some(pb::ConnectResult {
                client: self.id.to_string(),
                version: env!("CARGO_PKG_VERSION").into(),
                expires,
                ttl,
                subs,
                ping: self.node.config.ping_interval.as_secs() as u32,
                pong: true,
                node: self.node.id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
        for live in pending {
            self.go_live(live).await;
        }
        Outcome::Done
    }

    fn refresh(&mut self, id: u32, req: pb::RefreshRequest) -> Outcome {
        let Some(verifier) = &self.node.verifier else {
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
        if token.user != connected.user {
            return Outcome::Disconnect(Disconnect::INVALID_TOKEN);
        }
        connected.expires_at = token.expires_at.map(instant_of);
        if token.info.is_some() {
            connected.conn_info = token.info;
        }
        let (expires, ttl) = match token.expires_at {
            Some(exp) => (true, exp.saturating_sub(now_secs()) as u32),
            None => (false, 0),
        };
        let client = self.id.to_string();
        reply(id, |r| {
            r.refresh = Some(pb::RefreshResult {
                client,
                version: env!("CARGO_PKG_VERSION").into(),
                expires,
                ttl,
            })
        })
    }

    async fn publish(&mut self, id: u32, req: pb::PublishRequest) -> Outcome {
        let options = match self.node.channel_options(&req.channel) {
            Ok(o) => o,
            Err(code) => return error_reply(id, code),
        };
        let subscribed = self.subs.get(&req.channel);
        let allowed = options.allow_publish_for_client
            || (options.allow_publish_for_subscriber && subscribed.is_some());
        if !allowed {
            return error_reply(id, ErrorCode::PERMISSION_DENIED);
        }
        let info = self.client_info(subscribed.and_then(|s| s.chan_info.clone()));
        match self
            .node
            .publish(&req.channel, req.data, Some(info), None)
            .await
        {
            Ok(_) => {
                metrics::counter!("switchboard_publications_total", "source" => "client")
                    .increment(1);
                reply(id, |r| r.publish = Some(pb::PublishResult {}))
            }
            Err(code) => error_reply(id, code),
        }
    }

    /// Presence and history need the namespace's `*_for_client` permission, or its
    /// `*_for_subscriber` one and a subscription.
    fn may_read(&self, channel: &str, what: Read) -> Result<(), ErrorCode> {
        let options = self.node.channel_options(channel)?;
        let (for_client, for_subscriber) = match what {
            Read::Presence => (
                options.allow_presence_for_client,
                options.allow_presence_for_subscriber,
            ),
            Read::History => (
                options.allow_history_for_client,
                options.allow_history_for_subscriber,
            ),
        };
        if for_client || (for_subscriber && self.subs.contains_key(channel)) {
            Ok(())
        } else {
            Err(ErrorCode::PERMISSION_DENIED)
        }
    }

    async fn presence(&mut self, id: u32, channel: String) -> Outcome {
        if let Err(code) = self.may_read(&channel, Read::Presence) {
            return error_reply(id, code);
        }
        match self.node.presence(&channel).await {
            Ok(members) => {
                let presence = members
                    .iter()
                    .map(|(client, info)| (client.clone(), encode::client_info(info)))
                    .collect();
                reply(id, |r| r.presence = Some(pb::PresenceResult { presence }))
            }
            Err(code) => error_reply(id, code),
        }
    }

    async fn presence_stats(&mut self, id: u32, channel: String) -> Outcome {
        if let Err(code) = self.may_read(&channel, Read::Presence) {
            return error_reply(id, code);
        }
        match self.node.presence_stats(&channel).await {
            Ok(stats) => reply(id, |r| {
                r.presence_stats = Some(pb::PresenceStatsResult {
                    num_clients: stats.num_clients,
                    num_users: stats.num_users,
                })
            }),
            Err(code) => error_reply(id, code),
        }
    }

    async fn history(&mut self, id: u32, req: pb::HistoryRequest) -> Outcome {
        if let Err(code) = self.may_read(&req.channel, Read::History) {
            return error_reply(id, code);
        }
        let query = history_query(
            req.limit,
            req.since.map(|s| (s.offset, s.epoch)),
            req.reverse,
        );
        match self.node.history(&req.channel, &query).await {
            Ok(result) => reply(id, |r| {
                r.history = Some(pb::HistoryResult {
                    publications: result
                        .publications
                        .iter()
                        .map(encode::publication)
                        .collect(),
                    epoch: result.position.epoch,
                    offset: result.position.offset,
                })
            }),
            Err(code) => error_reply(id, code),
        }
    }

    /// Leaves every channel and forgets the connection.
    pub async fn close(&mut self) {
        let channels: Vec<String> = self.subs.keys().cloned().collect();
        for channel in channels {
            self.unsubscribe_channel(&channel).await;
        }
        if self.connected.is_some() {
            self.node.registry.remove(&self.id);
        }
    }
}

fn refuse(reason: &'static str) {
    metrics::counter!("switchboard_connections_refused_total", "reason" => reason).increment(1);
}

pub(super) fn reply(id: u32, fill: impl FnOnce(&mut pb::Reply)) -> Outcome {
    let mut r = pb::Reply {
        id,
        ..Default::default()
    };
    fill(&mut r);
    Outcome::Reply(Box::new(r))
}

/// Maps the protocol's history parameters onto a query: a limit of 0 asks only for
/// the stream position, a negative one for everything kept.
pub fn history_query(limit: i32, since: Option<(u64, String)>, reverse: bool) -> HistoryQuery {
    HistoryQuery {
        since: since.map(|(offset, epoch)| StreamPosition { offset, epoch }),
        limit: match limit {
            l if l < 0 => None,
            l => Some(l as usize),
        },
        reverse,
    }
}
