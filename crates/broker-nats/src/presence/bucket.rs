//! One key-value bucket: its stream, made the same way by every process, and
//! the raw JetStream API requests the key-value client has no call for.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use switchboard_core::BrokerError;

use crate::{unavailable, NatsError};

/// Compare-and-set attempts on one key before giving up.
pub(super) const CAS_ATTEMPTS: usize = 32;
/// `STREAM.INFO` past this offset lists no subjects, only their total.
const COUNT_ONLY: u32 = 1 << 30;
/// The header a key-value delete or purge marker names its operation in.
const KV_OPERATION: &str = "KV-Operation";

/// One key-value bucket and its stream.
pub(crate) struct Bucket {
    pub(crate) store: kv::Store,
    pub(super) stream: jetstream::stream::Stream,
    /// `$KV.<bucket>.`, what every key's subject starts with.
    pub(super) prefix: String,
    /// `KV_<bucket>`.
    stream_name: String,
    js: jetstream::Context,
}

/// The JetStream API's error body.
#[derive(serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// `err_code`s of a delete whose message is not there: "no message found",
/// "sequence not found", and the file store's "error deleting message".
const NOT_THERE: [u64; 3] = [10037, 10043, 10057];

impl Bucket {
    pub(crate) async fn open(
        js: &jetstream::Context,
        name: String,
        max_age: Duration,
        replicas: usize,
    ) -> Result<Bucket, NatsError> {
        // The stream is made directly, with the key-value conventions (ADR-8), so
        // that any gateway or replica creates it idempotently, in the same way on
        // every server version we support. Deletes are allowed: members and users
        // go by deleting their message. Direct reads stay allowed for processes
        // of earlier versions, whose key-value client reads with them (see
        // `Bucket::entry`).
        let stream_config = jetstream::stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            duplicate_window: if max_age.is_zero() {
                Duration::from_secs(120)
            } else {
                max_age.min(Duration::from_secs(120))
            },
            num_replicas: replicas,
            discard: jetstream::stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: false,
            allow_direct: true,
            ..Default::default()
        };
        let stream_error = |e: &dyn std::fmt::Display| NatsError::Stream {
            stream: name.clone(),
            reason: e.to_string(),
        };
        let stream = crate::streams::create_or_update(js, stream_config)
            .await
            .map_err(|e| stream_error(&e))?;
        let store = js
            .get_key_value(&name)
            .await
            .map_err(|e| stream_error(&e))?;
        Ok(Bucket {
            store,
            stream,
            prefix: format!("$KV.{name}."),
            stream_name: format!("KV_{name}"),
            js: js.clone(),
        })
    }

    /// The bucket `name` if some process made it; never creates it.
    pub(crate) async fn find(js: &jetstream::Context, name: String) -> Option<Bucket> {
        let store = js.get_key_value(&name).await.ok()?;
        Some(Bucket {
            stream: store.stream.clone(),
            store,
            prefix: format!("$KV.{name}."),
            stream_name: format!("KV_{name}"),
            js: js.clone(),
        })
    }

    /// `key`'s last message as a key-value entry, read from the stream's leader
    /// (`STREAM.MSG.GET`); `None` when the key has none. Every read of a bucket
    /// goes here, not to the key-value client's `entry`, which any replica
    /// answers (`DIRECT.GET`): a replica still catching up after a restart answers
    /// with an older value or none, and each read here decides a compare-and-set
    /// or a "not there".
    pub(crate) async fn entry(&self, key: &str) -> Result<Option<kv::Entry>, BrokerError> {
        let subject = format!("{}{key}", self.prefix);
        let message = match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        // A put carries no operation header; deletes and purges name theirs.
        let operation = match message.headers.get(KV_OPERATION) {
            None => kv::Operation::Put,
            Some(op) => op
                .as_str()
                .parse()
                .map_err(|e| BrokerError::Internal(format!("{subject}: operation {op}: {e}")))?,
        };
        Ok(Some(kv::Entry {
            bucket: self.store.name.clone(),
            key: key.to_owned(),
            value: message.payload,
            revision: message.sequence,
            delta: 0,
            created: message.time,
            operation,
            seen_current: false,
        }))
    }

    /// Writes `key` if it holds no value: its revision, or `None` when it holds
    /// one (or changed while this ran). The key-value client's `create` reads the key by direct get when the
    /// write finds it taken (see [`Bucket::entry`]); this reads from the leader.
    pub(crate) async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, BrokerError> {
        let taken = |e: &kv::UpdateError| e.kind() == kv::UpdateErrorKind::WrongLastRevision;
        match self.store.update(key, value.clone(), 0).await {
            Ok(revision) => return Ok(Some(revision)),
            Err(e) if taken(&e) => {}
            Err(e) => return Err(unavailable(e)),
        }
        // Taken, by a value or by a delete or purge marker (which a create replaces).
        let revision = match self.entry(key).await? {
            Some(entry) if entry.operation != kv::Operation::Put => entry.revision,
            _ => return Ok(None),
        };
        match self.store.update(key, value, revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if taken(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Deletes the message at `sequence`; `false` if it is not there (any more).
    /// The message is the key's value only while it is the key's last one, so
    /// this is a compare-and-delete.
    pub(super) async fn delete_message(&self, sequence: u64) -> Result<bool, BrokerError> {
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(default)]
            success: bool,
            error: Option<ApiError>,
        }
        let reply: Reply = self
            .js
            .request(
                format!("STREAM.MSG.DELETE.{}", self.stream_name),
                &serde_json::json!({ "seq": sequence, "no_erase": true }),
            )
            .await
            .map_err(unavailable)?;
        match reply.error {
            None => Ok(reply.success),
            Some(e) if NOT_THERE.contains(&e.err_code) => Ok(false),
            Some(e) => Err(BrokerError::Unavailable(e.description)),
        }
    }

    /// How many keys match `filter` (a subject filter below `$KV.<bucket>.`).
    pub(super) async fn count(&self, filter: &str) -> Result<u32, BrokerError> {
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(default)]
            total: u32,
            error: Option<ApiError>,
        }
        let reply: Reply = self
            .js
            .request(
                format!("STREAM.INFO.{}", self.stream_name),
                &serde_json::json!({
                    "subjects_filter": format!("{}{filter}", self.prefix),
                    "offset": COUNT_ONLY,
                }),
            )
            .await
            .map_err(unavailable)?;
        match reply.error {
            None => Ok(reply.total),
            Some(e) => Err(BrokerError::Unavailable(e.description)),
        }
    }

    /// An ephemeral consumer that reads the bucket's messages matching `filter`
    /// (empty: all) from `start`, without acks; gone 30 s after its last use
    /// should [`Bucket::drop_reader`] not reach NATS.
    pub(super) async fn reader(
        &self,
        start: DeliverPolicy,
        filter: String,
    ) -> Result<jetstream::consumer::PullConsumer, BrokerError> {
        self.stream
            .create_consumer(pull::Config {
                deliver_policy: start,
                ack_policy: AckPolicy::None,
                filter_subject: filter,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(unavailable)
    }

    pub(super) async fn drop_reader(&self, consumer: &jetstream::consumer::PullConsumer) {
        let name = &consumer.cached_info().name;
        if let Err(e) = self.stream.delete_consumer(name).await {
            tracing::debug!(error = %e, "presence reader left to expire");
        }
    }

    /// Messages in the bucket: one per key.
    pub(super) async fn keys(&self) -> Result<u64, BrokerError> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(unavailable)?;
        Ok(info.state.messages)
    }
}
