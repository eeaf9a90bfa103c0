//! Channel events read straight out of a Pusher frame, without a `ClientMessage`.
//!
//! A receiver reads one frame per delivery. The full read ([`super::read`]) builds
//! a `ClientMessage` (the event name, the channel and the raw data, each
//! allocated), then parses the data string a second time to unescape it: measured
//! at 10,000 subscribers, a third of the tool's CPU was JSON and malloc, and the
//! tool shares the two cores with the gateway it measures. So the frame a
//! receiver sees all the time, `{"event":"…","channel":"…","data":"…"}` with a
//! name outside `pusher:`/`pusher_internal:`, is read here: keys and name
//! borrowed, the data string unescaped into a buffer the connection reuses.
//! Anything else (a protocol event, data that is not a string or holds a `\u`
//! escape, a field twice, an escaped key, malformed JSON) fails this reading
//! and takes the full read instead, so both ways give the same data, errors
//! included.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Unescapes the data of the channel event in `frame` into `out` (cleared
/// first); `false` when the frame is anything else, for the full read to decide.
pub fn event_data(frame: &[u8], out: &mut Vec<u8>) -> bool {
    let mut de = serde_json::Deserializer::from_slice(frame);
    let data = match Frame.deserialize(&mut de) {
        Ok(data) => data,
        Err(_) => return false,
    };
    de.end().is_ok() && unescape(data.get().as_bytes(), out)
}

/// The content of the JSON string literal `literal` into `out`, or `false` for
/// anything but a string whose escapes are all one character (`\"`, `\\`, `\n`, …)
/// and whose text is UTF-8.
fn unescape(literal: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let Some(inner) = literal
        .strip_prefix(b"\"")
        .and_then(|s| s.strip_suffix(b"\""))
    else {
        return false;
    };
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next() {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            // `\uXXXX` (and anything malformed) is the full read's.
            _ => return false,
        });
    }
    out.is_ascii() || std::str::from_utf8(out).is_ok()
}

/// A frame that is a channel event with string data: the data's raw JSON.
struct Frame;

fn refuse<E: de::Error>() -> E {
    E::custom("not a channel event with string data")
}

impl<'de> DeserializeSeed<'de> for Frame {
    type Value = &'de RawValue;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'de RawValue, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Frame {
    type Value = &'de RawValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Pusher frame")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<&'de RawValue, A::Error> {
        let (mut event, mut channel, mut data) = (None, false, None);
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "event" if event.is_none() => event = Some(map.next_value::<&str>()?),
                // `ClientMessage` takes a string or null.
                "channel" if !channel => {
                    map.next_value::<Option<&str>>()?;
                    channel = true;
                }
                "data" if data.is_none() => data = Some(map.next_value::<&RawValue>()?),
                "event" | "channel" | "data" => return Err(refuse()),
                // Unknown fields are ignored, as `ClientMessage` ignores them.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let protocol = |e: &str| e.starts_with("pusher:") || e.starts_with("pusher_internal:");
        match (event, data) {
            (Some(e), Some(data)) if !protocol(e) => Ok(data),
            _ => Err(refuse()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{read, Message};
    use super::*;

    /// The data of a channel event the full way, `None` for anything else.
    fn full(frame: &str) -> Option<Vec<u8>> {
        match read(frame.as_bytes()) {
            Ok(Message::Event(data)) => Some(data.into_bytes()),
            _ => None,
        }
    }

    fn lean(frame: &str) -> Option<Vec<u8>> {
        let mut out = b"left over".to_vec();
        event_data(frame.as_bytes(), &mut out).then_some(out)
    }

    const FRAMES: &[&str] = &[
        r#"{"event":"loadtest","channel":"lt-0","data":"{\"lt\":[0,1,2],\"p\":\"xx\"}"}"#,
        r#"{"channel":"lt-0","data":"a\\b\/c\n\t\r\b\f","event":"e"}"#,
        r#" {"event":"e","data":"","user_id":"7","extra":{"a":[1,2]}} "#,
        r#"{"event":"e","channel":null,"data":"x"}"#,
        r#"{"event":"e","data":"\u00e9t\u00e9"}"#,
        r#"{"event":"e","data":"été"}"#,
        r#"{"event":"e","data":{"an":"object"}}"#,
        r#"{"event":"e","data":5}"#,
        r#"{"event":"e","data":null}"#,
        r#"{"event":"e"}"#,
        r#"{"data":"x"}"#,
        r#"{"event":"pusher:ping","data":{}}"#,
        r#"{"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"}"#,
        r#"{"event":"pusher:error","data":{"code":4001,"message":"no"}}"#,
        r#"{"event":"e","data":"x","data":"y"}"#,
        r#"{"event":"e","event":"f","data":"x"}"#,
        r#"{"event":"e","channel":"a","channel":"b","data":"x"}"#,
        r#"{"event":"e","channel":5,"data":"x"}"#,
        r#"{"ev\u0065nt":"e","data":"x"}"#,
        r#"{"event":"\u0065","data":"x"}"#,
        r#"{"event":"e","data":"x"} trailing"#,
        r#"{"event":"e","data":"x""#,
        r#"{"event":"e","data":"bad \q escape"}"#,
        r#"["e","x"]"#,
        "not json",
        "",
    ];

    #[test]
    fn every_frame_reads_as_the_full_read_reads_it() {
        for frame in FRAMES {
            let lean = lean(frame);
            if lean.is_some() {
                assert_eq!(lean, full(frame), "{frame}");
            }
        }
    }

    #[test]
    fn plain_events_are_read_lean_and_the_rest_left_to_the_full_read() {
        for frame in &FRAMES[..4] {
            assert!(lean(frame).is_some(), "{frame}");
        }
        assert_eq!(lean(FRAMES[0]).unwrap(), br#"{"lt":[0,1,2],"p":"xx"}"#);
        assert_eq!(lean(FRAMES[1]).unwrap(), b"a\\b/c\n\t\r\x08\x0c");
        assert_eq!(lean(FRAMES[2]).unwrap(), b"");
        // `\u` escapes and object data are the full read's, which reads them.
        for frame in [FRAMES[4], FRAMES[6]] {
            assert!(lean(frame).is_none() && full(frame).is_some(), "{frame}");
        }
        assert_eq!(lean(FRAMES[5]).unwrap(), "été".as_bytes());
        for frame in &FRAMES[7..] {
            assert!(lean(frame).is_none(), "{frame}");
        }
    }
}
