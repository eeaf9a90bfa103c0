//! The Pusher front end on one gateway, over raw WebSockets and the signed HTTP
//! API: the opening and its error codes, channel auth, presence, cache channels,
//! client events, signin, the API's methods and errors, and the separation of
//! apps from each other and from the Centrifugo front end.

mod common;

use std::time::Duration;

use common::pusher::{config, data_of, PusherApi, PusherClient, Read, APP_KEY, APP_SECRET};
use common::Gateway;
use serde_json::{json, Value};
use switchboard_gateway::config::PusherApp;
use switchboard_protocol::pusher::auth;

fn is_socket_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[tokio::test]
async fn connection_established_gives_a_socket_id_and_an_activity_timeout() {
    let gw = Gateway::start(config()).await;
    let mut c = PusherClient::open(gw.addr, &format!("/app/{APP_KEY}?protocol=7")).await;
    let established = c.next().await;
    assert_eq!(established["event"], "pusher:connection_established");
    // The data is a JSON string, as pusher-js expects.
    let text = established["data"].as_str().expect("data is a string");
    let data: Value = serde_json::from_str(text).unwrap();
    let socket_id = data["socket_id"].as_str().unwrap();
    assert!(is_socket_id(socket_id), "{socket_id}");
    assert!(data["activity_timeout"].as_u64().unwrap() > 0);
    let other = PusherClient::connect(gw.addr, APP_KEY).await;
    assert_ne!(other.socket_id, socket_id);
}

/// Opens `path`, expects `pusher:error` with `code` and then a close with it.
async fn refused(gw: &Gateway, path: &str, code: u16) {
    let mut c = PusherClient::open(gw.addr, path).await;
    let error = c.next().await;
    assert_eq!(error["event"], "pusher:error", "{path}: {error}");
    assert_eq!(error["data"]["code"], code, "{path}: {error}");
    assert_eq!(c.closed().await, code, "{path}");
}

#[tokio::test]
async fn a_refused_opening_says_why_with_the_pusher_code() {
    let mut cfg = config();
    let mut disabled = PusherApp::new("off-id", "off-key", "off-secret");
    disabled.enabled = false;
    let mut small = PusherApp::new("small-id", "small-key", "small-secret");
    small.max_connections = Some(1);
    let mut guarded = PusherApp::new("guard-id", "guard-key", "guard-secret");
    guarded.allowed_origins = vec!["https://app.example".into()];
    cfg.pusher_apps.extend([disabled, small, guarded]);
    cfg.namespaces = common::pusher::namespaces_with(&cfg.pusher_apps);
    let gw = Gateway::start(cfg).await;

    refused(&gw, "/app/no-such-key?protocol=7", 4001).await;
    refused(&gw, "/app/off-key?protocol=7", 4003).await;
    refused(&gw, "/app/app-key", 4008).await;
    refused(&gw, "/app/app-key?protocol=seven", 4006).await;
    refused(&gw, "/app/app-key?protocol=3", 4007).await;
    // Without the allowed Origin header.
    refused(&gw, "/app/guard-key?protocol=7", 4009).await;
    // Over the app's quota: the second connection of an app that takes one.
    let _first = PusherClient::connect(gw.addr, "small-key").await;
    refused(&gw, "/app/small-key?protocol=7", 4004).await;
}

#[tokio::test]
async fn ping_is_answered_and_a_silent_client_is_closed_with_4201() {
    let mut cfg = config();
    cfg.ping_interval = Duration::from_secs(1);
    cfg.pong_timeout = Duration::from_secs(1);
    let gw = Gateway::start(cfg).await;
    let mut c = PusherClient::connect(gw.addr, APP_KEY).await;
    c.send(json!({"event": "pusher:ping", "data": {}})).await;
    c.event("pusher:pong", None).await;
    // The server pings; this client never answers.
    c.event("pusher:ping", None).await;
    assert_eq!(c.closed().await, 4201);
}

#[tokio::test]
async fn a_client_answering_pings_stays() {
    let mut cfg = config();
    cfg.ping_interval = Duration::from_secs(1);
    cfg.pong_timeout = Duration::from_secs(1);
    let gw = Gateway::start(cfg).await;
    let mut c = PusherClient::connect(gw.addr, APP_KEY).await;
    for _ in 0..3 {
        c.event("pusher:ping", None).await;
        c.send(json!({"event": "pusher:pong", "data": {}})).await;
    }
    assert_eq!(
        c.subscribe("still-here").await["event"],
        "pusher_internal:subscription_succeeded"
    );
}

#[tokio::test]
async fn private_channels_need_a_valid_signature() {
    let gw = Gateway::start(config()).await;
    let mut c = PusherClient::connect(gw.addr, APP_KEY).await;
    let ok = c.subscribe_private("private-orders").await;
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );

    // Signed by another secret, for another socket, or not at all.
    let wrong_secret =
        auth::channel_auth(APP_KEY, "not-the-secret", &c.socket_id, "private-a", None);
    let other_socket = auth::channel_auth(APP_KEY, APP_SECRET, "1.1", "private-b", None);
    for (channel, signature) in [
        ("private-a", json!(wrong_secret)),
        ("private-b", json!(other_socket)),
        ("private-c", Value::Null),
        ("private-encrypted-d", Value::Null),
        ("presence-e", Value::Null),
    ] {
        c.send(
            json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": signature}}),
        )
        .await;
        let answer = c.answer(channel).await;
        assert_eq!(
            answer["event"], "pusher:subscription_error",
            "{channel}: {answer}"
        );
        assert_eq!(answer["data"]["type"], "AuthError");
        assert_eq!(answer["data"]["status"], 401);
    }
    // The connection is still usable.
    assert_eq!(
        c.subscribe("public").await["event"],
        "pusher_internal:subscription_succeeded"
    );
}

#[tokio::test]
async fn events_reach_subscribers_and_skip_the_excluded_socket() {
    let gw = Gateway::start(config()).await;
    let api = PusherApi::new(gw.addr);
    let mut a = PusherClient::connect(gw.addr, APP_KEY).await;
    let mut b = PusherClient::connect(gw.addr, APP_KEY).await;
    a.subscribe("orders").await;
    b.subscribe("orders").await;
    api.trigger(&["orders"], "order.shipped", r#"{"id":1}"#)
        .await;
    for c in [&mut a, &mut b] {
        let e = c.event("order.shipped", Some("orders")).await;
        assert_eq!(e["data"], r#"{"id":1}"#);
    }
    let (status, body) = api
        .request(
            "POST",
            "/events",
            &[],
            Some(json!({"name": "n", "channel": "orders", "data": "2", "socket_id": a.socket_id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(b.event("n", Some("orders")).await["data"], "2");
    assert!(
        a.nothing_pending().await.is_empty(),
        "the excluded socket got the event"
    );
}

#[tokio::test]
async fn presence_lists_members_and_announces_users_to_the_others() {
    let gw = Gateway::start(config()).await;
    let room = "presence-room";
    let mut ann = PusherClient::connect(gw.addr, APP_KEY).await;
    let joined = ann.join(room, "1", json!({"name": "Ann"})).await;
    assert_eq!(
        joined["event"], "pusher_internal:subscription_succeeded",
        "{joined}"
    );
    let members = data_of(&joined);
    assert_eq!(members["presence"]["count"], 1);
    assert_eq!(members["presence"]["ids"], json!(["1"]));
    assert_eq!(members["presence"]["hash"]["1"]["name"], "Ann");

    let mut bob = PusherClient::connect(gw.addr, APP_KEY).await;
    let joined = bob.join(room, "2", json!({"name": "Bob"})).await;
    assert_eq!(data_of(&joined)["presence"]["count"], 2);
    let added = ann.event("pusher_internal:member_added", Some(room)).await;
    assert_eq!(data_of(&added)["user_id"], "2");
    assert_eq!(data_of(&added)["user_info"]["name"], "Bob");
    // Never one's own join.
    assert!(bob.nothing_pending().await.is_empty());

    // Bob's second socket is the same member: no member_added, and its leave no
    // member_removed while his first socket stays.
    let mut bob2 = PusherClient::connect(gw.addr, APP_KEY).await;
    let joined = bob2.join(room, "2", json!({"name": "Bob"})).await;
    assert_eq!(data_of(&joined)["presence"]["count"], 2);
    drop(bob2);
    assert!(ann.nothing_pending().await.is_empty());
    // Polled: the dropped socket's leave runs on the gateway's own time.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while gw.node.registry.counts().0 > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second socket did not go"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ann.nothing_pending().await.is_empty(),
        "a member_removed while Bob is still there"
    );

    drop(bob);
    let removed = ann
        .event("pusher_internal:member_removed", Some(room))
        .await;
    assert_eq!(data_of(&removed)["user_id"], "2");
}

#[tokio::test]
async fn presence_channels_hold_at_most_max_presence_members() {
    let mut cfg = config();
    cfg.pusher_apps[0].max_presence_members = 2;
    cfg.namespaces = common::pusher::namespaces_with(&cfg.pusher_apps);
    let gw = Gateway::start(cfg).await;
    let mut clients = Vec::new();
    for user in ["1", "2"] {
        let mut c = PusherClient::connect(gw.addr, APP_KEY).await;
        let answer = c.join("presence-small", user, json!({})).await;
        assert_eq!(answer["event"], "pusher_internal:subscription_succeeded");
        clients.push(c);
    }
    let mut third = PusherClient::connect(gw.addr, APP_KEY).await;
    let answer = third.join("presence-small", "3", json!({})).await;
    assert_eq!(answer["event"], "pusher:subscription_error", "{answer}");
    // A member's second connection still gets in.
    let mut again = PusherClient::connect(gw.addr, APP_KEY).await;
    let answer = again.join("presence-small", "1", json!({})).await;
    assert_eq!(
        answer["event"], "pusher_internal:subscription_succeeded",
        "{answer}"
    );
}

#[tokio::test]
async fn cache_channels_replay_their_newest_event_or_say_cache_miss() {
    let gw = Gateway::start(config()).await;
    let api = PusherApi::new(gw.addr);
    let mut c = PusherClient::connect(gw.addr, APP_KEY).await;
    c.subscribe("cache-prices").await;
    c.event("pusher:cache_miss", Some("cache-prices")).await;
    api.trigger(&["cache-prices"], "price", "1").await;
    api.trigger(&["cache-prices"], "price", "2").await;

    let mut late = PusherClient::connect(gw.addr, APP_KEY).await;
    late.send(json!({"event": "pusher:subscribe", "data": {"channel": "cache-prices"}}))
        .await;
    let succeeded = late.next().await;
    assert_eq!(succeeded["event"], "pusher_internal:subscription_succeeded");
    let replayed = late.next().await;
    assert_eq!(replayed["event"], "price", "{replayed}");
    assert_eq!(replayed["data"], "2");
    assert!(late.nothing_pending().await.is_empty());
}

#[tokio::test]
async fn client_events_go_to_the_other_members_only() {
    let gw = Gateway::start(config()).await;
    let room = "presence-chat";
    let mut ann = PusherClient::connect(gw.addr, APP_KEY).await;
    let mut bob = PusherClient::connect(gw.addr, APP_KEY).await;
    ann.join(room, "1", json!({})).await;
    bob.join(room, "2", json!({})).await;
    ann.event("pusher_internal:member_added", Some(room)).await;
    ann.send(json!({"event": "client-typing", "channel": room, "data": {"typing": true}}))
        .await;
    let got = bob.event("client-typing", Some(room)).await;
    assert_eq!(got["data"]["typing"], true);
    assert_eq!(got["user_id"], "1");
    assert!(
        ann.nothing_pending().await.is_empty(),
        "echoed to its sender"
    );

    // Public channels, channels not joined: refused with an error, nothing sent.
    ann.subscribe("public").await;
    bob.subscribe("public").await;
    for channel in ["public", "private-not-joined"] {
        ann.send(json!({"event": "client-x", "channel": channel, "data": {}}))
            .await;
        ann.event("pusher:error", None).await;
    }
    assert!(bob.nothing_pending().await.is_empty());
}

#[tokio::test]
async fn client_events_beyond_the_rate_close_with_4301() {
    let gw = Gateway::start(config()).await;
    let mut c = PusherClient::connect(gw.addr, APP_KEY).await;
    c.subscribe_private("private-fast").await;
    // The client goes on sending after the server closed: the close frame (and
    // its code) must still reach it, not a reset.
    let event = json!({"event": "client-x", "channel": "private-fast", "data": {}});
    for _ in 0..2_000 {
        if c.try_send(event.clone()).await.is_err() {
            break;
        }
    }
    // Read only once the server let go of the socket: a reset would have come by then.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while gw.node.connection_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the socket was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.closed().await, 4301);
}

#[tokio::test]
async fn an_app_without_client_events_refuses_them() {
    let gw = Gateway::start(config()).await;
    let mut c = PusherClient::connect(gw.addr, "other-key").await;
    let channel = "private-x";
    let signature = auth::channel_auth("other-key", "other-secret", &c.socket_id, channel, None);
    c.send(json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": signature}}))
        .await;
    c.answer(channel).await;
    c.send(json!({"event": "client-x", "channel": channel, "data": {}}))
        .await;
    let error = c.event("pusher:error", None).await;
    assert!(error["data"]["message"]
        .as_str()
        .unwrap()
        .contains("not enabled"));
}

#[tokio::test]
async fn signin_opens_the_users_own_channel_and_a_bad_one_closes_with_4009() {
    let gw = Gateway::start(config()).await;
    let api = PusherApi::new(gw.addr);
    let mut c = PusherClient::connect(gw.addr, APP_KEY).await;
    let user_data = r#"{"id":"42","user_info":{"name":"Ann"}}"#;
    let signature = auth::user_auth(APP_KEY, APP_SECRET, &c.socket_id, user_data);
    c.send(json!({"event": "pusher:signin", "data": {"auth": signature, "user_data": user_data}}))
        .await;
    let success = c.event("pusher:signin_success", None).await;
    assert_eq!(success["data"]["user_data"], user_data);
    let own = c.subscribe("#server-to-user-42").await;
    assert_eq!(
        own["event"], "pusher_internal:subscription_succeeded",
        "{own}"
    );
    api.trigger(&["#server-to-user-42"], "hello", "\"you\"")
        .await;
    assert_eq!(c.event("hello", None).await["data"], "\"you\"");
    let theirs = c.subscribe("#server-to-user-43").await;
    assert_eq!(theirs["event"], "pusher:subscription_error");

    let mut bad = PusherClient::connect(gw.addr, APP_KEY).await;
    bad.send(
        json!({"event": "pusher:signin", "data": {"auth": "app-key:00", "user_data": user_data}}),
    )
    .await;
    assert_eq!(bad.closed().await, 4009);
}

#[tokio::test]
async fn the_api_refuses_bad_signatures_unknown_apps_and_large_bodies() {
    let gw = Gateway::start(config()).await;
    let event = json!({"name": "n", "channel": "c", "data": "x"});
    let mut wrong = PusherApi::new(gw.addr);
    wrong.secret = "wrong".into();
    let (status, body) = wrong
        .request("POST", "/events", &[], Some(event.clone()))
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].is_string());

    let mut unknown = PusherApi::new(gw.addr);
    unknown.id = "nope".into();
    assert_eq!(
        unknown.request("POST", "/events", &[], Some(event)).await.0,
        404
    );

    let api = PusherApi::new(gw.addr);
    let big = json!({"name": "n", "channel": "c", "data": "x".repeat(10 * 1024 + 1)});
    assert_eq!(api.request("POST", "/events", &[], Some(big)).await.0, 413);
    let too_many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let spread = json!({"name": "n", "channels": too_many, "data": "x"});
    assert_eq!(
        api.request("POST", "/events", &[], Some(spread)).await.0,
        400
    );
    let not_a_string = json!({"name": "n", "channel": "c", "data": {"a": 1}});
    assert_eq!(
        api.request("POST", "/events", &[], Some(not_a_string))
            .await
            .0,
        400
    );
    let bad_socket = json!({"name": "n", "channel": "c", "data": "x", "socket_id": "abc"});
    assert_eq!(
        api.request("POST", "/events", &[], Some(bad_socket))
            .await
            .0,
        400
    );
    assert_eq!(api.request("GET", "/nothing", &[], None).await.0, 404);
}

#[tokio::test]
async fn the_api_answers_channel_queries_batches_and_terminates_users() {
    let gw = Gateway::start(config()).await;
    let api = PusherApi::new(gw.addr);
    let mut ann = PusherClient::connect(gw.addr, APP_KEY).await;
    ann.join("presence-lobby", "1", json!({})).await;
    ann.subscribe("news").await;

    let (status, body) = api
        .request(
            "GET",
            "/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["channels"],
        json!({"presence-lobby": {"user_count": 1}})
    );
    let (_, all) = api.request("GET", "/channels", &[], None).await;
    assert_eq!(all["channels"], json!({"news": {}, "presence-lobby": {}}));
    let (status, _) = api
        .request("GET", "/channels", &[("info", "user_count")], None)
        .await;
    assert_eq!(status, 400, "user_count without a presence- prefix");

    let (_, channel) = api
        .request(
            "GET",
            "/channels/presence-lobby",
            &[("info", "subscription_count,user_count")],
            None,
        )
        .await;
    assert_eq!(
        channel,
        json!({"occupied": true, "subscription_count": 1, "user_count": 1})
    );
    let (_, empty) = api.request("GET", "/channels/quiet", &[], None).await;
    assert_eq!(empty, json!({"occupied": false}));
    let (_, users) = api
        .request("GET", "/channels/presence-lobby/users", &[], None)
        .await;
    assert_eq!(users, json!({"users": [{"id": "1"}]}));

    let batch = json!({"batch": [
        {"name": "a", "channel": "news", "data": "1"},
        {"name": "b", "channel": "news", "data": "2", "info": "subscription_count"},
    ]});
    let (status, body) = api.request("POST", "/batch_events", &[], Some(batch)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["batch"][1]["subscription_count"], 1);
    assert_eq!(ann.event("a", Some("news")).await["data"], "1");
    assert_eq!(ann.event("b", Some("news")).await["data"], "2");
    let eleven: Vec<Value> = (0..11)
        .map(|_| json!({"name": "a", "channel": "news", "data": "1"}))
        .collect();
    assert_eq!(
        api.request("POST", "/batch_events", &[], Some(json!({"batch": eleven})))
            .await
            .0,
        400
    );

    let (_, with_info) = api
        .request(
            "POST",
            "/events",
            &[],
            Some(json!({"name": "c", "channels": ["news"], "data": "3", "info": "subscription_count"})),
        )
        .await;
    assert_eq!(with_info["channels"]["news"]["subscription_count"], 1);

    // Terminate: the signed-in user's connections close, others stay.
    let user_data = r#"{"id":"42"}"#;
    let signature = auth::user_auth(APP_KEY, APP_SECRET, &ann.socket_id, user_data);
    ann.send(
        json!({"event": "pusher:signin", "data": {"auth": signature, "user_data": user_data}}),
    )
    .await;
    ann.event("pusher:signin_success", None).await;
    let mut other = PusherClient::connect(gw.addr, APP_KEY).await;
    let (status, _) = api
        .request(
            "POST",
            "/users/42/terminate_connections",
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ann.closed().await, 4009);
    assert!(other.nothing_pending().await.is_empty());
}

#[tokio::test]
async fn apps_and_the_centrifugo_front_end_are_separate_channel_spaces() {
    let gw = Gateway::start(config()).await;
    let mut mine = PusherClient::connect(gw.addr, APP_KEY).await;
    let mut theirs = PusherClient::connect(gw.addr, "other-key").await;
    mine.subscribe("orders").await;
    theirs.subscribe("orders").await;
    PusherApi::new(gw.addr).trigger(&["orders"], "n", "1").await;
    mine.event("n", Some("orders")).await;
    assert!(
        theirs.nothing_pending().await.is_empty(),
        "another app's event arrived"
    );

    // The core channel behind app-id's "orders", from the Centrifugo side.
    let mut centrifugo = gw.connected().await;
    let reply = centrifugo
        .subscribe(json!({"channel": "~app-id~b:orders"}))
        .await;
    assert!(reply.get("error").is_some(), "{reply}");
    let (_, published) = gw
        .api()
        .call(
            "publish",
            json!({"channel": "~app-id~b:orders", "data": {}}),
        )
        .await;
    assert!(published.get("error").is_some(), "{published}");
    let (_, channels) = gw.api().call("channels", json!({})).await;
    assert_eq!(channels["result"]["channels"], json!({}), "{channels}");
    assert!(mine.nothing_pending().await.is_empty());
}

#[tokio::test]
async fn malformed_messages_get_an_error_and_the_connection_stays() {
    let gw = Gateway::start(config()).await;
    let mut c = PusherClient::connect(gw.addr, APP_KEY).await;
    for bad in [
        json!("not an object"),
        json!({"no": "event"}),
        json!({"event": "pusher:subscribe", "data": 5}),
    ] {
        c.send(bad.clone()).await;
        let error = c.event("pusher:error", None).await;
        assert!(error["data"]["message"].is_string(), "{bad}: {error}");
    }
    let invalid = c.subscribe("bad:name").await;
    assert_eq!(invalid["event"], "pusher:subscription_error");
    assert_eq!(
        c.subscribe("good").await["event"],
        "pusher_internal:subscription_succeeded"
    );
}

#[tokio::test]
async fn a_draining_gateway_closes_pusher_connections_with_4200() {
    let mut gw = Gateway::start(config()).await;
    let mut c = PusherClient::connect(gw.addr, APP_KEY).await;
    c.subscribe("orders").await;
    let done = gw.shutdown();
    let code = loop {
        match c.read().await {
            Read::Closed(code) => break code,
            Read::Event(_) => {}
        }
    };
    assert_eq!(code, 4200);
    done.await.unwrap();
}
