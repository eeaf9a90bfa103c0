//! A server's frame → Centrifugo replies and pushes: the client side of the
//! codec, which the load generator and the tests read the network with.
//!
//! Input: byte 0 picks the encoding (low bit) and the reply limit, the rest is
//! the frame. Checked: the records split from a frame are the frame itself, in
//! order; decoding the frame is decoding each record; what decodes encodes again
//! (as a server would write it) and decodes to the same replies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::centrifugo::Encoding;

fuzz_target!(|input: &[u8]| {
    let [selector, frame @ ..] = input else {
        return;
    };
    let encoding = switchboard_fuzz::encoding(*selector);
    let max_replies = usize::from(selector >> 1);

    let mut records = Vec::new();
    let mut split_failed = false;
    for record in encoding.split_replies(frame, max_replies) {
        match record {
            Ok(record) => records.push(record),
            Err(_) => split_failed = true,
        }
    }
    assert!(records.len() <= max_replies);
    if encoding == Encoding::Protobuf {
        // Length-delimited records are the frame's bytes, back to back.
        let joined: Vec<u8> = records.concat();
        assert!(frame.starts_with(&joined));
        assert!(split_failed || joined.len() == frame.len());
    }

    let Ok(replies) = encoding.decode_replies(frame, max_replies) else {
        return;
    };
    assert!(!split_failed, "a frame that did not split decoded");
    assert_eq!(replies.len(), records.len());
    for (reply, record) in replies.iter().zip(&records) {
        let alone = encoding
            .decode_reply(record)
            .expect("a record of a frame that decoded");
        assert_eq!(&alone, reply);
        let encoded = encoding
            .encode_reply(reply)
            .expect("a decoded reply encodes again");
        let again = encoding
            .decode_reply(&encoded)
            .expect("a re-encoded reply decodes");
        assert_eq!(&again, reply, "reply changed on the way round");
    }
});
