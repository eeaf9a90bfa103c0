//! Pusher apps: `[[pusher.apps]]` in the file, or one app from the
//! `--pusher-app-*` flags. Each app is its own channel space: its channels live in
//! reserved namespaces (`~<id>~<space>`) that the Centrifugo front end cannot
//! resolve, one per kind of channel so that each kind gets its options (presence
//! for `presence-`, the last event kept for `cache-`).

use std::collections::HashSet;

use serde::Deserialize;
use switchboard_core::hooks::HookEvent;
use switchboard_core::namespace::{NamespaceError, NamespaceOptions, Namespaces, RESERVED_PREFIX};

/// One Pusher app, as the file (or the flags) give it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherApp {
    /// The app id of the HTTP API's paths (`/apps/{id}/…`): 1-64 of `[A-Za-z0-9_-]`.
    pub id: String,
    /// The key clients connect with (`/app/{key}`) and requests are signed with.
    pub key: String,
    /// The secret of every signature (channel auth, user auth, HTTP API).
    pub secret: String,
    /// A disabled app refuses connections (4003) and API calls.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Clients may send `client-*` events on private and presence channels.
    #[serde(default)]
    pub enable_client_events: bool,
    /// Connections of this app on one gateway; unset: only the gateway's limit.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Users in one presence channel.
    #[serde(default = "default_max_presence_members")]
    pub max_presence_members: usize,
    /// Bytes of one event's data (HTTP API and client events).
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Bytes of a channel name.
    #[serde(default = "default_max_channel_name_length")]
    pub max_channel_name_length: usize,
    /// Client events one connection may send per second (4301 beyond).
    #[serde(default = "default_max_client_events_per_second")]
    pub max_client_events_per_second: u32,
    /// Events a `cache-` channel keeps (the newest is replayed to new subscribers).
    #[serde(default = "default_history_size")]
    pub history_size: usize,
    /// Seconds a `cache-` channel keeps its events.
    #[serde(default = "default_history_ttl")]
    pub history_ttl: u64,
    /// `Origin` headers allowed to connect (exact, e.g. `https://app.example`);
    /// empty: any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Where the app's webhooks go (`[[pusher.apps.webhooks]]`).
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// One webhook of an app: its events are POSTed to `url`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// An absolute `http://` URL.
    pub url: String,
    /// The events it gets (`channel_occupied`, `channel_vacated`, `member_added`,
    /// `member_removed`, `client_event`, `cache_miss`); empty: all of them.
    #[serde(default)]
    pub event_types: Vec<String>,
}

impl Webhook {
    /// Whether it gets events named `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == name)
    }
}

fn yes() -> bool {
    true
}
fn default_max_presence_members() -> usize {
    100
}
fn default_max_event_bytes() -> usize {
    10 * 1024
}
fn default_max_channel_name_length() -> usize {
    200
}
fn default_max_client_events_per_second() -> u32 {
    10
}
fn default_history_size() -> usize {
    1
}
fn default_history_ttl() -> u64 {
    30 * 60
}

/// `[pusher]` in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherSection {
    pub apps: Vec<PusherApp>,
}

/// The channel kinds whose options differ, each a reserved namespace of the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Public, private and encrypted channels: nothing kept.
    Basic,
    /// `presence-`: members per user.
    Presence,
    /// `cache-`, `private-cache-`, `private-encrypted-cache-`: the last event kept.
    Cache,
    /// `presence-cache-`: both.
    PresenceCache,
}

impl Space {
    const ALL: [Space; 4] = [
        Space::Basic,
        Space::Presence,
        Space::Cache,
        Space::PresenceCache,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Space::Basic => "b",
            Space::Presence => "p",
            Space::Cache => "c",
            Space::PresenceCache => "pc",
        }
    }
}

impl PusherApp {
    /// An app with every option at its default.
    pub fn new(id: &str, key: &str, secret: &str) -> PusherApp {
        PusherApp {
            id: id.into(),
            key: key.into(),
            secret: secret.into(),
            enabled: true,
            enable_client_events: false,
            max_connections: None,
            max_presence_members: default_max_presence_members(),
            max_event_bytes: default_max_event_bytes(),
            max_channel_name_length: default_max_channel_name_length(),
            max_client_events_per_second: default_max_client_events_per_second(),
            history_size: default_history_size(),
            history_ttl: default_history_ttl(),
            allowed_origins: Vec::new(),
            webhooks: Vec::new(),
        }
    }

    /// The reserved namespace of this app's channels of `space`.
    pub fn namespace(&self, space: Space) -> String {
        format!(
            "{RESERVED_PREFIX}{}{RESERVED_PREFIX}{}",
            self.id,
            space.suffix()
        )
    }

    /// The prefix every internal channel name of this app starts with.
    pub fn channel_prefix(&self) -> String {
        format!("{RESERVED_PREFIX}{}{RESERVED_PREFIX}", self.id)
    }

    /// What the channels of `space` keep and announce.
    pub fn options(&self, space: Space) -> NamespaceOptions {
        let presence = NamespaceOptions {
            presence: true,
            join_leave: true,
            join_leave_per_user: true,
            ..Default::default()
        };
        let cache = NamespaceOptions {
            history_size: self.history_size,
            history_ttl: self.history_ttl,
            ..Default::default()
        };
        match space {
            Space::Basic => NamespaceOptions::default(),
            Space::Presence => presence,
            Space::Cache => cache,
            Space::PresenceCache => NamespaceOptions {
                history_size: cache.history_size,
                history_ttl: cache.history_ttl,
                ..presence
            },
        }
    }

    fn check(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok {
            return Err(format!(
                "pusher app id {:?} must be 1-64 characters of [A-Za-z0-9_-]",
                self.id
            ));
        }
        let key_ok = !self.key.is_empty()
            && self.key.len() <= 128
            && self
                .key
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'%'));
        if !key_ok {
            return Err(format!(
                "pusher app {}: key must be 1-128 printable characters, none of / ? # %",
                self.id
            ));
        }
        if self.secret.is_empty() {
            return Err(format!("pusher app {}: secret is empty", self.id));
        }
        if self.history_size == 0 || self.history_ttl == 0 {
            return Err(format!(
                "pusher app {}: history_size and history_ttl must be at least 1",
                self.id
            ));
        }
        if self.max_event_bytes == 0 || self.max_channel_name_length == 0 {
            return Err(format!(
                "pusher app {}: max_event_bytes and max_channel_name_length must be at least 1",
                self.id
            ));
        }
        for hook in &self.webhooks {
            crate::backend::endpoint(&hook.url)
                .map_err(|e| format!("pusher app {} webhook: {e}", self.id))?;
            if let Some(bad) = hook
                .event_types
                .iter()
                .find(|t| !HookEvent::NAMES.contains(&t.as_str()))
            {
                return Err(format!(
                    "pusher app {} webhook: unknown event type {bad:?} (known: {})",
                    self.id,
                    HookEvent::NAMES.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// Checks the apps (valid ids, keys and secrets; no id or key twice) and adds
/// their reserved namespaces.
pub fn register(apps: &[PusherApp], namespaces: &mut Namespaces) -> Result<(), String> {
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    for app in apps {
        app.check()?;
        if !ids.insert(app.id.as_str()) {
            return Err(format!("pusher app id {:?} is given twice", app.id));
        }
        if !keys.insert(app.key.as_str()) {
            return Err(format!("pusher app key of app {:?} is used twice", app.id));
        }
        for space in Space::ALL {
            namespaces
                .add_reserved(app.namespace(space), app.options(space))
                .map_err(|e: NamespaceError| e.to_string())?;
        }
    }
    Ok(())
}
