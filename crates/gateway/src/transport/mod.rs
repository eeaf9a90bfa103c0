//! Transports: bytes on a client's connection ↔ a session's messages and records.
//! A transport drives any [`crate::connection::Session`] and knows no protocol.
//!
//! # Layout
//! - here: [`admit`], the admission every new connection passes.
//! - [`clock`]: the timers every connection task keeps (pings, deadline, drain, stall).
//! - [`deadline`]: the write deadline under every HTTP connection.
//! - [`ws`]: WebSocket (upgrade, frame reader, vectored writer, the connection task).
//! - [`stream`]: the HTTP streams (HTTP-streaming and server-sent events), whose
//!   clients post their messages apart.

pub mod clock;
pub mod deadline;
pub mod stream;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use switchboard_core::Disconnect;

use crate::node::{ConnectionSlot, Node};
use crate::response::{refused, text, Body};

/// A client that takes nothing we write for this long stopped reading: its
/// connection is dropped so that it holds nothing longer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A slot for a new connection, or why not (the text of a 503 answer): the
/// node is draining, its broker is unreachable (the load balancer sends the
/// client elsewhere), or it holds `max_connections`.
pub fn admit(node: &Arc<Node>) -> Result<ConnectionSlot, &'static str> {
    let refuse = |reason, message| {
        refused(reason);
        Err(message)
    };
    if node.is_draining() {
        return refuse("shutting_down", "shutting down\n");
    }
    if !node.broker.is_healthy() {
        return refuse("broker_unavailable", "broker unavailable\n");
    }
    match node.try_acquire_connection() {
        Some(slot) => Ok(slot),
        None => refuse("connection_limit", "connection limit reached\n"),
    }
}

/// The answer to a connection [`admit`] refused.
pub fn refusal(message: &'static str) -> Response<Body> {
    text(StatusCode::SERVICE_UNAVAILABLE, message)
}

/// The disconnect of a connection whose session panicked on `what` (a bug: the
/// panic message is in the log). The connection still leaves its channels and
/// the node.
fn panicked(what: &str) -> Disconnect {
    metrics::counter!("switchboard_session_panics_total").increment(1);
    tracing::error!("a session panicked on {what}; closing the connection");
    Disconnect::SERVER_ERROR
}
