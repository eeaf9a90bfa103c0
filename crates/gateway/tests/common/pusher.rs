//! A Pusher protocol 7 client over a raw WebSocket (one event per frame), the
//! apps the tests configure, and a signed client of the Pusher HTTP API.

use std::net::SocketAddr;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use http_body_util::Full;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use switchboard_gateway::config::{Config, PusherApp};
use switchboard_protocol::pusher::auth;
use tokio::net::TcpStream;

use super::{http_request, now_secs, ws_handshake_at, PATIENCE};

pub const APP_ID: &str = "app-id";
pub const APP_KEY: &str = "app-key";
pub const APP_SECRET: &str = "app-secret";

/// The test configuration with app `app-id` (client events on) and app
/// `other-id` (`other-key`, `other-secret`, client events off).
pub fn config() -> Config {
    let mut c = super::config();
    c.pusher_apps = vec![
        app(),
        PusherApp::new("other-id", "other-key", "other-secret"),
    ];
    c.namespaces = namespaces_with(&c.pusher_apps);
    c
}

/// The main test app.
pub fn app() -> PusherApp {
    let mut app = PusherApp::new(APP_ID, APP_KEY, APP_SECRET);
    app.enable_client_events = true;
    app
}

/// The test namespaces with the reserved ones of `apps`, as `Config::resolve` makes them.
pub fn namespaces_with(apps: &[PusherApp]) -> switchboard_core::namespace::Namespaces {
    let mut namespaces = super::config().namespaces;
    switchboard_gateway::config::pusher::register(apps, &mut namespaces).unwrap();
    namespaces
}

pub struct PusherClient {
    pub ws: WebSocket<TokioIo<Upgraded>>,
    pub socket_id: String,
    backlog: std::collections::VecDeque<Value>,
}

/// What a Pusher client read.
#[derive(Debug)]
pub enum Read {
    Event(Value),
    Closed(u16),
}

impl PusherClient {
    /// Opens `/app/{key}?protocol=7` and reads `connection_established`.
    pub async fn connect(addr: SocketAddr, key: &str) -> PusherClient {
        let mut c = PusherClient::open(addr, &format!("/app/{key}?protocol=7&client=test")).await;
        let established = c.next().await;
        assert_eq!(
            established["event"], "pusher:connection_established",
            "{established}"
        );
        let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
        c.socket_id = data["socket_id"].as_str().unwrap().to_owned();
        c
    }

    /// Opens `path` without reading anything.
    pub async fn open(addr: SocketAddr, path: &str) -> PusherClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut ws, _) = ws_handshake_at(addr, stream, path, None).await.unwrap();
        ws.set_auto_close(false);
        PusherClient {
            ws,
            socket_id: String::new(),
            backlog: Default::default(),
        }
    }

    pub async fn send(&mut self, event: Value) {
        self.try_send(event).await.unwrap();
    }

    /// Sends, telling a failed write (the server closed) to the caller.
    pub async fn try_send(&mut self, event: Value) -> Result<(), fastwebsockets::WebSocketError> {
        let frame = Frame::new(
            true,
            OpCode::Text,
            None,
            Payload::Owned(event.to_string().into_bytes()),
        );
        self.ws.write_frame(frame).await
    }

    pub async fn read(&mut self) -> Read {
        if let Some(v) = self.backlog.pop_front() {
            return Read::Event(v);
        }
        let frame = tokio::time::timeout(PATIENCE, self.ws.read_frame())
            .await
            .expect("nothing within the patience");
        match frame {
            Err(_) => Read::Closed(0),
            Ok(f) if f.opcode == OpCode::Close => {
                let p = f.payload.to_vec();
                Read::Closed(if p.len() >= 2 {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    1005
                })
            }
            Ok(f) => Read::Event(serde_json::from_slice(&f.payload).unwrap_or_else(|e| {
                panic!(
                    "not one JSON event per frame: {e}: {:?}",
                    String::from_utf8_lossy(&f.payload)
                )
            })),
        }
    }

    /// The next event; panics on a close.
    pub async fn next(&mut self) -> Value {
        match self.read().await {
            Read::Event(v) => v,
            Read::Closed(code) => panic!("closed with {code}"),
        }
    }

    /// Reads until an event `what` accepts; the others are kept for later.
    pub async fn wait_for(&mut self, what: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut skipped = Vec::new();
        let found = loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not seen; got {skipped:?}"
            );
            let v = self.next().await;
            if what(&v) {
                break v;
            }
            skipped.push(v);
        };
        for v in skipped.into_iter().rev() {
            self.backlog.push_front(v);
        }
        found
    }

    /// The next event named `name` (on `channel`, when given).
    pub async fn event(&mut self, name: &str, channel: Option<&str>) -> Value {
        self.wait_for(|v| v["event"] == name && channel.is_none_or(|c| v["channel"] == c))
            .await
    }

    /// Reads until the close; its code. Events before it are dropped.
    pub async fn closed(&mut self) -> u16 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "not closed");
            if let Read::Closed(code) = self.read().await {
                return code;
            }
        }
    }

    /// Whether an event arrives before a marker the test sends itself through
    /// `ping`: `pusher:pong` comes after everything queued before it.
    pub async fn nothing_pending(&mut self) -> Vec<Value> {
        self.send(json!({"event": "pusher:ping", "data": {}})).await;
        let mut before = Vec::new();
        loop {
            let v = self.next().await;
            if v["event"] == "pusher:pong" {
                return before;
            }
            before.push(v);
        }
    }

    /// Subscribes to a public channel and waits for the answer on it.
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
            .await;
        self.answer(channel).await
    }

    /// Subscribes to a private channel with a signature from `secret`.
    pub async fn subscribe_private(&mut self, channel: &str) -> Value {
        let auth = auth::channel_auth(APP_KEY, APP_SECRET, &self.socket_id, channel, None);
        self.send(json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}}))
            .await;
        self.answer(channel).await
    }

    /// Joins a presence channel as `user_id` with `user_info`.
    pub async fn join(&mut self, channel: &str, user_id: &str, user_info: Value) -> Value {
        let channel_data = json!({"user_id": user_id, "user_info": user_info}).to_string();
        let auth = auth::channel_auth(
            APP_KEY,
            APP_SECRET,
            &self.socket_id,
            channel,
            Some(&channel_data),
        );
        self.send(json!({"event": "pusher:subscribe", "data": {
            "channel": channel, "auth": auth, "channel_data": channel_data,
        }}))
        .await;
        self.answer(channel).await
    }

    /// `subscription_succeeded` or `subscription_error` on `channel`.
    pub async fn answer(&mut self, channel: &str) -> Value {
        self.wait_for(|v| {
            v["channel"] == channel
                && (v["event"] == "pusher_internal:subscription_succeeded"
                    || v["event"] == "pusher:subscription_error")
        })
        .await
    }
}

/// The JSON inside an event's string `data`.
pub fn data_of(event: &Value) -> Value {
    match &event["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

/// A signed Pusher HTTP API client of one app.
pub struct PusherApi {
    pub addr: SocketAddr,
    pub id: String,
    pub key: String,
    pub secret: String,
}

impl PusherApi {
    pub fn new(addr: SocketAddr) -> PusherApi {
        PusherApi {
            addr,
            id: APP_ID.into(),
            key: APP_KEY.into(),
            secret: APP_SECRET.into(),
        }
    }

    /// Sends a signed request (`query` are the extra parameters); (status, JSON body).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let path = format!("/apps/{}{path}", self.id);
        let mut params: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        params.push(("auth_key".into(), self.key.clone()));
        params.push(("auth_timestamp".into(), now_secs().to_string()));
        params.push(("auth_version".into(), "1.0".into()));
        if !body.is_empty() {
            params.push(("body_md5".into(), auth::body_md5(body.as_bytes())));
        }
        let signature = auth::request_signature(&self.secret, method, &path, &params);
        params.push(("auth_signature".into(), signature));
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{path}?{query}"))
            .header("Host", self.addr.to_string())
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let (status, body) = http_request(self.addr, req).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Triggers `name` with `data` (a string, as the SDKs send it) on `channels`.
    pub async fn trigger(&self, channels: &[&str], name: &str, data: &str) -> Value {
        let (status, body) = self
            .request(
                "POST",
                "/events",
                &[],
                Some(json!({"name": name, "channels": channels, "data": data})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}
