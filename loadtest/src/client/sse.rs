//! A Centrifugo protocol client over server-sent events, as centrifuge-js's `sse`
//! transport speaks it: the connect command in the GET's `cf_connect`, every reply
//! and push a `data:` event of the response, and each later command (subscribe, the
//! pongs to server pings) a `POST /emulation` naming the stream's session, on an
//! HTTP connection of its own that closes after the answer.

use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::Connection;
use hyper_util::rt::TokioIo;
use switchboard_protocol::centrifugo::codec::is_ping;
use switchboard_protocol::centrifugo::pb::{Command, ConnectRequest, Reply, SubscribeRequest};
use switchboard_protocol::centrifugo::Encoding;
use tokio::net::TcpStream;

use super::{lean, tcp_connect, undecodable, within, ClientError, ClientOptions};
use crate::target::Target;

/// The gateway's SSE and emulation endpoints.
const SSE_PATH: &str = "/connection/sse";
const EMULATION_PATH: &str = "/emulation";

/// Bytes of one event at most; a server's events are single records.
const MAX_EVENT: usize = 1 << 20;

type Conn = Connection<TokioIo<TcpStream>, Full<Bytes>>;

pub struct SseClient {
    target: Target,
    source: Option<std::net::IpAddr>,
    /// The HTTP connection under the stream, polled while the body is read.
    conn: Pin<Box<Conn>>,
    body: Incoming,
    buffer: BytesMut,
    session: String,
    node: String,
    next_id: u32,
}

impl SseClient {
    /// TCP connect, the GET with the connect command, and its reply.
    pub async fn open(target: &Target, opts: &ClientOptions) -> Result<SseClient, ClientError> {
        let opening = async {
            let connect = Command {
                id: 1,
                connect: Some(ConnectRequest {
                    token: opts.token.clone().unwrap_or_default(),
                    name: "switchboard-loadtest".into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let command = Encoding::Json
                .encode_command(&connect)
                .map_err(undecodable)?;
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair(
                    "cf_connect",
                    std::str::from_utf8(&command).map_err(undecodable)?,
                )
                .finish();
            let req = hyper::Request::get(format!("{SSE_PATH}?{query}"))
                .header("host", target.addr.to_string())
                .header("accept", "text/event-stream")
                .body(Full::new(Bytes::new()))
                .map_err(undecodable)?;
            let stream = tcp_connect(target, opts.source).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ClientError::Handshake(e.to_string()))?;
            let mut conn = Box::pin(conn);
            let response = tokio::select! {
                r = sender.send_request(req) => r.map_err(|e| ClientError::Handshake(e.to_string()))?,
                r = conn.as_mut() => return Err(ClientError::Handshake(format!("connection ended: {r:?}"))),
            };
            if !response.status().is_success() {
                return Err(ClientError::Handshake(format!(
                    "status {}",
                    response.status().as_u16()
                )));
            }
            let mut client = SseClient {
                target: target.clone(),
                source: opts.source,
                conn,
                body: response.into_body(),
                buffer: BytesMut::new(),
                session: String::new(),
                node: String::new(),
                next_id: 1,
            };
            let reply = client.next_reply().await?;
            if let Some(e) = reply.error {
                return Err(ClientError::Reply {
                    code: e.code,
                    message: e.message,
                });
            }
            let connected = reply.connect.unwrap_or_default();
            client.session = connected.session;
            client.node = connected.node;
            Ok(client)
        };
        within(opts.timeout, "connect", opening).await
    }

    /// Subscribes (through emulation) and waits for the reply on the stream.
    pub async fn subscribe(&mut self, channel: &str) -> Result<(String, u64), ClientError> {
        self.next_id += 1;
        let id = self.next_id;
        self.post(&Command {
            id,
            subscribe: Some(SubscribeRequest {
                channel: channel.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
        loop {
            let reply = self.next_reply().await?;
            if reply.id != id {
                continue;
            }
            if let Some(e) = reply.error {
                return Err(ClientError::Reply {
                    code: e.code,
                    message: e.message,
                });
            }
            let result = reply.subscribe.unwrap_or_default();
            return Ok((result.epoch, result.offset));
        }
    }

    /// Hands `each` the offset and data of every publication in the next event(s)
    /// read; answers pings through emulation. Not cancel-safe.
    pub async fn next_publications(
        &mut self,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<(), ClientError> {
        loop {
            let event = self.next_event().await?;
            let mut ping = false;
            let mut published = false;
            for record in lean::records(&event)? {
                match record {
                    lean::Record::Ping => ping = true,
                    lean::Record::Publication { offset, data } => {
                        published = true;
                        each(offset, data);
                    }
                    lean::Record::Other(reply) => {
                        if let Some(d) = reply.push.and_then(|p| p.disconnect) {
                            return Err(ClientError::Closed {
                                code: d.code as u16,
                                reason: d.reason,
                            });
                        }
                    }
                }
            }
            if ping {
                self.post(&Command::default()).await?;
            }
            if published {
                return Ok(());
            }
        }
    }

    /// Ends the stream (its connection closes when dropped).
    pub async fn close(self) {}

    /// The next reply or push that is not a ping (pings are answered).
    async fn next_reply(&mut self) -> Result<Reply, ClientError> {
        loop {
            let event = self.next_event().await?;
            let reply = Encoding::Json.decode_reply(&event).map_err(undecodable)?;
            if is_ping(&reply) {
                self.post(&Command::default()).await?;
                continue;
            }
            if let Some(d) = reply.push.as_ref().and_then(|p| p.disconnect.as_ref()) {
                return Err(ClientError::Closed {
                    code: d.code as u16,
                    reason: d.reason.clone(),
                });
            }
            return Ok(reply);
        }
    }

    /// The data of the next event.
    async fn next_event(&mut self) -> Result<Bytes, ClientError> {
        loop {
            if let Some(end) = find(&self.buffer, b"\n\n") {
                let event = self.buffer.split_to(end + 2);
                let mut data = BytesMut::new();
                for line in event[..end].split(|b| *b == b'\n') {
                    if let Some(d) = line
                        .strip_prefix(b"data: ")
                        .or_else(|| line.strip_prefix(b"data:"))
                    {
                        if !data.is_empty() {
                            data.extend_from_slice(b"\n");
                        }
                        data.extend_from_slice(d);
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Ok(data.freeze());
            }
            if self.buffer.len() > MAX_EVENT {
                return Err(undecodable("an event over 1 MiB"));
            }
            let frame = tokio::select! {
                frame = self.body.frame() => frame,
                r = self.conn.as_mut() => return Err(ClientError::Closed { code: 0, reason: format!("stream ended: {r:?}") }),
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buffer.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Some(Err(e)) => {
                    return Err(ClientError::Closed {
                        code: 0,
                        reason: e.to_string(),
                    })
                }
                None => {
                    return Err(ClientError::Closed {
                        code: 0,
                        reason: "stream ended".into(),
                    })
                }
            }
        }
    }

    /// POSTs `command` to /emulation on a connection of its own, while the stream's
    /// connection keeps being polled.
    async fn post(&mut self, command: &Command) -> Result<(), ClientError> {
        let data = Encoding::Json
            .encode_command(command)
            .map_err(undecodable)?;
        let body = serde_json::json!({
            "session": self.session,
            "node": self.node,
            "data": std::str::from_utf8(&data).map_err(undecodable)?,
        });
        let req = hyper::Request::post(EMULATION_PATH)
            .header("host", self.target.addr.to_string())
            .header("content-type", "application/json")
            .header("connection", "close")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(undecodable)?;
        let (target, source) = (self.target.clone(), self.source);
        let posting = async move {
            let stream = tcp_connect(&target, source).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ClientError::Handshake(e.to_string()))?;
            let answered = async {
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| ClientError::Handshake(e.to_string()))
            };
            let (response, _) = tokio::join!(answered, conn);
            let status = response?.status().as_u16();
            if status == 204 {
                Ok(())
            } else {
                Err(ClientError::Handshake(format!(
                    "status {status}: emulation"
                )))
            }
        };
        tokio::pin!(posting);
        tokio::select! {
            r = &mut posting => r,
            r = self.conn.as_mut() => Err(ClientError::Closed { code: 0, reason: format!("stream ended: {r:?}") }),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
