//! What a publication's data may be: JSON nested at most 64 deep, except in a
//! `binary_data` namespace (any bytes, protobuf connections only), so that no
//! publication can close the JSON connections that would receive it (issue 17,
//! defects 5 and 8).

mod common;

use bytes::Bytes;
use common::*;
use fastwebsockets::OpCode;
use serde_json::{json, Value};
use switchboard_protocol::centrifugo::pb;
use switchboard_protocol::centrifugo::Encoding;

/// Publishes raw `data` from a protobuf client; the reply.
async fn publish_bytes(c: &mut Client, channel: &str, data: &[u8]) -> Value {
    let command = pb::Command {
        id: 99,
        publish: Some(pb::PublishRequest {
            channel: channel.into(),
            data: Bytes::copy_from_slice(data),
        }),
        ..Default::default()
    };
    let record = Encoding::Protobuf.encode_command(&command).unwrap();
    c.send_raw(OpCode::Binary, record.to_vec()).await;
    c.wait_for(|v| v["id"] == 99).await
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn bytes_that_are_not_json_are_refused_and_json_subscribers_stay() {
    let gw = Gateway::start(config()).await;
    let mut reader = gw.connected().await;
    reader.subscribe(json!({"channel": "news"})).await;
    let mut writer = gw.client_protobuf().await;
    writer.connect(json!({})).await;

    let reply = publish_bytes(&mut writer, "news", &[0xff, 0xfe]).await;
    assert_eq!(reply["error"]["code"], 107, "{reply}");
    let (_, api) = gw
        .api()
        .call("publish", json!({"channel": "news", "b64data": "//4="}))
        .await;
    assert_eq!(api["error"]["code"], 107, "{api}");

    // The JSON subscriber is still there, and the history holds nothing it cannot read.
    gw.api().publish("news", json!({"after": true})).await;
    assert_eq!(
        reader.next_pub("news").await["data"],
        json!({"after": true})
    );
    let history = reader
        .call(json!({"history": {"channel": "news", "limit": 10}}))
        .await;
    assert_eq!(
        history["history"]["publications"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_binary_data_namespace_takes_any_bytes_for_protobuf_connections_only() {
    let gw = Gateway::start(config()).await;
    let mut json_client = gw.connected().await;
    let refused = json_client.subscribe(json!({"channel": "binary:x"})).await;
    assert_eq!(refused["error"]["code"], 108, "{refused}");
    let history = json_client
        .call(json!({"history": {"channel": "binary:x", "limit": 1}}))
        .await;
    assert_eq!(history["error"]["code"], 108, "{history}");

    let mut subscriber = gw.client_protobuf().await;
    subscriber.connect(json!({})).await;
    let sub = subscriber.subscribe(json!({"channel": "binary:x"})).await;
    assert!(sub.get("error").is_none(), "{sub}");
    let mut publisher = gw.client_protobuf().await;
    publisher.connect(json!({})).await;
    let reply = publish_bytes(&mut publisher, "binary:x", &[0xff, 0xfe]).await;
    assert!(reply.get("error").is_none(), "{reply}");
    // The bytes as they were (read raw: they have no JSON view).
    let Received::Frame(_, frame) = subscriber.read().await else {
        panic!("the subscriber was closed");
    };
    let delivered = replies_of(&frame, true)
        .into_iter()
        .find_map(|r| r.push.and_then(|p| p.r#pub))
        .expect("a publication push");
    assert_eq!(&delivered.data[..], &[0xff, 0xfe]);
    let (_, history) = gw
        .api()
        .call("history", json!({"channel": "binary:x", "limit": 1}))
        .await;
    assert_eq!(
        history["result"]["publications"][0]["b64data"], "//4=",
        "{history}"
    );
}

#[tokio::test]
async fn data_nested_deeper_than_64_is_refused_and_64_reads_back_as_it_was() {
    let gw = Gateway::start(config()).await;
    let deep: Value = serde_json::from_str(&nested(64)).unwrap();
    gw.api().publish("news", deep.clone()).await;
    let (_, history) = gw
        .api()
        .call("history", json!({"channel": "news", "limit": 1}))
        .await;
    assert_eq!(history["result"]["publications"][0]["data"], deep);

    let too_deep = format!(r#"{{"channel":"news","data":{}}}"#, nested(65));
    let (_, reply) = gw
        .api()
        .raw("publish", Some(("X-API-Key", API_KEY)), too_deep)
        .await;
    assert_eq!(reply["error"]["code"], 107, "{reply}");
}
