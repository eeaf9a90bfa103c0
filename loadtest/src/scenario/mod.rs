//! Scenarios and what they share: starting the parts (in this process or in
//! workers), sampling the timeline, the progress bar, merging results, and
//! writing the outputs.
//!
//! - [`connect`]: open, hold, measure connection cost.
//! - [`fanout`]: subscribers and publishers, with churn and failover as options of the
//!   same run (the `churn` and `failover` subcommands).
//! - [`churn`]: connections arriving and leaving during a fan-out.
//! - [`api`]: the latency of server API calls while connections are held.

pub mod api;
pub mod churn;
pub mod connect;
pub mod fanout;
pub mod floor;
pub mod presence;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::accounting::Tally;
use crate::cli::Common;
use crate::hist::{self, Percentiles};
use crate::payload::now_us;
use crate::procstat::{self, Usage};
use crate::receivers::{self, Channels, PartResult, PartSpec, Progress};
use crate::report::{Connections, Point, Summary};
use crate::workers::{self, PartHandle, WorkerError};

/// The connections of a run, in parts.
pub struct Parts {
    handles: Vec<PartHandle>,
    pub total: u64,
}

impl Parts {
    /// Starts `total` connections, split over worker processes when needed.
    pub fn start(
        common: &Common,
        total: u64,
        channels: Option<Channels>,
        reconnect: bool,
        epoch_us: u64,
        deadline_us: u64,
    ) -> Result<Parts, WorkerError> {
        let split = workers::split(total, common.conns_per_process, common.workers);
        let remote = common.workers > 0 || split.len() > 1;
        let n = split.len() as f64;
        let mut handles = Vec::new();
        for (first, count) in split {
            let spec = PartSpec {
                targets: common.urls.clone(),
                protocol: common.client_protocol(),
                token: common.token.clone(),
                first,
                count,
                connect_rate: common.connect_rate / n,
                concurrency: common.concurrency,
                sources: common.sources,
                channels: channels.clone(),
                reconnect,
                timeout_ms: (common.timeout * 1000.0) as u64,
                epoch_us,
                deadline_us,
            };
            handles.push(if remote {
                PartHandle::spawn(&spec)?
            } else {
                PartHandle::local(spec)
            });
        }
        Ok(Parts { handles, total })
    }

    pub fn progress(&self) -> Progress {
        self.handles
            .iter()
            .map(|h| h.live.snapshot())
            .fold(Progress::default(), Progress::plus)
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.handles.iter().filter_map(|h| h.pid).collect()
    }

    pub fn workers(&self) -> usize {
        self.worker_pids().len()
    }

    /// Waits until every connection is set up or failed, at most `limit`.
    pub async fn settle(&self, limit: Duration, meter: &Meter) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let p = self.progress();
            meter.show(&p, None);
            if p.settled >= self.total {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every part and merges their results.
    pub async fn finish(self) -> anyhow::Result<Merged> {
        let mut merged = Merged::default();
        for h in self.handles {
            merged.add(h.finish().await?);
        }
        Ok(merged)
    }
}

/// Every part's results together.
pub struct Merged {
    pub r: PartResult,
    pub connect_latency: Histogram<u64>,
    pub latency: Histogram<u64>,
    pub per_second: BTreeMap<u32, Histogram<u64>>,
    pub reconnect_time: Histogram<u64>,
}

impl Default for Merged {
    fn default() -> Merged {
        Merged {
            r: PartResult::default(),
            connect_latency: hist::new_us(),
            latency: hist::new_us(),
            per_second: BTreeMap::new(),
            reconnect_time: hist::new_us(),
        }
    }
}

impl Merged {
    pub fn add(&mut self, p: PartResult) {
        p.connect_latency.add_to(&mut self.connect_latency);
        p.latency.add_to(&mut self.latency);
        p.reconnect_time.add_to(&mut self.reconnect_time);
        for (s, h) in &p.per_second {
            h.add_to(
                self.per_second
                    .entry(*s)
                    .or_insert_with(hist::new_coarse_us),
            );
        }
        let r = &mut self.r;
        r.attempted += p.attempted;
        r.connected += p.connected;
        for (k, v) in p.failures {
            *r.failures.entry(k).or_default() += v;
        }
        for (k, v) in p.disconnects {
            *r.disconnects.entry(k).or_default() += v;
        }
        r.tally.merge(&p.tally);
        r.recovered += p.recovered;
        r.not_recovered += p.not_recovered;
        r.recovered_publications += p.recovered_publications;
        if p.first_attempt_us > 0
            && (r.first_attempt_us == 0 || p.first_attempt_us < r.first_attempt_us)
        {
            r.first_attempt_us = p.first_attempt_us;
        }
        r.last_connected_us = r.last_connected_us.max(p.last_connected_us);
    }

    pub fn tally(&self) -> &Tally {
        &self.r.tally
    }

    pub fn connections(&self, target: u64, workers: usize, sources: u8) -> Connections {
        let r = &self.r;
        let span_s = r.last_connected_us.saturating_sub(r.first_attempt_us) as f64 / 1e6;
        Connections {
            target,
            attempted: r.attempted,
            connected: r.connected,
            failed: r.attempted - r.connected.min(r.attempted),
            success_rate_percent: if target == 0 {
                100.0
            } else {
                r.connected as f64 * 100.0 / target as f64
            },
            failures: r.failures.clone(),
            connect_latency: Percentiles::of(&self.connect_latency),
            connect_rate_per_s: if span_s > 0.0 {
                r.connected as f64 / span_s
            } else {
                0.0
            },
            workers,
            sources: receivers::source_range(sources),
        }
    }

    /// Fills p50/p99 of each timeline point from the per-second histograms.
    pub fn annotate(&self, timeline: &mut [Point], epoch_us: u64, run_start_us: u64) {
        let offset_s = run_start_us.saturating_sub(epoch_us) as f64 / 1e6;
        for p in timeline {
            let second = (offset_s + p.t_s - 0.5).max(0.0) as u32;
            if let Some(h) = self.per_second.get(&second) {
                p.p50_ms = Some(h.value_at_quantile(0.5) as f64 / 1000.0);
                p.p99_ms = Some(h.value_at_quantile(0.99) as f64 / 1000.0);
            }
        }
    }
}

/// The live progress line on stderr.
pub struct Meter {
    bar: ProgressBar,
    started: Instant,
}

impl Meter {
    pub fn new(quiet: bool) -> Meter {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        };
        Meter {
            bar,
            started: Instant::now(),
        }
    }

    /// Shows counts, and rates when a previous sample is given.
    pub fn show(&self, p: &Progress, rates: Option<(f64, f64)>) {
        let mut msg = format!(
            "open {} settled {} failed {} | delivered {}",
            p.open, p.settled, p.failed, p.delivered
        );
        if let Some((delivered, published)) = rates {
            msg.push_str(&format!(" ({delivered:.0}/s) | published {published:.0}/s"));
        }
        if p.disconnects > 0 {
            msg.push_str(&format!(
                " | disconnects {} reconnected {}",
                p.disconnects, p.reconnected
            ));
        }
        self.bar.set_message(msg);
        self.bar.tick();
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn done(&self) {
        self.bar.finish_and_clear();
    }
}

/// Samples once a second while a phase runs: the timeline and the progress bar.
pub struct Sampler {
    pub points: Vec<Point>,
    start: Instant,
    last: Option<(Instant, u64, u64, Usage)>,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler {
            points: Vec::new(),
            start: Instant::now(),
            last: None,
        }
    }

    pub fn start_us(&self) -> u64 {
        now_us().saturating_sub(self.start.elapsed().as_micros() as u64)
    }

    /// Samples every second until `until`, or until `done` says so (checked every 100 ms).
    pub async fn run_until(
        &mut self,
        until: Instant,
        parts: &Parts,
        published: &AtomicU64,
        pids: &[u32],
        meter: &Meter,
        mut done: impl FnMut(&Progress, u64) -> bool,
    ) {
        let mut next = Instant::now();
        loop {
            let now = Instant::now();
            let p = parts.progress();
            let pubs = published.load(Relaxed);
            if now >= next {
                self.sample(now, &p, pubs, pids, meter);
                next = now + Duration::from_secs(1);
            }
            if now >= until || done(&p, pubs) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100).min(until - now)).await;
        }
    }

    fn sample(&mut self, now: Instant, p: &Progress, published: u64, pids: &[u32], meter: &Meter) {
        let usage = procstat::read_all(pids);
        let mut point = Point {
            t_s: now.duration_since(self.start).as_secs_f64(),
            open: p.open,
            ..Point::default()
        };
        let mut rates = None;
        if let Some((t, d, pubs, u)) = self.last {
            let dt = now.duration_since(t).as_secs_f64().max(1e-3);
            point.delivered_per_s = p.delivered.saturating_sub(d) as f64 / dt;
            point.published_per_s = published.saturating_sub(pubs) as f64 / dt;
            if !pids.is_empty() {
                point.server_cpu_percent = Some((usage.cpu_s - u.cpu_s) * 100.0 / dt);
                point.server_rss_mib = Some(usage.rss_kib as f64 / 1024.0);
            }
            rates = Some((point.delivered_per_s, point.published_per_s));
            self.points.push(point);
        }
        meter.show(p, rates);
        self.last = Some((now, p.delivered, published, usage));
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::new()
    }
}

/// CPU seconds of this process and its workers.
pub fn own_cpu(worker_pids: &[u32]) -> f64 {
    procstat::read("self").map_or(0.0, |u| u.cpu_s) + procstat::read_all(worker_pids).cpu_s
}

/// Prints the table and writes `--json` and `--report`.
pub fn output(summary: &Summary, common: &Common) -> anyhow::Result<()> {
    println!("{}", summary.table());
    for v in crate::benchmd::verdicts(summary, &common.targets) {
        println!("  target {v}");
    }
    if let (Some(path), Some(name)) = (&common.bench_md, &common.bench_section) {
        let title = if common.bench_title.is_empty() {
            name
        } else {
            &common.bench_title
        };
        let text =
            crate::benchmd::section(summary, name, title, &common.bench_note, &common.targets);
        crate::benchmd::update(path, name, &text)?;
    }
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_vec_pretty(summary)?)?;
    }
    if let Some(path) = &common.report {
        let text = crate::svg::render(summary, &path.to_string_lossy());
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// The command line, for reports: shell-quoted, without the options that only say
/// where outputs go (`--json`, `--report`, `--bench-*`, `--quiet`).
pub fn command_line() -> String {
    let mut out = Vec::new();
    let mut args = std::env::args();
    if let Some(first) = args.next() {
        let name = std::path::Path::new(&first)
            .file_name()
            .map_or(first.clone(), |n| n.to_string_lossy().into_owned());
        out.push(name);
    }
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        let flag = a.split('=').next().unwrap_or_default();
        if matches!(
            flag,
            "--json"
                | "--report"
                | "--bench-md"
                | "--bench-section"
                | "--bench-title"
                | "--bench-note"
        ) {
            skip_value = !a.contains('=');
            continue;
        }
        if a == "--quiet" {
            continue;
        }
        out.push(shell_quote(&a));
    }
    out.join(" ")
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Seconds to `Duration`, clamped to something sane (negative: zero; at most a day).
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 86_400.0))
}

pub fn new_summary(scenario: &str) -> Summary {
    Summary {
        scenario: scenario.into(),
        command: command_line(),
        machine: crate::report::Machine::probe(),
        started_unix_s: now_us() / 1_000_000,
        ..Summary::default()
    }
}

pub fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}
