//! The Centrifugo client protocol against an in-process gateway, JSON and protobuf.

mod common;

use common::*;
use serde_json::{json, Value};

async fn subscribe_publish_roundtrip(protobuf: bool) {
    let gw = Gateway::start(config()).await;
    let mut c = if protobuf {
        gw.client_protobuf().await
    } else {
        gw.client().await
    };
    let reply = c.connect(json!({})).await;
    assert!(!reply["connect"]["client"].as_str().unwrap().is_empty());
    assert_eq!(reply["connect"]["ping"], json!(25));
    assert_eq!(reply["connect"]["pong"], json!(true));

    let sub = c.subscribe(json!({"channel": "news"})).await;
    assert!(sub.get("error").is_none(), "{sub}");
    assert_eq!(sub["subscribe"]["recoverable"], json!(true));
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_owned();
    assert!(!epoch.is_empty());

    let published = gw.api().publish("news", json!({"text": "hello"})).await;
    assert_eq!(published["offset"], json!(1));
    assert_eq!(published["epoch"], json!(epoch));
    let p = c.next_pub("news").await;
    assert_eq!(p["offset"], json!(1));
    if protobuf {
        // protobuf carries data as bytes: the JSON view shows them raw again
        assert_eq!(p["data"], json!({"text": "hello"}));
    } else {
        assert_eq!(p["data"], json!({"text": "hello"}));
    }

    // Client publish carries the publisher's info.
    let r = c
        .call(json!({"publish": {"channel": "news", "data": {"n": 2}}}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let p = c.next_pub("news").await;
    assert_eq!(p["offset"], json!(2));
    assert_eq!(p["info"]["client"], reply["connect"]["client"]);
}

#[tokio::test]
async fn json_subscribe_and_receive() {
    subscribe_publish_roundtrip(false).await;
}

#[tokio::test]
async fn protobuf_subscribe_and_receive() {
    subscribe_publish_roundtrip(true).await;
}

#[tokio::test]
async fn json_and_protobuf_subscribers_get_the_same_publications() {
    let gw = Gateway::start(config()).await;
    let mut j = gw.connected().await;
    let mut p = gw.client_protobuf().await;
    p.connect(json!({})).await;
    j.subscribe(json!({"channel": "both"})).await;
    p.subscribe(json!({"channel": "both"})).await;
    for i in 0..5 {
        gw.api().publish("both", json!({"i": i})).await;
    }
    for i in 0..5 {
        assert_eq!(j.next_pub("both").await["data"], json!({"i": i}));
        assert_eq!(p.next_pub("both").await["data"], json!({"i": i}));
    }
}

#[tokio::test]
async fn several_commands_in_one_frame_get_replies() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.connected().await;
    let frame = [
        json!({"id": 10, "subscribe": {"channel": "a"}}),
        json!({"id": 11, "subscribe": {"channel": "b"}}),
        json!({"id": 12, "presence_stats": {"channel": "a"}}),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect::<Vec<_>>()
    .join("\n");
    c.send_raw(fastwebsockets::OpCode::Text, frame.into_bytes())
        .await;
    for id in 10..=12 {
        let r = c.wait_for(|v| v["id"] == json!(id)).await;
        assert!(r.get("error").is_none(), "{r}");
    }
}

#[tokio::test]
async fn recovery_returns_missed_publications() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.connected().await;
    let sub = c.subscribe(json!({"channel": "r"})).await;
    let epoch = sub["subscribe"]["epoch"].clone();
    gw.api().publish("r", json!(1)).await;
    let seen = c.next_pub("r").await["offset"].as_u64().unwrap();
    drop(c);
    for i in 2..=4 {
        gw.api().publish("r", json!(i)).await;
    }
    let mut c = gw.connected().await;
    let sub = c
        .subscribe(json!({"channel": "r", "recover": true, "offset": seen, "epoch": epoch}))
        .await;
    let s = &sub["subscribe"];
    assert_eq!(s["recovered"], json!(true), "{sub}");
    assert_eq!(s["was_recovering"], json!(true));
    let data: Vec<_> = s["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].clone())
        .collect();
    assert_eq!(data, vec![json!(2), json!(3), json!(4)]);
    assert_eq!(s["offset"], json!(4));
}

#[tokio::test]
async fn recovery_says_false_when_history_was_trimmed_or_epoch_differs() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.connected().await;
    let sub = c.subscribe(json!({"channel": "short:x"})).await;
    let epoch = sub["subscribe"]["epoch"].clone();
    for i in 0..10 {
        gw.api().publish("short:x", json!(i)).await;
    }
    drop(c);
    let mut c = gw.connected().await;
    let sub = c
        .subscribe(json!({"channel": "short:x", "recover": true, "offset": 0, "epoch": epoch}))
        .await;
    assert!(!flag(&sub["subscribe"]["recovered"]), "{sub}");
    assert_eq!(sub["subscribe"]["was_recovering"], json!(true));
    assert_eq!(sub["subscribe"].get("publications"), None);
    assert_eq!(sub["subscribe"]["offset"], json!(10));

    let mut c = gw.connected().await;
    let sub = c
        .subscribe(json!({"channel": "short:x", "recover": true, "offset": 9, "epoch": "another"}))
        .await;
    assert!(!flag(&sub["subscribe"]["recovered"]), "{sub}");
}

/// Publications that arrive while a recovery is under way are neither lost nor
/// duplicated: the subscriber ends with every offset exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_under_concurrent_publishing_loses_and_duplicates_nothing() {
    const TOTAL: u64 = 3000;
    let gw = Gateway::start(config()).await;
    let node = gw.node.clone();
    let mut c = gw.connected().await;
    let sub = c.subscribe(json!({"channel": "big:busy"})).await;
    let epoch = sub["subscribe"]["epoch"].clone();
    let publisher = tokio::spawn(async move {
        for i in 1..=TOTAL {
            node.publish("big:busy", bytes::Bytes::from(i.to_string()), None, None)
                .await
                .unwrap();
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let first = c.next_pub("big:busy").await["offset"].as_u64().unwrap();
    drop(c);
    let mut c = gw.connected().await;
    let sub = c
        .subscribe(json!({"channel": "big:busy", "recover": true, "offset": first, "epoch": epoch}))
        .await;
    assert_eq!(sub["subscribe"]["recovered"], json!(true), "{sub}");
    let mut offsets: Vec<u64> = sub["subscribe"]["publications"]
        .as_array()
        .map(|a| a.iter().map(|p| p["offset"].as_u64().unwrap()).collect())
        .unwrap_or_default();
    publisher.await.unwrap();
    while offsets.last().copied().unwrap_or(first) < TOTAL {
        offsets.push(c.next_pub("big:busy").await["offset"].as_u64().unwrap());
    }
    let expected: Vec<u64> = (first + 1..=TOTAL).collect();
    assert_eq!(offsets, expected);
}

#[tokio::test]
async fn presence_stats_history_and_join_leave() {
    let gw = Gateway::start(config()).await;
    let mut a = gw.client().await;
    a.connect(json!({"token": token(json!({"sub": "alice", "info": {"name": "Alice"}}))}))
        .await;
    a.subscribe(json!({"channel": "room", "join_leave": true}))
        .await;
    let mut b = gw.connected().await;
    b.subscribe(json!({"channel": "room"})).await;
    // alice asked for join/leave: she sees her own join, then the anonymous one's
    let own = a.wait_for(|v| v["push"].get("join").is_some()).await;
    assert_eq!(own["push"]["join"]["info"]["user"], json!("alice"));
    let other = a.wait_for(|v| v["push"].get("join").is_some()).await;
    assert_eq!(other["push"]["join"]["info"]["user"], json!(""));

    let stats = a.call(json!({"presence_stats": {"channel": "room"}})).await;
    assert_eq!(
        stats["presence_stats"],
        json!({"num_clients": 2, "num_users": 2})
    );
    let presence = a.call(json!({"presence": {"channel": "room"}})).await;
    let members = presence["presence"]["presence"].as_object().unwrap();
    assert_eq!(members.len(), 2);
    assert!(members
        .values()
        .any(|m| m["user"] == json!("alice") && m["conn_info"] == json!({"name": "Alice"})));

    gw.api().publish("room", json!("x")).await;
    gw.api().publish("room", json!("y")).await;
    let h = a
        .call(json!({"history": {"channel": "room", "limit": 10}}))
        .await;
    let pubs = h["history"]["publications"].as_array().unwrap();
    assert_eq!(
        pubs.iter().map(|p| p["data"].clone()).collect::<Vec<_>>(),
        vec![json!("x"), json!("y")]
    );
    let since = a
        .call(json!({"history": {"channel": "room", "limit": -1, "since": {"offset": 1, "epoch": h["history"]["epoch"]}}}))
        .await;
    assert_eq!(
        since["history"]["publications"].as_array().unwrap().len(),
        1
    );

    // b did not ask for join/leave: its next push is the publication, not a join
    gw.api().publish("room", json!("z")).await;
    let first_push = b.wait_for(|v| v.get("push").is_some()).await;
    assert!(first_push["push"].get("pub").is_some(), "{first_push}");
    b.call(json!({"unsubscribe": {"channel": "room"}})).await;
    let leave = a.wait_for(|v| v["push"].get("leave").is_some()).await;
    assert_eq!(leave["push"]["channel"], json!("room"));
    let stats = a.call(json!({"presence_stats": {"channel": "room"}})).await;
    assert_eq!(
        stats["presence_stats"],
        json!({"num_clients": 1, "num_users": 1})
    );
}

#[tokio::test]
async fn join_and_leave_per_user_come_with_the_first_and_last_connection() {
    let gw = Gateway::start(config()).await;
    let mut watcher = gw.client().await;
    watcher.connect(json!({})).await;
    watcher
        .subscribe(json!({"channel": "peruser:room", "join_leave": true}))
        .await;
    let bob = || async {
        let mut c = gw.client().await;
        c.connect(json!({"token": token(json!({"sub": "bob"}))}))
            .await;
        c.subscribe(json!({"channel": "peruser:room"})).await;
        c
    };
    let (mut first, mut second) = (bob().await, bob().await);
    first
        .call(json!({"unsubscribe": {"channel": "peruser:room"}}))
        .await;
    second
        .call(json!({"unsubscribe": {"channel": "peruser:room"}}))
        .await;
    // The sentinel's join comes after everything above: in one process events
    // are delivered in the order they happen.
    let mut sentinel = gw.client().await;
    sentinel
        .connect(json!({"token": token(json!({"sub": "sentinel"}))}))
        .await;
    sentinel.subscribe(json!({"channel": "peruser:room"})).await;

    let mut seen = Vec::new();
    loop {
        let v = watcher.wait_for(|v| v.get("push").is_some()).await;
        let kind = if v["push"].get("join").is_some() {
            "join"
        } else {
            "leave"
        };
        let user = v["push"][kind]["info"]["user"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let done = user == "sentinel";
        seen.push(format!("{kind} {user}"));
        if done {
            break;
        }
    }
    assert_eq!(seen, ["join ", "join bob", "leave bob", "join sentinel"]);
}

#[tokio::test]
async fn permissions_follow_namespace_options() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.connected().await;
    // readonly: subscribe allowed, publish not
    c.subscribe(json!({"channel": "readonly:a"})).await;
    let r = c
        .call(json!({"publish": {"channel": "readonly:a", "data": 1}}))
        .await;
    assert_eq!(r["error"]["code"], json!(103));
    // presence and history need a subscription
    let r = c.call(json!({"presence": {"channel": "other"}})).await;
    assert_eq!(r["error"]["code"], json!(103));
    let r = c
        .call(json!({"history": {"channel": "other", "limit": 1}}))
        .await;
    assert_eq!(r["error"]["code"], json!(103));
    // unknown namespace
    let r = c.subscribe(json!({"channel": "nope:a"})).await;
    assert_eq!(r["error"]["code"], json!(102));
    // already subscribed
    let r = c.subscribe(json!({"channel": "readonly:a"})).await;
    assert_eq!(r["error"]["code"], json!(105));
    // rpc is not configured
    let r = c.call(json!({"rpc": {"method": "x", "data": {}}})).await;
    assert_eq!(r["error"]["code"], json!(108));
}

#[tokio::test]
async fn user_limited_and_token_protected_channels() {
    let gw = Gateway::start(config()).await;
    let mut anon = gw.connected().await;
    let r = anon.subscribe(json!({"channel": "dm#42"})).await;
    assert_eq!(r["error"]["code"], json!(103));
    let mut u42 = gw.client().await;
    u42.connect(json!({"token": token(json!({"sub": "42"}))}))
        .await;
    let r = u42.subscribe(json!({"channel": "dm#42"})).await;
    assert!(r.get("error").is_none(), "{r}");

    let r = u42.subscribe(json!({"channel": "locked:x"})).await;
    assert_eq!(r["error"]["code"], json!(103));
    let sub_token = token(json!({"sub": "42", "channel": "locked:x", "info": {"role": "r"}}));
    let r = u42
        .subscribe(json!({"channel": "locked:x", "token": sub_token}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    // another user's subscription token does not work
    let stolen = token(json!({"sub": "43", "channel": "locked:y"}));
    let r = u42
        .subscribe(json!({"channel": "locked:y", "token": stolen}))
        .await;
    assert_eq!(r["error"]["code"], json!(103));
    let expired = token(json!({"sub": "42", "channel": "locked:z", "exp": now_secs() - 10}));
    let r = u42
        .subscribe(json!({"channel": "locked:z", "token": expired}))
        .await;
    assert_eq!(r["error"]["code"], json!(109));
}

#[tokio::test]
async fn tokens_are_checked_on_connect() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.client().await;
    let bad = token_with("wrong-secret", json!({"sub": "1"}));
    c.send(json!({"connect": {"token": bad}})).await;
    assert_eq!(c.closed().await.0, 3500);

    let mut c = gw.client().await;
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.";
    c.send(json!({"connect": {"token": none}})).await;
    assert_eq!(c.closed().await.0, 3500);

    let mut c = gw.client().await;
    let expired = token(json!({"sub": "1", "exp": now_secs() - 5}));
    let r = c.call(json!({"connect": {"token": expired}})).await;
    assert_eq!(r["error"]["code"], json!(109));

    let mut c = gw.client().await;
    let exp = now_secs() + 3600;
    let r = c
        .connect(json!({"token": token(json!({"sub": "1", "exp": exp}))}))
        .await;
    assert_eq!(r["connect"]["expires"], json!(true));
    assert!(r["connect"]["ttl"].as_u64().unwrap() > 3500);
    let later = token(json!({"sub": "1", "exp": exp + 100}));
    let r = c.call(json!({"refresh": {"token": later}})).await;
    assert_eq!(r["refresh"]["expires"], json!(true));
}

#[tokio::test]
async fn tokens_without_sub_are_the_anonymous_user() {
    // Tokens required: the anonymous user comes in through its token alone.
    let mut cfg = config();
    cfg.allow_anonymous_connect_without_token = false;
    let gw = Gateway::start(cfg).await;
    let mut guest = gw.client().await;
    guest
        .connect(json!({"token": token(json!({"iat": now_secs()}))}))
        .await;
    let guest_token = token(json!({"iat": now_secs(), "channel": "locked:guests"}));
    let r = guest
        .subscribe(json!({"channel": "locked:guests", "token": guest_token.clone()}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let (_, p) = gw
        .api()
        .call("presence", json!({"channel": "locked:guests"}))
        .await;
    let members: Vec<&Value> = p["result"]["presence"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["user"], json!(""));
    // A token for the anonymous user is not one for user 42.
    let mut u42 = gw.client().await;
    u42.connect(json!({"token": token(json!({"sub": "42"}))}))
        .await;
    let r = u42
        .subscribe(json!({"channel": "locked:guests", "token": guest_token}))
        .await;
    assert_eq!(r["error"]["code"], json!(103));
}

#[tokio::test]
async fn anonymous_connect_is_refused_unless_allowed() {
    let mut cfg = config();
    cfg.allow_anonymous_connect_without_token = false;
    let gw = Gateway::start(cfg.clone()).await;
    let mut c = gw.client().await;
    let r = c.call(json!({"connect": {}})).await;
    assert_eq!(r["error"]["code"], json!(101));
    let mut c = gw.client().await;
    c.connect(json!({"token": token(json!({"sub": "1"}))}))
        .await;
    // insecure lets anonymous connections in too.
    cfg.insecure = true;
    let gw = Gateway::start(cfg).await;
    gw.connected().await;
}

/// Centrifugo's two options: `allow_anonymous_connect_without_token` lets an
/// anonymous client in and nothing more; `insecure` also lifts every channel
/// permission a client needs (a subscription token given is still checked).
#[tokio::test]
async fn insecure_lifts_channel_permissions_and_anonymous_connect_does_not() {
    let refused = |r: &Value| r["error"]["code"] == json!(103);
    for insecure in [false, true] {
        let mut cfg = config();
        cfg.insecure = insecure;
        let gw = Gateway::start(cfg).await;
        let mut c = gw.connected().await;
        let attempts = [
            // subscribe without the namespace's permission, or to another user's channel
            json!({"subscribe": {"channel": "locked:a"}}),
            json!({"subscribe": {"channel": "dm#42"}}),
            // publish without the namespace's permission
            json!({"publish": {"channel": "readonly:a", "data": 1}}),
            // presence and history of a channel the client is not subscribed to
            json!({"presence": {"channel": "other"}}),
            json!({"presence_stats": {"channel": "other"}}),
            json!({"history": {"channel": "other", "limit": 1}}),
        ];
        for attempt in attempts {
            let r = c.call(attempt.clone()).await;
            assert_eq!(
                refused(&r),
                !insecure,
                "insecure = {insecure}: {attempt} → {r}"
            );
            assert!(r.get("error").is_none() || !insecure, "{attempt} → {r}");
        }
        let forged = token_with("wrong-secret", json!({"channel": "locked:b"}));
        let r = c
            .subscribe(json!({"channel": "locked:b", "token": forged}))
            .await;
        assert!(
            refused(&r),
            "a bad subscription token is refused either way: {r}"
        );
    }
}

#[tokio::test]
async fn server_side_subscriptions_from_the_token() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.client().await;
    let r = c
        .connect(json!({"token": token(json!({"sub": "7", "channels": ["personal#7"]}))}))
        .await;
    assert!(r["connect"]["subs"].get("personal#7").is_some(), "{r}");
    gw.api().publish("personal#7", json!({"hi": 7})).await;
    assert_eq!(c.next_pub("personal#7").await["data"], json!({"hi": 7}));
}

#[tokio::test]
async fn protobuf_is_negotiated_by_the_sdk_subprotocol() {
    let gw = Gateway::start(config()).await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (ws, chosen) = ws_handshake_with(gw.addr, stream, "", Some("centrifuge-protobuf"))
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("centrifuge-protobuf"));
    let mut c = Client::from_ws(ws, true);
    let r = c.connect(json!({})).await;
    assert!(r["connect"]["client"].is_string());

    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (_, chosen) = ws_handshake_with(gw.addr, stream, "", None).await.unwrap();
    assert_eq!(chosen, None, "no subprotocol offered, none named");
}

#[tokio::test]
async fn the_user_boundary_holds_for_publish_presence_and_history() {
    let mut cfg = config();
    let open = switchboard_core::namespace::NamespaceOptions {
        allow_presence_for_client: true,
        allow_history_for_client: true,
        ..open_namespace()
    };
    cfg.namespaces = switchboard_core::namespace::Namespaces::new(open, vec![]).unwrap();
    let gw = Gateway::start(cfg).await;
    let mut u43 = gw.client().await;
    u43.connect(json!({"token": token(json!({"sub": "43"}))}))
        .await;
    for command in [
        json!({"publish": {"channel": "dm#42", "data": {"x": 1}}}),
        json!({"presence": {"channel": "dm#42"}}),
        json!({"presence_stats": {"channel": "dm#42"}}),
        json!({"history": {"channel": "dm#42"}}),
    ] {
        let r = u43.call(command.clone()).await;
        assert_eq!(r["error"]["code"], json!(103), "{command} → {r}");
    }
    let mut u42 = gw.client().await;
    u42.connect(json!({"token": token(json!({"sub": "42"}))}))
        .await;
    let r = u42
        .call(json!({"publish": {"channel": "dm#42", "data": {"x": 1}}}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
}

#[tokio::test]
async fn tokens_for_something_else_or_not_valid_yet_are_refused() {
    let gw = Gateway::start(config()).await;
    for claims in [
        json!({"sub": "42", "channel": "priv:x"}),
        json!({"sub": "42", "nbf": now_secs() + 3600}),
        json!({"sub": "42", "iat": now_secs() + 3600}),
    ] {
        let mut c = gw.client().await;
        c.send(json!({"connect": {"token": token(claims.clone())}}))
            .await;
        assert_eq!(c.closed().await.0, 3500, "{claims}");
    }
}

#[tokio::test]
async fn token_times_near_u64_max_are_saturated_not_a_panic() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.client().await;
    let r = c
        .connect(json!({"token": token(json!({"sub": "42", "exp": u64::MAX}))}))
        .await;
    assert_eq!(r["connect"]["expires"], json!(true));
    assert_eq!(r["connect"]["ttl"], json!(u32::MAX));
    let sub_token = token(json!({"sub": "42", "channel": "locked:far", "exp": u64::MAX}));
    let r = c
        .subscribe(json!({"channel": "locked:far", "token": sub_token}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let later = token(json!({"sub": "42", "exp": u64::MAX - 1}));
    let r = c.call(json!({"refresh": {"token": later}})).await;
    assert_eq!(r["refresh"]["expires"], json!(true), "{r}");
    let r = c.call(json!({"ping": {}})).await;
    assert!(r.get("error").is_none(), "the connection lives on: {r}");
    // Through the server API too.
    let (_, r) = gw
        .api()
        .call("refresh", json!({"user": "42", "expire_at": u64::MAX}))
        .await;
    assert_eq!(r, json!({"result": {}}));
    let r = c.call(json!({"ping": {}})).await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(gw.node.registry.counts().0, 1);
}
