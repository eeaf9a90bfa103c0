//! Server API request bodies, through the API's own entry point on a
//! standalone node (in-memory broker and presence, a fresh one per input).
//!
//! Input: byte 0 picks the method (one past the last: an unknown method), the
//! rest is the body. Checked: no panic; the answer is 200, 400 or 404 with a
//! JSON object holding exactly one of `result` and `error`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_gateway::centrifugo::api::{call, METHODS};

fuzz_target!(|input: &[u8]| {
    let [selector, body @ ..] = input else {
        return;
    };
    let method = METHODS
        .get(usize::from(*selector) % (METHODS.len() + 1))
        .copied()
        .unwrap_or("no_such_method");
    let response = switchboard_fuzz::with_node(|node| async move {
        // Twice: the second call meets what the first left (history, idempotency keys).
        let first = call(&node, method, body).await;
        let second = call(&node, method, body).await;
        [first, second]
    });
    for r in response {
        assert!(
            matches!(r.status.as_u16(), 200 | 400 | 404),
            "status {}",
            r.status
        );
        let value: serde_json::Value = serde_json::from_slice(&r.body).expect("the answer is JSON");
        let object = value.as_object().expect("the answer is an object");
        assert_eq!(object.len(), 1, "{value}");
        assert!(
            object.contains_key("result") || object.contains_key("error"),
            "{value}"
        );
    }
});
