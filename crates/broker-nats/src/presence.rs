//! Presence shared by every gateway: a JetStream key-value bucket.
//!
//! Keys are `<channel token>.<client id>`, values the member's client info. The
//! bucket's max age is the presence TTL: members are re-put well inside it, so
//! members of a gateway that died without saying goodbye expire instead of
//! staying forever.
//!
//! [`PresenceBucket`] is the stateless store (the presence service serves it);
//! [`KvPresence`] is a gateway using the bucket directly, remembering only its own
//! members, to refresh them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use switchboard_core::{BrokerError, ClientInfo, PresenceStats, PresenceStore};

use crate::envelope::presence_info;
use crate::subject::Subjects;
use crate::{unavailable, NatsError};

/// Most members listed for one channel; the rest are left out of `get`.
const MAX_LISTED: usize = 100_000;

/// The presence bucket: stateless operations any replica can serve.
pub struct PresenceBucket {
    store: kv::Store,
    stream: jetstream::stream::Stream,
    bucket: String,
}

/// A gateway's presence straight on the bucket.
pub struct KvPresence {
    bucket: PresenceBucket,
    /// This gateway's members: key → value, re-put on every refresh.
    local: Mutex<HashMap<String, Bytes>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PresenceBucket {
    /// Opens (or creates) the bucket `<prefix>-presence` with the given TTL.
    pub async fn open(
        js: &jetstream::Context,
        prefix: &str,
        ttl: Duration,
        replicas: usize,
    ) -> Result<PresenceBucket, NatsError> {
        let bucket = format!("{prefix}-presence");
        // The bucket's stream is made directly, with the key-value conventions
        // (ADR-8), so that it is created idempotently by any gateway, and in the
        // same way on every server version we support.
        let stream_config = jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: ttl,
            duplicate_window: ttl.min(Duration::from_secs(120)),
            num_replicas: replicas,
            discard: jetstream::stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        };
        let stream_error = |e: &dyn std::fmt::Display| NatsError::Stream {
            stream: bucket.clone(),
            reason: e.to_string(),
        };
        let stream = crate::streams::create_or_update(js, stream_config)
            .await
            .map_err(|e| stream_error(&e))?;
        let store = js
            .get_key_value(&bucket)
            .await
            .map_err(|e| stream_error(&e))?;
        Ok(PresenceBucket {
            store,
            stream,
            bucket,
        })
    }

    fn key(channel: &str, client: &str) -> String {
        format!("{}.{client}", Subjects::channel_token(channel))
    }

    fn value(info: ClientInfo) -> Bytes {
        Bytes::from(presence_info::encode(info).encode_to_vec())
    }

    /// Adds or refreshes a member.
    pub async fn put(&self, channel: &str, info: ClientInfo) -> Result<(), BrokerError> {
        let key = PresenceBucket::key(channel, &info.client);
        self.put_raw(&key, PresenceBucket::value(info)).await
    }

    async fn put_raw(&self, key: &str, value: Bytes) -> Result<(), BrokerError> {
        self.store
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Removes a member.
    pub async fn delete(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        let key = PresenceBucket::key(channel, client);
        self.store.delete(&key).await.map_err(unavailable)
    }

    /// Counts of a channel's members and distinct users.
    pub async fn stats(&self, channel: &str) -> Result<PresenceStats, BrokerError> {
        let members = self.members(channel).await?;
        let users: HashSet<&str> = members.iter().map(|m| m.user.as_str()).collect();
        Ok(PresenceStats {
            num_clients: members.len() as u32,
            num_users: users.len() as u32,
        })
    }

    /// A channel's members, ordered by client id.
    pub async fn members(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        let filter = format!("$KV.{}.{}.*", self.bucket, Subjects::channel_token(channel));
        let mut subjects = self
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(unavailable)?;
        let mut members = Vec::new();
        while let Some(entry) = subjects.next().await {
            let (subject, _) = entry.map_err(unavailable)?;
            if members.len() >= MAX_LISTED {
                break;
            }
            let message = match self.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => m,
                Err(e)
                    if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    continue
                }
                Err(e) => return Err(unavailable(e)),
            };
            let deleted = message
                .headers
                .get("KV-Operation")
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            if deleted || message.payload.is_empty() {
                continue;
            }
            if let Ok(info) = presence_info::decode(&message.payload) {
                members.push(info);
            }
        }
        members.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(members)
    }
}

impl KvPresence {
    /// Opens the bucket and starts refreshing this gateway's members every third
    /// of the TTL.
    pub async fn open(
        js: &jetstream::Context,
        prefix: &str,
        ttl: Duration,
        replicas: usize,
    ) -> Result<Arc<KvPresence>, NatsError> {
        let presence = Arc::new(KvPresence {
            bucket: PresenceBucket::open(js, prefix, ttl, replicas).await?,
            local: Mutex::new(HashMap::new()),
        });
        tokio::spawn(refresh(Arc::downgrade(&presence), ttl / 3));
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
            .map(|(k, v)| (k.clone(), v.clone()))
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
    async fn add(&self, channel: &str, info: ClientInfo) -> Result<(), BrokerError> {
        let key = PresenceBucket::key(channel, &info.client);
        let value = PresenceBucket::value(info);
        lock(&self.local).insert(key.clone(), value.clone());
        self.bucket.put_raw(&key, value).await
    }

    async fn remove(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        lock(&self.local).remove(&PresenceBucket::key(channel, client));
        self.bucket.delete(channel, client).await
    }

    async fn get(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, BrokerError> {
        Ok(self
            .bucket
            .members(channel)
            .await?
            .into_iter()
            .map(|m| (m.client.clone(), m))
            .collect())
    }

    async fn stats(&self, channel: &str) -> Result<PresenceStats, BrokerError> {
        self.bucket.stats(channel).await
    }
}
