//! The Pusher Channels front end: protocol 7 at `/app/{key}` over any transport,
//! and the Pusher HTTP API at `/apps/{id}/*`, so pusher-js, Laravel Echo and the
//! Pusher server SDKs work unchanged.
//!
//! Each configured app is its own channel space: a Pusher channel `name` of app
//! `id` is the core channel `~id~<space>:name` (see [`crate::config::pusher`]),
//! which the Centrifugo front end cannot resolve, and users are per app in the
//! registry.
//!
//! # Layout
//! - [`Pusher`], [`App`]: the apps and the WebSocket endpoint (the opening checks).
//! - [`session`]: one connection's protocol state machine.
//! - `subscribe`: channel authorization and the subscription around the shared algorithm.
//! - `channels`: Pusher channel names → core channels and their options.
//! - `encode`: core events → Pusher events, one hub format.
//! - `errors`: disconnect reasons → Pusher close codes.
//! - [`api`]: the signed HTTP API.

pub mod api;
mod channels;
mod encode;
mod errors;
pub mod session;
mod subscribe;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{header, Request, Response};
use hyper::body::Incoming;
use switchboard_core::hub::FormatId;
use switchboard_protocol::pusher::{auth, codes};

use crate::config::PusherApp;
use crate::node::Node;
use crate::response::Body;
use crate::transport::ws::upgrade::upgrade;
use session::Session;

/// One Pusher app on this node.
#[derive(Debug)]
pub struct App {
    pub config: PusherApp,
    /// This node's connections of the app.
    connections: AtomicUsize,
}

/// A connection counted against its app's `max_connections`; released on drop.
#[derive(Debug)]
pub struct AppSlot(Arc<App>);

impl Drop for AppSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl App {
    /// Takes one of the app's connection slots, or `None` when it is full.
    fn try_acquire(self: &Arc<Self>) -> Option<AppSlot> {
        let max = self.config.max_connections.unwrap_or(usize::MAX);
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| AppSlot(self.clone()))
    }
}

/// Why a connection is refused right after its upgrade: the `pusher:error` code
/// and message it receives before the close with the same code. (pusher-js
/// retries a refused upgrade forever; a close code tells it to stop.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub message: String,
}

/// The Pusher front end of one node.
pub struct Pusher {
    pub node: Arc<Node>,
    apps: Vec<Arc<App>>,
    format: FormatId,
}

impl Pusher {
    /// Starts the front end on `node`: its apps and its hub format.
    pub fn new(node: Arc<Node>) -> Arc<Pusher> {
        let apps = node
            .config
            .pusher_apps
            .iter()
            .map(|config| {
                Arc::new(App {
                    config: config.clone(),
                    connections: AtomicUsize::new(0),
                })
            })
            .collect();
        let format = node.hub.register(Arc::new(encode::PusherEncoder));
        Arc::new(Pusher { node, apps, format })
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|a| a.config.key == key)
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|a| a.config.id == id)
    }

    /// `GET /app/{key}`: the upgrade is accepted whatever the key, so that a
    /// refused client hears why (`pusher:error`, then the close code).
    pub fn websocket(self: &Arc<Self>, key: &str, req: Request<Incoming>) -> Response<Body> {
        let protocol = query_param(req.uri().query(), "protocol");
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let opening = self.admit(key, protocol.as_deref(), origin);
        let front = self.clone();
        upgrade(self.node.clone(), req, None, move |outbound, mailbox| {
            Session::new(front, opening, outbound, mailbox)
        })
    }

    /// The checks of a new connection to the app with `key`, in Pusher's order:
    /// the app, then the `protocol` version the client named, then its `Origin`
    /// and the app's quota. The slot is the connection's until it is dropped.
    pub fn admit(
        &self,
        key: &str,
        protocol: Option<&str>,
        origin: Option<&str>,
    ) -> Result<(Arc<App>, AppSlot), Refusal> {
        let refuse = |code: u16, message: &str| {
            metrics::counter!("switchboard_connections_refused_total", "reason" => refusal_reason(code))
                .increment(1);
            Err(Refusal {
                code,
                message: message.to_owned(),
            })
        };
        let Some(app) = self.by_key(key) else {
            return refuse(codes::APP_NOT_FOUND, "Could not find app by key");
        };
        if !app.config.enabled {
            return refuse(codes::APP_DISABLED, "Application is disabled");
        }
        match protocol.map(str::parse::<u32>) {
            None => return refuse(codes::NO_PROTOCOL, "No protocol version supplied"),
            Some(Err(_)) => return refuse(codes::INVALID_VERSION, "Invalid version string format"),
            Some(Ok(v)) if !codes::is_supported_protocol(v) => {
                return refuse(codes::UNSUPPORTED_PROTOCOL, "Unsupported protocol version")
            }
            Some(Ok(_)) => {}
        }
        let origins = &app.config.allowed_origins;
        if !origins.is_empty() && !origins.iter().any(|o| Some(o.as_str()) == origin) {
            return refuse(codes::UNAUTHORIZED, "Origin not allowed");
        }
        match app.try_acquire() {
            Some(slot) => Ok((app.clone(), slot)),
            None => refuse(codes::OVER_QUOTA, "Application is over connection quota"),
        }
    }
}

fn refusal_reason(code: u16) -> &'static str {
    match code {
        codes::APP_NOT_FOUND => "pusher_unknown_app",
        codes::APP_DISABLED => "pusher_app_disabled",
        codes::OVER_QUOTA => "pusher_over_quota",
        codes::UNAUTHORIZED => "pusher_origin",
        _ => "pusher_protocol_version",
    }
}

/// The first value of `name` in a URL query, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    auth::parse_query(query?)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}
