//! `presence`: the presence service under one gateway's worth of members.
//!
//! The tool plays a gateway: it joins N members (U users, N/U connections
//! each) through the service's gRPC API, refreshes them in batches of 500 as a
//! gateway does, asks for stats and lists every page, then stops refreshing, as
//! a gateway killed with SIGKILL would, and waits on a WebSocket subscriber of a
//! real gateway for each member's leave push. It reports join latency, the cost
//! of refreshing 10,000 members (wall time and the service's and NATS's CPU),
//! stats and list latency, and the time from "death" to each leave, with exact
//! counts (user joins, members listed, leaves and duplicate leaves).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;
use switchboard_presence::pb;
use switchboard_presence::pb::presence_client::PresenceClient;
use switchboard_protocol::centrifugo::pb::{Command, SubscribeRequest};
use switchboard_protocol::centrifugo::Encoding;
use tonic::transport::Channel;

use crate::cli::PresenceArgs;
use crate::client::{Client, ClientOptions};
use crate::hist::{self, Percentiles};
use crate::procstat;

/// Memberships per refresh call, as gateways send them.
const REFRESH_BATCH: usize = 500;
/// Members per list page (the service's largest).
const LIST_PAGE: u32 = 10_000;

#[derive(Debug, Default, Serialize)]
pub struct PresenceSummary {
    pub members: usize,
    pub users: usize,
    pub join_latency: Percentiles,
    /// Joins the service answered `user_joined: true`: must equal `users`.
    pub user_joins: usize,
    pub join_errors: usize,
    /// Per refresh of every member: wall time and CPU, scaled to 10,000 members.
    pub refresh_per_10k_ms: Vec<f64>,
    pub refresh_service_cpu_per_10k_ms: Vec<f64>,
    pub refresh_nats_cpu_per_10k_ms: Vec<f64>,
    pub stats_latency: Percentiles,
    pub stats_clients: u32,
    pub stats_users: u32,
    pub list_page_latency: Percentiles,
    pub listed: usize,
    /// From the last refresh to each leave push (the watcher's view).
    pub leave_after_death: Option<Percentiles>,
    pub leaves: usize,
    pub duplicate_leaves: usize,
    /// The watching subscriber is a member too (anonymous: one more user).
    pub watcher: bool,
}

async fn connect(urls: &[String]) -> anyhow::Result<Vec<PresenceClient<Channel>>> {
    let mut clients = Vec::new();
    for url in urls {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .with_context(|| format!("presence URL {url}"))?
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        clients.push(PresenceClient::new(channel));
    }
    if clients.is_empty() {
        bail!("give at least one --presence-url");
    }
    Ok(clients)
}

fn membership(args: &PresenceArgs, i: usize) -> pb::Membership {
    let users = args.users();
    pb::Membership {
        channel: args.channel.clone(),
        member: Some(pb::Member {
            user: format!("lt-user-{}", i % users),
            client: format!("lt-{}-{i}", args.node),
            conn_info: None,
            chan_info: None,
        }),
    }
}

fn cpu(pids: &[u32]) -> f64 {
    procstat::read_all(pids).cpu_s
}

pub async fn run(args: &PresenceArgs) -> anyhow::Result<PresenceSummary> {
    let clients = connect(&args.presence_urls).await?;
    let mut summary = PresenceSummary {
        members: args.members,
        users: args.users(),
        ..Default::default()
    };
    let mut watcher = match &args.url {
        Some(url) => Some(watch(url, &args.channel).await?),
        None => None,
    };
    summary.watcher = watcher.is_some();

    // Joins, --concurrency at a time.
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(hist::new_us()));
    let user_joins = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..args.concurrency.max(1) {
        let mut client = clients[w % clients.len()].clone();
        let (next, latencies, user_joins, errors) = (
            next.clone(),
            latencies.clone(),
            user_joins.clone(),
            errors.clone(),
        );
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.members {
                    return;
                }
                let request = pb::JoinRequest {
                    node: args.node.clone(),
                    membership: Some(membership(&args, i)),
                };
                let started = Instant::now();
                match client.join(request).await {
                    Ok(reply) => {
                        hist::record(
                            &mut latencies.lock().unwrap(),
                            started.elapsed().as_micros() as u64,
                        );
                        if reply.into_inner().user_joined {
                            user_joins.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    summary.join_latency = Percentiles::of(&latencies.lock().unwrap());
    summary.user_joins = user_joins.load(Ordering::Relaxed);
    summary.join_errors = errors.load(Ordering::Relaxed);
    eprintln!(
        "joined {} members: p50 {:.2} ms, p99 {:.2} ms",
        args.members, summary.join_latency.p50_ms, summary.join_latency.p99_ms
    );

    // Refreshes, one batch after the other, as a gateway sends them.
    let memberships: Vec<pb::Membership> = (0..args.members).map(|i| membership(args, i)).collect();
    let scale = 10_000.0 / args.members.max(1) as f64;
    let mut client = clients[0].clone();
    for _ in 0..args.refresh_rounds {
        let (service_before, nats_before) = (cpu(&args.server_pids), cpu(&args.nats_pids));
        let started = Instant::now();
        for batch in memberships.chunks(REFRESH_BATCH) {
            client
                .refresh(pb::RefreshRequest {
                    node: args.node.clone(),
                    memberships: batch.to_vec(),
                    lapsed: false,
                })
                .await
                .context("refresh")?;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        summary.refresh_per_10k_ms.push(ms * scale);
        summary
            .refresh_service_cpu_per_10k_ms
            .push((cpu(&args.server_pids) - service_before) * 1000.0 * scale);
        summary
            .refresh_nats_cpu_per_10k_ms
            .push((cpu(&args.nats_pids) - nats_before) * 1000.0 * scale);
    }
    let died = Instant::now();

    // Stats and every page of the list.
    let mut stats_latency = hist::new_us();
    for _ in 0..args.stats_calls {
        let started = Instant::now();
        let reply = client
            .stats(pb::StatsRequest {
                channel: args.channel.clone(),
            })
            .await
            .context("stats")?
            .into_inner();
        hist::record(&mut stats_latency, started.elapsed().as_micros() as u64);
        (summary.stats_clients, summary.stats_users) = (reply.num_clients, reply.num_users);
    }
    summary.stats_latency = Percentiles::of(&stats_latency);
    let mut page_latency = hist::new_us();
    let mut listed = HashMap::new();
    let mut page = String::new();
    for _ in 0..(args.members / LIST_PAGE as usize + 2) {
        let started = Instant::now();
        let reply = client
            .list(pb::ListRequest {
                channel: args.channel.clone(),
                limit: LIST_PAGE,
                page: page.clone(),
            })
            .await
            .context("list")?
            .into_inner();
        hist::record(&mut page_latency, started.elapsed().as_micros() as u64);
        for m in reply.members {
            listed.insert(m.client, ());
        }
        if reply.next_page.is_empty() {
            break;
        }
        page = reply.next_page;
    }
    summary.list_page_latency = Percentiles::of(&page_latency);
    summary.listed = listed.len();

    // No more refreshes: the sweeper must find every member overdue and
    // announce its leave once.
    if let Some(watcher) = watcher.as_mut() {
        let (latency, leaves, duplicates) =
            collect_leaves(watcher, args.members, died, args.expire_timeout()).await?;
        summary.leave_after_death = Some(Percentiles::of(&latency));
        summary.leaves = leaves;
        summary.duplicate_leaves = duplicates;
    }
    Ok(summary)
}

async fn watch(url: &str, channel: &str) -> anyhow::Result<Client> {
    let target = url.parse().context("--url")?;
    let options = ClientOptions {
        source: None,
        token: None,
        timeout: Duration::from_secs(10),
    };
    let mut client = Client::open(&target, Encoding::Json, &options).await?;
    client
        .call(Command {
            subscribe: Some(SubscribeRequest {
                channel: channel.to_owned(),
                join_leave: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    Ok(client)
}

/// Leave pushes until every member has left once or `patience` has passed.
async fn collect_leaves(
    watcher: &mut Client,
    members: usize,
    died: Instant,
    patience: Duration,
) -> anyhow::Result<(Histogram<u64>, usize, usize)> {
    let mut latency = hist::new_coarse_us();
    let mut seen = HashMap::new();
    let mut duplicates = 0;
    let deadline = died + patience;
    while seen.len() < members {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(replies) = tokio::time::timeout(left, watcher.next_replies()).await else {
            break;
        };
        let at = died.elapsed().as_micros() as u64;
        for reply in replies? {
            let Some(leave) = reply.push.and_then(|p| p.leave) else {
                continue;
            };
            let client = leave.info.map(|i| i.client).unwrap_or_default();
            if seen.insert(client, ()).is_some() {
                duplicates += 1;
            } else {
                hist::record(&mut latency, at);
            }
        }
    }
    Ok((latency, seen.len(), duplicates))
}

impl PresenceSummary {
    pub fn table(&self) -> String {
        let p = |p: &Percentiles| {
            format!(
                "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n = {})",
                p.p50_ms, p.p99_ms, p.max_ms, p.count
            )
        };
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut o = String::new();
        o += &format!(
            "members {} ({} users){}\n",
            self.members,
            self.users,
            if self.watcher {
                ", plus the watching subscriber"
            } else {
                ""
            }
        );
        o += &format!("join                 {}\n", p(&self.join_latency));
        o += &format!(
            "  user joins         {} (errors {})\n",
            self.user_joins, self.join_errors
        );
        o += &format!(
            "refresh / 10k       wall {} ms; service CPU {} ms; NATS CPU {} ms\n",
            list(&self.refresh_per_10k_ms),
            list(&self.refresh_service_cpu_per_10k_ms),
            list(&self.refresh_nats_cpu_per_10k_ms)
        );
        o += &format!(
            "stats                {}  -> {} clients, {} users\n",
            p(&self.stats_latency),
            self.stats_clients,
            self.stats_users
        );
        o += &format!(
            "list page (10k)      {}  -> {} listed\n",
            p(&self.list_page_latency),
            self.listed
        );
        if let Some(l) = &self.leave_after_death {
            o += &format!("leave after death    {}\n", p(l));
            o += &format!(
                "  leaves             {} of {} (duplicates {})\n",
                self.leaves, self.members, self.duplicate_leaves
            );
        }
        o
    }

    /// Every count that must be exact, as problems (the watcher, when there is
    /// one, counts as one more member and user).
    pub fn problems(&self, expect_leaves: bool) -> Vec<String> {
        let mut p = Vec::new();
        if self.join_errors > 0 {
            p.push(format!("{} joins failed", self.join_errors));
        }
        if self.user_joins != self.users {
            p.push(format!(
                "{} user joins for {} users",
                self.user_joins, self.users
            ));
        }
        let extra = usize::from(self.watcher);
        if (self.stats_clients as usize, self.stats_users as usize)
            != (self.members + extra, self.users + extra)
        {
            p.push(format!(
                "stats said {} clients, {} users",
                self.stats_clients, self.stats_users
            ));
        }
        if self.listed != self.members + extra {
            p.push(format!("{} members listed", self.listed));
        }
        if expect_leaves && (self.leaves != self.members || self.duplicate_leaves > 0) {
            p.push(format!(
                "{} leaves ({} duplicates) for {} members",
                self.leaves, self.duplicate_leaves, self.members
            ));
        }
        p
    }
}
