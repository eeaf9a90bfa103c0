use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use crate::broker::{
    Broker, BrokerError, EventSink, HistoryOptions, HistoryQuery, HistoryResult, PublishOptions,
};
use crate::types::{ChannelEvent, ClientInfo, PresenceChange, Publication, StreamPosition};

/// Settings of the in-memory broker.
#[derive(Debug, Clone)]
pub struct MemoryBrokerConfig {
    /// A stream with no publication left is forgotten (and gets a new epoch when
    /// used again) after this long without a publish.
    pub stream_meta_ttl: Duration,
    /// A publish repeated with the same idempotency key within this window is
    /// stored once.
    pub idempotency_window: Duration,
    /// How often expired streams and idempotency keys are swept.
    pub sweep_interval: Duration,
}

impl Default for MemoryBrokerConfig {
    fn default() -> Self {
        MemoryBrokerConfig {
            stream_meta_ttl: Duration::from_secs(24 * 3600),
            idempotency_window: Duration::from_secs(120),
            sweep_interval: Duration::from_secs(10),
        }
    }
}

/// One channel's stream.
struct Stream {
    epoch: String,
    top: u64,
    /// (expiry, publication), oldest first.
    publications: VecDeque<(Instant, Publication)>,
    /// The highest offset evicted by size or age: recovering from an offset below
    /// it would miss publications.
    evicted_through: u64,
    last_publish: Instant,
}

impl Stream {
    fn new(now: Instant) -> Stream {
        Stream {
            epoch: new_epoch(),
            top: 0,
            publications: VecDeque::new(),
            evicted_through: 0,
            last_publish: now,
        }
    }

    /// Evicts publications past `size` or past their expiry.
    fn trim(&mut self, now: Instant, size: usize) {
        while self.publications.len() > size
            || self
                .publications
                .front()
                .is_some_and(|(exp, _)| *exp <= now)
        {
            if let Some((_, p)) = self.publications.pop_front() {
                self.evicted_through = p.offset;
            }
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

fn new_epoch() -> String {
    (0..8).map(|_| fastrand::alphanumeric()).collect()
}

const SHARDS: usize = 32;

type StreamMap = HashMap<String, Arc<Mutex<Stream>>>;

/// Publications, history and fan-out within one process.
///
/// Offsets and delivery happen under the channel's stream lock, so every
/// subscriber sees a channel's publications in offset order.
pub struct MemoryBroker {
    config: MemoryBrokerConfig,
    sink: OnceLock<Arc<dyn EventSink>>,
    streams: Box<[Mutex<StreamMap>]>,
    idempotency: Mutex<HashMap<(String, String), (Instant, StreamPosition)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBroker {
    /// Creates the broker and starts its sweeper on the current tokio runtime; the
    /// sweeper ends when the broker is dropped.
    pub fn new(config: MemoryBrokerConfig) -> Arc<MemoryBroker> {
        let broker = Arc::new(MemoryBroker {
            config,
            sink: OnceLock::new(),
            streams: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            idempotency: Mutex::new(HashMap::new()),
        });
        tokio::spawn(sweeper(Arc::downgrade(&broker)));
        broker
    }

    fn shard(&self, channel: &str) -> &Mutex<StreamMap> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        channel.hash(&mut h);
        &self.streams[(h.finish() as usize) % SHARDS]
    }

    fn stream(&self, channel: &str, now: Instant) -> Arc<Mutex<Stream>> {
        lock(self.shard(channel))
            .entry(channel.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Stream::new(now))))
            .clone()
    }

    fn deliver(&self, channel: &str, event: ChannelEvent) {
        if let Some(sink) = self.sink.get() {
            sink.on_event(channel, event);
        }
    }

    /// Forgets streams that hold nothing and saw no publish for the meta TTL, and
    /// idempotency keys past their window.
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in self.streams.iter() {
            lock(shard).retain(|_, stream| {
                let mut stream = lock(stream);
                stream.trim(now, usize::MAX);
                !stream.publications.is_empty()
                    || now.duration_since(stream.last_publish) < self.config.stream_meta_ttl
            });
        }
        lock(&self.idempotency).retain(|_, (expires, _)| *expires > now);
    }

    /// Streams kept now.
    pub fn num_streams(&self) -> usize {
        self.streams.iter().map(|s| lock(s).len()).sum()
    }
}

async fn sweeper(broker: Weak<MemoryBroker>) {
    let Some(interval) = broker.upgrade().map(|b| b.config.sweep_interval) else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match broker.upgrade() {
            Some(b) => b.sweep(),
            None => return,
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn set_sink(&self, sink: Arc<dyn EventSink>) {
        let _ = self.sink.set(sink);
    }

    async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<ClientInfo>,
        options: &PublishOptions,
    ) -> Result<StreamPosition, BrokerError> {
        let now = Instant::now();
        let key = options
            .idempotency_key
            .as_ref()
            .map(|k| (channel.to_owned(), k.clone()));
        // Held across the publish so that two concurrent repeats store once.
        let mut keys = key.as_ref().map(|_| lock(&self.idempotency));
        if let (Some(keys), Some(key)) = (keys.as_ref(), key.as_ref()) {
            if let Some((expires, position)) = keys.get(key) {
                if *expires > now {
                    return Ok(position.clone());
                }
            }
        }
        let mut publication = Publication {
            offset: 0,
            data,
            info,
            time_us: crate::now_micros(),
            exclude_client: None,
            tags: options.tags.clone(),
        };
        // History keeps the publication; only its live delivery skips a client.
        let live = |publication: Publication| {
            ChannelEvent::Publication(Publication {
                exclude_client: options.exclude_client.clone(),
                ..publication
            })
        };
        let position = match options.history {
            None => {
                self.deliver(channel, live(publication));
                StreamPosition::default()
            }
            Some(history) => {
                let stream = self.stream(channel, now);
                let mut stream = lock(&stream);
                stream.top += 1;
                stream.last_publish = now;
                publication.offset = stream.top;
                stream
                    .publications
                    .push_back((now + history.ttl, publication.clone()));
                stream.trim(now, history.size);
                let position = stream.position();
                self.deliver(channel, live(publication));
                position
            }
        };
        if let (Some(keys), Some(key)) = (keys.as_mut(), key) {
            keys.insert(
                key,
                (now + self.config.idempotency_window, position.clone()),
            );
        }
        Ok(position)
    }

    async fn publish_join(&self, channel: &str, join: PresenceChange) -> Result<(), BrokerError> {
        self.deliver(channel, ChannelEvent::Join(join));
        Ok(())
    }

    async fn publish_leave(&self, channel: &str, leave: PresenceChange) -> Result<(), BrokerError> {
        self.deliver(channel, ChannelEvent::Leave(leave));
        Ok(())
    }

    async fn subscribe(&self, _channel: &str) -> Result<(), BrokerError> {
        // Every event reaches the hub, which keeps those of channels it has
        // subscribers in: in one process there is no interest to announce.
        Ok(())
    }

    async fn unsubscribe(&self, _channel: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
        options: HistoryOptions,
    ) -> Result<HistoryResult, BrokerError> {
        let now = Instant::now();
        let stream = self.stream(channel, now);
        let mut stream = lock(&stream);
        stream.trim(now, options.size);
        let after = match &query.since {
            Some(since) => {
                let complete = since.epoch == stream.epoch
                    && since.offset <= stream.top
                    && since.offset >= stream.evicted_through;
                if !complete {
                    return Err(BrokerError::Unrecoverable);
                }
                since.offset
            }
            None => 0,
        };
        let limit = query.limit.unwrap_or(usize::MAX);
        let matching = stream
            .publications
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.offset > after);
        let publications: Vec<Publication> = if query.reverse {
            matching.rev().take(limit).cloned().collect()
        } else {
            matching.take(limit).cloned().collect()
        };
        Ok(HistoryResult {
            publications,
            position: stream.position(),
        })
    }
}

#[cfg(test)]
#[path = "broker_tests.rs"]
mod tests;
