//! The Pusher HTTP API as a backend (or anyone) calls it: the query's parsing,
//! the request signature's checks, and behind them the methods' bodies, on a
//! standalone node with the targets' app (a fresh one per input).
//!
//! Input: byte 0 picks the mode (bit 0) and the HTTP method (bit 1: GET or
//! POST); the rest is `path NUL query NUL body`. Clear: the request goes as it
//! is (it verifies only by chance). Set: the auth parameters are added to the
//! query and signed here with the app's secret, so the method runs. Checked: no
//! panic; every answer is a JSON object; a signed request is never refused as
//! unauthorized (401).
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_fuzz::{PUSHER_ID, PUSHER_KEY, PUSHER_SECRET};
use switchboard_gateway::pusher::{api, Pusher};
use switchboard_protocol::pusher::auth;

fuzz_target!(|input: &[u8]| {
    let [selector, rest @ ..] = input else {
        return;
    };
    let mut parts = rest.splitn(3, |b| *b == 0);
    let (Some(path), Some(query), body) =
        (parts.next(), parts.next(), parts.next().unwrap_or_default())
    else {
        return;
    };
    let (Ok(path), Ok(query)) = (std::str::from_utf8(path), std::str::from_utf8(query)) else {
        return;
    };
    let method = if selector & 2 == 0 {
        Method::GET
    } else {
        Method::POST
    };
    let signed = selector & 1 == 1;
    let path = format!("/apps/{PUSHER_ID}/{path}");
    let query = if signed {
        let mut params = auth::parse_query(query);
        params.retain(|(k, _)| {
            !k.to_ascii_lowercase().starts_with("auth_") && !k.eq_ignore_ascii_case("body_md5")
        });
        let now = switchboard_core::now_micros() / 1_000_000;
        params.push(("auth_key".into(), PUSHER_KEY.into()));
        params.push(("auth_timestamp".into(), now.to_string()));
        params.push(("auth_version".into(), "1.0".into()));
        if !body.is_empty() {
            params.push(("body_md5".into(), auth::body_md5(body)));
        }
        let signature = auth::request_signature(PUSHER_SECRET, method.as_str(), &path, &params);
        params.push(("auth_signature".into(), signature));
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish()
    } else {
        query.to_owned()
    };
    switchboard_fuzz::with_node(|node| async move {
        let front = Pusher::new(node);
        let answer = api::call(&front, &method, &path, Some(&query), body).await;
        let v: Value = serde_json::from_slice(&answer.body).expect("a JSON answer");
        assert!(v.is_object(), "{v}");
        if signed {
            assert_ne!(answer.status.as_u16(), 401, "a signed request refused: {v}");
        }
    });
});
