//! Wire types and codecs of the client protocols Switchboard speaks.
//!
//! Pure: bytes in, types out, no I/O.
//!
//! # Layout
//! - [`centrifugo`]: the Centrifugo client protocol: its messages (generated from
//!   `proto/client.proto`), the codecs of commands, replies and pushes for either
//!   encoding, and its error, unsubscribe and disconnect codes.
//! - [`pusher`]: the Pusher Channels protocol 7 and HTTP API: frames, close codes,
//!   channel kinds and names, and the HMAC signatures of subscriptions, sign-ins
//!   and API requests.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod centrifugo;
pub mod pusher;
