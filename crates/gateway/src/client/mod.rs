//! One client connection speaking the Centrifugo protocol over WebSocket.
//!
//! One task per connection. It waits on its socket's readiness, its outbound
//! queue and one timer, and then reads, runs commands and writes without
//! waiting: frames are parsed from a per-thread scratch buffer
//! ([`ws::FrameReader`] keeps only an unfinished frame), and everything queued
//! for the client is joined into one frame and written straight to the socket.
//! What the socket does not take waits in the connection's `pending` bytes,
//! and while they wait nothing more is taken from the queue, so a client that
//! stops reading fills its bounded queue and is disconnected as slow. An idle
//! connection therefore holds its state, its queue and no buffers.

mod session;
pub use session::history_query;
mod subscribe;
pub mod transport;
pub mod ws;

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fastwebsockets::OpCode;
use switchboard_core::queue::{Batch, Outbound, Record};
use switchboard_core::Disconnect;
use switchboard_protocol::centrifugo::Encoding;
use tokio::sync::futures::Notified;
use tokio::time::Instant;

use crate::node::{ConnectionSlot, Node};
use crate::registry::Mailbox;
use session::Session;
use transport::Transport;
use ws::{Event, FrameError, FrameReader};

/// Close code WebSocket clients know for "message too big".
const MESSAGE_TOO_BIG: u16 = 1009;

/// A socket that takes nothing for this long means the client stopped reading:
/// the connection is dropped so that it holds nothing longer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a connection's end may take to write what is queued and the
/// close frame (each write still gives up after [`WRITE_TIMEOUT`] without progress).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read per socket read; a wake reads at most [`READS_PER_WAKE`] of them
/// before letting other connections run.
const SCRATCH: usize = 16 * 1024;
const READS_PER_WAKE: usize = 4;

/// Records written with one vectored write, each its own slice; a bigger batch
/// is joined into one buffer first.
const MAX_SLICES: usize = 32;

thread_local! {
    /// Scratch space of the worker thread: socket reads, and records taken from
    /// a queue with their joined frame. Used only between two awaits.
    static SCRATCH_BUFFERS: RefCell<Scratch> = RefCell::new(Scratch {
        read: vec![0; SCRATCH].into_boxed_slice(),
        records: Vec::new(),
        joined: BytesMut::new(),
    });
}

struct Scratch {
    read: Box<[u8]>,
    records: Vec<Record>,
    joined: BytesMut,
}

/// How the connection loop ended.
enum End {
    /// We close it: queued records and a close frame go out first.
    Disconnect(Disconnect),
    /// The queue was closed (slow consumer, server disconnect): its close frame
    /// is already written or pending.
    Closed,
    /// The client closed (its close frame is echoed) or the socket failed.
    Gone,
}

/// Serves one upgraded connection until it closes. `early` holds bytes the
/// client sent right behind its handshake.
pub async fn serve(
    node: Arc<Node>,
    mut io: Transport,
    early: Bytes,
    encoding: Encoding,
    slot: ConnectionSlot,
) {
    let outbound = Arc::new(Outbound::new(node.config.limits.max_queue_bytes));
    let mailbox = Arc::new(Mailbox::default());
    let mut session = Session::new(node.clone(), encoding, outbound.clone(), mailbox.clone());
    let mut reader = FrameReader::new(node.config.limits.max_frame_bytes);
    let mut writer = Writer::new(encoding);
    let mut events = Vec::new();

    let ping_interval = node.config.ping_interval;
    let mut next_ping = Instant::now() + ping_interval;
    let mut session_deadline = session.deadline();
    let mut drain_at: Option<Instant> = None;
    let timer = tokio::time::sleep_until(next_ping.min(session_deadline));
    tokio::pin!(timer);
    let drain = node.drain.cancelled();
    tokio::pin!(drain);
    let changed = outbound.changed();
    tokio::pin!(changed);

    let mut end = match reader.feed(&early, &mut events) {
        Ok(()) => None,
        Err(e) => Some(End::Disconnect(violation(e))),
    };
    drop(early);
    // Read once without waiting for readiness: with TLS, the handshake may have
    // left decrypted bytes inside rustls that no socket event will announce.
    let mut read_again = true;
    let end = loop {
        // Everything that can be done without waiting. Messages read before the
        // end of the stream (or a bad frame) are still run.
        let earlier_end = end.take();
        for event in events.drain(..) {
            match event {
                Event::Message { opcode, data } => {
                    let result = run_command(
                        &mut session,
                        (&data, opcode),
                        (&mut io, &mut writer),
                        &outbound,
                        changed.as_mut(),
                    )
                    .await;
                    session_deadline = session.deadline();
                    if let Err(d) = result {
                        end = Some(End::Disconnect(d));
                        break;
                    }
                }
                Event::Ping(payload) => writer.control(OpCode::Pong, &payload),
                Event::Close(payload) => {
                    writer.close_with(&payload);
                    end = Some(End::Gone);
                    break;
                }
            }
        }
        if let Some(end) = end.take().or(earlier_end) {
            break end;
        }
        let requests = mailbox.take();
        if !requests.is_empty() {
            for request in requests {
                Box::pin(session.on_control(request)).await;
            }
            session_deadline = session.deadline();
        }
        match writer.drain(&mut io, &outbound) {
            Ok(Flow::Open) => {}
            Ok(Flow::Closed) => break End::Closed,
            Err(_) => {
                outbound.close(Disconnect::WRITE_ERROR, false);
                break End::Gone;
            }
        }

        // Then wait for the next thing to do.
        let mut wake = next_ping.min(session_deadline);
        if let Some(at) = drain_at {
            wake = wake.min(at);
        }
        if let Some(since) = writer.stalled_since {
            wake = wake.min(since + WRITE_TIMEOUT);
        }
        let fired = timer.is_elapsed();
        if fired || timer.deadline() != wake {
            // A deadline that passed without ending anything would fire at once
            // again and again: look again a little later instead.
            let floor = Instant::now() + Duration::from_millis(10);
            timer
                .as_mut()
                .reset(if fired { wake.max(floor) } else { wake });
        }
        let blocked = writer.stalled_since.is_some();
        tokio::select! {
            biased;
            () = &mut timer => {
                let now = Instant::now();
                if writer.stalled_since.is_some_and(|since| now >= since + WRITE_TIMEOUT) {
                    outbound.close(Disconnect::WRITE_ERROR, false);
                    end = Some(End::Gone);
                } else if drain_at.is_some_and(|at| now >= at) {
                    end = Some(End::Disconnect(Disconnect::SHUTDOWN));
                } else {
                    if now >= next_ping {
                        next_ping = now + ping_interval;
                        if let Err(d) = session.on_ping_tick() {
                            end = Some(End::Disconnect(d));
                        }
                    }
                    if end.is_none() && now >= session_deadline {
                        if let Err(d) = session.on_deadline() {
                            end = Some(End::Disconnect(d));
                        }
                    }
                    session_deadline = session.deadline();
                }
            }
            () = &mut drain, if drain_at.is_none() => {
                // Spread reconnects over the drain window so that the other nodes
                // are not hit by every client of this one at once.
                let jitter = node.config.drain_window.mul_f64(fastrand::f64());
                drain_at = Some(Instant::now() + jitter);
            }
            () = &mut changed => changed.set(outbound.changed()),
            _ = poll_fn(|cx| io.poll_write_ready(cx)), if blocked => {}
            // A client sending without pause keeps `read_again` set: the budget
            // makes the task yield to the others on its thread now and then.
            () = tokio::task::consume_budget(), if read_again => {
                read_again = false;
                match read(&mut io, &mut reader, &mut events) {
                    Ok(more) => read_again = more,
                    Err(e) => end = Some(e),
                }
            }
            ready = poll_fn(|cx| io.poll_read_ready(cx)), if !read_again => match ready {
                Ok(()) => match read(&mut io, &mut reader, &mut events) {
                    Ok(more) => read_again = more,
                    Err(e) => end = Some(e),
                },
                Err(_) => end = Some(End::Gone),
            },
        }
    };

    match &end {
        End::Disconnect(disconnect) => {
            tracing::debug!(client = %session.id(), code = disconnect.code, reason = %disconnect.reason, "disconnecting");
            metrics::counter!("switchboard_disconnects_total", "code" => disconnect.code.to_string())
                .increment(1);
            outbound.close(disconnect.clone(), true);
        }
        End::Closed | End::Gone => outbound.close(Disconnect::CONNECTION_CLOSED, false),
    }
    // The session leaves its channels while what is queued and the close frame
    // go out, the latter bounded in time so that a client that stopped reading
    // cannot hold the task.
    let flush = !matches!(end, End::Gone) || writer.close_sent;
    let finish = async {
        if flush {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.finish(&mut io, &outbound)).await;
        }
    };
    tokio::join!(Box::pin(session.close()), finish);
    drop(slot);
}

fn violation(e: FrameError) -> Disconnect {
    tracing::debug!(error = %e, "refused a client frame");
    match e {
        FrameError::TooLarge => Disconnect::custom(MESSAGE_TOO_BIG, "message size limit"),
        FrameError::Protocol(_) | FrameError::InvalidUtf8 => Disconnect::BAD_REQUEST,
    }
}

/// Reads what the socket has (up to [`READS_PER_WAKE`] reads) and parses it;
/// `Ok(true)` when there may be more to read right away.
fn read(
    io: &mut Transport,
    reader: &mut FrameReader,
    events: &mut Vec<Event>,
) -> Result<bool, End> {
    SCRATCH_BUFFERS.with_borrow_mut(|scratch| {
        for _ in 0..READS_PER_WAKE {
            match io.try_read(&mut scratch.read) {
                Ok(0) => return Err(End::Gone),
                Ok(n) => reader
                    .feed(&scratch.read[..n], events)
                    .map_err(|e| End::Disconnect(violation(e)))?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(End::Gone),
            }
        }
        Ok(true)
    })
}

/// Runs the commands of one message. Records queued meanwhile (fan-out to this
/// client's other subscriptions, the replies themselves) are written while the
/// commands wait on the broker or the presence service.
async fn run_command<'q>(
    session: &mut Session,
    (data, opcode): (&[u8], OpCode),
    (io, writer): (&mut Transport, &mut Writer),
    outbound: &'q Outbound,
    mut changed: Pin<&mut Notified<'q>>,
) -> Result<(), Disconnect> {
    // Boxed: command handling (subscribe, recovery, broker calls) is a large
    // state machine that would otherwise sit inline in every idle connection.
    let command = Box::pin(session.on_frame(data, opcode));
    tokio::pin!(command);
    let mut failed = false;
    loop {
        let blocked = writer.stalled_since.is_some();
        tokio::select! {
            result = &mut command => return result,
            () = changed.as_mut(), if !failed => changed.set(outbound.changed()),
            _ = poll_fn(|cx| io.poll_write_ready(cx)), if blocked && !failed => {}
        }
        // A failed socket or a close is left for the connection loop to see.
        match writer.drain(io, outbound) {
            Ok(Flow::Open) => {}
            Ok(Flow::Closed) | Err(_) => failed = true,
        }
    }
}

/// Whether the connection goes on after a write.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Open,
    /// The queue's close frame went out (or is pending): nothing more to write.
    Closed,
}

/// The connection's side of writing: frames the socket has not taken yet.
struct Writer {
    encoding: Encoding,
    /// Whole frames, or the rest of one, not yet taken by the socket. Nothing
    /// more is taken from the queue until they are written.
    pending: Vec<u8>,
    /// Since when `pending` (or the transport) has been waiting for the socket.
    stalled_since: Option<Instant>,
    close_sent: bool,
}

impl Writer {
    fn new(encoding: Encoding) -> Writer {
        Writer {
            encoding,
            pending: Vec::new(),
            stalled_since: None,
            close_sent: false,
        }
    }

    /// Queues a control frame (pong, close) behind what is pending; written by
    /// the next [`Writer::drain`]. Pongs are dropped while the socket is stalled.
    fn control(&mut self, opcode: OpCode, payload: &[u8]) {
        // A client that pings while not reading would grow `pending` without
        // bound; RFC 6455 lets a pong answer only the latest pings.
        if self.close_sent || (opcode == OpCode::Pong && self.stalled_since.is_some()) {
            return;
        }
        let mut head = [0; ws::MAX_HEAD];
        let n = ws::head(opcode, payload.len(), &mut head);
        self.pending.extend_from_slice(&head[..n]);
        self.pending.extend_from_slice(payload);
    }

    /// Queues the close frame for `d`; nothing is written after it.
    fn close_frame(&mut self, d: &Disconnect) {
        let mut payload = d.code.to_be_bytes().to_vec();
        payload.extend_from_slice(close_reason(&d.reason));
        self.close_with(&payload);
    }

    /// Queues a close frame carrying `payload` (ours, or the client's echoed);
    /// nothing is written after it.
    fn close_with(&mut self, payload: &[u8]) {
        self.control(OpCode::Close, payload);
        self.close_sent = true;
    }

    /// Writes what is pending, then everything queued, until the socket stops
    /// taking bytes or nothing is left. Never waits.
    fn drain(&mut self, io: &mut Transport, outbound: &Outbound) -> io::Result<Flow> {
        loop {
            // A slow consumer's queue, closed without flushing, is taken even
            // while the socket is stalled: the connection ends now (it leaves its
            // channels at once) and its close frame goes behind what is pending.
            if self.write_pending(io)? {
                if self.close_sent {
                    return Ok(Flow::Closed);
                }
            } else if self.close_sent {
                return Ok(if outbound.is_dropping() {
                    Flow::Closed
                } else {
                    Flow::Open
                });
            } else if !outbound.is_dropping() {
                return Ok(Flow::Open);
            }
            let taken = SCRATCH_BUFFERS.with_borrow_mut(|scratch| {
                let batch = outbound.try_batch(&mut scratch.records);
                match batch {
                    None => Ok(false),
                    Some(Batch::Records) => {
                        account(&scratch.records);
                        let written = self.write_records(io, scratch);
                        scratch.records.clear();
                        written.map(|()| true)
                    }
                    Some(Batch::Close(d)) => {
                        self.close_frame(&d);
                        Ok(true)
                    }
                }
            })?;
            if !taken {
                return Ok(Flow::Open);
            }
        }
    }

    /// Writes `pending`; true when all of it (and what the transport holds) is out.
    fn write_pending(&mut self, io: &mut Transport) -> io::Result<bool> {
        let written = write_available(io, &[IoSlice::new(&self.pending)])?;
        self.pending.drain(..written);
        let done = self.pending.is_empty() && io.flush()?;
        if done {
            // A large frame's buffer is not kept for an idle connection.
            self.pending = Vec::new();
            self.stalled_since = None;
        } else if written > 0 || self.stalled_since.is_none() {
            // The write timeout counts from the last write that made progress.
            self.stalled_since = Some(Instant::now());
        }
        Ok(done)
    }

    /// Writes one frame holding `scratch.records`; what the socket does not take
    /// goes to `pending`.
    fn write_records(&mut self, io: &mut Transport, scratch: &mut Scratch) -> io::Result<()> {
        let records = &scratch.records;
        let separator = if self.encoding == Encoding::Json {
            &b"\n"[..]
        } else {
            &[][..]
        };
        let len = records.iter().map(|r| r.data.len()).sum::<usize>()
            + separator.len() * (records.len() - 1);
        let mut head = [0; ws::MAX_HEAD];
        let head_len = ws::head(ws::data_opcode(self.encoding), len, &mut head);
        let mut slices = [IoSlice::new(&[]); 2 * MAX_SLICES];
        let mut count = 1;
        slices[0] = IoSlice::new(&head[..head_len]);
        if records.len() <= MAX_SLICES {
            for (i, record) in records.iter().enumerate() {
                if i > 0 && !separator.is_empty() {
                    slices[count] = IoSlice::new(separator);
                    count += 1;
                }
                slices[count] = IoSlice::new(&record.data);
                count += 1;
            }
        } else {
            scratch.joined.clear();
            self.encoding
                .join(records.iter().map(|r| r.data.clone()), &mut scratch.joined);
            slices[1] = IoSlice::new(&scratch.joined);
            count = 2;
        }
        let slices = &slices[..count];
        let total = head_len + len;
        let written = write_available(io, slices)?;
        if written < total {
            self.pending.reserve(total - written);
            for slice in remaining(slices, written) {
                self.pending.extend_from_slice(&slice);
            }
            self.stalled_since = Some(Instant::now());
        } else if !io.flush()? {
            self.stalled_since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Writes what is queued and the close frame, waiting for the socket.
    async fn finish(&mut self, io: &mut Transport, outbound: &Outbound) {
        loop {
            match self.drain(io, outbound) {
                Ok(Flow::Closed) if self.stalled_since.is_none() => break,
                Err(_) => return,
                Ok(_) => {}
            }
            if let Some(since) = self.stalled_since {
                let writable = poll_fn(|cx| io.poll_write_ready(cx));
                match tokio::time::timeout_at(since + WRITE_TIMEOUT, writable).await {
                    Ok(Ok(_)) => {}
                    _ => return,
                }
            } else {
                outbound.changed().await;
            }
        }
        io.close();
        let _ = io.flush();
    }
}

/// Writes `slices` for as long as the socket takes bytes, without waiting;
/// returns how many it took.
fn write_available<'a>(io: &mut Transport, slices: &'a [IoSlice<'a>]) -> io::Result<usize> {
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let mut written = 0;
    while written < total {
        let attempt = if written == 0 {
            io.try_write(slices)
        } else {
            io.try_write(&remaining(slices, written))
        };
        match attempt {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// The slices of `slices` after its first `skip` bytes.
fn remaining<'a>(slices: &'a [IoSlice<'a>], mut skip: usize) -> Vec<IoSlice<'a>> {
    let mut out = Vec::with_capacity(slices.len());
    for slice in slices {
        if skip >= slice.len() {
            skip -= slice.len();
            continue;
        }
        out.push(IoSlice::new(&slice[skip..]));
        skip = 0;
    }
    out
}

/// Close frame reasons are limited to 123 bytes.
fn close_reason(reason: &str) -> &[u8] {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason.as_bytes()[..end]
}

/// Handles of the per-delivery metrics, looked up once: resolving a metric by
/// name on every write costs a registry lookup per delivery.
fn delivery_metrics() -> &'static (metrics::Histogram, metrics::Counter) {
    static HANDLES: std::sync::OnceLock<(metrics::Histogram, metrics::Counter)> =
        std::sync::OnceLock::new();
    HANDLES.get_or_init(|| {
        (
            metrics::histogram!("switchboard_delivery_latency_seconds"),
            metrics::counter!("switchboard_messages_out_total"),
        )
    })
}

fn account(batch: &[Record]) {
    let (latency_histogram, messages_out) = delivery_metrics();
    let now = switchboard_core::now_micros();
    let mut publications = 0u64;
    for record in batch.iter().filter(|r| r.time_us > 0) {
        publications += 1;
        let latency = now.saturating_sub(record.time_us) as f64 / 1e6;
        latency_histogram.record(latency);
    }
    if publications > 0 {
        messages_out.increment(publications);
    }
}
