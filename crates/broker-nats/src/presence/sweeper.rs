//! Members of gateways that died: found overdue, announced as leaves, deleted.
//!
//! Every presence replica (or, without a presence service, every gateway) runs
//! one; one at a time sweeps: it holds a lease (`_lease` in the members bucket,
//! renewed on every sweep by compare-and-set; taken over by CAS when it is older
//! than half the TTL). A member is deleted with the revision the sweeper saw, after
//! its leave went out with the departure's id, so even two sweepers (a lease
//! handing over, or a sweeper killed mid-sweep and the next one) deliver each
//! leave once (see [`super::expiry`]). A gateway
//! refreshes its members every third of the TTL, so a member is overdue only when
//! its gateway stopped: its leave goes out between one TTL and a TTL and a
//! quarter after the last refresh.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;

use super::expiry::{Rejoin, Unfinished};
use super::store::PresenceBucket;

const LEASE: &str = "_lease";
/// Overdue members read at a time; a sweep reads at most `BATCHES` of them
/// (100,000 members) and leaves the rest to the next one.
const BATCH: usize = 5_000;
const BATCHES: usize = 20;
/// Expirations in flight at once (each is a few NATS round trips).
const IN_FLIGHT: usize = 64;

/// Sweeps every quarter of the TTL while the bucket is in use (or until the
/// task is dropped). Every round also sets the members and users gauges.
pub async fn run_while(bucket: Weak<PresenceBucket>, replica: String) {
    let Some(every) = bucket
        .upgrade()
        .map(|b| (b.ttl() / 4).max(Duration::from_millis(100)))
    else {
        return;
    };
    let mut lease: Option<u64> = None;
    let mut unfinished = Vec::new();
    loop {
        tokio::time::sleep(every.mul_f64(0.9 + 0.2 * fastrand::f64())).await;
        let Some(bucket) = bucket.upgrade() else {
            return;
        };
        sweep(&bucket, &replica, &mut lease, &mut unfinished).await;
    }
}

/// Leaves undone half-way kept for a retry at most; beyond, the oldest are given
/// up (and said so in the log).
const MAX_UNFINISHED: usize = 100_000;

async fn sweep(
    bucket: &Arc<PresenceBucket>,
    replica: &str,
    lease: &mut Option<u64>,
    unfinished: &mut Vec<Rejoin>,
) {
    // Leaves this replica undid earlier, half-way.
    for mut rejoin in std::mem::take(unfinished) {
        if let Err(e) = bucket.undo_leave(&mut rejoin).await {
            tracing::warn!(error = %e, "undoing a leave failed again");
            unfinished.push(rejoin);
        }
    }
    if let Ok((members, users)) = bucket.totals().await {
        // The lease is a key of the members bucket too.
        metrics::gauge!("switchboard_presence_members").set(members.saturating_sub(1) as f64);
        metrics::gauge!("switchboard_presence_users").set(users as f64);
    }
    if !hold_lease(bucket, replica, lease).await {
        return;
    }
    metrics::counter!("switchboard_presence_sweeps_total").increment(1);
    for _ in 0..BATCHES {
        let stale = match bucket.stale(BATCH).await {
            Ok(stale) => stale,
            Err(e) => {
                tracing::warn!(error = %e, "presence sweep failed");
                return;
            }
        };
        let full = stale.len() == BATCH;
        let failed = std::sync::Mutex::new(Vec::new());
        futures::stream::iter(stale)
            .for_each_concurrent(IN_FLIGHT, |member| {
                let failed = &failed;
                async move {
                    match bucket.expire(member).await {
                        Ok(true) => {
                            metrics::counter!("switchboard_presence_expired_total").increment(1)
                        }
                        Ok(false) => {}
                        Err(Unfinished { error, rejoin }) => {
                            tracing::warn!(%error, "expiring a member failed");
                            if let Some(r) = rejoin {
                                failed.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                            }
                        }
                    }
                }
            })
            .await;
        unfinished.extend(failed.into_inner().unwrap_or_else(|e| e.into_inner()));
        if unfinished.len() > MAX_UNFINISHED {
            let dropped = unfinished.len() - MAX_UNFINISHED;
            tracing::error!(dropped, "giving up undoing presence leaves");
            unfinished.drain(..dropped);
        }
        if !full {
            return;
        }
    }
}

/// Renews the lease this replica holds, or takes a free or stale one.
async fn hold_lease(bucket: &PresenceBucket, replica: &str, lease: &mut Option<u64>) -> bool {
    let store = bucket.store();
    let me = Bytes::from(replica.to_owned());
    if let Some(revision) = *lease {
        match store.update(LEASE, me.clone(), revision).await {
            Ok(next) => {
                *lease = Some(next);
                return true;
            }
            Err(_) => *lease = None,
        }
    }
    if let Ok(Some(revision)) = bucket.members.create(LEASE, me.clone()).await {
        *lease = Some(revision);
        return true;
    }
    let Ok(Some(current)) = bucket.members.entry(LEASE).await else {
        return false;
    };
    let created: SystemTime = current.created.into();
    let age = SystemTime::now()
        .duration_since(created)
        .unwrap_or_default();
    let free = current.operation != kv::Operation::Put || age > bucket.ttl() / 2;
    if !free {
        return false;
    }
    match store.update(LEASE, me, current.revision).await {
        Ok(revision) => {
            tracing::info!(replica, "took over the presence sweep lease");
            *lease = Some(revision);
            true
        }
        Err(_) => false,
    }
}
