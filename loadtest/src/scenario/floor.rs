//! `floor`: what fan-out costs on this machine with no server at all.
//!
//! The tool connects N loopback TCP socket pairs to itself. W writer threads
//! (a server using W cores at best) each own a share of the accepting ends and
//! write every message to each of their sockets with one `write(2)`, nothing
//! else: no WebSocket, no queue, no task. The other ends are read by tokio
//! tasks as the load generator reads a gateway's pushes. Each message carries
//! the time it was due and its sequence number, so the report is the same as a
//! fan-out run's (delivery latency, loss, order) plus the writers' CPU per
//! write. A server cannot deliver faster or cheaper than this on the same
//! machine: the figures are the floor under the gateway's.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::FloorArgs;
use crate::hist::{self, Percentiles};
use crate::payload::now_us;
use crate::procstat;

/// Bytes of a message that carry its due time and sequence number.
const HEADER: usize = 16;

#[derive(Debug, Default, Serialize)]
pub struct FloorSummary {
    pub sockets: usize,
    pub writers: usize,
    pub messages: u64,
    pub rate: f64,
    pub payload: usize,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub out_of_order: u64,
    /// From the time a message was due to its arrival at each socket's reader.
    pub latency: Percentiles,
    /// Per message and writer: the time to write it to every socket of the writer.
    pub write_round: Percentiles,
    /// Writer threads' CPU per write (one write = one delivery).
    pub writer_cpu_us_per_write: f64,
    /// The whole process (writers and readers), per delivery.
    pub process_cpu_us_per_delivery: f64,
    pub duration_s: f64,
}

/// What one reader saw.
#[derive(Default)]
struct ReaderCounts {
    received: u64,
    out_of_order: u64,
}

pub async fn run(args: &FloorArgs) -> anyhow::Result<FloorSummary> {
    if args.payload < HEADER {
        bail!("--payload must be at least {HEADER} bytes");
    }
    if args.rate <= 0.0 || args.writers == 0 || args.sockets == 0 {
        bail!("--rate, --writers and --sockets must be positive");
    }
    let fds = crate::limits::raise_nofile();
    if (args.sockets as u64) * 2 + 64 > fds {
        bail!(
            "{} socket pairs need {} file descriptors; this process may open {fds}",
            args.sockets,
            args.sockets * 2 + 64
        );
    }
    let (writing, reading) = pairs(args.sockets).context("connecting socket pairs")?;

    let latency = Arc::new(Mutex::new(hist::new_us()));
    let mut readers = Vec::with_capacity(reading.len());
    for socket in reading {
        socket.set_nonblocking(true)?;
        let socket = tokio::net::TcpStream::from_std(socket)?;
        readers.push(tokio::spawn(read_all(
            socket,
            args.payload,
            args.messages,
            latency.clone(),
        )));
    }

    let cpu_before = procstat::read("self").map(|u| u.cpu_s).unwrap_or(0.0);
    let started = Instant::now();
    let due0_us = now_us();
    let shares = split(writing, args.writers);
    let (messages, rate, payload) = (args.messages, args.rate, args.payload);
    let writers: Vec<_> = shares
        .into_iter()
        .map(|share| {
            std::thread::spawn(move || write_all(share, messages, rate, payload, started, due0_us))
        })
        .collect();
    let (writers, rounds): (Vec<f64>, Vec<Histogram<u64>>) =
        tokio::task::spawn_blocking(move || {
            writers
                .into_iter()
                .map(|w| w.join().expect("a writer thread panicked"))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .await??
        .into_iter()
        .unzip();
    let writer_cpu_s: f64 = writers.iter().sum();

    // Readers stop at their last message; a socket that lost one would never
    // finish, so the wait is bounded.
    let mut counts = ReaderCounts::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for reader in readers {
        match tokio::time::timeout_at(deadline, reader).await {
            Ok(joined) => {
                let c = joined??;
                counts.received += c.received;
                counts.out_of_order += c.out_of_order;
            }
            Err(_) => break,
        }
    }
    let duration_s = started.elapsed().as_secs_f64();
    let cpu_s = procstat::read("self").map(|u| u.cpu_s).unwrap_or(0.0) - cpu_before;

    let mut round = hist::new_us();
    for h in &rounds {
        round.add(h).expect("same bounds");
    }
    let expected = args.sockets as u64 * args.messages;
    let latency = latency.lock().unwrap_or_else(|e| e.into_inner());
    Ok(FloorSummary {
        sockets: args.sockets,
        writers: args.writers,
        messages: args.messages,
        rate: args.rate,
        payload: args.payload,
        expected,
        received: counts.received,
        lost: expected.saturating_sub(counts.received),
        out_of_order: counts.out_of_order,
        latency: Percentiles::of(&latency),
        write_round: Percentiles::of(&round),
        writer_cpu_us_per_write: writer_cpu_s * 1e6 / expected.max(1) as f64,
        process_cpu_us_per_delivery: cpu_s * 1e6 / counts.received.max(1) as f64,
        duration_s,
    })
}

/// `n` connected pairs over loopback: (accepted ends, connecting ends).
fn pairs(n: usize) -> std::io::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (mut accepted, mut connecting) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        accepted.push(server);
        connecting.push(client);
    }
    Ok((accepted, connecting))
}

/// Deals `sockets` round-robin into `n` shares.
fn split(sockets: Vec<TcpStream>, n: usize) -> Vec<Vec<TcpStream>> {
    let mut shares: Vec<Vec<TcpStream>> = (0..n).map(|_| Vec::new()).collect();
    for (i, s) in sockets.into_iter().enumerate() {
        shares[i % n].push(s);
    }
    shares.retain(|s| !s.is_empty());
    shares
}

/// One writer thread: message `i` is due `i / rate` seconds after `started`;
/// it is written to every socket of the share, one write each. Returns the
/// thread's CPU seconds and the time each round took.
fn write_all(
    mut share: Vec<TcpStream>,
    messages: u64,
    rate: f64,
    payload: usize,
    started: Instant,
    due0_us: u64,
) -> std::io::Result<(f64, Histogram<u64>)> {
    let cpu_before = procstat::thread_cpu_s().unwrap_or(0.0);
    let mut rounds = hist::new_us();
    let mut message = vec![b'x'; payload];
    for seq in 0..messages {
        let offset = Duration::from_secs_f64(seq as f64 / rate);
        if let Some(wait) = offset.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let due_us = due0_us + offset.as_micros() as u64;
        message[..8].copy_from_slice(&due_us.to_le_bytes());
        message[8..16].copy_from_slice(&seq.to_le_bytes());
        let round = Instant::now();
        for socket in &mut share {
            socket.write_all(&message)?;
        }
        hist::record(&mut rounds, round.elapsed().as_micros() as u64);
    }
    let cpu = procstat::thread_cpu_s().unwrap_or(0.0) - cpu_before;
    Ok((cpu, rounds))
}

/// Reads one socket until its last message, recording each latency.
async fn read_all(
    socket: tokio::net::TcpStream,
    payload: usize,
    messages: u64,
    latency: Arc<Mutex<Histogram<u64>>>,
) -> std::io::Result<ReaderCounts> {
    let mut counts = ReaderCounts::default();
    let mut buf = vec![0u8; payload * 16];
    let mut filled = 0;
    let mut next = 0u64;
    while counts.received < messages {
        socket.readable().await?;
        let n = match socket.try_read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let now = now_us();
        filled += n;
        let whole = filled / payload * payload;
        {
            let mut h = latency.lock().unwrap_or_else(|e| e.into_inner());
            for m in buf[..whole].chunks_exact(payload) {
                let due = u64::from_le_bytes(m[..8].try_into().expect("8 bytes"));
                let seq = u64::from_le_bytes(m[8..16].try_into().expect("8 bytes"));
                if seq != next {
                    counts.out_of_order += 1;
                }
                next = seq + 1;
                counts.received += 1;
                hist::record(&mut h, now.saturating_sub(due));
            }
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
    Ok(counts)
}

impl FloorSummary {
    pub fn table(&self) -> String {
        let p = |p: &Percentiles| {
            format!(
                "p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2} ms  (n={})",
                p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms, p.count
            )
        };
        let mut o = String::new();
        o += &format!(
            "sockets / writers            {} loopback pairs / {} writer threads\n",
            self.sockets, self.writers
        );
        o += &format!(
            "messages                     {} × {} bytes at {}/s to every socket\n",
            self.messages, self.payload, self.rate
        );
        o += &format!(
            "expected / received          {} / {}\n",
            self.expected, self.received
        );
        o += &format!(
            "lost / out of order          {} / {}\n",
            self.lost, self.out_of_order
        );
        o += &format!("delivery latency             {}\n", p(&self.latency));
        o += &format!("one message to a share       {}\n", p(&self.write_round));
        o += &format!(
            "writer CPU per write         {:.3} µs\n",
            self.writer_cpu_us_per_write
        );
        o += &format!(
            "process CPU per delivery     {:.3} µs (writers and readers)\n",
            self.process_cpu_us_per_delivery
        );
        o
    }
}
