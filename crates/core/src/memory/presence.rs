use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::broker::BrokerError;
use crate::presence::{PresenceStats, PresenceStore};
use crate::types::ClientInfo;

/// Presence kept in this process's memory. Entries leave when their connection
/// unsubscribes or closes, which in one process always runs.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    channels: Mutex<HashMap<String, HashMap<String, ClientInfo>>>,
}

impl MemoryPresence {
    pub fn new() -> MemoryPresence {
        MemoryPresence::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, ClientInfo>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn add(&self, channel: &str, info: ClientInfo) -> Result<(), BrokerError> {
        self.lock()
            .entry(channel.to_owned())
            .or_default()
            .insert(info.client.clone(), info);
        Ok(())
    }

    async fn remove(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        let mut channels = self.lock();
        if let Some(members) = channels.get_mut(channel) {
            members.remove(client);
            if members.is_empty() {
                channels.remove(channel);
            }
        }
        Ok(())
    }

    async fn get(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, BrokerError> {
        Ok(self.lock().get(channel).cloned().unwrap_or_default())
    }

    async fn stats(&self, channel: &str) -> Result<PresenceStats, BrokerError> {
        let channels = self.lock();
        let Some(members) = channels.get(channel) else {
            return Ok(PresenceStats::default());
        };
        let users: std::collections::HashSet<&str> =
            members.values().map(|m| m.user.as_str()).collect();
        Ok(PresenceStats {
            num_clients: members.len() as u32,
            num_users: users.len() as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(user: &str, client: &str) -> ClientInfo {
        ClientInfo {
            user: user.into(),
            client: client.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn counts_clients_and_distinct_users() {
        let p = MemoryPresence::new();
        p.add("ch", info("u1", "c1")).await.unwrap();
        p.add("ch", info("u1", "c2")).await.unwrap();
        p.add("ch", info("u2", "c3")).await.unwrap();
        let stats = p.stats("ch").await.unwrap();
        assert_eq!((stats.num_clients, stats.num_users), (3, 2));
        p.remove("ch", "c2").await.unwrap();
        assert_eq!(p.get("ch").await.unwrap().len(), 2);
        p.remove("ch", "c1").await.unwrap();
        p.remove("ch", "c3").await.unwrap();
        assert!(p.lock().is_empty(), "empty channels are forgotten");
    }
}
