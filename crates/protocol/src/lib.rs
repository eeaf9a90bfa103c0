//! Wire types and codecs of the client protocols Switchboard speaks.
//!
//! Pure: bytes in, types out, no I/O.
//!
//! # Layout
//! - [`pb`]: the Centrifugo client protocol messages, generated from `proto/client.proto`;
//!   the same structs carry both the JSON and the protobuf encoding.
//! - [`codec`]: frames ↔ commands and replies for either [`Encoding`].
//! - [`codes`]: error codes (replies) and disconnect codes (close frames) of the protocol.
//! - `json`: serde helpers that give the JSON encoding its Centrifugo shape.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod codec;
pub mod codes;
#[doc(hidden)]
pub mod json;

/// The generated Centrifugo client protocol messages.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/switchboard.client.rs"));
}

pub use codec::{DecodeError, EncodeError, Encoding};
