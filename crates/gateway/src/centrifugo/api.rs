//! The server API: Centrifugo-compatible HTTP methods for backends,
//! `POST /api/<method>` with a JSON body, authenticated by `X-API-Key` or
//! `Authorization: apikey <key>`.
//!
//! Calls that act on connections or ask about them (disconnect, unsubscribe,
//! subscribe, refresh, channels, info) act on the whole cluster ([`crate::cluster`]).
//!
//! Replies are `{"result": {...}}` or `{"error": {"code": N, "message": "..."}}`
//! with status 200, as Centrifugo's server SDKs expect; a wrong key is a 401, a
//! body that is not the method's JSON a 400, an unknown method a 404.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use switchboard_core::{ClientInfo, Publication, PublishOptions};
use switchboard_protocol::centrifugo::codes::ErrorCode;

use super::errors::error_code;
use super::history_query;
use crate::cluster::{self, command::Farewell, Answer, Command, NodeInfo, Outcome};
use crate::node::Node;

/// An API answer: HTTP status and JSON body.
pub struct ApiResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

fn respond(status: StatusCode, body: Value) -> ApiResponse {
    ApiResponse {
        status,
        body: Bytes::from(body.to_string()),
    }
}

fn error(code: ErrorCode) -> Value {
    json!({"error": {"code": code.code, "message": code.message}})
}

fn channel_error(e: crate::node::ChannelError) -> Value {
    error(error_code(e))
}

fn result(value: Value) -> Value {
    json!({ "result": value })
}

/// Whether the request carries the configured API key.
pub fn authorized(node: &Node, headers: &HeaderMap) -> bool {
    let Some(key) = node.config.api_key.as_deref() else {
        return false;
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-api-key").is_some_and(|v| same_key(v, key)) {
        return true;
    }
    header("authorization")
        .and_then(|v| v.strip_prefix("apikey "))
        .is_some_and(|v| same_key(v.trim(), key))
}

/// Compares in constant time: how long a wrong key takes to refuse says nothing
/// about how much of it was right (only its length may show).
fn same_key(offered: &str, key: &str) -> bool {
    use subtle::ConstantTimeEq;
    offered.as_bytes().ct_eq(key.as_bytes()).into()
}

/// The body of `publish` and `broadcast`: the fields Centrifugo's PublishRequest and
/// BroadcastRequest share, declared once (publish names a `channel`, broadcast
/// `channels`). Any of them may be null, as Centrifugo's decoding allows.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicationBody {
    channel: Option<String>,
    channels: Option<Vec<String>>,
    /// JSON `null` is data too: absent is not.
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    b64data: Option<String>,
    skip_history: Option<bool>,
    tags: Option<BTreeMap<String, String>>,
    idempotency_key: Option<String>,
    // Accepted and ignored (docs/compatibility.md): delta compression and
    // document versions.
    #[serde(rename = "delta")]
    _delta: Option<bool>,
    #[serde(rename = "version")]
    _version: Option<u64>,
    #[serde(rename = "version_epoch")]
    _version_epoch: Option<String>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// A publication as `publish` and `broadcast` asked for it, checked.
struct Outgoing {
    data: Bytes,
    /// Tags and idempotency key; the node adds the history.
    options: PublishOptions,
    skip_history: bool,
}

impl PublicationBody {
    /// The payload (exactly one of `data` and `b64data`) and the options.
    fn outgoing(self) -> Result<Outgoing, String> {
        // Centrifugo's SDKs may send the empty string for "none".
        let b64data = self.b64data.filter(|d| !d.is_empty());
        let data = match (self.data, b64data) {
            (Some(json), None) => raw_bytes(&json),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| format!("b64data is not base64: {e}"))?,
            (None, None) => return Err("missing field `data` (or `b64data`)".into()),
            (Some(_), Some(_)) => return Err("give `data` or `b64data`, not both".into()),
        };
        Ok(Outgoing {
            data,
            options: PublishOptions {
                tags: self.tags.unwrap_or_default(),
                idempotency_key: self.idempotency_key.filter(|k| !k.is_empty()),
                ..Default::default()
            },
            skip_history: self.skip_history.unwrap_or(false),
        })
    }
}

#[derive(Deserialize)]
#[serde(try_from = "PublicationBody")]
struct PublishReq {
    channel: String,
    publication: Outgoing,
}

impl TryFrom<PublicationBody> for PublishReq {
    type Error = String;

    fn try_from(mut body: PublicationBody) -> Result<Self, String> {
        if body.channels.is_some() {
            return Err("unknown field `channels` (publish takes `channel`)".into());
        }
        let channel = body.channel.take().ok_or("missing field `channel`")?;
        Ok(PublishReq {
            channel,
            publication: body.outgoing()?,
        })
    }
}

#[derive(Deserialize)]
#[serde(try_from = "PublicationBody")]
struct BroadcastReq {
    channels: Vec<String>,
    publication: Outgoing,
}

impl TryFrom<PublicationBody> for BroadcastReq {
    type Error = String;

    fn try_from(mut body: PublicationBody) -> Result<Self, String> {
        if body.channel.is_some() {
            return Err("unknown field `channel` (broadcast takes `channels`)".into());
        }
        let channels = body.channels.take().ok_or("missing field `channels`")?;
        Ok(BroadcastReq {
            channels,
            publication: body.outgoing()?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelReq {
    channel: String,
}

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    epoch: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryReq {
    channel: String,
    #[serde(default)]
    limit: i32,
    #[serde(default)]
    since: Option<Since>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeReq {
    channel: String,
    user: String,
    #[serde(default)]
    client: Option<String>,
}

#[derive(Deserialize)]
struct DisconnectSpec {
    code: u16,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectReq {
    user: String,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    disconnect: Option<DisconnectSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeReq {
    user: String,
    channel: String,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    recover_since: Option<Since>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshReq {
    user: String,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    expired: bool,
    #[serde(default)]
    expire_at: Option<u64>,
    #[serde(default)]
    info: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChannelsReq {
    #[serde(default)]
    pattern: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The methods this API serves.
pub const METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "presence",
    "presence_stats",
    "history",
    "unsubscribe",
    "disconnect",
    "subscribe",
    "refresh",
    "info",
    "channels",
];

/// Runs one API method on an already authorized request.
pub async fn call(node: &Arc<Node>, method: &str, body: &[u8]) -> ApiResponse {
    if !METHODS.contains(&method) {
        return respond(StatusCode::NOT_FOUND, error(ErrorCode::METHOD_NOT_FOUND));
    }
    // An empty body means no parameters (info, channels).
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    macro_rules! run {
        ($handler:ident) => {
            match parse(body) {
                Ok(req) => Ok($handler(node, req).await),
                Err(message) => Err(message),
            }
        };
    }
    let outcome: Result<Value, String> = match method {
        "publish" => run!(publish),
        "broadcast" => run!(broadcast),
        "presence" => run!(presence),
        "presence_stats" => run!(presence_stats),
        "history" => run!(history),
        "unsubscribe" => run!(unsubscribe),
        "disconnect" => run!(disconnect),
        "subscribe" => run!(subscribe),
        "refresh" => run!(refresh),
        "info" => match parse::<Empty>(body) {
            Ok(_) => Ok(info(node).await),
            Err(message) => Err(message),
        },
        _ => run!(channels),
    };
    let (status, value) = match outcome {
        Err(message) => {
            let body = json!({"error": {"code": ErrorCode::BAD_REQUEST.code, "message": message}});
            (StatusCode::BAD_REQUEST, body)
        }
        Ok(value) => (StatusCode::OK, value),
    };
    let result = if value.get("error").is_some() {
        "error"
    } else {
        "ok"
    };
    metrics::counter!("switchboard_api_requests_total", "method" => method.to_owned(), "result" => result)
        .increment(1);
    respond(status, value)
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad request: {e}"))
}

fn raw_bytes(raw: &RawValue) -> Bytes {
    Bytes::copy_from_slice(raw.get().as_bytes())
}

async fn publish(node: &Arc<Node>, req: PublishReq) -> Value {
    let Outgoing {
        data,
        options,
        skip_history,
    } = req.publication;
    match node
        .publish_with(&req.channel, data, None, options, skip_history)
        .await
    {
        Ok(position) => {
            metrics::counter!("switchboard_publications_total", "source" => "api").increment(1);
            result(position_json(position.offset, &position.epoch))
        }
        Err(e) => channel_error(e),
    }
}

fn position_json(offset: u64, epoch: &str) -> Value {
    let mut v = serde_json::Map::new();
    if offset > 0 {
        v.insert("offset".into(), json!(offset));
    }
    if !epoch.is_empty() {
        v.insert("epoch".into(), json!(epoch));
    }
    Value::Object(v)
}

async fn broadcast(node: &Arc<Node>, req: BroadcastReq) -> Value {
    if req.channels.is_empty() {
        return error(ErrorCode::BAD_REQUEST);
    }
    let publication = &req.publication;
    let mut responses = Vec::with_capacity(req.channels.len());
    for channel in &req.channels {
        let mut options = publication.options.clone();
        // One key per channel: a retried broadcast is deduplicated channel by channel.
        options.idempotency_key = options.idempotency_key.map(|k| format!("{k}:{channel}"));
        let data = publication.data.clone();
        let published = node
            .publish_with(channel, data, None, options, publication.skip_history)
            .await;
        responses.push(match published {
            Ok(p) => result(position_json(p.offset, &p.epoch)),
            Err(e) => channel_error(e),
        });
    }
    result(json!({ "responses": responses }))
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
    let data: Value = serde_json::from_slice(&p.data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&p.data).into_owned()));
    let mut v = json!({ "data": data, "offset": p.offset });
    if let Some(info) = &p.info {
        v["info"] = info_json(info);
    }
    if !p.tags.is_empty() {
        v["tags"] = json!(p.tags);
    }
    v
}

async fn presence(node: &Arc<Node>, req: ChannelReq) -> Value {
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

async fn presence_stats(node: &Arc<Node>, req: ChannelReq) -> Value {
    match node.presence_stats(&req.channel).await {
        Ok(s) => result(json!({"num_clients": s.num_clients, "num_users": s.num_users})),
        Err(e) => channel_error(e),
    }
}

async fn history(node: &Arc<Node>, req: HistoryReq) -> Value {
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

/// A cluster-wide answer: the result, and when some live node did not confirm,
/// also an error naming them (temporary: the call can be repeated).
fn cluster_answer(outcome: &Outcome, value: Value) -> Value {
    if outcome.unconfirmed.is_empty() {
        return result(value);
    }
    let names: Vec<String> = outcome
        .unconfirmed
        .iter()
        .map(|n| format!("{} ({}): {}", n.name, n.id, n.why))
        .collect();
    let nodes: Vec<Value> = outcome
        .unconfirmed
        .iter()
        .map(|n| json!({"uid": n.id, "name": n.name, "reason": n.why}))
        .collect();
    json!({
        "error": {
            "code": ErrorCode::INTERNAL.code,
            "message": format!("not confirmed by {} node(s): {}", names.len(), names.join("; ")),
            "temporary": true,
            "nodes": nodes,
        },
        "result": value,
    })
}

async fn unsubscribe(node: &Arc<Node>, req: UnsubscribeReq) -> Value {
    if let Err(e) = node.channel_options(&req.channel) {
        return channel_error(e);
    }
    let command = Command::Unsubscribe {
        user: req.user,
        client: req.client,
        channel: req.channel,
    };
    let outcome = node.cluster.run(node, command).await;
    cluster_answer(&outcome, json!({}))
}

async fn disconnect(node: &Arc<Node>, req: DisconnectReq) -> Value {
    let farewell = match req.disconnect {
        None => None,
        Some(spec) if (3000..5000).contains(&spec.code) && spec.reason.len() <= 123 => {
            Some(Farewell {
                code: spec.code,
                reason: spec.reason,
            })
        }
        Some(_) => return error(ErrorCode::BAD_REQUEST),
    };
    let command = Command::Disconnect {
        user: req.user,
        client: req.client,
        farewell,
    };
    let outcome = node.cluster.run(node, command).await;
    cluster_answer(&outcome, json!({}))
}

/// JSON text of an optional raw value.
fn text(raw: Option<Box<RawValue>>) -> Option<String> {
    raw.map(|r| r.get().to_owned())
}

async fn subscribe(node: &Arc<Node>, req: SubscribeReq) -> Value {
    if let Err(e) = node.channel_options(&req.channel) {
        return channel_error(e);
    }
    let command = Command::Subscribe {
        user: req.user,
        client: req.client,
        channel: req.channel,
        info: text(req.info),
        data: text(req.data),
        recover_since: req.recover_since.map(|s| cluster::command::Since {
            offset: s.offset,
            epoch: s.epoch,
        }),
    };
    let outcome = node.cluster.run(node, command).await;
    cluster_answer(&outcome, json!({}))
}

async fn refresh(node: &Arc<Node>, req: RefreshReq) -> Value {
    let command = Command::Refresh {
        user: req.user,
        client: req.client,
        expired: req.expired,
        expire_at: req.expire_at.filter(|&at| at > 0),
        info: text(req.info),
    };
    let outcome = node.cluster.run(node, command).await;
    cluster_answer(&outcome, json!({}))
}

/// Every live node with its counts as it answers now; a node that does not
/// answer in time is listed as last announced, and named in the error.
async fn info(node: &Arc<Node>) -> Value {
    let outcome = node.cluster.run(node, Command::Info).await;
    let mut nodes: BTreeMap<String, NodeInfo> = node
        .cluster
        .nodes(node)
        .into_iter()
        .map(|n| (n.id.clone(), n))
        .collect();
    for answer in &outcome.answers {
        if let Answer::Node { node } = answer {
            nodes.insert(node.id.clone(), node.clone());
        }
    }
    let nodes: Vec<Value> = nodes
        .into_values()
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
    cluster_answer(&outcome, json!({ "nodes": nodes }))
}

async fn channels(node: &Arc<Node>, req: ChannelsReq) -> Value {
    let outcome = node
        .cluster
        .run(
            node,
            Command::Channels {
                pattern: req.pattern,
            },
        )
        .await;
    let mut merged: BTreeMap<String, usize> = BTreeMap::new();
    for answer in &outcome.answers {
        if let Answer::Channels { channels } = answer {
            for (name, n) in channels {
                *merged.entry(name.clone()).or_default() += n;
            }
        }
    }
    let channels: BTreeMap<String, Value> = merged
        .into_iter()
        .map(|(name, n)| (name, json!({ "num_clients": n })))
        .collect();
    cluster_answer(&outcome, json!({ "channels": channels }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_must_match_whole() {
        assert!(same_key("s3cret", "s3cret"));
        for wrong in ["", "s3cre", "s3cret!", "S3cret", "x3cret"] {
            assert!(!same_key(wrong, "s3cret"), "{wrong:?}");
        }
    }

    #[tokio::test]
    async fn either_header_carries_the_key() {
        let node = Node::standalone(crate::config::Config {
            api_key: Some("s3cret".into()),
            ..Default::default()
        });
        let with = |name: &'static str, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, http::HeaderValue::from_static(value));
            authorized(&node, &headers)
        };
        assert!(with("x-api-key", "s3cret"));
        assert!(with("authorization", "apikey s3cret"));
        assert!(!with("x-api-key", "s3cre"));
        assert!(!with("authorization", "apikey s3cret2"));
        assert!(!with("authorization", "bearer s3cret"));
        assert!(!authorized(&node, &HeaderMap::new()));
    }
}
