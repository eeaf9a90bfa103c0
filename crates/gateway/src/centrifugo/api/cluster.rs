//! The cluster-wide methods: they act on (or count) connections on every live
//! gateway through [`crate::cluster`], and name the gateways that did not confirm.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use switchboard_core::channel;
use switchboard_protocol::centrifugo::codes::ErrorCode;

use super::{channel_error, error, result, Since};
use crate::cluster::{self, command::Farewell, Answer, Command, NodeInfo, Outcome};
use crate::node::Node;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnsubscribeReq {
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
pub(super) struct DisconnectReq {
    user: String,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    disconnect: Option<DisconnectSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubscribeReq {
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
pub(super) struct RefreshReq {
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
pub(super) struct ChannelsReq {
    #[serde(default)]
    pattern: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Empty {}

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

pub(super) async fn unsubscribe(node: &Arc<Node>, req: UnsubscribeReq) -> Value {
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

pub(super) async fn disconnect(node: &Arc<Node>, req: DisconnectReq) -> Value {
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
        app: None,
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

pub(super) async fn subscribe(node: &Arc<Node>, req: SubscribeReq) -> Value {
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

pub(super) async fn refresh(node: &Arc<Node>, req: RefreshReq) -> Value {
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
pub(super) async fn info(node: &Arc<Node>, _: Empty) -> Value {
    let outcome = node.cluster.run(node, Command::Info).await;
    // This node answers for itself (always, in process); the others as announced
    // unless they answered.
    let mut nodes: BTreeMap<String, NodeInfo> = node
        .cluster
        .others(node)
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

pub(super) async fn channels(node: &Arc<Node>, req: ChannelsReq) -> Value {
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
            // Pusher apps' channels are another channel space.
            let visible = channels
                .iter()
                .filter(|(name, _)| !channel::is_reserved(name));
            for (name, n) in visible {
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
