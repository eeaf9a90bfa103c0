//! A Pusher client's bytes, end to end but without a socket: through the
//! WebSocket frame reader as the connection task feeds it, each message into a
//! Pusher session of the targets' app on a standalone node (a fresh one per
//! input), as `transport::ws::serve` runs them.
//!
//! Input: byte 0 picks the mode (bit 0). Clear: the rest is the stream of masked
//! client frames. Set: the rest is messages separated by NUL, each one text
//! message; a `pusher:subscribe` or `pusher:signin` among them without `auth`
//! gets a valid signature here (over its `channel_data` or `user_data`), so that
//! what comes after the signature checks is reached. Checked: no panic; every
//! record the session queues is one JSON object naming its `event`; once the
//! session is closed, the node holds nothing of it (registry, hub subscriptions).
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::OpCode;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_core::queue::Outbound;
use switchboard_fuzz::{PUSHER_KEY, PUSHER_SECRET};
use switchboard_gateway::connection::Session as _;
use switchboard_gateway::pusher::session::Session;
use switchboard_gateway::pusher::Pusher;
use switchboard_gateway::registry::Mailbox;
use switchboard_gateway::transport::ws::frames::{Event, FrameReader};
use switchboard_protocol::pusher::auth;

fuzz_target!(|input: &[u8]| {
    let [selector, rest @ ..] = input else {
        return;
    };
    let signed = selector & 1 == 1;
    switchboard_fuzz::with_node(|node| async move {
        let front = Pusher::new(node.clone());
        let opening = front.admit(PUSHER_KEY, Some("7"), None);
        let limits = &node.config.limits;
        let outbound = Arc::new(Outbound::new(limits.max_queue_bytes));
        let mailbox = Arc::new(Mailbox::default());
        let mut session = Session::new(front, opening, outbound.clone(), mailbox);
        let socket_id = established(&outbound);

        let mut messages = Vec::new();
        if signed {
            for part in rest.split(|b| *b == 0) {
                messages.push((Bytes::from(sign(part, &socket_id)), false));
            }
        } else {
            let mut reader = FrameReader::new(limits.max_frame_bytes);
            let mut events = Vec::new();
            // A bad frame ends the connection, after the messages read before it.
            let _ = reader.feed(rest, &mut events);
            for event in events {
                match event {
                    Event::Message { opcode, data } => {
                        messages.push((data, opcode == OpCode::Binary))
                    }
                    Event::Ping(_) => {}
                    Event::Close(_) => break,
                }
            }
        }
        for (data, binary) in messages {
            let result = session.on_message(data, binary).await;
            if !drain(&outbound) || result.is_err() {
                break;
            }
        }
        session.close().await;
        drain(&outbound);
        drop(session);
        switchboard_fuzz::assert_nothing_left(&node);
    });
});

/// The socket id of `connection_established`, the session's first record.
fn established(outbound: &Outbound) -> String {
    let mut records = Vec::new();
    outbound.try_batch(&mut records);
    let first: Value = serde_json::from_slice(&records[0].data).expect("JSON");
    assert_eq!(first["event"], "pusher:connection_established");
    let data: Value =
        serde_json::from_str(first["data"].as_str().expect("a string")).expect("JSON");
    data["socket_id"].as_str().expect("a socket id").to_owned()
}

/// `message` with a valid `auth` added to a subscribe or signin that has none.
fn sign(message: &[u8], socket_id: &str) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(message) else {
        return message.to_vec();
    };
    let event = v["event"].as_str().unwrap_or_default().to_owned();
    let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) else {
        return message.to_vec();
    };
    if data.contains_key("auth") {
        return message.to_vec();
    }
    let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_owned);
    let signature = match event.as_str() {
        "pusher:subscribe" => {
            let channel = text("channel").unwrap_or_default();
            let channel_data = text("channel_data");
            auth::channel_auth(
                PUSHER_KEY,
                PUSHER_SECRET,
                socket_id,
                &channel,
                channel_data.as_deref(),
            )
        }
        "pusher:signin" => {
            let user_data = text("user_data").unwrap_or_default();
            auth::user_auth(PUSHER_KEY, PUSHER_SECRET, socket_id, &user_data)
        }
        _ => return message.to_vec(),
    };
    data.insert("auth".into(), Value::String(signature));
    v.to_string().into_bytes()
}

/// Takes what the session queued and checks that a Pusher client can read it;
/// false once the connection is to be closed.
fn drain(outbound: &Outbound) -> bool {
    switchboard_fuzz::drain(outbound, |data| {
        let v: Value = serde_json::from_slice(data)
            .unwrap_or_else(|e| panic!("the session queued a record that is not JSON: {e}"));
        assert!(v["event"].is_string(), "a record without an event: {v}");
    })
}
