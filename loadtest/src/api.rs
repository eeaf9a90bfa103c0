//! Server HTTP API clients, each over one kept-alive HTTP/1 connection ([`Http`]),
//! opened again when it breaks:
//! - [`ApiClient`]: the Centrifugo server API, `POST /api/<method>` with `X-API-Key`;
//! - [`pusher::PusherApi`]: the Pusher HTTP API, signed `POST /apps/<id>/events`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::client::{within, ClientError};

pub mod pusher;

/// One kept-alive HTTP/1 connection to a server, for JSON POSTs.
pub struct Http {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

impl Http {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Http {
        Http {
            addr,
            sender: None,
            timeout,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// POSTs the JSON `body` to `uri` (path and query) with `headers`; returns
    /// (status, body). A broken connection is dropped so that the next call opens
    /// a new one.
    pub async fn post(
        &mut self,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), ClientError> {
        let limit = self.timeout;
        let result = within(limit, "api", self.post_once(uri, headers, body)).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn post_once(
        &mut self,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), ClientError> {
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            _ => {
                let stream = tokio::net::TcpStream::connect(self.addr)
                    .await
                    .map_err(ClientError::Tcp)?;
                stream.set_nodelay(true).map_err(ClientError::Tcp)?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| ClientError::Handshake(e.to_string()))?;
                tokio::spawn(conn);
                self.sender.insert(sender)
            }
        };
        sender
            .ready()
            .await
            .map_err(|e| ClientError::Handshake(e.to_string()))?;
        let mut req = hyper::Request::builder()
            .method("POST")
            .uri(uri)
            .header("Host", self.addr.to_string())
            .header("Content-Type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Handshake(e.to_string()))?;
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Handshake(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Handshake(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }
}

/// The Centrifugo server API: `POST /api/<method>` with `X-API-Key`.
pub struct ApiClient {
    http: Http,
    key: String,
}

impl ApiClient {
    pub fn new(addr: SocketAddr, key: &str, timeout: Duration) -> ApiClient {
        ApiClient {
            http: Http::new(addr, timeout),
            key: key.to_owned(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// Publishes raw JSON `data` to `channel`; an error reply is an error. The
    /// server keeps one publication per `idempotency_key`, so a retry of a publish
    /// whose answer was lost (its gateway died after accepting it) is not a
    /// second publication.
    pub async fn publish(
        &mut self,
        channel: &str,
        data: &[u8],
        idempotency_key: &str,
    ) -> Result<(), ClientError> {
        let mut body = Vec::with_capacity(data.len() + channel.len() + idempotency_key.len() + 48);
        body.extend_from_slice(b"{\"channel\":");
        body.extend_from_slice(
            serde_json::to_string(channel)
                .map_err(|e| ClientError::Decode(e.to_string()))?
                .as_bytes(),
        );
        body.extend_from_slice(b",\"idempotency_key\":");
        body.extend_from_slice(
            serde_json::to_string(idempotency_key)
                .map_err(|e| ClientError::Decode(e.to_string()))?
                .as_bytes(),
        );
        body.extend_from_slice(b",\"data\":");
        body.extend_from_slice(data);
        body.push(b'}');
        let (status, reply) = self.post("publish", body).await?;
        if status != 200 {
            return Err(ClientError::Handshake(format!("status {status}")));
        }
        let reply: serde_json::Value =
            serde_json::from_slice(&reply).map_err(|e| ClientError::Decode(e.to_string()))?;
        if let Some(e) = reply.get("error") {
            return Err(ClientError::Reply {
                code: e["code"].as_u64().unwrap_or(0) as u32,
                message: e["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(())
    }

    /// POSTs to `/api/<method>`; returns (status, body).
    pub async fn post(&mut self, method: &str, body: Vec<u8>) -> Result<(u16, Bytes), ClientError> {
        let uri = format!("/api/{method}");
        self.http
            .post(&uri, &[("X-API-Key", &self.key)], body)
            .await
    }
}
