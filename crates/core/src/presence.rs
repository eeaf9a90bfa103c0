//! The [`PresenceStore`]: who is subscribed to a channel, across all nodes.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::broker::BrokerError;
use crate::types::ClientInfo;

/// Counts of a channel's presence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceStats {
    pub num_clients: u32,
    pub num_users: u32,
}

#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds a client's presence in a channel. Returns whether its user joined
    /// with it: no other connection of the user was present (anywhere). Every
    /// anonymous connection (user "") joins as its own user.
    async fn add(&self, channel: &str, info: ClientInfo) -> Result<bool, BrokerError>;
    /// Removes a client's presence from a channel. Returns whether its user left
    /// with it: it was the user's last connection present (always, for an
    /// anonymous one). Removing a client that is not present returns `false`.
    async fn remove(&self, channel: &str, member: &ClientInfo) -> Result<bool, BrokerError>;
    /// Everyone present in a channel, by client id.
    async fn get(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, BrokerError>;
    /// Counts of clients and distinct users present in a channel; anonymous
    /// connections count as one user.
    async fn stats(&self, channel: &str) -> Result<PresenceStats, BrokerError>;

    /// Whether `user` has a connection present in a channel now. A store that
    /// keeps users apart answers without listing the channel.
    async fn user_present(&self, channel: &str, user: &str) -> Result<bool, BrokerError> {
        Ok(self.get(channel).await?.values().any(|m| m.user == user))
    }

    /// This node shuts down cleanly: whatever of its presence is left goes now.
    async fn node_gone(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}
