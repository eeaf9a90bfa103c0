//! The presence service: who is in a channel, across every gateway.
//!
//! Stateless: members live in the JetStream KV bucket ([`PresenceBucket`]), so
//! any number of replicas can run behind one Service and any replica answers
//! any call. Gateways call it through `--presence-url` and refresh their members
//! in batches well inside the TTL; members of a gateway that stops refreshing
//! expire.
//!
//! # Layout
//! - [`config`]: the binary's options, declared once, and the configuration they resolve to.
//! - [`pb`]: the gRPC messages and service from `proto/presence.proto`.
//! - [`PresenceService`]: the service over a bucket.
//! - [`serve`]: the gRPC server on a bound listener, until a shutdown future.
//! - [`probes`]: `/metrics`, `/healthz` and `/readyz` over HTTP.
//!
//! Members of gateways that died are deleted and announced as leaves once by
//! [`switchboard_broker_nats::sweeper`], which the binary runs beside the service.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod config;
pub mod probes;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use switchboard_broker_nats::PresenceBucket;
use switchboard_core::{BrokerError, ClientInfo};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// The generated gRPC messages, client and server.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("switchboard.presence.v1");
}

use pb::presence_server::{Presence, PresenceServer};

/// Members listed per page when the caller does not say.
const DEFAULT_PAGE: usize = 1_000;
/// Members listed per page at most.
const MAX_PAGE: usize = 10_000;
/// Memberships in one refresh or node-gone call at most.
pub const MAX_BATCH: usize = 5_000;

pub struct PresenceService {
    bucket: Arc<PresenceBucket>,
}

impl PresenceService {
    pub fn new(bucket: Arc<PresenceBucket>) -> PresenceService {
        PresenceService { bucket }
    }
}

pub fn member_to_info(m: pb::Member) -> ClientInfo {
    ClientInfo {
        user: m.user,
        client: m.client,
        conn_info: m.conn_info,
        chan_info: m.chan_info,
    }
}

pub fn info_to_member(info: ClientInfo) -> pb::Member {
    pb::Member {
        user: info.user,
        client: info.client,
        conn_info: info.conn_info,
        chan_info: info.chan_info,
    }
}

fn status(e: BrokerError) -> Status {
    match e {
        BrokerError::Unavailable(m) => Status::unavailable(m),
        other => Status::internal(other.to_string()),
    }
}

fn membership(m: Option<pb::Membership>) -> Result<(String, ClientInfo), Status> {
    let m = m.ok_or_else(|| Status::invalid_argument("membership is required"))?;
    let member = m
        .member
        .ok_or_else(|| Status::invalid_argument("member is required"))?;
    if m.channel.is_empty() || member.client.is_empty() {
        return Err(Status::invalid_argument("channel and client are required"));
    }
    Ok((m.channel, member_to_info(member)))
}

fn batch(memberships: Vec<pb::Membership>) -> Result<Vec<(String, ClientInfo)>, Status> {
    if memberships.len() > MAX_BATCH {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_BATCH} memberships per call"
        )));
    }
    memberships
        .into_iter()
        .map(|m| membership(Some(m)))
        .collect()
}

/// Times one RPC and counts its result.
async fn observed<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!("switchboard_presence_rpc_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("switchboard_presence_rpc_total", "method" => method, "result" => outcome)
        .increment(1);
    result.map(Response::new)
}

#[tonic::async_trait]
impl Presence for PresenceService {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinReply>, Status> {
        observed("join", async {
            let (channel, info) = membership(request.into_inner().membership)?;
            let user_joined = self.bucket.join(&channel, info).await.map_err(status)?;
            Ok(pb::JoinReply { user_joined })
        })
        .await
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveReply>, Status> {
        observed("leave", async {
            let r = request.into_inner();
            if r.channel.is_empty() || r.client.is_empty() {
                return Err(Status::invalid_argument("channel and client are required"));
            }
            let member = ClientInfo {
                user: r.user,
                client: r.client,
                ..Default::default()
            };
            let user_left = self
                .bucket
                .leave(&r.channel, &member)
                .await
                .map_err(status)?;
            Ok(pb::LeaveReply { user_left })
        })
        .await
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshReply>, Status> {
        observed("refresh", async {
            let request = request.into_inner();
            for (channel, info) in batch(request.memberships)? {
                if request.lapsed {
                    self.bucket.rejoin(&channel, info).await.map_err(status)?;
                } else {
                    self.bucket.refresh(&channel, info).await.map_err(status)?;
                }
            }
            Ok(pb::RefreshReply {})
        })
        .await
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListReply>, Status> {
        observed("list", async {
            let r = request.into_inner();
            if r.channel.is_empty() {
                return Err(Status::invalid_argument("channel is required"));
            }
            let limit = match r.limit as usize {
                0 => DEFAULT_PAGE,
                n => n.min(MAX_PAGE),
            };
            let start = match r.page.as_str() {
                "" => 0,
                page => page.parse::<u64>().map_err(|_| {
                    Status::invalid_argument("page is not a next_page this service gave")
                })?,
            };
            let page = self
                .bucket
                .page(&r.channel, start, limit)
                .await
                .map_err(status)?;
            let next_page = page.next.map(|n| n.to_string()).unwrap_or_default();
            Ok(pb::ListReply {
                members: page.members.into_iter().map(info_to_member).collect(),
                next_page,
            })
        })
        .await
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsReply>, Status> {
        observed("stats", async {
            let channel = request.into_inner().channel;
            if channel.is_empty() {
                return Err(Status::invalid_argument("channel is required"));
            }
            let s = self.bucket.stats(&channel).await.map_err(status)?;
            Ok(pb::StatsReply {
                num_clients: s.num_clients,
                num_users: s.num_users,
            })
        })
        .await
    }

    async fn node_gone(
        &self,
        request: Request<pb::NodeGoneRequest>,
    ) -> Result<Response<pb::NodeGoneReply>, Status> {
        observed("node_gone", async {
            for (channel, info) in batch(request.into_inner().memberships)? {
                self.bucket.depart(&channel, info).await.map_err(status)?;
            }
            Ok(pb::NodeGoneReply {})
        })
        .await
    }
}

/// Serves the gRPC service on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: PresenceService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(PresenceServer::new(service))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}
