//! End to end: the load generator against a real gateway (in this process, on port
//! 0, with `config/dev.toml`), small runs of tens of connections for a few seconds.
//! Assertions are on counts, never on timings.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_loadtest::api::ApiClient;
use switchboard_loadtest::report::Summary;

use common::run::{assert_exact, run};
use common::{gateway, url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_json_through_the_api_delivers_everything_exactly_once() {
    let gw = gateway(&[]).await;
    let u = url(gw.addr);
    let s = run(&[
        "fanout",
        "--url",
        &u,
        "--channels",
        "3",
        "--subscribers",
        "10",
        "--publishers",
        "2",
        "--rate",
        "30",
        "--duration",
        "2",
    ])
    .await;
    assert_exact(&s, 30);
    // Every connection was attempted once and succeeded.
    assert_eq!(s.connections.attempted, 30);
    assert!(s.connections.failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_answer_pings_between_publications() {
    // A ping a second, a second to answer: a receiver that missed one would be
    // disconnected within the run and lose what was published meanwhile.
    let gw = gateway(&["--ping-interval", "1", "--pong-timeout", "1"]).await;
    let u = url(gw.addr);
    let s = run(&[
        "fanout",
        "--url",
        &u,
        "--subscribers",
        "10",
        "--rate",
        "50",
        "--duration",
        "4",
    ])
    .await;
    assert_exact(&s, 10);
    assert!(s.reconnection.is_none(), "{}", s.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_protobuf_with_client_publish_delivers_everything_exactly_once() {
    let gw = gateway(&[]).await;
    let u = url(gw.addr);
    let s = run(&[
        "fanout",
        "--url",
        &u,
        "--protobuf",
        "--via",
        "client",
        "--channels",
        "2",
        "--subscribers",
        "15",
        "--rate",
        "20",
        "--duration",
        "2",
    ])
    .await;
    assert_exact(&s, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_counts_every_connection() {
    let gw = gateway(&[]).await;
    let u = url(gw.addr);
    let s = run(&[
        "connect",
        "--url",
        &u,
        "--connections",
        "40",
        "--duration",
        "1",
    ])
    .await;
    assert_eq!(s.connections.attempted, 40);
    assert_eq!(s.connections.connected, 40);
    assert_eq!(s.connections.connect_latency.count, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_counted_as_failures_by_reason() {
    // Bind and drop to find a port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let u = url(addr);
    let s = run(&[
        "connect",
        "--url",
        &u,
        "--connections",
        "5",
        "--duration",
        "0",
        "--sources",
        "1",
    ])
    .await;
    assert_eq!(s.connections.connected, 0);
    assert_eq!(
        s.connections.failures.get("tcp ConnectionRefused"),
        Some(&5),
        "{:?}",
        s.connections.failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_keeps_the_steady_subscribers_exact() {
    let gw = gateway(&[]).await;
    let u = url(gw.addr);
    let s = run(&[
        "churn",
        "--url",
        &u,
        "--subscribers",
        "20",
        "--rate",
        "20",
        "--duration",
        "2",
        "--churn-rate",
        "20",
        "--churn-lifetime",
        "0.3",
    ])
    .await;
    assert_exact(&s, 20);
    let c = s.churn.as_ref().expect("a churn section");
    assert!(c.arrivals > 0);
    assert_eq!(c.connected, c.arrivals, "{:?}", c.failures);
    assert_eq!((c.duplicates, c.out_of_order, c.gaps), (0, 0, 0));
}

/// Server-side disconnects in the middle of publishing: every subscriber
/// reconnects, recovers from its position, and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_and_recover_loses_nothing() {
    let gw = gateway(&[]).await;
    let u = url(gw.addr);
    let api_addr = gw.addr;
    let kicker = tokio::spawn(async move {
        let mut api = ApiClient::new(api_addr, "dev-api-key", Duration::from_secs(5));
        // Wait (bounded) until publishing is under way, then disconnect everyone.
        for _ in 0..200 {
            let (_, body) = api
                .post(
                    "history",
                    json!({"channel": "chat:lt0", "limit": 0})
                        .to_string()
                        .into_bytes(),
                )
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            if v["result"]["offset"].as_u64().unwrap_or(0) >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let body = json!({"user": "", "disconnect": {"code": 3011, "reason": "reconnect"}});
        api.post("disconnect", body.to_string().into_bytes())
            .await
            .unwrap();
    });
    let s = run(&[
        "failover",
        "--url",
        &u,
        "--channels",
        "2",
        "--subscribers",
        "10",
        "--rate",
        "40",
        "--duration",
        "3",
    ])
    .await;
    kicker.await.unwrap();
    assert_exact(&s, 20);
    let r = s.reconnection.as_ref().expect("a reconnection section");
    assert_eq!(r.disconnects.values().sum::<u64>(), 20, "{}", s.table());
    assert_eq!(r.reconnected, 20, "{}", s.table());
    assert_eq!((r.recovered, r.not_recovered), (20, 0), "{}", s.table());
}

/// The same accounting through worker processes: their histograms and counts merge
/// into exact totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_merge_into_exact_totals() {
    let gw = gateway(&[]).await;
    let u = url(gw.addr);
    let dir = std::env::temp_dir().join(format!("sb-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("run.json");
    let svg_path = dir.join("run.svg");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
        .args([
            "fanout",
            "--url",
            &u,
            "--workers",
            "3",
            "--channels",
            "2",
            "--subscribers",
            "12",
            "--rate",
            "30",
            "--duration",
            "2",
            "--quiet",
            "--json",
        ])
        .arg(&json_path)
        .arg("--report")
        .arg(&svg_path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Summary = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(s.connections.workers, 3);
    assert_exact(&s, 24);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A hook with several times runs once per time, in order, each told its run number:
/// what a rolling restart needs (one gateway per run). A run that fails is counted.
/// Every subscriber stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_runs_at_each_of_its_times_with_its_run_number() {
    let gw = gateway(&[]).await;
    let u = url(gw.addr);
    let dir = std::env::temp_dir().join(format!("sb-loadtest-hooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("runs.txt");
    let command = format!(
        "echo \"kill $SWITCHBOARD_LOADTEST_HOOK_RUN\" >> '{}'",
        log.display()
    );
    let restart = format!(
        "echo \"restart $SWITCHBOARD_LOADTEST_HOOK_RUN\" >> '{}'; exit 7",
        log.display()
    );
    let s = run(&[
        "failover",
        "--url",
        &u,
        "--subscribers",
        "10",
        "--rate",
        "20",
        "--duration",
        "1.5",
        "--kill-command",
        &command,
        "--kill-at",
        "0.2,0.6",
        "--kill-at",
        "1.0",
        "--restart-command",
        &restart,
        "--restart-at",
        "0.4",
    ])
    .await;
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(runs, "kill 0\nrestart 0\nkill 1\nkill 2\n");
    let r = s.reconnection.as_ref().expect("a reconnection section");
    assert_eq!(r.hooks.len(), 4, "{:?}", r.hooks);
    let failed: Vec<_> = r
        .hooks
        .iter()
        .filter(|h| !h.contains("exit status: 0"))
        .collect();
    assert!(
        failed.len() == 1 && failed[0].contains("restart") && failed[0].contains("exit status: 7"),
        "{:?}",
        r.hooks
    );
    assert_eq!((r.hook_failures, r.not_back), (1, 0));
    assert_exact(&s, 10);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--strict` turns a missed target into exit status 3, and a met one into success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_exits_with_3_when_a_target_is_missed() {
    let gw = gateway(&[]).await;
    let u = url(gw.addr);
    let status = |target: &'static str| {
        let u = u.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
                .args([
                    "fanout",
                    "--url",
                    &u,
                    "--subscribers",
                    "5",
                    "--rate",
                    "20",
                    "--duration",
                    "0.5",
                    "--quiet",
                    "--strict",
                    "--target",
                    "lost<=0",
                    "--target",
                    target,
                ])
                .output()
                .await
                .unwrap()
        }
    };
    let met = status("duplicates<=0").await;
    assert!(
        met.status.success(),
        "{}",
        String::from_utf8_lossy(&met.stderr)
    );
    let missed = status("duplicates>=1").await;
    assert_eq!(
        missed.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&missed.stderr)
    );
    // A figure the scenario does not measure counts as missed, too.
    let unmeasured = status("reconnect_p99_ms<=1000").await;
    assert_eq!(unmeasured.status.code(), Some(3));
}

/// A publish retried because its answer was lost carries the same idempotency
/// key, so the channel gets it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_api_publish_is_one_publication() {
    let gw = gateway(&[]).await;
    let mut api = ApiClient::new(gw.addr, "dev-api-key", Duration::from_secs(5));
    let top = |body: &[u8]| {
        let v: Value = serde_json::from_slice(body).unwrap();
        v["result"]["offset"].as_u64().unwrap()
    };
    let history = json!({"channel": "chat:retried", "limit": 0}).to_string();
    api.publish("chat:retried", b"1", "lt-key-1").await.unwrap();
    let (_, first) = api
        .post("history", history.clone().into_bytes())
        .await
        .unwrap();
    api.publish("chat:retried", b"1", "lt-key-1").await.unwrap();
    let (_, again) = api
        .post("history", history.clone().into_bytes())
        .await
        .unwrap();
    assert_eq!(
        top(&first),
        top(&again),
        "the retry was a second publication"
    );
    api.publish("chat:retried", b"2", "lt-key-2").await.unwrap();
    let (_, next) = api.post("history", history.into_bytes()).await.unwrap();
    assert!(
        top(&next) > top(&again),
        "another key is another publication"
    );
}
