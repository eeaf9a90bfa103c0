//! Channel names → NATS subjects and stream names.
//!
//! Channel names are client input. Each becomes one subject token: the
//! URL-safe base64 of its bytes (no padding), which holds only `[A-Za-z0-9_-]`.
//! `.`, `*`, `>`, spaces and non-ASCII can therefore never widen a subscription,
//! and two different names never share a subject.
//!
//! Layout, with prefix `sb`:
//! - `sb.s.<ns>.<channel>`: stored messages of history-enabled channels (stream `sb-<ns>`);
//! - `sb.l.<ns>.<channel>`: live subject: the stream republishes stored messages
//!   there, channels without history and join/leave events are published there directly.
//!
//! `<ns>` is `d` for the default namespace and `n_<name>` for a named one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use switchboard_core::channel;

#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Subjects {
        Subjects {
            prefix: prefix.into(),
        }
    }

    /// The namespace token of a namespace (`None`: default).
    pub fn ns_token(namespace: Option<&str>) -> String {
        match namespace {
            None => "d".to_owned(),
            Some(ns) => format!("n_{ns}"),
        }
    }

    pub fn channel_token(channel: &str) -> String {
        URL_SAFE_NO_PAD.encode(channel.as_bytes())
    }

    /// The channel name a token stands for.
    pub fn channel_of_token(token: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        String::from_utf8(bytes).ok()
    }

    fn ns_of(channel: &str) -> String {
        Subjects::ns_token(channel::namespace_of(channel))
    }

    /// Where a history-enabled channel's messages are stored.
    pub fn stored(&self, channel: &str) -> String {
        format!(
            "{}.s.{}.{}",
            self.prefix,
            Subjects::ns_of(channel),
            Subjects::channel_token(channel)
        )
    }

    /// Where a channel's events are delivered live.
    pub fn live(&self, channel: &str) -> String {
        format!(
            "{}.l.{}.{}",
            self.prefix,
            Subjects::ns_of(channel),
            Subjects::channel_token(channel)
        )
    }

    /// The stream holding a namespace's history.
    pub fn stream_name(&self, namespace: Option<&str>) -> String {
        format!("{}-{}", self.prefix, Subjects::ns_token(namespace))
    }

    pub fn stream_of(&self, channel: &str) -> String {
        self.stream_name(channel::namespace_of(channel))
    }

    /// (stored filter, live destination) of a namespace's stream.
    pub fn stream_subjects(&self, namespace: Option<&str>) -> (String, String) {
        let ns = Subjects::ns_token(namespace);
        (
            format!("{}.s.{ns}.>", self.prefix),
            format!("{}.l.{ns}.>", self.prefix),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_one_token() {
        let s = Subjects::new("sb");
        for name in [
            "a.b",
            "a.*",
            "a.>",
            ">",
            "*",
            "a b",
            "caf\u{e9}",
            "chat:x.y",
            "..",
            "",
        ] {
            let token = Subjects::channel_token(name);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{name:?} -> {token}"
            );
            let subject = s.live(name);
            assert_eq!(subject.split('.').count(), 4, "{subject}");
        }
    }

    #[test]
    fn different_names_never_share_a_subject() {
        let s = Subjects::new("sb");
        let names = [
            "a", "a.", "a.b", "a_b", "a-b", "A", "chat:a", "chat:a.b", "chat:a>b",
        ];
        let subjects: std::collections::HashSet<String> = names.iter().map(|n| s.live(n)).collect();
        assert_eq!(subjects.len(), names.len());
    }

    #[test]
    fn tokens_decode_back_to_channel_names() {
        for name in ["a.b", "chat:x>y", "caf\u{e9}", "#42"] {
            assert_eq!(
                Subjects::channel_of_token(&Subjects::channel_token(name)).as_deref(),
                Some(name)
            );
        }
        assert_eq!(Subjects::channel_of_token("***"), None);
    }

    #[test]
    fn namespaces_map_to_streams() {
        let s = Subjects::new("sb");
        assert_eq!(s.stream_of("news"), "sb-d");
        assert_eq!(s.stream_of("chat:1"), "sb-n_chat");
        assert_eq!(
            s.stored("chat:1"),
            format!("sb.s.n_chat.{}", Subjects::channel_token("chat:1"))
        );
        assert_eq!(
            s.stream_subjects(Some("chat")),
            ("sb.s.n_chat.>".into(), "sb.l.n_chat.>".into())
        );
        let long = "x".repeat(255);
        assert!(s.live(&long).len() < 400);
    }
}
