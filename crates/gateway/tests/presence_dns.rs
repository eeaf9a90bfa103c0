//! The presence client follows what its URL's host name resolves to (the
//! presence Service's headless name in Kubernetes), under joins and leaves: a
//! replica added behind the name gets calls, a replica replaced by one at a new
//! address is followed, and no client sees an error.
//!
//! Its own test binary: it reads the presence client's metrics, which are per
//! process.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard_broker_nats::NatsConfig;
use switchboard_gateway::presence_client::Resolve;
use switchboard_test_support::{eventually, eventually_ok, NatsServer};
use tokio_util::sync::CancellationToken;

const NAME: &str = "presence.test";
/// Longer than the test: every member that goes, goes by its leave.
const TTL: Duration = Duration::from_secs(60);
const WORKERS: usize = 3;
const RESIDENTS: usize = 3;
const CHANNEL: &str = "lobby";

/// The name server the test edits: `NAME` resolves to what it was told last
/// (each replica on its own port, as tests bind port 0).
#[derive(Default)]
struct Hosts(Mutex<Vec<SocketAddr>>);

impl Hosts {
    fn point_at(&self, replicas: &[&PresenceReplica]) {
        *self.0.lock().unwrap() = replicas.iter().map(|r| r.addr).collect();
    }
}

#[async_trait::async_trait]
impl Resolve for Hosts {
    async fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<SocketAddr>> {
        if host != NAME {
            return Err(std::io::Error::other(format!("unknown host {host}")));
        }
        Ok(self.0.lock().unwrap().clone())
    }
}

/// The value of the sample `series` (name and labels as Prometheus renders them).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics(gw: &Gateway) -> String {
    get(gw.addr, "/metrics").await.1
}

/// Joins and leaves without pause, each worker on its connection: subscribe
/// (a join), presence_stats, unsubscribe (a leave), and every tenth round a new
/// connection (the old one's leave on disconnect). Every error a client sees
/// is recorded.
struct Load {
    rounds: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gw: &Gateway) -> Load {
        let rounds = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let workers = (0..WORKERS)
            .map(|w| {
                let (addr, rounds, errors, stop) =
                    (gw.addr, rounds.clone(), errors.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut round = 0;
                    while !stop.is_cancelled() {
                        let mut c = Client::open(addr, false).await;
                        c.connect(json!({"token": token(json!({"sub": format!("w{w}-{round}")}))}))
                            .await;
                        for _ in 0..10 {
                            for command in [
                                json!({"subscribe": {"channel": CHANNEL}}),
                                json!({"presence_stats": {"channel": CHANNEL}}),
                                json!({"unsubscribe": {"channel": CHANNEL}}),
                            ] {
                                let reply = c.call(command.clone()).await;
                                if reply.get("error").is_some() {
                                    errors.lock().unwrap().push(format!("{command}: {reply}"));
                                }
                            }
                            round += 1;
                            rounds.fetch_add(1, Ordering::Relaxed);
                            if stop.is_cancelled() {
                                break;
                            }
                        }
                        // Subscribed at the end: the disconnect is the leave.
                        let reply = c.subscribe(json!({"channel": CHANNEL})).await;
                        if reply.get("error").is_some() {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("last subscribe: {reply}"));
                        }
                    }
                })
            })
            .collect();
        Load {
            rounds,
            errors,
            stop,
            workers,
        }
    }

    fn rounds(&self) -> usize {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Waits for `n` more rounds.
    async fn goes_on(&self, n: usize, what: &str) {
        let from = self.rounds();
        eventually(what, PATIENCE, async || self.rounds() >= from + n).await;
    }

    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.cancel();
        for worker in self.workers {
            worker.await.expect("a worker panicked");
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.rounds.load(Ordering::Relaxed), errors)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_replicas_added_and_replaced_behind_its_name_under_load() {
    let nats = NatsServer::start();
    let hosts = Arc::new(Hosts::default());
    let r1 = PresenceReplica::start_with_ttl(&nats.url(), TTL).await;
    hosts.point_at(&[&r1]);
    let mut cfg = config();
    cfg.limits.max_commands_per_second = 100_000;
    cfg.nats = Some(switchboard_gateway::config::NatsSettings {
        presence_ttl: TTL,
        presence_urls: vec![format!("http://{NAME}:9000")],
        presence_resolve_interval: Duration::from_secs(1),
        ..switchboard_gateway::config::NatsSettings::new(NatsConfig {
            urls: vec![nats.url()],
            replicas: 1,
            ..NatsConfig::default()
        })
    });
    let gw = Gateway::start_with(cfg, None, hosts.clone()).await;
    let replicas = "switchboard_presence_client_replicas";
    assert_eq!(sample(&metrics(&gw).await, replicas), 1.0);

    // Members that stay throughout: the count at the end must be exactly theirs.
    let mut residents = Vec::new();
    for i in 0..RESIDENTS {
        let mut c = gw.client().await;
        c.connect(json!({"token": token(json!({"sub": format!("resident-{i}")}))}))
            .await;
        let r = c.subscribe(json!({"channel": CHANNEL})).await;
        assert!(r.get("error").is_none(), "{r}");
        residents.push(c);
    }
    let load = Load::start(&gw);
    load.goes_on(20, "load on one replica").await;

    // Scale up: the name gains a second replica, which gets calls.
    let r2 = PresenceReplica::start_with_ttl(&nats.url(), TTL).await;
    hosts.point_at(&[&r1, &r2]);
    eventually_ok("two replicas in use", PATIENCE, async || {
        let n = sample(&metrics(&gw).await, replicas);
        if n == 2.0 {
            Ok(())
        } else {
            Err(n)
        }
    })
    .await;
    let (from1, from2) = (r1.calls(), r2.calls());
    eventually("calls spread over both replicas", PATIENCE, async || {
        r1.calls() >= from1 + 30 && r2.calls() >= from2 + 30
    })
    .await;

    // Rescheduled: the first replica dies while the name still lists it (DNS
    // lags), then the name moves to its replacement at a new address.
    let r3 = PresenceReplica::start_with_ttl(&nats.url(), TTL).await;
    r1.kill();
    load.goes_on(20, "load with a dead replica listed").await;
    hosts.point_at(&[&r2, &r3]);
    let removed = "switchboard_presence_client_replica_changes_total{change=\"removed\"}";
    eventually("the dead replica dropped", PATIENCE, async || {
        sample(&metrics(&gw).await, removed) >= 1.0
    })
    .await;
    let (from2, from3) = (r2.calls(), r3.calls());
    eventually(
        "calls spread over the survivor and the replacement",
        PATIENCE,
        async || r2.calls() >= from2 + 30 && r3.calls() >= from3 + 30,
    )
    .await;
    load.goes_on(20, "load after the replacement").await;

    let (rounds, errors) = load.stop().await;
    assert!(
        errors.is_empty(),
        "{} client errors: {errors:#?}",
        errors.len()
    );
    // Every member that went left; only the residents remain.
    eventually_ok("only the residents present", PATIENCE, async || {
        let (_, stats) = gw
            .api()
            .call("presence_stats", json!({"channel": CHANNEL}))
            .await;
        let want = json!({"num_clients": RESIDENTS, "num_users": RESIDENTS});
        if stats["result"] == want {
            Ok(())
        } else {
            Err(stats)
        }
    })
    .await;
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, replicas), 2.0);
    eprintln!(
        "rounds {rounds}; calls r1 {} r2 {} r3 {}; retries {}; lookups ok {} failed {}; \
         replicas added {} removed {}",
        r1.calls(),
        r2.calls(),
        r3.calls(),
        sample(&m, "switchboard_presence_client_retries_total"),
        sample(
            &m,
            "switchboard_presence_client_lookups_total{result=\"ok\"}"
        ),
        sample(
            &m,
            "switchboard_presence_client_lookups_total{result=\"failed\"}"
        ),
        sample(
            &m,
            "switchboard_presence_client_replica_changes_total{change=\"added\"}"
        ),
        sample(&m, removed),
    );
}
