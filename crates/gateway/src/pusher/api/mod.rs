//! The Pusher HTTP API at `/apps/{id}/*`, as every Pusher server SDK calls it:
//! signed requests (`auth_key`, `auth_timestamp`, `auth_version`, `body_md5`,
//! `auth_signature`), events to channels (with `socket_id` exclusion), batches,
//! and channel, presence and user queries. Every query and `terminate_connections`
//! acts on the whole cluster, whichever gateway is asked.
//!
//! # Layout
//! - this file: the signature check, routing, answers, what `info` asks for;
//! - `events`: `events` and `batch_events` (checks, then publishes);
//! - `queries`: `channels`, one channel, its users, `terminate_connections`, and
//!   the counts an event's `info` asks for.

mod events;
mod queries;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use switchboard_core::now_micros;
use switchboard_protocol::pusher::auth::{self, ApiAuthError};

use super::channels::{locate, Located};
use super::{App, Pusher};
use events::{batch, events};
use queries::{channel_info, channels, terminate, users};

/// An answer: the status and its JSON body.
#[derive(Debug)]
pub struct ApiAnswer {
    pub status: StatusCode,
    pub body: Bytes,
}

fn answer(status: StatusCode, body: Value) -> ApiAnswer {
    ApiAnswer {
        status,
        body: Bytes::from(body.to_string()),
    }
}

fn fail(status: StatusCode, message: impl Into<String>) -> ApiAnswer {
    answer(status, json!({ "error": message.into() }))
}

/// What `info` asks for about the channels an event went to.
#[derive(Debug, Default, Clone, Copy)]
struct Wanted {
    subscription_count: bool,
    user_count: bool,
}

impl Wanted {
    fn parse(info: Option<&str>) -> Result<Wanted, ApiAnswer> {
        let mut wanted = Wanted::default();
        for attribute in info.unwrap_or_default().split(',').map(str::trim) {
            match attribute {
                "" => {}
                "subscription_count" => wanted.subscription_count = true,
                "user_count" => wanted.user_count = true,
                other => {
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        format!("unknown info attribute {other:?}"),
                    ))
                }
            }
        }
        Ok(wanted)
    }

    fn any(self) -> bool {
        self.subscription_count || self.user_count
    }
}

/// Handles one request. `path` is the request's path as sent (it is signed),
/// `query` its raw query string.
pub async fn call(
    front: &Arc<Pusher>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> ApiAnswer {
    let Some(rest) = path.strip_prefix("/apps/") else {
        return fail(StatusCode::NOT_FOUND, "not found");
    };
    let (id, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(app) = front.by_id(id) else {
        return fail(StatusCode::NOT_FOUND, format!("unknown app {id:?}"));
    };
    let params = auth::parse_query(query.unwrap_or_default());
    let config = &app.config;
    let key_secret = |key: &str| (key == config.key).then(|| config.secret.clone());
    let now = now_micros() / 1_000_000;
    if let Err(e) = auth::verify_request(method.as_str(), path, &params, body, key_secret, now) {
        metrics::counter!("switchboard_api_requests_total", "method" => "pusher", "result" => "unauthorized").increment(1);
        let status = match e {
            ApiAuthError::Duplicate(_) | ApiAuthError::Malformed => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        };
        return fail(status, e.to_string());
    }
    if !config.enabled {
        return fail(StatusCode::FORBIDDEN, "app is disabled");
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let segments: Vec<String> = rest.split('/').map(decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let node = &front.node;
    let (name, result) = match (method, segments.as_slice()) {
        (&Method::POST, ["events"]) => ("events", events(node, app, body).await),
        (&Method::POST, ["batch_events"]) => ("batch_events", batch(node, app, body).await),
        (&Method::GET, ["channels"]) => (
            "channels",
            channels(node, app, param("filter_by_prefix"), param("info")).await,
        ),
        (&Method::GET, ["channels", channel]) => (
            "channel",
            channel_info(node, app, channel, param("info")).await,
        ),
        (&Method::GET, ["channels", channel, "users"]) => {
            ("users", users(node, app, channel).await)
        }
        (&Method::POST, ["users", user, "terminate_connections"]) => {
            ("terminate_connections", terminate(node, app, user).await)
        }
        _ => ("unknown", fail(StatusCode::NOT_FOUND, "no such API method")),
    };
    let outcome = if result.status.is_success() {
        "ok"
    } else {
        "error"
    };
    metrics::counter!("switchboard_api_requests_total", "method" => format!("pusher_{name}"), "result" => outcome)
        .increment(1);
    result
}

/// A path segment, percent-decoded.
fn decode(segment: &str) -> String {
    form_urlencoded::parse(format!("s={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.replace(' ', "+"))
        .unwrap_or_default()
}

fn located(app: &App, name: &str) -> Result<Located, ApiAnswer> {
    locate(&app.config, name)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("channel {name:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode("presence-a%40b"), "presence-a@b");
        assert_eq!(decode("plain"), "plain");
    }
}
