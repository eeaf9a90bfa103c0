//! `pusher:subscribe`: the channel's authorization (HMAC of the socket id and
//! channel, and the presence member's channel_data), then the shared
//! subscription algorithm, `subscription_succeeded` (with the members of a
//! presence channel) and a cache channel's newest event.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_core::hub::JoinLeave;
use switchboard_core::{BrokerError, ClientInfo, PresenceStore};
use switchboard_protocol::pusher::auth;
use switchboard_protocol::pusher::channel::Kind;
use switchboard_protocol::pusher::events::{self, ChannelData, SubscribeData};

use super::channels::{locate, Located};
use super::encode::{publication, user_info};
use super::session::{server_to_user_allowed, Channel, Session};
use super::App;
use crate::connection::subscriptions::member;
use crate::connection::subscriptions::{Positioning, Request};
use crate::node::ChannelError;

/// A refused subscription: `pusher:subscription_error`'s type, message and status.
struct Refused(&'static str, String, u16);

fn auth_error(message: &str) -> Refused {
    Refused("AuthError", message.to_owned(), 401)
}

impl Session {
    /// Runs one `pusher:subscribe`; the client hears `subscription_succeeded`
    /// or `subscription_error` on the channel.
    pub(super) async fn subscribe(&mut self, app: &Arc<App>, req: SubscribeData) -> &'static str {
        let name = req.channel.clone();
        match self.try_subscribe(app, req).await {
            Ok(()) => "ok",
            Err(Refused(kind, error, status)) => {
                tracing::debug!(client = %self.identity.client, channel = name, error, "subscription refused");
                self.send(events::subscription_error(&name, kind, &error, status));
                "error"
            }
        }
    }

    async fn try_subscribe(&mut self, app: &Arc<App>, req: SubscribeData) -> Result<(), Refused> {
        let config = &app.config;
        let located = locate(config, &req.channel)
            .map_err(|e| Refused("InvalidChannel", e.to_string(), 400))?;
        if self.channels.contains_key(&req.channel) {
            // Subscribed already: say so again, as it stands now.
            let data = self.succeeded_data(&located).await?;
            self.send(events::subscription_succeeded(&req.channel, &data));
            return Ok(());
        }
        let channel_data = if located.kind == Kind::ServerToUser {
            if !server_to_user_allowed(&req.channel, self.signed_in.as_ref()) {
                return Err(auth_error(
                    "Only the signed-in user may subscribe to its channel",
                ));
            }
            None
        } else if located.kind.needs_auth() {
            let channel_data = located
                .kind
                .is_presence()
                .then(|| req.channel_data.as_deref().unwrap_or_default());
            let signature = req.auth.as_deref().unwrap_or_default();
            let valid = auth::check_channel_auth(
                &config.key,
                &config.secret,
                &self.identity.client,
                &req.channel,
                channel_data,
                signature,
            );
            if !valid {
                return Err(auth_error("Invalid signature"));
            }
            channel_data
        } else {
            None
        };
        let member = match channel_data {
            Some(text) if located.kind.is_presence() => Some(
                ChannelData::parse(text)
                    .map_err(|e| Refused("InvalidChannelData", e.to_string(), 400))?,
            ),
            _ => None,
        };
        if let Some(member) = &member {
            self.check_room(app, &located, &member.user_id).await?;
        }
        let (presence_user, chan_info) = match member {
            Some(m) => (
                Some(m.user_id),
                m.user_info.map(|info| Bytes::from(info.get().to_owned())),
            ),
            None => (None, None),
        };
        let request = Request {
            channel: &located.internal,
            options: &located.options,
            join_leave: if located.kind.is_presence() {
                JoinLeave::PerUserToOthers
            } else {
                JoinLeave::None
            },
            position: Positioning {
                last: located.kind.is_cache(),
                ..Default::default()
            },
            chan_info,
            expires_at: None,
            user: presence_user.clone(),
        };
        let member = member!(self, self.front.format);
        let (position, pending) = self
            .subs
            .prepare(&member, request)
            .await
            .map_err(channel_refusal)?;
        let data = match self.succeeded_data(&located).await {
            Ok(data) => data,
            Err(refused) => {
                let member = member!(self, self.front.format);
                self.subs.leave(&member, &located.internal).await;
                return Err(refused);
            }
        };
        self.send(events::subscription_succeeded(&req.channel, &data));
        if located.kind.is_cache() {
            match position.missed.last().map(|p| publication(&req.channel, p)) {
                Some(Ok(event)) => self.send(event),
                _ => {
                    self.send(events::cache_miss(&req.channel));
                    if let Some(hooks) = self.front.node.webhooks() {
                        hooks.cache_miss(&located.internal);
                    }
                }
            }
        }
        self.channels.insert(
            req.channel,
            Channel {
                located,
                presence_user,
            },
        );
        let member = member!(self, self.front.format);
        self.subs.go_live(&member, pending).await;
        Ok(())
    }

    /// The data of `subscription_succeeded`: the members of a presence channel,
    /// `{}` for any other.
    async fn succeeded_data(&self, located: &Located) -> Result<String, Refused> {
        if !located.kind.is_presence() {
            return Ok("{}".to_owned());
        }
        let present = self
            .front
            .node
            .presence
            .get(&located.internal)
            .await
            .map_err(presence_failed)?;
        Ok(members_data(present.into_values()))
    }

    /// Refuses a new member of a presence channel that has `max_presence_members` users.
    async fn check_room(&self, app: &App, located: &Located, user: &str) -> Result<(), Refused> {
        let presence: &dyn PresenceStore = &*self.front.node.presence;
        let internal = &located.internal;
        let max = app.config.max_presence_members;
        let stats = presence.stats(internal).await.map_err(presence_failed)?;
        if (stats.num_users as usize) < max {
            return Ok(());
        }
        let present = presence.get(internal).await.map_err(presence_failed)?;
        if present.values().any(|c| c.user == user) {
            return Ok(());
        }
        Err(Refused(
            "LimitReached",
            format!("Presence channels hold at most {max} members"),
            403,
        ))
    }
}

/// `{"presence":{"ids","hash","count"}}` of the connections present, one
/// member per user (with the user_info of one of its connections).
pub(super) fn members_data(present: impl Iterator<Item = ClientInfo>) -> String {
    let mut users: BTreeMap<String, Option<Box<RawValue>>> = BTreeMap::new();
    for client in present {
        users
            .entry(client.user)
            .or_insert_with(|| user_info(client.chan_info.as_deref()));
    }
    let members: Vec<(String, Option<&RawValue>)> = users
        .iter()
        .map(|(user, info)| (user.clone(), info.as_deref()))
        .collect();
    events::presence_data(&members)
}

/// A presence read that failed (logged): the subscription is refused with a
/// server error.
fn presence_failed(e: BrokerError) -> Refused {
    tracing::warn!(error = %e, "presence read failed");
    channel_refusal(ChannelError::Internal)
}

fn channel_refusal(e: ChannelError) -> Refused {
    match e {
        ChannelError::LimitExceeded => Refused(
            "LimitReached",
            "Too many subscriptions on this connection".into(),
            400,
        ),
        ChannelError::AlreadySubscribed => {
            Refused("AlreadySubscribed", "Already subscribed".into(), 400)
        }
        ChannelError::Invalid | ChannelError::Unknown | ChannelError::NotJson => {
            Refused("InvalidChannel", "Invalid channel".into(), 400)
        }
        ChannelError::NotAvailable
        | ChannelError::Unrecoverable
        | ChannelError::Internal
        | ChannelError::Unconfirmed => Refused(
            "ServerError",
            "The channel cannot be subscribed now; try again".into(),
            503,
        ),
    }
}
