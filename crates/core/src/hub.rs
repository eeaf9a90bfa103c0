//! Local subscribers per channel and the fan-out of channel events to them.
//!
//! An event is encoded once per wire format ([`PushEncoder`]) into shared bytes;
//! each subscriber's queue holds a reference to them, never a copy.
//!
//! A subscriber is added *pending*: events that arrive while its subscribe reply is
//! being built (history read, recovery) are held back, and [`Subscriber::go_live`]
//! releases only those after the position the reply covered. That is what keeps a
//! recovery free of both gaps and duplicates.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use crate::broker::EventSink;
use crate::disconnect::Disconnect;
use crate::queue::{Dropped, Outbound, Record};
use crate::types::ChannelEvent;

/// Encodes channel events for one wire format (e.g. Centrifugo JSON).
pub trait PushEncoder: Send + Sync + 'static {
    /// The record a subscriber of `channel` receives for `event`, or the
    /// disconnect for subscribers that cannot receive it in this format.
    fn encode(&self, channel: &str, event: &ChannelEvent) -> Result<Bytes, Disconnect>;
}

/// A wire format registered with the hub ([`Hub::register`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FormatId(usize);

/// Events held back while more than this many arrive before the subscribe reply
/// is out mark the subscriber slow.
const MAX_PENDING: usize = 10_000;

/// Which join and leave events a subscriber receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinLeave {
    None,
    /// One join per connection that subscribes, one leave per connection that goes.
    EveryConnection,
    /// Only a user's first connection joining and its last one leaving.
    PerUser,
    /// As [`JoinLeave::PerUser`], but never the subscriber's own join: Pusher's
    /// `member_added` goes to the other members only.
    PerUserToOthers,
}

impl From<bool> for JoinLeave {
    fn from(wanted: bool) -> JoinLeave {
        if wanted {
            JoinLeave::EveryConnection
        } else {
            JoinLeave::None
        }
    }
}

impl JoinLeave {
    /// Whether subscriber `client` receives `event`.
    fn wants(self, event: &ChannelEvent, client: &str) -> bool {
        match (self, event) {
            (_, ChannelEvent::Publication(_)) => true,
            (JoinLeave::None, _) => false,
            (JoinLeave::EveryConnection, _) => true,
            (JoinLeave::PerUser, ChannelEvent::Join(c) | ChannelEvent::Leave(c)) => c.user_changed,
            (JoinLeave::PerUserToOthers, ChannelEvent::Join(c) | ChannelEvent::Leave(c)) => {
                c.user_changed && c.info.client != client
            }
        }
    }
}

/// One connection's subscription to one channel, as the hub sees it.
#[derive(Debug)]
pub struct Subscriber {
    client: Arc<str>,
    format: FormatId,
    outbound: Arc<Outbound>,
    /// The join and leave events it receives.
    join_leave: JoinLeave,
    /// `Some` while the subscribe reply is on its way: (offset, record) held back.
    pending: Mutex<Option<Vec<(u64, Record)>>>,
    /// Set once `pending` is gone for good, so that deliveries skip its lock.
    live: AtomicBool,
}

impl Subscriber {
    /// A subscriber that holds events back until [`Subscriber::go_live`];
    /// `join_leave` says which join and leave events it receives.
    pub fn pending(
        client: Arc<str>,
        format: FormatId,
        outbound: Arc<Outbound>,
        join_leave: impl Into<JoinLeave>,
    ) -> Arc<Subscriber> {
        Arc::new(Subscriber {
            client,
            format,
            outbound,
            join_leave: join_leave.into(),
            pending: Mutex::new(Some(Vec::new())),
            live: AtomicBool::new(false),
        })
    }

    pub fn client(&self) -> &str {
        &self.client
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<(u64, Record)>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, offset: u64, record: Record) -> Result<(), Dropped> {
        if self.live.load(Ordering::Acquire) {
            return self.outbound.push(record);
        }
        let mut pending = self.lock();
        match pending.as_mut() {
            Some(held) if held.len() >= MAX_PENDING => {
                self.outbound.close(Disconnect::SLOW, false);
                Err(Dropped::Overflow)
            }
            Some(held) => {
                held.push((offset, record));
                Ok(())
            }
            None => self.outbound.push(record),
        }
    }

    /// Releases the events held back since the subscriber was added, skipping
    /// publications at or before `after_offset` (the reply already covered them),
    /// and delivers everything after directly. Returns how many were released.
    pub fn go_live(&self, after_offset: u64) -> usize {
        let mut pending = self.lock();
        let held = pending.take().unwrap_or_default();
        let mut released = 0;
        for (offset, record) in held {
            if offset != 0 && offset <= after_offset {
                continue;
            }
            if self.outbound.push(record).is_err() {
                break;
            }
            released += 1;
        }
        // Still under the lock: a delivery that saw `live` unset waits for it and
        // then finds `pending` gone, so nothing overtakes the held records.
        self.live.store(true, Ordering::Release);
        released
    }
}

/// A channel's local subscribers, and where each client's is in the list (so
/// that an unsubscribe does not scan a channel of 100,000).
#[derive(Default)]
struct Members {
    list: Vec<Arc<Subscriber>>,
    index: HashMap<Arc<str>, usize>,
}

type Channels = HashMap<String, Members>;

/// Local subscribers of every channel on this node.
pub struct Hub {
    shards: Box<[RwLock<Channels>]>,
    /// Written only while front ends start; each broadcast reads it once.
    encoders: RwLock<Vec<Arc<dyn PushEncoder>>>,
}

const SHARDS: usize = 64;

impl Default for Hub {
    fn default() -> Hub {
        Hub::new()
    }
}

impl Hub {
    /// A hub with no formats yet: each front end registers its own at start-up.
    pub fn new() -> Hub {
        Hub {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            encoders: RwLock::new(Vec::new()),
        }
    }

    /// Adds a wire format; its subscribers receive what `encoder` makes of each event.
    pub fn register(&self, encoder: Arc<dyn PushEncoder>) -> FormatId {
        let mut encoders = self.encoders.write().unwrap_or_else(|e| e.into_inner());
        encoders.push(encoder);
        FormatId(encoders.len() - 1)
    }

    fn shard(&self, channel: &str) -> &RwLock<Channels> {
        let mut h = DefaultHasher::new();
        channel.hash(&mut h);
        &self.shards[(h.finish() as usize) % self.shards.len()]
    }

    /// Adds a subscriber; true when it is the channel's first on this node.
    pub fn add(&self, channel: &str, subscriber: Arc<Subscriber>) -> bool {
        let mut shard = self
            .shard(channel)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let members = shard.entry(channel.to_owned()).or_default();
        match members.index.get(&subscriber.client) {
            // The same client again: its new subscription replaces the old one.
            Some(&i) => {
                members.list[i] = subscriber;
                false
            }
            None => {
                members
                    .index
                    .insert(subscriber.client.clone(), members.list.len());
                members.list.push(subscriber);
                members.list.len() == 1
            }
        }
    }

    /// Removes a client's subscriber; true when the channel has none left here.
    pub fn remove(&self, channel: &str, client: &str) -> bool {
        let mut shard = self
            .shard(channel)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let Some(members) = shard.get_mut(channel) else {
            return false;
        };
        if let Some(i) = members.index.remove(client) {
            members.list.swap_remove(i);
            if let Some(moved) = members.list.get(i) {
                members.index.insert(moved.client.clone(), i);
            }
        }
        if members.list.is_empty() {
            shard.remove(channel);
            true
        } else {
            false
        }
    }

    /// Local subscribers of a channel.
    pub fn num_subscribers(&self, channel: &str) -> usize {
        let shard = self
            .shard(channel)
            .read()
            .unwrap_or_else(|e| e.into_inner());
        shard.get(channel).map_or(0, |m| m.list.len())
    }

    /// Every channel with local subscribers, with their count.
    pub fn channels(&self) -> Vec<(String, usize)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            all.extend(shard.iter().map(|(name, m)| (name.clone(), m.list.len())));
        }
        all
    }

    /// Fans one event out to the channel's local subscribers. Returns how many
    /// subscribers it was queued for.
    pub fn broadcast(&self, channel: &str, event: &ChannelEvent) -> usize {
        let shard = self
            .shard(channel)
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(members) = shard.get(channel) else {
            return 0;
        };
        let encoders = self.encoders.read().unwrap_or_else(|e| e.into_inner());
        let mut encoded: Vec<Option<Result<Bytes, Disconnect>>> = vec![None; encoders.len()];
        let offset = event.offset();
        let time_us = event.time_us();
        let skip = event.excluded_client();
        let mut delivered = 0;
        for sub in &members.list {
            if !sub.join_leave.wants(event, &sub.client) || skip == Some(&*sub.client) {
                continue;
            }
            let slot = &mut encoded[sub.format.0];
            let result = slot.get_or_insert_with(|| encoders[sub.format.0].encode(channel, event));
            match result {
                Ok(data) => {
                    let record = Record {
                        data: data.clone(),
                        time_us,
                    };
                    match sub.deliver(offset, record) {
                        Ok(()) => delivered += 1,
                        Err(Dropped::Overflow) => {
                            metrics::counter!("switchboard_deliveries_dropped_total", "reason" => "slow_consumer").increment(1)
                        }
                        Err(Dropped::Closed) => {
                            metrics::counter!("switchboard_deliveries_dropped_total", "reason" => "closing").increment(1)
                        }
                    }
                }
                Err(disconnect) => {
                    metrics::counter!("switchboard_deliveries_dropped_total", "reason" => "unencodable").increment(1);
                    sub.outbound.close(disconnect.clone(), true);
                }
            }
        }
        delivered
    }
}

impl EventSink for Hub {
    fn on_event(&self, channel: &str, event: ChannelEvent) {
        metrics::counter!("switchboard_messages_in_total").increment(1);
        self.broadcast(channel, &event);
    }

    fn has_subscribers(&self, channel: &str) -> bool {
        self.num_subscribers(channel) > 0
    }

    fn reset(&self, channel: &str) {
        let shard = self
            .shard(channel)
            .read()
            .unwrap_or_else(|e| e.into_inner());
        for sub in shard.get(channel).into_iter().flat_map(|m| &m.list) {
            sub.outbound.close(Disconnect::INSUFFICIENT_STATE, true);
        }
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
