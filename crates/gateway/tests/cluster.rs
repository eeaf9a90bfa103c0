//! Cluster mode: several gateways over a real nats-server (JetStream).

mod common;

use common::*;
use serde_json::{json, Value};
use switchboard_broker_nats::NatsConfig;
use switchboard_test_support::{eventually, NatsCluster, NatsServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_on_one_gateway_reaches_subscribers_on_the_others() {
    let nats = NatsServer::start();
    let gws = gateways(3, &nats.url()).await;
    let mut b = gws[1].connected().await;
    let mut c = gws[2].connected().await;
    let sb = b.subscribe(json!({"channel": "news"})).await;
    let sc = c.subscribe(json!({"channel": "news"})).await;
    assert_eq!(
        sb["subscribe"]["epoch"], sc["subscribe"]["epoch"],
        "one stream, one epoch"
    );

    let published = gws[0].api().publish("news", json!({"n": 1})).await;
    let pb = b.next_pub("news").await;
    let pc = c.next_pub("news").await;
    assert_eq!(pb["data"], json!({"n": 1}));
    assert_eq!(pb["offset"], published["offset"]);
    assert_eq!(pc["offset"], published["offset"]);

    // Channels without history go over core NATS, without offsets.
    let mut cfg_free = config();
    cfg_free.namespaces = switchboard_core::namespace::Namespaces::new(
        switchboard_core::namespace::NamespaceOptions {
            history_size: 0,
            ..open_namespace()
        },
        vec![],
    )
    .unwrap();
    let free_a = Gateway::cluster(cfg_free.clone(), &nats.url()).await;
    let free_b = Gateway::cluster(cfg_free, &nats.url()).await;
    let mut listener = free_b.connected().await;
    let r = listener.subscribe(json!({"channel": "ephemeral"})).await;
    assert!(r["subscribe"].get("epoch").is_none(), "{r}");
    let pos = free_a.api().publish("ephemeral", json!("x")).await;
    assert_eq!(pos, json!({}));
    let p = listener.next_pub("ephemeral").await;
    assert_eq!((p["data"].clone(), p.get("offset")), (json!("x"), None));
}

/// The server API's tags and skip_history over NATS: a publication through gateway 1
/// reaches a subscriber on gateway 2 with its tags; one kept out of the history (the
/// live-subject path of channels without history) arrives without an offset, and
/// gateway 2's history holds only the kept one, tags and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_skip_history_hold_across_gateways() {
    let nats = NatsServer::start();
    let gws = gateways(2, &nats.url()).await;
    let mut b = gws[1].connected().await;
    b.subscribe(json!({"channel": "notes"})).await;
    let api = gws[0].api();
    let tags = json!({"kind": "note"});
    let (_, kept) = api
        .call(
            "publish",
            json!({"channel": "notes", "data": "kept", "tags": tags}),
        )
        .await;
    let skip = json!({"channel": "notes", "data": "fleeting", "tags": tags, "skip_history": true});
    let (_, skipped) = api.call("publish", skip).await;
    assert_eq!(skipped, json!({"result": {}}));

    // The two take different paths (stream and RePublish, core NATS): either may be first.
    let mut got = [b.next_pub("notes").await, b.next_pub("notes").await];
    got.sort_by_key(|p| p["data"].to_string());
    assert_eq!(
        (
            got[0]["data"].clone(),
            got[0].get("offset"),
            got[0]["tags"].clone()
        ),
        (json!("fleeting"), None, tags.clone())
    );
    assert_eq!(
        (
            got[1]["data"].clone(),
            got[1]["offset"].clone(),
            got[1]["tags"].clone()
        ),
        (
            json!("kept"),
            kept["result"]["offset"].clone(),
            tags.clone()
        )
    );
    let (_, h) = gws[1]
        .api()
        .call("history", json!({"channel": "notes", "limit": 10}))
        .await;
    let pubs = h["result"]["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 1, "{h}");
    assert_eq!(
        (pubs[0]["data"].clone(), pubs[0]["tags"].clone()),
        (json!("kept"), tags)
    );
}

/// Publishers on three gateways, one channel: every subscriber everywhere sees
/// the same 1,000 publications in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_arrive_in_the_same_order_everywhere() {
    const PER_GATEWAY: usize = 334;
    let nats = NatsServer::start();
    let gws = gateways(3, &nats.url()).await;
    let mut clients = Vec::new();
    for gw in &gws {
        let mut c = gw.connected().await;
        c.subscribe(json!({"channel": "big:order"})).await;
        clients.push(c);
    }
    let mut publishers = Vec::new();
    for (g, gw) in gws.iter().enumerate() {
        let node = gw.node.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..PER_GATEWAY {
                let data = bytes::Bytes::from(format!("\"{g}-{i}\""));
                node.publish("big:order", data, None, None).await.unwrap();
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let total = PER_GATEWAY * 3;
    let mut sequences = Vec::new();
    for c in clients.iter_mut() {
        let mut seen = Vec::with_capacity(total);
        while seen.len() < total {
            let p = c.next_pub("big:order").await;
            seen.push((
                p["offset"].as_u64().unwrap(),
                p["data"].as_str().unwrap().to_owned(),
            ));
        }
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "offsets increase");
        sequences.push(seen);
    }
    assert_eq!(sequences[0], sequences[1]);
    assert_eq!(sequences[1], sequences[2]);
    // and every gateway's publications keep their own order
    for g in 0..3 {
        let mine: Vec<usize> = sequences[0]
            .iter()
            .filter_map(|(_, d)| d.strip_prefix(&format!("{g}-")).map(|i| i.parse().unwrap()))
            .collect();
        assert_eq!(mine, (0..PER_GATEWAY).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_on_another_gateway() {
    let nats = NatsServer::start();
    let gws = gateways(2, &nats.url()).await;
    let mut c = gws[0].connected().await;
    let sub = c.subscribe(json!({"channel": "moving"})).await;
    let epoch = sub["subscribe"]["epoch"].clone();
    assert_eq!(sub["subscribe"]["offset"].as_u64().unwrap_or(0), 0);
    drop(c);
    // Away from the start: recovery from offset 0 is provable only because the
    // channel's first message is marked as such.
    for i in 0..5 {
        gws[0].api().publish("moving", json!(i)).await;
    }
    let mut c = gws[1].connected().await;
    let sub = c
        .subscribe(json!({"channel": "moving", "recover": true, "offset": 0, "epoch": epoch}))
        .await;
    assert!(flag(&sub["subscribe"]["recovered"]), "{sub}");
    let got: Vec<Value> = sub["subscribe"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].clone())
        .collect();
    assert_eq!(got, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    let last = sub["subscribe"]["publications"][4]["offset"]
        .as_u64()
        .unwrap();
    drop(c);

    gws[1].api().publish("moving", json!(5)).await;
    let mut c = gws[0].connected().await;
    let sub = c
        .subscribe(json!({"channel": "moving", "recover": true, "offset": last, "epoch": epoch}))
        .await;
    assert!(flag(&sub["subscribe"]["recovered"]), "{sub}");
    assert_eq!(
        sub["subscribe"]["publications"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_the_history_window_says_false() {
    let nats = NatsServer::start();
    let gws = gateways(2, &nats.url()).await;
    let mut c = gws[0].connected().await;
    c.subscribe(json!({"channel": "short:w"})).await;
    gws[1].api().publish("short:w", json!(0)).await;
    let first = c.next_pub("short:w").await;
    let epoch = gws[1]
        .api()
        .call("history", json!({"channel": "short:w", "limit": 0}))
        .await
        .1["result"]["epoch"]
        .clone();
    drop(c);
    for i in 1..=10 {
        gws[1].api().publish("short:w", json!(i)).await;
    }
    let mut c = gws[1].connected().await;
    let sub = c
        .subscribe(json!({"channel": "short:w", "recover": true, "offset": first["offset"], "epoch": epoch}))
        .await;
    assert!(
        !flag(&sub["subscribe"]["recovered"]),
        "history keeps 3 of 10: {sub}"
    );
    assert!(flag(&sub["subscribe"]["was_recovering"]));

    // From offset 0 of a channel whose first messages are gone: not provable either.
    let mut c = gws[0].connected().await;
    let sub = c
        .subscribe(json!({"channel": "short:w", "recover": true, "offset": 0, "epoch": epoch}))
        .await;
    assert!(!flag(&sub["subscribe"]["recovered"]), "{sub}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_channel_names_cannot_receive_other_channels() {
    let nats = NatsServer::start();
    let gws = gateways(2, &nats.url()).await;
    let names = [
        "a.b",
        "a.*",
        "a.>",
        "a",
        ">",
        "*",
        "a.b.c",
        "short:x",
        "short:x.*",
        "short:x.>",
    ];
    let mut clients = Vec::new();
    for name in names {
        let mut c = gws[0].connected().await;
        let r = c.subscribe(json!({"channel": name})).await;
        assert!(r.get("error").is_none(), "{name}: {r}");
        clients.push(c);
    }
    for name in names {
        gws[1].api().publish(name, json!({"for": name})).await;
    }
    for (c, name) in clients.iter_mut().zip(names) {
        let p = c.next_pub(name).await;
        assert_eq!(p["data"], json!({"for": name}));
        // nothing else arrives: a ping round trip proves the queue holds no stray push
        let r = c.call(json!({"ping": {}})).await;
        assert!(r.get("error").is_none());
        assert!(
            c.try_next_push().is_none(),
            "{name} got another channel's message"
        );
    }
}

/// Subscribes through `gws[start]` and collects `count` publications of
/// `channel`, reconnecting (to the next gateway) and recovering whenever the
/// server closes the connection. Returns the data in order of arrival.
///
/// It starts by recovering from offset 0 of the (empty) channel's epoch, so it
/// misses nothing published before its first subscribe either.
async fn collect_resiliently(
    gws: &[Gateway],
    start: usize,
    channel: &str,
    count: usize,
) -> Vec<Value> {
    collect_gated(gws, start, channel, count, None).await
}

/// [`collect_resiliently`], reconnecting only once `gate` says so (when given).
async fn collect_gated(
    gws: &[Gateway],
    start: usize,
    channel: &str,
    count: usize,
    mut gate: Option<tokio::sync::watch::Receiver<bool>>,
) -> Vec<Value> {
    let (_, top) = gws[start]
        .api()
        .call("history", json!({"channel": channel, "limit": 0}))
        .await;
    let epoch = top["result"]["epoch"].clone();
    assert!(epoch.is_string(), "{top}");
    let mut got: Vec<Value> = Vec::new();
    let mut position: Option<(u64, Value)> = Some((0, epoch));
    let mut which = start;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while got.len() < count {
        if tokio::time::Instant::now() >= deadline {
            let missing: Vec<usize> = (0..count).filter(|i| !got.contains(&json!(i))).collect();
            panic!(
                "collected {} of {count}; missing {missing:?}; position {position:?}",
                got.len()
            );
        }
        let mut c = gws[which % gws.len()].client().await;
        if c.call(json!({"connect": {}})).await.get("error").is_some() {
            which += 1;
            continue;
        }
        let (offset, epoch) = position.clone().expect("a position from the start");
        let req = json!({"channel": channel, "recover": true, "offset": offset, "epoch": epoch});
        let sub = c.subscribe(req).await;
        if sub.get("error").is_some() {
            which += 1;
            continue;
        }
        let s = &sub["subscribe"];
        assert!(flag(&s["recovered"]), "recovery must be complete: {sub}");
        let epoch = s["epoch"].clone();
        let mut last = position.as_ref().map_or(0, |p| p.0);
        for p in s["publications"].as_array().cloned().unwrap_or_default() {
            last = p["offset"].as_u64().unwrap();
            got.push(p["data"].clone());
        }
        position = Some((last, epoch.clone()));
        while got.len() < count {
            match c.next_pub_or_close(channel).await {
                Ok(p) => {
                    let offset = p["offset"].as_u64().unwrap();
                    assert!(offset > last, "offsets increase: {offset} after {last}");
                    last = offset;
                    position = Some((last, epoch.clone()));
                    got.push(p["data"].clone());
                }
                Err(code) => {
                    eprintln!(
                        "collector: gateway {} closed with {code} after {} publications",
                        which % gws.len(),
                        got.len()
                    );
                    if let Some(gate) = gate.as_mut() {
                        let _ = gate.wait_for(|open| *open).await;
                    }
                    break;
                }
            }
        }
        which += 1;
    }
    got
}

/// Publishes `0..count` through the gateways in turn, retrying each until it
/// is acknowledged (the API answers with an offset).
async fn publish_all(
    gws: Vec<std::sync::Arc<switchboard_gateway::node::Node>>,
    channel: &'static str,
    count: usize,
    during: impl FnOnce(usize) -> Option<tokio::task::JoinHandle<()>> + Send + 'static,
) {
    let mut hook = Some(during);
    let mut hook_task = None;
    for i in 0..count {
        if i == count / 3 {
            if let Some(h) = hook.take() {
                hook_task = h(i);
            }
        }
        let node = &gws[i % gws.len()];
        let patience = std::time::Duration::from_secs(30);
        eventually(
            format!("publication {i} acknowledged"),
            patience,
            async || {
                let data = bytes::Bytes::from(i.to_string());
                node.publish(channel, data, None, Some(format!("k{i}")))
                    .await
                    .is_ok()
            },
        )
        .await;
    }
    if let Some(t) = hook_task {
        t.await.unwrap();
    }
}

fn expected(count: usize) -> Vec<Value> {
    (0..count).map(|i| json!(i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_nats_mid_stream_loses_no_acknowledged_publication() {
    const COUNT: usize = 300;
    let nats = std::sync::Arc::new(std::sync::Mutex::new(NatsServer::start()));
    let url = nats.lock().unwrap().url();
    let gws = gateways(2, &url).await;
    let nodes: Vec<_> = gws.iter().map(|g| g.node.clone()).collect();
    let restarter = nats.clone();
    let collector = collect_resiliently(&gws, 1, "big:restart", COUNT);
    let publisher = publish_all(nodes, "big:restart", COUNT, move |_| {
        Some(tokio::task::spawn_blocking(move || {
            restarter.lock().unwrap().restart()
        }))
    });
    let (got, ()) = tokio::join!(collector, publisher);
    assert_eq!(got, expected(COUNT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_node_of_a_three_node_cluster_loses_nothing() {
    const COUNT: usize = 300;
    let cluster = std::sync::Arc::new(std::sync::Mutex::new(NatsCluster::start(3)));
    let urls = cluster.lock().unwrap().urls();
    let mut gws = Vec::new();
    for _ in 0..2 {
        let mut cfg = config();
        cfg.nats = Some(switchboard_gateway::config::NatsSettings {
            presence_ttl: std::time::Duration::from_secs(30),
            presence_urls: Vec::new(),
            ..switchboard_gateway::config::NatsSettings::new(NatsConfig {
                urls: urls.split(',').map(str::to_owned).collect(),
                replicas: 3,
                ..NatsConfig::default()
            })
        });
        gws.push(Gateway::start_tls(cfg, None).await);
    }
    let nodes: Vec<_> = gws.iter().map(|g| g.node.clone()).collect();
    let killer = cluster.clone();
    let collector = collect_resiliently(&gws, 0, "big:r3", COUNT);
    let publisher = publish_all(nodes, "big:r3", COUNT, move |_| {
        Some(tokio::task::spawn_blocking(move || {
            killer.lock().unwrap().nodes[0].kill()
        }))
    });
    let (got, ()) = tokio::join!(collector, publisher);
    assert_eq!(got, expected(COUNT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_readiness_turns_false_and_publishes_fail_fast() {
    let mut nats = NatsServer::start();
    let gw = Gateway::cluster(config(), &nats.url()).await;
    let mut c = gw.connected().await;
    c.subscribe(json!({"channel": "outage"})).await;
    nats.kill();
    eventually("readyz false", PATIENCE, async || !gw.node.is_ready()).await;
    assert_eq!(get(gw.addr, "/readyz").await.0, 503);
    let (status, body) = gw
        .api()
        .call("publish", json!({"channel": "outage", "data": 1}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (200, json!(100)),
        "{body}"
    );
    // the client keeps its socket
    let r = c.call(json!({"ping": {}})).await;
    assert!(r.get("error").is_none());
    nats.restart();
    eventually("ready again", PATIENCE, async || gw.node.is_ready()).await;
    eventually("publish recovered", PATIENCE, async || {
        let (_, body) = gw
            .api()
            .call("publish", json!({"channel": "outage", "data": 2}))
            .await;
        body.get("result").is_some()
    })
    .await;
    assert_eq!(c.next_pub("outage").await["data"], json!(2));
}

/// A hung NATS (SIGSTOP: socket open, silent) turns readiness false, refuses new
/// WebSockets and fails publishes at once, instead of leaving /readyz at 200 and
/// every call waiting out its timeout (issue 17 defect 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_nats_turns_readiness_false_and_publishes_fail_fast() {
    let nats = NatsServer::start();
    let gw = Gateway::cluster(config(), &nats.url()).await;
    let mut c = gw.connected().await;
    c.subscribe(json!({"channel": "hung"})).await;
    nats.freeze();
    eventually("readyz false", PATIENCE, async || {
        get(gw.addr, "/readyz").await.0 == 503
    })
    .await;
    let (status, body) = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        gw.api()
            .call("publish", json!({"channel": "hung", "data": 1})),
    )
    .await
    .expect("answered without waiting on NATS");
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (200, json!(100)),
        "{body}"
    );
    // Presence reads (its store is NATS too) fail at once as well, for the API
    // and for a connected client.
    for method in ["presence", "presence_stats"] {
        let (status, body) = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            gw.api().call(method, json!({"channel": "hung"})),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} answered without waiting on NATS"));
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (200, json!(100)),
            "{method}: {body}"
        );
    }
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        c.call(json!({"presence_stats": {"channel": "hung"}})),
    )
    .await
    .expect("the client's presence_stats answered without waiting on NATS");
    assert_eq!(reply["error"]["code"], json!(100), "{reply}");
    let refused = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let upgrade = ws_handshake(gw.addr, refused, "").await;
    assert!(upgrade.is_err(), "a WebSocket accepted while NATS hangs");
    nats.thaw();
    eventually("ready again", PATIENCE, async || gw.node.is_ready()).await;
    gw.api().publish("hung", json!(2)).await;
    assert_eq!(c.next_pub("hung").await["data"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_is_stored_once_whichever_gateway_takes_it() {
    let nats = NatsServer::start();
    let gws = gateways(2, &nats.url()).await;
    let mut c = gws[0].connected().await;
    c.subscribe(json!({"channel": "once"})).await;
    let body = json!({"channel": "once", "data": {"order": 42}, "idempotency_key": "order-42"});
    let (_, first) = gws[0].api().call("publish", body.clone()).await;
    let (_, retry) = gws[1].api().call("publish", body).await;
    assert_eq!(first["result"], retry["result"], "{first} {retry}");
    let (_, h) = gws[1]
        .api()
        .call("history", json!({"channel": "once", "limit": -1}))
        .await;
    assert_eq!(
        h["result"]["publications"].as_array().unwrap().len(),
        1,
        "{h}"
    );
    gws[1].api().publish("once", json!("next")).await;
    assert_eq!(c.next_pub("once").await["data"], json!({"order": 42}));
    assert_eq!(
        c.next_pub("once").await["data"],
        json!("next"),
        "the retry was not delivered again"
    );
}

/// Everyone is disconnected at once and resubscribes with recovery while
/// publications keep coming: the channel's hub empties and fills again, and no
/// subscriber may read the stream before the channel's NATS subscription is back
/// (a publication in between would reach none of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_reconnect_while_publishing_loses_nothing() {
    const SUBSCRIBERS: usize = 60;
    const COUNT: usize = 400;
    let nats = NatsServer::start();
    let gws = std::sync::Arc::new(gateways(1, &nats.url()).await);
    let (open, gate) = tokio::sync::watch::channel(false);
    let mut collectors = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let gws = gws.clone();
        let gate = gate.clone();
        collectors.push(tokio::spawn(async move {
            collect_gated(&gws, 0, "big:mass", COUNT, Some(gate)).await
        }));
    }
    let node = gws[0].node.clone();
    eventually("all subscribed", PATIENCE, async || {
        node.hub.num_subscribers("big:mass") == SUBSCRIBERS
    })
    .await;
    let published = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publisher = {
        let node = node.clone();
        let published = published.clone();
        tokio::spawn(async move {
            for i in 0..COUNT {
                node.publish("big:mass", bytes::Bytes::from(i.to_string()), None, None)
                    .await
                    .unwrap();
                published.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // A steady stream rather than a burst, so that publications keep
                // arriving while everyone resubscribes.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    eventually("a third published", PATIENCE, async || {
        published.load(std::sync::atomic::Ordering::Relaxed) >= COUNT / 3
    })
    .await;
    let everyone = json!({"user": "", "disconnect": {"code": 3011, "reason": "reconnect"}});
    let (_, r) = gws[0].api().call("disconnect", everyone).await;
    assert_eq!(r, json!({"result": {}}));
    // Everyone is gone (the channel's interest is dropped), then everyone comes
    // back at once while publications keep coming.
    eventually("hub emptied", PATIENCE, async || {
        node.hub.num_subscribers("big:mass") == 0
    })
    .await;
    open.send_replace(true);
    publisher.await.unwrap();
    for c in collectors {
        assert_eq!(c.await.unwrap(), expected(COUNT));
    }
}
