//! Operations: pings, timeouts, limits, slow consumers, TLS, metrics, probes, drain.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard_test_support::{eventually, eventually_some};

#[tokio::test]
async fn a_client_that_does_not_answer_pings_is_disconnected() {
    let mut cfg = config();
    cfg.ping_interval = Duration::from_secs(1);
    cfg.pong_timeout = Duration::from_secs(1);
    let gw = Gateway::start(cfg).await;
    let mut c = gw.connected().await;
    assert_eq!(c.next().await, json!({}), "server ping is an empty reply");
    assert_eq!(c.closed().await.0, 3012);
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    let mut cfg = config();
    cfg.ping_interval = Duration::from_secs(1);
    cfg.pong_timeout = Duration::from_secs(1);
    let gw = Gateway::start(cfg).await;
    let mut c = gw.connected().await;
    for _ in 0..3 {
        assert_eq!(c.next().await, json!({}));
        c.send_raw(fastwebsockets::OpCode::Text, b"{}".to_vec())
            .await;
    }
    let r = c.call(json!({"ping": {}})).await;
    assert!(r.get("error").is_none(), "{r}");
}

#[tokio::test]
async fn a_connection_that_never_connects_is_closed_as_stale() {
    let mut cfg = config();
    cfg.connect_timeout = Duration::from_secs(1);
    let gw = Gateway::start(cfg).await;
    let mut c = gw.client().await;
    assert_eq!(c.closed().await.0, 3502);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let mut cfg = config();
    cfg.limits.max_connections = 1;
    let gw = Gateway::start(cfg).await;
    let mut first = gw.connected().await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    assert!(
        ws_handshake(gw.addr, stream, "").await.is_err(),
        "second connection refused"
    );
    let r = first.call(json!({"ping": {}})).await;
    assert!(r.get("error").is_none());
    drop(first);
    eventually("slot released", PATIENCE, async || {
        gw.node.registry.counts().0 == 0
    })
    .await;
    let _c = eventually_some("slot freed", PATIENCE, async || {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        ws_handshake(gw.addr, stream, "").await.ok()
    })
    .await;
}

/// A client that stops reading is cut off as slow; a reading client on the same
/// channel receives everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_and_others_get_everything() {
    // More than loopback's socket buffers hold, so the non-reader's queue fills.
    const COUNT: usize = 4000;
    let mut cfg = config();
    cfg.limits.max_queue_bytes = 64 * 1024;
    let gw = Gateway::start(cfg).await;
    let mut slow = gw.connected().await;
    slow.subscribe(json!({"channel": "firehose"})).await;
    let mut fast = gw.connected().await;
    fast.subscribe(json!({"channel": "firehose"})).await;
    let payload = bytes::Bytes::from(format!("\"{}\"", "x".repeat(8 * 1024)));
    for i in 1..=COUNT {
        gw.node
            .publish("firehose", payload.clone(), None, None)
            .await
            .unwrap();
        // The reading client keeps pace, so only the other one falls behind.
        assert_eq!(fast.next_pub("firehose").await["offset"], json!(i));
    }
    assert_eq!(slow.closed().await.0, 3008);
}

#[tokio::test]
async fn probes_and_metrics() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.connected().await;
    c.subscribe(json!({"channel": "m"})).await;
    gw.api().publish("m", json!(1)).await;
    c.next_pub("m").await;
    assert_eq!(get(gw.addr, "/healthz").await.0, 200);
    assert_eq!(get(gw.addr, "/readyz").await.0, 200);
    assert_eq!(get(gw.addr, "/nope").await.0, 404);
    let (status, body) = get(gw.addr, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "switchboard_connections_accepted_total",
        "switchboard_commands_total",
        "switchboard_messages_out_total",
        "switchboard_delivery_latency_seconds_bucket",
        "switchboard_publications_total",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect_and_stops_accepting() {
    let mut gw = Gateway::start(config()).await;
    let mut a = gw.connected().await;
    let mut b = gw.connected().await;
    let done = gw.shutdown();
    assert_eq!(a.closed().await, (3001, "shutdown".to_owned()));
    assert_eq!(b.closed().await.0, 3001);
    assert!(!gw.node.is_ready());
    tokio::time::timeout(PATIENCE, done).await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn tls_serves_wss() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "switchboard-tls-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let acceptor = switchboard_gateway::tls::acceptor(&cert_path, &key_path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let gw = Gateway::start_tls(config(), Some(acceptor)).await;

    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let ws = ws_handshake(gw.addr, tls, "").await.unwrap();
    let mut c = Client::from_ws(ws, false);
    c.connect(json!({})).await;
    c.subscribe(json!({"channel": "secure"})).await;
    gw.node
        .publish("secure", bytes::Bytes::from("1"), None, None)
        .await
        .unwrap();
    assert_eq!(c.next_pub("secure").await["data"], json!(1));

    // plain text on the TLS port gets no WebSocket
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    assert!(ws_handshake(gw.addr, tcp, "").await.is_err());
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn websocket_pings_get_pongs_and_a_close_is_echoed() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.connected().await;
    c.send_raw(fastwebsockets::OpCode::Ping, b"are you there".to_vec())
        .await;
    loop {
        match c.read().await {
            Received::Frame(fastwebsockets::OpCode::Pong, payload) => {
                assert_eq!(payload, b"are you there");
                break;
            }
            Received::Frame(..) => continue,
            Received::Closed { code, reason } => panic!("closed: {code} {reason}"),
        }
    }
    let close = fastwebsockets::Frame::close(1000, b"bye");
    c.ws.write_frame(close).await.unwrap();
    assert_eq!(c.closed().await.0, 1000, "the client's close is echoed");
    eventually("connection forgotten", PATIENCE, async || {
        gw.node.registry.counts().0 == 0
    })
    .await;
}

#[tokio::test]
async fn on_shutdown_readyz_turns_503_while_the_listener_still_serves() {
    let mut gw = Gateway::start(switchboard_gateway::config::Config {
        // Far longer than this test: it ends inside the delay.
        shutdown_delay: Duration::from_secs(600),
        ..config()
    })
    .await;
    let mut before = gw.connected().await;
    assert_eq!(get(gw.addr, "/readyz").await.0, 200);
    let _done = gw.shutdown();
    eventually("/readyz answers 503", PATIENCE, async || {
        get(gw.addr, "/readyz").await.0 == 503
    })
    .await;
    // Still serving: a client the balancer sent before it noticed gets in and works.
    let mut late = gw.connected().await;
    late.subscribe(json!({"channel": "late"})).await;
    gw.api().publish("late", json!("still here")).await;
    assert_eq!(late.next_pub("late").await["data"], json!("still here"));
    let pong = before.call(json!({"ping": {}})).await;
    assert!(pong.get("error").is_none(), "{pong}");
}

/// Whether `GET /healthz` on a fresh connection answers 200.
async fn healthz_raw(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    answer.starts_with(b"HTTP/1.1 200")
}

/// Reads until the peer closes; `true` when it did within the patience.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn an_http_connection_that_sends_no_headers_is_closed_after_the_header_timeout() {
    let mut cfg = config();
    cfg.limits.http_header_timeout = Duration::from_secs(1);
    let gw = Gateway::start(cfg).await;
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    assert!(
        closed_by_server(&mut silent).await,
        "a silent client is let go"
    );
    // Half a request line, then nothing (slowloris).
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_by_server(&mut slow).await, "a slow client is let go");
    let (_, metrics) = get(gw.addr, "/metrics").await;
    assert!(
        metrics.contains("switchboard_http_timeouts_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn http_connections_beyond_the_cap_are_closed_at_accept() {
    let mut cfg = config();
    cfg.limits.max_http_connections = 2;
    // Only the cap, not the header timeout, may close the third.
    cfg.limits.http_header_timeout = Duration::from_secs(120);
    let gw = Gateway::start(cfg).await;
    let holders = [
        tokio::net::TcpStream::connect(gw.addr).await.unwrap(),
        tokio::net::TcpStream::connect(gw.addr).await.unwrap(),
    ];
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    assert!(closed_by_server(&mut third).await, "no room for a third");
    // Once the holders go, clients get in again; an upgraded WebSocket no longer
    // counts, so many fit beside the cap of two.
    drop(holders);
    eventually("room again", PATIENCE, async || healthz_raw(gw.addr).await).await;
    let mut websockets = Vec::new();
    for _ in 0..5 {
        websockets.push(gw.connected().await);
    }
    let (_, metrics) = get(gw.addr, "/metrics").await;
    assert!(
        metrics.contains("reason=\"http_connection_limit\""),
        "{metrics}"
    );
}

/// Opens a WebSocket without authenticating; `Err` when the upgrade is refused.
async fn unauthenticated(gw: &Gateway) -> Result<Client, fastwebsockets::WebSocketError> {
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    ws_handshake(gw.addr, stream, "")
        .await
        .map(|ws| Client::from_ws(ws, false))
}

/// Sockets that never authenticate hold at most their own quota, so that
/// authenticated clients keep their slots (issue 17 defect 9).
#[tokio::test]
async fn connections_waiting_to_authenticate_have_a_quota_of_their_own() {
    let mut cfg = config();
    cfg.limits.max_unauthenticated = 2;
    let gw = Gateway::start(cfg).await;
    let _idle = [
        unauthenticated(&gw).await.unwrap(),
        unauthenticated(&gw).await.unwrap(),
    ];
    assert!(
        unauthenticated(&gw).await.is_err(),
        "a third waiting socket was taken"
    );
    // Authenticated connections are not counted: one more connects and subscribes.
    drop(_idle);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut c = loop {
        if let Ok(c) = unauthenticated(&gw).await {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots not given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    c.connect(json!({})).await;
    let _second = unauthenticated(&gw).await.unwrap();
    let _third = unauthenticated(&gw).await.unwrap();
    assert!(unauthenticated(&gw).await.is_err());
    let (_, metrics) = get(gw.addr, "/metrics").await;
    assert!(
        metrics.contains("switchboard_connections_refused_total{reason=\"unauthenticated_limit\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_quota_per_address_holds_where_the_gateway_sees_addresses() {
    let mut cfg = config();
    cfg.limits.max_unauthenticated_per_address = 1;
    let gw = Gateway::start(cfg).await;
    let _first = unauthenticated(&gw).await.unwrap();
    assert!(
        unauthenticated(&gw).await.is_err(),
        "a second socket from 127.0.0.1"
    );
}
