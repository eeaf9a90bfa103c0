//! [`KvPresence`]: a gateway's presence straight on the buckets, without the
//! presence service. It remembers only its own members, to refresh them, and
//! takes part in sweeping the members of gateways that died.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use bytes::Bytes;
use switchboard_core::{BrokerError, ClientInfo, PresenceStats, PresenceStore};

use super::keys::{member_key, member_value};
use super::store::PresenceBucket;
use crate::envelope::presence_info;
use crate::NatsError;

/// A gateway's presence straight on the buckets.
pub struct KvPresence {
    bucket: Arc<PresenceBucket>,
    /// This gateway's members: key → (channel, encoded member), re-put as is on
    /// every refresh.
    local: Mutex<HashMap<String, (String, Bytes)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl KvPresence {
    /// Opens the buckets, starts refreshing this gateway's members every third of
    /// the TTL, and takes part in sweeping the members of gateways that died
    /// (`node` names this gateway in the sweep lease).
    pub async fn open(
        js: &jetstream::Context,
        prefix: &str,
        ttl: Duration,
        replicas: usize,
        node: String,
    ) -> Result<Arc<KvPresence>, NatsError> {
        let presence = Arc::new(KvPresence {
            bucket: Arc::new(PresenceBucket::open(js, prefix, ttl, replicas).await?),
            local: Mutex::new(HashMap::new()),
        });
        tokio::spawn(refresh(Arc::downgrade(&presence), ttl / 3));
        tokio::spawn(super::sweeper::run_while(
            Arc::downgrade(&presence.bucket),
            node,
        ));
        Ok(presence)
    }
}

async fn refresh(presence: Weak<KvPresence>, every: Duration) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(p) = presence.upgrade() else { return };
        let members: Vec<(String, Bytes)> = lock(&p.local)
            .iter()
            .map(|(key, (_, value))| (key.clone(), value.clone()))
            .collect();
        for (key, value) in members {
            // A member removed meanwhile must not be put back.
            if !lock(&p.local).contains_key(&key) {
                continue;
            }
            if let Err(e) = p.bucket.put_raw(&key, value).await {
                tracing::warn!(error = %e, "presence refresh failed");
                break;
            }
        }
        metrics::gauge!("switchboard_presence_local_members").set(lock(&p.local).len() as f64);
    }
}

#[async_trait]
impl PresenceStore for KvPresence {
    async fn add(&self, channel: &str, info: ClientInfo) -> Result<bool, BrokerError> {
        let key = member_key(channel, &info);
        lock(&self.local).insert(key, (channel.to_owned(), member_value(info.clone())));
        self.bucket.join(channel, info).await
    }

    async fn remove(&self, channel: &str, member: &ClientInfo) -> Result<bool, BrokerError> {
        lock(&self.local).remove(&member_key(channel, member));
        self.bucket.leave(channel, member).await
    }

    async fn get(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, BrokerError> {
        self.bucket.members(channel).await
    }

    async fn stats(&self, channel: &str) -> Result<PresenceStats, BrokerError> {
        self.bucket.stats(channel).await
    }

    async fn node_gone(&self) -> Result<(), BrokerError> {
        let left: Vec<(String, Bytes)> = lock(&self.local).drain().map(|(_, m)| m).collect();
        for (channel, value) in left {
            let Ok(info) = presence_info::decode(&value) else {
                continue; // encoded by this process: cannot happen
            };
            self.bucket.depart(&channel, info).await?;
        }
        Ok(())
    }
}
