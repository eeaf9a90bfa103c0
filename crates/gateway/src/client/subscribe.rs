//! Subscribing, recovering and unsubscribing.
//!
//! A subscription is registered in the hub *before* the channel's stream is read,
//! held back (pending) until the reply is queued, then released from the position
//! the reply covered: nothing published meanwhile is lost or sent twice.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_core::channel;
use switchboard_core::hub::{JoinLeave, Subscriber};
use switchboard_core::namespace::NamespaceOptions;
use switchboard_core::{BrokerError, HistoryQuery, PresenceChange, StreamPosition};
use switchboard_protocol::centrifugo::codes::ErrorCode;
use switchboard_protocol::centrifugo::pb;
use tokio::time::Instant;

use super::session::{error_reply, instant_of, reply, Outcome, Session};
use crate::auth::{now_secs, TokenError};
use crate::encode;
use crate::node::{broker_error, history_options};

/// One subscription of this connection.
pub(super) struct SubEntry {
    pub chan_info: Option<Bytes>,
    pub expires_at: Option<Instant>,
    pub presence: bool,
    pub join_leave: bool,
}

/// A subscription whose reply is being sent; goes live after it.
pub(super) struct Live {
    channel: String,
    sub: Arc<Subscriber>,
    after: u64,
    join_leave: bool,
    /// This connection is its user's first in the channel.
    user_joined: bool,
}

fn position_only() -> HistoryQuery {
    HistoryQuery {
        limit: Some(0),
        ..Default::default()
    }
}

impl Session {
    pub(super) async fn subscribe_command(
        &mut self,
        id: u32,
        req: pb::SubscribeRequest,
    ) -> Outcome {
        match self.prepare_subscription(&req, false).await {
            Ok((result, live)) => {
                self.send(&pb::Reply {
                    id,
                    subscribe: Some(result),
                    ..Default::default()
                });
                self.go_live(live).await;
                Outcome::Done
            }
            Err(code) => error_reply(id, code),
        }
    }

    /// Checks permission, registers the subscriber (pending), reads the stream and
    /// builds the reply. `server_side` subscriptions come from the connection token,
    /// which already granted them.
    pub(super) async fn prepare_subscription(
        &mut self,
        req: &pb::SubscribeRequest,
        server_side: bool,
    ) -> Result<(pb::SubscribeResult, Live), ErrorCode> {
        let options = self.node.channel_options(&req.channel)?.clone();
        if self.subs.contains_key(&req.channel) {
            return Err(ErrorCode::ALREADY_SUBSCRIBED);
        }
        if self.subs.len() >= self.node.config.limits.max_channels_per_connection {
            return Err(ErrorCode::LIMIT_EXCEEDED);
        }
        let (chan_info, token_exp) = if server_side {
            (None, None)
        } else {
            self.check_subscribe_permission(req, &options)?
        };

        let channel = req.channel.as_str();
        let join_leave =
            match options.join_leave && (req.join_leave || options.force_push_join_leave) {
                false => JoinLeave::None,
                true if options.join_leave_per_user => JoinLeave::PerUser,
                true => JoinLeave::EveryConnection,
            };
        let sub = Subscriber::pending(
            self.id.clone(),
            self.format,
            self.outbound.clone(),
            join_leave,
        );
        self.node.hub.add(channel, sub.clone());
        if let Err(e) = self.node.broker.subscribe(channel).await {
            self.leave_hub(channel).await;
            return Err(broker_error(e));
        }
        let (mut result, after) = match self.read_position(req, &options).await {
            Ok(r) => r,
            Err(code) => {
                self.leave_hub(channel).await;
                return Err(code);
            }
        };
        if let Some(exp) = token_exp {
            result.expires = true;
            result.ttl = exp.saturating_sub(now_secs()) as u32;
        }
        // Without presence there is nothing to tell a user's connections apart:
        // each one counts as the user joining.
        let mut user_joined = true;
        if options.presence {
            let info = self.client_info(chan_info.clone());
            user_joined = match self.node.presence.add(channel, info).await {
                Ok(joined) => joined,
                Err(e) => {
                    // Not tracked, so its leave will not count either.
                    tracing::warn!(channel, error = %e, "presence add failed");
                    false
                }
            };
        }
        self.subs.insert(
            req.channel.clone(),
            SubEntry {
                chan_info,
                expires_at: token_exp.map(instant_of),
                presence: options.presence,
                join_leave: options.join_leave,
            },
        );
        let live = Live {
            channel: req.channel.clone(),
            sub,
            after,
            join_leave: options.join_leave,
            user_joined,
        };
        Ok((result, live))
    }

    /// Returns the channel info and expiry a subscription token grants, or refuses.
    fn check_subscribe_permission(
        &self,
        req: &pb::SubscribeRequest,
        options: &NamespaceOptions,
    ) -> Result<(Option<Bytes>, Option<u64>), ErrorCode> {
        if !req.token.is_empty() {
            let verifier = self
                .node
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
        match channel::user_allowed(&req.channel, self.user()) {
            Some(true) => Ok((None, None)),
            Some(false) => Err(ErrorCode::PERMISSION_DENIED),
            None if options.allow_subscribe_for_client => Ok((None, None)),
            None => Err(ErrorCode::PERMISSION_DENIED),
        }
    }

    /// Reads the stream position, and the missed publications when recovering.
    /// Returns the reply and the offset it covers.
    async fn read_position(
        &self,
        req: &pb::SubscribeRequest,
        options: &NamespaceOptions,
    ) -> Result<(pb::SubscribeResult, u64), ErrorCode> {
        let Some(history) = history_options(options) else {
            return Ok((pb::SubscribeResult::default(), 0));
        };
        let broker = &self.node.broker;
        let recoverable = options.force_recovery || req.recoverable;
        let mut result = pb::SubscribeResult {
            recoverable,
            positioned: recoverable,
            ..Default::default()
        };
        let recovering = req.recover && recoverable;
        let position = if recovering {
            result.was_recovering = true;
            let since = HistoryQuery {
                since: Some(StreamPosition {
                    offset: req.offset,
                    epoch: req.epoch.clone(),
                }),
                ..Default::default()
            };
            match broker.history(&req.channel, &since, history).await {
                Ok(missed) => {
                    metrics::counter!("switchboard_recovery_total", "result" => "recovered")
                        .increment(1);
                    result.recovered = true;
                    result.publications = missed
                        .publications
                        .iter()
                        .map(encode::publication)
                        .collect();
                    missed.position
                }
                Err(BrokerError::Unrecoverable) => {
                    metrics::counter!("switchboard_recovery_total", "result" => "not_recovered")
                        .increment(1);
                    broker
                        .history(&req.channel, &position_only(), history)
                        .await
                        .map_err(broker_error)?
                        .position
                }
                Err(e) => return Err(broker_error(e)),
            }
        } else {
            broker
                .history(&req.channel, &position_only(), history)
                .await
                .map_err(broker_error)?
                .position
        };
        result.epoch = position.epoch;
        result.offset = position.offset;
        Ok((result, position.offset))
    }

    /// Releases what arrived while the reply was built, then announces the join.
    pub(super) async fn go_live(&mut self, live: Live) {
        live.sub.go_live(live.after);
        if live.join_leave {
            let chan_info = self
                .subs
                .get(&live.channel)
                .and_then(|s| s.chan_info.clone());
            let join = PresenceChange {
                info: self.client_info(chan_info),
                user_changed: live.user_joined,
            };
            if let Err(e) = self.node.broker.publish_join(&live.channel, join).await {
                tracing::warn!(channel = live.channel, error = %e, "join event failed");
            }
        }
    }

    async fn leave_hub(&self, channel: &str) {
        if self.node.hub.remove(channel, &self.id) {
            if let Err(e) = self.node.broker.unsubscribe(channel).await {
                tracing::warn!(channel, error = %e, "broker unsubscribe failed");
            }
        }
    }

    /// Ends a subscription if there is one: hub, presence, leave event.
    pub(super) async fn unsubscribe_channel(&mut self, channel: &str) {
        let Some(entry) = self.subs.remove(channel) else {
            return;
        };
        self.leave_hub(channel).await;
        let info = self.client_info(entry.chan_info);
        let mut user_left = true;
        if entry.presence {
            user_left = match self.node.presence.remove(channel, &info).await {
                Ok(left) => left,
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
            if let Err(e) = self.node.broker.publish_leave(channel, leave).await {
                tracing::warn!(channel, error = %e, "leave event failed");
            }
        }
    }

    pub(super) fn sub_refresh(&mut self, id: u32, req: pb::SubRefreshRequest) -> Outcome {
        let Some(verifier) = &self.node.verifier else {
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
        entry.expires_at = token.expires_at.map(instant_of);
        let (expires, ttl) = match token.expires_at {
            Some(exp) => (true, exp.saturating_sub(now_secs()) as u32),
            None => (false, 0),
        };
        reply(id, |r| {
            r.sub_refresh = Some(pb::SubRefreshResult { expires, ttl })
        })
    }
}
