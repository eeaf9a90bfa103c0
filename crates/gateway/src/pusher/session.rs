//! The Pusher protocol state machine of one connection: events in, events out.
//! Driven by a transport through [`crate::connection::Session`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_core::queue::{Outbound, Record};
use switchboard_core::{ClientInfo, Disconnect, PublishOptions};
use switchboard_protocol::pusher::channel as names;
use switchboard_protocol::pusher::events::{self, name, ClientMessage, UserData};
use switchboard_protocol::pusher::{auth, codes};
use tokio::time::Instant;

use super::channels::Located;
use super::encode::EVENT_TAG;
use super::{errors, App, AppSlot, Pusher, Refusal};
use crate::connection::identity::Identity;
use crate::connection::limits::CommandRate;
use crate::connection::subscriptions::member;
use crate::connection::subscriptions::Subscriptions;
use crate::connection::{Framing, Goodbye};
use crate::registry::{ConnHandle, Control, Mailbox};

/// A far-away instant for "no deadline".
fn never() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// A socket id unique across the cluster: `<random>.<random>`, as Pusher's.
fn socket_id() -> String {
    format!(
        "{}.{}",
        fastrand::u64(1..1 << 53),
        fastrand::u64(1..1 << 53)
    )
}

/// One subscription, by its Pusher name.
#[derive(Debug)]
pub(super) struct Channel {
    pub located: Located,
    /// The member this socket is in a presence channel.
    pub presence_user: Option<String>,
}

pub struct Session {
    pub(super) front: Arc<Pusher>,
    /// `None` for a connection refused at its opening (it is closing).
    app: Option<(Arc<App>, AppSlot)>,
    pub(super) outbound: Arc<Outbound>,
    pub(super) identity: Identity,
    mailbox: Arc<Mailbox>,
    pub(super) subs: Subscriptions,
    /// Subscriptions by Pusher channel name.
    pub(super) channels: HashMap<String, Channel>,
    /// The user `pusher:signin` authenticated, if any.
    pub(super) signed_in: Option<UserData>,
    rate: CommandRate,
    client_events: CommandRate,
    pong_deadline: Option<Instant>,
}

impl Session {
    pub fn new(
        front: Arc<Pusher>,
        opening: Result<(Arc<App>, AppSlot), Refusal>,
        outbound: Arc<Outbound>,
        mailbox: Arc<Mailbox>,
    ) -> Session {
        let limits = &front.node.config.limits;
        let mut identity = Identity::new();
        identity.client = socket_id().into();
        let rate = CommandRate::new(limits.max_commands_per_second);
        let client_events = CommandRate::new(
            opening
                .as_ref()
                .map_or(1, |(app, _)| app.config.max_client_events_per_second.max(1)),
        );
        let mut session = Session {
            front,
            app: None,
            outbound,
            identity,
            mailbox,
            subs: Subscriptions::default(),
            channels: HashMap::new(),
            signed_in: None,
            rate,
            client_events,
            pong_deadline: None,
        };
        match opening {
            Ok(app) => session.establish(app),
            Err(refusal) => session.fail(refusal.code, &refusal.message),
        }
        session
    }

    fn establish(&mut self, (app, slot): (Arc<App>, AppSlot)) {
        let node = &self.front.node;
        node.registry.add(
            self.identity.client.clone(),
            ConnHandle {
                app: Some(app.config.id.as_str().into()),
                user: String::new(),
                outbound: self.outbound.clone(),
                mailbox: self.mailbox.clone(),
            },
        );
        metrics::counter!("switchboard_connections_accepted_total").increment(1);
        let activity_timeout = node.config.ping_interval.as_secs().max(1);
        self.send(events::connection_established(
            &self.identity.client,
            activity_timeout,
        ));
        self.app = Some((app, slot));
    }

    /// Sends `pusher:error` with `code` and closes the connection with it.
    pub(super) fn fail(&self, code: u16, message: &str) {
        self.send(events::error(Some(code), message));
        self.outbound
            .close(Disconnect::custom(code, message.to_owned()), true);
    }

    /// Queues one event for the writer.
    pub(super) fn send(&self, text: String) {
        let _ = self.outbound.push_reply(Record::new(Bytes::from(text)));
    }

    pub(super) fn app(&self) -> Option<&Arc<App>> {
        self.app.as_ref().map(|(app, _)| app)
    }

    async fn on_event(&mut self, data: &[u8]) -> Result<(), Disconnect> {
        let Some(app) = self.app().cloned() else {
            // Refused at its opening: it is closing, nothing else runs.
            return Ok(());
        };
        // Anything the client sends proves it is alive.
        self.pong_deadline = None;
        if !self.rate.take() {
            return Err(Disconnect::TOO_MANY_REQUESTS);
        }
        let message = match ClientMessage::parse(data) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(client = %self.identity.client, error = %e, "malformed Pusher message");
                self.send(events::error(None, &format!("Invalid message: {e}")));
                return Ok(());
            }
        };
        let event = message.event.clone();
        let event = event.as_str();
        let result = match event {
            name::PING => {
                self.send(events::pong());
                "ok"
            }
            name::PONG => "ok",
            name::SUBSCRIBE => match message.subscribe_data() {
                Ok(req) => self.subscribe(&app, req).await,
                Err(e) => self.invalid(event, e),
            },
            name::UNSUBSCRIBE => match message.unsubscribe_data() {
                Ok(req) => {
                    self.unsubscribe(&req.channel).await;
                    "ok"
                }
                Err(e) => self.invalid(event, e),
            },
            name::SIGNIN => match message.signin_data() {
                Ok(req) => self.signin(&app, &req.auth, &req.user_data),
                Err(e) => self.invalid(event, e),
            },
            e if events::name::is_client_event(e) => self.client_event(&app, message).await?,
            _ => {
                self.send(events::error(None, &format!("Unsupported event {event:?}")));
                "error"
            }
        };
        let method = match event {
            name::PING => "pusher_ping",
            name::PONG => "pusher_pong",
            name::SUBSCRIBE => "pusher_subscribe",
            name::UNSUBSCRIBE => "pusher_unsubscribe",
            name::SIGNIN => "pusher_signin",
            e if events::name::is_client_event(e) => "pusher_client_event",
            _ => "pusher_unknown",
        };
        metrics::counter!("switchboard_commands_total", "method" => method, "result" => result)
            .increment(1);
        Ok(())
    }

    fn invalid(&self, event: &str, error: impl std::fmt::Display) -> &'static str {
        self.send(events::error(
            None,
            &format!("Invalid data of {event}: {error}"),
        ));
        "error"
    }

    async fn unsubscribe(&mut self, channel: &str) -> bool {
        let Some(sub) = self.channels.remove(channel) else {
            return false;
        };
        let member = member!(self, self.front.format);
        self.subs.leave(&member, &sub.located.internal).await
    }

    fn signin(&mut self, app: &Arc<App>, signature: &str, user_data: &str) -> &'static str {
        let config = &app.config;
        let valid = auth::check_user_auth(
            &config.key,
            &config.secret,
            &self.identity.client,
            user_data,
            signature,
        );
        let user = match UserData::parse(user_data) {
            Ok(user) if valid => user,
            _ => {
                metrics::counter!("switchboard_connections_refused_total", "reason" => "pusher_signin")
                    .increment(1);
                self.fail(codes::UNAUTHORIZED, "Invalid signature or user data");
                return "error";
            }
        };
        self.front
            .node
            .registry
            .set_user(&self.identity.client, user.id.clone());
        self.identity.user = user.id.clone();
        self.send(events::signin_success(user_data));
        self.signed_in = Some(user);
        "ok"
    }

    /// A `client-*` event: to the other subscribers of a private or presence
    /// channel this socket joined.
    async fn client_event(
        &mut self,
        app: &Arc<App>,
        message: ClientMessage,
    ) -> Result<&'static str, Disconnect> {
        let config = &app.config;
        let channel = message.channel.unwrap_or_default();
        let refuse = |this: &Session, why: &str| {
            this.send(events::error(None, why));
            Ok("error")
        };
        if !config.enable_client_events {
            return refuse(self, "Client events are not enabled for this app");
        }
        let Some(sub) = self.channels.get(&channel) else {
            return refuse(self, &format!("Not subscribed to {channel:?}"));
        };
        if !sub.located.kind.allows_client_events() {
            return refuse(
                self,
                "Client events are only for private and presence channels",
            );
        }
        if !self.client_events.take() {
            return Err(Disconnect::custom(
                codes::CLIENT_EVENT_RATE,
                "client event rate limit",
            ));
        }
        let data = message
            .data
            .map(|d| Bytes::from(d.get().to_owned()))
            .unwrap_or_else(|| Bytes::from_static(b"{}"));
        if data.len() > config.max_event_bytes {
            return refuse(self, "Event data is too large");
        }
        let info = sub.presence_user.as_ref().map(|user| ClientInfo {
            user: user.clone(),
            client: self.identity.client.to_string(),
            ..Default::default()
        });
        let user = info.as_ref().map(|i| i.user.clone());
        let event = message.event;
        let publish = PublishOptions {
            history: sub.located.history(),
            exclude_client: Some(self.identity.client.to_string()),
            tags: BTreeMap::from([(EVENT_TAG.to_owned(), event.clone())]),
            ..Default::default()
        };
        let internal = sub.located.internal.clone();
        let hooked = self
            .front
            .node
            .webhooks()
            .map(|hooks| (hooks, data.clone()));
        match self
            .front
            .node
            .broker
            .publish(&internal, data, info, &publish)
            .await
        {
            Ok(_) => {
                if let Some((hooks, data)) = hooked {
                    let data = webhook_data(&data);
                    let socket = self.identity.client.to_string();
                    hooks.client_event(&internal, &event, &data, &socket, user.as_deref());
                }
                Ok("ok")
            }
            Err(e) => {
                tracing::debug!(error = %e, channel, "client event not published");
                refuse(self, "Client event could not be published; try again")
            }
        }
    }
}

/// Whether `name` may be subscribed to by this socket without channel auth, or
/// the reason it may not.
pub(super) fn server_to_user_allowed(name: &str, signed_in: Option<&UserData>) -> bool {
    match (names::server_to_user_user(name), signed_in) {
        (Some(user), Some(signed)) => user == signed.id,
        _ => false,
    }
}

impl crate::connection::Session for Session {
    fn id(&self) -> &str {
        &self.identity.client
    }

    fn framing(&self) -> &'static Framing {
        const EVENTS: Framing = Framing {
            binary: false,
            join: None,
        };
        &EVENTS
    }

    async fn on_message(&mut self, data: Bytes, binary: bool) -> Result<(), Disconnect> {
        if binary {
            tracing::debug!(client = %self.identity.client, "binary frame on a Pusher connection");
            return Err(Disconnect::BAD_REQUEST);
        }
        self.on_event(&data).await
    }

    async fn on_control(&mut self, control: Control) {
        // The cluster reaches Pusher connections only to close them
        // (terminate_connections), which goes through their queue, not here;
        // the Centrifugo API's subscribe, unsubscribe and refresh name
        // Centrifugo users only.
        tracing::debug!(client = %self.identity.client, ?control, "control request ignored");
    }

    fn deadline(&self) -> Instant {
        self.pong_deadline.unwrap_or_else(never)
    }

    fn on_deadline(&mut self) -> Result<(), Disconnect> {
        match self.pong_deadline {
            Some(at) if Instant::now() >= at => Err(Disconnect::NO_PONG),
            _ => Ok(()),
        }
    }

    fn on_ping_tick(&mut self) -> Result<(), Disconnect> {
        if self.app.is_some() && self.pong_deadline.is_none() {
            self.send(events::ping());
            self.pong_deadline = Some(Instant::now() + self.front.node.config.pong_timeout);
        }
        Ok(())
    }

    fn goodbye(disconnect: &Disconnect) -> Goodbye {
        errors::goodbye(disconnect)
    }

    async fn close(&mut self) {
        let member = member!(self, self.front.format);
        self.subs.leave_all(&member).await;
        self.channels.clear();
        if self.app.is_some() {
            self.front.node.registry.remove(&self.identity.client);
        }
    }
}

/// A client event's data as a webhook carries it: a JSON string's text, any
/// other value as JSON.
fn webhook_data(data: &[u8]) -> String {
    match serde_json::from_slice::<String>(data) {
        Ok(text) => text,
        Err(_) => String::from_utf8_lossy(data).into_owned(),
    }
}
