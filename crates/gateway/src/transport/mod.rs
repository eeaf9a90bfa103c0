//! Transports: bytes on a client's connection ↔ a session's messages and records.
//! A transport drives any [`crate::connection::Session`] and knows no protocol.
//!
//! # Layout
//! - [`ws`]: WebSocket (upgrade, frame reader, vectored writer, the connection task).

pub mod ws;
