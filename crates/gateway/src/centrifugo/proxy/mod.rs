//! Centrifugo's HTTP proxies: the application backend decides a client's
//! connect, subscribe, publish and rpc, and takes its `send` messages, over
//! Centrifugo's proxy JSON (each request names the client, transport, protocol
//! and encoding; each answer is `{"result": …}`, `{"error": {code, message}}` or
//! `{"disconnect": {code, reason}}`).
//!
//! Data goes as `data` (JSON) to and from JSON connections, as `b64data` to and
//! from protobuf ones; an answer JSON connections could not read is the
//! backend's failure. A backend that fails, is slow or busy (see
//! [`crate::backend`]) gets the client error 100 (temporary): the client retries.
//!
//! This file is the exchange every call shares (the envelope, data both ways,
//! the answer and its verdict); `calls.rs` has each call's body and result.

mod calls;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Uri;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_core::Disconnect;
use switchboard_protocol::centrifugo::codes::ErrorCode;
use switchboard_protocol::centrifugo::{pb, Encoding};

use crate::config::Proxies;
use crate::node::Node;

pub(super) use calls::{
    connect, publish, refresh, rpc, send, sub_refresh, subscribe, Connected, Subscribed,
};

/// What the client's HTTP request said that the backend may hear: the
/// transport, and the headers `[proxy] http_headers` lets through.
#[derive(Debug, Default, Clone)]
pub struct ClientRequest {
    pub transport: &'static str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ClientRequest {
    /// The allowed headers of `headers`, for a client over `transport`.
    pub fn new(proxies: &Proxies, transport: &'static str, headers: &HeaderMap) -> ClientRequest {
        let headers = proxies
            .http_headers
            .iter()
            .flat_map(|name| {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| (name.clone(), v.clone()))
            })
            .collect();
        ClientRequest { transport, headers }
    }
}

/// The connection a proxy request is about.
pub(super) struct Caller<'a> {
    pub client: &'a str,
    pub user: &'a str,
    pub encoding: Encoding,
    pub request: &'a ClientRequest,
}

/// The backend's verdict.
pub(super) enum Verdict<T> {
    Allow(T),
    /// A reply error for the client: the backend's, or 100 when it failed.
    Refuse(pb::Error),
    Disconnect(Disconnect),
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    client: &'a str,
    transport: &'a str,
    protocol: &'static str,
    encoding: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    user: &'a str,
    #[serde(flatten)]
    body: T,
}

/// Data as the proxy request carries it: JSON for JSON connections, base64
/// for protobuf ones.
/// (A `Value`, not a `RawValue`: serde cannot flatten the latter.)
#[derive(Serialize, Default)]
struct Data {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b64data: Option<String>,
}

fn data(encoding: Encoding, bytes: &[u8]) -> Data {
    if bytes.is_empty() {
        return Data::default();
    }
    match (encoding, serde_json::from_slice(bytes).ok()) {
        (Encoding::Json, Some(raw)) => Data {
            data: Some(raw),
            b64data: None,
        },
        _ => Data {
            data: None,
            b64data: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        },
    }
}

#[derive(Deserialize)]
struct Answer<R> {
    result: Option<R>,
    error: Option<ErrorJson>,
    disconnect: Option<DisconnectJson>,
}

#[derive(Deserialize)]
struct ErrorJson {
    code: u32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    temporary: bool,
}

#[derive(Deserialize)]
struct DisconnectJson {
    code: u16,
    #[serde(default)]
    reason: String,
}

/// Data as an answer carries it (`data` JSON or `b64data`): the bytes, if
/// any; `Err` when they are not base64, or not JSON for a JSON connection.
fn answer_data(
    data: Option<Box<RawValue>>,
    b64data: String,
    encoding: Encoding,
) -> Result<Option<Bytes>, String> {
    match (data, b64data.is_empty()) {
        (Some(raw), true) => Ok(Some(Bytes::copy_from_slice(raw.get().as_bytes()))),
        (None, true) => Ok(None),
        (_, false) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&b64data)
                .map_err(|e| format!("b64data is not base64: {e}"))?;
            if encoding == Encoding::Json
                && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err()
            {
                return Err("b64data is not JSON, which a JSON connection cannot receive".into());
            }
            Ok(Some(Bytes::from(bytes)))
        }
    }
}

/// Info given as JSON or as base64 (an answer's `info` / `b64info`).
fn info(raw: Option<Box<RawValue>>, b64: &str) -> Result<Option<Bytes>, String> {
    match (raw, b64.is_empty()) {
        (Some(raw), true) => Ok(Some(Bytes::copy_from_slice(raw.get().as_bytes()))),
        (None, true) => Ok(None),
        (_, false) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| format!("b64info is not base64: {e}")),
    }
}

fn internal() -> pb::Error {
    let code = ErrorCode::INTERNAL;
    pb::Error {
        code: code.code,
        message: code.message.to_owned(),
        temporary: code.temporary,
    }
}

fn protocol(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Json => "json",
        Encoding::Protobuf => "protobuf",
    }
}

/// Centrifugo names the protobuf protocol's encoding "binary".
fn encoding(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Json => "json",
        Encoding::Protobuf => "binary",
    }
}

/// Posts one proxy request and reads its answer into a verdict.
async fn ask<B: Serialize, R: DeserializeOwned>(
    node: &Node,
    call: &'static str,
    endpoint: &Uri,
    caller: &Caller<'_>,
    body: B,
) -> Verdict<R> {
    let envelope = Envelope {
        client: caller.client,
        transport: caller.request.transport,
        protocol: protocol(caller.encoding),
        encoding: encoding(caller.encoding),
        user: caller.user,
        body,
    };
    let body = match serde_json::to_vec(&envelope) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::warn!(call, error = %e, "proxy request cannot be encoded");
            return Verdict::Refuse(internal());
        }
    };
    let answer = match node
        .backend
        .post_json(call, endpoint, &caller.request.headers, body)
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(call, client = caller.client, error = %e, "proxy call failed");
            return Verdict::Refuse(internal());
        }
    };
    let answer: Answer<R> = match serde_json::from_slice(&answer) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(call, error = %e, "the backend's proxy answer is not its JSON");
            metrics::counter!("switchboard_backend_requests_total", "call" => call, "result" => "bad_answer")
                .increment(1);
            return Verdict::Refuse(internal());
        }
    };
    if let Some(d) = answer.disconnect {
        return Verdict::Disconnect(Disconnect::custom(d.code, d.reason));
    }
    if let Some(e) = answer.error {
        return Verdict::Refuse(pb::Error {
            code: e.code,
            message: e.message,
            temporary: e.temporary,
        });
    }
    match answer.result {
        Some(result) => Verdict::Allow(result),
        None => {
            tracing::warn!(
                call,
                "the backend's proxy answer has no result, error or disconnect"
            );
            Verdict::Refuse(internal())
        }
    }
}

/// Maps an allowed answer, a malformed one becoming the backend's failure.
fn then<R, T>(
    verdict: Verdict<R>,
    call: &'static str,
    f: impl FnOnce(R) -> Result<T, String>,
) -> Verdict<T> {
    match verdict {
        Verdict::Allow(r) => match f(r) {
            Ok(t) => Verdict::Allow(t),
            Err(e) => {
                tracing::warn!(call, error = %e, "the backend's proxy answer is unusable");
                Verdict::Refuse(internal())
            }
        },
        Verdict::Refuse(e) => Verdict::Refuse(e),
        Verdict::Disconnect(d) => Verdict::Disconnect(d),
    }
}
