//! The NATS JetStream implementation of Switchboard's [`Broker`].
//!
//! # Layout
//! - [`subject`]: channel names → subjects (one base64url token each) and stream names.
//! - `envelope`: the message body on NATS (prost, `proto/broker.proto`).
//! - `streams`: one stream per history-enabled namespace, created or updated at start-up.
//! - `history`: reads of a channel's stored messages (positions, ranges, recovery proofs).
//! - `live`: one task per channel with local subscribers: ordered delivery with gap
//!   detection (`Nats-Last-Sequence`) and gap filling from the stream.
//! - [`control`]: the cluster's control plane: the registry of live gateways,
//!   broadcasts every gateway answers, requests addressed to one gateway.
//! - `presence/`: presence shared by every gateway in JetStream KV buckets: the
//!   stateless [`PresenceBucket`] (keys, bucket requests, per-user compare-and-set,
//!   counts and pages, expiry), the [`sweeper`] of dead gateways' members, and
//!   [`KvPresence`], a gateway on the buckets without the presence service.
//!
//! The path of a publication: a history-enabled channel's publication is published
//! to JetStream and acknowledged; the stream's RePublish sends it, in stream order,
//! to the channel's live subject with its sequence (the offset) and the previous
//! sequence of the same channel. Channels without history, and join/leave events,
//! are published to the live subject directly (at most once). Gateways subscribe to
//! a live subject only while they have local subscribers.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod control;
mod envelope;
mod history;
pub mod hooks;
mod live;
mod presence;
mod streams;
pub mod subject;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use switchboard_core::broker::HistoryOptions;
use switchboard_core::namespace::Namespaces;
use switchboard_core::{
    Broker, BrokerError, ClientInfo, EventSink, HistoryQuery, HistoryResult, PresenceChange,
    PublishOptions, StreamPosition,
};
use tokio::sync::watch;

pub use presence::{
    sweeper, KvPresence, MemberPage, PresenceBucket, Rejoin, StaleMember, Unfinished,
};
pub use streams::Storage;
use subject::Subjects;

/// Settings of the NATS broker. Its defaults are the gateway's option defaults
/// (`--nats-replicas`, `--nats-storage`, `--nats-prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URLs; the client fails over between them.
    pub urls: Vec<String>,
    /// Replicas of each history stream (3 in production).
    pub replicas: usize,
    pub storage: Storage,
    /// Prefix of every subject and stream name.
    pub prefix: String,
    /// Longest wait for a publish acknowledgement.
    pub publish_timeout: Duration,
    /// How often the server is asked for a round trip; one not answered within
    /// this long marks NATS unresponsive (a hung or partitioned server keeps its
    /// socket open and says nothing) until one is answered again.
    pub probe_interval: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            replicas: 1,
            storage: Storage::File,
            prefix: "sb".into(),
            publish_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {urls}: {source}")]
    Connect {
        urls: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot set up stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe { subject: String, reason: String },
}

/// Channels this gateway publishes to that are known to hold messages: their
/// publishes skip the first-message check. Bounded; forgetting only costs one
/// rejected publish.
const KNOWN_CHANNELS: usize = 100_000;

/// Shared between the broker and its channel tasks.
pub(crate) struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    streams: streams::Streams,
    sink: OnceLock<Arc<dyn EventSink>>,
    reconnects: watch::Receiver<u64>,
    /// The last probe was answered in time (see [`NatsConfig::probe_interval`]).
    responsive: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn sink(&self) -> Option<&Arc<dyn EventSink>> {
        self.sink.get()
    }

    fn is_responsive(&self) -> bool {
        self.responsive.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Returns once the server has processed everything this connection sent
    /// before: a request nobody answers comes back "no responders" from the
    /// server itself, after it handled what came first on the connection.
    /// (`Client::flush` only writes to the socket.)
    async fn round_trip(&self, prefix: &str, timeout: Duration) -> Result<(), BrokerError> {
        let request = self.client.request(format!("{prefix}.sync"), Bytes::new());
        match tokio::time::timeout(timeout, request).await {
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(BrokerError::Unconfirmed(
                "NATS did not answer in time".into(),
            )),
        }
    }
}

/// Asks the server for a round trip every `interval` while the broker lives,
/// and keeps [`Shared::responsive`] (and `switchboard_nats_responsive`) to what
/// the last one found.
async fn probe(shared: std::sync::Weak<Shared>, prefix: String, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let answered = shared.round_trip(&prefix, interval).await.is_ok();
        let was = shared
            .responsive
            .swap(answered, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("switchboard_nats_responsive").set(if answered { 1.0 } else { 0.0 });
        match (was, answered) {
            (true, false) => tracing::warn!("NATS does not answer; refusing work until it does"),
            (false, true) => tracing::info!("NATS answers again"),
            _ => {}
        }
    }
}

/// A channel's listener task, once its NATS subscription is in place. The async
/// lock makes every subscriber wait until the first one has established it.
type ListenerSlot = Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>;

pub struct NatsBroker {
    shared: Arc<Shared>,
    config: NatsConfig,
    listeners: Mutex<HashMap<String, ListenerSlot>>,
    non_empty: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

impl NatsBroker {
    /// Connects and creates (or updates) the history stream of every namespace
    /// that keeps history. Safe to run on many gateways at once.
    pub async fn connect(
        config: NatsConfig,
        namespaces: &Namespaces,
    ) -> Result<Arc<NatsBroker>, NatsError> {
        let (reconnect_tx, reconnects) = watch::channel(0u64);
        let urls = config.urls.join(",");
        let client = async_nats::ConnectOptions::new()
            .name("switchboard-gateway")
            .event_callback(move |event| {
                let tx = reconnect_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            metrics::gauge!("switchboard_nats_connected").set(1.0);
                            tx.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => {
                            metrics::gauge!("switchboard_nats_connected").set(0.0);
                            tracing::warn!("NATS connection lost; reconnecting");
                        }
                        other => tracing::debug!(event = %other, "NATS event"),
                    }
                }
            })
            .connect(config.urls.as_slice())
            .await
            .map_err(|source| NatsError::Connect { urls, source })?;
        metrics::gauge!("switchboard_nats_connected").set(1.0);
        let js = jetstream::new(client.clone());
        let subjects = Subjects::new(config.prefix.clone());
        let wanted = namespaces
            .iter()
            .filter(|(_, o)| o.history_enabled())
            .map(|(ns, o)| {
                let history = HistoryOptions {
                    size: o.history_size,
                    ttl: o.history_ttl(),
                };
                (ns.map(str::to_owned), history)
            })
            .collect::<Vec<_>>();
        let streams = streams::Streams::ensure(&js, &subjects, &config, &wanted).await?;
        metrics::gauge!("switchboard_nats_responsive").set(1.0);
        let broker = Arc::new(NatsBroker {
            shared: Arc::new(Shared {
                client,
                js,
                subjects,
                streams,
                sink: OnceLock::new(),
                reconnects,
                responsive: std::sync::atomic::AtomicBool::new(true),
            }),
            config,
            listeners: Mutex::new(HashMap::new()),
            non_empty: Mutex::new(HashSet::new()),
        });
        tokio::spawn(probe(
            Arc::downgrade(&broker.shared),
            broker.config.prefix.clone(),
            broker.config.probe_interval,
        ));
        Ok(broker)
    }

    /// The JetStream context of this broker's connection, for presence.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.shared.js
    }

    fn check_connected(&self) -> Result<(), BrokerError> {
        match self.shared.client.connection_state() {
            async_nats::connection::State::Connected if self.shared.is_responsive() => Ok(()),
            async_nats::connection::State::Connected => Err(BrokerError::Unavailable(
                "NATS does not answer (hung or partitioned)".into(),
            )),
            state => Err(BrokerError::Unavailable(format!("NATS is {state:?}"))),
        }
    }

    async fn publish_stored(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<ClientInfo>,
        options: &PublishOptions,
    ) -> Result<StreamPosition, BrokerError> {
        let idempotency_key = options.idempotency_key.as_deref();
        let subject = self.shared.subjects.stored(channel);
        let time_us = switchboard_core::now_micros();
        // The first publish of a channel (as far as this gateway knows) expects an
        // empty subject; when that holds, the message is marked first, which is
        // what proves a later recovery from offset 0 complete.
        let mut first = !lock(&self.non_empty).contains(channel);
        loop {
            let mut headers = HeaderMap::new();
            if let Some(key) = idempotency_key {
                headers.insert("Nats-Msg-Id", format!("{channel}\u{1f}{key}").as_str());
            }
            if first {
                headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
            }
            let body = envelope::publication(data.clone(), info.clone(), time_us, first, options);
            let started = std::time::Instant::now();
            let ack = async {
                self.shared
                    .js
                    .publish_with_headers(subject.clone(), headers, body)
                    .await?
                    .await
            };
            let result = tokio::time::timeout(self.config.publish_timeout, ack).await;
            metrics::histogram!("switchboard_broker_publish_seconds")
                .record(started.elapsed().as_secs_f64());
            match result {
                Err(_) => {
                    return Err(BrokerError::Unconfirmed(
                        "publish not acknowledged in time".into(),
                    ))
                }
                Ok(Ok(ack)) => {
                    self.remember_non_empty(channel);
                    let epoch = self
                        .shared
                        .streams
                        .epoch(&self.shared.subjects.stream_of(channel))?;
                    return Ok(StreamPosition {
                        offset: ack.sequence,
                        epoch,
                    });
                }
                Ok(Err(e))
                    if first
                        && e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence =>
                {
                    self.remember_non_empty(channel);
                    first = false;
                }
                Ok(Err(e)) => return Err(unavailable(e)),
            }
        }
    }

    fn remember_non_empty(&self, channel: &str) {
        let mut known = lock(&self.non_empty);
        if known.len() >= KNOWN_CHANNELS {
            known.clear();
        }
        known.insert(channel.to_owned());
    }

    /// Returns once the server has processed this connection's earlier
    /// messages ([`Shared::round_trip`]), so that a publication accepted here, as
    /// a stored one acknowledged, is ordered before any publication accepted
    /// later, through any gateway.
    async fn confirm(&self) -> Result<(), BrokerError> {
        self.shared
            .round_trip(&self.config.prefix, self.config.publish_timeout)
            .await
    }

    async fn publish_live(&self, channel: &str, body: Bytes) -> Result<(), BrokerError> {
        self.check_connected()?;
        self.shared
            .client
            .publish(self.shared.subjects.live(channel), body)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl Broker for NatsBroker {
    fn set_sink(&self, sink: Arc<dyn EventSink>) {
        let _ = self.shared.sink.set(sink);
    }

    async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<ClientInfo>,
        options: &PublishOptions,
    ) -> Result<StreamPosition, BrokerError> {
        self.check_connected()?;
        match options.history {
            Some(_) => self.publish_stored(channel, data, info, options).await,
            None => {
                let now = switchboard_core::now_micros();
                let body = envelope::publication(data, info, now, false, options);
                self.publish_live(channel, body).await?;
                self.confirm().await?;
                Ok(StreamPosition::default())
            }
        }
    }

    async fn publish_join(&self, channel: &str, join: PresenceChange) -> Result<(), BrokerError> {
        self.publish_live(channel, envelope::presence(envelope::Kind::Join, join))
            .await
    }

    async fn publish_leave(&self, channel: &str, leave: PresenceChange) -> Result<(), BrokerError> {
        self.publish_live(channel, envelope::presence(envelope::Kind::Leave, leave))
            .await
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        // Every local subscriber comes through here, not only the first: a later
        // one must not read the stream before the first one's NATS subscription
        // is in place, or a publication in between would reach neither.
        let slot = lock(&self.listeners)
            .entry(channel.to_owned())
            .or_default()
            .clone();
        let mut listener = slot.lock().await;
        if listener.is_some() {
            return Ok(());
        }
        // Without NATS the interest cannot reach the server: fail now (a temporary
        // error the client retries) rather than wait for the reconnect.
        self.check_connected()?;
        let subscriber = self
            .shared
            .client
            .subscribe(self.shared.subjects.live(channel))
            .await
            .map_err(unavailable)?;
        // The interest must reach the server before the caller reads the stream:
        // every message after that read then arrives live. Bounded: NATS may go
        // away meanwhile.
        // In place at the server, not only written to the socket: a publish
        // accepted after this returns, through any gateway, reaches it.
        self.shared
            .round_trip(&self.config.prefix, self.config.publish_timeout)
            .await
            .map_err(|_| unavailable("NATS did not confirm the subscription in time"))?;
        *listener = Some(tokio::spawn(live::run(
            self.shared.clone(),
            channel.to_owned(),
            subscriber,
        )));
        Ok(())
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError> {
        let mut listeners = lock(&self.listeners);
        // A subscriber added since the hub emptied keeps the listener: it was added
        // to the hub before it called subscribe, so this check sees it.
        if self
            .shared
            .sink()
            .is_some_and(|s| s.has_subscribers(channel))
        {
            return Ok(());
        }
        if let Some(slot) = listeners.remove(channel) {
            drop(listeners);
            stop_listener(slot);
        }
        Ok(())
    }

    fn is_healthy(&self) -> bool {
        self.check_connected().is_ok()
    }

    async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
        options: HistoryOptions,
    ) -> Result<HistoryResult, BrokerError> {
        self.check_connected()?;
        history::read(&self.shared, channel, query, options).await
    }
}

/// Aborts a listener task; if a subscribe holds its slot right now, once it lets go.
fn stop_listener(slot: ListenerSlot) {
    if let Ok(mut listener) = slot.try_lock() {
        if let Some(task) = listener.take() {
            task.abort();
        }
        return;
    }
    tokio::spawn(async move {
        if let Some(task) = slot.lock().await.take() {
            task.abort();
        }
    });
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        for (_, slot) in lock(&self.listeners).drain() {
            if let Ok(mut listener) = slot.try_lock() {
                if let Some(task) = listener.take() {
                    task.abort();
                }
            }
        }
    }
}
