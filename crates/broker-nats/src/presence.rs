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
///
/// A member not refreshed within the presence TTL is gone: lists and stats skip
/// it, and the presence service's sweeper deletes it and announces its leave. The
/// bucket itself keeps entries for twice the TTL, so that the sweeper sees them
/// go stale before NATS drops them.
pub struct PresenceBucket {
    store: kv::Store,
    stream: jetstream::stream::Stream,
    bucket: String,
    ttl: Duration,
    client: async_nats::Client,
    subjects: Subjects,
}

/// A member whose refresh is overdue, as the sweeper finds it.
pub struct StaleMember {
    pub channel: String,
    pub info: ClientInfo,
    key: String,
    revision: u64,
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
    /// Opens (or creates) the bucket `<prefix>-presence` for the given TTL.
    pub async fn open(
        js: &jetstream::Context,
        prefix: &str,
        ttl: Duration,
        replicas: usize,
    ) -> Result<PresenceBucket, NatsError> {
        let retention = ttl * 2;
        let bucket = format!("{prefix}-presence");
        // The bucket's stream is made directly, with the key-value conventions
        // (ADR-8), so that it is created idempotently by any gateway, and in the
        // same way on every server version we support.
        let stream_config = jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: retention,
            duplicate_window: retention.min(Duration::from_secs(120)),
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
            ttl,
            client: js.client(),
            subjects: Subjects::new(prefix),
        })
    }

    /// The presence TTL: a member not refreshed within it is gone.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The store, for the sweeper's lease.
    pub fn store(&self) -> &kv::Store {
        &self.store
    }

    /// Members not refreshed within the TTL, at most `limit` of them.
    pub async fn stale(&self, limit: usize) -> Result<Vec<StaleMember>, BrokerError> {
        let mut keys = self.store.keys().await.map_err(unavailable)?;
        let mut stale = Vec::new();
        let now = std::time::SystemTime::now();
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            let Some((token, _client)) = key.split_once('.') else {
                continue; // not a member (the sweeper's lease)
            };
            let Some(entry) = self.store.entry(key.as_str()).await.map_err(unavailable)? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let created: std::time::SystemTime = entry.created.into();
            let age = now.duration_since(created).unwrap_or_default();
            if age <= self.ttl {
                continue;
            }
            let (Ok(info), Some(channel)) = (
                presence_info::decode(&entry.value),
                Subjects::channel_of_token(token),
            ) else {
                continue;
            };
            stale.push(StaleMember {
                channel,
                info,
                key,
                revision: entry.revision,
            });
            if stale.len() >= limit {
                break;
            }
        }
        Ok(stale)
    }

    /// Deletes a stale member if nobody refreshed or removed it since it was
    /// found, and announces its leave on the channel. Returns whether this call
    /// did it: with several sweepers, exactly one does.
    pub async fn expire(&self, member: StaleMember) -> Result<bool, BrokerError> {
        match self
            .store
            .delete_expect_revision(&member.key, Some(member.revision))
            .await
        {
            Ok(()) => {}
            Err(_) => return Ok(false),
        }
        let body = crate::envelope::presence(crate::envelope::Kind::Leave, member.info);
        self.client
            .publish(self.subjects.live(&member.channel), body)
            .await
            .map_err(unavailable)?;
        Ok(true)
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
            let written: std::time::SystemTime = message.time.into();
            let overdue = std::time::SystemTime::now()
                .duration_since(written)
                .is_ok_and(|age| age > self.ttl);
            if deleted || overdue || message.payload.is_empty() {
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
