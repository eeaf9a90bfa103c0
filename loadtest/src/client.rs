//! Client connections over fastwebsockets, in the protocol a run speaks: what the
//! protocols share (errors, options, the TCP connect, bounds) and [`Connection`],
//! the one face receivers use whatever the protocol.
//!
//! - [`centrifugo`]: the Centrifugo protocol, JSON or protobuf ([`Client`]).
//! - [`pusher`]: Pusher Channels protocol 7 ([`PusherClient`]).
//! - [`sse`]: the Centrifugo protocol (JSON) over server-sent events ([`SseClient`]).
//! - `upgrade`: the WebSocket opening handshake both use; `lean`: the Centrifugo
//!   JSON reader of the hot path.
//!
//! Each connection is owned by one task, which both reads and writes, so no locks.
//! Both clients answer server pings, so connections can be held for any duration.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};

use crate::target::Target;

pub mod centrifugo;
mod lean;
pub mod pusher;
pub mod sse;
mod upgrade;

pub use centrifugo::Client;
pub use pusher::PusherClient;
pub use sse::SseClient;

/// Why a client operation failed; [`ClientError::reason`] is the label reports group by.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("tcp: {0}")]
    Tcp(std::io::Error),
    #[error("websocket handshake: {0}")]
    Handshake(String),
    #[error("websocket: {0}")]
    Ws(#[from] fastwebsockets::WebSocketError),
    #[error("closed by the server: {code} {reason}")]
    Closed { code: u16, reason: String },
    /// An error reply (Centrifugo), a `pusher:error` or a `pusher:subscription_error`.
    #[error("error reply {code}: {message}")]
    Reply { code: u32, message: String },
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

impl ClientError {
    /// A short label: `tcp AddrNotAvailable`, `http 503`, `close 3008`, `error 106`, …
    pub fn reason(&self) -> String {
        match self {
            ClientError::Tcp(e) => format!("tcp {:?}", e.kind()),
            // `status 401` or `status 401: why`.
            ClientError::Handshake(s) => match s.strip_prefix("status ") {
                Some(rest) => format!("http {}", rest.split(':').next().unwrap_or(rest)),
                None => "handshake".into(),
            },
            ClientError::Ws(_) => "websocket".into(),
            ClientError::Closed { code, .. } => format!("close {code}"),
            ClientError::Reply { code, .. } => format!("error {code}"),
            ClientError::Decode(_) => "decode".into(),
            ClientError::Timeout(what) => format!("timeout {what}"),
        }
    }
}

/// The client protocol of a run's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// Centrifugo's, JSON or (subprotocol `centrifuge-protobuf`) protobuf.
    Centrifugo { protobuf: bool },
    /// Pusher Channels protocol 7, to the app with this key.
    Pusher { app_key: String },
    /// Centrifugo's in JSON over server-sent events (`/connection/sse`), commands
    /// through `/emulation`.
    Sse,
}

impl Protocol {
    /// How reports name it: `json`, `protobuf` or `pusher`.
    pub fn label(&self) -> &'static str {
        match self {
            Protocol::Centrifugo { protobuf: false } => "json",
            Protocol::Centrifugo { protobuf: true } => "protobuf",
            Protocol::Pusher { .. } => "pusher",
            Protocol::Sse => "sse",
        }
    }
}

/// How to open a connection, whatever the protocol.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Local address to bind before connecting (spreads source ports over addresses).
    pub source: Option<IpAddr>,
    /// Connection token (JWT) of a Centrifugo connect; none for anonymous connects.
    pub token: Option<String>,
    /// Bound on the TCP connect, the upgrade and the protocol's greeting together.
    pub timeout: Duration,
}

/// Where a subscription starts: Centrifugo's stream position, nothing for Pusher
/// (its order is only that of the payloads' sequence numbers).
#[derive(Debug, Clone, Default)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// A connection in either protocol, as receivers use it: open, subscribe to one
/// channel, read publications, close.
pub enum Connection {
    Centrifugo(Box<Client>),
    Pusher(Box<PusherClient>),
    Sse(Box<SseClient>),
}

impl Connection {
    /// TCP connect, WebSocket upgrade and the protocol's greeting (Centrifugo's
    /// connect command, Pusher's `pusher:connection_established`).
    pub async fn open(
        target: &Target,
        protocol: &Protocol,
        opts: &ClientOptions,
    ) -> Result<Connection, ClientError> {
        Ok(match protocol {
            Protocol::Centrifugo { protobuf } => {
                let encoding = centrifugo::encoding(*protobuf);
                Connection::Centrifugo(Box::new(Client::open(target, encoding, opts).await?))
            }
            Protocol::Pusher { app_key } => {
                Connection::Pusher(Box::new(PusherClient::open(target, app_key, opts).await?))
            }
            Protocol::Sse => Connection::Sse(Box::new(SseClient::open(target, opts).await?)),
        })
    }

    /// Subscribes to `channel` and waits until the server confirms it.
    pub async fn subscribe(&mut self, channel: &str) -> Result<Position, ClientError> {
        match self {
            Connection::Centrifugo(c) => {
                let reply = c.subscribe(channel, None).await?;
                Ok(Position {
                    epoch: reply.epoch,
                    offset: reply.offset,
                })
            }
            Connection::Pusher(c) => {
                c.subscribe(channel).await?;
                Ok(Position::default())
            }
            Connection::Sse(c) => {
                let (epoch, offset) = c.subscribe(channel).await?;
                Ok(Position { epoch, offset })
            }
        }
    }

    /// Hands `each` the offset (0 for Pusher) and data of every publication in
    /// the next frame. Not cancel-safe: a cancelled read leaves the connection
    /// unusable.
    pub async fn next_publications(
        &mut self,
        each: impl FnMut(u64, &[u8]),
    ) -> Result<(), ClientError> {
        match self {
            Connection::Centrifugo(c) => c.next_publications(each).await,
            Connection::Pusher(c) => c.next_publications(each).await,
            Connection::Sse(c) => c.next_publications(each).await,
        }
    }

    /// Closes the connection with a normal close frame (best effort).
    pub async fn close(self) {
        match self {
            Connection::Centrifugo(c) => c.close().await,
            Connection::Pusher(c) => c.close().await,
            Connection::Sse(c) => c.close().await,
        }
    }
}

/// Events or replies read but not yet asked for are kept, up to this many per
/// connection; beyond, the oldest go.
const BACKLOG: usize = 10_000;

/// A frame that could not be decoded, or a command that could not be encoded; both
/// are reported as `decode`.
fn undecodable(e: impl std::fmt::Display) -> ClientError {
    ClientError::Decode(e.to_string())
}

/// The error a close frame with this payload stands for.
fn closed(payload: &[u8]) -> ClientError {
    let code = match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 1005,
    };
    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
    ClientError::Closed { code, reason }
}

/// Runs `fut` within `limit`, naming what timed out.
pub async fn within<T>(
    limit: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(ClientError::Timeout(what)))
}

/// A TCP connection to `target`, bound first to `source` when given.
pub async fn tcp_connect(
    target: &Target,
    source: Option<IpAddr>,
) -> Result<TcpStream, ClientError> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ClientError::Tcp)?;
    if let Some(ip) = source {
        // Leave the port to connect(), which needs only the 4-tuple to be unique and
        // may reuse a loopback port in TIME_WAIT. bind() would pick it alone, from
        // half the range and none in TIME_WAIT: after a run or two of tens of
        // thousands of connections its search cost hundreds of µs per connection.
        // Best effort: without the option, bind() still works, only slower.
        #[cfg(target_os = "linux")]
        let _ = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        );
        socket
            .bind(std::net::SocketAddr::new(ip, 0))
            .map_err(ClientError::Tcp)?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .map_err(ClientError::Tcp)?;
    stream.set_nodelay(true).map_err(ClientError::Tcp)?;
    Ok(stream)
}
