//! `presence`, `presence_stats` and `history`: reads of the shared stores.

use std::sync::Arc;

use serde::Deserialize;

use super::super::history_query;
use super::{Answer, Reply, Since};
use crate::node::Node;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::centrifugo) struct ChannelReq {
    pub(super) channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::centrifugo) struct HistoryReq {
    pub(super) channel: String,
    #[serde(default)]
    pub(super) limit: i32,
    #[serde(default)]
    pub(super) since: Option<Since>,
    #[serde(default)]
    pub(super) reverse: bool,
}

pub(super) async fn presence(node: &Arc<Node>, req: ChannelReq) -> Answer {
    match node.presence(&req.channel).await {
        Ok(members) => Answer::ok(Reply::Presence(members)),
        Err(e) => Answer::channel_error(e),
    }
}

pub(super) async fn presence_stats(node: &Arc<Node>, req: ChannelReq) -> Answer {
    match node.presence_stats(&req.channel).await {
        Ok(stats) => Answer::ok(Reply::PresenceStats(stats)),
        Err(e) => Answer::channel_error(e),
    }
}

pub(super) async fn history(node: &Arc<Node>, req: HistoryReq) -> Answer {
    let query = history_query(
        req.limit,
        req.since.map(|s| (s.offset, s.epoch)),
        req.reverse,
    );
    match node.history(&req.channel, &query).await {
        Ok(h) => Answer::ok(Reply::History(h)),
        Err(e) => Answer::channel_error(e),
    }
}
