//! Publishers: each owns a set of channels (channel `c` belongs to publisher
//! `c % P`), numbers each channel's publications 1, 2, 3 … and publishes them round
//! robin over its channels at its rate, through the Centrifugo HTTP API, as a
//! Centrifugo client, or through the Pusher HTTP API (the payload then travels as
//! the event's `data` string).
//!
//! A publish that fails is retried with the same sequence, so every sequence a
//! receiver can see was published; `published[c]` is the last sequence of channel
//! `c` the server accepted. A publish that timed out may still have happened:
//! those are counted as *uncertain* and explain any duplicate that follows. Through
//! the HTTP API every publication carries an idempotency key (this run, its
//! channel and sequence), so there a retry of a publish that did happen is not
//! delivered twice; the Pusher HTTP API has no such key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::api::pusher::{PusherApi, PusherApp};
use crate::api::ApiClient;
use crate::client::{centrifugo, Client, ClientError, ClientOptions};
use crate::hist::{self, Compact};
use crate::payload::{self, now_us, Stamp};
use crate::receivers::Channels;
use crate::target::Target;

/// How publications reach the server.
#[derive(Debug, Clone)]
pub enum Via {
    /// `POST /api/publish` to these addresses (the next one after a failure).
    Api { addrs: Vec<SocketAddr>, key: String },
    /// A Centrifugo client connection per publisher sending `publish` commands.
    Client {
        targets: Vec<Target>,
        protobuf: bool,
        token: Option<String>,
    },
    /// Signed `POST /apps/{id}/events` to these addresses (the next one after a
    /// failure).
    Pusher {
        addrs: Vec<SocketAddr>,
        app: PusherApp,
    },
}

#[derive(Debug, Clone)]
pub struct PublishSpec {
    pub via: Via,
    pub channels: Channels,
    pub publishers: u32,
    /// Publications per second of each publisher.
    pub rate: f64,
    pub payload_bytes: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishResult {
    /// Publications the server accepted, per channel.
    pub published: Vec<u64>,
    pub failures: BTreeMap<String, u64>,
    /// Publishes that timed out or lost their connection: may or may not have happened.
    pub uncertain: u64,
    /// Time from sending a publish to its acknowledgement.
    pub ack_latency: Compact,
    pub elapsed_s: f64,
}

/// Publishes until `until`; `published` counts accepted publications as they happen.
pub async fn run(spec: PublishSpec, until: Instant, published: Arc<AtomicU64>) -> PublishResult {
    let started = Instant::now();
    let publishers = spec.publishers.clamp(1, spec.channels.count.max(1));
    let spec = Arc::new(spec);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let owned: Vec<u32> = (0..spec.channels.count)
            .filter(|c| c % publishers == p)
            .collect();
        tasks.push(tokio::spawn(publisher(
            p,
            owned,
            spec.clone(),
            until,
            published.clone(),
        )));
    }
    let mut total = PublishResult {
        published: vec![0; spec.channels.count as usize],
        ..PublishResult::default()
    };
    let mut ack = hist::new_us();
    for t in tasks {
        let Ok((seqs, failures, uncertain, h)) = t.await else {
            continue;
        };
        for (c, n) in seqs {
            total.published[c as usize] = n;
        }
        for (k, v) in failures {
            *total.failures.entry(k).or_default() += v;
        }
        total.uncertain += uncertain;
        let _ = ack.add(&h);
    }
    total.ack_latency = Compact::of(&ack);
    total.elapsed_s = started.elapsed().as_secs_f64();
    total
}

type PublisherOutcome = (
    Vec<(u32, u64)>,
    BTreeMap<String, u64>,
    u64,
    hdrhistogram::Histogram<u64>,
);

enum Sink {
    Api(Vec<ApiClient>, usize),
    Client(Option<Box<Client>>, usize),
    Pusher(Vec<PusherApi>, usize),
}

async fn publisher(
    index: u32,
    owned: Vec<u32>,
    spec: Arc<PublishSpec>,
    until: Instant,
    published: Arc<AtomicU64>,
) -> PublisherOutcome {
    let mut seqs: Vec<u64> = vec![0; owned.len()];
    let mut failures = BTreeMap::new();
    let mut uncertain = 0;
    let mut ack = hist::new_us();
    let mut sink = match &spec.via {
        Via::Api { addrs, key } => Sink::Api(
            addrs
                .iter()
                .map(|a| ApiClient::new(*a, key, spec.timeout))
                .collect(),
            index as usize,
        ),
        Via::Client { .. } => Sink::Client(None, index as usize),
        Via::Pusher { addrs, app } => Sink::Pusher(
            addrs
                .iter()
                .map(|a| PusherApi::new(*a, app, spec.timeout))
                .collect(),
            index as usize,
        ),
    };
    let names: Vec<String> = owned.iter().map(|c| spec.channels.name(*c)).collect();
    // Unique to this run, so that a rerun within the server's deduplication
    // window is not taken for retries.
    let run = fastrand::u64(..);
    let start = Instant::now();
    let rate = spec.rate.max(0.001);
    let mut k: u64 = 0;
    let mut backoff = Duration::from_millis(20);
    while !owned.is_empty() {
        let at = start + Duration::from_secs_f64(k as f64 / rate);
        // Bounded by the clock, not only the schedule: a publisher that falls behind
        // stops at `until` instead of catching up past it.
        if at >= until || Instant::now() >= until {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let slot = (k % owned.len() as u64) as usize;
        let seq = seqs[slot] + 1;
        let data = payload::encode(
            Stamp {
                channel: owned[slot],
                seq,
                sent_us: now_us(),
            },
            spec.payload_bytes,
        );
        let sent = Instant::now();
        let key = format!("lt-{run:016x}-{}-{seq}", owned[slot]);
        match send(&mut sink, &spec, &names[slot], data, &key).await {
            Ok(()) => {
                hist::record(&mut ack, sent.elapsed().as_micros() as u64);
                seqs[slot] = seq;
                published.fetch_add(1, Relaxed);
                backoff = Duration::from_millis(20);
                k += 1;
            }
            Err(e) => {
                if matches!(e, ClientError::Timeout(_) | ClientError::Ws(_)) {
                    uncertain += 1;
                }
                *failures.entry(e.reason()).or_default() += 1;
                // Retry the same sequence after a pause, on the next server.
                if Instant::now() + backoff >= until {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    (
        owned.into_iter().zip(seqs).collect(),
        failures,
        uncertain,
        ack,
    )
}

async fn send(
    sink: &mut Sink,
    spec: &PublishSpec,
    channel: &str,
    data: Vec<u8>,
    idempotency_key: &str,
) -> Result<(), ClientError> {
    match sink {
        Sink::Api(clients, next) => {
            let n = clients.len();
            let client = &mut clients[*next % n];
            let r = client.publish(channel, &data, idempotency_key).await;
            if r.is_err() {
                *next += 1;
            }
            r
        }
        Sink::Pusher(clients, next) => {
            let n = clients.len();
            let r = clients[*next % n].trigger(channel, &data).await;
            if r.is_err() {
                *next += 1;
            }
            r
        }
        Sink::Client(conn, next) => {
            let Via::Client {
                targets,
                protobuf,
                token,
            } = &spec.via
            else {
                return Err(ClientError::Timeout("publisher misconfigured"));
            };
            if conn.is_none() {
                let target = &targets[*next % targets.len()];
                let encoding = centrifugo::encoding(*protobuf);
                let opts = ClientOptions {
                    source: None,
                    token: token.clone(),
                    timeout: spec.timeout,
                };
                match Client::open(target, encoding, &opts).await {
                    Ok(c) => *conn = Some(Box::new(c)),
                    Err(e) => {
                        *next += 1;
                        return Err(e);
                    }
                }
            }
            let Some(client) = conn.as_mut() else {
                return Err(ClientError::Timeout("publisher connection"));
            };
            let r =
                crate::client::within(spec.timeout, "publish", client.publish(channel, data)).await;
            if let Err(e) = &r {
                if !matches!(e, ClientError::Reply { .. }) {
                    *conn = None;
                    *next += 1;
                }
            }
            r
        }
    }
}
