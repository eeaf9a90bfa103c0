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
    channels: Mutex<HashMap<String, Members>>,
}

/// One channel's members, and how many connections each user has among them
/// (so that stats and per-user join/leave cost nothing per member). Anonymous
/// connections (user "") count as one user in the stats but join and leave
/// one by one, as nothing tells whose they are.
#[derive(Debug, Default)]
struct Members {
    clients: HashMap<String, ClientInfo>,
    users: HashMap<String, u32>,
}

impl MemoryPresence {
    pub fn new() -> MemoryPresence {
        MemoryPresence::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Members>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn add(&self, channel: &str, info: ClientInfo) -> Result<bool, BrokerError> {
        let mut channels = self.lock();
        let members = channels.entry(channel.to_owned()).or_default();
        let user = info.user.clone();
        if members.clients.insert(info.client.clone(), info).is_some() {
            return Ok(false); // a refresh of a member already counted
        }
        // Anonymous connections cannot be told apart by user: each joins and
        // leaves as its own, while the stats count them as one user.
        let anonymous = user.is_empty();
        let count = members.users.entry(user).or_default();
        *count += 1;
        Ok(*count == 1 || anonymous)
    }

    async fn remove(&self, channel: &str, member: &ClientInfo) -> Result<bool, BrokerError> {
        let mut channels = self.lock();
        let Some(members) = channels.get_mut(channel) else {
            return Ok(false);
        };
        let Some(removed) = members.clients.remove(&member.client) else {
            return Ok(false);
        };
        let mut user_left = removed.user.is_empty();
        if let Some(count) = members.users.get_mut(&removed.user) {
            *count -= 1;
            if *count == 0 {
                members.users.remove(&removed.user);
                user_left = true;
            }
        }
        if members.clients.is_empty() {
            channels.remove(channel);
        }
        Ok(user_left)
    }

    async fn get(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, BrokerError> {
        Ok(self
            .lock()
            .get(channel)
            .map(|m| m.clients.clone())
            .unwrap_or_default())
    }

    async fn stats(&self, channel: &str) -> Result<PresenceStats, BrokerError> {
        Ok(self
            .lock()
            .get(channel)
            .map(|m| PresenceStats {
                num_clients: m.clients.len() as u32,
                num_users: m.users.len() as u32,
            })
            .unwrap_or_default())
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
        p.remove("ch", &info("u1", "c2")).await.unwrap();
        assert_eq!(p.get("ch").await.unwrap().len(), 2);
        p.remove("ch", &info("u1", "c1")).await.unwrap();
        p.remove("ch", &info("u2", "c3")).await.unwrap();
        assert!(p.lock().is_empty(), "empty channels are forgotten");
    }

    #[tokio::test]
    async fn the_first_connection_of_a_user_joins_and_the_last_leaves() {
        let p = MemoryPresence::new();
        assert!(p.add("ch", info("u1", "c1")).await.unwrap());
        assert!(!p.add("ch", info("u1", "c2")).await.unwrap());
        assert!(!p.add("ch", info("u1", "c2")).await.unwrap(), "a re-add");
        assert!(p.add("ch", info("u2", "c3")).await.unwrap());
        assert!(!p.remove("ch", &info("u1", "c1")).await.unwrap());
        assert!(!p.remove("ch", &info("u1", "c1")).await.unwrap(), "twice");
        assert!(p.remove("ch", &info("u1", "c2")).await.unwrap());
        assert!(
            !p.remove("ch", &info("u1", "c9")).await.unwrap(),
            "never there"
        );
        let stats = p.stats("ch").await.unwrap();
        assert_eq!((stats.num_clients, stats.num_users), (1, 1));
    }

    #[tokio::test]
    async fn anonymous_connections_join_and_leave_one_by_one_and_count_as_one_user() {
        let p = MemoryPresence::new();
        assert!(p.add("ch", info("", "a1")).await.unwrap());
        assert!(p.add("ch", info("", "a2")).await.unwrap());
        p.add("ch", info("u1", "c1")).await.unwrap();
        let stats = p.stats("ch").await.unwrap();
        assert_eq!((stats.num_clients, stats.num_users), (3, 2));
        assert!(p.remove("ch", &info("", "a1")).await.unwrap());
        assert!(!p.remove("ch", &info("", "a1")).await.unwrap());
        assert!(p.remove("ch", &info("", "a2")).await.unwrap());
        assert_eq!(p.stats("ch").await.unwrap().num_users, 1);
    }
}
