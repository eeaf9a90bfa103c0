//! A connection's outbound queue, bounded in bytes.
//!
//! Producers (the hub's fan-out, command replies) never wait: a record that would
//! take the queue past its limit closes the connection as a slow consumer instead,
//! so one slow client never slows anyone else. One writer per connection drains
//! everything queued at once, so records queued together leave in one frame.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::disconnect::Disconnect;

/// One encoded reply or push.
#[derive(Debug, Clone)]
pub struct Record {
    pub data: Bytes,
    /// When the publication inside was accepted (µs since the Unix epoch); 0 for
    /// records that are not publications.
    pub time_us: u64,
}

impl Record {
    pub fn new(data: Bytes) -> Record {
        Record { data, time_us: 0 }
    }
}

/// Why a record was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The connection is closing.
    Closed,
    /// The queue was full: the connection is now closing as a slow consumer.
    Overflow,
}

/// What the writer gets from [`Outbound::try_batch`].
#[derive(Debug)]
pub enum Batch {
    /// Records to write, oldest first.
    Records,
    /// Close the connection; records still queued are left unsent.
    Close(Disconnect),
}

#[derive(Debug)]
pub struct Outbound {
    state: Mutex<State>,
    notify: Notify,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    records: VecDeque<Record>,
    bytes: usize,
    close: Option<Disconnect>,
    /// Write what is queued before closing.
    flush_before_close: bool,
}

impl Outbound {
    pub fn new(max_bytes: usize) -> Outbound {
        Outbound {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every update is a push or a drain), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a pushed record (fan-out), or refuses it when the connection is
    /// closing or the record would take the queue past its limit (which closes the
    /// connection with [`Disconnect::SLOW`]).
    pub fn push(&self, record: Record) -> Result<(), Dropped> {
        self.enqueue(record, false)
    }

    /// Queues the reply to a client's own command. A reply may take the queue past
    /// its limit once (a recovery or history reply can be large, and refusing it
    /// would only make the client ask again); it is refused only when the queue is
    /// already over the limit.
    pub fn push_reply(&self, record: Record) -> Result<(), Dropped> {
        self.enqueue(record, true)
    }

    fn enqueue(&self, record: Record, reply: bool) -> Result<(), Dropped> {
        let mut state = self.lock();
        if state.close.is_some() {
            return Err(Dropped::Closed);
        }
        let after = if reply {
            state.bytes
        } else {
            state.bytes + record.data.len()
        };
        if after > self.max_bytes && !state.records.is_empty() {
            state.close = Some(Disconnect::SLOW);
            state.flush_before_close = false;
            drop(state);
            self.notify.notify_one();
            return Err(Dropped::Overflow);
        }
        state.bytes += record.data.len();
        state.records.push_back(record);
        drop(state);
        self.notify.notify_one();
        Ok(())
    }

    /// Asks the writer to close the connection. With `flush`, records queued
    /// before the close are written first. The first close wins.
    pub fn close(&self, disconnect: Disconnect, flush: bool) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some(disconnect);
            state.flush_before_close = flush;
        }
        drop(state);
        self.notify.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Closed without flushing (a slow consumer): what is queued or still
    /// pending in the writer will not be written.
    pub fn is_dropping(&self) -> bool {
        let state = self.lock();
        state.close.is_some() && !state.flush_before_close
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Takes what there is to do now, without waiting: every queued record
    /// (moved into `out`), or the close once nothing more is to be written.
    pub fn try_batch(&self, out: &mut Vec<Record>) -> Option<Batch> {
        let mut state = self.lock();
        let flush = state.flush_before_close;
        if let Some(close) = state.close.clone() {
            if !flush || state.records.is_empty() {
                state.records.clear();
                state.bytes = 0;
                return Some(Batch::Close(close));
            }
        }
        if state.records.is_empty() {
            return None;
        }
        out.extend(state.records.drain(..));
        state.bytes = 0;
        Some(Batch::Records)
    }

    /// Completes after the queue changed (a record, a close, or [`Outbound::wake`])
    /// since the last such future completed; a change with nobody waiting is
    /// remembered, so checking [`Outbound::try_batch`] and then waiting on this
    /// misses nothing.
    pub fn changed(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Wakes the writer without queueing anything (the owner has other work for it).
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: usize) -> Record {
        Record::new(Bytes::from(vec![b'x'; n]))
    }

    #[tokio::test]
    async fn drains_everything_queued_at_once() {
        let q = Outbound::new(100);
        q.push(rec(10)).unwrap();
        q.push(rec(10)).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            q.try_batch(&mut out).expect("something to do"),
            Batch::Records
        ));
        assert_eq!(out.len(), 2);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn overflow_closes_as_slow_and_drops_the_backlog() {
        let q = Outbound::new(25);
        q.push(rec(10)).unwrap();
        q.push(rec(10)).unwrap();
        assert_eq!(q.push(rec(10)), Err(Dropped::Overflow));
        assert_eq!(q.push(rec(1)), Err(Dropped::Closed));
        let mut out = Vec::new();
        match q.try_batch(&mut out).expect("something to do") {
            Batch::Close(d) => assert_eq!(d, Disconnect::SLOW),
            other => panic!("a slow consumer's backlog must not be written: {other:?}"),
        }
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn a_single_record_larger_than_the_limit_still_goes_out() {
        let q = Outbound::new(5);
        q.push(rec(10)).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            q.try_batch(&mut out).expect("something to do"),
            Batch::Records
        ));
    }

    #[tokio::test]
    async fn a_reply_may_overshoot_the_limit_once() {
        let q = Outbound::new(25);
        q.push(rec(10)).unwrap();
        q.push_reply(rec(100)).unwrap();
        assert_eq!(q.push_reply(rec(1)), Err(Dropped::Overflow));
        assert!(q.is_closed());
    }

    #[tokio::test]
    async fn flushing_close_writes_backlog_first() {
        let q = Outbound::new(100);
        q.push(rec(1)).unwrap();
        q.close(Disconnect::SHUTDOWN, true);
        q.close(Disconnect::SLOW, false);
        let mut out = Vec::new();
        assert!(matches!(
            q.try_batch(&mut out).expect("something to do"),
            Batch::Records
        ));
        assert_eq!(out.len(), 1);
        match q.try_batch(&mut out).expect("something to do") {
            Batch::Close(d) => assert_eq!(d, Disconnect::SHUTDOWN),
            other => panic!("expected close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_change_with_nobody_waiting_is_remembered() {
        let q = Outbound::new(100);
        let mut out = Vec::new();
        assert!(q.try_batch(&mut out).is_none());
        q.push(rec(1)).unwrap();
        // Nobody waited when the record came: the next wait must not miss it.
        tokio::select! {
            biased;
            () = q.changed() => {}
            () = std::future::ready(()) => panic!("the push was forgotten"),
        }
        assert!(matches!(q.try_batch(&mut out), Some(Batch::Records)));
        q.wake();
        tokio::select! {
            biased;
            () = q.changed() => {}
            () = std::future::ready(()) => panic!("the wake was forgotten"),
        }
        assert!(q.try_batch(&mut out).is_none(), "a wake queues nothing");
    }

    #[tokio::test]
    async fn writer_wakes_on_push() {
        let q = std::sync::Arc::new(Outbound::new(100));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move {
            q2.changed().await;
            let mut out = Vec::new();
            q2.try_batch(&mut out);
            out.len()
        });
        tokio::task::yield_now().await;
        q.push(rec(1)).unwrap();
        assert_eq!(waiter.await.unwrap(), 1);
    }
}
