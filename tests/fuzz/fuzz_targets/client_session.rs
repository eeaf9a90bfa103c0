//! What our code does with a client's bytes, end to end but without a socket:
//! the stream goes through the WebSocket frame reader as the connection task
//! feeds it, each message into a Centrifugo session on a standalone node (a
//! fresh one per input), as `transport::ws::serve` runs them.
//!
//! Input: byte 0 picks the encoding (bit 0: JSON or protobuf) and whether the
//! client connects with a token first (bit 1); then, with a token, its claims
//! JSON and a NUL (the token is signed here with the node's secret, so that what
//! the session does with a token's claims is reached); the rest is the stream
//! of masked client frames. Checked: no panic; every record the
//! session queues decodes with the client side of the codec; once the session
//! is closed, the node holds nothing of it (registry, hub subscriptions).
#![no_main]

use std::sync::Arc;

use bytes::Bytes;

use fastwebsockets::OpCode;
use libfuzzer_sys::fuzz_target;
use switchboard_core::queue::Outbound;
use switchboard_fuzz::{signed_token, HS256_HEADER};
use switchboard_gateway::centrifugo::session::Session;
use switchboard_gateway::centrifugo::Centrifugo;
use switchboard_gateway::connection::Session as _;
use switchboard_gateway::registry::Mailbox;
use switchboard_gateway::transport::ws::frames::{Event, FrameReader};
use switchboard_protocol::centrifugo::pb::{Command, ConnectRequest};
use switchboard_protocol::centrifugo::Encoding;

fuzz_target!(|input: &[u8]| {
    let [selector, stream @ ..] = input else {
        return;
    };
    let encoding = switchboard_fuzz::encoding(*selector);
    let (connect, stream) = if selector & 2 == 0 {
        (None, stream)
    } else {
        let Some(end) = stream.iter().position(|b| *b == 0) else {
            return;
        };
        let token = signed_token(HS256_HEADER, &stream[..end]);
        (Some(connect_frame(encoding, token)), &stream[end + 1..])
    };
    switchboard_fuzz::with_node(|node| async move {
        let front = Centrifugo::new(node.clone()).expect("an HMAC key");
        let limits = &node.config.limits;
        let outbound = Arc::new(Outbound::new(limits.max_queue_bytes));
        let mailbox = Arc::new(Mailbox::default());
        let mut session = Session::new(front, encoding, outbound.clone(), mailbox, None);

        let mut reader = FrameReader::new(limits.max_frame_bytes);
        let mut events = Vec::new();
        if let Some(data) = connect {
            let opcode = if encoding.is_binary() {
                OpCode::Binary
            } else {
                OpCode::Text
            };
            events.push(Event::Message { opcode, data });
        }
        // A bad frame ends the connection, after the messages read before it.
        let _ = reader.feed(stream, &mut events);
        for event in events {
            match event {
                Event::Message { opcode, data } => {
                    let result = session.on_message(data, opcode == OpCode::Binary).await;
                    if !drain(encoding, &outbound) || result.is_err() {
                        break;
                    }
                }
                Event::Ping(_) => {}
                Event::Close(_) => break,
            }
        }
        session.close().await;
        drain(encoding, &outbound);
        switchboard_fuzz::assert_nothing_left(&node);
    });
});

/// Takes what the session queued and checks that a client can read it; false
/// once the connection is to be closed.
fn drain(encoding: Encoding, outbound: &Outbound) -> bool {
    switchboard_fuzz::drain(outbound, |data| {
        if let Err(e) = encoding.decode_reply(data) {
            panic!("the session queued a record a client cannot read: {e}");
        }
    })
}

/// The connect command a centrifuge-js client sends with `token`.
fn connect_frame(encoding: Encoding, token: String) -> Bytes {
    let command = Command {
        id: 1,
        connect: Some(ConnectRequest {
            token,
            name: "js".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    encoding
        .encode_command(&command)
        .expect("a connect command encodes")
}
