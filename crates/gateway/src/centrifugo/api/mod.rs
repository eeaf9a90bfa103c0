//! The server API: Centrifugo-compatible methods for backends, over HTTP
//! (`POST /api/<method>` with a JSON body, authenticated by `X-API-Key` or
//! `Authorization: apikey <key>`) and over gRPC (Centrifugo's `api.proto`, the
//! key as `authorization: apikey <key>` metadata, on `grpc_api_listen`).
//!
//! Calls that act on connections or ask about them (disconnect, unsubscribe,
//! subscribe, refresh, channels, info) act on the whole cluster ([`crate::cluster`]).
//!
//! HTTP replies are `{"result": {...}}` or `{"error": {"code": N, "message":
//! "..."}}` with status 200, as Centrifugo's server SDKs expect; a wrong key is a
//! 401, a body that is not the method's JSON a 400, an unknown method a 404.
//!
//! Both APIs parse into one [`Call`], run it through [`run`], and render its
//! [`Answer`] in their own encoding: the methods exist once.
//!
//! # Layout
//! - here: authorization, the calls, answers and replies, the HTTP entry.
//! - `json`: answers as the HTTP API writes them.
//! - `grpc`: the gRPC service: its messages to calls, answers to its messages.
//! - `publish`: `publish` and `broadcast`.
//! - `reads`: `presence`, `presence_stats`, `history`.
//! - `cluster`: the cluster-wide methods (`disconnect`, `unsubscribe`, `subscribe`,
//!   `refresh`, `info`, `channels`).

mod cluster;
pub mod grpc;
mod json;
mod publish;
mod reads;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use switchboard_core::{ClientInfo, HistoryResult, PresenceStats, StreamPosition};
use switchboard_protocol::centrifugo::codes::ErrorCode;

use super::errors::error_code;
use crate::cluster::{NodeInfo, Unconfirmed};
use crate::node::Node;
use cluster::{ChannelsReq, DisconnectReq, RefreshReq, SubscribeReq, UnsubscribeReq};
use publish::{BroadcastReq, PublishReq};
use reads::{ChannelReq, HistoryReq};

/// An API answer over HTTP: status and JSON body.
pub struct ApiResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why a method failed, as both encodings carry it.
#[derive(Debug)]
pub(super) struct ApiError {
    code: u32,
    message: String,
    /// Live gateways that did not confirm a cluster-wide method (the error is
    /// then temporary: the call can be repeated).
    unconfirmed: Vec<Unconfirmed>,
}

impl ApiError {
    fn of(code: ErrorCode) -> ApiError {
        ApiError {
            code: code.code,
            message: code.message.to_owned(),
            unconfirmed: Vec::new(),
        }
    }

    fn bad_request(message: String) -> ApiError {
        ApiError {
            message,
            ..ApiError::of(ErrorCode::BAD_REQUEST)
        }
    }
}

/// What a method answers: a result, an error, or both (a cluster-wide method
/// that some live gateway did not confirm: what the others did, and who).
pub(super) struct Answer {
    result: Option<Reply>,
    error: Option<ApiError>,
}

impl Answer {
    fn ok(reply: Reply) -> Answer {
        Answer {
            result: Some(reply),
            error: None,
        }
    }

    fn error(code: ErrorCode) -> Answer {
        Answer::failed(ApiError::of(code))
    }

    fn failed(error: ApiError) -> Answer {
        Answer {
            result: None,
            error: Some(error),
        }
    }

    fn channel_error(e: crate::node::ChannelError) -> Answer {
        Answer::error(error_code(e))
    }
}

/// A method's result.
pub(super) enum Reply {
    /// `publish`: where the publication went.
    Position(StreamPosition),
    /// `broadcast`: one answer per channel, in the request's order.
    Broadcast(Vec<Answer>),
    Presence(HashMap<String, ClientInfo>),
    PresenceStats(PresenceStats),
    History(HistoryResult),
    /// `subscribe`, `unsubscribe`, `disconnect`, `refresh`: done, nothing to say.
    Done,
    /// `info`: every live gateway.
    Nodes(Vec<NodeInfo>),
    /// `channels`: active channels and their subscriber counts.
    Channels(BTreeMap<String, usize>),
}

/// The methods this API serves, by their HTTP names.
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

/// One method's request, checked: how the HTTP and gRPC APIs both reach the
/// methods.
pub(super) enum Call {
    Publish(PublishReq),
    Broadcast(BroadcastReq),
    Presence(ChannelReq),
    PresenceStats(ChannelReq),
    History(HistoryReq),
    Unsubscribe(UnsubscribeReq),
    Disconnect(DisconnectReq),
    Subscribe(SubscribeReq),
    Refresh(RefreshReq),
    Info,
    Channels(ChannelsReq),
}

impl Call {
    /// Parses the JSON body of `POST /api/<method>`: `Ok(None)` for a method
    /// this API does not serve.
    fn from_json(method: &str, body: &[u8]) -> Result<Option<Call>, String> {
        // An empty body means no parameters (info, channels).
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            body
        };
        Ok(Some(match method {
            "publish" => Call::Publish(parse(body)?),
            "broadcast" => Call::Broadcast(parse(body)?),
            "presence" => Call::Presence(parse(body)?),
            "presence_stats" => Call::PresenceStats(parse(body)?),
            "history" => Call::History(parse(body)?),
            "unsubscribe" => Call::Unsubscribe(parse(body)?),
            "disconnect" => Call::Disconnect(parse(body)?),
            "subscribe" => Call::Subscribe(parse(body)?),
            "refresh" => Call::Refresh(parse(body)?),
            "info" => {
                parse::<cluster::Empty>(body)?;
                Call::Info
            }
            "channels" => Call::Channels(parse(body)?),
            _ => return Ok(None),
        }))
    }

    fn method(&self) -> &'static str {
        match self {
            Call::Publish(_) => "publish",
            Call::Broadcast(_) => "broadcast",
            Call::Presence(_) => "presence",
            Call::PresenceStats(_) => "presence_stats",
            Call::History(_) => "history",
            Call::Unsubscribe(_) => "unsubscribe",
            Call::Disconnect(_) => "disconnect",
            Call::Subscribe(_) => "subscribe",
            Call::Refresh(_) => "refresh",
            Call::Info => "info",
            Call::Channels(_) => "channels",
        }
    }
}

/// Runs one method; `via` names the API it came through, for the metrics.
pub(super) async fn run(node: &Arc<Node>, call: Call, via: &'static str) -> Answer {
    let method = call.method();
    let answer = match call {
        Call::Publish(req) => publish::publish(node, req).await,
        Call::Broadcast(req) => publish::broadcast(node, req).await,
        Call::Presence(req) => reads::presence(node, req).await,
        Call::PresenceStats(req) => reads::presence_stats(node, req).await,
        Call::History(req) => reads::history(node, req).await,
        Call::Unsubscribe(req) => cluster::unsubscribe(node, req).await,
        Call::Disconnect(req) => cluster::disconnect(node, req).await,
        Call::Subscribe(req) => cluster::subscribe(node, req).await,
        Call::Refresh(req) => cluster::refresh(node, req).await,
        Call::Info => cluster::info(node).await,
        Call::Channels(req) => cluster::channels(node, req).await,
    };
    count(method, via, answer.error.is_none());
    answer
}

fn count(method: &'static str, via: &'static str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!("switchboard_api_requests_total", "method" => method, "result" => result, "via" => via)
        .increment(1);
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

#[derive(Deserialize)]
pub(in crate::centrifugo) struct Since {
    #[serde(default)]
    pub(super) offset: u64,
    #[serde(default)]
    pub(super) epoch: String,
}

/// Runs one method of the HTTP API on an already authorized request.
pub async fn call(node: &Arc<Node>, method: &str, body: &[u8]) -> ApiResponse {
    let (status, value) = match Call::from_json(method, body) {
        Ok(Some(call)) => (StatusCode::OK, json::render(&run(node, call, "http").await)),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            json::render(&Answer::error(ErrorCode::METHOD_NOT_FOUND)),
        ),
        Err(message) => (
            StatusCode::BAD_REQUEST,
            json::render(&Answer::failed(ApiError::bad_request(message))),
        ),
    };
    ApiResponse {
        status,
        body: Bytes::from(value.to_string()),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad request: {e}"))
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

    #[test]
    fn every_method_listed_is_parsed_and_no_other() {
        for method in METHODS {
            let parsed = Call::from_json(method, b"{}");
            assert!(!matches!(parsed, Ok(None)), "{method} not parsed");
            if let Ok(Some(call)) = parsed {
                assert_eq!(call.method(), *method);
            }
        }
        assert!(matches!(Call::from_json("history_remove", b"{}"), Ok(None)));
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
