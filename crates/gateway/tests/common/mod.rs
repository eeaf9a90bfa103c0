//! Test support: an in-process gateway on port 0, a WebSocket client speaking
//! the Centrifugo protocol, and a server API client. Waits poll with a deadline.

#![allow(dead_code)]

pub mod pusher;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use http_body_util::{BodyExt, Empty, Full};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use switchboard_broker_nats::NatsConfig;
use switchboard_core::namespace::{Namespace, NamespaceOptions, Namespaces};
use switchboard_gateway::config::Config;
use switchboard_gateway::node::Node;
use switchboard_gateway::presence_client::{Resolve, SystemResolver};
use switchboard_protocol::centrifugo::pb::{Command, Reply};
use switchboard_protocol::centrifugo::Encoding;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

pub const API_KEY: &str = "test-key";
pub const SECRET: &str = "test-secret";
/// How long any wait in these tests may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Options of a namespace with everything on.
pub fn open_namespace() -> NamespaceOptions {
    NamespaceOptions {
        presence: true,
        join_leave: true,
        history_size: 100,
        history_ttl: 300,
        force_recovery: true,
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
        allow_presence_for_subscriber: true,
        allow_history_for_subscriber: true,
        ..Default::default()
    }
}

/// A config for tests: anonymous connects (permissions apply), an open default namespace, `short:`
/// with a history of 3, `big:` with 10,000, `locked:` needing subscription
/// tokens, `readonly:` without client publish, `peruser:` with join and leave
/// per user.
pub fn config() -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: Some(API_KEY.into()),
        allow_anonymous_connect_without_token: true,
        drain_window: Duration::from_millis(200),
        ..Default::default()
    };
    c.token.hmac_secret = Some(SECRET.into());
    c.namespaces = Namespaces::new(
        open_namespace(),
        vec![
            Namespace {
                name: "short".into(),
                options: NamespaceOptions {
                    history_size: 3,
                    ..open_namespace()
                },
            },
            Namespace {
                name: "locked".into(),
                options: NamespaceOptions {
                    allow_subscribe_for_client: false,
                    ..open_namespace()
                },
            },
            Namespace {
                name: "big".into(),
                options: NamespaceOptions {
                    history_size: 10_000,
                    ..open_namespace()
                },
            },
            Namespace {
                name: "peruser".into(),
                options: NamespaceOptions {
                    join_leave_per_user: true,
                    ..open_namespace()
                },
            },
            Namespace {
                name: "binary".into(),
                options: NamespaceOptions {
                    binary_data: true,
                    ..open_namespace()
                },
            },
            Namespace {
                name: "readonly".into(),
                options: NamespaceOptions {
                    allow_publish_for_client: false,
                    ..open_namespace()
                },
            },
        ],
    )
    .unwrap();
    c
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    pub async fn start(config: Config) -> Gateway {
        Gateway::start_tls(config, None).await
    }

    /// A cluster node over the NATS server(s) at `nats_urls` (comma-separated).
    pub async fn cluster(mut config: Config, nats_urls: &str) -> Gateway {
        config.nats = Some(switchboard_gateway::config::NatsSettings {
            presence_ttl: std::time::Duration::from_secs(30),
            presence_urls: Vec::new(),
            ..switchboard_gateway::config::NatsSettings::new(NatsConfig {
                urls: nats_urls.split(',').map(str::to_owned).collect(),
                replicas: 1,
                ..NatsConfig::default()
            })
        });
        Gateway::start_tls(config, None).await
    }

    pub async fn start_tls(config: Config, tls: Option<tokio_rustls::TlsAcceptor>) -> Gateway {
        Gateway::start_with(config, tls, Arc::new(SystemResolver)).await
    }

    /// A gateway whose presence client looks presence URLs' host names up with `resolver`.
    pub async fn start_with(
        mut config: Config,
        tls: Option<tokio_rustls::TlsAcceptor>,
        resolver: Arc<dyn Resolve>,
    ) -> Gateway {
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        let node = Node::from_config_with(config, resolver).await.unwrap();
        let routes = switchboard_gateway::http::Routes::new(node.clone()).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(switchboard_gateway::server::run(
            listener,
            routes,
            tls,
            async {
                let _ = stopped.await;
            },
        ));
        Gateway {
            addr,
            node,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Starts the shutdown; returns the task that ends when it is complete.
    pub fn shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.take().expect("shut down once")
    }

    pub fn api(&self) -> Api {
        Api { addr: self.addr }
    }

    pub async fn client(&self) -> Client {
        Client::open(self.addr, false).await
    }

    pub async fn client_protobuf(&self) -> Client {
        Client::open(self.addr, true).await
    }

    /// A connected anonymous JSON client.
    pub async fn connected(&self) -> Client {
        let mut c = self.client().await;
        c.connect(json!({})).await;
        c
    }
}

/// What a client read from the socket.
#[derive(Debug)]
pub enum Received {
    Frame(OpCode, Vec<u8>),
    Closed { code: u16, reason: String },
}

pub struct Client {
    pub ws: WebSocket<TokioIo<Upgraded>>,
    next_id: u32,
    /// Replies and pushes read but not yet asked for.
    backlog: std::collections::VecDeque<Value>,
    pub protobuf: bool,
}

pub async fn ws_handshake<S>(
    addr: SocketAddr,
    stream: S,
    query: &str,
) -> Result<WebSocket<TokioIo<Upgraded>>, fastwebsockets::WebSocketError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    ws_handshake_with(addr, stream, query, None)
        .await
        .map(|(ws, _)| ws)
}

/// A handshake offering `subprotocol`; returns the socket and the subprotocol the
/// server named back.
pub async fn ws_handshake_with<S>(
    addr: SocketAddr,
    stream: S,
    query: &str,
    subprotocol: Option<&str>,
) -> Result<(WebSocket<TokioIo<Upgraded>>, Option<String>), fastwebsockets::WebSocketError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    ws_handshake_at(
        addr,
        stream,
        &format!("/connection/websocket{query}"),
        subprotocol,
    )
    .await
}

/// A handshake at `path` (with its query), offering `subprotocol`.
pub async fn ws_handshake_at<S>(
    addr: SocketAddr,
    stream: S,
    path: &str,
    subprotocol: Option<&str>,
) -> Result<(WebSocket<TokioIo<Upgraded>>, Option<String>), fastwebsockets::WebSocketError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut req = hyper::Request::builder()
        .method("GET")
        .uri(format!("http://{addr}{path}"))
        .header("Host", addr.to_string())
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13");
    if let Some(p) = subprotocol {
        req = req.header("Sec-WebSocket-Protocol", p);
    }
    let req = req.body(Empty::<Bytes>::new()).unwrap();
    let (mut ws, response) =
        fastwebsockets::handshake::client(&hyper_util::rt::TokioExecutor::new(), req, stream)
            .await?;
    ws.set_auto_close(false);
    ws.set_auto_pong(true);
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((ws, chosen))
}

impl Client {
    pub async fn open(addr: SocketAddr, protobuf: bool) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let query = if protobuf {
            "?cf_protocol=protobuf"
        } else {
            ""
        };
        let ws = ws_handshake(addr, stream, query).await.unwrap();
        Client::from_ws(ws, protobuf)
    }

    pub fn from_ws(ws: WebSocket<TokioIo<Upgraded>>, protobuf: bool) -> Client {
        Client {
            ws,
            next_id: 0,
            backlog: Default::default(),
            protobuf,
        }
    }

    /// Sends raw bytes as one frame of the given type.
    pub async fn send_raw(&mut self, opcode: OpCode, data: Vec<u8>) {
        let frame = Frame::new(true, opcode, None, Payload::Owned(data));
        self.ws.write_frame(frame).await.unwrap();
    }

    /// Sends one command (JSON shape; encoded as protobuf on protobuf clients),
    /// filling in the id; returns the id.
    pub async fn send(&mut self, mut command: Value) -> u32 {
        self.next_id += 1;
        command["id"] = json!(self.next_id);
        if self.protobuf {
            let cmd: Command = serde_json::from_value(command).unwrap();
            let record = Encoding::Protobuf.encode_command(&cmd).unwrap();
            self.send_raw(OpCode::Binary, record.into()).await;
        } else {
            self.send_raw(OpCode::Text, command.to_string().into_bytes())
                .await;
        }
        self.next_id
    }

    /// Reads the next frame or close, within the patience.
    pub async fn read(&mut self) -> Received {
        self.read_within(PATIENCE).await
    }

    /// Reads the next frame or close, within `patience`.
    pub async fn read_within(&mut self, patience: Duration) -> Received {
        let frame = tokio::time::timeout(patience, self.ws.read_frame())
            .await
            .expect("no frame within the patience");
        match frame {
            Err(e) => Received::Closed {
                code: 0,
                reason: format!("socket error: {e}"),
            },
            Ok(f) if f.opcode == OpCode::Close => {
                let payload = f.payload.to_vec();
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                };
                let reason =
                    String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
                Received::Closed { code, reason }
            }
            Ok(f) => Received::Frame(f.opcode, f.payload.to_vec()),
        }
    }

    /// The next reply or push (JSON view, decoded from protobuf when needed).
    /// Panics if the connection closes.
    pub async fn next(&mut self) -> Value {
        loop {
            if let Some(v) = self.backlog.pop_front() {
                return v;
            }
            match self.read().await {
                Received::Frame(_, data) => {
                    self.backlog.extend(decode_replies(&data, self.protobuf))
                }
                Received::Closed { code, reason } => panic!("closed with {code} {reason}"),
            }
        }
    }

    /// Reads until a reply or push matches, returning it; others are kept.
    pub async fn wait_for(&mut self, what: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut skipped = Vec::new();
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing matched; saw {skipped:?}"
            );
            let v = self.next().await;
            if what(&v) {
                for s in skipped.into_iter().rev() {
                    self.backlog.push_front(s);
                }
                return v;
            }
            skipped.push(v);
        }
    }

    /// Sends a command and waits for its reply.
    pub async fn call(&mut self, command: Value) -> Value {
        let id = self.send(command).await;
        self.wait_for(|v| v["id"] == json!(id)).await
    }

    pub async fn connect(&mut self, params: Value) -> Value {
        let reply = self.call(json!({ "connect": params })).await;
        assert!(reply.get("error").is_none(), "connect failed: {reply}");
        reply
    }

    pub async fn subscribe(&mut self, params: Value) -> Value {
        self.call(json!({ "subscribe": params })).await
    }

    /// The next publication push of `channel`.
    pub async fn next_pub(&mut self, channel: &str) -> Value {
        let v = self
            .wait_for(|v| v["push"]["channel"] == json!(channel) && v["push"].get("pub").is_some())
            .await;
        v["push"]["pub"].clone()
    }

    /// A reply or push already read and not yet asked for, if any.
    pub fn try_next_push(&mut self) -> Option<Value> {
        self.backlog
            .iter()
            .position(|v| v.get("push").is_some())
            .and_then(|i| self.backlog.remove(i))
    }

    /// The next publication of `channel`, or the close code if the server closes.
    pub async fn next_pub_or_close(&mut self, channel: &str) -> Result<Value, u16> {
        loop {
            while let Some(v) = self.backlog.pop_front() {
                if v["push"]["channel"] == json!(channel) && v["push"].get("pub").is_some() {
                    return Ok(v["push"]["pub"].clone());
                }
            }
            // Outages in cluster tests last longer than the usual patience.
            match self.read_within(PATIENCE * 6).await {
                Received::Frame(_, data) => {
                    self.backlog.extend(decode_replies(&data, self.protobuf))
                }
                Received::Closed { code, .. } => return Err(code),
            }
        }
    }

    /// Reads until the server closes the connection; returns the close code.
    pub async fn closed(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not closed within the patience"
            );
            if let Received::Closed { code, reason } = self.read().await {
                return (code, reason);
            }
        }
    }
}

/// Bound on the replies of one server frame, above what a test's gateway queues
/// for a client: the largest queue here (32 MiB) reaches it only with records of 32
/// bytes or less, and a publication push takes more.
pub const MAX_REPLIES_PER_FRAME: usize = 1 << 20;

/// Decodes one server frame into its replies and pushes, as a client does.
pub fn replies_of(data: &[u8], protobuf: bool) -> Vec<Reply> {
    let encoding = if protobuf {
        Encoding::Protobuf
    } else {
        Encoding::Json
    };
    encoding
        .decode_replies(data, MAX_REPLIES_PER_FRAME)
        .unwrap_or_else(|e| panic!("an undecodable {} frame: {e}", encoding.name()))
}

/// Decodes one server frame into JSON views of its replies: what the JSON encoding
/// writes, for either encoding.
pub fn decode_replies(data: &[u8], protobuf: bool) -> Vec<Value> {
    replies_of(data, protobuf)
        .iter()
        .map(|reply| serde_json::to_value(reply).unwrap())
        .collect()
}

/// A minimal server API client.
pub struct Api {
    pub addr: SocketAddr,
}

impl Api {
    /// POSTs to `/api/<method>` with the test key; returns (status, JSON body).
    pub async fn call(&self, method: &str, body: Value) -> (u16, Value) {
        self.raw(method, Some(("X-API-Key", API_KEY)), body.to_string())
            .await
    }

    pub async fn raw(
        &self,
        method: &str,
        auth: Option<(&str, &str)>,
        body: String,
    ) -> (u16, Value) {
        let mut req = hyper::Request::builder()
            .method("POST")
            .uri(format!("/api/{method}"))
            .header("Host", self.addr.to_string())
            .header("Content-Type", "application/json");
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        let (status, body) =
            http_request(self.addr, req.body(Full::new(Bytes::from(body))).unwrap()).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Publishes and returns the result object.
    pub async fn publish(&self, channel: &str, data: Value) -> Value {
        let (status, body) = self
            .call("publish", json!({"channel": channel, "data": data}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("error").is_none(), "publish failed: {body}");
        body["result"].clone()
    }
}

/// One HTTP/1 request on a fresh connection; returns (status, body).
pub async fn http_request(addr: SocketAddr, req: hyper::Request<Full<Bytes>>) -> (u16, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(req).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req = hyper::Request::builder()
        .uri(path)
        .header("Host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, body) = http_request(addr, req).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An HS256 token with the test secret.
pub fn token(claims: Value) -> String {
    token_with(SECRET, claims)
}

pub fn token_with(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A boolean protocol field; JSON replies leave out `false`.
pub fn flag(v: &Value) -> bool {
    v.as_bool().unwrap_or(false)
}

/// The `switchboard-gateway` binary as a process, killed on drop.
pub struct GatewayProcess(pub std::process::Child, pub SocketAddr);

impl GatewayProcess {
    /// Starts the binary with `args` and `env`, and reads the address from its
    /// "listening on" line (a cluster node prints a "starting on" line first).
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> GatewayProcess {
        GatewayProcess::spawn_until(args, env, "switchboard-gateway listening on ")
    }

    /// Starts the binary and returns at its first line that begins with `prefix`,
    /// with the address that follows.
    pub fn spawn_until(args: &[&str], env: &[(&str, &str)], prefix: &str) -> GatewayProcess {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard-gateway"));
        cmd.args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let rest = switchboard_test_support::Lines::of(&mut child).after(prefix);
        let addr = rest.split(':').take(2).collect::<Vec<_>>().join(":");
        let addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("no address after {prefix:?} in {rest:?}"));
        GatewayProcess(child, addr)
    }

    /// A cluster node over `nats` with config/dev.toml on a free port.
    pub fn cluster(nats: &str, extra: &[&str]) -> GatewayProcess {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/dev.toml");
        let mut args = vec![
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--nats-url",
            nats,
        ];
        args.extend_from_slice(extra);
        GatewayProcess::spawn(&args, &[])
    }

    /// Sends `signal` (STOP, CONT, TERM…) to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `n` gateways in cluster mode over the nats-server at `nats`.
pub async fn gateways(n: usize, nats: &str) -> Vec<Gateway> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Gateway::cluster(config(), nats).await);
    }
    out
}

/// A presence service replica on its own runtime, as the binary serves it, that
/// counts the calls it takes; `kill` (or dropping it) drops the runtime with every
/// task and connection, as a crash.
pub struct PresenceReplica {
    pub addr: SocketAddr,
    /// `http://<addr>`, what `--presence-url` takes.
    pub url: String,
    calls: Arc<std::sync::atomic::AtomicU64>,
    runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
}

impl PresenceReplica {
    pub async fn start(nats: &str) -> PresenceReplica {
        PresenceReplica::start_with_ttl(nats, Duration::from_secs(30)).await
    }

    pub async fn start_with_ttl(nats: &str, ttl: Duration) -> PresenceReplica {
        use std::sync::atomic::Ordering;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = calls.clone();
        let (nats, lease_name) = (nats.to_owned(), url.clone());
        let (ready_tx, ready) = oneshot::channel();
        runtime.spawn(async move {
            let client = async_nats::connect(nats).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let bucket = Arc::new(
                switchboard_broker_nats::PresenceBucket::open(&js, "sb", ttl, 1)
                    .await
                    .unwrap(),
            );
            tokio::spawn(switchboard_broker_nats::sweeper::run_while(
                Arc::downgrade(&bucket),
                lease_name,
            ));
            let service = switchboard_presence::PresenceService::new(bucket);
            let server =
                switchboard_presence::pb::presence_server::PresenceServer::with_interceptor(
                    service,
                    move |request| {
                        counted.fetch_add(1, Ordering::Relaxed);
                        Ok(request)
                    },
                );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = ready_tx.send(());
            let _ = tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        ready.await.unwrap();
        PresenceReplica {
            addr,
            url,
            calls,
            runtime: std::sync::Mutex::new(Some(runtime)),
        }
    }

    /// Calls taken so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn kill(&self) {
        if let Some(runtime) = self.runtime.lock().unwrap().take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for PresenceReplica {
    fn drop(&mut self) {
        self.kill();
    }
}
