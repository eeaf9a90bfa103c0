//! `webhooks`: Pusher webhooks while presence members churn.
//!
//! The tool is both sides: `--members` Pusher connections, each a member of one of
//! `--channels` presence channels under a user id never used before, and the
//! app's webhook receiver on `--listen`. Each member stays a random time (uniform
//! in 0..2×`--lifetime`), leaves, and its slot joins again as a new user, for
//! `--duration`; then everyone leaves. Every join is a new user, so every join
//! must come back as one `member_added` and every leave as one `member_removed`.
//! The receiver measures each event from the moment the gateway decided it (the
//! webhook's `time_ms`) to its POST, and counts events by name and repeated ids.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::cli::WebhooksArgs;
use crate::client::pusher::PusherClient;
use crate::client::ClientOptions;
use crate::hist::{self, Percentiles};
use crate::limits;

/// Pusher's (and the gateway's) wait before a `member_removed` is sent.
const REMOVAL_DELAY_MS: u64 = 3_000;

#[derive(Debug, Default, Serialize)]
pub struct WebhooksSummary {
    pub members: usize,
    pub channels: u32,
    pub lifetime_s: f64,
    pub duration_s: f64,
    pub joins: u64,
    pub join_failures: u64,
    pub failures_by_reason: HashMap<String, u64>,
    pub leaves: u64,
    pub received: HashMap<String, u64>,
    pub duplicates: u64,
    /// Event to POST of `member_added`.
    pub added_latency: Percentiles,
    /// Event to POST of `member_removed`, less the 3 s it waits by design.
    pub removed_latency: Percentiles,
    pub posts: u64,
}

impl WebhooksSummary {
    pub fn table(&self) -> String {
        let p = |p: &Percentiles| {
            format!(
                "p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  (n = {})",
                p.p50_ms, p.p99_ms, p.max_ms, p.count
            )
        };
        let got = |name: &str| self.received.get(name).copied().unwrap_or(0);
        let mut o = String::new();
        o += &format!(
            "members              {} held in {} presence channels, each staying 0..{:.0} s, for {:.0} s\n",
            self.members,
            self.channels,
            2.0 * self.lifetime_s,
            self.duration_s
        );
        o += &format!(
            "joins / leaves       {} / {} (join failures {})\n",
            self.joins, self.leaves, self.join_failures
        );
        let mut reasons: Vec<_> = self.failures_by_reason.iter().collect();
        reasons.sort();
        for (reason, n) in reasons {
            o += &format!("  failed: {reason}  {n}\n");
        }
        o += &format!(
            "member_added         {} received (expected {})\n",
            got("member_added"),
            self.joins
        );
        o += &format!(
            "member_removed       {} received (expected {})\n",
            got("member_removed"),
            self.leaves
        );
        o += &format!(
            "occupied / vacated   {} / {}\n",
            got("channel_occupied"),
            got("channel_vacated")
        );
        o += &format!(
            "POSTs                {} (repeated ids {})\n",
            self.posts, self.duplicates
        );
        o += &format!("added: event → POST {}\n", p(&self.added_latency));
        o += &format!(
            "removed: event → POST {} (after the 3 s delay)\n",
            p(&self.removed_latency)
        );
        o
    }

    /// What makes the run wrong: events lost or sent twice.
    pub fn problems(&self) -> Vec<String> {
        let got = |name: &str| self.received.get(name).copied().unwrap_or(0);
        let mut problems = Vec::new();
        if self.joins == 0 || self.join_failures > 0 {
            problems.push(format!(
                "{} joins, {} failed",
                self.joins, self.join_failures
            ));
        }
        if got("member_added") != self.joins {
            problems.push(format!(
                "{} member_added for {} joins",
                got("member_added"),
                self.joins
            ));
        }
        if got("member_removed") != self.leaves {
            problems.push(format!(
                "{} member_removed for {} leaves",
                got("member_removed"),
                self.leaves
            ));
        }
        if self.duplicates > 0 {
            problems.push(format!("{} webhooks repeated", self.duplicates));
        }
        problems
    }
}

#[derive(Deserialize)]
struct Posted {
    time_ms: u64,
    events: Vec<PostedEvent>,
}

#[derive(Deserialize)]
struct PostedEvent {
    name: String,
}

#[derive(Default)]
struct Received {
    counts: HashMap<String, u64>,
    ids: HashSet<String>,
    duplicates: u64,
    posts: u64,
    added: Option<Histogram<u64>>,
    removed: Option<Histogram<u64>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Received {
    fn record(&mut self, id: Option<String>, body: &[u8]) {
        let at = now_ms();
        self.posts += 1;
        if let Some(id) = id {
            if !self.ids.insert(id) {
                self.duplicates += 1;
                return;
            }
        }
        let Ok(posted) = serde_json::from_slice::<Posted>(body) else {
            *self.counts.entry("unreadable".into()).or_default() += 1;
            return;
        };
        let waited_ms = at.saturating_sub(posted.time_ms);
        for event in posted.events {
            let h = match event.name.as_str() {
                "member_added" => Some((&mut self.added, 0)),
                "member_removed" => Some((&mut self.removed, REMOVAL_DELAY_MS)),
                _ => None,
            };
            if let Some((h, delay)) = h {
                let h = h.get_or_insert_with(hist::new_us);
                hist::record(h, waited_ms.saturating_sub(delay) * 1000);
            }
            *self.counts.entry(event.name).or_default() += 1;
        }
    }
}

/// Serves the webhook receiver on `listener` until the task is aborted.
async fn receive(listener: TcpListener, received: Arc<Mutex<Received>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let received = received.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let received = received.clone();
                async move {
                    let id = req
                        .headers()
                        .get("x-switchboard-webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    received
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(id, &body);
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, service)
                .await;
        });
    }
}

#[derive(Default)]
struct Counts {
    failures: Mutex<HashMap<String, u64>>,
    joins: AtomicU64,
    join_failures: AtomicU64,
    leaves: AtomicU64,
    next_user: AtomicU64,
}

/// One member slot: join as a new user, stay, leave; again until `until`.
async fn slot(index: usize, args: Arc<WebhooksArgs>, counts: Arc<Counts>, until: Instant) {
    let target = &args.url;
    let mut visit = 0u64;
    while Instant::now() < until {
        visit += 1;
        let user = counts.next_user.fetch_add(1, Ordering::Relaxed);
        let opts = ClientOptions {
            source: limits::source_for(index as u64 + visit, args.sources, target.addr.ip()),
            token: None,
            timeout: Duration::from_secs(10),
        };
        let channel = format!("presence-wh-{}", fastrand::u32(0..args.channels.max(1)));
        let joining = async {
            let mut c = PusherClient::open(target, &args.pusher.app_key, &opts).await?;
            let user = format!("u{user}");
            c.subscribe_presence(
                &channel,
                &user,
                &args.pusher.app_key,
                &args.pusher.app_secret,
            )
            .await?;
            Ok::<_, crate::client::ClientError>(c)
        };
        // The subscription too: a gateway that never answers does not hold the slot.
        let joined = crate::client::within(opts.timeout, "subscribe", joining).await;
        let mut client = match joined {
            Ok(client) => client,
            Err(e) => {
                counts.join_failures.fetch_add(1, Ordering::Relaxed);
                *counts
                    .failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(e.reason())
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        counts.joins.fetch_add(1, Ordering::Relaxed);
        let stay = Duration::from_secs_f64(args.lifetime * 2.0 * fastrand::f64());
        let leave_at = (Instant::now() + stay).min(until);
        // Read (and answer pings) until it is time to go.
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(leave_at.into()) => break,
                r = client.next_publications(|_, _| {}) => if r.is_err() { break },
            }
        }
        client.close().await;
        counts.leaves.fetch_add(1, Ordering::Relaxed);
    }
}

pub async fn run(args: &WebhooksArgs) -> anyhow::Result<WebhooksSummary> {
    limits::raise_nofile();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("webhook receiver on {}", args.listen))?;
    let received = Arc::new(Mutex::new(Received::default()));
    let receiver = tokio::spawn(receive(listener, received.clone()));
    let args = Arc::new(args.clone());
    let counts = Arc::new(Counts::default());
    let until = Instant::now() + Duration::from_secs_f64(args.duration);
    let mut slots = tokio::task::JoinSet::new();
    let ramp = Duration::from_secs_f64(1.0 / args.join_rate.max(1.0));
    for i in 0..args.members {
        slots.spawn(slot(i, args.clone(), counts.clone(), until));
        tokio::time::sleep(ramp).await;
    }
    while slots.join_next().await.is_some() {}
    // Every leave's member_removed comes at least 3 s later; wait for the rest, bounded.
    let joins = counts.joins.load(Ordering::Relaxed);
    let leaves = counts.leaves.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs_f64(args.settle);
    loop {
        let done = {
            let r = received.lock().unwrap_or_else(|e| e.into_inner());
            let got = |n: &str| r.counts.get(n).copied().unwrap_or(0);
            got("member_added") >= joins && got("member_removed") >= leaves
        };
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    receiver.abort();
    let failures_by_reason = counts
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let r = received.lock().unwrap_or_else(|e| e.into_inner());
    let of = |h: &Option<Histogram<u64>>| h.as_ref().map(Percentiles::of).unwrap_or_default();
    Ok(WebhooksSummary {
        members: args.members,
        channels: args.channels,
        lifetime_s: args.lifetime,
        duration_s: args.duration,
        joins,
        join_failures: counts.join_failures.load(Ordering::Relaxed),
        failures_by_reason,
        leaves,
        received: r.counts.clone(),
        duplicates: r.duplicates,
        added_latency: of(&r.added),
        removed_latency: of(&r.removed),
        posts: r.posts,
    })
}
