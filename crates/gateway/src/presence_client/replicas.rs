//! The presence replicas a gateway calls, found from its `--presence-url`s.
//!
//! A URL with an IP address is one replica, as given, never looked up. A URL with
//! a host name (in Kubernetes the presence Service's headless name: one address
//! per ready replica) is looked up at start, again every `interval`, and sooner
//! after a call to a replica failed (at most once per [`MIN_GAP`]). Each address
//! is one replica with its own gRPC channel: an address still there keeps its
//! channel and connection, a new one gets a channel, one gone is dropped (calls
//! in flight on it finish). A lookup that fails or answers nothing keeps what the
//! name had: a DNS hiccup must not take every replica away, and a replica that
//! is really gone only costs the caller a retry.
//!
//! tonic's balancer (`Channel::balance_channel`) would do the bookkeeping but
//! picks the replica itself, so a retry could land on the replica that just
//! failed; here the caller tries each replica at most once per call.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use http::Uri;
use switchboard_presence::pb::presence_client::PresenceClient;
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};

use super::{PresenceUrlError, DEADLINE};

/// The shortest pause between two lookups, however many calls fail.
const MIN_GAP: Duration = Duration::from_secs(1);
/// Longest wait for one name's lookup.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(2);

/// Finds the addresses behind a host name. Injected so that a test can move a
/// name from one replica to another.
#[async_trait]
pub trait Resolve: Send + Sync {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system's resolver (`getaddrinfo`, through tokio): DNS and /etc/hosts.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// How the replicas behind host names are found.
#[derive(Clone)]
pub struct Discovery {
    pub resolver: Arc<dyn Resolve>,
    /// Between two lookups of every name.
    pub interval: Duration,
}

/// One replica: where it is and the channel to it.
#[derive(Clone)]
pub struct Replica {
    pub addr: SocketAddr,
    pub client: PresenceClient<Channel>,
}

/// The replicas in use now, in address order.
pub struct Replicas {
    current: RwLock<Arc<[Replica]>>,
    next: AtomicUsize,
    /// Wakes the lookup task early.
    stale: Arc<Notify>,
}

impl Replicas {
    /// Parses every URL, looks each name up once, and keeps looking names up
    /// while the returned set lives. A name that does not resolve yet is no
    /// error: it is looked up again until it does.
    pub async fn start(
        urls: &[String],
        discovery: Discovery,
    ) -> Result<Arc<Replicas>, PresenceUrlError> {
        let targets = urls
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(PresenceUrlError {
                url: String::new(),
                reason: "no URL given".into(),
            });
        }
        let mut finder = Finder {
            targets,
            resolver: discovery.resolver,
        };
        finder.lookup().await;
        let replicas = Arc::new(Replicas {
            current: RwLock::new(Arc::from(Vec::new())),
            next: AtomicUsize::new(0),
            stale: Arc::new(Notify::new()),
        });
        replicas.install(&finder);
        if finder.targets.iter().any(|t| t.fixed.is_none()) {
            tokio::spawn(run(
                Arc::downgrade(&replicas),
                replicas.stale.clone(),
                finder,
                discovery.interval,
            ));
        }
        Ok(replicas)
    }

    /// The replicas now, and the one a call starts with: each call the next.
    pub fn pick(&self) -> (Arc<[Replica]>, usize) {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        (current, self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// A call to a replica failed: look the names up again soon.
    pub fn suspect(&self) {
        self.stale.notify_one();
    }

    /// Makes the finder's addresses the replicas in use, keeping the channels of
    /// addresses that stay.
    fn install(&self, finder: &Finder) {
        let wanted = finder.addresses();
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut kept: BTreeMap<SocketAddr, Replica> =
            current.iter().map(|r| (r.addr, r.clone())).collect();
        let mut next = Vec::with_capacity(wanted.len());
        for (addr, target) in wanted {
            if let Some(replica) = kept.remove(&addr) {
                next.push(replica);
                continue;
            }
            match target.channel(addr) {
                Ok(channel) => {
                    tracing::info!(%addr, url = %target.url, "presence replica added");
                    metrics::counter!("switchboard_presence_client_replica_changes_total", "change" => "added")
                        .increment(1);
                    next.push(Replica {
                        addr,
                        client: PresenceClient::new(channel),
                    });
                }
                Err(e) => tracing::warn!(%addr, error = %e, "presence replica unusable"),
            }
        }
        for addr in kept.keys() {
            tracing::info!(%addr, "presence replica removed");
            metrics::counter!("switchboard_presence_client_replica_changes_total", "change" => "removed")
                .increment(1);
        }
        metrics::gauge!("switchboard_presence_client_replicas").set(next.len() as f64);
        *current = Arc::from(next);
    }
}

/// Looks the names up again every `interval`, or after a failed call, until the
/// replica set is dropped.
async fn run(replicas: Weak<Replicas>, stale: Arc<Notify>, mut finder: Finder, interval: Duration) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stale.notified() => {}
        }
        finder.lookup().await;
        let Some(replicas) = replicas.upgrade() else {
            return;
        };
        replicas.install(&finder);
        drop(replicas);
        // Bounded: failed calls coming in fast ask for one lookup per gap.
        tokio::time::sleep(MIN_GAP).await;
    }
}

/// The names to look up and what each resolved to last.
struct Finder {
    targets: Vec<Target>,
    resolver: Arc<dyn Resolve>,
}

impl Finder {
    async fn lookup(&mut self) {
        for target in self.targets.iter_mut().filter(|t| t.fixed.is_none()) {
            let answer = tokio::time::timeout(
                LOOKUP_DEADLINE,
                self.resolver.resolve(&target.host, target.port),
            )
            .await;
            let error = match answer {
                Ok(Ok(addrs)) if !addrs.is_empty() => {
                    metrics::counter!("switchboard_presence_client_lookups_total", "result" => "ok")
                        .increment(1);
                    target.known = addrs.into_iter().collect();
                    target.failing = false;
                    continue;
                }
                Ok(Ok(_)) => "no address".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "deadline passed".to_owned(),
            };
            metrics::counter!("switchboard_presence_client_lookups_total", "result" => "failed")
                .increment(1);
            // Said once per outage, not once per lookup.
            if !target.failing {
                tracing::warn!(url = %target.url, %error, kept = target.known.len(),
                    "presence URL lookup failed; keeping its last addresses");
            }
            target.failing = true;
        }
    }

    /// Every address with the first target that names it.
    fn addresses(&self) -> BTreeMap<SocketAddr, &Target> {
        let mut all = BTreeMap::new();
        for target in &self.targets {
            let addrs = target.fixed.iter().chain(&target.known);
            for addr in addrs {
                all.entry(*addr).or_insert(target);
            }
        }
        all
    }
}

/// One `--presence-url`.
struct Target {
    url: String,
    scheme: String,
    /// The URL's scheme and authority: the `:authority` of calls to its replicas.
    origin: Uri,
    host: String,
    port: u16,
    /// The URL names an IP address: its one replica, never looked up.
    fixed: Option<SocketAddr>,
    /// What the name resolved to last.
    known: BTreeSet<SocketAddr>,
    failing: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Target, PresenceUrlError> {
        let invalid = |reason: String| PresenceUrlError {
            url: url.to_owned(),
            reason,
        };
        // tonic's own check first: the URL must be one it would take as given.
        Endpoint::from_shared(url.to_owned()).map_err(|e| invalid(e.to_string()))?;
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(invalid(
                "scheme and host required (http://host:port)".into(),
            ));
        };
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let origin = format!("{scheme}://{authority}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
        Ok(Target {
            url: url.to_owned(),
            scheme: scheme.to_owned(),
            origin,
            fixed: host
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, port)),
            host,
            port,
            known: BTreeSet::new(),
            failing: false,
        })
    }

    /// A lazy channel to one of the target's addresses.
    fn channel(&self, addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
        let endpoint = if self.fixed.is_some() {
            Endpoint::from_shared(self.url.clone())?
        } else {
            Endpoint::from_shared(format!("{}://{addr}", self.scheme))?.origin(self.origin.clone())
        };
        Ok(endpoint.connect_timeout(DEADLINE).connect_lazy())
    }
}

#[cfg(test)]
mod tests;
