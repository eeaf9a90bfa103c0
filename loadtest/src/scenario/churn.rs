//! Churn: connections arriving at a rate while a fan-out runs, each subscribing to
//! a random channel, staying a random time (uniform in 0..2×mean) and leaving.
//!
//! A churning client joins mid-stream, so it expects nothing before the first
//! publication it sees; after that, gaps, duplicates and reordering are counted as
//! for any receiver.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::accounting::{Arrival, SeqTracker};
use crate::client::{ClientError, ClientOptions, Connection, Protocol};
use crate::hist::{self, Percentiles};
use crate::limits;
use crate::payload;
use crate::receivers::Channels;
use crate::report::Churn;
use crate::target::Target;

#[derive(Debug, Clone)]
pub struct ChurnSpec {
    pub targets: Vec<Target>,
    pub protocol: Protocol,
    pub token: Option<String>,
    pub channels: Channels,
    pub rate: f64,
    pub lifetime: Duration,
    pub max_open: usize,
    pub timeout: Duration,
    pub sources: u8,
}

struct Stats {
    churn: Churn,
    connect_latency: hdrhistogram::Histogram<u64>,
}

/// Runs arrivals until `until`; every churning client has left when it returns.
pub async fn run(spec: ChurnSpec, until: Instant) -> Churn {
    let stats = Arc::new(Mutex::new(Stats {
        churn: Churn::default(),
        connect_latency: hist::new_us(),
    }));
    let gate = Arc::new(Semaphore::new(spec.max_open.max(1)));
    let spec = Arc::new(spec);
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let rate = spec.rate.max(0.001);
    for n in 0u64.. {
        let at = start + Duration::from_secs_f64(n as f64 / rate);
        if at >= until {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let Ok(permit) = gate.clone().try_acquire_owned() else {
            continue; // at the cap: this arrival does not happen
        };
        let (spec, stats) = (spec.clone(), stats.clone());
        tasks.spawn(async move {
            visit(n, &spec, &stats, until).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let s = stats.lock().unwrap_or_else(|e| e.into_inner());
    let mut churn = s.churn.clone();
    churn.connect_latency = Percentiles::of(&s.connect_latency);
    churn
}

async fn visit(n: u64, spec: &ChurnSpec, stats: &Mutex<Stats>, until: Instant) {
    let target = &spec.targets[(n % spec.targets.len() as u64) as usize];
    let channel = fastrand::u32(0..spec.channels.count.max(1));
    let opts = ClientOptions {
        // Offset from the fan-out's connections so the churners use other ports.
        source: limits::source_for(n + 1, spec.sources, target.addr.ip()),
        token: spec.token.clone(),
        timeout: spec.timeout,
    };
    let t0 = Instant::now();
    let setup = async {
        let mut c = Connection::open(target, &spec.protocol, &opts).await?;
        c.subscribe(&spec.channels.name(channel)).await?;
        Ok::<_, ClientError>(c)
    };
    let result = setup.await;
    {
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        s.churn.arrivals += 1;
        match &result {
            Ok(_) => {
                s.churn.connected += 1;
                hist::record(&mut s.connect_latency, t0.elapsed().as_micros() as u64);
            }
            Err(e) => *s.churn.failures.entry(e.reason()).or_default() += 1,
        }
    }
    let Ok(mut client) = result else { return };
    let stay = spec.lifetime.mul_f64(2.0 * fastrand::f64());
    let leave_at = (Instant::now() + stay).min(until);
    let mut tracker: Option<SeqTracker> = None;
    let (mut delivered, mut dups, mut late, mut closed) = (0, 0, 0, 0);
    loop {
        let mut stamps = Vec::new();
        let read = tokio::select! {
            _ = tokio::time::sleep_until(leave_at.into()) => break,
            r = client.next_publications(|_, data| stamps.extend(payload::decode(data))) => r,
        };
        if read.is_err() {
            closed = 1;
            break;
        }
        for stamp in stamps {
            if stamp.channel != channel {
                continue;
            }
            let t = tracker.get_or_insert_with(|| SeqTracker::starting_at(stamp.seq));
            match t.observe(stamp.seq) {
                Arrival::InOrder => delivered += 1,
                Arrival::Late => {
                    delivered += 1;
                    late += 1
                }
                Arrival::Duplicate => dups += 1,
            }
        }
    }
    if closed == 0 {
        client.close().await;
    }
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    let c = &mut s.churn;
    c.delivered += delivered;
    c.duplicates += dups;
    c.out_of_order += late;
    c.gaps += tracker.map_or(0, |t| t.missing_below_max());
    c.disconnected_by_server += closed;
}
