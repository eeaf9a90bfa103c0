//! `--protocol pusher` end to end: the load generator as Pusher Channels clients
//! and a Pusher HTTP API publisher against a real gateway (in this process, on
//! port 0, with `config/dev.toml` and its app `app-id` / `app-key` /
//! `app-secret`, the tool's defaults). The accounting is the Centrifugo runs':
//! every delivery counted once, in order by the payloads' sequence numbers.
//! Assertions are on counts, never on timings.

mod common;

use clap::Parser;
use switchboard_loadtest::cli::Cli;
use switchboard_loadtest::report::Summary;

use common::run::{assert_exact, run};
use common::{gateway, gateway_edited, url};

/// The gateway's address as a Pusher client is given it: no path, so the tool
/// asks for `/app/app-key?protocol=7&…`.
fn pusher_url(addr: std::net::SocketAddr) -> String {
    format!("ws://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_pusher_delivers_everything_exactly_once() {
    let gw = gateway(&[]).await;
    let u = pusher_url(gw.addr);
    let s = run(&[
        "fanout",
        "--protocol",
        "pusher",
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
    assert_eq!(s.connections.attempted, 30);
    assert!(s.connections.failures.is_empty(), "{}", s.table());
    let d = s.delivery.as_ref().expect("a delivery section");
    assert!(d.publish_failures.is_empty(), "{}", s.table());
    assert_eq!(s.parameters["protocol"], "pusher");
    assert!(s.reconnection.is_none(), "{}", s.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pusher_receivers_answer_pings_between_events() {
    // A `pusher:ping` a second, a second to answer: a receiver that missed one
    // would be disconnected within the run and lose what was published meanwhile.
    let gw = gateway(&["--ping-interval", "1", "--pong-timeout", "1"]).await;
    let u = pusher_url(gw.addr);
    let s = run(&[
        "fanout",
        "--protocol",
        "pusher",
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
async fn pusher_idle_subscribers_all_connect_and_stay() {
    let gw = gateway(&[]).await;
    // The Centrifugo URL works too: its default path stands for "no path".
    let u = url(gw.addr);
    let s = run(&[
        "connect",
        "--protocol",
        "pusher",
        "--url",
        &u,
        "--connections",
        "40",
        "--subscribe",
        "--channels",
        "4",
        "--duration",
        "1",
    ])
    .await;
    assert_eq!(s.connections.attempted, 40);
    assert_eq!(s.connections.connected, 40, "{:?}", s.connections.failures);
    assert_eq!(s.connections.connect_latency.count, 40);
    assert_eq!(s.parameters["open_after_setup / at_end"], "40 / 40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_app_key_is_counted_by_its_pusher_error_code() {
    let gw = gateway(&[]).await;
    let u = pusher_url(gw.addr);
    let s = run(&[
        "connect",
        "--protocol",
        "pusher",
        "--url",
        &u,
        "--pusher-app-key",
        "no-such-key",
        "--connections",
        "5",
        "--duration",
        "0",
    ])
    .await;
    assert_eq!(s.connections.connected, 0);
    // 4001: "Could not find app by key".
    assert_eq!(
        s.connections.failures.get("error 4001"),
        Some(&5),
        "{:?}",
        s.connections.failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_by_the_http_api_and_nothing_counts_as_published() {
    let gw = gateway(&[]).await;
    let u = pusher_url(gw.addr);
    let s = run(&[
        "fanout",
        "--protocol",
        "pusher",
        "--url",
        &u,
        "--pusher-app-secret",
        "not-the-secret",
        "--subscribers",
        "3",
        "--rate",
        "20",
        "--duration",
        "0.5",
    ])
    .await;
    let d = s.delivery.as_ref().expect("a delivery section");
    assert_eq!(s.connections.connected, 3, "{}", s.table());
    assert_eq!(d.published, 0, "{}", s.table());
    assert!(
        d.publish_failures.get("http 401").is_some_and(|n| *n > 0),
        "{:?}",
        d.publish_failures
    );
    assert_eq!((d.counts.delivered, d.counts.lost), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pusher_churn_keeps_the_steady_subscribers_exact() {
    let gw = gateway(&[]).await;
    let u = pusher_url(gw.addr);
    let s = run(&[
        "churn",
        "--protocol",
        "pusher",
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

/// Worker processes are told the protocol in their part's spec: their Pusher
/// receivers' counts merge into exact totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pusher_worker_processes_merge_into_exact_totals() {
    let gw = gateway(&[]).await;
    let u = pusher_url(gw.addr);
    let dir = std::env::temp_dir().join(format!("sb-loadtest-pusher-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("run.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
        .args([
            "fanout",
            "--protocol",
            "pusher",
            "--url",
            &u,
            "--workers",
            "2",
            "--channels",
            "2",
            "--subscribers",
            "8",
            "--rate",
            "30",
            "--duration",
            "2",
            "--quiet",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Summary = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(s.connections.workers, 2);
    assert_exact(&s, 16);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_pusher_has_no_counterpart_for_is_refused() {
    let refusal = |args: &[&str]| {
        let argv = ["switchboard-loadtest"].iter().chain(args).copied();
        Cli::try_parse_from(argv)
            .expect("valid arguments")
            .scenario
            .refusal()
    };
    assert_eq!(refusal(&["fanout", "--protocol", "pusher"]), None);
    assert_eq!(refusal(&["connect", "--protocol", "pusher"]), None);
    assert_eq!(refusal(&["fanout", "--via", "client", "--protobuf"]), None);
    for refused in [
        &["fanout", "--protocol", "pusher", "--via", "client"][..],
        &["fanout", "--protocol", "pusher", "--protobuf"],
        &["connect", "--protocol", "pusher", "--protobuf"],
        &["failover", "--protocol", "pusher"],
        &["api", "--protocol", "pusher"],
    ] {
        assert!(refusal(refused).is_some(), "{refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_members_come_back_as_one_webhook_per_join_and_per_leave() {
    // A free port for the tool's receiver, named in the app's webhook before it listens.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = gateway_edited(&[], |config| {
        config.pusher_apps[0]
            .webhooks
            .push(switchboard_gateway::config::pusher::Webhook {
                url: format!("http://{listen}/webhooks"),
                event_types: vec!["member_added".into(), "member_removed".into()],
            })
    })
    .await;
    let u = pusher_url(gw.addr);
    let listen = listen.to_string();
    let argv = [
        "switchboard-loadtest",
        "webhooks",
        "--url",
        &u,
        "--listen",
        &listen,
        "--members",
        "20",
        "--channels",
        "3",
        "--lifetime",
        "0.5",
        "--duration",
        "3",
        "--sources",
        "1",
    ];
    let switchboard_loadtest::cli::Scenario::Webhooks { webhooks } =
        Cli::try_parse_from(argv).unwrap().scenario
    else {
        unreachable!("parsed as webhooks")
    };
    let s = switchboard_loadtest::scenario::webhooks::run(&webhooks)
        .await
        .unwrap();
    assert!(s.problems().is_empty(), "{}", s.table());
    assert!(s.joins > 20, "every slot joined again: {}", s.table());
    assert_eq!(s.leaves, s.joins, "{}", s.table());
    assert_eq!(s.added_latency.count, s.joins, "{}", s.table());
    assert_eq!(s.received.get("channel_occupied"), None, "filtered out");
}
