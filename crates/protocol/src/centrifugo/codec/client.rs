//! The client side of the codec, the inverse of the server side: a server's frame →
//! its records and its replies and pushes, a command → a record.
//!
//! Records are as the server side writes them, so `decode_reply(encode_reply(r))`
//! and `decode_commands(encode_command(c))` give back what went in.

use std::iter::FusedIterator;

use bytes::Bytes;
use prost::Message as _;

use super::Encoding;
use crate::centrifugo::pb::{Command, Reply};

/// A frame the server sent could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ReplyDecodeError {
    #[error("malformed JSON reply: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed protobuf reply: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A protobuf record's length prefix does not match the bytes behind it: more
    /// than the frame has left, or (for one record decoded alone) fewer than it holds.
    #[error("a protobuf length prefix of {declared} bytes where {available} follow")]
    Length { declared: usize, available: usize },
    #[error("a frame holds more than {0} replies")]
    TooManyReplies(usize),
}

/// A command could not be encoded in this connection's encoding.
#[derive(Debug, thiserror::Error)]
pub enum CommandEncodeError {
    /// Application data that is not JSON cannot reach a JSON server.
    #[error("data cannot be sent to a JSON server: {0}")]
    NotJson(#[from] serde_json::Error),
}

impl Encoding {
    /// The records of one server frame, borrowed from it, at most `max_replies` of
    /// them: the non-blank lines of a JSON frame, the length-delimited messages
    /// (prefix included) of a protobuf one. For a reader that looks into records
    /// itself; [`Encoding::decode_reply`] decodes one.
    pub fn split_replies(self, frame: &[u8], max_replies: usize) -> ReplyRecords<'_> {
        ReplyRecords {
            encoding: self,
            rest: frame,
            left: max_replies,
            max: max_replies,
        }
    }

    /// Decodes one record, as [`Encoding::split_replies`] yields it.
    pub fn decode_reply(self, record: &[u8]) -> Result<Reply, ReplyDecodeError> {
        match self {
            Encoding::Json => Ok(serde_json::from_slice(record)?),
            Encoding::Protobuf => {
                let mut body = record;
                let declared = prost::decode_length_delimiter(&mut body)?;
                if declared != body.len() {
                    return Err(ReplyDecodeError::Length {
                        declared,
                        available: body.len(),
                    });
                }
                Ok(Reply::decode(body)?)
            }
        }
    }

    /// Decodes every reply and push of one server frame, at most `max_replies` of
    /// them; pings (see [`is_ping`]) included.
    ///
    /// ```
    /// use switchboard_protocol::centrifugo::codec::is_ping;
    /// use switchboard_protocol::centrifugo::Encoding;
    ///
    /// let frame = b"{\"id\":1,\"connect\":{\"client\":\"c1\"}}\n{}";
    /// let replies = Encoding::Json.decode_replies(frame, 100).unwrap();
    /// assert_eq!(replies[0].connect.as_ref().unwrap().client, "c1");
    /// assert!(is_ping(&replies[1]));
    /// assert!(Encoding::Json.decode_replies(frame, 1).is_err());
    /// ```
    pub fn decode_replies(
        self,
        frame: &[u8],
        max_replies: usize,
    ) -> Result<Vec<Reply>, ReplyDecodeError> {
        self.split_replies(frame, max_replies)
            .map(|record| self.decode_reply(record?))
            .collect()
    }

    /// Encodes one command as a record. A frame of one command is its record;
    /// [`Encoding::join`] makes one frame of several.
    pub fn encode_command(self, command: &Command) -> Result<Bytes, CommandEncodeError> {
        match self {
            Encoding::Json => Ok(Bytes::from(serde_json::to_vec(command)?)),
            Encoding::Protobuf => Ok(Bytes::from(command.encode_length_delimited_to_vec())),
        }
    }
}

/// True for a server ping: an empty reply, which a client answers with an empty
/// command (see [`super::is_pong`]).
pub fn is_ping(reply: &Reply) -> bool {
    *reply == Reply::default()
}

/// The records of one server frame; see [`Encoding::split_replies`]. Ends after
/// the first error.
#[derive(Debug, Clone)]
pub struct ReplyRecords<'a> {
    encoding: Encoding,
    rest: &'a [u8],
    /// Records that may still be yielded before the frame holds too many.
    left: usize,
    max: usize,
}

impl<'a> Iterator for ReplyRecords<'a> {
    type Item = Result<&'a [u8], ReplyDecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = match self.encoding {
            Encoding::Json => next_line(&mut self.rest).map(Ok),
            Encoding::Protobuf => next_delimited(&mut self.rest),
        }?;
        if self.left == 0 {
            self.rest = &[];
            return Some(Err(ReplyDecodeError::TooManyReplies(self.max)));
        }
        match record {
            Ok(_) => self.left -= 1,
            Err(_) => self.rest = &[],
        }
        Some(record)
    }
}

impl FusedIterator for ReplyRecords<'_> {}

/// The next non-blank line of `rest`, which moves past it.
fn next_line<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    while !rest.is_empty() {
        let (line, tail) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (*rest, &[][..]),
        };
        *rest = tail;
        if !line.iter().all(u8::is_ascii_whitespace) {
            return Some(line);
        }
    }
    None
}

/// The next length-delimited message of `rest` with its prefix; `rest` moves past it.
fn next_delimited<'a>(rest: &mut &'a [u8]) -> Option<Result<&'a [u8], ReplyDecodeError>> {
    if rest.is_empty() {
        return None;
    }
    let frame = *rest;
    let mut body = frame;
    let declared = match prost::decode_length_delimiter(&mut body) {
        Ok(declared) => declared,
        Err(e) => return Some(Err(e.into())),
    };
    if declared > body.len() {
        return Some(Err(ReplyDecodeError::Length {
            declared,
            available: body.len(),
        }));
    }
    let (record, tail) = frame.split_at(frame.len() - body.len() + declared);
    *rest = tail;
    Some(Ok(record))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::centrifugo::pb::{
        ClientInfo, Error, Join, Publication, PublishRequest, Push, SubscribeRequest,
        SubscribeResult,
    };

    /// A frame of what a server sends: a reply, pushes, a ping, an error reply.
    fn replies() -> Vec<Reply> {
        let publication = |offset| Publication {
            data: Bytes::from_static(b"{\"text\":\"hi\",\"n\":[1,2]}"),
            offset,
            info: Some(ClientInfo {
                user: "u".into(),
                client: "c".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        vec![
            Reply {
                id: 1,
                subscribe: Some(SubscribeResult {
                    epoch: "e".into(),
                    offset: 2,
                    recoverable: true,
                    publications: vec![publication(1), publication(2)],
                    ..Default::default()
                }),
                ..Default::default()
            },
            Reply {
                push: Some(Push {
                    channel: "news".into(),
                    r#pub: Some(publication(3)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Reply::default(),
            Reply {
                push: Some(Push {
                    channel: "news".into(),
                    join: Some(Join {
                        info: Some(ClientInfo::default()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Reply {
                id: 2,
                error: Some(Error {
                    code: 103,
                    message: "permission denied".into(),
                    temporary: false,
                }),
                ..Default::default()
            },
        ]
    }

    fn frame_of(encoding: Encoding, replies: &[Reply]) -> BytesMut {
        let mut frame = BytesMut::new();
        let records = replies.iter().map(|r| encoding.encode_reply(r).unwrap());
        encoding.join(records, &mut frame);
        frame
    }

    #[test]
    fn replies_round_trip_in_both_encodings() {
        for encoding in [Encoding::Json, Encoding::Protobuf] {
            let frame = frame_of(encoding, &replies());
            let decoded = encoding.decode_replies(&frame, 5).unwrap();
            assert_eq!(decoded, replies(), "{encoding:?}");
            assert!(is_ping(&decoded[2]));
            assert!(!is_ping(&decoded[0]));
        }
    }

    #[test]
    fn records_are_split_without_copying_and_blank_lines_skipped() {
        for encoding in [Encoding::Json, Encoding::Protobuf] {
            let frame = frame_of(encoding, &replies());
            let records: Vec<&[u8]> = encoding
                .split_replies(&frame, 5)
                .collect::<Result<_, _>>()
                .unwrap();
            let encoded: Vec<Bytes> = replies()
                .iter()
                .map(|r| encoding.encode_reply(r).unwrap())
                .collect();
            assert_eq!(records, encoded, "{encoding:?}");
            assert!(records
                .iter()
                .all(|r| frame.as_ptr_range().contains(&r.as_ptr())));
        }
        let records: Vec<_> = Encoding::Json
            .split_replies(b"\n {} \n\n\t\n{\"id\":1}\n", 2)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records, [&b" {} "[..], b"{\"id\":1}"]);
        assert_eq!(Encoding::Json.split_replies(b" \n", 0).count(), 0);
        assert_eq!(Encoding::Protobuf.split_replies(b"", 0).count(), 0);
    }

    #[test]
    fn non_json_data_reaches_protobuf_clients_only() {
        let reply = Reply {
            push: Some(Push {
                r#pub: Some(Publication {
                    data: Bytes::from_static(&[0xde, 0xad, b'\n', 0]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let frame = frame_of(Encoding::Protobuf, &[reply.clone(), Reply::default()]);
        let decoded = Encoding::Protobuf.decode_replies(&frame, 2).unwrap();
        assert_eq!(decoded, [reply, Reply::default()]);
    }

    #[test]
    fn commands_round_trip_in_both_encodings() {
        let commands = vec![
            Command {
                id: 1,
                subscribe: Some(SubscribeRequest {
                    channel: "news".into(),
                    recover: true,
                    offset: 7,
                    epoch: "e".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Command {
                id: 2,
                publish: Some(PublishRequest {
                    channel: "news".into(),
                    data: Bytes::from_static(b"{\"x\":[1,2]}"),
                }),
                ..Default::default()
            },
            Command::default(),
        ];
        for encoding in [Encoding::Json, Encoding::Protobuf] {
            let mut frame = BytesMut::new();
            let records = commands.iter().map(|c| encoding.encode_command(c).unwrap());
            encoding.join(records, &mut frame);
            let decoded = encoding.decode_commands(&frame, 3).unwrap();
            assert_eq!(decoded, commands, "{encoding:?}");
            assert!(super::super::is_pong(&decoded[2]));
        }
        assert_eq!(
            &Encoding::Json.encode_command(&Command::default()).unwrap()[..],
            b"{}"
        );
        assert_eq!(
            &Encoding::Protobuf
                .encode_command(&Command::default())
                .unwrap()[..],
            &[0]
        );
    }

    #[test]
    fn non_json_data_cannot_be_sent_as_json() {
        let command = Command {
            publish: Some(PublishRequest {
                channel: "bin".into(),
                data: Bytes::from_static(&[0xde, 0xad]),
            }),
            ..Default::default()
        };
        assert!(matches!(
            Encoding::Json.encode_command(&command),
            Err(CommandEncodeError::NotJson(_))
        ));
        assert!(Encoding::Protobuf.encode_command(&command).is_ok());
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let json = |frame: &[u8]| Encoding::Json.decode_replies(frame, 10);
        let protobuf = |frame: &[u8]| Encoding::Protobuf.decode_replies(frame, 10);
        for frame in [
            &b"{\"id\":"[..],
            b"[1,2]",
            b"not json",
            b"{} x",
            b"{\"id\":-1}",
        ] {
            assert!(
                matches!(json(frame), Err(ReplyDecodeError::Json(_))),
                "{frame:?}"
            );
        }
        assert!(matches!(
            json(b"{}\n{\xff}"),
            Err(ReplyDecodeError::Json(_))
        ));
        // An unfinished varint, a body cut short, a body that is not a Reply.
        assert!(matches!(
            protobuf(&[0xff, 0xff, 0xff]),
            Err(ReplyDecodeError::Protobuf(_))
        ));
        assert!(matches!(
            protobuf(&[5, 1]),
            Err(ReplyDecodeError::Length {
                declared: 5,
                available: 1
            })
        ));
        assert!(matches!(
            protobuf(&[0, 2, 0xff, 0xff]),
            Err(ReplyDecodeError::Protobuf(_))
        ));
        assert!(matches!(
            Encoding::Protobuf.decode_reply(&[0, 0]),
            Err(ReplyDecodeError::Length {
                declared: 0,
                available: 1
            })
        ));
        assert!(json(b"{}\n{}").is_ok() && protobuf(&[0, 0]).is_ok());
    }

    #[test]
    fn records_end_at_the_first_error() {
        let mut records = Encoding::Protobuf.split_replies(&[0, 9, 1, 0], 10);
        assert_eq!(records.next().unwrap().unwrap(), &[0]);
        assert!(records.next().unwrap().is_err());
        assert!(records.next().is_none());
    }

    #[test]
    fn too_many_replies_are_refused() {
        assert!(matches!(
            Encoding::Json.decode_replies(b"{}\n{}\n{}", 2),
            Err(ReplyDecodeError::TooManyReplies(2))
        ));
        assert!(matches!(
            Encoding::Protobuf.decode_replies(&[0, 0, 0], 2),
            Err(ReplyDecodeError::TooManyReplies(2))
        ));
        // Checked before the record past the bound is read, as for commands.
        assert!(matches!(
            Encoding::Protobuf.decode_replies(&[0, 0, 0xff], 2),
            Err(ReplyDecodeError::TooManyReplies(2))
        ));
        assert_eq!(
            Encoding::Json
                .decode_replies(b"{}\n\n{}\n", 2)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            Encoding::Protobuf.decode_replies(&[0, 0], 2).unwrap().len(),
            2
        );
        let mut records = Encoding::Json.split_replies(b"{}\n{}", 1);
        assert!(records.next().unwrap().is_ok());
        assert!(matches!(
            records.next(),
            Some(Err(ReplyDecodeError::TooManyReplies(1)))
        ));
        assert!(records.next().is_none());
    }
}
