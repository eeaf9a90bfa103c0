//! A cluster gateway started before any NATS node answers (issue 17): it stays up,
//! says it is alive but not ready, refuses clients at once, retries with backoff,
//! and serves once NATS is there, without a restart; SIGTERM meanwhile ends it.

mod common;

use std::time::Duration;

use common::{get, Api, Client, GatewayProcess};
use serde_json::json;
use switchboard_test_support::{eventually, eventually_some, free_port, NatsServer};

const DEV_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/dev.toml");
const PATIENCE: Duration = Duration::from_secs(30);

/// A gateway pointed at `nats_url`, returned at its "starting on" line.
fn starting(nats_url: &str) -> GatewayProcess {
    let args = [
        "--config",
        DEV_CONFIG,
        "--listen",
        "127.0.0.1:0",
        "--nats-url",
        nats_url,
        "--api-key",
        common::API_KEY,
    ];
    GatewayProcess::spawn_until(&args, &[], "switchboard-gateway starting on ")
}

/// The value of the counter `name` on the gateway's /metrics (0 when absent).
async fn counter(addr: std::net::SocketAddr, name: &str) -> f64 {
    let (_, text) = get(addr, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_before_nats_is_live_not_ready_and_serves_once_nats_answers() {
    let nats_port = free_port();
    let gateway = starting(&format!("nats://127.0.0.1:{nats_port}"));
    let addr = gateway.1;

    assert_eq!(get(addr, "/healthz").await.0, 200);
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: connecting to NATS\n")
    );
    for path in ["/connection/websocket", "/app/app-key", "/api/info"] {
        let (status, body) = get(addr, path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(
            body.starts_with("starting: not connected to NATS yet"),
            "{path}: {body}"
        );
    }
    // It keeps trying (the attempts are counted), without exiting.
    eventually("two failed attempts to reach NATS", PATIENCE, async || {
        counter(addr, "switchboard_nats_connect_failures_total").await >= 2.0
    })
    .await;

    let _nats = NatsServer::start_on(nats_port);
    eventually("ready once NATS answers", PATIENCE, async || {
        get(addr, "/readyz").await.0 == 200
    })
    .await;
    // The same process now serves clients and publishes over NATS.
    let mut client = Client::open(addr, false).await;
    let reply = client.connect(json!({})).await;
    assert!(reply.get("error").is_none(), "{reply}");
    let reply = client
        .subscribe(json!({ "channel": "chat:started-late" }))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    let api = Api { addr };
    api.publish("chat:started-late", json!({"n": 1})).await;
    let publication = client.next_pub("chat:started-late").await;
    assert_eq!(publication["data"], json!({"n": 1}), "{publication}");
}

#[tokio::test]
async fn sigterm_before_nats_answers_exits_cleanly() {
    let mut gateway = starting(&format!("nats://127.0.0.1:{}", free_port()));
    assert_eq!(get(gateway.1, "/readyz").await.0, 503);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually_some("exit after SIGTERM", PATIENCE, async || {
        gateway.0.try_wait().unwrap()
    })
    .await;
    assert!(exit.success(), "exit status {exit}");
}
