//! What our code does with a client's bytes, end to end but without a socket:
//! the stream goes through the WebSocket frame reader as the connection task
//! feeds it, each message into a Centrifugo session on a standalone node (a
//! fresh one per input), as `transport::ws::serve` runs them.
//!
//! Input: byte 0 picks the encoding (low bit: JSON or protobuf), the rest is
//! the stream of masked client frames. Checked: no panic; every record the
//! session queues decodes with the client side of the codec; once the session
//! is closed, the node holds nothing of it (registry, hub subscriptions).
#![no_main]

use std::sync::Arc;

use fastwebsockets::OpCode;
use libfuzzer_sys::fuzz_target;
use switchboard_core::queue::{Batch, Outbound};
use switchboard_gateway::centrifugo::session::Session;
use switchboard_gateway::centrifugo::Centrifugo;
use switchboard_gateway::connection::Session as _;
use switchboard_gateway::registry::Mailbox;
use switchboard_gateway::transport::ws::frames::{Event, FrameReader};
use switchboard_protocol::centrifugo::Encoding;

fuzz_target!(|input: &[u8]| {
    let [selector, stream @ ..] = input else {
        return;
    };
    let encoding = if selector & 1 == 0 {
        Encoding::Json
    } else {
        Encoding::Protobuf
    };
    switchboard_fuzz::with_node(|node| async move {
        let front = Centrifugo::new(node.clone()).expect("an HMAC key");
        let limits = &node.config.limits;
        let outbound = Arc::new(Outbound::new(limits.max_queue_bytes));
        let mailbox = Arc::new(Mailbox::default());
        let mut session = Session::new(front, encoding, outbound.clone(), mailbox);

        let mut reader = FrameReader::new(limits.max_frame_bytes);
        let mut events = Vec::new();
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
        assert_eq!(node.registry.counts(), (0, 0), "a closed session is still registered");
        let held: Vec<_> = node.hub.channels().into_iter().filter(|(_, n)| *n > 0).collect();
        assert!(held.is_empty(), "a closed session is still subscribed: {held:?}");
    });
});

/// Takes what the session queued and checks that a client can read it; false
/// once the connection is to be closed.
fn drain(encoding: Encoding, outbound: &Outbound) -> bool {
    let mut records = Vec::new();
    loop {
        match outbound.try_batch(&mut records) {
            None => return true,
            Some(Batch::Close(_)) => return false,
            Some(Batch::Records) => {}
        }
        for record in records.drain(..) {
            if let Err(e) = encoding.decode_reply(&record.data) {
                panic!("the session queued a record a client cannot read: {e}");
            }
        }
    }
}
