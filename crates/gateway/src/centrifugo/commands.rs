//! The commands that publish and read: publish, presence, presence stats, history.

use switchboard_core::channel;
use switchboard_core::{HistoryQuery, StreamPosition};
use switchboard_protocol::centrifugo::codes::ErrorCode;
use switchboard_protocol::centrifugo::pb;

use super::encode;
use super::errors::error_code;
use super::session::{error_reply, reply, Outcome, Session};

/// What a read command asks for.
enum Read {
    Presence,
    History,
}

impl Session {
    pub(super) async fn publish(&mut self, id: u32, req: pb::PublishRequest) -> Outcome {
        let options = match self.front.node.channel_options(&req.channel) {
            Ok(o) => o,
            Err(e) => return error_reply(id, error_code(e)),
        };
        let proxy = self.front.node.config.proxies.publish_endpoint(options);
        let (data, skip_history) = match proxy.ok().flatten() {
            // The publish proxy decides, within the user boundary.
            Some(endpoint) if self.within_user_boundary(&req.channel) => {
                match self.publish_by_proxy(id, &endpoint, &req).await {
                    Ok(decided) => decided,
                    Err(outcome) => return outcome,
                }
            }
            Some(_) => return error_reply(id, ErrorCode::PERMISSION_DENIED),
            None => {
                let subscribed = self.subs.get(&req.channel).is_some();
                let allowed = self.front.node.config.insecure
                    || (self.within_user_boundary(&req.channel)
                        && (options.allow_publish_for_client
                            || (options.allow_publish_for_subscriber && subscribed)));
                if !allowed {
                    return error_reply(id, ErrorCode::PERMISSION_DENIED);
                }
                (req.data, false)
            }
        };
        let chan_info = self
            .subs
            .get(&req.channel)
            .and_then(|s| s.chan_info.clone());
        let info = self.identity.client_info(chan_info);
        let published = self
            .front
            .node
            .publish_with(
                &req.channel,
                data,
                Some(info),
                Default::default(),
                skip_history,
            )
            .await;
        match published {
            Ok(_) => {
                metrics::counter!("switchboard_publications_total", "source" => "client")
                    .increment(1);
                reply(id, |r| r.publish = Some(pb::PublishResult {}))
            }
            Err(e) => error_reply(id, error_code(e)),
        }
    }

    /// A user-limited channel (`name#42,43`) is for its users only, whatever else the
    /// namespace allows.
    fn within_user_boundary(&self, channel: &str) -> bool {
        channel::user_allowed(channel, self.user()) != Some(false)
    }

    /// Presence and history need the namespace's `*_for_client` permission, or its
    /// `*_for_subscriber` one and a subscription; `insecure` lifts both.
    fn may_read(&self, channel: &str, what: Read) -> Result<(), ErrorCode> {
        let options = self
            .front
            .node
            .channel_options(channel)
            .map_err(error_code)?;
        let (for_client, for_subscriber) = match what {
            Read::Presence => (
                options.allow_presence_for_client,
                options.allow_presence_for_subscriber,
            ),
            Read::History => (
                options.allow_history_for_client,
                options.allow_history_for_subscriber,
            ),
        };
        let insecure = self.front.node.config.insecure;
        let permitted = for_client || (for_subscriber && self.subs.contains(channel));
        if insecure || (self.within_user_boundary(channel) && permitted) {
            Ok(())
        } else {
            Err(ErrorCode::PERMISSION_DENIED)
        }
    }

    pub(super) async fn presence(&mut self, id: u32, channel: String) -> Outcome {
        if let Err(code) = self.may_read(&channel, Read::Presence) {
            return error_reply(id, code);
        }
        match self.front.node.presence(&channel).await {
            Ok(members) => {
                let presence = members
                    .iter()
                    .map(|(client, info)| (client.clone(), encode::client_info(info)))
                    .collect();
                reply(id, |r| r.presence = Some(pb::PresenceResult { presence }))
            }
            Err(e) => error_reply(id, error_code(e)),
        }
    }

    pub(super) async fn presence_stats(&mut self, id: u32, channel: String) -> Outcome {
        if let Err(code) = self.may_read(&channel, Read::Presence) {
            return error_reply(id, code);
        }
        match self.front.node.presence_stats(&channel).await {
            Ok(stats) => reply(id, |r| {
                r.presence_stats = Some(pb::PresenceStatsResult {
                    num_clients: stats.num_clients,
                    num_users: stats.num_users,
                })
            }),
            Err(e) => error_reply(id, error_code(e)),
        }
    }

    pub(super) async fn history(&mut self, id: u32, req: pb::HistoryRequest) -> Outcome {
        if let Ok(options) = self.front.node.channel_options(&req.channel) {
            if let Err(code) = self.readable(options) {
                return error_reply(id, code);
            }
        }
        if let Err(code) = self.may_read(&req.channel, Read::History) {
            return error_reply(id, code);
        }
        let query = history_query(
            req.limit,
            req.since.map(|s| (s.offset, s.epoch)),
            req.reverse,
        );
        match self.front.node.history(&req.channel, &query).await {
            Ok(result) => reply(id, |r| {
                r.history = Some(pb::HistoryResult {
                    publications: result
                        .publications
                        .iter()
                        .map(encode::publication)
                        .collect(),
                    epoch: result.position.epoch,
                    offset: result.position.offset,
                })
            }),
            Err(e) => error_reply(id, error_code(e)),
        }
    }
}

/// Maps the protocol's history parameters onto a query: a limit of 0 asks only for
/// the stream position, a negative one for everything kept.
pub fn history_query(limit: i32, since: Option<(u64, String)>, reverse: bool) -> HistoryQuery {
    HistoryQuery {
        since: since.map(|(offset, epoch)| StreamPosition { offset, epoch }),
        limit: match limit {
            l if l < 0 => None,
            l => Some(l as usize),
        },
        reverse,
    }
}
