//! Channel kinds, told apart by name prefix, and channel name validation.
//!
//! A channel's name is its type: `private-` channels need an authorization
//! signature, `presence-` ones also carry member data, `cache-` ones replay their
//! last event to new subscribers, and `#server-to-user-<id>` is the channel a
//! signed-in user receives events addressed to it on.

use thiserror::Error;

/// The longest channel name accepted unless the app configures another limit.
/// Pusher's documentation gives 164 characters; pusher servers in the wild (and
/// Laravel's) accept 200, and refusing a name a client already uses helps nobody.
pub const MAX_CHANNEL_NAME_LENGTH: usize = 200;

/// The prefix of the channel a signed-in user receives its events on.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// What a channel's name prefix makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// No prefix: anyone may subscribe.
    Public,
    /// `private-`: subscribing needs a signature from the app.
    Private,
    /// `private-encrypted-`: private, and its payloads are end-to-end encrypted.
    PrivateEncrypted,
    /// `presence-`: private, and subscribers know each other.
    Presence,
    /// `cache-`: public, and new subscribers get the last event.
    Cache,
    /// `private-cache-`.
    PrivateCache,
    /// `presence-cache-`.
    PresenceCache,
    /// `private-encrypted-cache-`.
    PrivateEncryptedCache,
    /// `#server-to-user-<id>`: the events the app sends to one signed-in user.
    ServerToUser,
}

/// Longest prefixes first: `private-encrypted-cache-` also starts with
/// `private-encrypted-` and `private-`.
const PREFIXES: [(&str, Kind); 8] = [
    ("private-encrypted-cache-", Kind::PrivateEncryptedCache),
    ("private-encrypted-", Kind::PrivateEncrypted),
    ("private-cache-", Kind::PrivateCache),
    ("presence-cache-", Kind::PresenceCache),
    ("cache-", Kind::Cache),
    ("private-", Kind::Private),
    ("presence-", Kind::Presence),
    (SERVER_TO_USER_PREFIX, Kind::ServerToUser),
];

impl Kind {
    /// The kind of the channel called `name` (which need not be valid).
    pub fn of(name: &str) -> Kind {
        PREFIXES
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix))
            .map_or(Kind::Public, |&(_, kind)| kind)
    }

    /// Whether subscribing needs an `auth` signature (every private and presence
    /// kind). A server-to-user channel needs none: the gateway checks instead that
    /// the connection signed in as the channel's user.
    pub fn needs_auth(self) -> bool {
        matches!(
            self,
            Kind::Private
                | Kind::PrivateEncrypted
                | Kind::Presence
                | Kind::PrivateCache
                | Kind::PresenceCache
                | Kind::PrivateEncryptedCache
        )
    }

    /// Whether subscribers carry member data (`channel_data`).
    pub fn is_presence(self) -> bool {
        matches!(self, Kind::Presence | Kind::PresenceCache)
    }

    /// Whether the channel keeps its last event for new subscribers.
    pub fn is_cache(self) -> bool {
        matches!(
            self,
            Kind::Cache | Kind::PrivateCache | Kind::PresenceCache | Kind::PrivateEncryptedCache
        )
    }

    /// Whether payloads are end-to-end encrypted (the server never reads them).
    pub fn is_encrypted(self) -> bool {
        matches!(self, Kind::PrivateEncrypted | Kind::PrivateEncryptedCache)
    }

    /// Whether subscribers may trigger `client-` events: only on authorized,
    /// unencrypted channels (a client cannot encrypt for the others).
    pub fn allows_client_events(self) -> bool {
        matches!(
            self,
            Kind::Private | Kind::Presence | Kind::PrivateCache | Kind::PresenceCache
        )
    }
}

/// The user id of a `#server-to-user-<id>` channel; `None` for any other name
/// and for the prefix alone.
pub fn server_to_user_user(name: &str) -> Option<&str> {
    name.strip_prefix(SERVER_TO_USER_PREFIX)
        .filter(|user| !user.is_empty())
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is {len} bytes long, the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("channel name has {ch:?} at byte {at}; allowed are letters, digits and _ - = @ , . ;")]
    InvalidChar { ch: char, at: usize },
    #[error("channel name {SERVER_TO_USER_PREFIX:?} needs a user id after the prefix")]
    MissingUserId,
}

/// Checks that `name` is 1..=`max_len` bytes of `[A-Za-z0-9_\-=@,.;]`, or
/// `#server-to-user-` followed by such bytes (`#` is allowed only there).
pub fn validate(name: &str, max_len: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max_len {
        return Err(NameError::TooLong {
            len: name.len(),
            max: max_len,
        });
    }
    let start = if name.starts_with(SERVER_TO_USER_PREFIX) {
        if name.len() == SERVER_TO_USER_PREFIX.len() {
            return Err(NameError::MissingUserId);
        }
        SERVER_TO_USER_PREFIX.len()
    } else {
        0
    };
    match name[start..].char_indices().find(|&(_, ch)| !allowed(ch)) {
        Some((at, ch)) => Err(NameError::InvalidChar { ch, at: start + at }),
        None => Ok(()),
    }
}

fn allowed(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_longest_prefix() {
        let cases = [
            ("my-channel", Kind::Public),
            ("private-a", Kind::Private),
            ("private-encrypted-a", Kind::PrivateEncrypted),
            ("presence-a", Kind::Presence),
            ("cache-a", Kind::Cache),
            ("private-cache-a", Kind::PrivateCache),
            ("presence-cache-a", Kind::PresenceCache),
            ("private-encrypted-cache-a", Kind::PrivateEncryptedCache),
            ("#server-to-user-42", Kind::ServerToUser),
            ("privatechannel", Kind::Public),
            ("encrypted-a", Kind::Public),
        ];
        for (name, kind) in cases {
            assert_eq!(Kind::of(name), kind, "{name}");
        }
    }

    #[test]
    fn properties_of_each_kind() {
        use Kind::*;
        // (kind, needs_auth, presence, cache, encrypted, client events)
        let table = [
            (Public, false, false, false, false, false),
            (Private, true, false, false, false, true),
            (PrivateEncrypted, true, false, false, true, false),
            (Presence, true, true, false, false, true),
            (Cache, false, false, true, false, false),
            (PrivateCache, true, false, true, false, true),
            (PresenceCache, true, true, true, false, true),
            (PrivateEncryptedCache, true, false, true, true, false),
            (ServerToUser, false, false, false, false, false),
        ];
        for (kind, auth, presence, cache, encrypted, client) in table {
            assert_eq!(kind.needs_auth(), auth, "{kind:?}");
            assert_eq!(kind.is_presence(), presence, "{kind:?}");
            assert_eq!(kind.is_cache(), cache, "{kind:?}");
            assert_eq!(kind.is_encrypted(), encrypted, "{kind:?}");
            assert_eq!(kind.allows_client_events(), client, "{kind:?}");
        }
    }

    #[test]
    fn server_to_user_channels_name_their_user() {
        assert_eq!(server_to_user_user("#server-to-user-42"), Some("42"));
        assert_eq!(server_to_user_user("#server-to-user-"), None);
        assert_eq!(server_to_user_user("private-42"), None);
    }

    #[test]
    fn valid_names_pass() {
        for name in [
            "foo-bar_1234@=,.;",
            "private-foobar",
            "#server-to-user-42",
            "a",
        ] {
            assert_eq!(validate(name, MAX_CHANNEL_NAME_LENGTH), Ok(()), "{name}");
        }
        let longest = "a".repeat(MAX_CHANNEL_NAME_LENGTH);
        assert_eq!(validate(&longest, MAX_CHANNEL_NAME_LENGTH), Ok(()));
    }

    #[test]
    fn invalid_names_say_why() {
        let max = MAX_CHANNEL_NAME_LENGTH;
        assert_eq!(validate("", max), Err(NameError::Empty));
        assert_eq!(
            validate(&"a".repeat(max + 1), max),
            Err(NameError::TooLong { len: max + 1, max })
        );
        assert_eq!(
            validate("foo bar", max),
            Err(NameError::InvalidChar { ch: ' ', at: 3 })
        );
        assert_eq!(
            validate("#foo", max),
            Err(NameError::InvalidChar { ch: '#', at: 0 })
        );
        assert_eq!(
            validate("#server-to-user-a#b", max),
            Err(NameError::InvalidChar { ch: '#', at: 17 })
        );
        assert_eq!(
            validate("caf\u{e9}", max),
            Err(NameError::InvalidChar { ch: 'é', at: 3 })
        );
        assert_eq!(
            validate("a:b", max),
            Err(NameError::InvalidChar { ch: ':', at: 1 })
        );
        assert_eq!(
            validate("#server-to-user-", max),
            Err(NameError::MissingUserId)
        );
        let message = validate("foo bar", max).unwrap_err().to_string();
        assert!(message.contains("byte 3"), "{message}");
    }
}
