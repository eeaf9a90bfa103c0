//! The writing side of a WebSocket connection: what is queued for the client
//! becomes frames written straight to the socket with vectored writes, without
//! waiting. What the socket does not take waits in `pending`, and while it waits
//! nothing more is taken from the queue, so a client that stops reading fills
//! its bounded queue and is disconnected as slow.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};

use bytes::BytesMut;
use fastwebsockets::OpCode;
use switchboard_core::queue::{Batch, Outbound, Record};
use switchboard_core::Disconnect;
use tokio::time::Instant;

use super::frames;
use super::socket::Socket;
use crate::connection::{delivery, Framing, Goodbye};

pub use crate::transport::WRITE_TIMEOUT;

/// Records written with one vectored write, each its own slice; a bigger batch
/// is joined into one buffer first.
const MAX_SLICES: usize = 32;

thread_local! {
    /// Records taken from a queue with their joined frames, per worker thread.
    /// Used only between two awaits.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        records: Vec::new(),
        joined: BytesMut::new(),
    });
}

struct Scratch {
    records: Vec<Record>,
    joined: BytesMut,
}

/// Whether the connection goes on after a write.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Open,
    /// The queue's close frame went out (or is pending): nothing more to write.
    Closed,
}

/// The connection's side of writing: frames the socket has not taken yet.
pub struct Writer {
    /// A static of the session's protocol: one pointer in every connection.
    framing: &'static Framing,
    /// Whole frames, or the rest of one, not yet taken by the socket. Nothing
    /// more is taken from the queue until they are written.
    pending: Vec<u8>,
    /// Since when `pending` (or the socket's TLS layer) has been waiting for the socket.
    pub stalled_since: Option<Instant>,
    pub close_sent: bool,
}

impl Writer {
    pub fn new(framing: &'static Framing) -> Writer {
        Writer {
            framing,
            pending: Vec::new(),
            stalled_since: None,
            close_sent: false,
        }
    }

    /// Queues a control frame (pong, close) behind what is pending; written by
    /// the next [`Writer::drain`]. Pongs are dropped while the socket is stalled.
    pub fn control(&mut self, opcode: OpCode, payload: &[u8]) {
        // A client that pings while not reading would grow `pending` without
        // bound; RFC 6455 lets a pong answer only the latest pings.
        if self.close_sent || (opcode == OpCode::Pong && self.stalled_since.is_some()) {
            return;
        }
        let mut head = [0; frames::MAX_HEAD];
        let n = frames::head(opcode, payload.len(), &mut head);
        self.pending.extend_from_slice(&head[..n]);
        self.pending.extend_from_slice(payload);
    }

    /// Queues the close frame saying goodbye for `d`; nothing is written after it.
    fn close_frame(&mut self, d: &Disconnect, goodbye: fn(&Disconnect) -> Goodbye) {
        let mut payload = goodbye(d).code.to_be_bytes().to_vec();
        payload.extend_from_slice(close_reason(&d.message));
        self.close_with(&payload);
    }

    /// Queues a close frame carrying `payload` (ours, or the client's echoed);
    /// nothing is written after it.
    pub fn close_with(&mut self, payload: &[u8]) {
        self.control(OpCode::Close, payload);
        self.close_sent = true;
    }

    /// Writes what is pending, then everything queued, until the socket stops
    /// taking bytes or nothing is left. Never waits. `goodbye` gives the close
    /// code when the queue is closed.
    pub fn drain(
        &mut self,
        io: &mut Socket,
        outbound: &Outbound,
        goodbye: fn(&Disconnect) -> Goodbye,
    ) -> io::Result<Flow> {
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
            let taken = SCRATCH.with_borrow_mut(|scratch| {
                let batch = outbound.try_batch(&mut scratch.records);
                match batch {
                    None => Ok(false),
                    Some(Batch::Records) => {
                        delivery::account(&scratch.records);
                        let written = self.write_records(io, scratch);
                        scratch.records.clear();
                        written.map(|()| true)
                    }
                    Some(Batch::Close(d)) => {
                        self.close_frame(&d, goodbye);
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
    fn write_pending(&mut self, io: &mut Socket) -> io::Result<bool> {
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

    /// Writes `scratch.records` as the framing says (one frame joining them, or
    /// a frame each); what the socket does not take goes to `pending`.
    fn write_records(&mut self, io: &mut Socket, scratch: &mut Scratch) -> io::Result<()> {
        let opcode = if self.framing.binary {
            OpCode::Binary
        } else {
            OpCode::Text
        };
        let records = &scratch.records;
        let mut heads = [[0u8; frames::MAX_HEAD]; MAX_SLICES];
        let mut slices = [IoSlice::new(&[]); 2 * MAX_SLICES];
        let mut count = 0;
        match self.framing.join {
            Some(separator) => {
                let len = records.iter().map(|r| r.data.len()).sum::<usize>()
                    + separator.len() * (records.len() - 1);
                let head_len = frames::head(opcode, len, &mut heads[0]);
                slices[0] = IoSlice::new(&heads[0][..head_len]);
                count = 1;
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
                    scratch.joined.reserve(len);
                    for (i, record) in records.iter().enumerate() {
                        if i > 0 {
                            scratch.joined.extend_from_slice(separator);
                        }
                        scratch.joined.extend_from_slice(&record.data);
                    }
                    slices[1] = IoSlice::new(&scratch.joined);
                    count = 2;
                }
            }
            None if records.len() <= MAX_SLICES => {
                for (record, head) in records.iter().zip(heads.iter_mut()) {
                    let head_len = frames::head(opcode, record.data.len(), head);
                    slices[count] = IoSlice::new(&head[..head_len]);
                    slices[count + 1] = IoSlice::new(&record.data);
                    count += 2;
                }
            }
            None => {
                scratch.joined.clear();
                for record in records {
                    let mut head = [0u8; frames::MAX_HEAD];
                    let head_len = frames::head(opcode, record.data.len(), &mut head);
                    scratch.joined.extend_from_slice(&head[..head_len]);
                    scratch.joined.extend_from_slice(&record.data);
                }
                slices[0] = IoSlice::new(&scratch.joined);
                count = 1;
            }
        }
        let slices = &slices[..count];
        let total: usize = slices.iter().map(|s| s.len()).sum();
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
    pub async fn finish(
        &mut self,
        io: &mut Socket,
        outbound: &Outbound,
        goodbye: fn(&Disconnect) -> Goodbye,
    ) {
        loop {
            match self.drain(io, outbound, goodbye) {
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
fn write_available<'a>(io: &mut Socket, slices: &'a [IoSlice<'a>]) -> io::Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A server socket and the client's end of it.
    async fn pair() -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Socket::Plain(server), client)
    }

    fn goodbye(_: &Disconnect) -> Goodbye {
        Goodbye {
            code: 4242,
            reconnect: false,
        }
    }

    /// Unmasked server frames in `bytes`: (opcode, payload).
    fn frames_of(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let opcode = bytes[0] & 0x0f;
            let (len, head) = match bytes[1] {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            out.push((opcode, bytes[head..head + len].to_vec()));
            bytes = &bytes[head + len..];
        }
        out
    }

    /// Queues `count` records, closes the queue, drains it with `framing` and
    /// returns the frames the client receives.
    async fn written(framing: &'static Framing, count: usize) -> Vec<(u8, Vec<u8>)> {
        let (mut socket, mut client) = pair().await;
        let outbound = Outbound::new(1 << 20);
        for i in 0..count {
            outbound
                .push(Record::new(format!("r{i}").into_bytes().into()))
                .unwrap();
        }
        outbound.close(Disconnect::SHUTDOWN, true);
        let mut writer = Writer::new(framing);
        writer.finish(&mut socket, &outbound, goodbye).await;
        drop(socket);
        let mut bytes = Vec::new();
        client.read_to_end(&mut bytes).await.unwrap();
        frames_of(&bytes)
    }

    fn close_frame() -> (u8, Vec<u8>) {
        let mut payload = 4242u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"shutdown");
        (OpCode::Close as u8, payload)
    }

    #[tokio::test]
    async fn joined_records_leave_in_one_frame_then_the_close_with_the_protocols_code() {
        for count in [3, MAX_SLICES + 5] {
            let framing = &Framing {
                binary: false,
                join: Some(b"\n"),
            };
            let frames = written(framing, count).await;
            let joined: Vec<String> = (0..count).map(|i| format!("r{i}")).collect();
            assert_eq!(
                frames,
                vec![
                    (OpCode::Text as u8, joined.join("\n").into_bytes()),
                    close_frame()
                ],
                "{count} records"
            );
        }
    }

    #[tokio::test]
    async fn records_framed_one_by_one_each_get_a_frame() {
        for count in [3, MAX_SLICES + 5] {
            let framing = &Framing {
                binary: true,
                join: None,
            };
            let frames = written(framing, count).await;
            let mut expected: Vec<(u8, Vec<u8>)> = (0..count)
                .map(|i| (OpCode::Binary as u8, format!("r{i}").into_bytes()))
                .collect();
            expected.push(close_frame());
            assert_eq!(frames, expected, "{count} records");
        }
    }
}
