//! The socket under an upgraded WebSocket connection, driven by readiness.
//!
//! A connection task waits for its socket to become readable or writable and
//! then reads and writes without waiting, so one task serves both directions
//! with no buffer held while the connection is idle. For `wss://` the TLS layer
//! is run the same way: rustls' buffered, synchronous API over the TCP socket.

use std::io::{self, IoSlice, Read, Write};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConnection;

use crate::transport::deadline::WriteDeadline;

/// A client's socket: plain TCP, or TCP with TLS terminated here.
pub enum Socket {
    Plain(TcpStream),
    Tls(Box<Tls>),
}

pub struct Tls {
    tcp: TcpStream,
    conn: ServerConnection,
}

/// `std::io` on a tokio socket without waiting: `WouldBlock` when it is not ready.
struct NonBlocking<'a>(&'a TcpStream);

impl Read for NonBlocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket {
    /// Takes the socket back from hyper after the upgrade, with any bytes the
    /// client sent behind its handshake. `None` for an I/O type this gateway did
    /// not create.
    pub fn from_upgraded(upgraded: Upgraded) -> Option<(Socket, Bytes)> {
        let upgraded = match upgraded.downcast::<TokioIo<WriteDeadline<TcpStream>>>() {
            Ok(parts) => {
                let tcp = parts.io.into_inner().into_inner();
                return Some((Socket::Plain(tcp), parts.read_buf));
            }
            Err(upgraded) => upgraded,
        };
        type TlsIo = TokioIo<WriteDeadline<tokio_rustls::server::TlsStream<TcpStream>>>;
        let parts = upgraded.downcast::<TlsIo>().ok()?;
        let (tcp, conn) = parts.io.into_inner().into_inner().into_inner();
        Some((Socket::Tls(Box::new(Tls { tcp, conn })), parts.read_buf))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(tcp) => tcp,
            Socket::Tls(tls) => &tls.tcp,
        }
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_read_ready(cx)
    }

    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_write_ready(cx)
    }

    /// Reads what the client sent, without waiting: `Ok(0)` at the end of the
    /// stream, `WouldBlock` when there is nothing yet.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(tcp) => tcp.try_read(buf),
            Socket::Tls(tls) => tls.try_read(buf),
        }
    }

    /// Writes what the socket takes now (possibly less than offered), without
    /// waiting: `WouldBlock` when it takes nothing.
    pub fn try_write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Socket::Plain(tcp) => tcp.try_write_vectored(bufs),
            Socket::Tls(tls) => tls.try_write(bufs),
        }
    }

    /// Sends what the transport itself still holds (TLS records); true when
    /// nothing is left.
    pub fn flush(&mut self) -> io::Result<bool> {
        match self {
            Socket::Plain(_) => Ok(true),
            Socket::Tls(tls) => tls.flush(),
        }
    }

    /// Starts a clean close where the transport has one (TLS close_notify).
    pub fn close(&mut self) {
        if let Socket::Tls(tls) = self {
            tls.conn.send_close_notify();
        }
    }
}

impl Tls {
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Bounded: each round either returns or consumes bytes from the socket,
        // and the socket's receive buffer is finite.
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.conn.read_tls(&mut NonBlocking(&self.tcp))? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Sends the alert explaining why, if the socket takes it.
                let _ = self.flush();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages after the handshake (key updates, tickets).
            self.flush()?;
        }
    }

    fn try_write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.flush()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // rustls takes plaintext up to its buffer limit and encrypts it at once.
        let n = self.conn.writer().write_vectored(bufs)?;
        self.flush()?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut NonBlocking(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}
