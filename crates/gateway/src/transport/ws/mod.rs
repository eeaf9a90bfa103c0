//! The WebSocket transport: one task per connection drives any [`Session`].
//!
//! The task waits on its socket's readiness, its outbound queue and one timer,
//! and then reads, runs the session's messages and writes without waiting:
//! frames are parsed from a per-thread scratch buffer ([`frames::FrameReader`]
//! keeps only an unfinished frame), and what is queued for the client is written
//! straight to the socket ([`writer::Writer`]). An idle connection therefore
//! holds its session, its queue and no buffers.
//!
//! # Layout
//! - [`upgrade`]: the HTTP upgrade, handing the socket to [`serve`].
//! - [`socket`]: the socket under an upgraded connection (plain or TLS), by readiness.
//! - [`frames`]: the incremental frame reader and server frame heads (RFC 6455).
//! - [`writer`]: queued records → frames, vectored writes, the close frame.

pub mod frames;
pub mod socket;
pub mod upgrade;
pub mod writer;

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::OpCode;
use futures::FutureExt as _;
use switchboard_core::queue::Outbound;
use switchboard_core::Disconnect;
use tokio::sync::futures::Notified;
use tokio::time::Instant;

use super::clock::{Clock, Due};
use super::panicked;
use crate::connection::Session;
use crate::node::{ConnectionSlot, Node};
use crate::registry::Mailbox;
use frames::{Event, FrameError, FrameReader};
use socket::Socket;
use writer::{Flow, Writer};

/// The longest a connection's end may take to write what is queued and the
/// close frame (each write still gives up after [`WRITE_TIMEOUT`] without progress).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long, and how many bytes, a closed connection reads and drops of what its
/// client still sends before the socket is closed (see [`linger`]).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Bytes read per socket read; a wake reads at most [`READS_PER_WAKE`] of them
/// before letting other connections run.
const SCRATCH: usize = 16 * 1024;
const READS_PER_WAKE: usize = 4;

thread_local! {
    /// Socket reads of the worker thread. Used only between two awaits.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
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
/// client sent right behind its handshake; `make` builds the session from the
/// connection's queue and mailbox.
pub async fn serve<S, F>(
    node: Arc<Node>,
    (mut io, early): (Socket, Bytes),
    make: F,
    slot: ConnectionSlot,
) where
    S: Session,
    F: FnOnce(Arc<Outbound>, Arc<Mailbox>) -> S,
{
    // Built here rather than by the caller: a session moved into this future
    // would also keep its place in the caller's, costing every idle connection.
    let outbound = Arc::new(Outbound::new(node.config.limits.max_queue_bytes));
    let mailbox = Arc::new(Mailbox::default());
    let mut session = make(outbound.clone(), mailbox.clone());
    let mut reader = FrameReader::new(node.config.limits.max_frame_bytes);
    let mut writer = Writer::new(session.framing());
    let mut events = Vec::new();

    let mut clock = Clock::new(node.config.ping_interval);
    let mut session_deadline = session.deadline();
    let timer = tokio::time::sleep_until(clock.first(session_deadline));
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
                    let result = run_message(
                        &mut session,
                        (data, opcode == OpCode::Binary),
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
                let control = AssertUnwindSafe(session.on_control(request)).catch_unwind();
                if Box::pin(control).await.is_err() {
                    end = Some(End::Disconnect(panicked("a control request")));
                    break;
                }
            }
            if let Some(end) = end.take() {
                break end;
            }
            session_deadline = session.deadline();
        }
        match writer.drain(&mut io, &outbound, S::goodbye) {
            Ok(Flow::Open) => {}
            Ok(Flow::Closed) => break End::Closed,
            Err(_) => {
                outbound.close(Disconnect::WRITE_ERROR, false);
                break End::Gone;
            }
        }

        // Then wait for the next thing to do.
        clock.arm(timer.as_mut(), session_deadline, writer.stalled_since);
        let blocked = writer.stalled_since.is_some();
        tokio::select! {
            biased;
            () = &mut timer => {
                match clock.fired(&mut session, session_deadline, writer.stalled_since) {
                    Due::Stalled => {
                        outbound.close(Disconnect::WRITE_ERROR, false);
                        end = Some(End::Gone);
                    }
                    Due::Shutdown => end = Some(End::Disconnect(Disconnect::SHUTDOWN)),
                    Due::Disconnect(d) => end = Some(End::Disconnect(d)),
                    Due::Nothing => {}
                }
                session_deadline = session.deadline();
            }
            () = &mut drain, if !clock.is_draining() => clock.drain_within(node.config.drain_window),
            () = more_to_write(&io, blocked, &outbound, changed.as_mut()) => {}
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
            let code = S::goodbye(disconnect).code;
            tracing::debug!(client = %session.id(), code, reason = %disconnect.message, "disconnecting");
            metrics::counter!("switchboard_disconnects_total", "code" => code.to_string())
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
            let finished = writer.finish(&mut io, &outbound, S::goodbye);
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, finished).await;
        }
    };
    tokio::join!(Box::pin(session.close()), finish);
    if writer.close_sent && !matches!(end, End::Gone) {
        // Boxed: its state exists only now, not in every idle connection's task.
        Box::pin(linger(&mut io, &mut reader)).await;
    }
    drop(slot);
}

/// Reads and drops what the client still sends after our close frame, until its
/// own close frame or the end of its stream (or [`LINGER`] or [`LINGER_BYTES`]
/// pass). A socket closed with unread bytes is reset, and a client that gets the
/// reset may throw away the close frame (and its code) it has not read yet.
async fn linger(io: &mut Socket, reader: &mut FrameReader) {
    let deadline = Instant::now() + LINGER;
    let mut dropped = 0;
    let mut events = Vec::new();
    while dropped < LINGER_BYTES {
        let readable = poll_fn(|cx| io.poll_read_ready(cx));
        match tokio::time::timeout_at(deadline, readable).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        let more = READ_BUFFER.with_borrow_mut(|scratch| loop {
            match io.try_read(scratch) {
                Ok(0) => return false,
                Ok(n) => {
                    dropped += n;
                    // The client's close frame answers ours: it sends no more.
                    let fed = reader.feed(&scratch[..n], &mut events);
                    let closed = events.drain(..).any(|e| matches!(e, Event::Close(_)));
                    if closed || fed.is_err() {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
            if dropped >= LINGER_BYTES {
                return false;
            }
        });
        if !more {
            return;
        }
    }
}

fn violation(e: FrameError) -> Disconnect {
    tracing::debug!(error = %e, "refused a client frame");
    match e {
        FrameError::TooLarge => Disconnect::MESSAGE_TOO_BIG,
        FrameError::Protocol(_) | FrameError::InvalidUtf8 => Disconnect::BAD_REQUEST,
    }
}

/// Reads what the socket has (up to [`READS_PER_WAKE`] reads) and parses it;
/// `Ok(true)` when there may be more to read right away.
fn read(io: &mut Socket, reader: &mut FrameReader, events: &mut Vec<Event>) -> Result<bool, End> {
    READ_BUFFER.with_borrow_mut(|scratch| {
        for _ in 0..READS_PER_WAKE {
            match io.try_read(scratch) {
                Ok(0) => return Err(End::Gone),
                Ok(n) => reader
                    .feed(&scratch[..n], events)
                    .map_err(|e| End::Disconnect(violation(e)))?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(End::Gone),
            }
        }
        Ok(true)
    })
}

/// Completes when there may be more to write: the queue changed (its
/// notification is then re-armed) or, while `stalled`, the socket became writable.
/// A plain poll function: its state sits in every idle connection's task.
fn more_to_write<'a, 'q>(
    io: &'a Socket,
    stalled: bool,
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
        if stalled && io.poll_write_ready(cx).is_ready() {
            return Poll::Ready(());
        }
        Poll::Pending
    })
}

/// Runs one message. Records queued meanwhile (fan-out to this client's other
/// subscriptions, the replies themselves) are written while the session waits
/// on the broker or the presence service.
async fn run_message<'q, S: Session>(
    session: &mut S,
    (data, binary): (Bytes, bool),
    (io, writer): (&mut Socket, &mut Writer),
    outbound: &'q Outbound,
    mut changed: Pin<&mut Notified<'q>>,
) -> Result<(), Disconnect> {
    // Boxed: command handling (subscribe, recovery, broker calls) is a large
    // state machine that would otherwise sit inline in every idle connection.
    // A panic in it ends the connection, not the task: its clean-up still runs.
    let command = Box::pin(async {
        match AssertUnwindSafe(session.on_message(data, binary))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(_) => Err(panicked("a message")),
        }
    });
    tokio::pin!(command);
    let mut failed = false;
    loop {
        let blocked = writer.stalled_since.is_some();
        tokio::select! {
            result = &mut command => return result,
            () = more_to_write(io, blocked, outbound, changed.as_mut()), if !failed => {}
        }
        // A failed socket or a close is left for the connection loop to see.
        match writer.drain(io, outbound, S::goodbye) {
            Ok(Flow::Open) => {}
            Ok(Flow::Closed) | Err(_) => failed = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::Config;
    use crate::connection::{Framing, Goodbye};
    use crate::registry::Control;

    /// A session that panics on every message and records its clean-up.
    struct Panicking(Arc<AtomicBool>);

    impl Session for Panicking {
        fn id(&self) -> &str {
            "panicking"
        }
        fn framing(&self) -> &'static Framing {
            &Framing {
                binary: false,
                join: None,
            }
        }
        async fn on_message(&mut self, _: Bytes, _: bool) -> Result<(), Disconnect> {
            panic!("a bug in a session");
        }
        async fn on_control(&mut self, _: Control) {}
        fn deadline(&self) -> Instant {
            Instant::now() + Duration::from_secs(3600)
        }
        fn on_deadline(&mut self) -> Result<(), Disconnect> {
            Ok(())
        }
        fn on_ping_tick(&mut self) -> Result<(), Disconnect> {
            Ok(())
        }
        fn goodbye(_: &Disconnect) -> Goodbye {
            Goodbye {
                code: 1011,
                reconnect: true,
            }
        }
        async fn close(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A masked client text frame.
    fn client_frame(payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[tokio::test]
    async fn a_panicking_session_is_closed_and_cleaned_up_not_leaked() {
        let node = Node::standalone(Config::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let closed = Arc::new(AtomicBool::new(false));
        let slot = node.try_acquire_connection().unwrap();
        let session = Panicking(closed.clone());
        let task = tokio::spawn(serve(
            node.clone(),
            (Socket::Plain(server), Bytes::new()),
            move |_, _| session,
            slot,
        ));
        client.write_all(&client_frame(b"boom")).await.unwrap();
        // The server's close frame: 1011 (our goodbye), then the end of the stream.
        let mut head = [0u8; 4];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0x88, "a close frame");
        assert_eq!(u16::from_be_bytes([head[2], head[3]]), 1011);
        drop(client);
        task.await.expect("the connection task did not panic");
        assert!(closed.load(Ordering::SeqCst), "close() did not run");
        assert_eq!(node.connection_count(), 0, "the connection slot leaked");
    }
}
