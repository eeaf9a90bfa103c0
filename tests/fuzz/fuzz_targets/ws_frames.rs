//! The WebSocket frame reader: arbitrary client bytes, cut into arbitrary reads.
//!
//! Input: byte 0 picks the size limit, byte 1 the read size (0: one byte at a
//! time, as a trickling client sends), the rest is the stream. Checked: however
//! the stream is cut, the reader yields the same events and the same error as
//! when it gets all at once; every event is well formed; what it holds stays
//! within the limit.
#![no_main]

use bytes::Bytes;
use fastwebsockets::OpCode;
use libfuzzer_sys::fuzz_target;
use switchboard_gateway::transport::ws::frames::{Event, FrameError, FrameReader};

/// Longest head of a masked client frame.
const MAX_CLIENT_HEAD: usize = 14;

fuzz_target!(|input: &[u8]| {
    let [limit, chunk, stream @ ..] = input else {
        return;
    };
    // Small limits reach the size checks; 0 refuses every non-empty message.
    let max_message = usize::from(*limit) * 4;
    let chunk = usize::from(*chunk).max(1);

    let (whole, whole_end) = read(max_message, [stream]);
    let (cut, cut_end) = read(max_message, stream.chunks(chunk));
    assert_eq!(whole, cut, "events depend on how the stream was cut");
    assert_eq!(
        whole_end, cut_end,
        "the outcome depends on how the stream was cut"
    );

    for event in &whole {
        match event {
            Event::Message { opcode, data } => {
                assert!(matches!(opcode, OpCode::Text | OpCode::Binary));
                assert!(data.len() <= max_message, "message past the limit");
                if *opcode == OpCode::Text {
                    assert!(std::str::from_utf8(data).is_ok(), "text not UTF-8");
                }
            }
            Event::Ping(payload) => assert!(payload.len() <= 125),
            Event::Close(payload) => check_close(payload),
        }
    }
});

/// Feeds `reads` in order until the first error; the events, and the error.
fn read<'a>(
    max_message: usize,
    reads: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Event>, Option<FrameError>) {
    let mut reader = FrameReader::new(max_message);
    let mut events = Vec::new();
    for bytes in reads {
        if let Err(e) = reader.feed(bytes, &mut events) {
            return (events, Some(e));
        }
        // A message being joined and the unfinished frame behind it.
        assert!(
            reader.buffered() <= 2 * max_message + MAX_CLIENT_HEAD,
            "{} bytes held with a limit of {max_message}",
            reader.buffered()
        );
    }
    (events, None)
}

/// A close payload the reader passes on is empty or a code and a UTF-8 reason.
fn check_close(payload: &Bytes) {
    assert_ne!(payload.len(), 1);
    if payload.len() >= 2 {
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
