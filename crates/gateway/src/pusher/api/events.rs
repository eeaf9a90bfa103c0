//! `events` and `batch_events`: every event is checked (name, data, socket id,
//! channels) before any is published, then published to its channels in order.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use switchboard_core::{BrokerError, PublishOptions};

use super::queries::{attributes, subscription_counts};
use super::{answer, fail, located, ApiAnswer, Wanted};
use crate::node::Node;
use crate::pusher::channels::{pusher_name, Located};
use crate::pusher::encode::EVENT_TAG;
use crate::pusher::App;

/// Channels one event may go to.
const MAX_CHANNELS_PER_EVENT: usize = 100;
/// Events in one batch.
const MAX_BATCH: usize = 10;
/// Bytes of an event name.
const MAX_EVENT_NAME: usize = 200;

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

pub(super) async fn events(node: &Node, app: &App, body: &[u8]) -> ApiAnswer {
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

pub(super) async fn batch(node: &Node, app: &App, body: &[u8]) -> ApiAnswer {
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
}
