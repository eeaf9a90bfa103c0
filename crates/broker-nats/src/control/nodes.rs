//! The registry of live gateways: one key per gateway in the `<prefix>-nodes`
//! bucket, put again well inside the TTL, deleted on a clean shutdown.
//!
//! Each gateway watches the bucket and keeps its own view: a node is live until
//! the TTL after its last put. The bucket's `max_age` is the same TTL, so a
//! gateway that starts later never sees the entry of one that died long ago.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::StreamExt;

use crate::presence::bucket::Bucket;
use crate::NatsError;

/// What one gateway last announced, and until when it counts as live.
struct Seen {
    value: Bytes,
    until: Instant,
}

/// The live gateways as this one sees them.
#[derive(Clone, Default)]
pub(super) struct View {
    nodes: Arc<Mutex<HashMap<String, Seen>>>,
}

impl View {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an announcement made `age` ago.
    pub(super) fn seen(&self, id: &str, value: Bytes, ttl: Duration, age: Duration) {
        let until = Instant::now() + ttl.saturating_sub(age);
        self.lock().insert(id.to_owned(), Seen { value, until });
    }

    pub(super) fn gone(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Live nodes by id, in id order; forgets the ones past their TTL.
    pub(super) fn live(&self) -> Vec<(String, Bytes)> {
        let now = Instant::now();
        let mut nodes = self.lock();
        nodes.retain(|_, seen| seen.until > now);
        let mut live: Vec<(String, Bytes)> = nodes
            .iter()
            .map(|(id, seen)| (id.clone(), seen.value.clone()))
            .collect();
        drop(nodes);
        live.sort_by(|a, b| a.0.cmp(&b.0));
        metrics::gauge!("switchboard_cluster_nodes").set(live.len() as f64);
        live
    }
}

/// How long ago the server stored `entry`, by this machine's clock (zero when
/// the clocks disagree the other way).
fn age(entry: &kv::Entry) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let created = entry.created.unix_timestamp_nanos();
    Duration::from_nanos((now - created).clamp(0, u64::MAX as i128) as u64)
}

/// Reads every entry of the bucket into `view`.
pub(super) async fn load(bucket: &Bucket, view: &View, ttl: Duration) -> Result<(), NatsError> {
    let failed = |e: &dyn std::fmt::Display| NatsError::Stream {
        stream: bucket.store.name.clone(),
        reason: e.to_string(),
    };
    let mut keys = bucket.store.keys().await.map_err(|e| failed(&e))?;
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| failed(&e))?;
        if let Some(entry) = bucket.entry(&key).await.map_err(|e| failed(&e))? {
            if entry.operation == Operation::Put {
                view.seen(&entry.key, entry.value.clone(), ttl, age(&entry));
            }
        }
    }
    Ok(())
}

/// Follows the bucket into `view` until the task is aborted; a watch that ends
/// (NATS restarted, say) is started again after a pause.
pub(super) async fn watch(store: kv::Store, view: View, ttl: Duration) {
    let mut pause = Duration::from_millis(100);
    loop {
        match store.watch_all().await {
            Ok(mut entries) => {
                pause = Duration::from_millis(100);
                while let Some(entry) = entries.next().await {
                    match entry {
                        Ok(entry) => match entry.operation {
                            Operation::Put => {
                                let age = age(&entry);
                                view.seen(&entry.key, entry.value, ttl, age);
                            }
                            Operation::Delete | Operation::Purge => view.gone(&entry.key),
                        },
                        Err(e) => {
                            tracing::debug!(error = %e, "node registry watch failed");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "node registry watch cannot start"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_live_for_the_ttl_after_its_announcement() {
        let view = View::default();
        view.seen(
            "b",
            Bytes::from_static(b"2"),
            Duration::from_secs(60),
            Duration::ZERO,
        );
        view.seen(
            "a",
            Bytes::from_static(b"1"),
            Duration::from_secs(60),
            Duration::ZERO,
        );
        // Announced longer ago than the TTL: already gone.
        view.seen(
            "c",
            Bytes::from_static(b"3"),
            Duration::from_secs(1),
            Duration::from_secs(2),
        );
        let ids: Vec<String> = view.live().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["a", "b"]);
        view.gone("a");
        assert_eq!(view.live().len(), 1);
    }
}
