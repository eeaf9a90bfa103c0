//! A gateway node's shared state and the channel operations every protocol and
//! server API uses (validation, namespace rules, broker calls), with errors in
//! the core's words ([`ChannelError`]) that each protocol maps to its codes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_core::broker::HistoryOptions;
use switchboard_core::channel;
use switchboard_core::hub::Hub;
use switchboard_core::memory::{MemoryBroker, MemoryPresence};
use switchboard_core::namespace::NamespaceOptions;
use switchboard_core::startup::Backoff;
use switchboard_core::{
    Broker, BrokerError, ClientInfo, HistoryQuery, HistoryResult, PresenceStats, PresenceStore,
    PublishOptions, StreamPosition,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use switchboard_broker_nats::{KvPresence, NatsBroker, NatsError};

use crate::backend::Backend;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::presence_client::{Discovery, RemotePresence, Resolve, SystemResolver};
use crate::registry::Registry;
use crate::webhooks::Webhooks;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    PresenceUrl(#[from] crate::presence_client::PresenceUrlError),
}

pub struct Node {
    /// Unique per process start.
    pub id: String,
    pub config: Config,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn PresenceStore>,
    pub hub: Arc<Hub>,
    pub registry: Registry,
    /// Calls to the application backend (the proxies).
    pub backend: Backend,
    /// The way to the other nodes: cluster-wide commands and the node registry.
    pub cluster: Cluster,
    /// The Pusher apps' webhooks, when any app has one (set once at start).
    webhooks: std::sync::OnceLock<Arc<Webhooks>>,
    pub metrics: PrometheusHandle,
    /// Cancelled when the node shuts down: connections leave over the drain window.
    pub drain: CancellationToken,
    /// Connection tasks, awaited on shutdown.
    pub tasks: TaskTracker,
    ready: AtomicBool,
    draining: AtomicBool,
    connections: AtomicUsize,
    /// Connections not authenticated yet: in all, and per IP address.
    unauthenticated: std::sync::Mutex<(usize, HashMap<IpAddr, usize>)>,
    started: Instant,
}

impl Node {
    pub fn new(
        config: Config,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn PresenceStore>,
    ) -> Arc<Node> {
        // Front ends register their formats with the hub when they start.
        let hub = Arc::new(Hub::new());
        broker.set_sink(hub.clone());
        let backend = Backend::new(config.proxies.max_in_flight, config.proxies.timeout);
        Arc::new(Node {
            id: uuid::Uuid::new_v4().to_string(),
            config,
            broker,
            presence,
            hub,
            registry: Registry::default(),
            backend,
            cluster: Cluster::default(),
            webhooks: std::sync::OnceLock::new(),
            metrics: crate::metrics::install(),
            drain: CancellationToken::new(),
            tasks: TaskTracker::new(),
            ready: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            unauthenticated: Default::default(),
            started: Instant::now(),
        })
    }

    /// A node of the embedded mode: in-memory broker and presence. Must be called
    /// inside a tokio runtime.
    pub fn standalone(config: Config) -> Arc<Node> {
        let broker = MemoryBroker::new(Default::default());
        let node = Node::new(config, broker, Arc::new(MemoryPresence::new()));
        node.start_webhooks(None);
        node
    }

    /// Starts the webhooks (over `hooks`, in memory when `None`) if an app has one.
    fn start_webhooks(self: &Arc<Self>, hooks: Option<switchboard_core::hooks::Hooks>) {
        if let Some(webhooks) = Webhooks::start(self, hooks) {
            let _ = self.webhooks.set(webhooks);
        }
    }

    /// The webhooks, when an app has one.
    pub fn webhooks(&self) -> Option<&Webhooks> {
        self.webhooks.get().map(|w| w.as_ref())
    }

    /// A node as the configuration says: a cluster node over NATS when
    /// `config.nats` is set, standalone otherwise.
    pub async fn from_config(config: Config) -> Result<Arc<Node>, NodeError> {
        Node::from_config_with(config, Arc::new(SystemResolver)).await
    }

    /// [`Node::from_config`], with presence URLs' host names looked up by `resolver`.
    pub async fn from_config_with(
        config: Config,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Arc<Node>, NodeError> {
        let Some(nats) = config.nats.clone() else {
            return Ok(Node::standalone(config));
        };
        // The broker reports its connection state from the start.
        crate::metrics::install();
        let broker = NatsBroker::connect(nats.broker.clone(), &config.namespaces).await?;
        let node_name = uuid::Uuid::new_v4().to_string();
        let presence: Arc<dyn PresenceStore> = if nats.presence_urls.is_empty() {
            KvPresence::open(
                broker.jetstream(),
                &nats.broker.prefix,
                nats.presence_ttl,
                nats.broker.replicas,
                node_name,
            )
            .await?
        } else {
            let discovery = Discovery {
                resolver,
                interval: nats.presence_resolve_interval,
            };
            RemotePresence::new(&nats.presence_urls, discovery, node_name, nats.presence_ttl)
                .await?
        };
        let wants_hooks = config.pusher_apps.iter().any(|a| !a.webhooks.is_empty());
        let hooks = if wants_hooks {
            Some(broker.hooks().await?)
        } else {
            None
        };
        let node = Node::new(config, broker.clone(), presence);
        Cluster::join(&node, &broker, &nats).await?;
        node.start_webhooks(hooks);
        Ok(node)
    }

    /// [`Node::from_config`], tried until it works: a failure to reach NATS (or to
    /// set up its streams and buckets, as while a JetStream cluster elects its
    /// leaders) is logged, counted in `switchboard_nats_connect_failures_total` and
    /// retried after a backoff (250 ms doubling to 5 s). Other errors (a presence
    /// URL that cannot work) end it.
    pub async fn connect(config: Config) -> Result<Arc<Node>, NodeError> {
        crate::metrics::install();
        metrics::gauge!("switchboard_nats_connected").set(0.0);
        let mut backoff = Backoff::startup();
        for attempt in 1u64.. {
            match Node::from_config(config.clone()).await {
                Err(NodeError::Nats(e)) => {
                    let delay = backoff.next_delay();
                    metrics::counter!("switchboard_nats_connect_failures_total").increment(1);
                    tracing::warn!(error = %e, attempt, retry_in = ?delay, "NATS not reached yet; not ready");
                    tokio::time::sleep(delay).await;
                }
                done => return done,
            }
        }
        unreachable!("attempts are unbounded")
    }

    /// What `/readyz` says: not shutting down, and the broker can serve.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.is_draining() && self.broker.is_healthy()
    }

    /// Draining: no new connections.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Tells load balancers (through `/readyz`) whether to send clients here;
    /// connections are still taken either way until the drain.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Starts the drain: no new connections from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// WebSocket connections held now, until their socket is closed.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Takes a connection slot, or refuses when the node is full.
    pub fn try_acquire_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.config.limits.max_connections;
        let taken = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok().map(|_| {
            metrics::gauge!("switchboard_connections").increment(1.0);
            ConnectionSlot(self.clone())
        })
    }

    /// Counts a connection as not authenticated yet, or refuses it (with the
    /// reason, for metrics) when the node holds as many as it may, in all or
    /// from `address`. The slot is given back when dropped: on authentication or
    /// at the end of the connection.
    pub fn try_acquire_unauthenticated(
        self: &Arc<Self>,
        address: Option<IpAddr>,
    ) -> Result<UnauthenticatedSlot, &'static str> {
        let limits = &self.config.limits;
        let mut held = self
            .unauthenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if held.0 >= limits.max_unauthenticated {
            return Err("unauthenticated_limit");
        }
        let per_address = limits.max_unauthenticated_per_address;
        let address = address.filter(|_| per_address > 0);
        if let Some(ip) = address {
            let n = held.1.entry(ip).or_default();
            if *n >= per_address {
                return Err("unauthenticated_per_address");
            }
            *n += 1;
        }
        held.0 += 1;
        metrics::gauge!("switchboard_unauthenticated_connections").set(held.0 as f64);
        Ok(UnauthenticatedSlot {
            node: self.clone(),
            address,
        })
    }

    /// Checks a channel name and finds its namespace's options.
    pub fn channel_options(&self, name: &str) -> Result<&NamespaceOptions, ChannelError> {
        channel::validate(name, self.config.limits.max_channel_length)
            .map_err(|_| ChannelError::Invalid)?;
        self.config
            .namespaces
            .resolve(name)
            .ok_or(ChannelError::Unknown)
    }

    /// Publishes with an optional idempotency key (the server API's publish).
    pub async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<ClientInfo>,
        idempotency_key: Option<String>,
    ) -> Result<StreamPosition, ChannelError> {
        let publish = PublishOptions {
            idempotency_key,
            ..Default::default()
        };
        self.publish_with(channel, data, info, publish, false).await
    }

    /// Publishes with every option; the channel's namespace sets its history, unless
    /// `skip_history` (the server API's): then the publication reaches subscribers
    /// but not the history, and has no offset, as on a channel without history.
    pub async fn publish_with(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<ClientInfo>,
        mut publish: PublishOptions,
        skip_history: bool,
    ) -> Result<StreamPosition, ChannelError> {
        let options = self.channel_options(channel)?;
        if !options.binary_data && !is_json(&data) {
            return Err(ChannelError::NotJson);
        }
        publish.history = history_options(options).filter(|_| !skip_history);
        Ok(self.broker.publish(channel, data, info, &publish).await?)
    }

    pub async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<HistoryResult, ChannelError> {
        let options = self.channel_options(channel)?;
        let history = history_options(options).ok_or(ChannelError::NotAvailable)?;
        Ok(self.broker.history(channel, query, history).await?)
    }

    pub async fn presence(
        &self,
        channel: &str,
    ) -> Result<HashMap<String, ClientInfo>, ChannelError> {
        self.presence_readable(channel)?;
        Ok(self.presence.get(channel).await?)
    }

    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, ChannelError> {
        self.presence_readable(channel)?;
        Ok(self.presence.stats(channel).await?)
    }

    /// Whether `channel`'s presence can be read now: its namespace keeps presence,
    /// and NATS (which holds it, directly or behind the presence service) answers.
    /// While NATS hangs, a read fails at once instead of waiting out the store's
    /// timeouts, as publishes and subscribes do.
    fn presence_readable(&self, channel: &str) -> Result<(), ChannelError> {
        if !self.channel_options(channel)?.presence {
            return Err(ChannelError::NotAvailable);
        }
        if !self.broker.is_healthy() {
            tracing::debug!(channel, "presence not read: NATS does not answer");
            return Err(ChannelError::Internal);
        }
        Ok(())
    }
}

/// A connection counted as not authenticated yet; released on drop.
pub struct UnauthenticatedSlot {
    node: Arc<Node>,
    address: Option<IpAddr>,
}

impl Drop for UnauthenticatedSlot {
    fn drop(&mut self) {
        let mut held = self
            .node
            .unauthenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        held.0 = held.0.saturating_sub(1);
        if let Some(ip) = self.address {
            if let Some(n) = held.1.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    held.1.remove(&ip);
                }
            }
        }
        metrics::gauge!("switchboard_unauthenticated_connections").set(held.0 as f64);
    }
}

/// A held connection slot; released on drop.
pub struct ConnectionSlot(Arc<Node>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("switchboard_connections").decrement(1.0);
    }
}

/// Nesting of JSON data a publication may hold. Readers get it inside their
/// protocol's own JSON (a history reply adds four levels), and common parsers
/// stop at 128 (serde_json's): 64 leaves every reader room.
pub const MAX_JSON_DEPTH: usize = 64;

/// Whether `data` is one JSON value nested at most [`MAX_JSON_DEPTH`] deep.
pub fn is_json(data: &[u8]) -> bool {
    nesting(data) <= MAX_JSON_DEPTH && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
}

/// How deep arrays and objects nest in `data`, brackets in strings aside.
fn nesting(data: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in data {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

pub fn history_options(options: &NamespaceOptions) -> Option<HistoryOptions> {
    options.history_enabled().then(|| HistoryOptions {
        size: options.history_size,
        ttl: options.history_ttl(),
    })
}

/// Why a channel operation failed, in no protocol's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("invalid channel name")]
    Invalid,
    /// No namespace takes the channel.
    #[error("unknown channel")]
    Unknown,
    /// The channel's namespace does not offer what was asked (history, presence).
    #[error("not available")]
    NotAvailable,
    #[error("already subscribed")]
    AlreadySubscribed,
    #[error("limit exceeded")]
    LimitExceeded,
    /// The broker did not confirm a publish in time: it may have been made.
    #[error("not confirmed")]
    Unconfirmed,
    /// Data that is not JSON, in a namespace without `binary_data`.
    #[error("data is not JSON")]
    NotJson,
    /// The stream position asked for is gone.
    #[error("unrecoverable position")]
    Unrecoverable,
    /// The broker or presence failed (logged where it happened).
    #[error("internal error")]
    Internal,
}

impl From<BrokerError> for ChannelError {
    fn from(error: BrokerError) -> ChannelError {
        match error {
            BrokerError::Unrecoverable => ChannelError::Unrecoverable,
            BrokerError::Unconfirmed(e) => {
                tracing::warn!(error = %e, "publish not confirmed");
                ChannelError::Unconfirmed
            }
            BrokerError::Unavailable(e) | BrokerError::Internal(e) => {
                tracing::warn!(error = %e, "broker call failed");
                ChannelError::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_data_is_nested_at_most_max_json_depth() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(is_json(nested(MAX_JSON_DEPTH).as_bytes()));
        assert!(!is_json(nested(MAX_JSON_DEPTH + 1).as_bytes()));
        // What the server API's history reads back parses the same data.
        assert!(serde_json::from_str::<serde_json::Value>(&nested(MAX_JSON_DEPTH)).is_ok());
        assert!(is_json(br#"{"a":"[[[[\"]]"}"#));
        assert!(is_json(b"1e999"));
        assert!(!is_json(b"\xff\xfe"));
        assert!(!is_json(b"{\"a\":1} trailing"));
    }
}
