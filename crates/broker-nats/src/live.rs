//! One task per channel with local subscribers: receives the channel's live
//! subject, delivers in stream order, and repairs gaps.
//!
//! Republished messages carry `Nats-Sequence` (the offset) and
//! `Nats-Last-Sequence` (the channel's previous offset). When the previous offset
//! is not the last one delivered, messages were missed (core NATS is at most once,
//! e.g. across a reconnect): they are read from the stream and delivered first.
//! After a reconnect the channel's newest offset is checked too, for messages
//! missed with none after them. When a gap cannot be filled, the channel's local
//! subscribers are told to reconnect and recover. A leave a presence sweeper
//! announces again (it took over from one killed half-way) is dropped by its
//! departure id.

use std::sync::Arc;

use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use switchboard_core::backoff::Backoff;
use switchboard_core::BrokerError;

use crate::history::{last_offset, prove_complete, range};
use crate::{envelope, Shared};

/// Most messages read to fill one gap; larger gaps make subscribers recover.
const MAX_FILL: usize = 10_000;

/// How long a gap fill, or the check for missed messages after a reconnect,
/// retries reads that fail for a while (the channel's stream electing a new leader
/// after a NATS node died, which takes seconds) before the subscribers are reset.
/// Meanwhile the channel's live messages wait behind the fill, in order.
const FILL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long one read of the check after a reconnect may take before it is tried
/// again (see [`FILL_PATIENCE`]).
const CHECK_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(1);

/// The window over which channel tasks check for missed messages after a reconnect.
const RECONNECT_SPREAD: std::time::Duration = std::time::Duration::from_millis(500);

struct Channel {
    shared: Arc<Shared>,
    name: String,
    /// Offset of the last publication delivered; `None` until the first.
    last: Option<u64>,
    departures: Departures,
}

/// How long a delivered leave is remembered: a sweeper that takes over from one
/// killed mid-sweep repeats its leaves within about a presence TTL, and a gateway
/// frozen past the TTL announces its own when it continues.
const DEPARTURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(300);
/// Leaves remembered per channel at most.
const MAX_DEPARTURES: usize = 100_000;

/// The clients whose leave was delivered lately and who have not joined since, so
/// that a leave announced twice is delivered once: by two sweepers (one repeating
/// what one killed mid-sweep did), or by a sweeper and the member's own gateway
/// (frozen past the presence TTL, then continued: its connections' ends announce
/// leaves the sweep already did). A client id names one connection, so a second
/// leave with no join between is the same departure.
///
/// A sweeper that finds the member refreshed after its leave undoes it with a
/// join carrying the leave's id. That join comes from another NATS connection
/// than the member's own leave, so the two may arrive either way round: it is
/// delivered only while that leave is the last word, never after the
/// connection's own leave.
#[derive(Default)]
struct Departures {
    order: std::collections::VecDeque<(std::time::Instant, String)>,
    gone: std::collections::HashMap<String, (std::time::Instant, Gone)>,
}

/// Who said a client left.
#[derive(Debug, PartialEq)]
enum Gone {
    /// A sweeper, with the departure's id: a join with that id may undo it.
    Swept(String),
    /// Its own gateway: the connection's subscription ended.
    Left,
}

impl Departures {
    /// Whether a leave of `client` (`departure`: a sweeper's id, empty for its
    /// own gateway's) is the first since it joined; remembers it.
    fn first_leave(&mut self, client: &str, departure: &str) -> bool {
        let now = std::time::Instant::now();
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < DEPARTURE_MEMORY && self.order.len() < MAX_DEPARTURES {
                break;
            }
            if let Some((at, old)) = self.order.pop_front() {
                // Only its own entry: the client may have joined and left again since.
                if self.gone.get(&old).map(|(when, _)| *when) == Some(at) {
                    self.gone.remove(&old);
                }
            }
        }
        let said = if departure.is_empty() {
            Gone::Left
        } else {
            Gone::Swept(departure.to_owned())
        };
        if let Some((_, gone)) = self.gone.get_mut(client) {
            if said == Gone::Left {
                *gone = Gone::Left; // no sweeper's join undoes this one
            }
            return false;
        }
        self.gone.insert(client.to_owned(), (now, said));
        self.order.push_back((now, client.to_owned()));
        true
    }

    /// Whether a join of `client` is to be delivered (`departure`: the id of the
    /// sweeper's leave it undoes, empty for its own gateway's join); a delivered
    /// join makes its next leave a new one.
    fn joined(&mut self, client: &str, departure: &str) -> bool {
        if !departure.is_empty() {
            match self.gone.get(client) {
                Some((_, Gone::Swept(id))) if id == departure => {}
                // Its leave was not seen here (the channel was not followed then):
                // nothing to undo, and nothing said it left for good.
                None => return true,
                // It left on its own since, or was swept again.
                Some(_) => return false,
            }
        }
        self.gone.remove(client);
        true
    }
}

pub(crate) async fn run(shared: Arc<Shared>, name: String, mut subscriber: async_nats::Subscriber) {
    let mut reconnects = shared.reconnects.clone();
    reconnects.mark_unchanged();
    let mut channel = Channel {
        shared,
        name,
        last: None,
        departures: Departures::default(),
    };
    loop {
        tokio::select! {
            message = subscriber.next() => match message {
                Some(m) => channel.on_message(m).await,
                None => return,
            },
            changed = reconnects.changed() => {
                if changed.is_err() {
                    return;
                }
                channel.after_reconnect().await;
            }
        }
    }
}

/// A read that may work if tried again a moment later.
fn temporary(e: &BrokerError) -> bool {
    matches!(e, BrokerError::Unavailable(_) | BrokerError::Unconfirmed(_))
}

fn header_u64(m: &async_nats::Message, name: &str) -> Option<u64> {
    m.headers.as_ref()?.get_last(name)?.as_str().parse().ok()
}

impl Channel {
    fn deliver(&self, event: switchboard_core::ChannelEvent) {
        if let Some(sink) = self.shared.sink() {
            sink.on_event(&self.name, event);
        }
    }

    fn stream(&self) -> Option<&Stream> {
        self.shared
            .streams
            .get(&self.shared.subjects.stream_of(&self.name))
            .ok()
    }

    async fn on_message(&mut self, m: async_nats::Message) {
        metrics::counter!("switchboard_broker_messages_total").increment(1);
        let envelope = match envelope::decode(&m.payload) {
            Ok(e) if e.time_us > 0 => {
                // How far live delivery trails acceptance: NATS, the stream and RePublish.
                let lag = switchboard_core::now_micros().saturating_sub(e.time_us);
                metrics::histogram!("switchboard_broker_stream_lag_seconds")
                    .record(lag as f64 / 1e6);
                e
            }
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(channel = self.name, error = %e, "undecodable message on a live subject");
                return;
            }
        };
        if let Some(client) = envelope.info.as_ref().map(|i| i.client.as_str()) {
            let departure = envelope.departure.as_str();
            match envelope::Kind::try_from(envelope.kind) {
                Ok(envelope::Kind::Join)
                    if !client.is_empty() && !self.departures.joined(client, departure) =>
                {
                    metrics::counter!("switchboard_presence_stale_rejoins_total").increment(1);
                    return;
                }
                Ok(envelope::Kind::Leave)
                    if !client.is_empty() && !self.departures.first_leave(client, departure) =>
                {
                    metrics::counter!("switchboard_presence_repeated_leaves_total").increment(1);
                    return;
                }
                _ => {}
            }
        }
        let Some(offset) = header_u64(&m, "Nats-Sequence") else {
            // Not stored: a channel without history, or a join/leave.
            self.deliver(envelope::event(envelope, 0));
            return;
        };
        if let Some(last) = self.last {
            if offset <= last {
                return; // already delivered by a gap fill
            }
            let previous = header_u64(&m, "Nats-Last-Sequence").unwrap_or(0);
            if previous != last {
                self.fill(last, offset - 1).await;
                if self.last.is_none() {
                    return; // the gap could not be filled; subscribers were reset
                }
            }
        }
        self.deliver(envelope::event(envelope, offset));
        self.last = Some(offset);
    }

    /// Delivers the channel's stored publications in (`after`, `upto`].
    async fn fill(&mut self, after: u64, upto: u64) {
        metrics::counter!("switchboard_broker_gaps_total", "result" => "detected").increment(1);
        let deadline = tokio::time::Instant::now() + FILL_PATIENCE;
        let mut backoff = Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(1),
        );
        let filled = loop {
            match self.try_fill(after, upto).await {
                Err(e) if temporary(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::info!(channel = self.name, error = %e, "gap fill failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                done => break done,
            }
        };
        match filled {
            Ok(()) => {
                metrics::counter!("switchboard_broker_gaps_total", "result" => "filled")
                    .increment(1);
            }
            Err(e) => {
                metrics::counter!("switchboard_broker_gaps_total", "result" => "reset")
                    .increment(1);
                tracing::warn!(channel = self.name, after, upto, error = %e, "gap not fillable; subscribers will recover");
                if let Some(sink) = self.shared.sink() {
                    sink.reset(&self.name);
                }
                self.last = None;
            }
        }
    }

    async fn try_fill(&mut self, after: u64, upto: u64) -> Result<(), BrokerError> {
        let stream = self
            .stream()
            .ok_or_else(|| BrokerError::Internal("no history stream".into()))?
            .clone();
        let subject = self.shared.subjects.stored(&self.name);
        prove_complete(&stream, &subject, after).await?;
        let missed = range(&stream, &subject, after, upto, MAX_FILL, MAX_FILL).await?;
        if missed.last().map_or(after, |p| p.offset) < upto && missed.len() >= MAX_FILL {
            return Err(BrokerError::Internal("gap too large to fill".into()));
        }
        for p in missed {
            let offset = p.offset;
            self.deliver(switchboard_core::ChannelEvent::Publication(p));
            self.last = Some(offset);
        }
        Ok(())
    }

    async fn after_reconnect(&mut self) {
        // Every channel task runs this at once after a reconnect: spread them out
        // so that a gateway with many channels does not hit NATS with all its
        // reads in the same instant. Live messages meanwhile still fill gaps.
        tokio::time::sleep(RECONNECT_SPREAD.mul_f64(fastrand::f64())).await;
        // The client re-sends its subscriptions on reconnect; a flush returns once
        // the server has them, so whatever is published after the check below
        // arrives live.
        if let Err(e) = self.shared.client.flush().await {
            tracing::debug!(error = %e, "flush after reconnect failed");
        }
        // Each read is bounded: while the stream elects a leader (its old one on
        // the node that went away) a JetStream request waits out its whole timeout,
        // and the channel's live messages wait behind this check.
        let stream_name = self.shared.subjects.stream_of(&self.name);
        let refreshed = tokio::time::timeout(
            CHECK_ATTEMPT,
            self.shared.streams.refresh_epoch(&stream_name),
        );
        match refreshed.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "epoch refresh after reconnect failed"),
            Err(_) => tracing::debug!("epoch refresh after reconnect timed out"),
        }
        let (Some(last), Some(stream)) = (self.last, self.stream().cloned()) else {
            return;
        };
        let subject = self.shared.subjects.stored(&self.name);
        let deadline = tokio::time::Instant::now() + FILL_PATIENCE;
        let mut backoff = Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(1),
        );
        let top = loop {
            let read = tokio::time::timeout(CHECK_ATTEMPT, last_offset(&stream, &subject));
            let read = read
                .await
                .unwrap_or_else(|_| Err(BrokerError::Unavailable("timed out".into())));
            match read {
                Err(e) if temporary(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                done => break done,
            }
        };
        match top {
            Ok(top) if top > last => self.fill(last, top).await,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(channel = self.name, error = %e, "cannot check for missed messages; subscribers will recover");
                if let Some(sink) = self.shared.sink() {
                    sink.reset(&self.name);
                }
                self.last = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Departures;

    #[test]
    fn a_leave_is_delivered_once_until_the_client_joins_again() {
        let mut d = Departures::default();
        assert!(d.first_leave("c1", ""));
        assert!(
            !d.first_leave("c1", ""),
            "the same departure, announced twice"
        );
        assert!(!d.first_leave("c1", "k@7"), "and by a sweeper");
        assert!(d.first_leave("c2", "k@8"), "another client");
        assert!(!d.first_leave("c2", "k@8"), "a sweeper repeating another's");
        assert!(d.joined("c1", ""));
        assert!(d.first_leave("c1", ""), "a leave after a new join");
        assert!(!d.first_leave("c1", ""));
    }

    #[test]
    fn a_sweepers_undo_is_delivered_only_while_its_leave_is_the_last_word() {
        let mut d = Departures::default();
        // Swept, then undone: the join is delivered and the next leave counts.
        assert!(d.first_leave("c1", "k@7"));
        assert!(d.joined("c1", "k@7"));
        assert!(d.first_leave("c1", ""));
        // Swept, then the connection's own leave, then the undo: the leave stands.
        assert!(d.first_leave("c2", "k@8"));
        assert!(!d.first_leave("c2", ""));
        assert!(
            !d.joined("c2", "k@8"),
            "an undo after the connection's own leave"
        );
        // An undo of an earlier sweep than the last one.
        assert!(d.first_leave("c3", "k@9"));
        assert!(!d.joined("c3", "k@5"));
        // Nothing seen here: delivered, as a join of a member that is there.
        assert!(d.joined("c4", "k@10"));
        // The member's own joins always are.
        assert!(d.joined("c2", ""));
    }
}
