//! Events the application backend is told about (webhooks), each decided once
//! for the whole cluster and queued until some process delivers it.
//!
//! Two seams, with an in-memory implementation for the embedded mode
//! ([`crate::memory::MemoryHookState`], [`crate::memory::MemoryHookQueue`]) and a
//! NATS one (a key-value bucket and a work-queue stream):
//! - [`HookState`]: keys with revisions and compare-and-set. What is decided
//!   cluster-wide lives there: which nodes hold local subscribers of a channel
//!   (`o.<channel>`), and the marks of delayed events (`m.<channel>.<user>`).
//! - [`HookQueue`]: [`Job`]s, taken by one process each, retried until done.
//!
//! [`Hooks`] decides on them. A channel is occupied when its first node adds
//! itself to the channel's set (the create that made the key), vacated when its
//! last node takes itself out; the empty set stays behind as the mark of the
//! pending `channel_vacated`, whose job claims it by revision once the delay has
//! passed. A node that adds itself meanwhile changes the revision: the claim
//! fails and neither event is sent, as when a user leaves and is back within the
//! delay (the `m.` mark, deleted by whichever comes first: the join or the
//! claim). Compare-and-set makes each of those decisions once, whoever races.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::broker::BrokerError;

/// Compare-and-set attempts on one key before giving up.
const CAS_ATTEMPTS: usize = 32;

/// What happened, in the names of Pusher's webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum HookEvent {
    ChannelOccupied,
    ChannelVacated,
    MemberAdded {
        user_id: String,
    },
    MemberRemoved {
        user_id: String,
    },
    ClientEvent {
        event: String,
        data: String,
        socket_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    CacheMiss,
}

impl HookEvent {
    /// Its name on the wire, as event filters list it.
    pub fn name(&self) -> &'static str {
        match self {
            HookEvent::ChannelOccupied => "channel_occupied",
            HookEvent::ChannelVacated => "channel_vacated",
            HookEvent::MemberAdded { .. } => "member_added",
            HookEvent::MemberRemoved { .. } => "member_removed",
            HookEvent::ClientEvent { .. } => "client_event",
            HookEvent::CacheMiss => "cache_miss",
        }
    }

    /// Every name, in the order of the enum.
    pub const NAMES: [&'static str; 6] = [
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
        "client_event",
        "cache_miss",
    ];
}

/// A delayed event's mark: the key and the revision it was written with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub key: String,
    pub revision: u64,
}

/// One queued piece of work: an event of a (core) channel, either still to be
/// decided (`claim`: a delayed one) or to be delivered (to the app's webhook
/// number `target`, or to be fanned out to each when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique per event and target; the queue drops a repeat, and the backend
    /// receives it to de-duplicate retries.
    pub id: String,
    pub channel: String,
    pub event: HookEvent,
    /// When it happened, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Not to be acted on before this moment (ms since the epoch).
    #[serde(default)]
    pub due_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u32>,
}

impl Job {
    pub fn new(channel: &str, event: HookEvent) -> Job {
        Job {
            id: new_id(),
            channel: channel.to_owned(),
            event,
            time_ms: now_ms(),
            due_ms: 0,
            claim: None,
            target: None,
        }
    }

    /// The same event for one target.
    pub fn for_target(&self, target: u32) -> Job {
        Job {
            id: format!("{}.{target}", self.id),
            claim: None,
            target: Some(target),
            due_ms: 0,
            ..self.clone()
        }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a job serializes"))
    }

    pub fn decode(data: &[u8]) -> Result<Job, String> {
        serde_json::from_slice(data).map_err(|e| e.to_string())
    }

    /// How long until it is due; zero when it is.
    pub fn wait(&self) -> Duration {
        Duration::from_millis(self.due_ms.saturating_sub(now_ms()))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn new_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Keys with revisions, shared by every process of the cluster.
#[async_trait]
pub trait HookState: Send + Sync + 'static {
    /// The value and revision, `None` when there is none (or it was deleted).
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, BrokerError>;
    /// Writes a key that has no value; `None` when it has one.
    async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, BrokerError>;
    /// Writes a key whose revision is `revision`; `None` when it is not.
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<Option<u64>, BrokerError>;
    /// Deletes a key whose revision is `revision`; false when it is not.
    async fn delete(&self, key: &str, revision: u64) -> Result<bool, BrokerError>;
    /// Every key that has a value and starts with `prefix`.
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BrokerError>;
}

/// A job taken from the queue, to settle with one of its methods.
#[async_trait]
pub trait Taken: Send {
    fn job(&self) -> &Job;
    /// Times the job was handed out, this one included.
    fn deliveries(&self) -> u32;
    /// Done: it goes.
    async fn done(self: Box<Self>);
    /// Hand it out again after `after`.
    async fn again(self: Box<Self>, after: Duration);
    /// It goes, undone.
    async fn give_up(self: Box<Self>);
}

/// The work queue: each job is taken by one process at a time and stays until
/// it is settled (a process that dies with one hands it back by a timeout).
#[async_trait]
pub trait HookQueue: Send + Sync + 'static {
    /// Queues a job; one with the id of a job queued minutes ago is dropped.
    async fn push(&self, job: &Job) -> Result<(), BrokerError>;
    /// The next job; waits for one.
    async fn take(&self) -> Result<Box<dyn Taken>, BrokerError>;
    /// Jobs queued or in flight.
    async fn depth(&self) -> Result<u64, BrokerError>;
}

/// The set of nodes holding local subscribers of a channel.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Holders {
    nodes: Vec<String>,
}

impl Holders {
    fn parse(value: &[u8]) -> Holders {
        serde_json::from_slice(value).unwrap_or_default()
    }

    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("holders serialize"))
    }
}

/// Hex, so that any channel or user name makes a valid key token.
fn token(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn untoken(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

const OCCUPANCY: &str = "o.";

fn occupancy_key(channel: &str) -> String {
    format!("{OCCUPANCY}{}", token(channel))
}

fn member_key(channel: &str, user: &str) -> String {
    format!("m.{}.{}", token(channel), token(user))
}

fn conflict() -> BrokerError {
    BrokerError::Unavailable("too many concurrent changes of one webhook key".into())
}

/// The decisions, over the shared state and queue.
#[derive(Clone)]
pub struct Hooks {
    pub state: Arc<dyn HookState>,
    pub queue: Arc<dyn HookQueue>,
    /// How long `channel_vacated` and `member_removed` wait for a return.
    pub delay: Duration,
}

impl Hooks {
    /// Pusher's wait before a vacated channel or a removed member counts.
    pub const DELAY: Duration = Duration::from_secs(3);

    pub fn new(state: Arc<dyn HookState>, queue: Arc<dyn HookQueue>) -> Hooks {
        Hooks {
            state,
            queue,
            delay: Hooks::DELAY,
        }
    }

    /// Node `node` has its first local subscriber of `channel`. True when that
    /// makes the channel occupied: no node had one, and no vacated was pending.
    pub async fn occupy(&self, channel: &str, node: &str) -> Result<bool, BrokerError> {
        let key = occupancy_key(channel);
        for _ in 0..CAS_ATTEMPTS {
            match self.state.get(&key).await? {
                None => {
                    let holders = Holders {
                        nodes: vec![node.to_owned()],
                    };
                    if self.state.create(&key, holders.encode()).await?.is_some() {
                        return Ok(true);
                    }
                }
                Some((value, revision)) => {
                    let mut holders = Holders::parse(&value);
                    if holders.nodes.iter().any(|n| n == node) {
                        return Ok(false);
                    }
                    // An empty set is a pending vacated: adding to it cancels it.
                    holders.nodes.push(node.to_owned());
                    if self
                        .state
                        .update(&key, holders.encode(), revision)
                        .await?
                        .is_some()
                    {
                        return Ok(false);
                    }
                }
            }
        }
        Err(conflict())
    }

    /// Node `node` lost its last local subscriber of `channel`; when no node
    /// holds one any more, `channel_vacated` is queued, delayed.
    pub async fn vacate(&self, channel: &str, node: &str) -> Result<(), BrokerError> {
        self.remove_holders(channel, |n| n == node).await
    }

    /// Takes the nodes `gone` picks out of the channel's set, and queues the
    /// delayed `channel_vacated` if that empties it.
    async fn remove_holders(
        &self,
        channel: &str,
        gone: impl Fn(&str) -> bool,
    ) -> Result<(), BrokerError> {
        let key = occupancy_key(channel);
        for _ in 0..CAS_ATTEMPTS {
            let Some((value, revision)) = self.state.get(&key).await? else {
                return Ok(());
            };
            let mut holders = Holders::parse(&value);
            let before = holders.nodes.len();
            holders.nodes.retain(|n| !gone(n));
            if holders.nodes.len() == before {
                return Ok(());
            }
            let Some(written) = self.state.update(&key, holders.encode(), revision).await? else {
                continue;
            };
            if holders.nodes.is_empty() {
                self.delayed(channel, HookEvent::ChannelVacated, key, written, None)
                    .await?;
            }
            return Ok(());
        }
        Err(conflict())
    }

    /// Queues a delayed event claimed by the mark `key` at `revision`, with the
    /// job id `id` (one per mark when `None`). A queue that refuses it takes the
    /// mark away too, so that a later return counts.
    async fn delayed(
        &self,
        channel: &str,
        event: HookEvent,
        key: String,
        revision: u64,
        id: Option<&str>,
    ) -> Result<(), BrokerError> {
        let mut job = Job::new(channel, event);
        job.id = match id {
            Some(id) => format!("departure.{id}"),
            None => format!("{key}@{revision}"),
        };
        job.due_ms = job.time_ms + self.delay.as_millis() as u64;
        job.claim = Some(Claim {
            key: key.clone(),
            revision,
        });
        if let Err(e) = self.queue.push(&job).await {
            let _ = self.state.delete(&key, revision).await;
            return Err(e);
        }
        Ok(())
    }

    /// A user joined a channel (its first connection there, cluster-wide).
    /// True when that counts as `member_added`: no removal of the same user
    /// was pending, which the join cancels instead.
    pub async fn member_joined(&self, channel: &str, user: &str) -> Result<bool, BrokerError> {
        let key = member_key(channel, user);
        for _ in 0..CAS_ATTEMPTS {
            let Some((_, revision)) = self.state.get(&key).await? else {
                return Ok(true);
            };
            if self.state.delete(&key, revision).await? {
                return Ok(false);
            }
        }
        Err(conflict())
    }

    /// A user left a channel (its last connection there, cluster-wide):
    /// `member_removed` is queued, delayed. `departure` names one departure
    /// that several processes may report (a presence sweep's id): the mark
    /// carries it, and the repeats find it there and queue nothing.
    pub async fn member_left(
        &self,
        channel: &str,
        user: &str,
        departure: Option<&str>,
    ) -> Result<(), BrokerError> {
        let key = member_key(channel, user);
        let mark = Bytes::from(departure.unwrap_or("").to_owned());
        for _ in 0..CAS_ATTEMPTS {
            let written = match self.state.get(&key).await? {
                None => self.state.create(&key, mark.clone()).await?,
                Some((value, _)) if departure.is_some() && value == mark => return Ok(()),
                // A removal pending already (its join was lost): this one replaces it.
                Some((_, revision)) => self.state.update(&key, mark.clone(), revision).await?,
            };
            if let Some(revision) = written {
                let event = HookEvent::MemberRemoved {
                    user_id: user.to_owned(),
                };
                return self.delayed(channel, event, key, revision, departure).await;
            }
        }
        Err(conflict())
    }

    /// A delayed job's moment came: true when its event stands (nothing came
    /// back), and the mark is gone either way.
    pub async fn claim(&self, claim: &Claim) -> Result<bool, BrokerError> {
        self.state.delete(&claim.key, claim.revision).await
    }

    /// Takes every node not in `live` out of every channel's set, queueing
    /// `channel_vacated` where that empties one (a node that died held them).
    /// Returns the channels it changed.
    pub async fn forget_nodes(&self, live: &HashSet<String>) -> Result<usize, BrokerError> {
        let mut changed = 0;
        for key in self.state.keys(OCCUPANCY).await? {
            let Some(channel) = key.strip_prefix(OCCUPANCY).and_then(untoken) else {
                continue;
            };
            let Some((value, _)) = self.state.get(&key).await? else {
                continue;
            };
            if Holders::parse(&value)
                .nodes
                .iter()
                .any(|n| !live.contains(n))
            {
                self.remove_holders(&channel, |n| !live.contains(n)).await?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Whether any node holds local subscribers of `channel` now.
    pub async fn occupied(&self, channel: &str) -> Result<bool, BrokerError> {
        Ok(match self.state.get(&occupancy_key(channel)).await? {
            Some((value, _)) => !Holders::parse(&value).nodes.is_empty(),
            None => false,
        })
    }
}

#[cfg(test)]
#[path = "hooks_tests.rs"]
mod tests;
