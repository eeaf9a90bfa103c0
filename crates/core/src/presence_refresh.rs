//! A node's own members of a presence store shared by every node, and the one
//! loop that keeps them there.
//!
//! A shared store forgets a member whose node stops refreshing it within the
//! TTL: that is how the members of a node that died go. So each node remembers
//! its own members ([`LocalMembers`]), re-asserts them every third of the TTL
//! (a round that fails leaves two more before anything expires), and on a clean
//! shutdown hands what is left over at once ([`depart_all`]) instead of letting
//! it expire a TTL later. A node that could not refresh for longer than the TTL
//! (frozen, or cut off from the store) may have lost members to the sweep while
//! it was away; what it sends from then on until a round succeeds is *lapsed*:
//! the members the store lost join again, with their joins announced, so that
//! presence comes back coherent (a leave, then a join) instead of holding members
//! nobody announced. Whether a write is lapsed is decided when it is sent
//! ([`LastRefresh`]), not once per round: a node frozen in the middle of a round,
//! or of a call it then retries, comes back with the rest of the round to send.
//! The store says how one batch is refreshed or handed
//! over ([`NodePresence`]): the gateway on the JetStream buckets puts members one
//! by one, the gateway of the presence service sends a few hundred per call.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::broker::BrokerError;

/// Shortest time between rounds, whatever the TTL: a zero period would make the
/// ticker panic, and a shorter one would refresh faster than a store answers.
const MIN_EVERY: Duration = Duration::from_millis(100);

/// This node's members of a shared presence store, by key, and which of them a
/// refresh is carrying to the store right now.
pub struct LocalMembers<K, M> {
    state: Mutex<State<K, M>>,
    /// Counts the batches that reached the store (or failed to), for removals
    /// waiting on one.
    settled: watch::Sender<u64>,
}

struct State<K, M> {
    members: HashMap<K, M>,
    /// Keys of the batch on its way to the store.
    in_flight: HashSet<K>,
}

impl<K: Eq + Hash + Clone, M: Clone> LocalMembers<K, M> {
    pub fn new() -> Self {
        LocalMembers {
            state: Mutex::new(State {
                members: HashMap::new(),
                in_flight: HashSet::new(),
            }),
            settled: watch::channel(0).0,
        }
    }

    /// Remembers a member, in place of one with the same key.
    pub fn insert(&self, key: K, member: M) {
        self.lock().members.insert(key, member);
    }

    /// Forgets a member, so that no later batch puts it back, and waits until
    /// no refresh of it is on its way to the store: a batch sent before the
    /// member went would otherwise reach the store after the caller removed it
    /// there, and put it back as a member nobody refreshes (present until the
    /// sweep expires it, with a second leave). The wait lasts one batch at most,
    /// which its store call's own deadline bounds.
    pub async fn remove(&self, key: &K) {
        let mut settled = self.settled.subscribe();
        {
            let mut state = self.lock();
            state.members.remove(key);
            if !state.in_flight.contains(key) {
                return;
            }
        }
        metrics::counter!("switchboard_presence_leaves_behind_refresh_total").increment(1);
        // The sender lives in `self`: `changed` ends only with a new count.
        while settled.changed().await.is_ok() {
            if !self.lock().in_flight.contains(key) {
                return;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().members.is_empty()
    }

    fn keys(&self) -> Vec<K> {
        self.lock().members.keys().cloned().collect()
    }

    /// Those of `keys` still remembered, with their members as they are now,
    /// marked as on their way to the store until the [`Sending`] is dropped.
    fn send(&self, keys: &[K]) -> (Vec<(K, M)>, Sending<'_, K, M>) {
        let mut state = self.lock();
        let batch: Vec<(K, M)> = keys
            .iter()
            .filter_map(|k| state.members.get(k).map(|m| (k.clone(), m.clone())))
            .collect();
        state.in_flight.extend(batch.iter().map(|(k, _)| k.clone()));
        (batch, Sending { local: self })
    }

    /// Forgets every member, once no refresh is on its way to the store (as
    /// [`LocalMembers::remove`], for all of them).
    async fn take(&self) -> Vec<(K, M)> {
        let mut settled = self.settled.subscribe();
        let members: Vec<(K, M)> = self.lock().members.drain().collect();
        while !self.lock().in_flight.is_empty() {
            if settled.changed().await.is_err() {
                break;
            }
        }
        members
    }

    fn lock(&self) -> MutexGuard<'_, State<K, M>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Eq + Hash + Clone, M: Clone> Default for LocalMembers<K, M> {
    fn default() -> Self {
        LocalMembers::new()
    }
}

/// A batch on its way to the store; dropped once the store answered (or the
/// call failed, or its task ended), releasing the removals waiting on it.
struct Sending<'a, K: Eq + Hash + Clone, M: Clone> {
    local: &'a LocalMembers<K, M>,
}

impl<K: Eq + Hash + Clone, M: Clone> Drop for Sending<'_, K, M> {
    fn drop(&mut self) {
        self.local.lock().in_flight.clear();
        self.local.settled.send_modify(|n| *n += 1);
    }
}

/// One node's side of a shared presence store: where its members are kept, and
/// how a batch of them reaches the store.
#[async_trait]
pub trait NodePresence: Send + Sync + 'static {
    type Key: Eq + Hash + Clone + Send + Sync + 'static;
    type Member: Clone + Send + Sync + 'static;
    /// Members per call to [`refresh_batch`](NodePresence::refresh_batch) and
    /// [`depart_batch`](NodePresence::depart_batch) at most.
    const BATCH: usize;

    fn local(&self) -> &LocalMembers<Self::Key, Self::Member>;

    /// Re-asserts members (their node is alive), adding any the store lost. When
    /// [`LastRefresh::lapsed`] (asked at each write: no round succeeded for longer
    /// than the TTL), a member the store lost joins again: its user's count and a
    /// join announced, as on a join.
    async fn refresh_batch(
        &self,
        batch: Vec<(Self::Key, Self::Member)>,
        last: LastRefresh,
    ) -> Result<(), BrokerError>;

    /// Removes members now and announces their leaves: their node is going.
    async fn depart_batch(&self, batch: Vec<(Self::Key, Self::Member)>) -> Result<(), BrokerError>;
}

/// When a node's members were last all refreshed, and how long the store keeps a
/// member without a refresh.
#[derive(Clone, Copy, Debug)]
pub struct LastRefresh {
    at: Instant,
    ttl: Duration,
}

impl LastRefresh {
    /// Whether the store may have lost members to the sweep since: longer than the
    /// TTL ago. Asked again at every write, so that one sent after a freeze knows.
    pub fn lapsed(&self) -> bool {
        self.at.elapsed() > self.ttl
    }
}

/// Refreshes `store`'s members every third of `ttl`, the first time a third of
/// `ttl` from now, until the store is dropped.
pub fn spawn<S: NodePresence>(store: &Arc<S>, ttl: Duration) -> JoinHandle<()> {
    tokio::spawn(run(Arc::downgrade(store), (ttl / 3).max(MIN_EVERY), ttl))
}

async fn run<S: NodePresence>(store: Weak<S>, every: Duration, ttl: Duration) {
    let mut ticker = tokio::time::interval(every);
    // A node back from a freeze refreshes once, not once per round it missed.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate: members just added need no refresh.
    ticker.tick().await;
    // When the last round that succeeded started (the members' last refresh).
    let mut refreshed = Instant::now();
    loop {
        ticker.tick().await;
        let Some(store) = store.upgrade() else { return };
        let started = Instant::now();
        let last = LastRefresh {
            at: refreshed,
            ttl: ttl.max(every),
        };
        match refresh_round(&*store, last).await {
            Ok(()) => refreshed = started,
            Err(e) => tracing::warn!(error = %e, "presence refresh failed"),
        }
        metrics::gauge!("switchboard_presence_local_members").set(store.local().len() as f64);
    }
}

/// Every member once, in batches. Each batch is read afresh: a member removed
/// during the round must not be put back (it would come back as a ghost, then
/// expire with a second leave); one removed while its batch is on the way has
/// its removal wait for the batch ([`LocalMembers::remove`]). The first failure
/// ends the round: the store is most likely unreachable, and the next round
/// comes well inside the TTL.
async fn refresh_round<S: NodePresence>(store: &S, last: LastRefresh) -> Result<(), BrokerError> {
    let keys = store.local().keys();
    let mut warned = false;
    for keys in keys.chunks(S::BATCH.max(1)) {
        if !warned && last.lapsed() {
            warned = true;
            tracing::warn!(
                since = ?last.at.elapsed(),
                "no presence refresh for longer than the TTL: members the store lost join again"
            );
            metrics::counter!("switchboard_presence_lapsed_rounds_total").increment(1);
        }
        let (batch, _sending) = store.local().send(keys);
        if !batch.is_empty() {
            store.refresh_batch(batch, last).await?;
        }
    }
    Ok(())
}

/// This node is going: hands every member over in batches, and forgets them so
/// that no later round refreshes them. Stops at the first failure; the members
/// not handed over, no longer refreshed, expire after the TTL.
pub async fn depart_all<S: NodePresence>(store: &S) -> Result<(), BrokerError> {
    let mut left = store.local().take().await.into_iter().peekable();
    while left.peek().is_some() {
        let batch = left.by_ref().take(S::BATCH.max(1)).collect();
        store.depart_batch(batch).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::watch;
    use tokio::time::timeout;

    use super::*;

    const TTL: Duration = Duration::from_secs(3);
    /// How long a test waits for the refresher, in paused time.
    const PATIENCE: Duration = Duration::from_secs(60);

    /// What the fake store was asked, shared with the test past the store's drop.
    #[derive(Default)]
    struct Calls {
        refreshed: Mutex<Vec<(Instant, Vec<u32>)>>,
        /// Whether each refresh call was a lapsed one.
        lapsed: Mutex<Vec<bool>>,
        departed: Mutex<Vec<Vec<u32>>>,
        /// When each refresh call answered, when it takes a while.
        answered: Mutex<Vec<Instant>>,
        /// How many refresh calls had answered at each depart call.
        answered_at_depart: Mutex<Vec<usize>>,
    }

    struct Fake {
        local: LocalMembers<u32, String>,
        calls: Arc<Calls>,
        /// Refresh calls made so far, to wait on.
        count: watch::Sender<usize>,
        /// Calls (refresh or depart) numbered here fail.
        fail: Vec<usize>,
        attempt: AtomicUsize,
        /// Removed from the local members during the first refresh call.
        remove_during_first: Option<u32>,
        /// How long each refresh call takes.
        takes: Duration,
    }

    impl Fake {
        fn new(members: u32) -> Fake {
            let local = LocalMembers::new();
            for m in 0..members {
                local.insert(m, format!("member {m}"));
            }
            Fake {
                local,
                calls: Arc::default(),
                count: watch::channel(0).0,
                fail: Vec::new(),
                attempt: AtomicUsize::new(0),
                remove_during_first: None,
                takes: Duration::ZERO,
            }
        }

        fn fails(&self) -> bool {
            self.fail
                .contains(&self.attempt.fetch_add(1, Ordering::Relaxed))
        }
    }

    fn keys(batch: &[(u32, String)]) -> Vec<u32> {
        let mut keys: Vec<u32> = batch.iter().map(|(k, _)| *k).collect();
        keys.sort();
        keys
    }

    #[async_trait]
    impl NodePresence for Fake {
        type Key = u32;
        type Member = String;
        const BATCH: usize = 3;

        fn local(&self) -> &LocalMembers<u32, String> {
            &self.local
        }

        async fn refresh_batch(
            &self,
            batch: Vec<(u32, String)>,
            last: LastRefresh,
        ) -> Result<(), BrokerError> {
            self.calls.lapsed.lock().unwrap().push(last.lapsed());
            for (key, member) in &batch {
                assert_eq!(member, &format!("member {key}"), "the member as remembered");
            }
            let first = self.calls.refreshed.lock().unwrap().is_empty();
            if let (true, Some(key)) = (first, self.remove_during_first) {
                self.local.remove(&key).await;
            }
            self.calls
                .refreshed
                .lock()
                .unwrap()
                .push((Instant::now(), keys(&batch)));
            self.count.send_modify(|n| *n += 1);
            if !self.takes.is_zero() {
                tokio::time::sleep(self.takes).await;
                self.calls.answered.lock().unwrap().push(Instant::now());
            }
            if self.fails() {
                return Err(BrokerError::Unavailable("store down".into()));
            }
            Ok(())
        }

        async fn depart_batch(&self, batch: Vec<(u32, String)>) -> Result<(), BrokerError> {
            let answered = self.calls.answered.lock().unwrap().len();
            self.calls.answered_at_depart.lock().unwrap().push(answered);
            self.calls.departed.lock().unwrap().push(keys(&batch));
            if self.fails() {
                return Err(BrokerError::Unavailable("store down".into()));
            }
            Ok(())
        }
    }

    /// Waits until the fake was asked to refresh `calls` batches in all.
    async fn refreshes(store: &Fake, calls: usize) {
        let mut count = store.count.subscribe();
        timeout(PATIENCE, count.wait_for(|n| *n >= calls))
            .await
            .unwrap_or_else(|_| panic!("fewer than {calls} refresh calls"))
            .unwrap();
    }

    /// The keys refreshed in each round, rounds told apart by their instant.
    fn rounds(calls: &Calls, start: Instant) -> Vec<(Duration, Vec<u32>)> {
        let mut rounds: Vec<(Duration, Vec<u32>)> = Vec::new();
        for (at, keys) in calls.refreshed.lock().unwrap().iter() {
            let at = *at - start;
            match rounds.last_mut() {
                Some((last, all)) if *last == at => all.extend(keys),
                _ => rounds.push((at, keys.clone())),
            }
        }
        for (_, keys) in &mut rounds {
            keys.sort();
        }
        rounds
    }

    #[tokio::test(start_paused = true)]
    async fn every_member_is_refreshed_in_batches_every_third_of_the_ttl() {
        let store = Arc::new(Fake::new(7));
        let start = Instant::now();
        let _task = spawn(&store, TTL);
        refreshes(&store, 6).await;
        let batches: Vec<usize> = store.calls.refreshed.lock().unwrap()[..6]
            .iter()
            .map(|(_, keys)| keys.len())
            .collect();
        assert_eq!(batches, [3, 3, 1, 3, 3, 1]);
        let all: Vec<u32> = (0..7).collect();
        assert_eq!(
            rounds(&store.calls, start)[..2],
            [(TTL / 3, all.clone()), (TTL / 3 * 2, all)],
            "no round at the start; one every third of the TTL"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_removed_during_a_round_is_not_put_back() {
        let mut fake = Fake::new(7);
        // Batches follow the map's order: take a key of the last batch.
        let last = *fake.local.keys().last().unwrap();
        fake.remove_during_first = Some(last);
        let store = Arc::new(fake);
        let start = Instant::now();
        let _task = spawn(&store, TTL);
        refreshes(&store, 3).await;
        let first = &rounds(&store.calls, start)[0];
        assert_eq!(first.1.len(), 6, "{first:?}");
        assert!(!first.1.contains(&last), "{last} put back: {first:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_removed_while_its_batch_is_on_the_way_is_removed_once_the_batch_is_through() {
        let mut fake = Fake::new(7);
        fake.takes = Duration::from_secs(1);
        let store = Arc::new(fake);
        let _task = spawn(&store, TTL);
        refreshes(&store, 1).await;
        let batch = store.calls.refreshed.lock().unwrap()[0].1.clone();
        let (in_batch, other) = (batch[0], (0..7).find(|k| !batch.contains(k)).unwrap());

        // A member of another batch goes at once; one of the batch under way only
        // once the store has answered, so that its removal there comes after.
        store.local.remove(&other).await;
        assert!(store.calls.answered.lock().unwrap().is_empty());
        store.local.remove(&in_batch).await;
        let removed = Instant::now();
        let answered = store.calls.answered.lock().unwrap().clone();
        assert_eq!(answered.len(), 1, "{answered:?}");
        assert!(answered[0] <= removed);
        assert_eq!(store.local.len(), 5);

        // Nothing waits once the batch is through.
        refreshes(&store, 2).await;
        let second = store.calls.refreshed.lock().unwrap()[1].1.clone();
        assert!(
            !second.contains(&in_batch) && !second.contains(&other),
            "{second:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_ends_the_round_and_the_next_round_refreshes_everyone() {
        let mut fake = Fake::new(7);
        fake.fail = vec![0];
        let store = Arc::new(fake);
        let start = Instant::now();
        let _task = spawn(&store, TTL);
        refreshes(&store, 4).await;
        let rounds = rounds(&store.calls, start);
        assert_eq!(rounds[0].1.len(), 3, "one failed batch: {rounds:?}");
        assert_eq!(rounds[1], (TTL / 3 * 2, (0..7).collect()));
    }

    #[tokio::test(start_paused = true)]
    async fn after_no_round_succeeded_for_longer_than_the_ttl_the_next_round_is_lapsed() {
        // Rounds at 1, 2, 3 and 4 s fail (their first batch); the one at 5 s works.
        let mut fake = Fake::new(7);
        fake.fail = vec![0, 1, 2, 3];
        let store = Arc::new(fake);
        let _task = spawn(&store, TTL);
        refreshes(&store, 10).await;
        let lapsed = store.calls.lapsed.lock().unwrap()[..10].to_vec();
        assert_eq!(
            lapsed,
            [false, false, false, true, true, true, true, false, false, false],
            "lapsed from the first round more than a TTL after the last success, until one succeeds"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn batches_sent_more_than_a_ttl_after_the_last_round_are_lapsed_even_mid_round() {
        // Each call takes a TTL (a node frozen in the middle of its round): the
        // round's later batches go out when the store may have lost their members.
        let mut fake = Fake::new(7);
        fake.takes = TTL;
        let store = Arc::new(fake);
        let _task = spawn(&store, TTL);
        refreshes(&store, 3).await;
        let lapsed = store.calls.lapsed.lock().unwrap()[..3].to_vec();
        assert_eq!(lapsed, [false, true, true]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tiny_ttl_refreshes_every_100_ms() {
        let store = Arc::new(Fake::new(1));
        let start = Instant::now();
        let _task = spawn(&store, Duration::ZERO);
        refreshes(&store, 2).await;
        let at: Vec<Duration> = rounds(&store.calls, start)
            .into_iter()
            .map(|(at, _)| at)
            .collect();
        assert_eq!(at[..2], [MIN_EVERY, MIN_EVERY * 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_refresher_stops_once_its_store_is_dropped() {
        let store = Arc::new(Fake::new(2));
        let calls = store.calls.clone();
        let task = spawn(&store, TTL);
        refreshes(&store, 1).await;
        drop(store);
        timeout(PATIENCE, task)
            .await
            .expect("the refresher outlived its store")
            .unwrap();
        assert_eq!(calls.refreshed.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn departing_hands_everyone_over_in_batches_and_nobody_is_refreshed_after() {
        let store = Arc::new(Fake::new(7));
        let _task = spawn(&store, TTL);
        depart_all(&*store).await.unwrap();
        let departed = store.calls.departed.lock().unwrap().clone();
        let sizes: Vec<usize> = departed.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3, 1]);
        let mut all: Vec<u32> = departed.concat();
        all.sort();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
        assert!(store.local.is_empty());

        // A member added after is refreshed, and only it.
        store.local.insert(100, "member 100".into());
        refreshes(&store, 1).await;
        let refreshed = store.calls.refreshed.lock().unwrap().clone();
        assert_eq!(refreshed[0].1, [100], "{refreshed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn departing_waits_for_a_refresh_batch_on_its_way() {
        let mut fake = Fake::new(7);
        fake.takes = Duration::from_secs(1);
        let store = Arc::new(fake);
        let _task = spawn(&store, TTL);
        refreshes(&store, 1).await;
        depart_all(&*store).await.unwrap();
        let answered = store.calls.answered_at_depart.lock().unwrap().clone();
        assert_eq!(
            answered,
            [1, 1, 1],
            "every depart call after the batch answered"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn departing_stops_at_the_first_failure_and_forgets_everyone() {
        let mut fake = Fake::new(7);
        fake.fail = vec![0];
        let store = Arc::new(fake);
        assert!(depart_all(&*store).await.is_err());
        assert_eq!(store.calls.departed.lock().unwrap().len(), 1);
        assert!(store.local.is_empty());
    }
}
