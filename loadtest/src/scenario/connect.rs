//! `connect`: open N connections at a target rate, hold them for `--duration`,
//! and report connect latency, success rate, failures by reason, and the server's
//! memory per connection and CPU.

use std::time::{Duration, Instant};

use crate::cli::Common;
use crate::payload::now_us;
use crate::procstat;
use crate::receivers::Channels;
use crate::report::{Reconnection, Server, Summary};

use super::{counter, new_summary, own_cpu, secs, Meter, Parts, Sampler};

/// The channels of `connect --subscribe`: `count` of them named from `prefix`
/// (or the protocol's default); none without `--subscribe`.
pub fn channels(
    common: &Common,
    subscribe: bool,
    count: u32,
    prefix: Option<String>,
) -> Option<Channels> {
    subscribe.then(|| Channels {
        prefix: common.channel_prefix(prefix.as_deref()),
        count: count.max(1),
    })
}

/// Connect-only, or idle subscribers when `channels` is given.
pub async fn run(
    common: &Common,
    connections: u64,
    channels: Option<Channels>,
) -> anyhow::Result<Summary> {
    let mut summary = new_summary("connect");
    let p = &mut summary.parameters;
    p.insert("connections".into(), connections.to_string());
    p.insert("connect_rate".into(), common.connect_rate.to_string());
    p.insert("hold_s".into(), common.duration.to_string());
    p.insert(
        "protocol".into(),
        format!("{:?}", common.protocol).to_lowercase(),
    );
    p.insert("encoding".into(), common.client_protocol().label().into());
    if let Some(c) = &channels {
        p.insert(
            "subscribe".into(),
            format!("{} channels {}N", c.count, c.prefix),
        );
    }
    let pids = &common.server_pids;
    let meter = Meter::new(common.quiet);
    let before = procstat::read_all(pids);
    let epoch = now_us();
    let bound = common.setup_timeout + common.duration + 30.0;
    let parts = Parts::start(
        common,
        connections,
        channels,
        false,
        epoch,
        epoch + (bound * 1e6) as u64,
    )?;
    parts.settle(secs(common.setup_timeout), &meter).await;
    // Let the server finish its bookkeeping before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connected = procstat::read_all(pids);
    let open_after_setup = parts.progress().open;
    let mut sampler = Sampler::new();
    let published = counter();
    let until = Instant::now() + secs(common.duration);
    sampler
        .run_until(until, &parts, &published, pids, &meter, |_, _| false)
        .await;
    let end = procstat::read_all(pids);
    let open_at_end = parts.progress().open;
    let workers = parts.workers();
    let cpu = own_cpu(&parts.worker_pids());
    let merged = parts.finish().await?;
    meter.done();
    summary.connections = merged.connections(connections, workers, common.sources);
    summary.connections.connect_latency = crate::hist::Percentiles::of(&merged.connect_latency);
    summary.timeline = sampler.points;
    summary.loadtest_cpu_s = cpu;
    summary.parameters.insert(
        "open_after_setup / at_end".into(),
        format!("{open_after_setup} / {open_at_end}"),
    );
    if !merged.r.disconnects.is_empty() {
        summary.reconnection = Some(Reconnection {
            disconnects: merged.r.disconnects.clone(),
            ..Reconnection::default()
        });
    }
    if !pids.is_empty() {
        summary.server = Some(Server::from_usage(
            pids,
            before,
            connected,
            end,
            open_after_setup,
            common.duration,
            None,
        ));
    }
    Ok(summary)
}
