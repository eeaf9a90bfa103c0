//! The Pusher front end as one server over two gateways and a real nats-server:
//! events, presence and client events across gateways, queries and terminate
//! through the other gateway, and the members of a gateway killed with -9.

mod common;

use std::time::Duration;

use common::pusher::{data_of, PusherApi, PusherClient, APP_KEY, APP_SECRET};
use common::{Gateway, GatewayProcess, PATIENCE};
use serde_json::json;
use switchboard_broker_nats::NatsConfig;
use switchboard_protocol::pusher::auth;
use switchboard_test_support::{eventually, NatsServer};

async fn gateway(nats: &str, presence_ttl: Duration) -> Gateway {
    let mut cfg = common::pusher::config();
    cfg.nats = Some(switchboard_gateway::config::NatsSettings {
        presence_ttl,
        presence_urls: Vec::new(),
        ..switchboard_gateway::config::NatsSettings::new(NatsConfig {
            urls: vec![nats.to_owned()],
            replicas: 1,
            ..NatsConfig::default()
        })
    });
    Gateway::start(cfg).await
}

async fn pair(nats: &NatsServer) -> (Gateway, Gateway) {
    let a = gateway(&nats.url(), Duration::from_secs(30)).await;
    let b = gateway(&nats.url(), Duration::from_secs(30)).await;
    for gw in [&a, &b] {
        eventually("both gateways listed", PATIENCE, async || {
            gw.node.cluster.nodes(&gw.node).len() == 2
        })
        .await;
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_across_two_gateways() {
    let nats = NatsServer::start();
    let (a, b) = pair(&nats).await;
    let room = "presence-room";
    let mut ann = PusherClient::connect(a.addr, APP_KEY).await;
    let mut bob = PusherClient::connect(b.addr, APP_KEY).await;
    ann.join(room, "1", json!({"name": "Ann"})).await;
    let joined = bob.join(room, "2", json!({"name": "Bob"})).await;
    assert_eq!(data_of(&joined)["presence"]["count"], 2, "{joined}");
    let added = ann.event("pusher_internal:member_added", Some(room)).await;
    assert_eq!(data_of(&added)["user_id"], "2");

    // An event through gateway b reaches both; a client event from b reaches a.
    PusherApi::new(b.addr)
        .trigger(&[room], "news", "\"hi\"")
        .await;
    assert_eq!(ann.event("news", Some(room)).await["data"], "\"hi\"");
    assert_eq!(bob.event("news", Some(room)).await["data"], "\"hi\"");
    bob.send(json!({"event": "client-wave", "channel": room, "data": {"n": 1}}))
        .await;
    let wave = ann.event("client-wave", Some(room)).await;
    assert_eq!(wave["user_id"], "2");

    // A cache channel's newest event, published through b, is replayed on a.
    PusherApi::new(b.addr)
        .trigger(&["cache-prices"], "price", "7")
        .await;
    let mut late = PusherClient::connect(a.addr, APP_KEY).await;
    late.subscribe("cache-prices").await;
    let replayed = late.next().await;
    assert_eq!(replayed["event"], "price", "{replayed}");
    assert_eq!(replayed["data"], "7");

    // Queries through gateway a count gateway b's subscriber too.
    let api = PusherApi::new(a.addr);
    let (_, channel) = api
        .request(
            "GET",
            &format!("/channels/{room}"),
            &[("info", "subscription_count,user_count")],
            None,
        )
        .await;
    assert_eq!(
        channel,
        json!({"occupied": true, "subscription_count": 2, "user_count": 2})
    );
    let (_, users) = api
        .request("GET", &format!("/channels/{room}/users"), &[], None)
        .await;
    assert_eq!(users, json!({"users": [{"id": "1"}, {"id": "2"}]}));

    // Terminate through gateway a closes the user signed in on gateway b.
    let user_data = r#"{"id":"bob"}"#;
    let signature = auth::user_auth(APP_KEY, APP_SECRET, &bob.socket_id, user_data);
    bob.send(
        json!({"event": "pusher:signin", "data": {"auth": signature, "user_data": user_data}}),
    )
    .await;
    bob.event("pusher:signin_success", None).await;
    let (status, body) = api
        .request(
            "POST",
            "/users/bob/terminate_connections",
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bob.closed().await, 4009);
    let removed = ann
        .event("pusher_internal:member_removed", Some(room))
        .await;
    assert_eq!(data_of(&removed)["user_id"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_of_a_gateway_killed_with_sigkill_leave_once() {
    let nats = NatsServer::start();
    // config/dev.toml serves the same app (app-id, app-key, app-secret).
    let mut doomed = GatewayProcess::cluster(&nats.url(), &["--presence-ttl", "3"]);
    let survivor = gateway(&nats.url(), Duration::from_secs(3)).await;
    let room = "presence-crash";
    let mut ann = PusherClient::connect(survivor.addr, APP_KEY).await;
    ann.join(room, "1", json!({})).await;
    let mut bob = PusherClient::connect(doomed.1, APP_KEY).await;
    bob.join(room, "2", json!({})).await;
    ann.event("pusher_internal:member_added", Some(room)).await;

    doomed.kill9();
    // The survivor's sweep removes the dead gateway's member after the TTL.
    let patience = Duration::from_secs(30);
    let deadline = tokio::time::Instant::now() + patience;
    let removed = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no member_removed within {patience:?}"
        );
        if let common::pusher::Read::Event(e) = ann.read().await {
            if e["event"] == "pusher_internal:member_removed" {
                break e;
            }
        }
    };
    assert_eq!(data_of(&removed)["user_id"], "2");
    let api = PusherApi::new(survivor.addr);
    let (_, users) = api
        .request("GET", &format!("/channels/{room}/users"), &[], None)
        .await;
    assert_eq!(users, json!({"users": [{"id": "1"}]}));
    // Once: a later look finds no second member_removed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(ann.nothing_pending().await.is_empty());
}
