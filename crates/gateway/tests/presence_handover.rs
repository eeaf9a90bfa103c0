//! A gateway that stops cleanly hands its presence over at once (`node_gone`,
//! as the binary does after SIGTERM), on the buckets directly and through the
//! presence service.
//!
//! Its own test binary: these tests emit leaves, and `cluster.rs` counts every
//! leave its process emits (the metrics recorder is per process).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard_broker_nats::NatsConfig;
use switchboard_test_support::NatsServer;

/// Longer than any wait here: a leave seen is the hand-over, not an expiry.
const TTL: Duration = Duration::from_secs(30);

/// A presence service replica (with its sweeper) on this runtime.
async fn presence_replica(nats: &str) -> String {
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

async fn gateway(nats: &str, presence_urls: Vec<String>) -> Gateway {
    let mut cfg = config();
    cfg.nats = Some(switchboard_gateway::config::NatsSettings {
        presence_ttl: TTL,
        presence_urls,
        ..switchboard_gateway::config::NatsSettings::new(NatsConfig {
            urls: vec![nats.to_owned()],
            replicas: 1,
            ..NatsConfig::default()
        })
    });
    Gateway::start_tls(cfg, None).await
}

/// `going` stops cleanly: its members leave at once, announced to subscribers
/// on `survivor`, and are gone from its counts.
async fn a_clean_stop_hands_members_over(survivor: &Gateway, going: &Gateway) {
    let mut watcher = survivor.client().await;
    watcher
        .connect(json!({"token": token(json!({"sub": "watcher"}))}))
        .await;
    watcher
        .subscribe(json!({"channel": "farewell", "join_leave": true}))
        .await;
    let mut leaving = Vec::new();
    for i in 0..2 {
        let mut c = going.client().await;
        c.connect(json!({"token": token(json!({"sub": format!("leaver-{i}")}))}))
            .await;
        let r = c.subscribe(json!({"channel": "farewell"})).await;
        assert!(r.get("error").is_none(), "{r}");
        leaving.push(c);
    }
    for i in 0..2 {
        let user = json!(format!("leaver-{i}"));
        watcher
            .wait_for(|v| v["push"]["join"]["info"]["user"] == user)
            .await;
    }

    going.node.presence.node_gone().await.unwrap();
    let mut left = std::collections::BTreeSet::new();
    while left.len() < 2 {
        let leave = watcher.wait_for(|v| v["push"].get("leave").is_some()).await;
        left.insert(leave["push"]["leave"]["info"]["user"].to_string());
    }
    assert_eq!(
        left.into_iter().collect::<Vec<_>>(),
        ["\"leaver-0\"", "\"leaver-1\""]
    );
    let (_, stats) = survivor
        .api()
        .call("presence_stats", json!({"channel": "farewell"}))
        .await;
    assert_eq!(
        stats["result"],
        json!({"num_clients": 1, "num_users": 1}),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopping_cleanly_hands_its_members_over_at_once() {
    let nats = NatsServer::start();
    let survivor = gateway(&nats.url(), Vec::new()).await;
    let going = gateway(&nats.url(), Vec::new()).await;
    a_clean_stop_hands_members_over(&survivor, &going).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopping_cleanly_hands_its_members_over_through_the_presence_service() {
    let nats = NatsServer::start();
    let urls = vec![
        presence_replica(&nats.url()).await,
        presence_replica(&nats.url()).await,
    ];
    let survivor = gateway(&nats.url(), urls.clone()).await;
    let going = gateway(&nats.url(), urls.into_iter().rev().collect()).await;
    a_clean_stop_hands_members_over(&survivor, &going).await;
}
