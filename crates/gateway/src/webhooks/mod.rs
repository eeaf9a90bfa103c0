//! Pusher webhooks: what happened in an app's channels, POSTed to the app's
//! backend once per cluster, however many gateways saw it.
//!
//! The decisions are the core's ([`Hooks`]: occupancy and delayed events by
//! compare-and-set on shared state); this room feeds them and delivers:
//! - [`Webhooks::sync_channel`], `user_joined`, `user_left`, `client_event`,
//!   `cache_miss`: called on the connection path, they only queue a change on one
//!   of [`LANES`] tasks (by channel, so one channel's changes stay in order) and
//!   return. A lane makes the shared state match this node's hub: occupied when
//!   the hub has local subscribers of the channel, vacated when it has none, so a
//!   first and a last subscriber racing each other end where the hub ended.
//! - takers ([`TAKERS`] jobs at once per gateway) take jobs from the cluster's
//!   queue: a delayed one waits in its taker until it is due, then is claimed
//!   (and fanned out to the app's webhooks that want it); a delivery is POSTed
//!   (`deliver.rs`) and retried with backoff until the backend answers 2xx or
//!   [`MAX_ATTEMPTS`] are spent.
//! - in cluster mode, a watch on the node registry: when a gateway leaves the
//!   live set (killed), the channels it held are taken from it, and vacated where
//!   it was the last.

mod deliver;

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::Duration;

use switchboard_core::hooks::{HookEvent, Hooks, Job, Taken};
use switchboard_core::memory::{MemoryHookQueue, MemoryHookState};
use switchboard_core::namespace::RESERVED_PREFIX;
use tokio::sync::{mpsc, Semaphore};

use crate::backend::Backend;
use crate::config::PusherApp;
use crate::node::Node;

/// Tasks applying this node's changes, each in order.
const LANES: usize = 8;
/// Changes waiting per lane; more are dropped (and counted as lost).
const LANE_DEPTH: usize = 16_384;
/// Jobs one gateway works on at once.
const TAKERS: usize = 64;
/// POSTs of one event to one webhook before it is given up.
pub const MAX_ATTEMPTS: u32 = 12;
/// How often the queue's depth is read into `switchboard_webhook_queue_depth`.
const DEPTH_INTERVAL: Duration = Duration::from_secs(5);
/// How often the node registry is compared with the last live set.
const AUDIT_INTERVAL: Duration = Duration::from_secs(1);

/// The wait before attempt `attempt + 1` of a delivery: 500 ms doubling to a
/// minute, so that [`MAX_ATTEMPTS`] span about five minutes, as Pusher's do.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 500u64 << attempt.saturating_sub(1).min(16);
    Duration::from_millis(ms.min(60_000))
}

/// A change this node saw, for a lane to apply.
enum Change {
    /// Make the channel's occupancy match the hub.
    Sync(String),
    Joined(String, String),
    Left(String, String),
    /// An event decided here: fan out to the app's webhooks.
    Event(Job),
}

/// The apps with webhooks, and the way to the shared decisions.
pub struct Webhooks {
    hooks: Hooks,
    apps: HashMap<String, Arc<PusherApp>>,
    lanes: Vec<mpsc::Sender<Change>>,
    backend: Backend,
}

/// The app id of a core channel of a Pusher app (`~<id>~<space>:<name>`).
fn app_id(channel: &str) -> Option<&str> {
    channel
        .strip_prefix(RESERVED_PREFIX)?
        .split_once(RESERVED_PREFIX)
        .map(|(id, _)| id)
}

impl Webhooks {
    /// Starts the webhooks of `node`'s apps over `hooks` (the in-memory ones
    /// when `None`); nothing when no app has a webhook.
    pub fn start(node: &Arc<Node>, hooks: Option<Hooks>) -> Option<Arc<Webhooks>> {
        let apps: HashMap<String, Arc<PusherApp>> = node
            .config
            .pusher_apps
            .iter()
            .filter(|a| !a.webhooks.is_empty())
            .map(|a| (a.id.clone(), Arc::new(a.clone())))
            .collect();
        if apps.is_empty() {
            return None;
        }
        let hooks = hooks.unwrap_or_else(|| {
            Hooks::new(
                Arc::new(MemoryHookState::new()),
                Arc::new(MemoryHookQueue::new()),
            )
        });
        let proxies = &node.config.proxies;
        let mut lanes = Vec::with_capacity(LANES);
        let mut receivers = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            let (tx, rx) = mpsc::channel(LANE_DEPTH);
            lanes.push(tx);
            receivers.push(rx);
        }
        let webhooks = Arc::new(Webhooks {
            hooks,
            apps,
            lanes,
            backend: Backend::new(proxies.max_in_flight, proxies.timeout),
        });
        for rx in receivers {
            tokio::spawn(lane(Arc::downgrade(node), webhooks.clone(), rx));
        }
        tokio::spawn(take(Arc::downgrade(node), webhooks.clone()));
        tokio::spawn(depth(webhooks.clone()));
        if node.config.nats.is_some() {
            tokio::spawn(audit(Arc::downgrade(node), webhooks.clone()));
        }
        Some(webhooks)
    }

    /// The app of `channel`, when it has webhooks.
    fn app(&self, channel: &str) -> Option<&Arc<PusherApp>> {
        self.apps.get(app_id(channel)?)
    }

    /// Whether changes of `channel` are followed.
    pub fn follows(&self, channel: &str) -> bool {
        self.app(channel).is_some()
    }

    fn queue(&self, channel: &str, change: Change) {
        if !self.follows(channel) {
            return;
        }
        let mut h = DefaultHasher::new();
        channel.hash(&mut h);
        let lane = &self.lanes[(h.finish() as usize) % self.lanes.len()];
        if lane.try_send(change).is_err() {
            tracing::warn!(
                channel,
                "webhook change dropped: this gateway's lanes are full"
            );
            metrics::counter!("switchboard_webhook_changes_dropped_total").increment(1);
        }
    }

    /// The channel's first or last local subscriber came or went.
    pub fn sync_channel(&self, channel: &str) {
        self.queue(channel, Change::Sync(channel.to_owned()));
    }

    /// A user joined a presence channel (its first connection, cluster-wide).
    pub fn user_joined(&self, channel: &str, user: &str) {
        self.queue(channel, Change::Joined(channel.to_owned(), user.to_owned()));
    }

    /// A user left a presence channel (its last connection, cluster-wide).
    pub fn user_left(&self, channel: &str, user: &str) {
        self.queue(channel, Change::Left(channel.to_owned(), user.to_owned()));
    }

    /// A client sent `event` on `channel`.
    pub fn client_event(
        &self,
        channel: &str,
        event: &str,
        data: &str,
        socket_id: &str,
        user_id: Option<&str>,
    ) {
        let event = HookEvent::ClientEvent {
            event: event.to_owned(),
            data: data.to_owned(),
            socket_id: socket_id.to_owned(),
            user_id: user_id.map(str::to_owned),
        };
        self.queue(channel, Change::Event(Job::new(channel, event)));
    }

    /// A client subscribed to a cache channel that has no event cached.
    pub fn cache_miss(&self, channel: &str) {
        self.queue(
            channel,
            Change::Event(Job::new(channel, HookEvent::CacheMiss)),
        );
    }

    /// Queues one delivery per webhook of the job's app that wants its event.
    async fn fan_out(&self, job: &Job) -> Result<(), switchboard_core::BrokerError> {
        let Some(app) = self.app(&job.channel) else {
            return Ok(());
        };
        for (i, hook) in app.webhooks.iter().enumerate() {
            if hook.wants(job.event.name()) {
                self.hooks.queue.push(&job.for_target(i as u32)).await?;
            }
        }
        Ok(())
    }
}

fn counted(event: &HookEvent, result: &'static str) {
    metrics::counter!("switchboard_webhook_events_total", "event" => event.name(), "result" => result)
        .increment(1);
}

/// Applies one lane's changes, in order.
async fn lane(node: Weak<Node>, webhooks: Arc<Webhooks>, mut rx: mpsc::Receiver<Change>) {
    while let Some(change) = rx.recv().await {
        let Some(node) = node.upgrade() else { return };
        let hooks = &webhooks.hooks;
        let (channel, outcome) = match change {
            Change::Sync(channel) => {
                let outcome = if node.hub.num_subscribers(&channel) > 0 {
                    match hooks.occupy(&channel, &node.id).await {
                        Ok(true) => {
                            let job = Job::new(&channel, HookEvent::ChannelOccupied);
                            webhooks.fan_out(&job).await
                        }
                        Ok(false) => Ok(()),
                        Err(e) => Err(e),
                    }
                } else {
                    hooks.vacate(&channel, &node.id).await
                };
                (channel, outcome)
            }
            Change::Joined(channel, user) => {
                let outcome = match hooks.member_joined(&channel, &user).await {
                    Ok(true) => {
                        let job = Job::new(&channel, HookEvent::MemberAdded { user_id: user });
                        webhooks.fan_out(&job).await
                    }
                    Ok(false) => {
                        counted(&HookEvent::MemberAdded { user_id: user }, "cancelled");
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                (channel, outcome)
            }
            Change::Left(channel, user) => {
                let outcome = hooks.member_left(&channel, &user, None).await;
                (channel, outcome)
            }
            Change::Event(job) => {
                let outcome = webhooks.fan_out(&job).await;
                (job.channel, outcome)
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(channel, error = %e, "webhook change not recorded");
            metrics::counter!("switchboard_webhook_changes_dropped_total").increment(1);
        }
    }
}

/// Takes jobs from the queue, [`TAKERS`] at once.
async fn take(node: Weak<Node>, webhooks: Arc<Webhooks>) {
    let places = Arc::new(Semaphore::new(TAKERS));
    let mut pause = Duration::from_millis(100);
    loop {
        let Ok(place) = places.clone().acquire_owned().await else {
            return;
        };
        if node.strong_count() == 0 {
            return;
        }
        match webhooks.hooks.queue.take().await {
            Ok(taken) => {
                pause = Duration::from_millis(100);
                let (node, webhooks, places) = (node.clone(), webhooks.clone(), places.clone());
                // A delayed job waits here, holding no place: it is the taker's
                // (unsettled, the queue hands it to another taker only if this
                // one dies) and costs no round trip to hand it out again.
                let wait = taken.job().wait();
                let place = match wait.is_zero() {
                    true => Some(place),
                    false => None,
                };
                tokio::spawn(async move {
                    let place = match place {
                        Some(place) => place,
                        None => {
                            tokio::time::sleep(wait).await;
                            let Ok(place) = places.acquire_owned().await else {
                                return;
                            };
                            place
                        }
                    };
                    if let Some(node) = node.upgrade() {
                        settle(&node, &webhooks, taken).await;
                    }
                    drop(place);
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "webhook queue not read; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Works on one job: not due yet, claimed, fanned out or delivered.
async fn settle(node: &Node, webhooks: &Webhooks, taken: Box<dyn Taken>) {
    let job = taken.job().clone();
    let wait = job.wait();
    if !wait.is_zero() {
        return taken.again(wait).await;
    }
    if let Some(claim) = &job.claim {
        let stands = match webhooks.hooks.claim(claim).await {
            Ok(true) => still_gone(node, &job).await,
            Ok(false) => false,
            Err(e) => {
                tracing::debug!(error = %e, "webhook claim failed; trying again");
                return taken.again(Duration::from_secs(1)).await;
            }
        };
        if !stands {
            counted(&job.event, "cancelled");
            return taken.done().await;
        }
    }
    let Some(target) = job.target else {
        return match webhooks.fan_out(&job).await {
            Ok(()) => taken.done().await,
            Err(e) => {
                tracing::debug!(error = %e, "webhook fan-out failed; trying again");
                // Claimed already: what is left is the fan-out, without the claim.
                let unclaimed = Job { claim: None, ..job };
                match webhooks.hooks.queue.push(&unclaimed).await {
                    Ok(()) => taken.done().await,
                    Err(_) => {
                        counted(&unclaimed.event, "failed");
                        taken.give_up().await
                    }
                }
            }
        };
    };
    let Some(hook) = webhooks
        .app(&job.channel)
        .and_then(|app| Some((app.clone(), app.webhooks.get(target as usize)?.clone())))
    else {
        // The configuration changed since it was queued.
        counted(&job.event, "failed");
        return taken.give_up().await;
    };
    match deliver::post(&webhooks.backend, &hook.0, &hook.1, &job).await {
        Ok(()) => {
            counted(&job.event, "sent");
            taken.done().await
        }
        Err(e) if taken.deliveries() >= MAX_ATTEMPTS => {
            tracing::warn!(channel = job.channel, event = job.event.name(), error = %e, "webhook given up");
            counted(&job.event, "failed");
            taken.give_up().await
        }
        Err(e) => {
            tracing::debug!(channel = job.channel, error = %e, "webhook not delivered; retrying");
            counted(&job.event, "retried");
            let wait = backoff(taken.deliveries());
            taken.again(wait).await
        }
    }
}

/// Whether a claimed `member_removed` still holds: the user has no connection
/// in the channel (a join on another gateway can overtake the leave's mark).
async fn still_gone(node: &Node, job: &Job) -> bool {
    let HookEvent::MemberRemoved { user_id } = &job.event else {
        return true;
    };
    match node.presence.user_present(&job.channel, user_id).await {
        Ok(present) => !present,
        Err(_) => true,
    }
}

/// Keeps `switchboard_webhook_queue_depth` current.
async fn depth(webhooks: Arc<Webhooks>) {
    loop {
        if Arc::strong_count(&webhooks) == 1 {
            return;
        }
        if let Ok(depth) = webhooks.hooks.queue.depth().await {
            metrics::gauge!("switchboard_webhook_queue_depth").set(depth as f64);
        }
        tokio::time::sleep(DEPTH_INTERVAL).await;
    }
}

/// Takes the channels of gateways that left the live set away from them.
async fn audit(node: Weak<Node>, webhooks: Arc<Webhooks>) {
    let mut known: HashSet<String> = HashSet::new();
    let mut first = true;
    loop {
        let Some(live) = node.upgrade().map(|n| {
            n.cluster
                .nodes(&n)
                .into_iter()
                .map(|info| info.id)
                .collect::<HashSet<String>>()
        }) else {
            return;
        };
        let lost = known.iter().any(|id| !live.contains(id));
        if first || lost {
            match webhooks.hooks.forget_nodes(&live).await {
                Ok(changed) => {
                    if changed > 0 {
                        tracing::info!(channels = changed, "channels of gateways gone taken back");
                    }
                    known = live;
                    first = false;
                }
                Err(e) => tracing::debug!(error = %e, "webhook occupancy audit failed"),
            }
        } else {
            known.extend(live);
        }
        tokio::time::sleep(AUDIT_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_come_from_reserved_channels_only() {
        assert_eq!(app_id("~app1~p:presence-room"), Some("app1"));
        assert_eq!(app_id("~app1~b:orders"), Some("app1"));
        assert_eq!(app_id("chat:room"), None);
        assert_eq!(app_id("~broken"), None);
    }

    #[test]
    fn retries_back_off_to_a_minute_over_about_five_minutes() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(30), Duration::from_secs(60));
        let total: Duration = (1..MAX_ATTEMPTS).map(backoff).sum();
        assert!(
            total >= Duration::from_secs(240) && total <= Duration::from_secs(400),
            "{total:?}"
        );
    }
}
