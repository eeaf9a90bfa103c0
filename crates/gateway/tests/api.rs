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

#[tokio::test]
async fn publish_and_broadcast_take_every_field_centrifugos_sdks_send() {
    let gw = Gateway::start(config()).await;
    let api = gw.api();
    // Every field of Centrifugo's PublishRequest, at the values SDKs send by default.
    let everything = json!({
        "channel": "all", "data": {"n": 1}, "b64data": "", "skip_history": false,
        "tags": {}, "idempotency_key": "", "delta": false, "version": 0, "version_epoch": "",
    });
    let (status, body) = api.call("publish", everything).await;
    assert_eq!((status, body["result"]["offset"].clone()), (200, json!(1)));
    // ... and nulls, as SDKs that do not leave unset fields out send them.
    let nulls = json!({
        "channel": "all", "data": {"n": 2}, "b64data": null, "skip_history": null,
        "tags": null, "idempotency_key": null, "delta": null, "version": null,
        "version_epoch": null,
    });
    let (status, body) = api.call("publish", nulls).await;
    assert_eq!((status, body["result"]["offset"].clone()), (200, json!(2)));
    let broadcast = json!({
        "channels": ["all", "all2"], "data": {"n": 3}, "skip_history": false,
        "tags": {"k": "v"}, "idempotency_key": "b-1", "delta": true, "version": 7,
        "version_epoch": "e",
    });
    let (status, body) = api.call("broadcast", broadcast).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["responses"][0]["result"]["offset"], json!(3));
    // Fields Centrifugo does not have are still refused, with their name.
    let (status, body) = api
        .call("publish", json!({"channel": "all", "data": 1, "dta": 1}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("`dta`"),
        "{body}"
    );
    let (status, _) = api
        .call("publish", json!({"channels": ["all"], "data": 1}))
        .await;
    assert_eq!(status, 400, "publish takes one channel");
    let (status, _) = api
        .call("broadcast", json!({"channel": "all", "data": 1}))
        .await;
    assert_eq!(status, 400, "broadcast takes channels");
}

#[tokio::test]
async fn tags_reach_subscribers_of_both_encodings_and_history() {
    let gw = Gateway::start(config()).await;
    let mut json_client = gw.connected().await;
    let mut pb_client = gw.client_protobuf().await;
    pb_client.connect(json!({})).await;
    for c in [&mut json_client, &mut pb_client] {
        c.subscribe(json!({"channel": "tagged"})).await;
    }
    let tags = json!({"kind": "note", "lang": "en"});
    let api = gw.api();
    let (_, r) = api
        .call(
            "publish",
            json!({"channel": "tagged", "data": {"n": 1}, "tags": tags}),
        )
        .await;
    assert_eq!(r["result"]["offset"], json!(1), "{r}");
    for c in [&mut json_client, &mut pb_client] {
        let p = c.next_pub("tagged").await;
        assert_eq!(
            (p["data"].clone(), p["tags"].clone()),
            (json!({"n": 1}), tags.clone())
        );
    }
    // Untagged publications carry no tags field at all, as in Centrifugo.
    api.publish("tagged", json!({"n": 2})).await;
    assert_eq!(json_client.next_pub("tagged").await.get("tags"), None);

    let (_, h) = api
        .call("history", json!({"channel": "tagged", "limit": 10}))
        .await;
    let pubs = &h["result"]["publications"];
    assert_eq!(
        (pubs[0]["tags"].clone(), pubs[1].get("tags")),
        (tags.clone(), None)
    );
    let r = json_client
        .call(json!({"history": {"channel": "tagged", "limit": 10}}))
        .await;
    assert_eq!(r["history"]["publications"][0]["tags"], tags);
}

#[tokio::test]
async fn skip_history_delivers_live_and_keeps_the_history_as_it_was() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.connected().await;
    c.subscribe(json!({"channel": "brief"})).await;
    let api = gw.api();
    let kept = api.publish("brief", json!("kept")).await;
    assert_eq!(c.next_pub("brief").await["offset"], json!(1));

    let (_, r) = api
        .call(
            "publish",
            json!({"channel": "brief", "data": "fleeting", "skip_history": true}),
        )
        .await;
    // Centrifugo's answer for a publication not kept: no offset, no epoch.
    assert_eq!(r, json!({"result": {}}));
    let p = c.next_pub("brief").await;
    assert_eq!(
        (p["data"].clone(), p.get("offset")),
        (json!("fleeting"), None)
    );
    let (_, r) = api
        .call(
            "broadcast",
            json!({"channels": ["brief"], "data": "also fleeting", "skip_history": true}),
        )
        .await;
    assert_eq!(r, json!({"result": {"responses": [{"result": {}}]}}));
    assert_eq!(c.next_pub("brief").await["data"], json!("also fleeting"));

    let (_, h) = api
        .call("history", json!({"channel": "brief", "limit": 10}))
        .await;
    let pubs = h["result"]["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 1);
    assert_eq!(pubs[0]["data"], json!("kept"));
    assert_eq!(
        (h["result"]["offset"].clone(), h["result"]["epoch"].clone()),
        (kept["offset"].clone(), kept["epoch"].clone())
    );
    // The next stored publication follows on: the skipped ones took no offset.
    assert_eq!(
        api.publish("brief", json!("next")).await["offset"],
        json!(2)
    );
}

#[tokio::test]
async fn b64data_is_data_and_exactly_one_of_them_is_required() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.connected().await;
    c.subscribe(json!({"channel": "b64"})).await;
    let api = gw.api();
    // base64 of {"n":1}
    let (_, r) = api
        .call(
            "publish",
            json!({"channel": "b64", "b64data": "eyJuIjoxfQ=="}),
        )
        .await;
    assert_eq!(r["result"]["offset"], json!(1), "{r}");
    assert_eq!(c.next_pub("b64").await["data"], json!({"n": 1}));
    let (_, r) = api
        .call(
            "broadcast",
            json!({"channels": ["b64"], "b64data": "eyJuIjoyfQ=="}),
        )
        .await;
    assert_eq!(r["result"]["responses"][0]["result"]["offset"], json!(2));
    assert_eq!(c.next_pub("b64").await["data"], json!({"n": 2}));

    for (body, says) in [
        (
            json!({"channel": "b64", "data": 1, "b64data": "MQ=="}),
            "not both",
        ),
        (json!({"channel": "b64"}), "missing field `data`"),
        (
            json!({"channel": "b64", "b64data": ""}),
            "missing field `data`",
        ),
        (
            json!({"channel": "b64", "b64data": "not base64!"}),
            "not base64",
        ),
        (
            json!({"channels": ["b64"], "data": 1, "b64data": "MQ=="}),
            "not both",
        ),
    ] {
        let method = if body.get("channels").is_some() {
            "broadcast"
        } else {
            "publish"
        };
        let (status, r) = api.call(method, body.clone()).await;
        assert_eq!(
            (status, r["error"]["code"].clone()),
            (400, json!(107)),
            "{body}"
        );
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
}
