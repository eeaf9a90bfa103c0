//! Input a client controls: every bad frame gets a clear error or the documented
//! disconnect, never a panic, and other clients are unaffected.

mod common;

use common::*;
use fastwebsockets::OpCode;
use serde_json::json;

/// After each abuse, a well-behaved client on the same gateway still works.
async fn still_serves(gw: &Gateway) {
    let mut c = gw.connected().await;
    let r = c.subscribe(json!({"channel": "health"})).await;
    assert!(r.get("error").is_none(), "{r}");
    gw.api().publish("health", json!("ok")).await;
    assert_eq!(c.next_pub("health").await["data"], json!("ok"));
}

#[tokio::test]
async fn malformed_json_closes_with_bad_request() {
    let gw = Gateway::start(config()).await;
    let mut witness = gw.connected().await;
    witness.subscribe(json!({"channel": "w"})).await;
    for garbage in ["{\"id\":", "[1,2,3]", "not json", "{\"id\": \"one\"}"] {
        let mut c = gw.client().await;
        c.send_raw(OpCode::Text, garbage.as_bytes().to_vec()).await;
        assert_eq!(c.closed().await.0, 3501, "{garbage}");
    }
    gw.api().publish("w", json!(1)).await;
    assert_eq!(witness.next_pub("w").await["data"], json!(1));
    still_serves(&gw).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_bad_request() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.client().await;
    c.send_raw(OpCode::Text, vec![b'{', 0xff, 0xfe, b'}']).await;
    assert_eq!(c.closed().await.0, 3501);
    still_serves(&gw).await;
}

#[tokio::test]
async fn wrong_frame_type_for_the_encoding_closes() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.client().await;
    c.send_raw(OpCode::Binary, b"{\"id\":1,\"connect\":{}}".to_vec())
        .await;
    assert_eq!(c.closed().await.0, 3501);
    let mut c = gw.client_protobuf().await;
    c.send_raw(OpCode::Binary, vec![0x05, 0xff]).await;
    assert_eq!(c.closed().await.0, 3501, "truncated protobuf");
}

#[tokio::test]
async fn unknown_command_gets_method_not_found() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.connected().await;
    let r = c.call(json!({"teleport": {"to": "mars"}})).await;
    assert_eq!(r["error"]["code"], json!(104));
    still_serves(&gw).await;
}

#[tokio::test]
async fn commands_before_connect_close_the_connection() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.client().await;
    c.send(json!({"subscribe": {"channel": "x"}})).await;
    assert_eq!(c.closed().await.0, 3501);
    let mut c = gw.client().await;
    c.connect(json!({})).await;
    c.send(json!({"connect": {}})).await;
    assert_eq!(
        c.closed().await.0,
        3501,
        "a second connect is a protocol error"
    );
}

#[tokio::test]
async fn oversized_frame_closes_with_message_too_big() {
    let mut cfg = config();
    cfg.limits.max_frame_bytes = 4096;
    let gw = Gateway::start(cfg).await;
    let mut c = gw.connected().await;
    let big = json!({"id": 2, "publish": {"channel": "x", "data": "a".repeat(10_000)}});
    c.send_raw(OpCode::Text, big.to_string().into_bytes()).await;
    assert_eq!(c.closed().await.0, 1009);
    still_serves(&gw).await;
}

#[tokio::test]
async fn invalid_channel_names_are_refused() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.connected().await;
    let long = "a".repeat(256);
    for name in [
        "",
        "has space",
        "tab\there",
        "caf\u{e9}",
        long.as_str(),
        "new\nline",
    ] {
        let r = c.subscribe(json!({"channel": name})).await;
        assert_eq!(r["error"]["code"], json!(107), "{name:?}: {r}");
        let r = c
            .call(json!({"publish": {"channel": name, "data": 1}}))
            .await;
        assert_eq!(r["error"]["code"], json!(107), "{name:?}: {r}");
    }
    still_serves(&gw).await;
}

#[tokio::test]
async fn a_flood_of_commands_is_cut_off() {
    let mut cfg = config();
    cfg.limits.max_commands_per_second = 20;
    let gw = Gateway::start(cfg).await;
    let mut c = gw.connected().await;
    for _ in 0..200 {
        c.send(json!({"ping": {}})).await;
    }
    assert_eq!(c.closed().await.0, 3013);
    still_serves(&gw).await;
}

#[tokio::test]
async fn too_many_commands_in_one_frame_close() {
    let gw = Gateway::start(config()).await;
    let mut c = gw.connected().await;
    let frame = (0..101)
        .map(|i| json!({"id": i + 1, "ping": {}}).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    c.send_raw(OpCode::Text, frame.into_bytes()).await;
    assert_eq!(c.closed().await.0, 3501);
}

#[tokio::test]
async fn channel_limit_per_connection() {
    let mut cfg = config();
    cfg.limits.max_channels_per_connection = 2;
    let gw = Gateway::start(cfg).await;
    let mut c = gw.connected().await;
    c.subscribe(json!({"channel": "a"})).await;
    c.subscribe(json!({"channel": "b"})).await;
    let r = c.subscribe(json!({"channel": "c"})).await;
    assert_eq!(r["error"]["code"], json!(106));
    c.call(json!({"unsubscribe": {"channel": "a"}})).await;
    let r = c.subscribe(json!({"channel": "c"})).await;
    assert!(r.get("error").is_none(), "{r}");
}
