//! The queries: the app's channels, one channel, a presence channel's users, and
//! `terminate_connections`, each cluster-wide through the control plane; and the
//! counts an event's `info` asks for.

use std::collections::{BTreeMap, BTreeSet};

use http::StatusCode;
use serde_json::{json, Map, Value};
use switchboard_core::PresenceStore;
use switchboard_protocol::pusher::channel::Kind;
use switchboard_protocol::pusher::codes;

use super::{answer, fail, located, ApiAnswer, Wanted};
use crate::cluster::{command::Farewell, Answer, Command};
use crate::node::Node;
use crate::pusher::channels::{pusher_name, Located};
use crate::pusher::App;

/// Subscriptions per core channel of the app, cluster-wide (empty when not wanted).
pub(super) async fn subscription_counts(
    node: &Node,
    app: &App,
    wanted: Wanted,
) -> BTreeMap<String, usize> {
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
pub(super) async fn attributes(
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

pub(super) async fn channels(
    node: &Node,
    app: &App,
    prefix: Option<&str>,
    info: Option<&str>,
) -> ApiAnswer {
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

pub(super) async fn channel_info(
    node: &Node,
    app: &App,
    name: &str,
    info: Option<&str>,
) -> ApiAnswer {
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

pub(super) async fn users(node: &Node, app: &App, name: &str) -> ApiAnswer {
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

pub(super) async fn terminate(node: &Node, app: &App, user: &str) -> ApiAnswer {
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
