//! The Centrifugo client protocol.
//!
//! # Layout
//! - [`pb`]: the protocol's messages, generated from `proto/client.proto`; the same
//!   structs carry both the JSON and the protobuf encoding.
//! - [`codec`]: frames ↔ commands and replies for either [`Encoding`], on the
//!   server's side and on a client's.
//! - [`codes`]: error codes (replies), unsubscribe and disconnect codes.
//! - `json`: serde helpers that give the JSON encoding its Centrifugo shape.

pub mod codec;
pub mod codes;
#[doc(hidden)]
pub mod json;

/// The generated Centrifugo client protocol messages.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/switchboard.client.rs"));
}

pub use codec::{CommandEncodeError, DecodeError, EncodeError, Encoding, ReplyDecodeError};
