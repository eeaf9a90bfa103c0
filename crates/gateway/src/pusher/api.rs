//! The Pusher HTTP API at `/apps/{id}/*`, as every Pusher server SDK calls it:
//! signed requests (`auth_key`, `auth_timestamp`, `auth_version`, `body_md5`,
//! `auth_signature`), events to channels (with `socket_id` exclusion), batches,
//! and channel, presence and user queries. Every query and `terminate_connections`
//! acts on the whole cluster, whichever gateway is asked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use switchboard_core::{now_micros, BrokerError, PresenceStore, PublishOptions};
use switchboard_protocol::pusher::auth::{self, ApiAuthError};
use switchboard_protocol::pusher::channel::Kind;

use super::channels::{locate, pusher_name, Located};
use super::encode::EVENT_TAG;
use super::{App, Pusher};
use crate::cluster::{command::Farewell, Answer, Command};
use crate::node::Node;
use switchboard_protocol::pusher::codes;

/// Channels one event may go to.
const MAX_CHANNELS_PER_EVENT: usize = 100;
/// Events in one batch.
const MAX_BATCH: usize = 10;
/// Bytes of an event name.
const MAX_EVENT_NAME: usize = 200;

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

/// One event of `events` or `batch_events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    name: String,
    data: Value,
    channel: Option<String>,
    channels: Option<Vec<String>>,
    socket_id: Option<String>,
    info: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    batch: Vec<Event>,
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

fn check_socket_id(socket_id: &str) -> bool {
    let mut parts = socket_id.split('.');
    let digits =
        |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// Checks one event; its channels, located.
fn check_event(app: &App, event: &Event) -> Result<Vec<Located>, ApiAnswer> {
    if event.name.is_empty() || event.name.len() > MAX_EVENT_NAME {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("event name must be 1-{MAX_EVENT_NAME} bytes"),
        ));
    }
    let Value::String(data) = &event.data else {
        return Err(fail(StatusCode::BAD_REQUEST, "data must be a string"));
    };
    if data.len() > app.config.max_event_bytes {
        return Err(fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("data is over {} bytes", app.config.max_event_bytes),
        ));
    }
    if event
        .socket_id
        .as_deref()
        .is_some_and(|s| !check_socket_id(s))
    {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "socket_id must be digits.digits",
        ));
    }
    let names: Vec<&String> = match (&event.channel, &event.channels) {
        (Some(one), None) => vec![one],
        (None, Some(many)) => many.iter().collect(),
        _ => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "give either channel or channels",
            ))
        }
    };
    if names.is_empty() || names.len() > MAX_CHANNELS_PER_EVENT {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("an event goes to 1-{MAX_CHANNELS_PER_EVENT} channels"),
        ));
    }
    names.into_iter().map(|n| located(app, n)).collect()
}

/// Publishes a checked event to its channels, in the order given.
async fn publish(node: &Node, event: &Event, channels: &[Located]) -> Result<(), ApiAnswer> {
    let data = Bytes::from(event.data.to_string());
    for channel in channels {
        let publish = PublishOptions {
            history: channel.history(),
            exclude_client: event.socket_id.clone(),
            tags: BTreeMap::from([(EVENT_TAG.to_owned(), event.name.clone())]),
            ..Default::default()
        };
        let published = node
            .broker
            .publish(&channel.internal, data.clone(), None, &publish)
            .await;
        match published {
            Ok(_) => {}
            Err(BrokerError::Unconfirmed(e)) => {
                tracing::warn!(channel = channel.internal, error = %e, "Pusher event not confirmed");
                return Err(fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the event was not confirmed in time: it may have been published",
                ));
            }
            Err(e) => {
                tracing::warn!(channel = channel.internal, error = %e, "Pusher event not published");
                return Err(fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the event could not be published; try again",
                ));
            }
        }
    }
    Ok(())
}

async fn events(node: &Node, app: &App, body: &[u8]) -> ApiAnswer {
    let event: Event = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let wanted = match Wanted::parse(event.info.as_deref()) {
        Ok(w) => w,
        Err(a) => return a,
    };
    let channels = match check_event(app, &event) {
        Ok(c) => c,
        Err(a) => return a,
    };
    if let Err(a) = publish(node, &event, &channels).await {
        return a;
    }
    if !wanted.any() {
        return answer(StatusCode::OK, json!({}));
    }
    let counts = subscription_counts(node, app, wanted).await;
    let mut out = Map::new();
    for channel in &channels {
        let info = attributes(node, channel, wanted, &counts).await;
        out.insert(pusher_name(&channel.internal).to_owned(), info);
    }
    answer(StatusCode::OK, json!({ "channels": out }))
}

async fn batch(node: &Node, app: &App, body: &[u8]) -> ApiAnswer {
    let batch: Batch = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    if batch.batch.is_empty() || batch.batch.len() > MAX_BATCH {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("a batch holds 1-{MAX_BATCH} events"),
        );
    }
    // Every event is checked before any is published: a batch is refused whole.
    let mut checked = Vec::with_capacity(batch.batch.len());
    for event in &batch.batch {
        if event.channels.is_some() {
            return fail(StatusCode::BAD_REQUEST, "a batch event has one channel");
        }
        let wanted = match Wanted::parse(event.info.as_deref()) {
            Ok(w) => w,
            Err(a) => return a,
        };
        match check_event(app, event) {
            Ok(c) => checked.push((c, wanted)),
            Err(a) => return a,
        }
    }
    for (event, (channels, _)) in batch.batch.iter().zip(&checked) {
        if let Err(a) = publish(node, event, channels).await {
            return a;
        }
    }
    if !checked.iter().any(|(_, w)| w.any()) {
        return answer(StatusCode::OK, json!({}));
    }
    let all = Wanted {
        subscription_count: checked.iter().any(|(_, w)| w.subscription_count),
        user_count: false,
    };
    let counts = subscription_counts(node, app, all).await;
    let mut out = Vec::new();
    for (channels, wanted) in &checked {
        let mut info = Value::Object(Map::new());
        if let Some(channel) = channels.first() {
            info = attributes(node, channel, *wanted, &counts).await;
        }
        out.push(info);
    }
    answer(StatusCode::OK, json!({ "batch": out }))
}

/// Subscriptions per core channel of the app, cluster-wide (empty when not wanted).
async fn subscription_counts(node: &Node, app: &App, wanted: Wanted) -> BTreeMap<String, usize> {
    if !wanted.subscription_count {
        return BTreeMap::new();
    }
    occupied(node, app).await
}

/// The app's channels with subscribers on any live gateway, and how many.
async fn occupied(node: &Node, app: &App) -> BTreeMap<String, usize> {
    let command = Command::Channels {
        pattern: Some(format!("{}*", app.config.channel_prefix())),
    };
    let outcome = node.cluster.run(node, command).await;
    if !outcome.unconfirmed.is_empty() {
        tracing::debug!(
            nodes = outcome.unconfirmed.len(),
            "channel counts miss gateways that did not answer"
        );
    }
    let mut merged = BTreeMap::new();
    for answer in &outcome.answers {
        if let Answer::Channels { channels } = answer {
            for (name, n) in channels {
                *merged.entry(name.clone()).or_default() += n;
            }
        }
    }
    merged
}

/// `subscription_count` and `user_count` of one channel, as far as asked and
/// as far as they apply (`user_count`: presence channels).
async fn attributes(
    node: &Node,
    channel: &Located,
    wanted: Wanted,
    counts: &BTreeMap<String, usize>,
) -> Value {
    let mut info = Map::new();
    if wanted.subscription_count {
        let n = counts.get(&channel.internal).copied().unwrap_or(0);
        info.insert("subscription_count".into(), n.into());
    }
    if wanted.user_count && channel.kind.is_presence() {
        if let Ok(stats) = node.presence.stats(&channel.internal).await {
            info.insert("user_count".into(), stats.num_users.into());
        }
    }
    Value::Object(info)
}

async fn channels(node: &Node, app: &App, prefix: Option<&str>, info: Option<&str>) -> ApiAnswer {
    let prefix = prefix.unwrap_or_default();
    let wanted = match Wanted::parse(info) {
        Ok(w) => w,
        Err(a) => return a,
    };
    if wanted.subscription_count {
        return fail(
            StatusCode::BAD_REQUEST,
            "info for a channel list may only ask for user_count",
        );
    }
    if wanted.user_count && !Kind::of(prefix).is_presence() {
        return fail(
            StatusCode::BAD_REQUEST,
            "user_count needs filter_by_prefix of presence- channels",
        );
    }
    let occupied = occupied(node, app).await;
    let mut out = Map::new();
    for internal in occupied.keys() {
        let name = pusher_name(internal);
        if !name.starts_with(prefix) {
            continue;
        }
        let mut attributes = Map::new();
        if wanted.user_count {
            if let Ok(stats) = node.presence.stats(internal).await {
                attributes.insert("user_count".into(), stats.num_users.into());
            }
        }
        out.insert(name.to_owned(), Value::Object(attributes));
    }
    answer(StatusCode::OK, json!({ "channels": out }))
}

async fn channel_info(node: &Node, app: &App, name: &str, info: Option<&str>) -> ApiAnswer {
    let channel = match located(app, name) {
        Ok(c) => c,
        Err(a) => return a,
    };
    let wanted = match Wanted::parse(info) {
        Ok(w) => w,
        Err(a) => return a,
    };
    if wanted.user_count && !channel.kind.is_presence() {
        return fail(
            StatusCode::BAD_REQUEST,
            "user_count is for presence channels",
        );
    }
    let command = Command::Channels {
        pattern: Some(channel.internal.clone()),
    };
    let outcome = node.cluster.run(node, command).await;
    let subscriptions: usize = outcome
        .answers
        .iter()
        .filter_map(|a| match a {
            Answer::Channels { channels } => channels.get(&channel.internal).copied(),
            _ => None,
        })
        .sum();
    let mut out = Map::new();
    out.insert("occupied".into(), (subscriptions > 0).into());
    let counts = BTreeMap::from([(channel.internal.clone(), subscriptions)]);
    if let Value::Object(attributes) = attributes(node, &channel, wanted, &counts).await {
        out.extend(attributes);
    }
    answer(StatusCode::OK, Value::Object(out))
}

async fn users(node: &Node, app: &App, name: &str) -> ApiAnswer {
    let channel = match located(app, name) {
        Ok(c) => c,
        Err(a) => return a,
    };
    if !channel.kind.is_presence() {
        return fail(
            StatusCode::BAD_REQUEST,
            "users are listed for presence channels",
        );
    }
    let presence: &dyn PresenceStore = &*node.presence;
    let present = match presence.get(&channel.internal).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "presence read failed");
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "presence is unavailable; try again",
            );
        }
    };
    let ids: BTreeSet<String> = present.into_values().map(|c| c.user).collect();
    let users: Vec<Value> = ids.into_iter().map(|id| json!({ "id": id })).collect();
    answer(StatusCode::OK, json!({ "users": users }))
}

async fn terminate(node: &Node, app: &App, user: &str) -> ApiAnswer {
    if user.is_empty() {
        return fail(StatusCode::BAD_REQUEST, "user id is empty");
    }
    let command = Command::Disconnect {
        app: Some(app.config.id.clone()),
        user: user.to_owned(),
        client: None,
        farewell: Some(Farewell {
            code: codes::UNAUTHORIZED,
            reason: "connections terminated".into(),
        }),
    };
    let outcome = node.cluster.run(node, command).await;
    if !outcome.unconfirmed.is_empty() {
        let names: Vec<&str> = outcome
            .unconfirmed
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not confirmed by gateways {}; try again", names.join(", ")),
        );
    }
    answer(StatusCode::OK, json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_ids_are_two_runs_of_digits() {
        assert!(check_socket_id("1234.1234"));
        assert!(!check_socket_id("1234"));
        assert!(!check_socket_id("1234.12a"));
        assert!(!check_socket_id("1.2.3"));
        assert!(!check_socket_id(".1"));
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode("presence-a%40b"), "presence-a@b");
        assert_eq!(decode("plain"), "plain");
    }
}
