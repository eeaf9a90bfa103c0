//! The [`Broker`]: where publications are ordered, stored and fanned out between nodes.
//!
//! A gateway hands every publication, join and leave to its broker and receives the
//! events of the channels it has local subscribers in through an [`EventSink`]. The
//! broker assigns offsets, keeps per-channel history, and answers history queries
//! that recovery is built on. The in-memory broker serves one process; the NATS
//! JetStream broker serves a cluster with the same semantics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::types::{ChannelEvent, ClientInfo, PresenceChange, Publication, StreamPosition};

/// Where a broker delivers channel events, in stream order per channel.
///
/// Called on the broker's task: implementations must not block (the hub only
/// encodes and enqueues).
pub trait EventSink: Send + Sync + 'static {
    fn on_event(&self, channel: &str, event: ChannelEvent);

    /// Whether this node has local subscribers in `channel` now. A broker asks
    /// before dropping its interest, so that an unsubscribe racing a new
    /// subscribe never leaves a subscriber deaf.
    fn has_subscribers(&self, channel: &str) -> bool;

    /// The broker lost events of `channel` it cannot fill in: every local
    /// subscriber must reconnect and recover.
    fn reset(&self, channel: &str);
}

/// How a channel keeps history; `None` for a channel without history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Publications kept.
    pub size: usize,
    /// How long each publication is kept.
    pub ttl: Duration,
}

/// Options of one publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Keep the publication in the channel's history.
    pub history: Option<HistoryOptions>,
    /// A publish repeated with the same key within the broker's duplicate window
    /// is stored and delivered once; the repeat returns the first one's position.
    pub idempotency_key: Option<String>,
    /// A connection that must not receive the publication live, on any node.
    pub exclude_client: Option<String>,
    /// Metadata travelling with the publication, live and in history.
    pub tags: BTreeMap<String, String>,
}

/// A read of a channel's stream.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only publications after this position. Fails with
    /// [`BrokerError::Unrecoverable`] when the stream cannot prove it still holds
    /// everything after it (another epoch, or publications after it evicted).
    pub since: Option<StreamPosition>,
    /// At most this many publications; `Some(0)` reads only the stream's position.
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
}

/// What a history read returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryResult {
    pub publications: Vec<Publication>,
    /// The stream's top: the offset of its newest publication, and its epoch.
    pub position: StreamPosition,
}

/// Why a broker operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The position asked for is no longer (or never was) in the stream.
    #[error("unrecoverable position")]
    Unrecoverable,
    /// The broker cannot be reached now; the caller may retry.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("broker error: {0}")]
    Internal(String),
    /// A publish the broker did not confirm in time: it may or may not have
    /// taken effect. Retrying with the same idempotency key is safe.
    #[error("publish not confirmed: {0}")]
    Unconfirmed(String),
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Sets where events go. Called once, before any other method.
    fn set_sink(&self, sink: Arc<dyn EventSink>);

    /// Publishes `data` to `channel`; returns the publication's position (offset 0
    /// for channels without history).
    async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<ClientInfo>,
        options: &PublishOptions,
    ) -> Result<StreamPosition, BrokerError>;

    /// Delivers a join event to the channel's subscribers (not stored).
    async fn publish_join(&self, channel: &str, join: PresenceChange) -> Result<(), BrokerError>;

    /// Delivers a leave event to the channel's subscribers (not stored).
    async fn publish_leave(&self, channel: &str, leave: PresenceChange) -> Result<(), BrokerError>;

    /// A local subscriber was added to `channel` (in the hub, before this call):
    /// make sure the channel's events reach the sink. Returns once every event
    /// published after it will arrive, so the caller may then read the stream.
    /// Called for every subscriber; cheap once the channel has interest.
    async fn subscribe(&self, channel: &str) -> Result<(), BrokerError>;

    /// This node's last local subscriber left `channel`.
    async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError>;

    /// Whether the broker can serve now (readiness).
    fn is_healthy(&self) -> bool {
        true
    }

    /// Reads a channel's stream.
    async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
        options: HistoryOptions,
    ) -> Result<HistoryResult, BrokerError>;
}
