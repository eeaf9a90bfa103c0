//! [`KvPresence`]: a gateway's presence straight on the buckets, without the
//! presence service. It remembers only its own members, which
//! [`presence_refresh`] keeps in the buckets, and takes part in sweeping the
//! members of gateways that died.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use bytes::Bytes;
use switchboard_core::presence_refresh::{self, LastRefresh, LocalMembers, NodePresence};
use switchboard_core::{BrokerError, ClientInfo, PresenceStats, PresenceStore};

use super::keys::{member_key, member_value};
use super::store::PresenceBucket;
use crate::envelope::presence_info;
use crate::NatsError;

/// A gateway's presence straight on the buckets.
pub struct KvPresence {
    bucket: Arc<PresenceBucket>,
    /// This gateway's members by member key.
    local: LocalMembers<String, Remembered>,
}

/// A member as first encoded: every refresh re-puts these bytes.
#[derive(Clone)]
pub struct Remembered {
    channel: String,
    value: Bytes,
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
            local: LocalMembers::new(),
        });
        presence_refresh::spawn(&presence, ttl);
        tokio::spawn(super::sweeper::run_while(
            Arc::downgrade(&presence.bucket),
            node,
        ));
        Ok(presence)
    }
}

#[async_trait]
impl NodePresence for KvPresence {
    type Key = String;
    type Member = Remembered;
    // One key per put: the buckets take no batches.
    const BATCH: usize = 1;

    fn local(&self) -> &LocalMembers<String, Remembered> {
        &self.local
    }

    async fn refresh_batch(
        &self,
        batch: Vec<(String, Remembered)>,
        last: LastRefresh,
    ) -> Result<(), BrokerError> {
        for (key, member) in batch {
            if last.lapsed() {
                self.bucket
                    .rejoin_raw(&member.channel, &key, member.value)
                    .await?;
            } else {
                self.bucket.put_raw(&key, member.value).await?;
            }
        }
        Ok(())
    }

    async fn depart_batch(&self, batch: Vec<(String, Remembered)>) -> Result<(), BrokerError> {
        for (_, member) in batch {
            let Ok(info) = presence_info::decode(&member.value) else {
                continue; // encoded by this process: cannot happen
            };
            self.bucket.depart(&member.channel, info).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl PresenceStore for KvPresence {
    async fn add(&self, channel: &str, info: ClientInfo) -> Result<bool, BrokerError> {
        let member = Remembered {
            channel: channel.to_owned(),
            value: member_value(info.clone()),
        };
        self.local.insert(member_key(channel, &info), member);
        self.bucket.join(channel, info).await
    }

    async fn remove(&self, channel: &str, member: &ClientInfo) -> Result<bool, BrokerError> {
        self.local.remove(&member_key(channel, member)).await;
        self.bucket.leave(channel, member).await
    }

    async fn get(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, BrokerError> {
        self.bucket.members(channel).await
    }

    async fn stats(&self, channel: &str) -> Result<PresenceStats, BrokerError> {
        self.bucket.stats(channel).await
    }

    async fn user_present(&self, channel: &str, user: &str) -> Result<bool, BrokerError> {
        self.bucket.users.present(channel, user).await
    }

    async fn node_gone(&self) -> Result<(), BrokerError> {
        presence_refresh::depart_all(self).await
    }
}
