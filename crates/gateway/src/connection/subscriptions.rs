//! A connection's subscriptions, and the algorithm that makes and ends them.
//!
//! A subscription is registered in the hub *before* the channel's stream is read,
//! held back (pending) until the protocol has queued its reply, then released
//! from the position the reply covered: nothing published meanwhile is lost or
//! sent twice. Presence is added before the reply and the join announced after
//! it; the leave undoes all of it in reverse. Every protocol goes through here.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use switchboard_core::hub::{FormatId, JoinLeave, Subscriber};
use switchboard_core::namespace::NamespaceOptions;
use switchboard_core::queue::Outbound;
use switchboard_core::{
    BrokerError, ClientInfo, HistoryQuery, PresenceChange, Publication, StreamPosition,
};
use tokio::time::Instant;

use super::identity::Identity;
use crate::node::{history_options, ChannelError, Node};

/// One subscription of this connection.
#[derive(Debug)]
pub struct Entry {
    /// Channel info the subscription's credentials carried.
    pub chan_info: Option<Bytes>,
    /// When the subscription's credentials expire.
    pub expires_at: Option<Instant>,
    /// The user this subscription is present as, when not the connection's
    /// (a Pusher presence channel's `user_id`).
    pub user: Option<String>,
    presence: bool,
    join_leave: bool,
}

/// What a protocol asks for when it subscribes a connection, its own checks
/// (permissions, credentials) already passed.
#[derive(Debug)]
pub struct Request<'a> {
    pub channel: &'a str,
    pub options: &'a NamespaceOptions,
    /// Which join and leave events the subscriber receives.
    pub join_leave: JoinLeave,
    /// Where the subscription starts in the channel's stream.
    pub position: Positioning,
    pub chan_info: Option<Bytes>,
    pub expires_at: Option<Instant>,
    /// Present in the channel as this user rather than the connection's.
    pub user: Option<String>,
}

/// How a subscription is positioned in a channel's stream.
#[derive(Debug, Clone, Default)]
pub struct Positioning {
    /// The client tracks its position (it may recover later).
    pub recoverable: bool,
    /// Recover everything published after this position.
    pub recover_from: Option<StreamPosition>,
    /// Start with the channel's newest publication, if it keeps one (Pusher's
    /// cache channels): [`Position::missed`] holds it.
    pub last: bool,
}

/// Where a new subscription stands, for the protocol's reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// The channel keeps history and the subscription tracks its position.
    pub positioned: bool,
    /// The stream's top when the subscription was made.
    pub stream: StreamPosition,
    /// A recovery was asked for.
    pub was_recovering: bool,
    /// The recovery is provably complete: `missed` holds everything after the
    /// client's position.
    pub recovered: bool,
    pub missed: Vec<Publication>,
}

/// A subscription whose reply is on its way; [`Subscriptions::go_live`] releases it.
#[must_use = "a pending subscription receives nothing until it goes live"]
pub struct Pending {
    channel: String,
    sub: Arc<Subscriber>,
    after: u64,
    join_leave: bool,
    /// This connection is its user's first in the channel.
    user_joined: bool,
}

/// A session's [`Member`], borrowed field by field (so that its other fields stay
/// free): `$session` has `front.node`, `identity` and `outbound`; `$format` is its
/// hub format, wherever the protocol keeps it.
macro_rules! member {
    ($session:expr, $format:expr) => {
        $crate::connection::subscriptions::Member {
            node: &$session.front.node,
            identity: &$session.identity,
            format: $format,
            outbound: &$session.outbound,
        }
    };
}
pub(crate) use member;

/// What a connection subscribes with: its node, identity, wire format and queue.
pub struct Member<'a> {
    pub node: &'a Node,
    pub identity: &'a Identity,
    pub format: FormatId,
    pub outbound: &'a Arc<Outbound>,
}

/// A connection's subscriptions by channel.
#[derive(Debug, Default)]
pub struct Subscriptions {
    entries: HashMap<String, Entry>,
}

fn position_only() -> HistoryQuery {
    HistoryQuery {
        limit: Some(0),
        ..Default::default()
    }
}

impl Subscriptions {
    pub fn get(&self, channel: &str) -> Option<&Entry> {
        self.entries.get(channel)
    }

    pub fn get_mut(&mut self, channel: &str) -> Option<&mut Entry> {
        self.entries.get_mut(channel)
    }

    pub fn contains(&self, channel: &str) -> bool {
        self.entries.contains_key(channel)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest expiry of a subscription's credentials.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.expires_at).min()
    }

    /// The channels whose subscription credentials have expired at `now`.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.expires_at.is_some_and(|at| now >= at))
            .map(|(channel, _)| channel.clone())
            .collect()
    }

    /// Whether `channel` can be added: not subscribed yet, and room for one more.
    /// Protocols check it before their own permission checks.
    pub fn admit(&self, node: &Node, channel: &str) -> Result<(), ChannelError> {
        if self.entries.contains_key(channel) {
            return Err(ChannelError::AlreadySubscribed);
        }
        if self.entries.len() >= node.config.limits.max_channels_per_connection {
            return Err(ChannelError::LimitExceeded);
        }
        Ok(())
    }

    /// Registers the subscriber (pending), makes sure the broker delivers the
    /// channel, reads the stream position (and the missed publications when
    /// recovering) and adds the connection to the channel's presence. The
    /// protocol queues its reply from the [`Position`], then calls
    /// [`Subscriptions::go_live`] with the [`Pending`].
    pub async fn prepare(
        &mut self,
        member: &Member<'_>,
        req: Request<'_>,
    ) -> Result<(Position, Pending), ChannelError> {
        self.admit(member.node, req.channel)?;
        let channel = req.channel;
        let node = member.node;
        let sub = Subscriber::pending(
            member.identity.client.clone(),
            member.format,
            member.outbound.clone(),
            req.join_leave,
        );
        if node.hub.add(channel, sub.clone()) {
            if let Some(hooks) = node.webhooks() {
                hooks.sync_channel(channel);
            }
        }
        if let Err(e) = node.broker.subscribe(channel).await {
            leave_hub(member, channel).await;
            return Err(e.into());
        }
        let position = match read_position(node, channel, req.options, &req.position).await {
            Ok(p) => p,
            Err(e) => {
                leave_hub(member, channel).await;
                return Err(e);
            }
        };
        // Without presence there is nothing to tell a user's connections apart:
        // each one counts as the user joining.
        let mut user_joined = true;
        if req.options.presence {
            let info = client_info(member.identity, req.user.as_deref(), req.chan_info.clone());
            let user = info.user.clone();
            user_joined = match node.presence.add(channel, info).await {
                Ok(joined) => {
                    if let (true, Some(hooks)) = (joined, node.webhooks()) {
                        hooks.user_joined(channel, &user);
                    }
                    joined
                }
                Err(e) => {
                    // Not tracked, so its leave will not count either.
                    tracing::warn!(channel, error = %e, "presence add failed");
                    false
                }
            };
        }
        self.entries.insert(
            channel.to_owned(),
            Entry {
                chan_info: req.chan_info,
                expires_at: req.expires_at,
                user: req.user,
                presence: req.options.presence,
                join_leave: req.options.join_leave,
            },
        );
        let pending = Pending {
            channel: channel.to_owned(),
            sub,
            after: position.stream.offset,
            join_leave: req.options.join_leave,
            user_joined,
        };
        Ok((position, pending))
    }

    /// Releases what arrived while the reply was built, then announces the join.
    pub async fn go_live(&self, member: &Member<'_>, pending: Pending) {
        pending.sub.go_live(pending.after);
        if pending.join_leave {
            let entry = self.entries.get(&pending.channel);
            let chan_info = entry.and_then(|s| s.chan_info.clone());
            let user = entry.and_then(|s| s.user.as_deref());
            let join = PresenceChange {
                info: client_info(member.identity, user, chan_info),
                user_changed: pending.user_joined,
            };
            let published = member
                .node
                .broker
                .publish_join(&pending.channel, join)
                .await;
            if let Err(e) = published {
                tracing::warn!(channel = pending.channel, error = %e, "join event failed");
            }
        }
    }

    /// Ends a subscription if there is one: hub, presence, leave event. True
    /// when there was one.
    pub async fn leave(&mut self, member: &Member<'_>, channel: &str) -> bool {
        let Some(entry) = self.entries.remove(channel) else {
            return false;
        };
        leave_hub(member, channel).await;
        let info = client_info(member.identity, entry.user.as_deref(), entry.chan_info);
        let mut user_left = true;
        if entry.presence {
            user_left = match member.node.presence.remove(channel, &info).await {
                Ok(left) => {
                    if let (true, Some(hooks)) = (left, member.node.webhooks()) {
                        hooks.user_left(channel, &info.user);
                    }
                    left
                }
                Err(e) => {
                    tracing::warn!(channel, error = %e, "presence remove failed");
                    false
                }
            };
        }
        if entry.join_leave {
            let leave = PresenceChange {
                info,
                user_changed: user_left,
            };
            if let Err(e) = member.node.broker.publish_leave(channel, leave).await {
                tracing::warn!(channel, error = %e, "leave event failed");
            }
        }
        true
    }

    /// Ends every subscription.
    pub async fn leave_all(&mut self, member: &Member<'_>) {
        let channels: Vec<String> = self.entries.keys().cloned().collect();
        for channel in channels {
            self.leave(member, &channel).await;
        }
    }
}

/// The connection as presence and join/leave events carry it in one channel.
fn client_info(identity: &Identity, user: Option<&str>, chan_info: Option<Bytes>) -> ClientInfo {
    let mut info = identity.client_info(chan_info);
    if let Some(user) = user {
        info.user = user.to_owned();
    }
    info
}

async fn leave_hub(member: &Member<'_>, channel: &str) {
    if member.node.hub.remove(channel, &member.identity.client) {
        if let Some(hooks) = member.node.webhooks() {
            hooks.sync_channel(channel);
        }
        if let Err(e) = member.node.broker.unsubscribe(channel).await {
            tracing::warn!(channel, error = %e, "broker unsubscribe failed");
        }
    }
}

/// Reads the stream position, and the missed publications when recovering.
async fn read_position(
    node: &Node,
    channel: &str,
    options: &NamespaceOptions,
    asked: &Positioning,
) -> Result<Position, ChannelError> {
    let Some(history) = history_options(options) else {
        return Ok(Position::default());
    };
    let broker = &node.broker;
    let recoverable = options.force_recovery || asked.recoverable;
    let mut position = Position {
        positioned: recoverable,
        ..Default::default()
    };
    let recover_from = asked.recover_from.clone().filter(|_| recoverable);
    let top = if asked.last {
        let newest = HistoryQuery {
            limit: Some(1),
            reverse: true,
            ..Default::default()
        };
        let newest = broker.history(channel, &newest, history).await?;
        position.missed = newest.publications;
        newest.position
    } else if let Some(since) = recover_from {
        position.was_recovering = true;
        let since = HistoryQuery {
            since: Some(since),
            ..Default::default()
        };
        match broker.history(channel, &since, history).await {
            Ok(missed) => {
                metrics::counter!("switchboard_recovery_total", "result" => "recovered")
                    .increment(1);
                position.recovered = true;
                position.missed = missed.publications;
                missed.position
            }
            Err(BrokerError::Unrecoverable) => {
                metrics::counter!("switchboard_recovery_total", "result" => "not_recovered")
                    .increment(1);
                broker
                    .history(channel, &position_only(), history)
                    .await?
                    .position
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        broker
            .history(channel, &position_only(), history)
            .await?
            .position
    };
    position.stream = top;
    Ok(position)
}
