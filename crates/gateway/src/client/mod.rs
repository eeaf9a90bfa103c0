//! One client connection speaking the Centrifugo protocol over WebSocket.
//!
//! Three tasks per connection: a *reader* that only reads frames (reading is not
//! cancel-safe, so it never sits in a `select!`), the *session* loop that runs
//! commands, timers and server requests, and a *writer* that drains the bounded
//! [`Outbound`] queue, joining everything queued at once into one frame; control
//! frames the reader owes the client (pong, close echo) travel through the same
//! queue, ahead of the records.

mod session;
pub use session::history_query;
mod subscribe;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketWrite,
};
use switchboard_core::queue::{Batch, ControlFrame, Outbound, Record};
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
    let (incoming_tx, mut incoming_rx) = mpsc::channel::<Incoming>(1);
    let reader = tokio::spawn(read_loop(
        FragmentCollectorRead::new(read),
        incoming_tx,
        outbound.clone(),
    ));
    let mut writer = tokio::spawn(write_loop(write, outbound.clone(), encoding));

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
    outbound: Arc<Outbound>,
) where
    S: AsyncRead + Unpin,
{
    // Frames the protocol obliges us to send (pong, close echo) go to the writer
    // ahead of queued records; a dropped pong is allowed, so the result is ignored.
    let mut send_obligated = |frame: Frame<'_>| {
        let _ = outbound.push_control(ControlFrame {
            kind: frame.opcode as u8,
            payload: Bytes::copy_from_slice(&frame.payload),
        });
        async { Ok::<(), WebSocketError>(()) }
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

async fn write_loop<W>(mut ws: WebSocketWrite<W>, outbound: Arc<Outbound>, encoding: Encoding)
where
    W: AsyncWrite + Unpin,
{
    let mut batch: Vec<Record> = Vec::new();
    let mut buf = BytesMut::new();
    loop {
        match outbound.next_batch(&mut batch).await {
            Batch::Control(frames) => {
                for control in frames {
                    let opcode = if control.kind == OpCode::Close as u8 {
                        OpCode::Close
                    } else {
                        OpCode::Pong
                    };
                    let frame =
                        Frame::new(true, opcode, None, Payload::Owned(control.payload.to_vec()));
                    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
                        ws.write_frame(frame).await?;
                        ws.flush().await
                    })
                    .await;
                    if !matches!(written, Ok(Ok(()))) || opcode == OpCode::Close {
                        return;
                    }
                }
            }
            Batch::Records => {
                account(&batch);
                encoding.join(batch.drain(..).map(|r| r.data), &mut buf);
                let payload = Payload::Borrowed(&buf);
                let frame = if encoding.is_binary() {
                    Frame::binary(payload)
                } else {
                    Frame::text(payload)
                };
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
