//! The cluster's webhook state and queue on JetStream.
//!
//! - `<prefix>-hooks`: a key-value bucket ([`HookState`]): occupancy sets and the
//!   marks of delayed events, written by compare-and-set on revisions.
//! - `<prefix>-webhooks`: a work-queue stream on `<prefix>.webhooks` with one
//!   durable pull consumer every process shares ([`HookQueue`]): a job goes to one
//!   taker, leaves the stream when acknowledged, comes back after a negative
//!   acknowledgement's delay or when its taker died (`ACK_WAIT`). A job id is
//!   its `Nats-Msg-Id`, so one queued twice within the duplicate window is kept
//!   once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::{self, stream, AckKind};
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use switchboard_core::hooks::{HookEvent, HookQueue, HookState, Hooks, Job, Taken};
use switchboard_core::BrokerError;
use tokio::sync::Mutex;

use crate::presence::bucket::Bucket;
use crate::{unavailable, NatsError};

/// How long a taker has to settle a job before it is handed to another.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Jobs handed out and not settled, across every taker.
const MAX_ACK_PENDING: i64 = 20_000;
const CONSUMER: &str = "webhooks";
/// JetStream's "wrong last sequence" error code (a revision that moved on).
const WRONG_LAST_SEQUENCE: &str = "10071";

/// The bucket of occupancy sets and delayed events' marks.
pub struct NatsHookState {
    bucket: Bucket,
}

fn is_conflict(e: &impl std::fmt::Display) -> bool {
    let text = e.to_string();
    text.contains(WRONG_LAST_SEQUENCE) || text.contains("wrong last sequence")
}

#[async_trait]
impl HookState for NatsHookState {
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, BrokerError> {
        let entry = self.bucket.entry(key).await?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .map(|e| (e.value, e.revision)))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, BrokerError> {
        self.bucket.create(key, value).await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<Option<u64>, BrokerError> {
        match self.bucket.store.update(key, value, revision).await {
            Ok(written) => Ok(Some(written)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) if is_conflict(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete(&self, key: &str, revision: u64) -> Result<bool, BrokerError> {
        match self
            .bucket
            .store
            .delete_expect_revision(key, Some(revision))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BrokerError> {
        let mut keys = self.bucket.store.keys().await.map_err(unavailable)?;
        let mut found = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            if key.starts_with(prefix) {
                found.push(key);
            }
        }
        Ok(found)
    }
}

impl crate::NatsBroker {
    /// The cluster's webhook state and queue, created if missing, with this
    /// broker's prefix, replicas and storage.
    pub async fn hooks(&self) -> Result<Hooks, NatsError> {
        let c = &self.config;
        let (state, queue) = open(&self.shared.js, &c.prefix, c.replicas, c.storage).await?;
        Ok(Hooks::new(Arc::new(state), Arc::new(queue)))
    }
}

/// The work queue of webhook jobs.
pub struct NatsHookQueue {
    js: jetstream::Context,
    subject: String,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    messages: Mutex<Option<pull::Stream>>,
}

/// Opens (creating them the same way from any process) the bucket and the queue
/// of the webhooks under `prefix`, with `replicas` and `storage`.
pub async fn open(
    js: &jetstream::Context,
    prefix: &str,
    replicas: usize,
    storage: crate::Storage,
) -> Result<(NatsHookState, NatsHookQueue), NatsError> {
    let bucket = Bucket::open(js, format!("{prefix}-hooks"), Duration::ZERO, replicas).await?;
    let name = format!("{prefix}-webhooks");
    let subject = format!("{prefix}.webhooks");
    let failed = |e: &dyn std::fmt::Display| NatsError::Stream {
        stream: name.clone(),
        reason: e.to_string(),
    };
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        retention: stream::RetentionPolicy::WorkQueue,
        // As the server reports "no limit", so that a restart sees nothing to update.
        max_messages_per_subject: -1,
        duplicate_window: Duration::from_secs(120),
        storage: match storage {
            crate::Storage::File => stream::StorageType::File,
            crate::Storage::Memory => stream::StorageType::Memory,
        },
        num_replicas: replicas,
        ..Default::default()
    };
    let stream = crate::streams::create_or_update(js, config)
        .await
        .map_err(|e| failed(&e))?;
    let consumer = stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_deliver: -1,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed(&e))?;
    let state = NatsHookState { bucket };
    let queue = NatsHookQueue {
        js: js.clone(),
        subject,
        consumer,
        messages: Mutex::new(None),
    };
    Ok((state, queue))
}

#[async_trait]
impl HookQueue for NatsHookQueue {
    async fn push(&self, job: &Job) -> Result<(), BrokerError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", job.id.as_str());
        self.js
            .publish_with_headers(self.subject.clone(), headers, job.encode())
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take(&self) -> Result<Box<dyn Taken>, BrokerError> {
        let mut messages = self.messages.lock().await;
        loop {
            if messages.is_none() {
                *messages = Some(self.consumer.messages().await.map_err(unavailable)?);
            }
            let next = messages.as_mut().expect("set above").next().await;
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    *messages = None;
                    return Err(unavailable(e));
                }
                None => {
                    *messages = None;
                    return Err(BrokerError::Unavailable("the webhook queue ended".into()));
                }
            };
            let deliveries = message.info().map(|i| i.delivered).unwrap_or(1).max(1) as u32;
            match Job::decode(&message.payload) {
                Ok(job) => {
                    return Ok(Box::new(NatsTaken {
                        message,
                        job,
                        deliveries,
                    }))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a webhook job that cannot be read is dropped");
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
    }

    async fn depth(&self) -> Result<u64, BrokerError> {
        let mut consumer = self.consumer.clone();
        let info = consumer.info().await.map_err(unavailable)?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }
}

struct NatsTaken {
    message: jetstream::Message,
    job: Job,
    deliveries: u32,
}

impl NatsTaken {
    async fn settle(&self, kind: AckKind) {
        if let Err(e) = self.message.ack_with(kind).await {
            // Unsettled, the job comes back after ACK_WAIT.
            tracing::debug!(error = %e, "webhook job not settled");
        }
    }
}

#[async_trait]
impl Taken for NatsTaken {
    fn job(&self) -> &Job {
        &self.job
    }

    fn deliveries(&self) -> u32 {
        self.deliveries
    }

    async fn done(self: Box<Self>) {
        // Acknowledged with a round trip: a job reported done is gone.
        if let Err(e) = self.message.double_ack().await {
            tracing::debug!(error = %e, "webhook job acknowledgement not confirmed");
        }
    }

    async fn again(self: Box<Self>, after: Duration) {
        self.settle(AckKind::Nak(Some(after))).await;
    }

    async fn give_up(self: Box<Self>) {
        self.settle(AckKind::Term).await;
    }
}

/// How often a process that found no webhook queue looks again.
const LOOK_AGAIN: Duration = Duration::from_secs(10);

/// The webhooks of a process that reports events but does not set them up (the
/// presence sweep): found once some gateway with webhooks created them.
pub(crate) struct Finder {
    js: jetstream::Context,
    prefix: String,
    found: std::sync::OnceLock<Hooks>,
    looked: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Finder {
    pub(crate) fn new(js: &jetstream::Context, prefix: &str) -> Finder {
        Finder {
            js: js.clone(),
            prefix: prefix.to_owned(),
            found: std::sync::OnceLock::new(),
            looked: std::sync::Mutex::new(None),
        }
    }

    /// The webhooks, when they exist; looks at most every [`LOOK_AGAIN`].
    pub(crate) async fn get(&self) -> Option<&Hooks> {
        if let Some(hooks) = self.found.get() {
            return Some(hooks);
        }
        {
            let mut looked = self.looked.lock().unwrap_or_else(|e| e.into_inner());
            if looked.is_some_and(|at| at.elapsed() < LOOK_AGAIN) {
                return None;
            }
            *looked = Some(std::time::Instant::now());
        }
        let bucket = Bucket::find(&self.js, format!("{}-hooks", self.prefix)).await?;
        let stream = self
            .js
            .get_stream(format!("{}-webhooks", self.prefix))
            .await
            .ok()?;
        let consumer = stream.get_consumer(CONSUMER).await.ok()?;
        let queue = NatsHookQueue {
            js: self.js.clone(),
            subject: format!("{}.webhooks", self.prefix),
            consumer,
            messages: Mutex::new(None),
        };
        let hooks = Hooks::new(Arc::new(NatsHookState { bucket }), Arc::new(queue));
        Some(self.found.get_or_init(|| hooks))
    }
}

impl Finder {
    /// A user joined (`joined`) or left a channel, as the presence store decided
    /// it, outside any gateway's connection (a sweep, a rejoin, a hand-over):
    /// webhooks of a Pusher app's channel hear of it.
    pub(crate) async fn report(&self, channel: &str, joined: bool, user: &str, departure: &str) {
        if !switchboard_core::channel::is_reserved(channel) {
            return;
        }
        let Some(hooks) = self.get().await else {
            return;
        };
        let result = if joined {
            match hooks.member_joined(channel, user).await {
                Ok(true) => {
                    let event = HookEvent::MemberAdded {
                        user_id: user.to_owned(),
                    };
                    hooks.queue.push(&Job::new(channel, event)).await
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            let departure = (!departure.is_empty()).then_some(departure);
            hooks.member_left(channel, user, departure).await
        };
        if let Err(e) = result {
            tracing::warn!(channel, error = %e, "webhook change not recorded");
            metrics::counter!("switchboard_webhook_changes_dropped_total").increment(1);
        }
    }
}
