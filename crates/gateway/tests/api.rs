//! The server API, as Centrifugo's server SDKs call it.

mod common;

use common::*;
use serde_json::json;
use switchboard_test_support::eventually;

#[tokio::test]
async fn api_key_is_required() {
    let gw = Gateway::start(config()).await;
    let api = gw.api();
    let body = json!({"channel": "a", "data": 1}).to_string();
    assert_eq!(api.raw("publish", None, body.clone()).await.0, 401);
    assert_eq!(
        api.raw("publish", Some(("X-API-Key", "wrong")), body.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        api.raw("publish", Some(("Authorization", "apikey test-key")), body)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn bad_bodies_and_methods() {
    let gw = Gateway::start(config()).await;
    let api = gw.api();
    let auth = Some(("X-API-Key", API_KEY));
    let (status, body) = api.raw("publish", auth, "{not json".into()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], json!(107));
    let (status, _) = api
        .raw("publish", auth, json!({"channel": "a"}).to_string())
        .await;
    assert_eq!(status, 400, "data is required");
    let (status, body) = api.raw("teleport", auth, "{}".into()).await;
    assert_eq!((status, body["error"]["code"].clone()), (404, json!(104)));
    let (_, body) = api
        .call("publish", json!({"channel": "has space", "data": 1}))
        .await;
    assert_eq!(body["error"]["code"], json!(107));
    let (_, body) = api
        .call("publish", json!({"channel": "x".repeat(300), "data": 1}))
        .await;
    assert_eq!(body["error"]["code"], json!(107));
    let (_, body) = api
        .call("publish", json!({"channel": "nope:a", "data": 1}))
        .await;
    assert_eq!(body["error"]["code"], json!(102));
    let (status, _) = get(gw.addr, "/api/publish").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let mut cfg = config();
    cfg.limits.max_api_body_bytes = 1024;
    let gw = Gateway::start(cfg).await;
    let (status, _) = gw
        .api()
        .call("publish", json!({"channel": "a", "data": "x".repeat(5000)}))
        .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn publish_broadcast_history_and_idempotency() {
    let gw = Gateway::start(config()).await;
    let api = gw.api();
    let first = api.publish("h", json!({"n": 1})).await;
    assert_eq!(first["offset"], json!(1));
    let (_, b) = api
        .call(
            "broadcast",
            json!({"channels": ["h", "h2", "bad channel"], "data": {"n": 2}}),
        )
        .await;
    let responses = b["result"]["responses"].as_array().unwrap();
    assert_eq!(responses[0]["result"]["offset"], json!(2));
    assert_eq!(responses[1]["result"]["offset"], json!(1));
    assert_eq!(responses[2]["error"]["code"], json!(107));

    let keyed = json!({"channel": "h", "data": {"n": 3}, "idempotency_key": "k-1"});
    let (_, a) = api.call("publish", keyed.clone()).await;
    let (_, again) = api.call("publish", keyed).await;
    assert_eq!(
        a["result"], again["result"],
        "a retried publish is stored once"
    );

    let (_, h) = api
        .call("history", json!({"channel": "h", "limit": 10}))
        .await;
    let pubs = h["result"]["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 3);
    assert_eq!(pubs[2]["data"], json!({"n": 3}));
    assert_eq!(h["result"]["offset"], json!(3));
    let (_, h) = api
        .call(
            "history",
            json!({"channel": "h", "limit": 10, "since": {"offset": 2, "epoch": first["epoch"]}}),
        )
        .await;
    assert_eq!(h["result"]["publications"].as_array().unwrap().len(), 1);
    let (_, h) = api
        .call(
            "history",
            json!({"channel": "h", "limit": 10, "since": {"offset": 2, "epoch": "stale"}}),
        )
        .await;
    assert_eq!(h["error"]["code"], json!(112));
    let (_, h) = api
        .call(
            "history",
            json!({"channel": "h", "limit": 1, "reverse": true}),
        )
        .await;
    assert_eq!(h["result"]["publications"][0]["offset"], json!(3));
}

#[tokio::test]
async fn presence_info_channels() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.client().await;
    c.connect(json!({"token": token(json!({"sub": "u1"}))}))
        .await;
    c.subscribe(json!({"channel": "p1"})).await;
    let api = gw.api();
    let (_, p) = api.call("presence", json!({"channel": "p1"})).await;
    let members = p["result"]["presence"].as_object().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members.values().next().unwrap()["user"], json!("u1"));
    let (_, s) = api.call("presence_stats", json!({"channel": "p1"})).await;
    assert_eq!(s["result"], json!({"num_clients": 1, "num_users": 1}));
    let (_, i) = api.call("info", json!({})).await;
    let node = &i["result"]["nodes"][0];
    assert_eq!(node["num_clients"], json!(1));
    assert_eq!(node["num_channels"], json!(1));
    let (_, ch) = api.call("channels", json!({"pattern": "p*"})).await;
    assert_eq!(ch["result"]["channels"]["p1"]["num_clients"], json!(1));
    let (_, ch) = api.call("channels", json!({"pattern": "q*"})).await;
    assert_eq!(ch["result"]["channels"], json!({}));
}

#[tokio::test]
async fn server_unsubscribe_and_disconnect() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.client().await;
    c.connect(json!({"token": token(json!({"sub": "u9"}))}))
        .await;
    c.subscribe(json!({"channel": "s"})).await;
    let (_, r) = gw
        .api()
        .call("unsubscribe", json!({"channel": "s", "user": "u9"}))
        .await;
    assert_eq!(r, json!({"result": {}}));
    let push = c.wait_for(|v| v["push"].get("unsubscribe").is_some()).await;
    assert_eq!(push["push"]["channel"], json!("s"));
    assert_eq!(push["push"]["unsubscribe"]["code"], json!(2000));
    eventually("unsubscribed in the hub", PATIENCE, async || {
        gw.node.hub.num_subscribers("s") == 0
    })
    .await;

    let (_, r) = gw
        .api()
        .call(
            "disconnect",
            json!({"user": "u9", "disconnect": {"code": 4501, "reason": "bye"}}),
        )
        .await;
    assert_eq!(r, json!({"result": {}}));
    assert_eq!(c.closed().await, (4501, "bye".to_owned()));
    eventually("connection forgotten", PATIENCE, async || {
        gw.node.registry.counts().0 == 0
    })
    .await;

    let mut c = gw.client().await;
    c.connect(json!({"token": token(json!({"sub": "u9"}))}))
        .await;
    gw.api().call("disconnect", json!({"user": "u9"})).await;
    assert_eq!(
        c.closed().await.0,
        3503,
        "default: force disconnect, no reconnect"
    );
    let (_, r) = gw
        .api()
        .call(
            "disconnect",
            json!({"user": "u9", "disconnect": {"code": 80}}),
        )
        .await;
    assert_eq!(r["error"]["code"], json!(107));
}
