//! The server side of the codec: a client's frame → its commands, a reply or push →
//! a record.

use bytes::Bytes;
use prost::Message as _;

use super::Encoding;
use crate::centrifugo::pb::{Command, EmulationRequest, Reply};

/// A frame the client sent could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed JSON command: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed protobuf command: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("a frame holds more than {0} commands")]
    TooManyCommands(usize),
    #[error("an emulation request's data is not a string of commands")]
    EmulationData,
}

/// A reply or push could not be encoded for this connection's encoding.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Application data that is not JSON cannot reach a JSON client.
    #[error("data cannot be sent to a JSON client: {0}")]
    NotJson(#[from] serde_json::Error),
}

impl Encoding {
    /// Decodes every command of one frame, at most `max_commands` of them.
    pub fn decode_commands(
        self,
        frame: &[u8],
        max_commands: usize,
    ) -> Result<Vec<Command>, DecodeError> {
        let mut commands = Vec::new();
        match self {
            Encoding::Json => {
                for line in frame.split(|b| *b == b'\n') {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    if commands.len() == max_commands {
                        return Err(DecodeError::TooManyCommands(max_commands));
                    }
                    commands.push(serde_json::from_slice(line)?);
                }
            }
            Encoding::Protobuf => {
                let mut buf = frame;
                while !buf.is_empty() {
                    if commands.len() == max_commands {
                        return Err(DecodeError::TooManyCommands(max_commands));
                    }
                    commands.push(Command::decode_length_delimited(&mut buf)?);
                }
            }
        }
        Ok(commands)
    }

    /// Encodes one reply or push as a record.
    pub fn encode_reply(self, reply: &Reply) -> Result<Bytes, EncodeError> {
        match self {
            Encoding::Json => Ok(Bytes::from(serde_json::to_vec(reply)?)),
            Encoding::Protobuf => Ok(Bytes::from(reply.encode_length_delimited_to_vec())),
        }
    }

    /// The record of a server ping: an empty reply.
    pub fn ping_record(self) -> Bytes {
        match self {
            Encoding::Json => Bytes::from_static(b"{}"),
            Encoding::Protobuf => Bytes::from_static(&[0]),
        }
    }
}

impl Encoding {
    /// Decodes a bidirectional-emulation request (the body of `POST /emulation`).
    /// In JSON, `data` is the client's commands as one string (as centrifuge-js
    /// sends them) or, from a hand-written client, the command object itself.
    pub fn decode_emulation(self, body: &[u8]) -> Result<EmulationRequest, DecodeError> {
        match self {
            Encoding::Json => {
                #[derive(serde::Deserialize)]
                struct Json {
                    #[serde(default)]
                    node: String,
                    session: String,
                    data: serde_json::Value,
                }
                let request: Json = serde_json::from_slice(body)?;
                let data = match request.data {
                    serde_json::Value::String(s) => Bytes::from(s),
                    v @ serde_json::Value::Object(_) => Bytes::from(serde_json::to_vec(&v)?),
                    _ => return Err(DecodeError::EmulationData),
                };
                Ok(EmulationRequest {
                    node: request.node,
                    session: request.session,
                    data,
                })
            }
            Encoding::Protobuf => Ok(EmulationRequest::decode(body)?),
        }
    }
}

/// True for the command a client sends in answer to a server ping: no id, no method.
pub fn is_pong(command: &Command) -> bool {
    *command == Command::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::centrifugo::pb::{Publication, Push, SubscribeRequest};

    #[test]
    fn json_commands_are_newline_delimited_and_blank_lines_skipped() {
        let frame = b"{\"id\":1,\"subscribe\":{\"channel\":\"a\"}}\n\n{\"id\":2,\"publish\":{\"channel\":\"a\",\"data\":{\"x\":[1,2]}}}\n";
        let commands = Encoding::Json.decode_commands(frame, 10).unwrap();
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[0].subscribe.as_ref().unwrap().channel, "a");
        assert_eq!(
            &commands[1].publish.as_ref().unwrap().data[..],
            b"{\"x\":[1,2]}"
        );
    }

    #[test]
    fn emulation_requests_carry_the_commands_as_the_client_encoded_them() {
        let body = br#"{"session":"s1","node":"n1","data":"{\"id\":2,\"ping\":{}}"}"#;
        let request = Encoding::Json.decode_emulation(body).unwrap();
        assert_eq!((&*request.session, &*request.node), ("s1", "n1"));
        assert_eq!(&request.data[..], br#"{"id":2,"ping":{}}"#);
        let object = br#"{"session":"s1","data":{"id":3}}"#;
        let request = Encoding::Json.decode_emulation(object).unwrap();
        assert_eq!(&request.data[..], br#"{"id":3}"#);
        assert!(Encoding::Json
            .decode_emulation(br#"{"session":"s1","data":7}"#)
            .is_err());
        assert!(Encoding::Json
            .decode_emulation(br#"{"data":"{}"}"#)
            .is_err());

        let encoded = EmulationRequest {
            node: "n1".into(),
            session: "s1".into(),
            data: Bytes::from_static(&[2, 8, 1]),
        }
        .encode_to_vec();
        let request = Encoding::Protobuf.decode_emulation(&encoded).unwrap();
        assert_eq!(&request.data[..], &[2, 8, 1]);
        assert!(Encoding::Protobuf.decode_emulation(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn empty_json_object_is_a_pong() {
        let commands = Encoding::Json.decode_commands(b"{}", 10).unwrap();
        assert!(is_pong(&commands[0]));
    }

    #[test]
    fn protobuf_commands_round_trip_length_delimited() {
        let mut frame = Vec::new();
        for id in 1..=3 {
            let cmd = Command {
                id,
                subscribe: Some(SubscribeRequest {
                    channel: format!("c{id}"),
                    recover: true,
                    offset: 7,
                    ..Default::default()
                }),
                ..Default::default()
            };
            cmd.encode_length_delimited(&mut frame).unwrap();
        }
        Command::default()
            .encode_length_delimited(&mut frame)
            .unwrap();
        let commands = Encoding::Protobuf.decode_commands(&frame, 10).unwrap();
        assert_eq!(commands.len(), 4);
        assert_eq!(commands[2].subscribe.as_ref().unwrap().channel, "c3");
        assert!(is_pong(&commands[3]));
    }

    #[test]
    fn too_many_commands_are_refused() {
        let frame = b"{}\n{}\n{}";
        assert!(matches!(
            Encoding::Json.decode_commands(frame, 2),
            Err(DecodeError::TooManyCommands(2))
        ));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(Encoding::Json.decode_commands(b"{\"id\":", 10).is_err());
        assert!(Encoding::Json.decode_commands(b"[1,2]", 10).is_err());
        assert!(Encoding::Protobuf
            .decode_commands(&[0xff, 0xff, 0xff], 10)
            .is_err());
        assert!(Encoding::Protobuf.decode_commands(&[5, 1], 10).is_err());
    }

    #[test]
    fn json_reply_leaves_out_defaults_and_keeps_data_raw() {
        let reply = Reply {
            push: Some(Push {
                channel: "news".into(),
                r#pub: Some(Publication {
                    data: Bytes::from_static(b"{\"text\":\"hi\"}"),
                    offset: 3,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let record = Encoding::Json.encode_reply(&reply).unwrap();
        assert_eq!(
            std::str::from_utf8(&record).unwrap(),
            r#"{"push":{"channel":"news","pub":{"data":{"text":"hi"},"offset":3}}}"#
        );
    }

    #[test]
    fn non_json_data_cannot_be_encoded_as_json() {
        let reply = Reply {
            push: Some(Push {
                r#pub: Some(Publication {
                    data: Bytes::from_static(&[0xde, 0xad]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(Encoding::Json.encode_reply(&reply).is_err());
        assert!(Encoding::Protobuf.encode_reply(&reply).is_ok());
    }
}
