//! The cluster-wide methods: they act on (or count) connections on every live
//! gateway through [`crate::cluster`], and name the gateways that did not confirm.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_core::channel;
use switchboard_protocol::centrifugo::codes::ErrorCode;

use super::{Answer, ApiError, Reply, Since};
use crate::cluster::{self, command::Farewell, Answer as NodeAnswer, Command, NodeInfo, Outcome};
use crate::node::Node;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::centrifugo) struct UnsubscribeReq {
    pub(super) channel: String,
    pub(super) user: String,
    #[serde(default)]
    pub(super) client: Option<String>,
}

#[derive(Deserialize)]
pub(in crate::centrifugo) struct DisconnectSpec {
    pub(super) code: u16,
    #[serde(default)]
    pub(super) reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::centrifugo) struct DisconnectReq {
    pub(super) user: String,
    #[serde(default)]
    pub(super) client: Option<String>,
    #[serde(default)]
    pub(super) disconnect: Option<DisconnectSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::centrifugo) struct SubscribeReq {
    pub(super) user: String,
    pub(super) channel: String,
    #[serde(default)]
    pub(super) client: Option<String>,
    #[serde(default, deserialize_with = "json_text")]
    pub(super) info: Option<String>,
    #[serde(default, deserialize_with = "json_text")]
    pub(super) data: Option<String>,
    #[serde(default)]
    pub(super) recover_since: Option<Since>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::centrifugo) struct RefreshReq {
    pub(super) user: String,
    #[serde(default)]
    pub(super) client: Option<String>,
    #[serde(default)]
    pub(super) expired: bool,
    #[serde(default)]
    pub(super) expire_at: Option<u64>,
    #[serde(default, deserialize_with = "json_text")]
    pub(super) info: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::centrifugo) struct ChannelsReq {
    #[serde(default)]
    pub(super) pattern: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Empty {}

/// JSON text of a value as it was written (null included).
fn json_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Box::<RawValue>::deserialize(d).map(|raw| Some(raw.get().to_owned()))
}

/// A cluster-wide answer: the result, and when some live node did not confirm,
/// also an error naming them (temporary: the call can be repeated).
fn cluster_answer(outcome: Outcome, reply: Reply) -> Answer {
    let mut answer = Answer::ok(reply);
    if !outcome.unconfirmed.is_empty() {
        let names: Vec<String> = outcome
            .unconfirmed
            .iter()
            .map(|n| format!("{} ({}): {}", n.name, n.id, n.why))
            .collect();
        answer.error = Some(ApiError {
            code: ErrorCode::INTERNAL.code,
            message: format!(
                "not confirmed by {} node(s): {}",
                names.len(),
                names.join("; ")
            ),
            unconfirmed: outcome.unconfirmed,
        });
    }
    answer
}

pub(super) async fn unsubscribe(node: &Arc<Node>, req: UnsubscribeReq) -> Answer {
    if let Err(e) = node.channel_options(&req.channel) {
        return Answer::channel_error(e);
    }
    let command = Command::Unsubscribe {
        user: req.user,
        client: req.client,
        channel: req.channel,
    };
    let outcome = node.cluster.run(node, command).await;
    cluster_answer(outcome, Reply::Done)
}

pub(super) async fn disconnect(node: &Arc<Node>, req: DisconnectReq) -> Answer {
    let farewell = match req.disconnect {
        None => None,
        Some(spec) if (3000..5000).contains(&spec.code) && spec.reason.len() <= 123 => {
            Some(Farewell {
                code: spec.code,
                reason: spec.reason,
            })
        }
        Some(_) => return Answer::error(ErrorCode::BAD_REQUEST),
    };
    let command = Command::Disconnect {
        app: None,
        user: req.user,
        client: req.client,
        farewell,
    };
    let outcome = node.cluster.run(node, command).await;
    cluster_answer(outcome, Reply::Done)
}

pub(super) async fn subscribe(node: &Arc<Node>, req: SubscribeReq) -> Answer {
    if let Err(e) = node.channel_options(&req.channel) {
        return Answer::channel_error(e);
    }
    let command = Command::Subscribe {
        user: req.user,
        client: req.client,
        channel: req.channel,
        info: req.info,
        data: req.data,
        recover_since: req.recover_since.map(|s| cluster::command::Since {
            offset: s.offset,
            epoch: s.epoch,
        }),
    };
    let outcome = node.cluster.run(node, command).await;
    cluster_answer(outcome, Reply::Done)
}

pub(super) async fn refresh(node: &Arc<Node>, req: RefreshReq) -> Answer {
    let command = Command::Refresh {
        user: req.user,
        client: req.client,
        expired: req.expired,
        expire_at: req.expire_at.filter(|&at| at > 0),
        info: req.info,
    };
    let outcome = node.cluster.run(node, command).await;
    cluster_answer(outcome, Reply::Done)
}

/// Every live node with its counts as it answers now; a node that does not
/// answer in time is listed as last announced, and named in the error.
pub(super) async fn info(node: &Arc<Node>) -> Answer {
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
        if let NodeAnswer::Node { node } = answer {
            nodes.insert(node.id.clone(), node.clone());
        }
    }
    let nodes = nodes.into_values().collect();
    cluster_answer(outcome, Reply::Nodes(nodes))
}

pub(super) async fn channels(node: &Arc<Node>, req: ChannelsReq) -> Answer {
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
        if let NodeAnswer::Channels { channels } = answer {
            // Pusher apps' channels are another channel space.
            let visible = channels
                .iter()
                .filter(|(name, _)| !channel::is_reserved(name));
            for (name, n) in visible {
                *merged.entry(name.clone()).or_default() += n;
            }
        }
    }
    cluster_answer(outcome, Reply::Channels(merged))
}
