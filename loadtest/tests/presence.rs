//! The `presence` scenario against a real nats-server, a presence service and a
//! cluster gateway (all in this process, on free ports): every count exact.
//! Assertions are on counts, never on timings.

mod common;

use std::time::Duration;

use switchboard_loadtest::cli::PresenceArgs;
use switchboard_loadtest::scenario;
use switchboard_test_support::NatsServer;

use common::{gateway, url};

/// The presence TTL of the service and the gateway: short, so that the expiry
/// phase takes seconds.
const TTL: Duration = Duration::from_secs(3);

async fn presence_service(nats: &str) -> String {
    let client = async_nats::connect(nats).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = std::sync::Arc::new(
        switchboard_broker_nats::PresenceBucket::open(&js, "sb", TTL, 1)
            .await
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(switchboard_broker_nats::sweeper::run_while(
        std::sync::Arc::downgrade(&bucket),
        url.clone(),
    ));
    let service = switchboard_presence::PresenceService::new(bucket);
    tokio::spawn(switchboard_presence::serve(
        listener,
        service,
        std::future::pending(),
    ));
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_presence_scenario_counts_joins_stats_pages_and_leaves_exactly() {
    let nats = NatsServer::start();
    let service = presence_service(&nats.url()).await;
    let nats_url = nats.url();
    let gw = gateway(&["--nats-url", &nats_url, "--presence-ttl", "3"]).await;
    let args = PresenceArgs {
        presence_urls: vec![service],
        url: Some(url(gw.addr)),
        members: 300,
        users: 100,
        channel: "presence-lt".into(),
        concurrency: 8,
        refresh_rounds: 1,
        stats_calls: 2,
        expire_timeout: 30.0,
        node: "test".into(),
        server_pids: Vec::new(),
        nats_pids: Vec::new(),
        json: None,
    };
    let summary = scenario::presence::run(&args).await.unwrap();
    assert_eq!(
        summary.problems(true),
        Vec::<String>::new(),
        "{}",
        summary.table()
    );
    assert_eq!(summary.user_joins, 100);
    assert_eq!((summary.stats_clients, summary.stats_users), (301, 101));
    assert_eq!(summary.listed, 301, "the watcher is listed too");
    assert_eq!((summary.leaves, summary.duplicate_leaves), (300, 0));
    assert_eq!(summary.refresh_per_10k_ms.len(), 1);
}
