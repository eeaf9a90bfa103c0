//! Channels, subscriptions, fan-out and the seams a gateway plugs brokers into.
//!
//! `core` knows channels, queues and history semantics, but no sockets and no wire
//! protocol: front ends (the Centrifugo protocol today, Pusher later) register a
//! [`hub::PushEncoder`] and receive encoded records in bounded [`queue::Outbound`]s.
//!
//! # Layout
//! - [`types`]: publications, client info, stream positions, channel events.
//! - [`channel`]: channel names (validation, namespace, user-limited channels).
//! - [`namespace`]: per-namespace options and the registry that resolves a channel's.
//! - [`broker`]: the [`Broker`] trait (publish, history, interest) and its errors.
//! - [`memory`]: the in-memory [`Broker`] and [`PresenceStore`] of the embedded mode.
//! - [`presence`]: the [`PresenceStore`] trait.
//! - [`presence_refresh`]: a node's own members of a shared presence store, refreshed
//!   every third of the TTL and handed over on shutdown ([`presence_refresh::NodePresence`]
//!   says how a batch goes); both shared stores of the gateway use it.
//! - [`queue`]: a connection's outbound queue, bounded in bytes.
//! - [`hub`]: local subscribers per channel and the fan-out of channel events to them;
//!   front ends register their wire formats there at start-up.
//! - [`hooks`]: webhook events decided once per cluster: the [`hooks::HookState`] and
//!   [`hooks::HookQueue`] seams and [`hooks::Hooks`], the decisions over them.
//! - [`disconnect`]: why a connection is closed, as reasons each protocol maps to its codes.
//! - [`shutdown`]: the SIGTERM/SIGINT signal the binaries stop on.
//! - [`backoff`]: exponential backoff with jitter (start-up, retried reads).
//! - [`startup`]: the binaries' start-up: backoff while NATS is not reached, announcements.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod backoff;
pub mod broker;
pub mod channel;
pub mod disconnect;
pub mod hooks;
pub mod hub;
pub mod memory;
pub mod namespace;
pub mod presence;
pub mod presence_refresh;
pub mod queue;
pub mod shutdown;
pub mod startup;
pub mod types;

pub use broker::{Broker, BrokerError, EventSink, HistoryQuery, HistoryResult, PublishOptions};
pub use disconnect::Disconnect;
pub use presence::{PresenceStats, PresenceStore};
pub use types::{ChannelEvent, ClientInfo, PresenceChange, Publication, StreamPosition};

/// Microseconds since the Unix epoch: publications carry it so that delivery
/// latency can be measured on any node.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
