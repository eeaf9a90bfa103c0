//! The embedded mode's webhook state and queue: one process, so a map and a
//! channel, with the semantics of the shared ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::broker::BrokerError;
use crate::hooks::{HookQueue, HookState, Job, Taken};

/// Keys with revisions in a map.
#[derive(Default)]
pub struct MemoryHookState {
    entries: Mutex<HashMap<String, (Bytes, u64)>>,
    revision: AtomicU64,
}

impl MemoryHookState {
    pub fn new() -> MemoryHookState {
        MemoryHookState::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Bytes, u64)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next(&self) -> u64 {
        self.revision.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[async_trait]
impl HookState for MemoryHookState {
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, BrokerError> {
        Ok(self.lock().get(key).cloned())
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, BrokerError> {
        let mut entries = self.lock();
        if entries.contains_key(key) {
            return Ok(None);
        }
        let revision = self.next();
        entries.insert(key.to_owned(), (value, revision));
        Ok(Some(revision))
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<Option<u64>, BrokerError> {
        let mut entries = self.lock();
        match entries.get_mut(key) {
            Some(entry) if entry.1 == revision => {
                let written = self.next();
                *entry = (value, written);
                Ok(Some(written))
            }
            _ => Ok(None),
        }
    }

    async fn delete(&self, key: &str, revision: u64) -> Result<bool, BrokerError> {
        let mut entries = self.lock();
        match entries.get(key) {
            Some(entry) if entry.1 == revision => {
                entries.remove(key);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BrokerError> {
        Ok(self
            .lock()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

/// Jobs waiting at most; more are refused.
const QUEUE_LIMIT: usize = 65_536;

struct Queued {
    job: Job,
    deliveries: u32,
}

/// A bounded channel of jobs; one handed out again waits in a timer task.
pub struct MemoryHookQueue {
    tx: mpsc::Sender<Queued>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Queued>>,
    in_flight: Arc<AtomicU64>,
}

impl Default for MemoryHookQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
        MemoryHookQueue {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            in_flight: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl MemoryHookQueue {
    pub fn new() -> MemoryHookQueue {
        MemoryHookQueue::default()
    }
}

#[async_trait]
impl HookQueue for MemoryHookQueue {
    async fn push(&self, job: &Job) -> Result<(), BrokerError> {
        let queued = Queued {
            job: job.clone(),
            deliveries: 0,
        };
        self.tx
            .try_send(queued)
            .map_err(|_| BrokerError::Unavailable(format!("{QUEUE_LIMIT} webhook jobs queued")))?;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn take(&self) -> Result<Box<dyn Taken>, BrokerError> {
        let mut rx = self.rx.lock().await;
        let Some(mut queued) = rx.recv().await else {
            return Err(BrokerError::Unavailable(
                "the webhook queue is closed".into(),
            ));
        };
        queued.deliveries += 1;
        Ok(Box::new(MemoryTaken {
            queued,
            tx: self.tx.clone(),
            in_flight: self.in_flight.clone(),
        }))
    }

    async fn depth(&self) -> Result<u64, BrokerError> {
        Ok(self.in_flight.load(Ordering::Relaxed))
    }
}

struct MemoryTaken {
    queued: Queued,
    tx: mpsc::Sender<Queued>,
    in_flight: Arc<AtomicU64>,
}

#[async_trait]
impl Taken for MemoryTaken {
    fn job(&self) -> &Job {
        &self.queued.job
    }

    fn deliveries(&self) -> u32 {
        self.queued.deliveries
    }

    async fn done(self: Box<Self>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    async fn again(self: Box<Self>, after: Duration) {
        let MemoryTaken {
            queued,
            tx,
            in_flight,
        } = *self;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if tx.send(queued).await.is_err() {
                in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }

    async fn give_up(self: Box<Self>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
