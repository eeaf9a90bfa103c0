//! The gateway's side of the presence service: a [`PresenceStore`] over gRPC.
//!
//! Calls go to the replicas in turn; a replica that fails (down, unreachable,
//! past the deadline) is skipped and the next one tried, so a replica dying
//! costs a retry, not a client-visible error. The replicas are every address the
//! configured URLs resolve to, looked up again and again (`replicas.rs`), so
//! that replicas an autoscaler adds get calls and rescheduled ones are followed.
//! The gateway keeps its own members, which [`presence_refresh`] refreshes in
//! batches well inside the presence TTL and hands over as `NodeGone` on a clean
//! shutdown.

mod replicas;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_core::presence_refresh::{self, LastRefresh, LocalMembers, NodePresence};
use switchboard_core::{BrokerError, ClientInfo, PresenceStats, PresenceStore};
use switchboard_presence::pb::{self as presence_pb};
use switchboard_presence::{info_to_member, member_to_info, MAX_BATCH};

use replicas::Replicas;
pub use replicas::{Discovery, Resolve, SystemResolver};

/// Longest wait for one call to one replica.
const DEADLINE: Duration = Duration::from_secs(2);
/// Memberships per refresh or node-gone call; the service takes at most `MAX_BATCH`.
const MEMBERS_PER_CALL: usize = 500;
/// Members asked for per list call, and pages at most: 100,000 members.
const LIST_PAGE: u32 = 10_000;
const LIST_PAGES: usize = 10;

pub struct RemotePresence {
    replicas: Arc<Replicas>,
    node: String,
    /// This gateway's members by (channel, client).
    local: LocalMembers<(String, String), ClientInfo>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid presence URL {url}: {reason}")]
pub struct PresenceUrlError {
    url: String,
    reason: String,
}

/// Runs one call against the replicas in turn until one answers.
macro_rules! call {
    ($self:ident, $method:ident, $request:expr) => {{
        let (replicas, start) = $self.replicas.pick();
        let mut last = String::from("no replica known yet");
        let mut answer = None;
        for i in 0..replicas.len() {
            let mut client = replicas[(start + i) % replicas.len()].client.clone();
            let mut request = tonic::Request::new($request);
            request.set_timeout(DEADLINE);
            match tokio::time::timeout(DEADLINE, client.$method(request)).await {
                Ok(Ok(reply)) => {
                    answer = Some(reply.into_inner());
                    break;
                }
                Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                    return Err(BrokerError::Internal(status.message().to_owned()));
                }
                Ok(Err(status)) => last = status.to_string(),
                Err(_) => last = "deadline passed".into(),
            }
            metrics::counter!("switchboard_presence_client_retries_total").increment(1);
            // The replica may have moved: look its name up again soon.
            $self.replicas.suspect();
        }
        match answer {
            Some(a) => a,
            None => {
                if replicas.is_empty() {
                    $self.replicas.suspect();
                }
                return Err(BrokerError::Unavailable(format!(
                    "no presence replica answered: {last}"
                )));
            }
        }
    }};
}

impl RemotePresence {
    /// Finds the replicas behind `urls` (connecting lazily) and starts
    /// refreshing this gateway's members every third of `ttl`.
    pub async fn new(
        urls: &[String],
        discovery: Discovery,
        node: String,
        ttl: Duration,
    ) -> Result<Arc<RemotePresence>, PresenceUrlError> {
        let presence = Arc::new(RemotePresence {
            replicas: Replicas::start(urls, discovery).await?,
            node,
            local: LocalMembers::new(),
        });
        presence_refresh::spawn(&presence, ttl);
        Ok(presence)
    }
}

fn memberships(batch: Vec<((String, String), ClientInfo)>) -> Vec<presence_pb::Membership> {
    batch
        .into_iter()
        .map(|((channel, _), info)| presence_pb::Membership {
            channel,
            member: Some(info_to_member(info)),
        })
        .collect()
}

#[async_trait]
impl NodePresence for RemotePresence {
    type Key = (String, String);
    type Member = ClientInfo;
    const BATCH: usize = if MEMBERS_PER_CALL < MAX_BATCH {
        MEMBERS_PER_CALL
    } else {
        MAX_BATCH
    };

    fn local(&self) -> &LocalMembers<(String, String), ClientInfo> {
        &self.local
    }

    async fn refresh_batch(
        &self,
        batch: Vec<((String, String), ClientInfo)>,
        last: LastRefresh,
    ) -> Result<(), BrokerError> {
        let request = presence_pb::RefreshRequest {
            node: self.node.clone(),
            memberships: memberships(batch),
            lapsed: false,
        };
        // Asked at each try: one retried after a freeze goes lapsed.
        call!(
            self,
            refresh,
            presence_pb::RefreshRequest {
                lapsed: last.lapsed(),
                ..request.clone()
            }
        );
        Ok(())
    }

    async fn depart_batch(
        &self,
        batch: Vec<((String, String), ClientInfo)>,
    ) -> Result<(), BrokerError> {
        let request = presence_pb::NodeGoneRequest {
            node: self.node.clone(),
            memberships: memberships(batch),
        };
        call!(self, node_gone, request.clone());
        Ok(())
    }
}

#[async_trait]
impl PresenceStore for RemotePresence {
    async fn add(&self, channel: &str, info: ClientInfo) -> Result<bool, BrokerError> {
        self.local
            .insert((channel.to_owned(), info.client.clone()), info.clone());
        let request = presence_pb::JoinRequest {
            node: self.node.clone(),
            membership: Some(presence_pb::Membership {
                channel: channel.to_owned(),
                member: Some(info_to_member(info)),
            }),
        };
        Ok(call!(self, join, request.clone()).user_joined)
    }

    async fn remove(&self, channel: &str, member: &ClientInfo) -> Result<bool, BrokerError> {
        self.local
            .remove(&(channel.to_owned(), member.client.clone()))
            .await;
        let request = presence_pb::LeaveRequest {
            node: self.node.clone(),
            channel: channel.to_owned(),
            client: member.client.clone(),
            user: member.user.clone(),
        };
        Ok(call!(self, leave, request.clone()).user_left)
    }

    async fn get(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, BrokerError> {
        let mut members = HashMap::new();
        let mut page = String::new();
        // Bounded: at most LIST_PAGES pages; each starts past the previous one.
        for _ in 0..LIST_PAGES {
            let request = presence_pb::ListRequest {
                channel: channel.to_owned(),
                limit: LIST_PAGE,
                page: page.clone(),
            };
            let reply = call!(self, list, request.clone());
            for m in reply.members {
                let info = member_to_info(m);
                members.insert(info.client.clone(), info);
            }
            if reply.next_page.is_empty() {
                break;
            }
            page = reply.next_page;
        }
        Ok(members)
    }

    async fn stats(&self, channel: &str) -> Result<PresenceStats, BrokerError> {
        let request = presence_pb::StatsRequest {
            channel: channel.to_owned(),
        };
        let reply = call!(self, stats, request.clone());
        Ok(PresenceStats {
            num_clients: reply.num_clients,
            num_users: reply.num_users,
        })
    }

    async fn node_gone(&self) -> Result<(), BrokerError> {
        presence_refresh::depart_all(self).await
    }
}
