//! Answers as the HTTP API writes them: Centrifugo's JSON shapes.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use switchboard_core::{ClientInfo, Publication, StreamPosition};

use super::{Answer, ApiError, Reply};

/// `{"result": …}`, `{"error": …}`, or both (a cluster-wide method some live
/// gateway did not confirm).
pub(super) fn render(answer: &Answer) -> Value {
    let mut v = serde_json::Map::new();
    if let Some(error) = &answer.error {
        v.insert("error".into(), error_json(error));
    }
    if let Some(reply) = &answer.result {
        v.insert("result".into(), reply_json(reply));
    }
    Value::Object(v)
}

fn error_json(e: &ApiError) -> Value {
    if e.unconfirmed.is_empty() {
        return json!({"code": e.code, "message": e.message});
    }
    let nodes: Vec<Value> = e
        .unconfirmed
        .iter()
        .map(|n| json!({"uid": n.id, "name": n.name, "reason": n.why}))
        .collect();
    json!({"code": e.code, "message": e.message, "temporary": true, "nodes": nodes})
}

fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Position(p) => position_json(p),
        Reply::Broadcast(answers) => {
            let responses: Vec<Value> = answers.iter().map(render).collect();
            json!({ "responses": responses })
        }
        Reply::Presence(members) => {
            let presence: BTreeMap<&String, Value> = members
                .iter()
                .map(|(c, info)| (c, info_json(info)))
                .collect();
            json!({ "presence": presence })
        }
        Reply::PresenceStats(s) => json!({"num_clients": s.num_clients, "num_users": s.num_users}),
        Reply::History(h) => {
            let publications: Vec<Value> = h.publications.iter().map(publication_json).collect();
            json!({
                "publications": publications,
                "epoch": h.position.epoch,
                "offset": h.position.offset,
            })
        }
        Reply::Done => json!({}),
        Reply::Nodes(nodes) => {
            let nodes: Vec<Value> = nodes
                .iter()
                .map(|n| {
                    json!({
                        "uid": n.id,
                        "name": n.name,
                        "version": n.version,
                        "num_clients": n.clients,
                        "num_users": n.users,
                        "num_channels": n.channels,
                        "num_subs": n.subscriptions,
                        "uptime": n.uptime(),
                    })
                })
                .collect();
            json!({ "nodes": nodes })
        }
        Reply::Channels(channels) => {
            let channels: BTreeMap<&String, Value> = channels
                .iter()
                .map(|(name, n)| (name, json!({ "num_clients": n })))
                .collect();
            json!({ "channels": channels })
        }
    }
}

fn position_json(p: &StreamPosition) -> Value {
    let mut v = serde_json::Map::new();
    if p.offset > 0 {
        v.insert("offset".into(), json!(p.offset));
    }
    if !p.epoch.is_empty() {
        v.insert("epoch".into(), json!(p.epoch));
    }
    Value::Object(v)
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
