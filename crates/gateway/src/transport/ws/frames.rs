//! WebSocket frames on an upgraded connection (RFC 6455, server side).
//!
//! The reader is incremental: the connection task reads whatever the socket has
//! into a per-thread scratch buffer and feeds it here. Complete messages come out;
//! only the bytes of an unfinished frame stay with the connection, so an idle
//! connection holds no read buffer at all. fastwebsockets does the handshake, the
//! unmasking and the close-code rules; what it does not offer is a reader that
//! can be fed from outside, which is what keeps a connection to one task and a few
//! hundred bytes.

use bytes::Bytes;
use fastwebsockets::{CloseCode, OpCode};

/// What a client sent, once a frame or a fragmented message is complete.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole text or binary message (fragments joined).
    Message { opcode: OpCode, data: Bytes },
    /// The protocol obliges a pong with this payload.
    Ping(Bytes),
    /// The client closes; its payload is echoed back in our close frame.
    Close(Bytes),
}

/// Why a client's frames cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message larger than the size limit")]
    TooLarge,
    #[error("invalid frame: {0}")]
    Protocol(&'static str),
    #[error("text message is not UTF-8")]
    InvalidUtf8,
}

/// A fragmented message being collected.
#[derive(Debug)]
struct Partial {
    opcode: OpCode,
    data: Vec<u8>,
}

/// Turns the bytes a client sends into [`Event`]s.
#[derive(Debug)]
pub struct FrameReader {
    /// Bytes of a frame not yet complete (empty, and unallocated, between frames).
    pending: Vec<u8>,
    message: Option<Partial>,
    max_message: usize,
}

/// A parsed frame head.
struct Head {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    len: usize,
    /// Bytes of the head itself.
    size: usize,
}

impl FrameReader {
    /// A reader refusing messages of more than `max_message` bytes.
    pub fn new(max_message: usize) -> FrameReader {
        FrameReader {
            pending: Vec::new(),
            message: None,
            max_message,
        }
    }

    /// Bytes held for frames not yet complete.
    pub fn buffered(&self) -> usize {
        self.pending.len() + self.message.as_ref().map_or(0, |m| m.data.len())
    }

    /// Parses `input` (what the socket just gave) and pushes every completed event.
    /// After an error the connection must close: the stream cannot be resynchronised.
    pub fn feed(&mut self, input: &[u8], events: &mut Vec<Event>) -> Result<(), FrameError> {
        if self.pending.is_empty() {
            let used = self.parse(input, events)?;
            self.pending.extend_from_slice(&input[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(input);
            let used = self.parse(&pending, events)?;
            pending.drain(..used);
            if !pending.is_empty() {
                // The rest of a large frame may sit in a much larger buffer.
                if pending.capacity() > 4 * pending.len().max(1024) {
                    pending.shrink_to_fit();
                }
                self.pending = pending;
            }
        }
        Ok(())
    }

    /// Parses whole frames from the front of `data`; returns the bytes used.
    fn parse(&mut self, data: &[u8], events: &mut Vec<Event>) -> Result<usize, FrameError> {
        let mut used = 0;
        while let Some(head) = self.head(&data[used..])? {
            let end = used + head.size + head.len;
            if data.len() < end {
                break;
            }
            let mut payload = data[used + head.size..end].to_vec();
            fastwebsockets::unmask(&mut payload, head.mask);
            used = end;
            self.frame(head, payload, events)?;
        }
        Ok(used)
    }

    /// The head at the front of `data`, once it is all there; checked as soon as
    /// it is, so an oversized frame is refused before its payload is buffered.
    fn head(&self, data: &[u8]) -> Result<Option<Head>, FrameError> {
        if data.len() < 2 {
            return Ok(None);
        }
        let fin = data[0] & 0x80 != 0;
        if data[0] & 0x70 != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        let opcode =
            OpCode::try_from(data[0] & 0x0f).map_err(|_| FrameError::Protocol("unknown opcode"))?;
        if data[1] & 0x80 == 0 {
            return Err(FrameError::Protocol("client frame not masked"));
        }
        let (len, size) = match data[1] & 0x7f {
            126 if data.len() >= 4 => (u64::from(u16::from_be_bytes([data[2], data[3]])), 4),
            127 if data.len() >= 10 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&data[2..10]);
                (u64::from_be_bytes(be), 10)
            }
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
        if control && (!fin || len > 125) {
            return Err(FrameError::Protocol(
                "fragmented or oversized control frame",
            ));
        }
        let held = self.message.as_ref().map_or(0, |m| m.data.len()) as u64;
        let total = if opcode == OpCode::Continuation {
            // The length is the client's: a sum that wrapped would pass the limit.
            held.saturating_add(len)
        } else {
            len
        };
        if total > self.max_message as u64 {
            return Err(FrameError::TooLarge);
        }
        if data.len() < size + 4 {
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&data[size..size + 4]);
        Ok(Some(Head {
            fin,
            opcode,
            mask,
            // Bounded by max_message above, so it fits.
            len: len as usize,
            size: size + 4,
        }))
    }

    fn frame(
        &mut self,
        head: Head,
        payload: Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), FrameError> {
        match head.opcode {
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(FrameError::Protocol("new message inside a fragmented one"));
                }
                if head.fin {
                    events.push(message(head.opcode, payload)?);
                } else {
                    self.message = Some(Partial {
                        opcode: head.opcode,
                        data: payload,
                    });
                }
            }
            OpCode::Continuation => {
                let Some(partial) = self.message.as_mut() else {
                    return Err(FrameError::Protocol("continuation without a message"));
                };
                partial.data.extend_from_slice(&payload);
                if head.fin {
                    let partial = self.message.take().expect("checked above");
                    events.push(message(partial.opcode, partial.data)?);
                }
            }
            OpCode::Ping => events.push(Event::Ping(payload.into())),
            OpCode::Pong => {}
            OpCode::Close => {
                check_close(&payload)?;
                events.push(Event::Close(payload.into()));
            }
        }
        Ok(())
    }
}

fn message(opcode: OpCode, data: Vec<u8>) -> Result<Event, FrameError> {
    if opcode == OpCode::Text && std::str::from_utf8(&data).is_err() {
        return Err(FrameError::InvalidUtf8);
    }
    Ok(Event::Message {
        opcode,
        data: data.into(),
    })
}

/// A close payload is empty, or a permitted code followed by a UTF-8 reason.
fn check_close(payload: &[u8]) -> Result<(), FrameError> {
    match payload.len() {
        0 => Ok(()),
        1 => Err(FrameError::Protocol("one-byte close payload")),
        _ => {
            let code = CloseCode::from(u16::from_be_bytes([payload[0], payload[1]]));
            if !code.is_allowed() {
                return Err(FrameError::Protocol("close code not allowed"));
            }
            std::str::from_utf8(&payload[2..])
                .map(|_| ())
                .map_err(|_| FrameError::InvalidUtf8)
        }
    }
}

/// Longest head of an unmasked server frame.
pub const MAX_HEAD: usize = 10;

/// Writes the head of an unmasked, final server frame carrying `len` bytes.
pub fn head(opcode: OpCode, len: usize, out: &mut [u8; MAX_HEAD]) -> usize {
    out[0] = 0x80 | opcode as u8;
    match len {
        0..=125 => {
            out[1] = len as u8;
            2
        }
        126..=65535 => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn feed_all(reader: &mut FrameReader, bytes: &[u8]) -> Result<Vec<Event>, FrameError> {
        let mut events = Vec::new();
        reader.feed(bytes, &mut events)?;
        Ok(events)
    }

    fn text(s: &str) -> Event {
        Event::Message {
            opcode: OpCode::Text,
            data: Bytes::copy_from_slice(s.as_bytes()),
        }
    }

    #[test]
    fn whole_frames_in_one_read() {
        let mut r = FrameReader::new(1 << 20);
        let mut bytes = client_frame(true, 1, b"{\"id\":1}");
        bytes.extend(client_frame(true, 2, &[1, 2, 3]));
        let events = feed_all(&mut r, &bytes).unwrap();
        assert_eq!(
            events,
            vec![
                text("{\"id\":1}"),
                Event::Message {
                    opcode: OpCode::Binary,
                    data: Bytes::from_static(&[1, 2, 3])
                }
            ]
        );
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_events_and_holds_only_the_unfinished_frame() {
        let long = "x".repeat(70_000);
        let mut bytes = client_frame(true, 1, b"short");
        bytes.extend(client_frame(true, 1, "m".repeat(300).as_bytes()));
        bytes.extend(client_frame(true, 1, long.as_bytes()));
        let mut r = FrameReader::new(1 << 20);
        let mut events = Vec::new();
        for b in &bytes {
            r.feed(std::slice::from_ref(b), &mut events).unwrap();
        }
        assert_eq!(
            events,
            vec![text("short"), text(&"m".repeat(300)), text(&long)]
        );
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.pending.capacity(), 0, "no buffer kept between frames");
    }

    #[test]
    fn fragments_are_joined_and_control_frames_may_interleave() {
        let mut bytes = client_frame(false, 1, b"{\"id\":");
        bytes.extend(client_frame(true, 9, b"ping"));
        bytes.extend(client_frame(false, 0, b"7"));
        bytes.extend(client_frame(true, 0, b"}"));
        let events = feed_all(&mut FrameReader::new(100), &bytes).unwrap();
        assert_eq!(
            events,
            vec![Event::Ping(Bytes::from_static(b"ping")), text("{\"id\":7}")]
        );
    }

    #[test]
    fn utf8_is_checked_on_the_whole_message_not_each_fragment() {
        let snowman = "☃".as_bytes();
        let mut bytes = client_frame(false, 1, &snowman[..1]);
        bytes.extend(client_frame(true, 0, &snowman[1..]));
        assert_eq!(
            feed_all(&mut FrameReader::new(100), &bytes).unwrap(),
            vec![text("☃")]
        );
        let bad = client_frame(true, 1, &[b'{', 0xff, b'}']);
        assert_eq!(
            feed_all(&mut FrameReader::new(100), &bad),
            Err(FrameError::InvalidUtf8)
        );
    }

    #[test]
    fn size_limit_applies_to_the_head_and_to_fragments_together() {
        let mut r = FrameReader::new(10);
        // Refused from the head alone, before any payload arrives.
        let head = &client_frame(true, 2, &[0; 11])[..6];
        assert_eq!(feed_all(&mut r, head), Err(FrameError::TooLarge));
        let mut r = FrameReader::new(10);
        assert!(feed_all(&mut r, &client_frame(true, 2, &[0; 10])).is_ok());
        let mut bytes = client_frame(false, 2, &[0; 6]);
        bytes.extend(client_frame(true, 0, &[0; 5]));
        assert_eq!(feed_all(&mut r, &bytes), Err(FrameError::TooLarge));
        // A 64-bit length past any limit is refused, not allocated.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            feed_all(&mut FrameReader::new(10), &huge),
            Err(FrameError::TooLarge)
        );
    }

    /// Found by the `ws_frames` fuzz target: a continuation whose 64-bit length
    /// wrapped past the limit once added to the fragment held, and its payload
    /// was then sliced with an end before its start (a panic of the connection task).
    #[test]
    fn continuation_length_near_u64_max_is_too_large_not_a_panic() {
        let mut bytes = client_frame(false, 1, b"x");
        bytes.extend_from_slice(&[0x80, 0x80 | 127]);
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        bytes.extend_from_slice(&[0; 20]);
        assert_eq!(
            feed_all(&mut FrameReader::new(1020), &bytes),
            Err(FrameError::TooLarge)
        );
        // The input as the fuzzer reduced it, fed 7 bytes at a time.
        let found: &[u8] = &[
            1, 138, 55, 250, 33, 61, 76, 216, 66, 82, 89, 148, 255, 255, 7, 138, 128, 255, 255,
            255, 255, 255, 255, 255, 255, 255,
        ];
        let mut r = FrameReader::new(1020);
        let mut events = Vec::new();
        let got: Result<(), FrameError> = found
            .chunks(7)
            .try_for_each(|chunk| r.feed(chunk, &mut events));
        assert_eq!(got, Err(FrameError::TooLarge));
    }

    #[test]
    fn protocol_violations_are_refused() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unmasked", vec![0x81, 0x01, b'x']),
            ("reserved bits", {
                let mut f = client_frame(true, 1, b"x");
                f[0] |= 0x40;
                f
            }),
            ("unknown opcode", client_frame(true, 3, b"x")),
            ("fragmented ping", client_frame(false, 9, b"x")),
            ("long ping", client_frame(true, 9, &[0; 126])),
            ("stray continuation", client_frame(true, 0, b"x")),
            ("message inside a message", {
                let mut f = client_frame(false, 1, b"x");
                f.extend(client_frame(true, 1, b"y"));
                f
            }),
            ("one-byte close", client_frame(true, 8, &[3])),
            (
                "reserved close code",
                client_frame(true, 8, &1005u16.to_be_bytes()),
            ),
        ];
        for (what, bytes) in cases {
            let got = feed_all(&mut FrameReader::new(1000), &bytes);
            assert!(
                matches!(got, Err(FrameError::Protocol(_))),
                "{what}: {got:?}"
            );
        }
    }

    #[test]
    fn close_carries_its_payload_and_pongs_are_ignored() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut bytes = client_frame(true, 10, b"late pong");
        bytes.extend(client_frame(true, 8, &payload));
        assert_eq!(
            feed_all(&mut FrameReader::new(100), &bytes).unwrap(),
            vec![Event::Close(Bytes::from(payload))]
        );
    }

    #[test]
    fn heads_match_the_length_encodings() {
        let mut out = [0u8; MAX_HEAD];
        assert_eq!(head(OpCode::Text, 5, &mut out), 2);
        assert_eq!(out[..2], [0x81, 5]);
        assert_eq!(head(OpCode::Binary, 300, &mut out), 4);
        assert_eq!(out[..4], [0x82, 126, 1, 44]);
        assert_eq!(head(OpCode::Binary, 70_000, &mut out), 10);
        assert_eq!(out[..2], [0x82, 127]);
        assert_eq!(u64::from_be_bytes(out[2..10].try_into().unwrap()), 70_000);
    }
}
