//! Channel names → NATS subjects, and the channel-name rules around them.
//!
//! Input: a channel name, optionally followed by a NUL and a second string
//! (the user for `#` channels, the pattern of the `channels` API call). Checked:
//! a name that passes validation in a namespace that can exist becomes exactly
//! one subject token of `[A-Za-z0-9_-]` that decodes back to it, so no name can
//! widen a subscription or share another's subject; `matches_pattern` and
//! `user_allowed` agree with plain reference implementations.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_broker_nats::subject::Subjects;
use switchboard_core::channel;

/// The longest channel name the gateway accepts by default.
const MAX_CHANNEL: usize = 255;

fuzz_target!(|input: &[u8]| {
    let Ok(input) = std::str::from_utf8(input) else {
        return;
    };
    let (name, other) = input.split_once('\0').unwrap_or((input, ""));

    let valid = channel::validate(name, MAX_CHANNEL).is_ok();
    assert_eq!(
        valid,
        !name.is_empty() && name.len() <= MAX_CHANNEL && name.bytes().all(|b| b.is_ascii_graphic())
    );

    let token = Subjects::channel_token(name);
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(Subjects::channel_of_token(&token).as_deref(), Some(name));

    let namespace = channel::namespace_of(name);
    if let Some(ns) = namespace {
        assert!(name.starts_with(ns) && name[ns.len()..].starts_with(channel::NAMESPACE_BOUNDARY));
        assert!(!ns.contains(channel::NAMESPACE_BOUNDARY));
    }
    // Namespaces are configured under the rule Namespaces::new enforces; a name in
    // any other namespace is refused before it reaches the broker.
    let known = namespace.is_none_or(|ns| {
        !ns.is_empty()
            && ns.len() <= 64
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if valid && known {
        let subjects = Subjects::new("sb");
        for subject in [subjects.live(name), subjects.stored(name)] {
            let tokens: Vec<&str> = subject.split('.').collect();
            assert_eq!(tokens.len(), 4, "{name:?} -> {subject}");
            assert_eq!(tokens[3], token);
            assert!(tokens
                .iter()
                .all(|t| !t.is_empty() && *t != "*" && *t != ">"));
        }
        let stream = subjects.stream_of(name);
        assert!(stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    assert_eq!(
        channel::matches_pattern(name, other),
        glob(name.as_bytes(), other.as_bytes()),
        "{name:?} against pattern {other:?}"
    );
    let expected_user = name
        .rsplit_once(channel::USER_BOUNDARY)
        .map(|(_, users)| !other.is_empty() && users.split(',').any(|u| u == other));
    assert_eq!(channel::user_allowed(name, other), expected_user);
});

/// `*` matches any run of characters (none included), everything else itself.
fn glob(name: &[u8], pattern: &[u8]) -> bool {
    // matched[j]: pattern[..j] matches the name read so far.
    let mut matched = vec![false; pattern.len() + 1];
    matched[0] = true;
    for j in 1..=pattern.len() {
        matched[j] = matched[j - 1] && pattern[j - 1] == b'*';
    }
    for &c in name {
        let mut next = vec![false; pattern.len() + 1];
        for j in 1..=pattern.len() {
            next[j] = if pattern[j - 1] == b'*' {
                next[j - 1] || matched[j]
            } else {
                matched[j - 1] && pattern[j - 1] == c
            };
        }
        matched = next;
    }
    matched[pattern.len()]
}
