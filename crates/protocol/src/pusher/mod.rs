//! The Pusher Channels protocol (version 7) and the Pusher HTTP API, as far as
//! they are wire formats: frames, codes, channel names and signatures.
//!
//! Pure like the rest of the crate: no sockets, no clock (the caller passes the
//! time), no app registry (the caller passes a key → secret lookup).
//!
//! # Layout
//! - [`codes`]: the close and `pusher:error` codes, the protocol versions served.
//! - [`channel`]: channel kinds by name prefix, and channel name validation.
//! - [`auth`]: HMAC-SHA256 signatures: channel authorization, user sign-in, and
//!   the signed requests of the HTTP API (with `body_md5` and query parsing).
//! - [`events`]: the JSON frames: a client's message and the data of its
//!   `pusher:subscribe` and `pusher:signin`, and builders of every frame the
//!   server sends.

pub mod auth;
pub mod channel;
pub mod codes;
pub mod events;
