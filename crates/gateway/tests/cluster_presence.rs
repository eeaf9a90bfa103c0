//! Cluster mode presence: several gateways over a real nats-server (JetStream),
//! presence in its buckets directly or through presence service replicas.

mod common;

use common::*;
use serde_json::{json, Value};
use switchboard_broker_nats::NatsConfig;
use switchboard_test_support::{eventually, eventually_ok, eventually_some, NatsServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_by_every_gateway() {
    let nats = NatsServer::start();
    let gws = gateways(2, &nats.url()).await;
    let mut a = gws[0].client().await;
    a.connect(json!({"token": token(json!({"sub": "ann"}))}))
        .await;
    a.subscribe(json!({"channel": "lobby"})).await;
    let mut b = gws[1].client().await;
    b.connect(json!({"token": token(json!({"sub": "bob"}))}))
        .await;
    b.subscribe(json!({"channel": "lobby"})).await;
    let mut b2 = gws[1].client().await;
    b2.connect(json!({"token": token(json!({"sub": "bob"}))}))
        .await;
    b2.subscribe(json!({"channel": "lobby"})).await;

    for gw in &gws {
        let (_, stats) = gw
            .api()
            .call("presence_stats", json!({"channel": "lobby"}))
            .await;
        assert_eq!(
            stats["result"],
            json!({"num_clients": 3, "num_users": 2}),
            "{stats}"
        );
    }
    let r = a.call(json!({"presence": {"channel": "lobby"}})).await;
    let users: std::collections::BTreeSet<String> = r["presence"]["presence"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        users,
        ["ann", "bob"].iter().map(|s| s.to_string()).collect()
    );

    b2.call(json!({"unsubscribe": {"channel": "lobby"}})).await;
    drop(b);
    eventually_ok("members left", PATIENCE, async || {
        let (_, stats) = gws[0]
            .api()
            .call("presence_stats", json!({"channel": "lobby"}))
            .await;
        if stats["result"] == json!({"num_clients": 1, "num_users": 1}) {
            Ok(())
        } else {
            Err(stats)
        }
    })
    .await;
}

/// An in-process cluster gateway over `nats` with a presence TTL of 3 s. Every
/// gateway of a cluster has the same presence TTL: the last to start sets the
/// bucket's.
async fn gateway_with_ttl_3(nats: &NatsServer) -> Gateway {
    let mut cfg = config();
    cfg.nats = Some(switchboard_gateway::config::NatsSettings {
        presence_ttl: std::time::Duration::from_secs(3),
        presence_urls: Vec::new(),
        ..switchboard_gateway::config::NatsSettings::new(NatsConfig {
            urls: vec![nats.url()],
            replicas: 1,
            ..NatsConfig::default()
        })
    });
    Gateway::start_tls(cfg, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_gateway_killed_with_sigkill_expire() {
    let nats = NatsServer::start();
    let mut doomed = GatewayProcess::cluster(&nats.url(), &["--presence-ttl", "3"]);
    let survivor = gateway_with_ttl_3(&nats).await;
    let mut c = Client::open(doomed.1, false).await;
    c.connect(json!({})).await;
    let r = c.subscribe(json!({"channel": "ghosts"})).await;
    assert!(r.get("error").is_none(), "{r}");
    let stats = || async {
        let (_, s) = survivor
            .api()
            .call("presence_stats", json!({"channel": "ghosts"}))
            .await;
        s["result"]["num_clients"].as_u64().unwrap_or(0)
    };
    assert_eq!(
        stats().await,
        1,
        "the member is visible from the other gateway"
    );
    doomed.kill9();
    let patience = std::time::Duration::from_secs(30);
    eventually("a dead gateway's member expired", patience, async || {
        stats().await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_frozen_beyond_the_ttl_has_its_member_leave_once_then_join_again() {
    let nats = NatsServer::start();
    let frozen = GatewayProcess::cluster(&nats.url(), &["--presence-ttl", "3"]);
    let survivor = gateway_with_ttl_3(&nats).await;
    let mut member = Client::open(frozen.1, false).await;
    let reply = member.connect(json!({})).await;
    let id = reply["connect"]["client"].as_str().unwrap().to_owned();
    assert!(member
        .subscribe(json!({"channel": "thaw"}))
        .await
        .get("error")
        .is_none());
    let mut observer = survivor.client().await;
    observer.connect(json!({})).await;
    assert!(observer
        .subscribe(json!({"channel": "thaw", "join_leave": true}))
        .await
        .get("error")
        .is_none());
    let of_member = |kind: &'static str| {
        let id = id.clone();
        move |v: &Value| v["push"][kind]["info"]["client"] == json!(id)
    };

    // Frozen for longer than the TTL: the sweep expires its member, with one leave.
    frozen.signal("STOP");
    observer.wait_for(of_member("leave")).await;
    frozen.signal("CONT");
    // Its first round after is a lapsed one: the member joins again, announced.
    observer.wait_for(of_member("join")).await;
    eventually_ok("both members counted", PATIENCE, async || {
        let (_, stats) = survivor
            .api()
            .call("presence_stats", json!({"channel": "thaw"}))
            .await;
        if stats["result"] == json!({"num_clients": 2, "num_users": 1}) {
            Ok(())
        } else {
            Err(stats)
        }
    })
    .await;
    // The member's connection lived through the freeze and still gets publications.
    survivor
        .api()
        .publish("thaw", json!({"after": "thaw"}))
        .await;
    assert_eq!(
        member.next_pub("thaw").await["data"],
        json!({"after": "thaw"})
    );
    // Nothing between the join and that publication says the member left again.
    loop {
        let v = observer.next().await;
        assert!(!of_member("leave")(&v), "a second leave: {v}");
        if v["push"].get("pub").is_some() {
            break;
        }
    }
}

async fn gateway_with_presence_service(nats: &str, replicas: &[&PresenceReplica]) -> Gateway {
    let mut cfg = config();
    cfg.nats = Some(switchboard_gateway::config::NatsSettings {
        presence_ttl: std::time::Duration::from_secs(30),
        presence_urls: replicas.iter().map(|r| r.url.clone()).collect(),
        ..switchboard_gateway::config::NatsSettings::new(NatsConfig {
            urls: vec![nats.to_owned()],
            replicas: 1,
            ..NatsConfig::default()
        })
    });
    Gateway::start_tls(cfg, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_through_two_service_replicas_and_two_gateways() {
    let nats = NatsServer::start();
    let r1 = PresenceReplica::start(&nats.url()).await;
    let r2 = PresenceReplica::start(&nats.url()).await;
    let a = gateway_with_presence_service(&nats.url(), &[&r1, &r2]).await;
    let b = gateway_with_presence_service(&nats.url(), &[&r2, &r1]).await;
    let mut clients = Vec::new();
    for (i, gw) in [&a, &b, &b].iter().enumerate() {
        let mut c = gw.client().await;
        let user = if i == 0 { "ann" } else { "bob" };
        c.connect(json!({"token": token(json!({"sub": user}))}))
            .await;
        let r = c.subscribe(json!({"channel": "hall"})).await;
        assert!(r.get("error").is_none(), "{r}");
        clients.push(c);
    }
    for gw in [&a, &b] {
        let (_, stats) = gw
            .api()
            .call("presence_stats", json!({"channel": "hall"}))
            .await;
        assert_eq!(
            stats["result"],
            json!({"num_clients": 3, "num_users": 2}),
            "{stats}"
        );
        let (_, p) = gw.api().call("presence", json!({"channel": "hall"})).await;
        assert_eq!(p["result"]["presence"].as_object().unwrap().len(), 3, "{p}");
    }
    clients.pop();
    eventually_ok("the leave showed", PATIENCE, async || {
        let (_, stats) = a
            .api()
            .call("presence_stats", json!({"channel": "hall"}))
            .await;
        if stats["result"] == json!({"num_clients": 2, "num_users": 2}) {
            Ok(())
        } else {
            Err(stats)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_replica_dying_during_joins_costs_no_client_error() {
    const CLIENTS: usize = 30;
    let nats = NatsServer::start();
    let r1 = PresenceReplica::start(&nats.url()).await;
    let r2 = PresenceReplica::start(&nats.url()).await;
    let gw = gateway_with_presence_service(&nats.url(), &[&r1, &r2]).await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        if i == CLIENTS / 3 {
            r1.kill();
        }
        let mut c = gw.client().await;
        c.connect(json!({"token": token(json!({"sub": format!("u{i}")}))}))
            .await;
        let r = c.subscribe(json!({"channel": "resilient"})).await;
        assert!(r.get("error").is_none(), "subscribe {i}: {r}");
        let p = c
            .call(json!({"presence_stats": {"channel": "resilient"}}))
            .await;
        assert!(p.get("error").is_none(), "presence_stats {i}: {p}");
        clients.push(c);
    }
    let (_, stats) = gw
        .api()
        .call("presence_stats", json!({"channel": "resilient"}))
        .await;
    assert_eq!(
        stats["result"],
        json!({"num_clients": CLIENTS, "num_users": CLIENTS}),
        "{stats}"
    );
}

/// Reads join (`"join"`) or leave (`"leave"`) pushes until `done` says so,
/// counting them per user.
async fn count_presence_pushes(
    watcher: &mut Client,
    kind: &str,
    counts: &mut std::collections::BTreeMap<String, usize>,
    done: impl Fn(&std::collections::BTreeMap<String, usize>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done(counts) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind} pushes so far: {counts:?}"
        );
        let Ok(v) =
            tokio::time::timeout(std::time::Duration::from_millis(200), watcher.next()).await
        else {
            continue;
        };
        if let Some(user) = v["push"][kind]["info"]["user"].as_str() {
            *counts.entry(user.to_owned()).or_default() += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_with_several_connections_join_and_leave_once_each() {
    const USERS: usize = 12;
    const CONNECTIONS: usize = 3;
    let nats = NatsServer::start();
    let r1 = PresenceReplica::start(&nats.url()).await;
    let r2 = PresenceReplica::start(&nats.url()).await;
    let gws = [
        gateway_with_presence_service(&nats.url(), &[&r1, &r2]).await,
        gateway_with_presence_service(&nats.url(), &[&r2, &r1]).await,
    ];
    let channel = "peruser:room";
    let mut watcher = gws[0].client().await;
    watcher
        .connect(json!({"token": token(json!({"sub": "watcher"}))}))
        .await;
    let r = watcher
        .subscribe(json!({"channel": channel, "join_leave": true}))
        .await;
    assert!(r.get("error").is_none(), "{r}");

    // Every user's connections spread over both gateways, subscribing at once.
    let mut clients = Vec::new();
    for u in 0..USERS {
        for c in 0..CONNECTIONS {
            let mut client = gws[(u + c) % 2].client().await;
            client
                .connect(json!({"token": token(json!({"sub": format!("user-{u}")}))}))
                .await;
            clients.push(client);
        }
    }
    let subscribed = clients.into_iter().map(|mut client| async move {
        let r = client.subscribe(json!({"channel": channel})).await;
        assert!(r.get("error").is_none(), "{r}");
        // Answered after the join went out: the session handles one command at a time.
        client
            .call(json!({"presence_stats": {"channel": channel}}))
            .await;
        client
    });
    let clients = futures::future::join_all(subscribed).await;
    // A fence per gateway: joined after every other join left that gateway, so
    // once the watcher has both, it has every join.
    let mut fences = Vec::new();
    for (i, gw) in gws.iter().enumerate() {
        let mut fence = gw.client().await;
        fence
            .connect(json!({"token": token(json!({"sub": format!("fence-{i}")}))}))
            .await;
        fence.subscribe(json!({"channel": channel})).await;
        fences.push(fence);
    }
    let mut joins = std::collections::BTreeMap::new();
    count_presence_pushes(&mut watcher, "join", &mut joins, |c| {
        c.contains_key("fence-0") && c.contains_key("fence-1")
    })
    .await;
    let users: Vec<String> = (0..USERS).map(|u| format!("user-{u}")).collect();
    for user in &users {
        assert_eq!(joins.get(user), Some(&1), "joins: {joins:?}");
    }
    let (_, stats) = gws[1]
        .api()
        .call("presence_stats", json!({"channel": channel}))
        .await;
    assert_eq!(
        stats["result"],
        json!({"num_clients": USERS * CONNECTIONS + 3, "num_users": USERS + 3}),
        "{stats}"
    );

    // Every connection goes: each user leaves once, with its last connection.
    drop(clients);
    let mut leaves = std::collections::BTreeMap::new();
    count_presence_pushes(&mut watcher, "leave", &mut leaves, |c| c.len() >= USERS).await;
    for fence in &mut fences {
        fence
            .call(json!({"unsubscribe": {"channel": channel}}))
            .await;
    }
    count_presence_pushes(&mut watcher, "leave", &mut leaves, |c| {
        c.contains_key("fence-0") && c.contains_key("fence-1")
    })
    .await;
    for user in &users {
        assert_eq!(leaves.get(user), Some(&1), "leaves: {leaves:?}");
    }
    let (_, stats) = gws[0]
        .api()
        .call("presence_stats", json!({"channel": channel}))
        .await;
    assert_eq!(
        stats["result"],
        json!({"num_clients": 1, "num_users": 1}),
        "{stats}"
    );
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A gateway killed with SIGKILL says no goodbye: its members are announced as
/// leaves to subscribers on the other gateways, each once, although two presence
/// replicas sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateways_members_leave_once_through_the_presence_service() {
    let ttl = std::time::Duration::from_secs(2);
    let nats = NatsServer::start();
    let r1 = PresenceReplica::start_with_ttl(&nats.url(), ttl).await;
    let r2 = PresenceReplica::start_with_ttl(&nats.url(), ttl).await;
    let urls = format!("{},{}", r1.url, r2.url);
    let mut survivor_config = config();
    survivor_config.nats = Some(switchboard_gateway::config::NatsSettings {
        presence_ttl: ttl,
        presence_urls: vec![r1.url.clone(), r2.url.clone()],
        ..switchboard_gateway::config::NatsSettings::new(NatsConfig {
            urls: vec![nats.url()],
            replicas: 1,
            ..NatsConfig::default()
        })
    });
    let survivor = Gateway::start_tls(survivor_config, None).await;
    let mut watcher = survivor.client().await;
    watcher
        .connect(json!({"token": token(json!({"sub": "watcher"}))}))
        .await;
    watcher
        .subscribe(json!({"channel": "wake", "join_leave": true}))
        .await;

    let mut doomed = GatewayProcess::cluster(
        &nats.url(),
        &["--presence-ttl", "2", "--presence-url", &urls],
    );
    let mut victim = Client::open(doomed.1, false).await;
    victim.connect(json!({})).await;
    let r = victim.subscribe(json!({"channel": "wake"})).await;
    assert!(r.get("error").is_none(), "{r}");
    let joined = watcher
        .wait_for(|v| v["push"]["join"]["info"]["user"] == json!(""))
        .await;
    let victim_client = joined["push"]["join"]["info"]["client"].clone();

    doomed.kill9();
    let leave = watcher.wait_for(|v| v["push"].get("leave").is_some()).await;
    assert_eq!(leave["push"]["leave"]["info"]["client"], victim_client);
    let (_, stats) = survivor
        .api()
        .call("presence_stats", json!({"channel": "wake"}))
        .await;
    assert_eq!(
        stats["result"],
        json!({"num_clients": 1, "num_users": 1}),
        "{stats}"
    );

    // Two more sweeps after the leave, then no second leave may have arrived. (Two
    // sweepers may both announce it, a lease handing over: the gateway delivers one
    // per departure id. The counters are the test process's, shared with the other
    // tests, so only the sweeps are counted, and only upwards.)
    let sweeps = |m: &str| counter(m, "switchboard_presence_sweeps_total");
    let (_, before) = get(survivor.addr, "/metrics").await;
    eventually_some("two more sweeps", PATIENCE, async || {
        let (_, now) = get(survivor.addr, "/metrics").await;
        (sweeps(&now) >= sweeps(&before) + 2.0).then_some(now)
    })
    .await;
    let r = watcher.call(json!({"ping": {}})).await;
    assert!(r.get("error").is_none());
    while let Some(push) = watcher.try_next_push() {
        assert!(
            push["push"].get("leave").is_none(),
            "a second leave arrived: {push}"
        );
    }
}
