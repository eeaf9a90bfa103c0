//! Frames ↔ commands and replies, both ways.
//!
//! A frame holds one or more *records*: newline-delimited JSON objects in the JSON
//! encoding, varint-length-delimited messages in protobuf (a protobuf record is the
//! message with its length prefix). Either side encodes records one by one; a
//! writer that finds several records queued joins them into one frame with
//! [`Encoding::join`].
//!
//! # Layout
//! - `server`: what a server needs: a client's frame → commands
//!   ([`Encoding::decode_commands`]), a reply or push → a record
//!   ([`Encoding::encode_reply`]), the ping record, [`is_pong`].
//! - `client`: what a client needs, the inverse: a server's frame → its records
//!   ([`Encoding::split_replies`]) and replies and pushes
//!   ([`Encoding::decode_replies`]), a command → a record
//!   ([`Encoding::encode_command`]), [`is_ping`].

mod client;
mod server;

use bytes::{Bytes, BytesMut};

pub use client::{is_ping, CommandEncodeError, ReplyDecodeError, ReplyRecords};
pub use server::{is_pong, DecodeError, EncodeError};

/// The WebSocket subprotocol by which SDKs ask for the protobuf encoding; the
/// server names it back in its handshake reply.
pub const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";
/// The subprotocol of the JSON encoding, named back when a client offers it.
pub const JSON_SUBPROTOCOL: &str = "centrifuge-json";

/// The encoding a connection chose at upgrade time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    /// Picks the encoding from the WebSocket subprotocols the client offers
    /// (`Sec-WebSocket-Protocol: centrifuge-protobuf`, what the SDKs send) or the
    /// URL's query string (`cf_protocol=protobuf`).
    pub fn negotiate<'a>(
        subprotocols: impl IntoIterator<Item = &'a str>,
        query: Option<&str>,
    ) -> Encoding {
        let offered = subprotocols
            .into_iter()
            .any(|p| p.trim() == PROTOBUF_SUBPROTOCOL);
        let queried = query
            .unwrap_or_default()
            .split('&')
            .any(|pair| pair == "cf_protocol=protobuf");
        if offered || queried {
            Encoding::Protobuf
        } else {
            Encoding::Json
        }
    }

    pub fn is_binary(self) -> bool {
        self == Encoding::Protobuf
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Protobuf => "protobuf",
        }
    }

    /// What stands between records joined into one frame: a newline between
    /// JSON replies; nothing between protobuf ones (each carries its length).
    pub const fn separator(self) -> &'static [u8] {
        match self {
            Encoding::Json => b"\n",
            Encoding::Protobuf => b"",
        }
    }

    /// Joins records queued together into one frame.
    pub fn join(self, records: impl IntoIterator<Item = Bytes>, out: &mut BytesMut) {
        for (i, record) in records.into_iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(self.separator());
            }
            out.extend_from_slice(&record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_join_per_encoding() {
        let mut out = BytesMut::new();
        Encoding::Json.join(
            [Bytes::from_static(b"{}"), Bytes::from_static(b"{}")],
            &mut out,
        );
        assert_eq!(&out[..], b"{}\n{}");
        let mut out = BytesMut::new();
        Encoding::Protobuf.join(
            [Bytes::from_static(&[0]), Bytes::from_static(&[0])],
            &mut out,
        );
        assert_eq!(&out[..], &[0, 0]);
    }

    #[test]
    fn encoding_negotiation() {
        let none: [&str; 0] = [];
        assert_eq!(
            Encoding::negotiate(["centrifuge-protobuf"], None),
            Encoding::Protobuf
        );
        assert_eq!(
            Encoding::negotiate(["x", " centrifuge-protobuf"], None),
            Encoding::Protobuf
        );
        assert_eq!(
            Encoding::negotiate(["centrifuge-json"], None),
            Encoding::Json
        );
        assert_eq!(
            Encoding::negotiate(none, Some("cf_protocol=protobuf")),
            Encoding::Protobuf
        );
        assert_eq!(
            Encoding::negotiate(none, Some("a=1&cf_protocol=protobuf")),
            Encoding::Protobuf
        );
        assert_eq!(
            Encoding::negotiate(none, Some("cf_protocol=json")),
            Encoding::Json
        );
        assert_eq!(Encoding::negotiate(none, None), Encoding::Json);
    }

    #[test]
    fn client_info_always_names_user_and_client() {
        let info = crate::centrifugo::pb::ClientInfo::default();
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"user":"","client":""}"#
        );
    }
}
