//! A client's frame → Centrifugo commands, in both encodings, with a limit.
//!
//! Input: byte 0 picks the encoding (low bit) and the command limit, the rest
//! is the frame. Checked: never more commands than the limit; what decodes
//! encodes again (as a client would send it) and decodes to the same commands.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let [selector, frame @ ..] = input else {
        return;
    };
    let encoding = switchboard_fuzz::encoding(*selector);
    let max_commands = usize::from(selector >> 1);
    let Ok(commands) = encoding.decode_commands(frame, max_commands) else {
        return;
    };
    assert!(commands.len() <= max_commands);

    let records: Vec<_> = commands
        .iter()
        .map(|c| {
            encoding
                .encode_command(c)
                .expect("a decoded command encodes again")
        })
        .collect();
    let mut again = bytes::BytesMut::new();
    encoding.join(records, &mut again);
    let decoded = encoding
        .decode_commands(&again, max_commands)
        .expect("re-encoded commands decode");
    assert_eq!(commands, decoded, "commands changed on the way round");
});
