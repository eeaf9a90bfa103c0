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
//! it was away; its next round is a *lapsed* one, in which the members the store
//! lost join again, with their joins announced, so that presence comes back
//! coherent (a leave, then a join) instead of holding members nobody announced.
//! The store says how one batch is refreshed or handed
//! over ([`NodePresence`]): the gateway on the JetStream buckets puts members one
//! by one, the gateway of the presence service sends a few hundred per call.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;

use crate::broker::BrokerError;

/// Shortest time between rounds, whatever the TTL: a zero period would make the
/// ticker panic, and a shorter one would refresh faster than a store answers.
const MIN_EVERY: Duration = Duration::from_millis(100);

/// This node's members of a shared presence store, by key.
pub struct LocalMembers<K, M> {
    members: Mutex<HashMap<K, M>>,
}

impl<K: Eq + Hash + Clone, M: Clone> LocalMembers<K, M> {
    pub fn new() -> Self {
        LocalMembers {
            members: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers a member, in place of one with the same key.
    pub fn insert(&self, key: K, member: M) {
        self.lock().insert(key, member);
    }

    /// Forgets a member: no round puts it back, even one under way.
    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn keys(&self) -> Vec<K> {
        self.lock().keys().cloned().collect()
    }

    /// Those of `keys` still remembered, with their members as they are now.
    fn still_here(&self, keys: &[K]) -> Vec<(K, M)> {
        let members = self.lock();
        keys.iter()
            .filter_map(|k| members.get(k).map(|m| (k.clone(), m.clone())))
            .collect()
    }

    fn take(&self) -> Vec<(K, M)> {
        self.lock().drain().collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, M>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Eq + Hash + Clone, M: Clone> Default for LocalMembers<K, M> {
    fn default() -> Self {
        LocalMembers::new()
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
    /// `lapsed` (no round succeeded for longer than the TTL), a member the store
    /// lost joins again: its user's count and a join announced, as on a join.
    async fn refresh_batch(
        &self,
        batch: Vec<(Self::Key, Self::Member)>,
        lapsed: bool,
    ) -> Result<(), BrokerError>;

    /// Removes members now and announces their leaves: their node is going.
    async fn depart_batch(&self, batch: Vec<(Self::Key, Self::Member)>) -> Result<(), BrokerError>;
}

/// Refreshes `store`'s members every third of `ttl`, the first time a third of
/// `ttl` from now, until the store is dropped.
pub fn spawn<S: NodePresence>(store: &Arc<S>, ttl: Duration) -> JoinHandle<()> {
    tokio::spawn(run(Arc::downgrade(store), (ttl / 3).max(MIN_EVERY), ttl))
}

async fn run<S: NodePresence>(store: Weak<S>, every: Duration, ttl: Duration) {
    let mut ticker = tokio::time::interval(every);
    // The first tick is immediate: members just added need no refresh.
    ticker.tick().await;
    // When the last round that succeeded started (the members' last refresh).
    let mut refreshed = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        let Some(store) = store.upgrade() else { return };
        let started = tokio::time::Instant::now();
        let lapsed = started.duration_since(refreshed) > ttl.max(every);
        if lapsed {
            tracing::warn!(
                since = ?started.duration_since(refreshed),
                "no presence refresh for longer than the TTL: members the store lost join again"
            );
            metrics::counter!("switchboard_presence_lapsed_rounds_total").increment(1);
        }
        match refresh_round(&*store, lapsed).await {
            Ok(()) => refreshed = started,
            Err(e) => tracing::warn!(error = %e, "presence refresh failed"),
        }
        metrics::gauge!("switchboard_presence_local_members").set(store.local().len() as f64);
    }
}

/// Every member once, in batches. Each batch is read afresh: a member removed
/// during the round must not be put back (it would come back as a ghost, then
/// expire with a second leave). The first failure ends the round: the store is
/// most likely unreachable, and the next round comes well inside the TTL.
async fn refresh_round<S: NodePresence>(store: &S, lapsed: bool) -> Result<(), BrokerError> {
    let keys = store.local().keys();
    for keys in keys.chunks(S::BATCH.max(1)) {
        let batch = store.local().still_here(keys);
        if !batch.is_empty() {
            store.refresh_batch(batch, lapsed).await?;
        }
    }
    Ok(())
}

/// This node is going: hands every member over in batches, and forgets them so
/// that no later round refreshes them. Stops at the first failure; the members
/// not handed over, no longer refreshed, expire after the TTL.
pub async fn depart_all<S: NodePresence>(store: &S) -> Result<(), BrokerError> {
    let mut left = store.local().take().into_iter().peekable();
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
    use tokio::time::{timeout, Instant};

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
            lapsed: bool,
        ) -> Result<(), BrokerError> {
            self.calls.lapsed.lock().unwrap().push(lapsed);
            for (key, member) in &batch {
                assert_eq!(member, &format!("member {key}"), "the member as remembered");
            }
            let mut refreshed = self.calls.refreshed.lock().unwrap();
            if refreshed.is_empty() {
                if let Some(key) = self.remove_during_first {
                    self.local.remove(&key);
                }
            }
            refreshed.push((Instant::now(), keys(&batch)));
            drop(refreshed);
            self.count.send_modify(|n| *n += 1);
            if self.fails() {
                return Err(BrokerError::Unavailable("store down".into()));
            }
            Ok(())
        }

        async fn depart_batch(&self, batch: Vec<(u32, String)>) -> Result<(), BrokerError> {
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
    async fn departing_stops_at_the_first_failure_and_forgets_everyone() {
        let mut fake = Fake::new(7);
        fake.fail = vec![0];
        let store = Arc::new(fake);
        assert!(depart_all(&*store).await.is_err());
        assert_eq!(store.calls.departed.lock().unwrap().len(), 1);
        assert!(store.local.is_empty());
    }
}
