//! The cluster acts as one server: a client on gateway 1, the server API called
//! through gateway 2, over a real nats-server.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchboard_gateway::cluster::{Answer, Command};
use switchboard_test_support::{eventually, NatsServer};

/// Two gateways that each list both in `info`.
async fn pair(nats: &NatsServer) -> Vec<Gateway> {
    let gws = gateways(2, &nats.url()).await;
    for gw in &gws {
        eventually("both gateways listed", PATIENCE, async || {
            gw.node.cluster.nodes(&gw.node).len() == 2
        })
        .await;
    }
    gws
}

/// A client of user `user` on `gw`.
async fn user_on(gw: &Gateway, user: &str) -> Client {
    let mut c = gw.client().await;
    c.connect(json!({"token": token(json!({"sub": user}))}))
        .await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_through_gateway_2_closes_the_user_on_gateway_1() {
    let nats = NatsServer::start();
    let gws = pair(&nats).await;
    let mut on_1 = user_on(&gws[0], "banned").await;
    let mut bystander = user_on(&gws[0], "other").await;
    let (_, r) = gws[1]
        .api()
        .call(
            "disconnect",
            json!({"user": "banned", "disconnect": {"code": 4501, "reason": "banned"}}),
        )
        .await;
    assert_eq!(r, json!({"result": {}}), "every node confirmed");
    assert_eq!(on_1.closed().await, (4501, "banned".to_owned()));
    // The anonymous user too, as the table has it.
    let mut anonymous = gws[0].connected().await;
    let (_, r) = gws[1].api().call("disconnect", json!({"user": ""})).await;
    assert_eq!(r, json!({"result": {}}));
    assert_eq!(anonymous.closed().await.0, 3503);
    // Nobody else was touched.
    let pong = bystander.call(json!({"ping": {}})).await;
    assert!(pong.get("error").is_none(), "{pong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_through_gateway_2_ends_the_subscription_on_gateway_1() {
    let nats = NatsServer::start();
    let gws = pair(&nats).await;
    let mut on_1 = user_on(&gws[0], "u1").await;
    on_1.subscribe(json!({"channel": "room"})).await;
    let (_, r) = gws[1]
        .api()
        .call("unsubscribe", json!({"channel": "room", "user": "u1"}))
        .await;
    assert_eq!(r, json!({"result": {}}));
    let push = on_1
        .wait_for(|v| v["push"].get("unsubscribe").is_some())
        .await;
    assert_eq!(push["push"]["channel"], json!("room"));
    assert_eq!(push["push"]["unsubscribe"]["code"], json!(2000));
    eventually("gone from the hub of gateway 1", PATIENCE, async || {
        gws[0].node.hub.num_subscribers("room") == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_through_gateway_2_subscribes_the_user_on_gateway_1() {
    let nats = NatsServer::start();
    let gws = pair(&nats).await;
    let mut on_1 = user_on(&gws[0], "u2").await;
    let before = gws[1].api().publish("feed", json!({"n": 0})).await;
    let (_, r) = gws[1]
        .api()
        .call(
            "subscribe",
            json!({
                "user": "u2",
                "channel": "feed",
                "info": {"role": "reader"},
                "data": {"welcome": true},
                "recover_since": {"offset": before["offset"], "epoch": before["epoch"]},
            }),
        )
        .await;
    assert_eq!(r, json!({"result": {}}));
    let push = on_1
        .wait_for(|v| v["push"].get("subscribe").is_some())
        .await;
    assert_eq!(push["push"]["channel"], json!("feed"));
    let subscribe = &push["push"]["subscribe"];
    assert_eq!(subscribe["data"], json!({"welcome": true}));
    assert_eq!(subscribe["epoch"], before["epoch"]);
    // Live publications reach it, with the channel info the server gave.
    let after = gws[1].api().publish("feed", json!({"n": 1})).await;
    let p = on_1.next_pub("feed").await;
    assert_eq!(
        (p["data"].clone(), p["offset"].clone()),
        (json!({"n": 1}), after["offset"].clone())
    );
    let (_, presence) = gws[1]
        .api()
        .call("presence", json!({"channel": "feed"}))
        .await;
    let members: Vec<&Value> = presence["result"]["presence"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert_eq!(members.len(), 1, "{presence}");
    assert_eq!(members[0]["user"], json!("u2"));
    assert_eq!(members[0]["chan_info"], json!({"role": "reader"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_recover_since_sends_what_was_missed_then_live() {
    let nats = NatsServer::start();
    let gws = pair(&nats).await;
    let mut on_1 = user_on(&gws[0], "u3").await;
    let since = gws[1].api().publish("missed", json!({"n": 0})).await;
    let missed = gws[1].api().publish("missed", json!({"n": 1})).await;
    let (_, r) = gws[1]
        .api()
        .call(
            "subscribe",
            json!({"user": "u3", "channel": "missed",
                   "recover_since": {"offset": since["offset"], "epoch": since["epoch"]}}),
        )
        .await;
    assert_eq!(r, json!({"result": {}}));
    on_1.wait_for(|v| v["push"].get("subscribe").is_some())
        .await;
    let p = on_1.next_pub("missed").await;
    assert_eq!(
        (p["data"].clone(), p["offset"].clone()),
        (json!({"n": 1}), missed["offset"].clone())
    );
    let live = gws[0].api().publish("missed", json!({"n": 2})).await;
    let p = on_1.next_pub("missed").await;
    assert_eq!(p["offset"], live["offset"], "nothing twice, nothing lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_through_gateway_2_updates_or_expires_the_user_on_gateway_1() {
    let nats = NatsServer::start();
    let gws = pair(&nats).await;
    let mut on_1 = user_on(&gws[0], "u4").await;
    on_1.subscribe(json!({"channel": "talk"})).await;
    // New connection info: what the client publishes from now on carries it.
    let (_, r) = gws[1]
        .api()
        .call(
            "refresh",
            json!({"user": "u4", "expire_at": switchboard_gateway::centrifugo::auth::now_secs() + 3600,
                   "info": {"name": "Ann"}}),
        )
        .await;
    assert_eq!(r, json!({"result": {}}));
    eventually("the new info in publications", PATIENCE, async || {
        let sent = on_1
            .call(json!({"publish": {"channel": "talk", "data": {"m": 1}}}))
            .await;
        assert!(sent.get("error").is_none(), "{sent}");
        let p = on_1.next_pub("talk").await;
        p["info"]["conn_info"] == json!({"name": "Ann"})
    })
    .await;
    // Expired: closed at once, told to reconnect with fresh credentials.
    let (_, r) = gws[1]
        .api()
        .call("refresh", json!({"user": "u4", "expired": true}))
        .await;
    assert_eq!(r, json!({"result": {}}));
    assert_eq!(on_1.closed().await.0, 3005);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_and_channels_through_gateway_2_cover_every_gateway() {
    let nats = NatsServer::start();
    let gws = pair(&nats).await;
    let mut a = user_on(&gws[0], "a").await;
    let mut b = user_on(&gws[0], "b").await;
    let mut c = user_on(&gws[1], "c").await;
    a.subscribe(json!({"channel": "news"})).await;
    b.subscribe(json!({"channel": "news"})).await;
    b.subscribe(json!({"channel": "sport"})).await;
    c.subscribe(json!({"channel": "news"})).await;

    let (_, info) = gws[1].api().call("info", json!({})).await;
    assert!(info.get("error").is_none(), "{info}");
    let nodes = info["result"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{info}");
    let of = |id: &str| nodes.iter().find(|n| n["uid"] == json!(id)).unwrap();
    let one = of(&gws[0].node.id);
    assert_eq!(
        (
            one["num_clients"].clone(),
            one["num_users"].clone(),
            one["num_channels"].clone(),
            one["num_subs"].clone()
        ),
        (json!(2), json!(2), json!(2), json!(3)),
        "gateway 1 counted as it is now: {info}"
    );
    assert_eq!(of(&gws[1].node.id)["num_clients"], json!(1));

    let (_, channels) = gws[1].api().call("channels", json!({})).await;
    assert_eq!(
        channels,
        json!({"result": {"channels": {"news": {"num_clients": 3}, "sport": {"num_clients": 1}}}})
    );
    let (_, filtered) = gws[1]
        .api()
        .call("channels", json!({"pattern": "sp*"}))
        .await;
    assert_eq!(
        filtered,
        json!({"result": {"channels": {"sport": {"num_clients": 1}}}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_addressed_to_one_gateway_is_answered_by_that_gateway_only() {
    let nats = NatsServer::start();
    let gws = pair(&nats).await;
    let mut on_1 = gws[0].connected().await;
    on_1.subscribe(json!({"channel": "only-on-1"})).await;
    let mut on_2 = gws[1].connected().await;
    on_2.subscribe(json!({"channel": "only-on-2"})).await;
    let ask = |target: String| {
        let node = gws[1].node.clone();
        async move {
            node.cluster
                .request(&node, &target, Command::Channels { pattern: None })
                .await
        }
    };
    let channels_of = |answer: Answer| match answer {
        Answer::Channels { channels } => channels.into_keys().collect::<Vec<_>>(),
        other => panic!("unexpected answer {other:?}"),
    };
    let remote = ask(gws[0].node.id.clone()).await.unwrap();
    assert_eq!(channels_of(remote), ["only-on-1"]);
    let local = ask(gws[1].node.id.clone()).await.unwrap();
    assert_eq!(channels_of(local), ["only-on-2"]);
    let nobody = ask("no-such-node".into()).await;
    assert!(
        matches!(
            nobody,
            Err(switchboard_broker_nats::control::ControlError::NoSuchNode(
                _
            ))
        ),
        "{nobody:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_shuts_down_leaves_the_registry_at_once() {
    let nats = NatsServer::start();
    let mut gws = pair(&nats).await;
    let (_, metrics) = get(gws[1].addr, "/metrics").await;
    assert!(metrics.contains("switchboard_cluster_nodes 2"), "{metrics}");
    let gone = gws[0].node.id.clone();
    tokio::time::timeout(PATIENCE, gws[0].shutdown())
        .await
        .unwrap()
        .unwrap();
    // Within the patience (10 s), before the node TTL (15 s) would drop it.
    eventually("the stopped gateway leaves info", PATIENCE, async || {
        gws[1].node.cluster.nodes(&gws[1].node).len() == 1
    })
    .await;
    let (_, info) = gws[1].api().call("info", json!({})).await;
    assert!(info.get("error").is_none(), "{info}");
    let nodes = info["result"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{info}");
    assert_ne!(nodes[0]["uid"], json!(gone));
}

#[tokio::test]
async fn standalone_the_same_calls_act_in_process() {
    let gw = Gateway::start(config()).await;
    let mut c = user_on(&gw, "solo").await;
    let (_, r) = gw
        .api()
        .call("subscribe", json!({"user": "solo", "channel": "s1"}))
        .await;
    assert_eq!(r, json!({"result": {}}));
    c.wait_for(|v| v["push"].get("subscribe").is_some()).await;
    let (_, info) = gw.api().call("info", json!({})).await;
    assert_eq!(info["result"]["nodes"][0]["num_subs"], json!(1), "{info}");
    let (_, channels) = gw.api().call("channels", json!({})).await;
    assert_eq!(
        channels,
        json!({"result": {"channels": {"s1": {"num_clients": 1}}}})
    );
    let (_, r) = gw
        .api()
        .call("refresh", json!({"user": "solo", "expired": true}))
        .await;
    assert_eq!(r, json!({"result": {}}));
    assert_eq!(c.closed().await.0, 3005);
    let (status, r) = gw
        .api()
        .call(
            "subscribe",
            json!({"user": "solo", "channel": "bad channel"}),
        )
        .await;
    assert_eq!(
        (status, r["error"]["code"].clone()),
        (200, json!(107)),
        "{r}"
    );
}

/// The uid of every node `info` lists through `api`.
async fn listed(api: &Api) -> Vec<String> {
    let (_, info) = api.call("info", json!({})).await;
    info["result"]["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| n["uid"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_leaves_info_and_a_frozen_one_is_named_not_awaited() {
    let nats = NatsServer::start();
    let fast = [
        "--node-ttl",
        "3",
        "--control-timeout",
        "1",
        "--api-key",
        API_KEY,
    ];
    let mut killed = GatewayProcess::cluster(&nats.url(), &fast);
    let frozen = GatewayProcess::cluster(&nats.url(), &fast);
    let survivor = GatewayProcess::cluster(&nats.url(), &fast);
    let api = Api { addr: survivor.1 };
    eventually("three gateways listed", PATIENCE, async || {
        listed(&api).await.len() == 3
    })
    .await;

    // SIGSTOP: still in the registry, but it cannot answer. The call answers
    // after the control timeout and names it.
    frozen.signal("STOP");
    let (status, r) = api.call("disconnect", json!({"user": "nobody"})).await;
    frozen.signal("CONT");
    assert_eq!(status, 200);
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(r["error"]["code"], json!(100), "{r}");
    assert_eq!(r["error"]["temporary"], json!(true));
    let named = r["error"]["nodes"].as_array().unwrap();
    assert_eq!(named.len(), 1, "only the frozen gateway: {r}");
    let frozen_id = named[0]["uid"].as_str().unwrap().to_owned();
    assert!(listed(&api).await.contains(&frozen_id));

    // kill -9: no goodbye, so it drops out when its entry is not renewed.
    let killed_id = node_of(&killed).await;
    assert!(listed(&api).await.contains(&killed_id));
    killed.kill9();
    eventually(
        "the killed gateway leaves info",
        Duration::from_secs(15),
        async || !listed(&api).await.contains(&killed_id),
    )
    .await;
    let (_, r) = api.call("info", json!({})).await;
    assert!(r.get("error").is_none(), "the live ones all answer: {r}");
    let live = listed(&api).await;
    assert_eq!(live.len(), 2, "{r}");
    assert!(
        live.contains(&frozen_id),
        "the continued gateway is back: {r}"
    );
}

/// The id of the gateway process, as a client's connect reply names it.
async fn node_of(process: &GatewayProcess) -> String {
    let mut c = Client::open(process.1, false).await;
    let reply = c.connect(json!({})).await;
    reply["connect"]["node"].as_str().unwrap().to_owned()
}
