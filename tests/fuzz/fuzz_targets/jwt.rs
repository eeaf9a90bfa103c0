//! Connection and subscription tokens (JWT), as a client hands them over.
//!
//! Input: byte 0 picks the kind of token (bit 0: connection or subscription)
//! and what the rest is (bits 1-2):
//! - 0: the token itself, as the client sent it (header, base64, signature checks);
//! - 1: the claims JSON, signed here with the verifier's secret and a plain
//!   HS256 header, so that the claims parsing behind the signature check is reached;
//! - 2: a header JSON, a NUL, then the claims JSON, both signed here.
//!
//! Checked: no panic; a token that verifies names a user, carries connection
//! info that is JSON and an expiry in the future.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchboard_fuzz::{signed_token, HS256_HEADER, SECRET};
use switchboard_gateway::centrifugo::auth::{now_secs, Verifier};
use switchboard_gateway::config::{TokenAlgorithm, TokenConfig};

static VERIFIER: OnceLock<Verifier> = OnceLock::new();

fuzz_target!(|input: &[u8]| {
    let [selector, rest @ ..] = input else {
        return;
    };
    let token = match (selector >> 1) & 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(token) => token.to_owned(),
            Err(_) => return,
        },
        1 => signed_token(HS256_HEADER, rest),
        _ => match rest.iter().position(|b| *b == 0) {
            Some(i) => signed_token(&rest[..i], &rest[i + 1..]),
            None => return,
        },
    };
    let verifier = VERIFIER.get_or_init(|| {
        Verifier::new(&TokenConfig {
            algorithm: TokenAlgorithm::HS256,
            hmac_secret: Some(SECRET.into()),
            public_key_pem: None,
        })
        .expect("an HMAC key")
        .expect("a verifier")
    });

    let (expires_at, info) = if selector & 1 == 0 {
        let Ok(t) = verifier.connection(&token) else {
            return;
        };
        (t.expires_at, t.info)
    } else {
        let Ok(t) = verifier.subscription(&token) else {
            return;
        };
        (t.expires_at, t.info)
    };
    if let Some(exp) = expires_at {
        assert!(exp > now_secs(), "an expired token was accepted");
    }
    if let Some(info) = info {
        assert!(
            serde_json::from_slice::<&serde_json::value::RawValue>(&info).is_ok(),
            "info that is not JSON"
        );
    }
});
