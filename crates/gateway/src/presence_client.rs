//! The gateway's side of the presence service: a [`PresenceStore`] over gRPC.
//!
//! Calls go to the configured replicas in turn; a replica that fails (down,
//! unreachable, past the deadline) is skipped and the next one tried, so a
//! replica dying costs a retry, not a client-visible error. The gateway keeps
//! its own members, which [`presence_refresh`] refreshes in batches well inside
//! the presence TTL and hands over as `NodeGone` on a clean shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_core::presence_refresh::{self, LocalMembers, NodePresence};
use switchboard_core::{BrokerError, ClientInfo, PresenceStats, PresenceStore};
use switchboard_presence::pb::presence_client::PresenceClient;
use switchboard_presence::pb::{self as presence_pb};
use switchboard_presence::{info_to_member, member_to_info, MAX_BATCH};
use tonic::transport::{Channel, Endpoint};

/// Longest wait for one call to one replica.
const DEADLINE: Duration = Duration::from_secs(2);
/// Memberships per refresh or node-gone call; the service takes at most `MAX_BATCH`.
const MEMBERS_PER_CALL: usize = 500;
/// Members asked for per list call, and pages at most: 100,000 members.
const LIST_PAGE: u32 = 10_000;
const LIST_PAGES: usize = 10;

pub struct RemotePresence {
    replicas: Vec<PresenceClient<Channel>>,
    next: AtomicUsize,
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
        let replicas = $self.replicas.len();
        let start = $self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = String::new();
        let mut answer = None;
        for i in 0..replicas {
            let mut client = $self.replicas[(start + i) % replicas].clone();
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
        }
        match answer {
            Some(a) => a,
            None => {
                return Err(BrokerError::Unavailable(format!(
                    "no presence replica answered: {last}"
                )))
            }
        }
    }};
}

impl RemotePresence {
    /// Connects lazily to every replica and starts refreshing this gateway's
    /// members every third of `ttl`.
    pub fn new(
        urls: &[String],
        node: String,
        ttl: Duration,
    ) -> Result<Arc<RemotePresence>, PresenceUrlError> {
        let replicas = urls
            .iter()
            .map(|url| {
                Endpoint::from_shared(url.clone())
                    .map(|e| PresenceClient::new(e.connect_timeout(DEADLINE).connect_lazy()))
                    .map_err(|e| PresenceUrlError {
                        url: url.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if replicas.is_empty() {
            return Err(PresenceUrlError {
                url: String::new(),
                reason: "no URL given".into(),
            });
        }
        let presence = Arc::new(RemotePresence {
            replicas,
            next: AtomicUsize::new(0),
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
    ) -> Result<(), BrokerError> {
        let request = presence_pb::RefreshRequest {
            node: self.node.clone(),
            memberships: memberships(batch),
        };
        call!(self, refresh, request.clone());
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
            .remove(&(channel.to_owned(), member.client.clone()));
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
