//! What every client connection has, whatever its protocol and transport.
//!
//! A protocol (Centrifugo, Pusher) implements [`Session`]: messages in,
//! timers, control requests, goodbye and close. A transport (WebSocket, the HTTP
//! streams) drives any `Session` and never knows the protocol. The
//! subscription algorithm ([`subscriptions`]: subscribe → broker interest →
//! position and recovery → presence → reply → live → join, and the leave) is
//! written once here on core types, so both protocols share its ordering.
//!
//! # Layout
//! - [`Session`], [`Framing`], [`Goodbye`]: the seam between a protocol and a transport.
//! - [`identity`]: who a connection is (client id, user, connection info).
//! - [`subscriptions`]: a connection's subscriptions and the algorithm that makes and ends them.
//! - [`limits`]: the command rate limit.
//! - [`delivery`]: the per-delivery metrics a transport records as it writes.

pub mod delivery;
pub mod identity;
pub mod limits;
pub mod subscriptions;

use std::future::Future;

use bytes::Bytes;
use switchboard_core::Disconnect;
use tokio::time::Instant;

use crate::registry::Control;

/// How a session's records become frames on a message-based transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Data frames are binary (else text).
    pub binary: bool,
    /// Records queued together are joined into one frame with this between them
    /// (Centrifugo); `None`: each record is a frame of its own (Pusher's events).
    pub join: Option<&'static [u8]>,
}

/// How a session's protocol says goodbye for a [`Disconnect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Goodbye {
    /// The close code (WebSocket close frame, metrics).
    pub code: u16,
    /// Whether the client is told to reconnect.
    pub reconnect: bool,
}

/// One connection's protocol state machine, driven by its transport's task.
///
/// Methods that wait (on the broker, presence) return futures the transport
/// polls while it keeps writing what the session queues.
pub trait Session: Send + 'static {
    /// The connection's unique id.
    fn id(&self) -> &str;

    /// How the transport frames the records this session queues.
    fn framing(&self) -> &'static Framing;

    /// Runs one message the client sent.
    fn on_message(
        &mut self,
        data: Bytes,
        binary: bool,
    ) -> impl Future<Output = Result<(), Disconnect>> + Send;

    /// Runs a request from the rest of the node (server API, control plane).
    fn on_control(&mut self, control: Control) -> impl Future<Output = ()> + Send;

    /// The next instant something must happen without client input.
    fn deadline(&self) -> Instant;

    /// Called when [`Session::deadline`] has passed.
    fn on_deadline(&mut self) -> Result<(), Disconnect>;

    /// Called every ping interval.
    fn on_ping_tick(&mut self) -> Result<(), Disconnect>;

    /// The close code and advice for `disconnect` in this protocol (a pure
    /// mapping: the transport uses it while the session is busy).
    fn goodbye(disconnect: &Disconnect) -> Goodbye;

    /// The record that says goodbye inside the stream, for transports without a
    /// close frame (the HTTP streams); `None`: the stream just ends.
    fn farewell(&self, disconnect: &Disconnect) -> Option<Bytes> {
        let _ = disconnect;
        None
    }

    /// Leaves every channel and forgets the connection.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}
