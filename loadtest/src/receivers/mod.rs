//! A share of a run's client connections ("a part"): opens them at a target rate,
//! subscribes each to its channel, reads and accounts every publication, answers
//! pings, reconnects and recovers when asked to, until cancelled.
//!
//! A part runs in this process or in a worker process (see `workers`); either way
//! it reports live counters through [`Live`] and ends with a [`PartResult`] that
//! merges exactly with the others'.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::accounting::{Arrival, SeqTracker, Tally};
use crate::client::{ClientError, ClientOptions, Connection, Protocol};
use crate::hist::{self, Compact};
use crate::limits;
use crate::payload::{self, now_us};
use crate::target::Target;

mod recovery;

/// Channel names: `prefix0`, `prefix1`, … ; connection `i` subscribes to `i % count`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Channels {
    pub prefix: String,
    pub count: u32,
}

impl Channels {
    pub fn name(&self, index: u32) -> String {
        format!("{}{}", self.prefix, index)
    }
}

/// What a part does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartSpec {
    pub targets: Vec<Target>,
    pub protocol: Protocol,
    pub token: Option<String>,
    /// Global index of this part's first connection, and how many it opens.
    pub first: u64,
    pub count: u64,
    /// Connections opened per second by this part.
    pub connect_rate: f64,
    /// Connects in flight at once.
    pub concurrency: usize,
    /// Loopback source addresses to spread over (1: let the kernel choose).
    pub sources: u8,
    /// Subscribe each connection to one channel; none: connect only.
    pub channels: Option<Channels>,
    /// Reconnect (to the next target) and recover after a disconnect (Centrifugo).
    pub reconnect: bool,
    pub timeout_ms: u64,
    /// Wall-clock time zero of the run (µs): the per-second timeline counts from it.
    pub epoch_us: u64,
    /// Wall-clock time (µs) by which the part stops on its own, whatever happens.
    pub deadline_us: u64,
}

/// Counters a part updates as it runs.
#[derive(Debug, Default)]
pub struct Live {
    pub attempted: AtomicU64,
    /// Connections set up (or failed to): the part is ready when this reaches its count.
    pub settled: AtomicU64,
    pub open: AtomicU64,
    pub failed: AtomicU64,
    pub delivered: AtomicU64,
    pub disconnects: AtomicU64,
    pub reconnected: AtomicU64,
}

/// A snapshot of [`Live`], as workers send it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Progress {
    pub attempted: u64,
    pub settled: u64,
    pub open: u64,
    pub failed: u64,
    pub delivered: u64,
    pub disconnects: u64,
    pub reconnected: u64,
}

impl Live {
    pub fn snapshot(&self) -> Progress {
        Progress {
            attempted: self.attempted.load(Relaxed),
            settled: self.settled.load(Relaxed),
            open: self.open.load(Relaxed),
            failed: self.failed.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            reconnected: self.reconnected.load(Relaxed),
        }
    }

    pub fn store(&self, p: Progress) {
        self.attempted.store(p.attempted, Relaxed);
        self.settled.store(p.settled, Relaxed);
        self.open.store(p.open, Relaxed);
        self.failed.store(p.failed, Relaxed);
        self.delivered.store(p.delivered, Relaxed);
        self.disconnects.store(p.disconnects, Relaxed);
        self.reconnected.store(p.reconnected, Relaxed);
    }
}

impl Progress {
    pub fn plus(mut self, o: Progress) -> Progress {
        self.attempted += o.attempted;
        self.settled += o.settled;
        self.open += o.open;
        self.failed += o.failed;
        self.delivered += o.delivered;
        self.disconnects += o.disconnects;
        self.reconnected += o.reconnected;
        self
    }
}

/// Everything a part measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartResult {
    pub attempted: u64,
    pub connected: u64,
    pub failures: BTreeMap<String, u64>,
    pub connect_latency: Compact,
    pub latency: Compact,
    /// Delivery latency per second of the run: (second, histogram).
    pub per_second: Vec<(u32, Compact)>,
    pub tally: Tally,
    /// Disconnects the server caused, by reason.
    pub disconnects: BTreeMap<String, u64>,
    pub reconnect_time: Compact,
    pub recovered: u64,
    pub not_recovered: u64,
    /// Publications that came in a recovery reply instead of live.
    pub recovered_publications: u64,
    pub first_attempt_us: u64,
    pub last_connected_us: u64,
}

/// State shared by a part's connection tasks; one lock, taken once per frame.
struct Shared {
    spec: PartSpec,
    live: Arc<Live>,
    stats: Mutex<Stats>,
}

struct Stats {
    result: PartResult,
    connect_latency: Histogram<u64>,
    latency: Histogram<u64>,
    per_second: Vec<Option<Histogram<u64>>>,
    reconnect_time: Histogram<u64>,
}

/// Bound on the per-second timeline (one day of seconds).
const MAX_SECONDS: usize = 86_400;

impl Stats {
    fn record_latency(&mut self, at_us: u64, epoch_us: u64, latency_us: u64) {
        hist::record(&mut self.latency, latency_us);
        let second = (at_us.saturating_sub(epoch_us) / 1_000_000) as usize;
        if second < MAX_SECONDS {
            if self.per_second.len() <= second {
                self.per_second.resize_with(second + 1, || None);
            }
            hist::record(
                self.per_second[second].get_or_insert_with(hist::new_coarse_us),
                latency_us,
            );
        }
    }
}

fn count(map: &mut BTreeMap<String, u64>, key: String) {
    *map.entry(key).or_default() += 1;
}

/// Runs a part until `cancel` (or its deadline); returns what it measured.
pub async fn run(spec: PartSpec, live: Arc<Live>, cancel: CancellationToken) -> PartResult {
    let deadline = Duration::from_micros(spec.deadline_us.saturating_sub(now_us()));
    let stop = cancel.child_token();
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            stop.cancel();
        })
    };
    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats {
            result: PartResult {
                tally: Tally::with_channels(spec.channels.as_ref().map_or(0, |c| c.count as usize)),
                ..PartResult::default()
            },
            connect_latency: hist::new_us(),
            latency: hist::new_us(),
            per_second: Vec::new(),
            reconnect_time: hist::new_us(),
        }),
        spec,
        live,
    });
    let mut tasks = tokio::task::JoinSet::new();
    let gate = Arc::new(Semaphore::new(shared.spec.concurrency.max(1)));
    let started = Instant::now();
    let rate = shared.spec.connect_rate.max(0.001);
    for n in 0..shared.spec.count {
        let at = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(at.into()) => {}
        }
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = gate.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tasks.spawn(connection(shared.spec.first + n, shared, stop, permit));
        // Reap finished tasks as we go so the set does not hold them all.
        while tasks.try_join_next().is_some() {}
    }
    stop.cancelled().await;
    while tasks.join_next().await.is_some() {}
    stopper.abort();
    let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    let mut result = std::mem::take(&mut stats.result);
    result.connect_latency = Compact::of(&stats.connect_latency);
    result.latency = Compact::of(&stats.latency);
    result.reconnect_time = Compact::of(&stats.reconnect_time);
    result.per_second = stats
        .per_second
        .iter()
        .enumerate()
        .filter_map(|(s, h)| h.as_ref().map(|h| (s as u32, Compact::of(h))))
        .collect();
    result
}

fn options(spec: &PartSpec, index: u64, target: &Target) -> ClientOptions {
    ClientOptions {
        source: limits::source_for(index, spec.sources, target.addr.ip()),
        token: spec.token.clone(),
        timeout: Duration::from_millis(spec.timeout_ms),
    }
}

/// What one subscribed connection knows of its channel. Its stream position
/// (Centrifugo's epoch and offset; none for Pusher) is for recovery only: order
/// is judged by the payloads' sequence numbers in either protocol.
struct Subscription {
    channel: u32,
    name: String,
    tracker: SeqTracker,
    epoch: String,
    offset: u64,
}

/// One connection: set up, read until stopped, reconnect if asked, account at the end.
async fn connection(
    index: u64,
    shared: Arc<Shared>,
    stop: CancellationToken,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let spec = &shared.spec;
    let live = &shared.live;
    let target = &spec.targets[(index % spec.targets.len() as u64) as usize];
    live.attempted.fetch_add(1, Relaxed);
    let t0 = Instant::now();
    let t0_us = now_us();
    // Boxed, like the reconnect below: set-up futures are ten times the size of the
    // rest of the task and live only briefly; inline, every connection would keep
    // their space (and spawning would copy it) for the whole run.
    let setup = Box::pin(async {
        let opts = options(spec, index, target);
        let mut client = Connection::open(target, &spec.protocol, &opts).await?;
        let sub = match &spec.channels {
            Some(ch) => {
                let channel = (index % u64::from(ch.count.max(1))) as u32;
                let name = ch.name(channel);
                let position = client.subscribe(&name).await?;
                Some(Subscription {
                    channel,
                    name,
                    tracker: SeqTracker::new(),
                    epoch: position.epoch,
                    offset: position.offset,
                })
            }
            None => None,
        };
        Ok::<_, ClientError>((client, sub))
    });
    let setup = tokio::select! {
        _ = stop.cancelled() => { live.settled.fetch_add(1, Relaxed); return; }
        r = setup => r,
    };
    {
        let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        let r = &mut stats.result;
        r.attempted += 1;
        if r.first_attempt_us == 0 || t0_us < r.first_attempt_us {
            r.first_attempt_us = t0_us;
        }
        match &setup {
            Ok(_) => {
                r.connected += 1;
                r.last_connected_us = r.last_connected_us.max(now_us());
                hist::record(&mut stats.connect_latency, t0.elapsed().as_micros() as u64);
            }
            Err(e) => count(&mut r.failures, e.reason()),
        }
    }
    drop(permit);
    live.settled.fetch_add(1, Relaxed);
    let (mut client, mut sub) = match setup {
        Ok(ok) => ok,
        Err(_) => {
            live.failed.fetch_add(1, Relaxed);
            return;
        }
    };
    live.open.fetch_add(1, Relaxed);
    let mut attempt = 0u64;
    loop {
        let ended = tokio::select! {
            _ = stop.cancelled() => None,
            e = read_loop(&mut client, &mut sub, &shared) => Some(e),
        };
        let Some(error) = ended else { break };
        live.open.fetch_sub(1, Relaxed);
        live.disconnects.fetch_add(1, Relaxed);
        {
            let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
            count(&mut stats.result.disconnects, error.reason());
        }
        if !spec.reconnect {
            break;
        }
        let lost_at = Instant::now();
        match Box::pin(recovery::reconnect(
            index,
            &mut attempt,
            &mut sub,
            &shared,
            &stop,
        ))
        .await
        {
            Some(c) => {
                client = c;
                live.open.fetch_add(1, Relaxed);
                live.reconnected.fetch_add(1, Relaxed);
                let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
                hist::record(
                    &mut stats.reconnect_time,
                    lost_at.elapsed().as_micros() as u64,
                );
            }
            None => {
                // Stopped (or deadline) while reconnecting.
                live.open.fetch_add(1, Relaxed);
                break;
            }
        }
    }
    live.open.fetch_sub(1, Relaxed);
    if let Some(s) = sub {
        if std::env::var_os("SWITCHBOARD_LOADTEST_TRACE").is_some() && !s.tracker.gaps().is_empty()
        {
            eprintln!(
                "trace: connection {index} channel {} max seq {} missing {:?} (offset {}, epoch {})",
                s.name,
                s.tracker.max(),
                s.tracker.gaps(),
                s.offset,
                s.epoch
            );
        }
        let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats
            .result
            .tally
            .add_receiver(s.channel as usize, &s.tracker);
    }
}

/// Reads and accounts pushes until the connection fails.
async fn read_loop(
    client: &mut Connection,
    sub: &mut Option<Subscription>,
    shared: &Shared,
) -> ClientError {
    let mut latencies = Vec::new();
    loop {
        // Taken once per frame, when it has been read and decoded.
        let mut now = None;
        let (mut dups, mut late, mut foreign) = (0, 0, 0);
        let read = client.next_publications(|offset, data| {
            let Some(sub) = sub.as_mut() else { return };
            let now = *now.get_or_insert_with(now_us);
            match account(sub, offset, data) {
                Some((Arrival::InOrder, sent)) => latencies.push(now.saturating_sub(sent)),
                Some((Arrival::Late, sent)) => {
                    late += 1;
                    latencies.push(now.saturating_sub(sent));
                }
                Some((Arrival::Duplicate, _)) => dups += 1,
                None => foreign += 1,
            }
        });
        if let Err(e) = read.await {
            return e;
        }
        let Some(now) = now else { continue };
        if latencies.is_empty() && dups + late + foreign == 0 {
            continue;
        }
        shared
            .live
            .delivered
            .fetch_add(latencies.len() as u64, Relaxed);
        let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        for l in latencies.drain(..) {
            stats.record_latency(now, shared.spec.epoch_us, l);
        }
        let t = &mut stats.result.tally;
        t.duplicates += dups;
        t.out_of_order += late;
        t.foreign += foreign;
    }
}

/// Accounts one publication; `None` if it is not one of this run's for this channel.
fn account(sub: &mut Subscription, offset: u64, data: &[u8]) -> Option<(Arrival, u64)> {
    if offset > sub.offset {
        sub.offset = offset;
    }
    let stamp = payload::decode(data)?;
    if stamp.channel != sub.channel {
        return None;
    }
    Some((sub.tracker.observe(stamp.seq), stamp.sent_us))
}

/// Loopback source addresses for reports: 127.0.0.1 … 127.0.0.N.
pub fn source_range(sources: u8) -> String {
    if sources <= 1 {
        "kernel's choice".into()
    } else {
        format!(
            "{} … {}",
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(127, 0, 0, sources)
        )
    }
}
