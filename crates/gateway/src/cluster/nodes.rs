//! What a gateway announces about itself in the node registry.

use serde::{Deserialize, Serialize};

use crate::centrifugo::auth::now_secs;
use crate::node::Node;

/// One gateway as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    /// Where it listens.
    pub address: String,
    pub version: String,
    /// When it started, Unix seconds.
    pub started_at: u64,
    pub clients: usize,
    pub users: usize,
    pub channels: usize,
    pub subscriptions: usize,
}

impl NodeInfo {
    /// This node now.
    pub fn of(node: &Node) -> NodeInfo {
        let (clients, users) = node.registry.counts();
        let channels = node.hub.channels();
        NodeInfo {
            id: node.id.clone(),
            name: name(node),
            address: node.config.listen.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: now_secs().saturating_sub(node.uptime_secs()),
            clients,
            users,
            channels: channels.len(),
            subscriptions: channels.iter().map(|(_, n)| n).sum(),
        }
    }

    /// Seconds since it started.
    pub fn uptime(&self) -> u64 {
        now_secs().saturating_sub(self.started_at)
    }
}

/// The configured name, else the host name (what Kubernetes calls the pod),
/// else the listen address.
fn name(node: &Node) -> String {
    if let Some(name) = &node.config.name {
        return name.clone();
    }
    match std::env::var("HOSTNAME") {
        Ok(host) if !host.is_empty() => format!("{host}:{}", node.config.listen.port()),
        _ => node.config.listen.to_string(),
    }
}
