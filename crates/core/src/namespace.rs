//! Per-namespace channel options and the registry that resolves a channel's.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use crate::channel;

/// What the channels of one namespace allow and keep.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceOptions {
    /// Keep track of who is subscribed.
    pub presence: bool,
    /// Emit join and leave events; subscribers receive them when they ask
    /// (`join_leave` in the subscribe request) or when `force_push_join_leave` is on.
    pub join_leave: bool,
    /// Send join and leave events to every subscriber, asked or not.
    pub force_push_join_leave: bool,
    /// Join and leave per user rather than per connection: a user joins with its
    /// first connection in the channel (on any node) and leaves with its last.
    /// Needs `presence` and `join_leave`.
    pub join_leave_per_user: bool,
    /// Publications kept per channel; 0 turns history off.
    pub history_size: usize,
    /// How long a publication is kept, in seconds; 0 turns history off.
    pub history_ttl: u64,
    /// Recover missed publications for every subscriber, not only for those who ask.
    pub force_recovery: bool,
    /// Any connection may subscribe without a subscription token.
    pub allow_subscribe_for_client: bool,
    /// Subscribers may publish.
    pub allow_publish_for_subscriber: bool,
    /// Any connection may publish, subscribed or not.
    pub allow_publish_for_client: bool,
    /// Subscribers may ask for presence and presence stats.
    pub allow_presence_for_subscriber: bool,
    /// Any connection may ask for presence and presence stats.
    pub allow_presence_for_client: bool,
    /// Subscribers may ask for history.
    pub allow_history_for_subscriber: bool,
    /// Any connection may ask for history.
    pub allow_history_for_client: bool,
    /// Publications may hold any bytes, not only JSON (for namespaces whose
    /// clients all speak protobuf); JSON connections can neither subscribe nor
    /// read history here, since they could not read what they would get.
    pub binary_data: bool,
    /// The application backend decides whether a client subscribes without a
    /// subscription token (the subscribe proxy), at `subscribe_proxy_endpoint` or
    /// the gateway's global one.
    pub proxy_subscribe: bool,
    /// The application backend decides (and may rewrite) every client
    /// publication (the publish proxy), at `publish_proxy_endpoint` or the
    /// gateway's global one.
    pub proxy_publish: bool,
    /// When a subscription the subscribe proxy granted with an `expire_at`
    /// expires, the backend says whether it goes on (the sub_refresh proxy), at
    /// `sub_refresh_proxy_endpoint` or the gateway's global one.
    pub proxy_sub_refresh: bool,
    /// This namespace's subscribe proxy, instead of the global one.
    pub subscribe_proxy_endpoint: Option<String>,
    /// This namespace's sub_refresh proxy, instead of the global one.
    pub sub_refresh_proxy_endpoint: Option<String>,
    /// This namespace's publish proxy, instead of the global one.
    pub publish_proxy_endpoint: Option<String>,
}

/// A named namespace, as written in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Namespace {
    pub name: String,
    #[serde(flatten)]
    pub options: NamespaceOptions,
}

impl NamespaceOptions {
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && self.history_ttl > 0
    }

    pub fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history_ttl)
    }

    fn check(&self, name: &str) -> Result<(), NamespaceError> {
        if self.join_leave_per_user && !(self.presence && self.join_leave) {
            return Err(NamespaceError::PerUserWithoutPresence(name.to_owned()));
        }
        Ok(())
    }
}

/// Why namespaces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace name {0:?} must be 1-64 characters of [a-zA-Z0-9_-]")]
    BadName(String),
    #[error("namespace {0:?} is defined twice")]
    Duplicate(String),
    #[error("namespace {0}: join_leave_per_user needs presence and join_leave")]
    PerUserWithoutPresence(String),
    #[error(
        "reserved namespace {0:?} must start with '~' and hold no '.', '*', '>', ':' or spaces"
    )]
    BadReservedName(String),
}

/// Namespaces whose names start with this belong to the gateway itself (each
/// Pusher app's channel spaces): no configured namespace can take such a name, and
/// [`Namespaces::resolve`] never returns one, so the Centrifugo front end cannot
/// reach their channels.
pub const RESERVED_PREFIX: char = '~';

/// Resolves a channel to the options of its namespace.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    default: NamespaceOptions,
    named: HashMap<String, NamespaceOptions>,
}

impl Namespaces {
    pub fn new(
        default: NamespaceOptions,
        named: Vec<Namespace>,
    ) -> Result<Namespaces, NamespaceError> {
        default.check("(default)")?;
        let mut map = HashMap::new();
        for ns in named {
            ns.options.check(&ns.name)?;
            let valid = !ns.name.is_empty()
                && ns.name.len() <= 64
                && ns
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(NamespaceError::BadName(ns.name));
            }
            if map.insert(ns.name.clone(), ns.options).is_some() {
                return Err(NamespaceError::Duplicate(ns.name));
            }
        }
        Ok(Namespaces {
            default,
            named: map,
        })
    }

    /// Adds one of the gateway's own namespaces (see [`RESERVED_PREFIX`]); its
    /// channels are found by [`Namespaces::resolve_reserved`] only.
    pub fn add_reserved(
        &mut self,
        name: String,
        options: NamespaceOptions,
    ) -> Result<(), NamespaceError> {
        options.check(&name)?;
        let valid = name.starts_with(RESERVED_PREFIX)
            && name.len() > 1
            && name.len() <= 128
            && name.bytes().all(|b| {
                b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>' | b':' | b'/' | b'\\')
            });
        if !valid {
            return Err(NamespaceError::BadReservedName(name));
        }
        if self.named.insert(name.clone(), options).is_some() {
            return Err(NamespaceError::Duplicate(name));
        }
        Ok(())
    }

    /// Every namespace: `None` names the default one.
    pub fn iter(&self) -> impl Iterator<Item = (Option<&str>, &NamespaceOptions)> {
        std::iter::once((None, &self.default))
            .chain(self.named.iter().map(|(name, o)| (Some(name.as_str()), o)))
    }

    /// The options of the channel's namespace; `None` for an unknown namespace
    /// and for the gateway's reserved ones.
    pub fn resolve(&self, channel_name: &str) -> Option<&NamespaceOptions> {
        match channel::namespace_of(channel_name) {
            None => Some(&self.default),
            Some(ns) if ns.starts_with(RESERVED_PREFIX) => None,
            Some(ns) => self.named.get(ns),
        }
    }

    /// The options of a channel in one of the reserved namespaces; `None` for
    /// any other channel.
    pub fn resolve_reserved(&self, channel_name: &str) -> Option<&NamespaceOptions> {
        channel::namespace_of(channel_name)
            .filter(|ns| ns.starts_with(RESERVED_PREFIX))
            .and_then(|ns| self.named.get(ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_default_and_named_namespaces() {
        let chat = NamespaceOptions {
            allow_publish_for_client: true,
            ..Default::default()
        };
        let ns = Namespaces::new(
            NamespaceOptions::default(),
            vec![Namespace {
                name: "chat".into(),
                options: chat.clone(),
            }],
        )
        .unwrap();
        assert_eq!(ns.resolve("news"), Some(&NamespaceOptions::default()));
        assert_eq!(ns.resolve("chat:1"), Some(&chat));
        assert_eq!(ns.resolve("nope:1"), None);
    }

    #[test]
    fn reserved_namespaces_are_found_only_by_resolve_reserved() {
        let mut ns = Namespaces::new(NamespaceOptions::default(), vec![]).unwrap();
        let cache = NamespaceOptions {
            history_size: 1,
            history_ttl: 60,
            ..Default::default()
        };
        ns.add_reserved("~app1~c".into(), cache.clone()).unwrap();
        assert_eq!(ns.resolve("~app1~c:cache-x"), None);
        assert_eq!(ns.resolve_reserved("~app1~c:cache-x"), Some(&cache));
        assert_eq!(ns.resolve_reserved("~other:cache-x"), None);
        assert_eq!(ns.resolve_reserved("news"), None);
        assert!(ns.iter().any(|(name, _)| name == Some("~app1~c")));
        // Configured namespaces cannot take a reserved name, nor reserved ones a plain name.
        let taken = Namespace {
            name: "~app1~c".into(),
            options: Default::default(),
        };
        assert!(Namespaces::new(Default::default(), vec![taken]).is_err());
        assert!(ns.add_reserved("app".into(), Default::default()).is_err());
        assert!(ns.add_reserved("~a.b".into(), Default::default()).is_err());
        assert!(ns
            .add_reserved("~app1~c".into(), Default::default())
            .is_err());
    }

    #[test]
    fn refuses_bad_and_duplicate_names() {
        let bad = Namespace {
            name: "a.b".into(),
            options: Default::default(),
        };
        assert!(Namespaces::new(Default::default(), vec![bad]).is_err());
        let a = Namespace {
            name: "a".into(),
            options: Default::default(),
        };
        assert!(Namespaces::new(Default::default(), vec![a.clone(), a]).is_err());
    }

    #[test]
    fn per_user_join_leave_needs_presence() {
        let per_user = NamespaceOptions {
            join_leave: true,
            join_leave_per_user: true,
            ..Default::default()
        };
        assert!(matches!(
            Namespaces::new(per_user.clone(), vec![]),
            Err(NamespaceError::PerUserWithoutPresence(_))
        ));
        let with_presence = NamespaceOptions {
            presence: true,
            ..per_user
        };
        assert!(Namespaces::new(with_presence, vec![]).is_ok());
    }
}
