//! What a run reports: the [`Summary`] (every figure, serialisable to `--json`),
//! the table printed at the end, and the machine it ran on.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::accounting::Delivery;
use crate::hist::Percentiles;
use crate::publisher::PublishResult;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    /// The command line that produced it.
    pub command: String,
    pub machine: Machine,
    pub started_unix_s: u64,
    pub parameters: BTreeMap<String, String>,
    pub connections: Connections,
    pub delivery: Option<DeliverySummary>,
    pub reconnection: Option<Reconnection>,
    pub churn: Option<Churn>,
    pub server: Option<Server>,
    /// CPU seconds this tool used (itself and its workers) over the whole run.
    pub loadtest_cpu_s: f64,
    pub timeline: Vec<Point>,
    /// Delivery latency histogram for plotting: (upper bound ms, count), log buckets.
    pub latency_buckets: Vec<(f64, u64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub memory_mib: u64,
    pub kernel: String,
    pub cpu_model: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_mib: memory_kib / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Connections {
    pub target: u64,
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    pub success_rate_percent: f64,
    pub failures: BTreeMap<String, u64>,
    /// TCP connect + WebSocket upgrade + connect reply (+ subscribe reply when subscribing).
    pub connect_latency: Percentiles,
    /// Connections set up per second, first attempt to last success.
    pub connect_rate_per_s: f64,
    pub workers: usize,
    pub sources: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliverySummary {
    pub counts: Delivery,
    pub delivery_rate_percent: f64,
    pub latency: Percentiles,
    pub deliveries_per_s: f64,
    pub publish_seconds: f64,
    pub published: u64,
    pub publish_rate_per_s: f64,
    pub publish_failures: BTreeMap<String, u64>,
    pub publish_uncertain: u64,
    pub publish_ack_latency: Percentiles,
}

impl DeliverySummary {
    pub fn new(
        counts: Delivery,
        latency: Percentiles,
        p: &PublishResult,
        ack: Percentiles,
    ) -> Self {
        let published: u64 = p.published.iter().sum();
        let secs = p.elapsed_s.max(1e-9);
        DeliverySummary {
            delivery_rate_percent: counts.rate_percent(),
            deliveries_per_s: counts.delivered as f64 / secs,
            counts,
            latency,
            publish_seconds: p.elapsed_s,
            published,
            publish_rate_per_s: published as f64 / secs,
            publish_failures: p.failures.clone(),
            publish_uncertain: p.uncertain,
            publish_ack_latency: ack,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reconnection {
    pub disconnects: BTreeMap<String, u64>,
    pub reconnected: u64,
    pub recovered: u64,
    pub not_recovered: u64,
    pub recovered_publications: u64,
    /// From noticing the disconnect to the recovering subscribe reply.
    pub reconnect_time: Percentiles,
    /// Connections that were set up but were not connected again when the run ended.
    #[serde(default)]
    pub not_back: u64,
    pub hooks: Vec<String>,
    /// Hook runs that did not succeed (could not start, exited non-zero, timed out).
    #[serde(default)]
    pub hook_failures: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Churn {
    pub arrivals: u64,
    pub connected: u64,
    pub failures: BTreeMap<String, u64>,
    pub connect_latency: Percentiles,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Sequences missing between the first and last a churning client saw.
    pub gaps: u64,
    pub disconnected_by_server: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Server {
    pub pids: Vec<u32>,
    pub rss_before_kib: u64,
    pub rss_connected_kib: u64,
    pub rss_end_kib: u64,
    /// (RSS with every connection open − RSS before) / connections.
    pub rss_per_connection_bytes: f64,
    pub cpu_setup_s: f64,
    /// Server CPU from the start of publishing to the end of the drain (or the hold).
    pub cpu_run_s: f64,
    pub cpu_run_percent: f64,
    pub cpu_us_per_delivery: Option<f64>,
    pub deliveries_per_cpu_s: Option<f64>,
}

impl Server {
    /// The server's figures from /proc snapshots taken before connecting, with
    /// every connection open, and at the end; `delivered` adds CPU per delivery.
    pub fn from_usage(
        pids: &[u32],
        before: crate::procstat::Usage,
        connected: crate::procstat::Usage,
        end: crate::procstat::Usage,
        connections: u64,
        wall_s: f64,
        delivered: Option<u64>,
    ) -> Server {
        let run_s = (end.cpu_s - connected.cpu_s).max(0.0);
        Server {
            pids: pids.to_vec(),
            rss_before_kib: before.rss_kib,
            rss_connected_kib: connected.rss_kib,
            rss_end_kib: end.rss_kib,
            rss_per_connection_bytes: (connected.rss_kib as f64 - before.rss_kib as f64) * 1024.0
                / connections.max(1) as f64,
            cpu_setup_s: connected.cpu_s - before.cpu_s,
            cpu_run_s: run_s,
            cpu_run_percent: run_s * 100.0 / wall_s.max(1e-3),
            cpu_us_per_delivery: delivered.filter(|d| *d > 0).map(|d| run_s * 1e6 / d as f64),
            deliveries_per_cpu_s: delivered.filter(|_| run_s > 0.0).map(|d| d as f64 / run_s),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Point {
    pub t_s: f64,
    pub open: u64,
    pub delivered_per_s: f64,
    pub published_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub server_cpu_percent: Option<f64>,
    pub server_rss_mib: Option<f64>,
}

fn row(out: &mut String, k: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "  {k:<28} {v}");
}

fn pct(p: &Percentiles) -> String {
    format!(
        "p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2} ms  (n={})",
        p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms, p.count
    )
}

fn map(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Summary {
    /// The human-readable table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "switchboard-loadtest {} — {}",
            self.scenario, self.command
        );
        let m = &self.machine;
        row(
            &mut o,
            "machine",
            format!("{} CPUs, {} MiB, Linux {}", m.nproc, m.memory_mib, m.kernel),
        );
        let c = &self.connections;
        let _ = writeln!(o, "connections");
        row(
            &mut o,
            "attempted / target",
            format!("{} / {}", c.attempted, c.target),
        );
        row(
            &mut o,
            "connected",
            format!("{} ({:.3}%)", c.connected, c.success_rate_percent),
        );
        row(&mut o, "failed by reason", map(&c.failures));
        row(&mut o, "connect latency", pct(&c.connect_latency));
        row(
            &mut o,
            "connect rate",
            format!("{:.0}/s", c.connect_rate_per_s),
        );
        row(
            &mut o,
            "processes / sources",
            format!("{} / {}", c.workers.max(1), c.sources),
        );
        if let Some(d) = &self.delivery {
            let k = &d.counts;
            let _ = writeln!(o, "delivery");
            row(
                &mut o,
                "published",
                format!(
                    "{} ({:.1}/s over {:.1} s)",
                    d.published, d.publish_rate_per_s, d.publish_seconds
                ),
            );
            row(
                &mut o,
                "publish failures",
                format!(
                    "{} (uncertain: {})",
                    map(&d.publish_failures),
                    d.publish_uncertain
                ),
            );
            row(&mut o, "publish ack latency", pct(&d.publish_ack_latency));
            row(
                &mut o,
                "expected / delivered",
                format!(
                    "{} / {} ({:.4}%)",
                    k.expected, k.delivered, d.delivery_rate_percent
                ),
            );
            row(
                &mut o,
                "lost / dup / out of order",
                format!("{} / {} / {}", k.lost, k.duplicates, k.out_of_order),
            );
            if k.unexpected + k.foreign > 0 {
                row(
                    &mut o,
                    "unexpected / foreign",
                    format!("{} / {}", k.unexpected, k.foreign),
                );
            }
            row(&mut o, "delivery latency", pct(&d.latency));
            row(&mut o, "deliveries", format!("{:.0}/s", d.deliveries_per_s));
        }
        if let Some(r) = &self.reconnection {
            let _ = writeln!(o, "reconnection");
            row(&mut o, "disconnects by reason", map(&r.disconnects));
            row(
                &mut o,
                "reconnected",
                format!("{} (not back at the end: {})", r.reconnected, r.not_back),
            );
            row(
                &mut o,
                "recovered / not",
                format!(
                    "{} / {} ({} publications from recovery)",
                    r.recovered, r.not_recovered, r.recovered_publications
                ),
            );
            row(&mut o, "reconnect time", pct(&r.reconnect_time));
            for h in &r.hooks {
                row(&mut o, "hook", h);
            }
            if r.hook_failures > 0 {
                row(&mut o, "hook runs failed", r.hook_failures);
            }
        }
        if let Some(ch) = &self.churn {
            let _ = writeln!(o, "churn");
            row(
                &mut o,
                "arrivals / connected",
                format!("{} / {}", ch.arrivals, ch.connected),
            );
            row(&mut o, "failed by reason", map(&ch.failures));
            row(&mut o, "connect latency", pct(&ch.connect_latency));
            row(
                &mut o,
                "delivered / dup / ooo / gaps",
                format!(
                    "{} / {} / {} / {}",
                    ch.delivered, ch.duplicates, ch.out_of_order, ch.gaps
                ),
            );
            row(&mut o, "closed by the server", ch.disconnected_by_server);
        }
        if let Some(s) = &self.server {
            let _ = writeln!(o, "server (pids {:?})", s.pids);
            row(
                &mut o,
                "RSS before / connected / end",
                format!(
                    "{:.1} / {:.1} / {:.1} MiB",
                    s.rss_before_kib as f64 / 1024.0,
                    s.rss_connected_kib as f64 / 1024.0,
                    s.rss_end_kib as f64 / 1024.0
                ),
            );
            row(
                &mut o,
                "RSS per connection",
                format!("{:.0} bytes", s.rss_per_connection_bytes),
            );
            row(
                &mut o,
                "CPU setup / run",
                format!(
                    "{:.2} s / {:.2} s ({:.0}% of one core)",
                    s.cpu_setup_s, s.cpu_run_s, s.cpu_run_percent
                ),
            );
            if let (Some(us), Some(per)) = (s.cpu_us_per_delivery, s.deliveries_per_cpu_s) {
                row(
                    &mut o,
                    "CPU per delivery",
                    format!("{us:.3} µs ({per:.0} deliveries per CPU-second)"),
                );
            }
        }
        row(
            &mut o,
            "loadtest CPU",
            format!("{:.2} s", self.loadtest_cpu_s),
        );
        o
    }
}

/// Log-spaced latency buckets of a histogram, for plotting: ten per decade of
/// microseconds, as (upper bound in ms, count), from the first non-empty one.
pub fn latency_buckets(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, u64)> {
    let mut counts: Vec<u64> = Vec::new();
    for v in h.iter_recorded() {
        let value = v.value_iterated_to().max(1) as f64;
        let bucket = (value.log10() * 10.0).ceil().max(0.0) as usize;
        if counts.len() <= bucket {
            counts.resize(bucket + 1, 0);
        }
        counts[bucket] += v.count_at_value();
    }
    let first = counts.iter().position(|&n| n > 0).unwrap_or(0);
    counts
        .iter()
        .enumerate()
        .skip(first)
        .map(|(b, &n)| (10f64.powf(b as f64 / 10.0) / 1000.0, n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_every_recorded_value_once() {
        let mut h = crate::hist::new_us();
        for us in [5, 50, 500, 5_000, 5_000, 123_456] {
            crate::hist::record(&mut h, us);
        }
        let b = latency_buckets(&h);
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 6);
        assert!(b[0].1 == 1 && b[0].0 >= 0.005);
    }
}
