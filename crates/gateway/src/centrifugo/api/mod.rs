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
//!
//! # Layout
//! - here: authorization, the method table, request parsing, reply shapes.
//! - `publish`: `publish` and `broadcast`.
//! - `reads`: `presence`, `presence_stats`, `history`.
//! - `cluster`: the cluster-wide methods (`disconnect`, `unsubscribe`, `subscribe`,
//!   `refresh`, `info`, `channels`).

mod cluster;
mod publish;
mod reads;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_protocol::centrifugo::codes::ErrorCode;

use super::errors::error_code;
use crate::node::Node;
use cluster::{channels, disconnect, info, refresh, subscribe, unsubscribe};
use publish::{broadcast, publish};
use reads::{history, presence, presence_stats};

/// An API answer: HTTP status and JSON body.
pub struct ApiResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

pub(super) fn respond(status: StatusCode, body: Value) -> ApiResponse {
    ApiResponse {
        status,
        body: Bytes::from(body.to_string()),
    }
}

pub(super) fn error(code: ErrorCode) -> Value {
    json!({"error": {"code": code.code, "message": code.message}})
}

pub(super) fn channel_error(e: crate::node::ChannelError) -> Value {
    error(error_code(e))
}

pub(super) fn result(value: Value) -> Value {
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

#[derive(Deserialize)]
pub(super) struct Since {
    #[serde(default)]
    pub(super) offset: u64,
    #[serde(default)]
    pub(super) epoch: String,
}

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
        "info" => run!(info),
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
