//! The payload every publication carries: which channel, its sequence in that
//! channel, and the wall-clock time it was sent, padded to the requested size.
//!
//! It is JSON (`{"lt":[channel,seq,sent_us],"p":"xxx…"}`) so that it passes through
//! the HTTP API and reaches JSON and protobuf clients alike. Wall-clock time (not a
//! monotonic clock) because publishers and receivers can be different processes.

use std::time::{SystemTime, UNIX_EPOCH};

/// What a receiver learns from one publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub channel: u32,
    pub seq: u64,
    pub sent_us: u64,
}

const PREFIX: &[u8] = b"{\"lt\":[";

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Encodes `stamp` as JSON of at least the stamp's own size, padded up to `size` bytes.
pub fn encode(stamp: Stamp, size: usize) -> Vec<u8> {
    let head = format!(
        "{{\"lt\":[{},{},{}],\"p\":\"",
        stamp.channel, stamp.seq, stamp.sent_us
    );
    let pad = size.saturating_sub(head.len() + 2);
    let mut out = Vec::with_capacity(head.len() + pad + 2);
    out.extend_from_slice(head.as_bytes());
    out.resize(head.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
    out
}

/// Decodes the stamp at the front of a payload; `None` for anything else (a
/// publication this tool did not send, or a server that rewrote the JSON).
pub fn decode(data: &[u8]) -> Option<Stamp> {
    let rest = data.strip_prefix(PREFIX)?;
    let (channel, rest) = number(rest)?;
    let rest = rest.strip_prefix(b",")?;
    let (seq, rest) = number(rest)?;
    let rest = rest.strip_prefix(b",")?;
    let (sent_us, rest) = number(rest)?;
    rest.strip_prefix(b"]")?;
    Some(Stamp {
        channel: u32::try_from(channel).ok()?,
        seq,
        sent_us,
    })
}

fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for b in &s[..digits] {
        n = n * 10 + u64::from(b - b'0');
    }
    Some((n, &s[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads_to_size() {
        let stamp = Stamp {
            channel: 7,
            seq: 123_456,
            sent_us: now_us(),
        };
        let data = encode(stamp, 100);
        assert_eq!(data.len(), 100);
        assert!(serde_json::from_slice::<serde_json::Value>(&data).is_ok());
        assert_eq!(decode(&data), Some(stamp));
    }

    #[test]
    fn small_sizes_still_carry_the_stamp() {
        let stamp = Stamp {
            channel: 0,
            seq: 1,
            sent_us: 2,
        };
        let data = encode(stamp, 1);
        assert_eq!(decode(&data), Some(stamp));
    }

    #[test]
    fn foreign_data_is_ignored() {
        assert_eq!(decode(b"{\"text\":\"hi\"}"), None);
        assert_eq!(decode(b"{\"lt\":[1,2"), None);
        assert_eq!(decode(b"{\"lt\":[99999999999999999999999,2,3]}"), None);
        assert_eq!(decode(b""), None);
    }
}
