//! The Pusher protocol's decoders and builders on their own: a client message
//! and the data of its subscribe, unsubscribe and signin, a presence
//! channel_data, a signin user_data, channel names; and the events the server
//! builds around client-given text.
//!
//! Input: the text of one message (or data string). Checked: no panic; every
//! event built around the input is JSON (by its syntax).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use switchboard_protocol::pusher::channel::{validate, Kind, MAX_CHANNEL_NAME_LENGTH};
use switchboard_protocol::pusher::events::{self, ChannelData, ClientMessage, UserData};

fuzz_target!(|input: &[u8]| {
    if let Ok(message) = ClientMessage::parse(input) {
        let _ = message.subscribe_data();
        let _ = message.unsubscribe_data();
        let _ = message.signin_data();
        if let Some(channel) = &message.channel {
            if validate(channel, MAX_CHANNEL_NAME_LENGTH).is_ok() {
                let _ = Kind::of(channel).needs_auth();
            }
        }
    }
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let _ = ChannelData::parse(text);
    let _ = UserData::parse(text);
    for built in [
        events::event(text, Some(text), text, Some(text)),
        events::error(None, text),
        events::subscription_error(text, text, text, 401),
        events::member_removed(text, text),
        events::signin_success(text),
        events::cache_miss(text),
    ] {
        // JSON syntax: a client's `1e999` is valid JSON that no f64 holds, and
        // is relayed as it came.
        serde_json::from_str::<&RawValue>(&built).expect("a built event is JSON");
    }
});
