//! The HTTP-streaming transport without an SDK: what a stream carries when the
//! client is quiet (pings, then a disconnect when no pong comes) and when it stops
//! reading (closed as slow; the node lets go of it).

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{config, Gateway, PATIENCE};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// A client end of one HTTP stream: the response body read line by line.
struct Stream {
    body: Incoming,
    buffer: BytesMut,
    session: String,
    node: String,
    _conn: tokio::task::JoinHandle<()>,
}

impl Stream {
    async fn open(gw: &Gateway) -> Stream {
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::post("/connection/http_stream")
            .header("host", gw.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"id":1,"connect":{}}"#)))
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = Stream {
            body: response.into_body(),
            buffer: BytesMut::new(),
            session: String::new(),
            node: String::new(),
            _conn: conn,
        };
        let connected = stream.line().await.expect("the connect reply");
        stream.session = connected["connect"]["session"].as_str().unwrap().to_owned();
        stream.node = connected["connect"]["node"].as_str().unwrap().to_owned();
        assert!(!stream.session.is_empty());
        stream
    }

    /// The next line, or `None` at the end of the stream.
    async fn line(&mut self) -> Option<Value> {
        loop {
            if let Some(at) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(at + 1);
                return Some(serde_json::from_slice(&line[..at]).unwrap());
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("the stream said nothing in time");
            match frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.buffer.extend_from_slice(data);
                    }
                }
                _ => return None,
            }
        }
    }

    /// POSTs `command` to /emulation for this stream.
    async fn post(&self, gw: &Gateway, command: Value) -> u16 {
        let body = json!({"session": self.session, "node": self.node, "data": command.to_string()});
        let req = hyper::Request::post("/emulation")
            .header("host", gw.addr.to_string())
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        common::http_request(gw.addr, req).await.0
    }
}

#[tokio::test]
async fn a_quiet_stream_is_pinged_and_one_that_never_answers_is_told_why_it_ends() {
    let mut c = config();
    c.ping_interval = Duration::from_secs(1);
    c.pong_timeout = Duration::from_secs(1);
    let gw = Gateway::start(c).await;
    let mut stream = Stream::open(&gw).await;

    assert_eq!(stream.line().await, Some(json!({})), "a ping");
    assert_eq!(stream.post(&gw, json!({})).await, 204, "the pong");
    // The next ping goes out only once the pong of the last one came, through emulation.
    assert_eq!(stream.line().await, Some(json!({})), "a second ping");
    // No pong this time: a disconnect push (3012, reconnect), then the end.
    let farewell = stream.line().await.expect("a disconnect push");
    assert_eq!(farewell["push"]["disconnect"]["code"], 3012, "{farewell}");
    assert_eq!(
        farewell["push"]["disconnect"]["reconnect"], true,
        "{farewell}"
    );
    assert_eq!(stream.line().await, None, "the stream ends");
    assert_eq!(gw.node.connection_count(), 0);
}

#[tokio::test]
async fn a_client_that_stops_reading_its_stream_is_closed_as_slow_and_let_go() {
    let mut c = config();
    c.limits.max_queue_bytes = 64 * 1024;
    let gw = Gateway::start(c).await;
    let mut stream = Stream::open(&gw).await;
    assert_eq!(
        stream
            .post(&gw, json!({"id": 2, "subscribe": {"channel": "firehose"}}))
            .await,
        204
    );
    let subscribed = stream.line().await.unwrap();
    assert_eq!(subscribed["id"], 2, "{subscribed}");
    assert_eq!(gw.node.connection_count(), 1);

    // The client reads no more; the socket buffers fill, then the queue.
    let api = gw.api();
    let big = "x".repeat(16 * 1024);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut published = 0;
    while gw.node.connection_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still connected after {published} publications"
        );
        if published < 2_000 {
            api.publish("firehose", json!({ "big": big })).await;
            published += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(stream);
}

/// A gateway with TLS on a self-signed certificate for `localhost`, and a client
/// configuration that trusts it and offers `alpn`.
async fn tls_gateway(alpn: &[&[u8]]) -> (Gateway, tokio_rustls::TlsConnector) {
    use tokio_rustls::rustls;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let acceptor = switchboard_gateway::tls::acceptor(&cert_path, &key_path).unwrap();
    let gw = Gateway::start_tls(config(), Some(acceptor)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (
        gw,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)),
    )
}

#[tokio::test]
async fn over_tls_a_stream_and_its_emulation_requests_share_one_http2_connection() {
    use tokio_rustls::rustls::pki_types::ServerName;
    let (gw, connector) = tls_gateway(&[b"h2", b"http/1.1"]).await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = |path: &str, body: String| {
        hyper::Request::post(format!("https://localhost{path}"))
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let response = sender
        .send_request(request(
            "/connection/http_stream",
            r#"{"id":1,"connect":{}}"#.into(),
        ))
        .await
        .unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let mut stream = Stream {
        body: response.into_body(),
        buffer: BytesMut::new(),
        session: String::new(),
        node: String::new(),
        _conn: tokio::spawn(async {}),
    };
    let connected = stream.line().await.unwrap();
    let session = connected["connect"]["session"].as_str().unwrap().to_owned();
    let node = connected["connect"]["node"].as_str().unwrap().to_owned();

    // The subscribe goes on the same connection, while the stream stays open on it.
    let subscribe = json!({"id": 2, "subscribe": {"channel": "h2"}}).to_string();
    let posted = sender
        .send_request(request(
            "/emulation",
            json!({"session": session, "node": node, "data": subscribe}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(posted.status(), 204);
    assert_eq!(stream.line().await.unwrap()["id"], 2);
    gw.node
        .publish("h2", Bytes::from("7"), None, None)
        .await
        .unwrap();
    let push = stream.line().await.unwrap();
    assert_eq!(push["push"]["pub"]["data"], json!(7), "{push}");
}

#[tokio::test]
async fn over_tls_a_client_that_offers_only_http1_still_gets_it() {
    use tokio_rustls::rustls::pki_types::ServerName;
    let (gw, connector) = tls_gateway(&[b"http/1.1"]).await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/healthz")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_11);
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn open_streams_do_not_hold_places_among_http_connections() {
    // Two HTTP connections at once at most: yet three streams open (each a client
    // connection, under max_connections), and the node still answers requests.
    let mut c = config();
    c.limits.max_http_connections = 2;
    let gw = Gateway::start(c).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(Stream::open(&gw).await);
    }
    assert_eq!(gw.node.connection_count(), 3);
    assert_eq!(common::get(gw.addr, "/healthz").await.0, 200);
    assert_eq!(
        streams[2].post(&gw, json!({"id": 2, "ping": {}})).await,
        204
    );
    assert_eq!(streams[2].line().await.unwrap()["id"], 2);
}
