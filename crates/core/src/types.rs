//! The data that flows through a channel.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Who published, joined or left: a connection of a user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// The user id; empty for anonymous connections.
    pub user: String,
    /// The connection's unique id.
    pub client: String,
    /// Connection info from the connection token (JSON), if any.
    pub conn_info: Option<Bytes>,
    /// Channel info from the subscription token (JSON), if any.
    pub chan_info: Option<Bytes>,
}

/// One message in a channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publication {
    /// Position in the channel's stream; 0 for channels without history.
    pub offset: u64,
    /// The payload, opaque to the core (JSON for JSON clients).
    pub data: Bytes,
    /// The publishing client, for publications made by clients.
    pub info: Option<ClientInfo>,
    /// When the publication was accepted (µs since the Unix epoch), for latency metrics.
    pub time_us: u64,
    /// A connection that does not receive it live (its own sender, or the one a
    /// backend named): client events and Pusher's `socket_id` exclusion.
    pub exclude_client: Option<String>,
    /// Key-value metadata the publisher attached (Centrifugo's publication tags),
    /// delivered and stored with the data.
    pub tags: BTreeMap<String, String>,
}

/// A position in a channel's stream. The epoch names the stream: when a stream is
/// lost and recreated its epoch changes, and offsets of the old one mean nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

/// A connection joining or leaving a channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceChange {
    pub info: ClientInfo,
    /// The user's presence changed with it: this was the user's first connection
    /// in the channel (a join) or its last one (a leave). Subscribers that want
    /// join and leave per user receive only these.
    pub user_changed: bool,
}

/// What a broker delivers to the subscribers of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    Publication(Publication),
    Join(PresenceChange),
    Leave(PresenceChange),
}

impl ChannelEvent {
    /// The stream offset the event carries; 0 when it has none.
    pub fn offset(&self) -> u64 {
        match self {
            ChannelEvent::Publication(p) => p.offset,
            ChannelEvent::Join(_) | ChannelEvent::Leave(_) => 0,
        }
    }

    /// The connection that does not receive the event, if one is named.
    pub fn excluded_client(&self) -> Option<&str> {
        match self {
            ChannelEvent::Publication(p) => p.exclude_client.as_deref(),
            ChannelEvent::Join(_) | ChannelEvent::Leave(_) => None,
        }
    }

    pub fn time_us(&self) -> u64 {
        match self {
            ChannelEvent::Publication(p) => p.time_us,
            ChannelEvent::Join(_) | ChannelEvent::Leave(_) => 0,
        }
    }
}
