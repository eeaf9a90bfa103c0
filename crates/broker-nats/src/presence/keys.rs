//! What the presence buckets hold: keys made of one token per name, and values.

use bytes::Bytes;
use prost::Message as _;
use switchboard_core::ClientInfo;

use crate::envelope::presence_info;
use crate::subject::Subjects;

/// A name as one key token: base64url, or `_` for the empty name (anonymous
/// users), which base64url never produces.
pub(super) fn token(name: &str) -> String {
    if name.is_empty() {
        "_".into()
    } else {
        Subjects::channel_token(name)
    }
}

/// `<channel>.<user>.<client>`: a member's key in the members bucket.
pub(super) fn member_key(channel: &str, info: &ClientInfo) -> String {
    format!(
        "{}.{}.{}",
        token(channel),
        token(&info.user),
        token(&info.client)
    )
}

/// `<channel>.<user>`: a user's key in the users bucket.
pub(super) fn user_key(channel: &str, user: &str) -> String {
    format!("{}.{}", token(channel), token(user))
}

pub(super) fn member_value(info: ClientInfo) -> Bytes {
    Bytes::from(presence_info::encode(info).encode_to_vec())
}

/// A user's connections in a channel, as its key holds them: one id per line.
pub(super) fn connections_of(value: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(value)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn connections_value(clients: &[String]) -> Bytes {
    Bytes::from(clients.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_tokens_that_cannot_collide() {
        let info = ClientInfo {
            user: String::new(),
            client: "a.b".into(),
            ..Default::default()
        };
        let key = member_key("chat:1", &info);
        assert_eq!(key.split('.').count(), 3, "{key}");
        assert!(key.contains("._."), "anonymous users get a token: {key}");
        assert_eq!(user_key("chat:1", "").split('.').count(), 2);
        assert_ne!(token(""), token("_"));
    }

    #[test]
    fn connections_round_trip() {
        let clients = vec!["c1".to_owned(), "c2".to_owned()];
        assert_eq!(connections_of(&connections_value(&clients)), clients);
        assert!(connections_of(b"").is_empty());
    }
}
