//! `presence`, `presence_stats` and `history`: reads of the shared stores.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use switchboard_core::{ClientInfo, Publication};

use super::super::history_query;
use super::{channel_error, result, Since};
use crate::node::Node;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChannelReq {
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryReq {
    channel: String,
    #[serde(default)]
    limit: i32,
    #[serde(default)]
    since: Option<Since>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Serialize)]
struct InfoJson<'a> {
    user: &'a str,
    client: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    conn_info: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chan_info: Option<&'a RawValue>,
}

fn raw(data: &Option<Bytes>) -> Option<&RawValue> {
    data.as_ref().and_then(|d| serde_json::from_slice(d).ok())
}

fn info_json(info: &ClientInfo) -> Value {
    serde_json::to_value(InfoJson {
        user: &info.user,
        client: &info.client,
        conn_info: raw(&info.conn_info),
        chan_info: raw(&info.chan_info),
    })
    .unwrap_or(Value::Null)
}

fn publication_json(p: &Publication) -> Value {
    // Data is JSON except in `binary_data` namespaces: there it goes as base64,
    // as the API takes it (`b64data`).
    let mut v = match serde_json::from_slice::<Value>(&p.data) {
        Ok(data) => json!({ "data": data, "offset": p.offset }),
        Err(_) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&p.data);
            json!({ "b64data": b64, "offset": p.offset })
        }
    };
    if let Some(info) = &p.info {
        v["info"] = info_json(info);
    }
    if !p.tags.is_empty() {
        v["tags"] = json!(p.tags);
    }
    v
}

pub(super) async fn presence(node: &Arc<Node>, req: ChannelReq) -> Value {
    match node.presence(&req.channel).await {
        Ok(members) => {
            let presence: BTreeMap<&String, Value> = members
                .iter()
                .map(|(c, info)| (c, info_json(info)))
                .collect();
            result(json!({ "presence": presence }))
        }
        Err(e) => channel_error(e),
    }
}

pub(super) async fn presence_stats(node: &Arc<Node>, req: ChannelReq) -> Value {
    match node.presence_stats(&req.channel).await {
        Ok(s) => result(json!({"num_clients": s.num_clients, "num_users": s.num_users})),
        Err(e) => channel_error(e),
    }
}

pub(super) async fn history(node: &Arc<Node>, req: HistoryReq) -> Value {
    let query = history_query(
        req.limit,
        req.since.map(|s| (s.offset, s.epoch)),
        req.reverse,
    );
    match node.history(&req.channel, &query).await {
        Ok(h) => {
            let publications: Vec<Value> = h.publications.iter().map(publication_json).collect();
            result(json!({
                "publications": publications,
                "epoch": h.position.epoch,
                "offset": h.position.offset,
            }))
        }
        Err(e) => channel_error(e),
    }
}
