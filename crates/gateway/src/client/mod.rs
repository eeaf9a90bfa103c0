//! One client connection speaking the Centrifugo protocol over WebSocket.
//!
//! Three tasks per connection: a *reader* that only reads frames (reading is not
//! cancel-safe, so it never sits in a `select!`), the *session* loop that runs
//! commands, timers and server requests, and a *writer* that drains the bounded
//! [`Outbound`] queue, joining everything queued at once into one frame.

mod session;
pub use session::history_query;
mod subscribe;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketWrite,
};
use switchboard_core::queue::{Batch, Outbound, Record};
use switchboard_core::Disconnect;
use switchboard_protocol::Encoding;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::node::{ConnectionSlot, Node};
use session::Session;

/// What the reader hands the session.
enum Incoming {
    Data(Bytes, OpCode),
    /// The socket failed in a way the client caused (oversized or invalid frame).
    Violation(Disconnect),
}

/// Control frames the protocol obliges us to send (pong, close echo).
type Obligated = (OpCode, Vec<u8>);

/// Close code WebSocket clients know for "message too big".
const MESSAGE_TOO_BIG: u16 = 1009;

/// A write that cannot finish in this time means the client stopped reading:
/// the connection is dropped so that it holds nothing longer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one upgraded connection until it closes.
pub async fn serve<S>(
    node: Arc<Node>,
    mut ws: WebSocket<S>,
    encoding: Encoding,
    slot: ConnectionSlot,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    ws.set_max_message_size(node.config.limits.max_frame_bytes);
    let (read, write) = ws.split(tokio::io::split);
    let outbound = Arc::new(Outbound::new(node.config.limits.max_queue_bytes));
    let (obligated_tx, obligated_rx) = mpsc::channel::<Obligated>(4);
    let (incoming_tx, mut incoming_rx) = mpsc::channel::<Incoming>(1);
    let reader = tokio::spawn(read_loop(
        FragmentCollectorRead::new(read),
        incoming_tx,
        obligated_tx,
    ));
    let mut writer = tokio::spawn(write_loop(write, outbound.clone(), obligated_rx, encoding));

    let (control_tx, mut control_rx) = mpsc::channel(16);
    let mut session = Session::new(node.clone(), encoding, outbound.clone(), control_tx);
    let ping_interval = node.config.ping_interval;
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    let drain_window = node.config.drain_window;
    let drain = async {
        node.drain.cancelled().await;
        // Spread reconnects over the drain window so that the other nodes are not
        // hit by every client of this one at once.
        let jitter = drain_window.mul_f64(fastrand::f64());
        tokio::time::sleep(jitter).await;
    };
    tokio::pin!(drain);

    let end: Option<Disconnect> = loop {
        let deadline = session.deadline();
        tokio::select! {
            incoming = incoming_rx.recv() => match incoming {
                Some(Incoming::Data(data, opcode)) => {
                    // Boxed: command handling (subscribe, recovery, broker calls) is a
                    // large state machine that would otherwise sit inline in every
                    // idle connection's future.
                    if let Err(d) = Box::pin(session.on_frame(&data, opcode)).await {
                        break Some(d);
                    }
                }
                Some(Incoming::Violation(d)) => break Some(d),
                None => break None,
            },
            Some(control) = control_rx.recv() => Box::pin(session.on_control(control)).await,
            _ = ping.tick() => {
                if let Err(d) = session.on_ping_tick() {
                    break Some(d);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if let Err(d) = session.on_deadline() {
                    break Some(d);
                }
            }
            _ = &mut drain => break Some(Disconnect::SHUTDOWN),
            _ = &mut writer => break None,
        }
    };

    if let Some(disconnect) = &end {
        tracing::debug!(client = %session.id(), code = disconnect.code, reason = %disconnect.reason, "disconnecting");
        metrics::counter!("switchboard_disconnects_total", "code" => disconnect.code.to_string())
            .increment(1);
        outbound.close(disconnect.clone(), true);
    } else {
        outbound.close(Disconnect::CONNECTION_CLOSED, false);
    }
    Box::pin(session.close()).await;
    if !writer.is_finished() {
        // The writer sends what is queued and the close frame, bounded in time so a
        // client that stopped reading cannot hold the task.
        if tokio::time::timeout(Duration::from_secs(5), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
    reader.abort();
    drop(slot);
}

async fn read_loop<S>(
    mut read: FragmentCollectorRead<S>,
    incoming: mpsc::Sender<Incoming>,
    obligated: mpsc::Sender<Obligated>,
) where
    S: AsyncRead + Unpin,
{
    let mut send_obligated = |frame: Frame<'_>| {
        let result = obligated.try_send((frame.opcode, frame.payload.to_vec()));
        async move { result.map_err(|_| WebSocketError::ConnectionClosed) }
    };
    loop {
        let frame = match read.read_frame(&mut send_obligated).await {
            Ok(frame) => frame,
            Err(e) => {
                let violation = match e {
                    WebSocketError::FrameTooLarge => {
                        Some(Disconnect::custom(MESSAGE_TOO_BIG, "message size limit"))
                    }
                    WebSocketError::InvalidUTF8 => Some(Disconnect::BAD_REQUEST),
                    WebSocketError::InvalidFragment
                    | WebSocketError::InvalidContinuationFrame
                    | WebSocketError::InvalidCloseFrame
                    | WebSocketError::InvalidCloseCode
                    | WebSocketError::ReservedBitsNotZero
                    | WebSocketError::ControlFrameFragmented
                    | WebSocketError::PingFrameTooLarge
                    | WebSocketError::InvalidValue => Some(Disconnect::BAD_REQUEST),
                    _ => None,
                };
                if let Some(d) = violation {
                    let _ = incoming.send(Incoming::Violation(d)).await;
                }
                return;
            }
        };
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {
                let data = Bytes::copy_from_slice(&frame.payload);
                if incoming
                    .send(Incoming::Data(data, frame.opcode))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            OpCode::Close => return,
            _ => {}
        }
    }
}

async fn write_loop<W>(
    mut ws: WebSocketWrite<W>,
    outbound: Arc<Outbound>,
    mut obligated: mpsc::Receiver<Obligated>,
    encoding: Encoding,
) where
    W: AsyncWrite + Unpin,
{
    let mut batch: Vec<Record> = Vec::new();
    let mut buf = BytesMut::new();
    loop {
        tokio::select! {
            biased;
            Some((opcode, payload)) = obligated.recv() => {
                let frame = Frame::new(true, opcode, None, Payload::Owned(payload));
                if ws.write_frame(frame).await.is_err() || opcode == OpCode::Close {
                    return;
                }
                let _ = ws.flush().await;
            }
            next = outbound.next_batch(&mut batch) => match next {
                Batch::Records => {
                    account(&batch);
                    encoding.join(batch.drain(..).map(|r| r.data), &mut buf);
                    let payload = Payload::Borrowed(&buf);
                    let frame = if encoding.is_binary() { Frame::binary(payload) } else { Frame::text(payload) };
                    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
                        ws.write_frame(frame).await?;
                        ws.flush().await
                    })
                    .await;
                    buf.clear();
                    if !matches!(written, Ok(Ok(()))) {
                        outbound.close(Disconnect::WRITE_ERROR, false);
                        return;
                    }
                }
                Batch::Close(d) => {
                    let frame = Frame::close(d.code, close_reason(&d.reason));
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
                        ws.write_frame(frame).await?;
                        ws.flush().await
                    })
                    .await;
                    return;
                }
            }
        }
    }
}

/// Close frame reasons are limited to 123 bytes.
fn close_reason(reason: &str) -> &[u8] {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason.as_bytes()[..end]
}

fn account(batch: &[Record]) {
    let now = switchboard_core::now_micros();
    let mut publications = 0u64;
    for record in batch.iter().filter(|r| r.time_us > 0) {
        publications += 1;
        let latency = now.saturating_sub(record.time_us) as f64 / 1e6;
        metrics::histogram!("switchboard_delivery_latency_seconds").record(latency);
    }
    if publications > 0 {
        metrics::counter!("switchboard_messages_out_total").increment(publications);
    }
}
