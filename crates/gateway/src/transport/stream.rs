//! The HTTP streams: HTTP-streaming (a POST whose response never ends) and
//! server-sent events. One long response carries what a session queues; the
//! client's later messages come apart, each in a request of its own that any
//! gateway may take (`POST /emulation`), and reach the stream's task through its
//! mailbox ([`crate::registry::Registry::post`]). The task drives any
//! [`Session`] as the WebSocket one does: messages, control requests, pings and
//! deadlines, drain, a client that stops reading.
//!
//! There is no close frame: the end is a record the session writes into the
//! stream ([`Session::farewell`]), then the end of the response.

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt as _;
use http::{header, HeaderValue, Response};
use switchboard_core::queue::{Batch, Outbound, Record};
use switchboard_core::Disconnect;
use tokio::sync::futures::Notified;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::clock::{Clock, Due};
use crate::connection::{delivery, Framing, Session};
use crate::node::{ConnectionSlot, Node};
use crate::registry::{Mailbox, StreamHandle};
use crate::response::Body;

/// The longest the end of a stream may take to write what is queued and the farewell.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How records become the bytes of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Each record as it is, followed by the framing's separator (Centrifugo's
    /// HTTP-streaming: JSON lines, or varint-delimited protobuf).
    Chunked,
    /// Server-sent events: each record is the data of one event.
    EventStream,
}

impl Kind {
    /// The transport's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chunked => "http_stream",
            Kind::EventStream => "sse",
        }
    }

    fn frame(self, framing: &Framing, records: &[Record], out: &mut BytesMut) {
        for record in records {
            self.frame_one(framing, &record.data, out);
        }
    }

    fn frame_one(self, framing: &Framing, data: &[u8], out: &mut BytesMut) {
        match self {
            Kind::Chunked => {
                out.put_slice(data);
                out.put_slice(framing.join.unwrap_or_default());
            }
            Kind::EventStream => {
                // A line break inside a record would end its `data:` field: each
                // line gets one, and the client joins them with line breaks again.
                for line in data.split(|b| *b == b'\n') {
                    out.put_slice(b"data: ");
                    out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
                    out.put_u8(b'\n');
                }
                out.put_u8(b'\n');
            }
        }
    }
}

/// Opens a stream: builds the session (`make` gets the connection's queue,
/// mailbox and the stream's session secret), runs the client's first message
/// (`first`, e.g. its connect command), and answers with the response that
/// carries everything after. `content_type` is the response's.
pub fn open<S, F>(
    node: &Arc<Node>,
    slot: ConnectionSlot,
    (kind, content_type): (Kind, &'static str),
    first: (Bytes, bool),
    make: F,
) -> Response<Body>
where
    S: Session,
    F: FnOnce(Arc<Outbound>, Arc<Mailbox>, Arc<str>) -> S,
{
    let outbound = Arc::new(Outbound::new(node.config.limits.max_queue_bytes));
    let mailbox = Arc::new(Mailbox::default());
    let secret: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let session = make(outbound.clone(), mailbox.clone(), secret.clone());
    node.registry.add_stream(
        secret.clone(),
        StreamHandle {
            outbound: outbound.clone(),
            mailbox: mailbox.clone(),
        },
    );
    // One chunk in flight: what the client does not read waits in the outbound
    // queue, which is bounded and closes a slow client.
    let (chunks, body) = mpsc::channel(1);
    let task = Task {
        node: node.clone(),
        kind,
        outbound,
        mailbox,
        chunks,
        pending: None,
        stalled_since: None,
    };
    node.tasks.spawn(task.run(session, first, secret, slot));
    let mut response = Response::new(Body::Stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    // nginx buffers proxied responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// How the stream's loop ended.
enum End {
    /// We close it: what is queued and the farewell go out first.
    Disconnect(Disconnect),
    /// The queue was closed (slow consumer, server disconnect): its farewell
    /// goes out after what it still holds.
    Closed(Disconnect),
    /// The client went away.
    Gone,
}

/// Whether the stream goes on after a write.
enum Flow {
    Open,
    /// The queue closed with this disconnect: nothing more from it.
    Closed(Disconnect),
    Gone,
}

struct Task {
    node: Arc<Node>,
    kind: Kind,
    outbound: Arc<Outbound>,
    mailbox: Arc<Mailbox>,
    chunks: mpsc::Sender<Bytes>,
    /// A chunk the response has not taken yet: nothing more is taken from the
    /// queue until it has.
    pending: Option<Bytes>,
    stalled_since: Option<Instant>,
}

impl Task {
    async fn run<S: Session>(
        mut self,
        mut session: S,
        first: (Bytes, bool),
        secret: Arc<str>,
        slot: ConnectionSlot,
    ) {
        let transport = self.kind.name();
        metrics::gauge!("switchboard_stream_connections", "transport" => transport).increment(1.0);
        let framing = session.framing();
        let outbound = self.outbound.clone();
        let changed = outbound.changed();
        tokio::pin!(changed);
        let drain_token = self.node.drain.clone();
        let drain = drain_token.cancelled();
        tokio::pin!(drain);
        let mut clock = Clock::new(self.node.config.ping_interval);
        let timer = tokio::time::sleep_until(clock.first(session.deadline()));
        tokio::pin!(timer);

        let mut end = self
            .run_message(&mut session, first, framing, (&outbound, changed.as_mut()))
            .await
            .err()
            .map(End::Disconnect);
        let end = loop {
            if end.is_none() {
                for message in self.mailbox.take_messages() {
                    let ran = self
                        .run_message(
                            &mut session,
                            (message, framing.binary),
                            framing,
                            (&outbound, changed.as_mut()),
                        )
                        .await;
                    if let Err(d) = ran {
                        end = Some(End::Disconnect(d));
                        break;
                    }
                }
            }
            if end.is_none() {
                for request in self.mailbox.take() {
                    let control = AssertUnwindSafe(session.on_control(request)).catch_unwind();
                    if Box::pin(control).await.is_err() {
                        end = Some(End::Disconnect(super::panicked("a control request")));
                        break;
                    }
                }
            }
            if let Some(end) = end.take() {
                break end;
            }
            match self.flush(framing) {
                Flow::Open => {}
                Flow::Closed(d) => break End::Closed(d),
                Flow::Gone => break End::Gone,
            }

            clock.arm(timer.as_mut(), session.deadline(), self.stalled_since);
            let blocked = self.pending.is_some();
            tokio::select! {
                biased;
                () = self.chunks.closed() => end = Some(End::Gone),
                () = &mut timer => {
                    let deadline = session.deadline();
                    match clock.fired(&mut session, deadline, self.stalled_since) {
                        Due::Stalled => {
                            outbound.close(Disconnect::WRITE_ERROR, false);
                            end = Some(End::Gone);
                        }
                        Due::Shutdown => end = Some(End::Disconnect(Disconnect::SHUTDOWN)),
                        Due::Disconnect(d) => end = Some(End::Disconnect(d)),
                        Due::Nothing => {}
                    }
                }
                () = &mut drain, if !clock.is_draining() => {
                    clock.drain_within(self.node.config.drain_window);
                }
                () = queue_changed(&outbound, changed.as_mut()), if !blocked => {}
                permit = self.chunks.reserve(), if blocked => match permit {
                    Ok(permit) => {
                        if let Some(chunk) = self.pending.take() {
                            permit.send(chunk);
                        }
                        self.stalled_since = None;
                    }
                    Err(_) => end = Some(End::Gone),
                },
            }
        };

        let last = match &end {
            End::Disconnect(disconnect) => {
                let code = S::goodbye(disconnect).code;
                tracing::debug!(client = %session.id(), code, transport, reason = %disconnect.message, "disconnecting");
                metrics::counter!("switchboard_disconnects_total", "code" => code.to_string())
                    .increment(1);
                outbound.close(disconnect.clone(), true);
                session.farewell(disconnect)
            }
            End::Closed(disconnect) => session.farewell(disconnect),
            End::Gone => {
                outbound.close(Disconnect::CONNECTION_CLOSED, false);
                None
            }
        };
        // The session leaves its channels while what is queued and the farewell
        // go out, bounded in time so that a client that stopped reading cannot
        // hold the task.
        let gone = matches!(end, End::Gone);
        let finish = async {
            if !gone {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.finish(last, framing)).await;
            }
        };
        tokio::join!(Box::pin(session.close()), finish);
        self.node.registry.remove_stream(&secret);
        metrics::gauge!("switchboard_stream_connections", "transport" => transport).decrement(1.0);
        drop(slot);
    }

    /// Takes what is queued into the response, without waiting: as long as the
    /// response takes chunks.
    fn flush(&mut self, framing: &Framing) -> Flow {
        let mut records = Vec::new();
        loop {
            if let Some(chunk) = self.pending.take() {
                match self.chunks.try_send(chunk) {
                    Ok(()) => self.stalled_since = None,
                    Err(mpsc::error::TrySendError::Full(chunk)) => {
                        self.pending = Some(chunk);
                        self.stalled_since.get_or_insert_with(Instant::now);
                        return Flow::Open;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Flow::Gone,
                }
            }
            records.clear();
            match self.outbound.try_batch(&mut records) {
                None => return Flow::Open,
                Some(Batch::Close(d)) => return Flow::Closed(d),
                Some(Batch::Records) => {
                    let mut chunk = BytesMut::new();
                    self.kind.frame(framing, &records, &mut chunk);
                    delivery::account(&records);
                    self.pending = Some(chunk.freeze());
                }
            }
        }
    }

    /// Writes what is still queued and then `last` (the farewell), and ends
    /// the response (the sender is dropped with the task).
    async fn finish(&mut self, mut last: Option<Bytes>, framing: &Framing) {
        loop {
            match self.flush(framing) {
                Flow::Gone => return,
                Flow::Closed(_) => match last.take() {
                    Some(record) => {
                        let mut chunk = BytesMut::new();
                        if let Some(pending) = self.pending.take() {
                            chunk.put_slice(&pending);
                        }
                        self.kind.frame_one(framing, &record, &mut chunk);
                        self.pending = Some(chunk.freeze());
                    }
                    None if self.pending.is_none() => return,
                    None => {}
                },
                // The queue is closed: it answers Closed once it is empty.
                Flow::Open if self.pending.is_none() => return,
                Flow::Open => {}
            }
            if let Some(chunk) = self.pending.take() {
                if self.chunks.send(chunk).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Runs one client message while writing what is queued meanwhile.
    async fn run_message<'q, S: Session>(
        &mut self,
        session: &mut S,
        (data, binary): (Bytes, bool),
        framing: &Framing,
        (outbound, mut changed): (&'q Outbound, Pin<&mut Notified<'q>>),
    ) -> Result<(), Disconnect> {
        metrics::counter!("switchboard_messages_in_total").increment(1);
        let command = Box::pin(async {
            match AssertUnwindSafe(session.on_message(data, binary))
                .catch_unwind()
                .await
            {
                Ok(result) => result,
                Err(_) => Err(super::panicked("a message")),
            }
        });
        tokio::pin!(command);
        let mut stopped = false;
        loop {
            let blocked = self.pending.is_some();
            tokio::select! {
                result = &mut command => return result,
                () = queue_changed(outbound, changed.as_mut()), if !stopped && !blocked => {}
                permit = self.chunks.reserve(), if !stopped && blocked => match permit {
                    Ok(permit) => {
                        if let Some(chunk) = self.pending.take() {
                            permit.send(chunk);
                        }
                        self.stalled_since = None;
                    }
                    Err(_) => stopped = true,
                },
            }
            // A close or a client gone is left for the loop to see.
            if !stopped && !matches!(self.flush(framing), Flow::Open) {
                stopped = true;
            }
        }
    }
}

/// Completes when the queue changed; its notification is then re-armed.
fn queue_changed<'a, 'q>(
    outbound: &'q Outbound,
    mut changed: Pin<&'a mut Notified<'q>>,
) -> impl Future<Output = ()> + use<'a, 'q>
where
    'q: 'a,
{
    poll_fn(move |cx| {
        if changed.as_mut().poll(cx).is_ready() {
            changed.set(outbound.changed());
            return Poll::Ready(());
        }
        Poll::Pending
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Framing = Framing {
        binary: false,
        join: Some(b"\n"),
    };

    #[test]
    fn chunked_records_end_with_the_separator_and_events_with_a_blank_line() {
        let records = [
            Record::new(Bytes::from_static(b"{\"a\":1}")),
            Record::new(Bytes::from_static(b"{}")),
        ];
        let mut out = BytesMut::new();
        Kind::Chunked.frame(&JSON, &records, &mut out);
        assert_eq!(&out[..], b"{\"a\":1}\n{}\n");
        let mut out = BytesMut::new();
        Kind::EventStream.frame(&JSON, &records, &mut out);
        assert_eq!(&out[..], b"data: {\"a\":1}\n\ndata: {}\n\n");
    }

    #[test]
    fn a_line_break_inside_an_event_becomes_a_second_data_line() {
        let mut out = BytesMut::new();
        Kind::EventStream.frame_one(&JSON, b"one\r\ntwo", &mut out);
        assert_eq!(&out[..], b"data: one\ndata: two\n\n");
    }
}
