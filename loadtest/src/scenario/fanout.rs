//! `fanout` (and `churn`, `failover`): C channels × S subscribers, P publishers
//! at R messages/s each.
//!
//! Phases: set up every subscriber (bounded by `--setup-timeout`); publish for
//! `--duration`, with churning connections or failover hooks alongside when asked;
//! drain (until deliveries stop, everyone expected has everything, or `--drain`);
//! stop the receivers and settle the accounts against what was published.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cli::{ChurnArgs, Common, FailoverArgs, FanoutArgs, ProtocolName, Via};
use crate::hist::{self, Percentiles};
use crate::payload::now_us;
use crate::procstat;
use crate::publisher::{self, PublishSpec};
use crate::receivers::Channels;
use crate::report::{self, DeliverySummary, Reconnection, Server, Summary};

use super::churn::{self, ChurnSpec};
use super::{counter, new_summary, own_cpu, secs, Meter, Parts, Sampler};

/// Runs a fan-out; `churn` and `failover` turn it into those scenarios.
pub async fn run(
    common: &Common,
    args: &FanoutArgs,
    churn_args: Option<&ChurnArgs>,
    failover: Option<&FailoverArgs>,
) -> anyhow::Result<Summary> {
    let name = match (churn_args, failover) {
        (Some(_), _) => "churn",
        (_, Some(_)) => "failover",
        _ => "fanout",
    };
    let mut summary = new_summary(name);
    describe(&mut summary, common, args);
    let channels = Channels {
        prefix: common.channel_prefix(args.channel_prefix.as_deref()),
        count: args.channels.max(1),
    };
    let total = u64::from(channels.count) * args.subscribers;
    let pids = &common.server_pids;
    let meter = Meter::new(common.quiet);
    let before = procstat::read_all(pids);
    let epoch = now_us();
    let bound = common.setup_timeout + common.duration + args.drain + 60.0;
    let parts = Parts::start(
        common,
        total,
        Some(channels.clone()),
        failover.is_some(),
        epoch,
        epoch + (bound * 1e6) as u64,
    )?;
    parts.settle(secs(common.setup_timeout), &meter).await;
    let connected = procstat::read_all(pids);

    // Publish (with churn and hooks alongside).
    let published = counter();
    let mut sampler = Sampler::new();
    let run_start_us = sampler.start_us();
    let until = Instant::now() + secs(common.duration);
    let publishing = tokio::spawn(publisher::run(
        publish_spec(common, args, &channels),
        until,
        published.clone(),
    ));
    let churning = churn_args.map(|c| {
        tokio::spawn(churn::run(
            ChurnSpec {
                targets: common.urls.clone(),
                protocol: common.client_protocol(),
                token: common.token.clone(),
                channels: channels.clone(),
                rate: c.churn_rate,
                lifetime: secs(c.churn_lifetime),
                max_open: c.churn_max,
                timeout: secs(common.timeout),
                sources: common.sources,
            },
            until,
        ))
    });
    let hooks = failover.map(|f| tokio::spawn(run_hooks(f.clone())));
    sampler
        .run_until(until, &parts, &published, pids, &meter, |_, _| false)
        .await;
    let published_result = publishing.await?;

    // Drain: stop when every expected delivery is in, or nothing arrived for a second.
    let expected_estimate = estimate(&published_result.published, args.subscribers);
    let mut last = (parts.progress().delivered, Instant::now());
    let reconnecting = failover.is_some();
    sampler
        .run_until(
            Instant::now() + secs(args.drain),
            &parts,
            &published,
            pids,
            &meter,
            |p, _| {
                if p.delivered != last.0 {
                    last = (p.delivered, Instant::now());
                }
                let all_back = !reconnecting || p.open >= p.settled.saturating_sub(p.failed);
                all_back
                    && (p.delivered >= expected_estimate
                        || last.1.elapsed() > Duration::from_secs(1))
            },
        )
        .await;
    let end = procstat::read_all(pids);
    let at_end = parts.progress();
    let (hook_log, hook_failures) = match hooks {
        Some(h) => h.await.unwrap_or_default(),
        None => (Vec::new(), 0),
    };
    let churn_result = match churning {
        Some(c) => Some(c.await?),
        None => None,
    };
    let workers = parts.workers();
    let cpu = own_cpu(&parts.worker_pids());
    let merged = parts.finish().await?;
    meter.done();

    let counts = merged.tally().settle(&published_result.published);
    let mut ack = hist::new_us();
    published_result.ack_latency.add_to(&mut ack);
    let delivery = DeliverySummary::new(
        counts,
        Percentiles::of(&merged.latency),
        &published_result,
        Percentiles::of(&ack),
    );
    summary.connections = merged.connections(total, workers, common.sources);
    summary.latency_buckets = report::latency_buckets(&merged.latency);
    summary.timeline = sampler.points;
    merged.annotate(&mut summary.timeline, epoch, run_start_us);
    summary.loadtest_cpu_s = cpu;
    summary.churn = churn_result;
    if failover.is_some() || !merged.r.disconnects.is_empty() {
        summary.reconnection = Some(Reconnection {
            disconnects: merged.r.disconnects.clone(),
            reconnected: merged.reconnect_time.len(),
            recovered: merged.r.recovered,
            not_recovered: merged.r.not_recovered,
            recovered_publications: merged.r.recovered_publications,
            reconnect_time: Percentiles::of(&merged.reconnect_time),
            // Set up, not failed, and not open when the drain ended.
            not_back: at_end
                .settled
                .saturating_sub(at_end.failed)
                .saturating_sub(at_end.open),
            hooks: hook_log,
            hook_failures,
        });
    }
    if !pids.is_empty() {
        summary.server = Some(Server::from_usage(
            pids,
            before,
            connected,
            end,
            summary.connections.connected,
            common.duration,
            Some(delivery.counts.delivered),
        ));
    }
    summary.delivery = Some(delivery);
    Ok(summary)
}

fn describe(summary: &mut Summary, common: &Common, args: &FanoutArgs) {
    let p = &mut summary.parameters;
    p.insert("channels".into(), args.channels.to_string());
    p.insert(
        "subscribers_per_channel".into(),
        args.subscribers.to_string(),
    );
    p.insert("publishers".into(), args.publishers.to_string());
    p.insert("rate_per_publisher".into(), args.rate.to_string());
    p.insert("payload_bytes".into(), args.payload.to_string());
    p.insert("via".into(), format!("{:?}", args.via).to_lowercase());
    p.insert("duration_s".into(), common.duration.to_string());
    p.insert(
        "protocol".into(),
        format!("{:?}", common.protocol).to_lowercase(),
    );
    p.insert("encoding".into(), common.client_protocol().label().into());
    p.insert(
        "urls".into(),
        common
            .urls
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    );
}

fn publish_spec(common: &Common, args: &FanoutArgs, channels: &Channels) -> PublishSpec {
    let addrs = if args.api_addrs.is_empty() {
        common.urls.iter().map(|u| u.addr).collect()
    } else {
        args.api_addrs.clone()
    };
    PublishSpec {
        via: match (args.via, common.protocol) {
            (Via::Api, ProtocolName::Pusher) => publisher::Via::Pusher {
                addrs,
                app: common.pusher_app(),
            },
            (Via::Api, ProtocolName::Centrifugo | ProtocolName::Sse) => publisher::Via::Api {
                addrs,
                key: args.api_key.clone(),
            },
            // The command line refuses it with Pusher (`Scenario::refusal`).
            (Via::Client, _) => publisher::Via::Client {
                targets: common.urls.clone(),
                protobuf: common.protobuf,
                token: common.token.clone(),
            },
        },
        channels: channels.clone(),
        publishers: args.publishers,
        rate: args.rate,
        payload_bytes: args.payload,
        timeout: secs(common.timeout),
    }
}

/// Expected deliveries if every channel has `subscribers` receivers.
fn estimate(published: &[u64], subscribers: u64) -> u64 {
    published.iter().sum::<u64>() * subscribers
}

/// Runs the kill and restart hooks at their times, one after the other (a run that
/// overruns delays the next); returns what happened and how many runs failed (did
/// not start, exited non-zero, or outlived --hook-timeout).
async fn run_hooks(f: FailoverArgs) -> (Vec<String>, u64) {
    let start = Instant::now();
    let limit = secs(f.hook_timeout);
    let mut hooks: Vec<(f64, usize, String)> = Vec::new();
    for (command, times) in [
        (f.kill_command, f.kill_at),
        (f.restart_command, f.restart_at),
    ] {
        let Some(command) = command else { continue };
        for (run, at) in times.into_iter().enumerate() {
            hooks.push((at, run, command.clone()));
        }
    }
    hooks.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut log = Vec::new();
    let mut failures = 0;
    for (at, run, command) in hooks {
        tokio::time::sleep_until((start + secs(at)).into()).await;
        let ran_at = start.elapsed().as_secs_f64();
        let outcome = tokio::time::timeout(
            limit,
            tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .env(HOOK_RUN_VAR, run.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status(),
        )
        .await;
        if !matches!(&outcome, Ok(Ok(s)) if s.success()) {
            failures += 1;
        }
        let what = match outcome {
            Ok(Ok(s)) => format!("{s}"),
            Ok(Err(e)) => format!("failed to run: {e}"),
            Err(_) => format!("still running after {limit:?} (left running)"),
        };
        let took = start.elapsed().as_secs_f64() - ran_at;
        log.push(format!(
            "t+{ran_at:.2}s `{command}` (run {run}, {took:.2} s): {what}"
        ));
    }
    (log, failures)
}

/// The variable that tells a hook command which of its runs this is (0, 1, …).
pub const HOOK_RUN_VAR: &str = "SWITCHBOARD_LOADTEST_HOOK_RUN";
