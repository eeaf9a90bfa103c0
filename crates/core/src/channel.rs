//! Channel names are client input: validated here before anything else sees them.
//!
//! `ns:name` puts a channel in namespace `ns`; `name#42` (or `name#42,43`) limits
//! it to users 42 (and 43).

/// Separates the namespace from the rest of a channel name.
pub const NAMESPACE_BOUNDARY: char = ':';
/// Separates the user list of a user-limited channel.
pub const USER_BOUNDARY: char = '#';

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("channel name may only hold printable ASCII characters other than space")]
    BadCharacter,
}

/// Checks a channel name: 1..=`max_len` bytes of printable ASCII, no spaces.
pub fn validate(name: &str, max_len: usize) -> Result<(), ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > max_len {
        return Err(ChannelNameError::TooLong { max: max_len });
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ChannelNameError::BadCharacter);
    }
    Ok(())
}

/// The namespace a channel belongs to; `None` for the default namespace.
pub fn namespace_of(name: &str) -> Option<&str> {
    name.split_once(NAMESPACE_BOUNDARY).map(|(ns, _)| ns)
}

/// The name without its namespace (the whole name in the default namespace).
pub fn local_name(name: &str) -> &str {
    name.split_once(NAMESPACE_BOUNDARY)
        .map_or(name, |(_, rest)| rest)
}

/// Whether the channel is in one of the gateway's reserved namespaces (a Pusher
/// app's), out of the Centrifugo front end's reach.
pub fn is_reserved(name: &str) -> bool {
    namespace_of(name).is_some_and(|ns| ns.starts_with(crate::namespace::RESERVED_PREFIX))
}

/// For a user-limited channel (`name#42,43`), whether `user` is one of its users;
/// `None` when the channel is not user-limited.
pub fn user_allowed(name: &str, user: &str) -> Option<bool> {
    let (_, users) = name.rsplit_once(USER_BOUNDARY)?;
    Some(!user.is_empty() && users.split(',').any(|u| u == user))
}

/// Whether `name` matches a `*`-wildcard pattern (as in the `channels` API call).
pub fn matches_pattern(name: &str, pattern: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert_eq!(validate("", 10), Err(ChannelNameError::Empty));
        assert_eq!(
            validate("abcdefghijk", 10),
            Err(ChannelNameError::TooLong { max: 10 })
        );
        assert_eq!(validate("a b", 10), Err(ChannelNameError::BadCharacter));
        assert_eq!(validate("a\nb", 10), Err(ChannelNameError::BadCharacter));
        assert_eq!(
            validate("caf\u{e9}", 10),
            Err(ChannelNameError::BadCharacter)
        );
        assert_eq!(validate("chat:room#1,2", 20), Ok(()));
        assert_eq!(validate("a.b*>", 20), Ok(()));
    }

    #[test]
    fn namespaces() {
        assert_eq!(namespace_of("news"), None);
        assert_eq!(namespace_of("chat:room"), Some("chat"));
        assert_eq!(namespace_of("chat:room:x"), Some("chat"));
    }

    #[test]
    fn user_limited_channels() {
        assert_eq!(user_allowed("news", "42"), None);
        assert_eq!(user_allowed("dm#42", "42"), Some(true));
        assert_eq!(user_allowed("dm#42,43", "43"), Some(true));
        assert_eq!(user_allowed("dm#42,43", "4"), Some(false));
        assert_eq!(user_allowed("dm#", ""), Some(false));
    }

    #[test]
    fn patterns() {
        assert!(matches_pattern("chat:1", "chat:*"));
        assert!(matches_pattern("chat:1", "*"));
        assert!(matches_pattern("chat:1", "chat:1"));
        assert!(!matches_pattern("chat:12", "chat:1"));
        assert!(matches_pattern("a-x-b", "a*b"));
        assert!(matches_pattern("ab", "a*b"));
        assert!(!matches_pattern("a", "a*b"));
        assert!(matches_pattern("a1b2c", "a*b*c"));
    }
}
