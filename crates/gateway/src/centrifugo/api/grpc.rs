//! The server API over gRPC: Centrifugo's `CentrifugoApi` service
//! (`proto/api.proto`), on its own port (`grpc_api_listen`).
//!
//! Each message becomes the [`Call`] the HTTP API parses its JSON into, runs
//! through the same [`run`], and its [`Answer`] becomes the method's response
//! message. Data and info fields carry the bytes as they are; where the HTTP API
//! takes JSON (a subscription's `info` and `data`, a refresh's `info`), so does
//! this one, and fields Centrifugo has that are not served are refused with
//! the error 107 rather than ignored.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use switchboard_core::{ClientInfo, StreamPosition};
use switchboard_protocol::centrifugo::codes::ErrorCode;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::cluster::{
    ChannelsReq, DisconnectReq, DisconnectSpec, RefreshReq, SubscribeReq, UnsubscribeReq,
};
use super::publish::{BroadcastReq, PublicationBody, PublishReq};
use super::reads::{ChannelReq, HistoryReq};
use super::{authorized, run, Answer, ApiError, Call, Reply, Since};
use crate::node::Node;

/// The code generated from `proto/api.proto`.
pub mod pb {
    tonic::include_proto!("centrifugal.centrifugo.api");
}

use pb::centrifugo_api_server::{CentrifugoApi, CentrifugoApiServer};

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let limit = node.config.limits.max_api_body_bytes;
    let service = CentrifugoApiServer::new(Api { node })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}

struct Api {
    node: Arc<Node>,
}

impl Api {
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if authorized(&self.node, &request.metadata().clone().into_headers()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("unauthorized"))
        }
    }

    /// Runs a call, or answers why the message was not one.
    async fn answer(&self, call: Result<Call, String>) -> Answer {
        match call {
            Ok(call) => run(&self.node, call, "grpc").await,
            Err(message) => Answer::failed(ApiError::bad_request(message)),
        }
    }
}

fn error_pb(e: ApiError) -> pb::Error {
    pb::Error {
        code: e.code,
        message: e.message,
    }
}

/// The service: each unary method authorizes, converts its message to a call,
/// runs it and converts the answer back; `batch` runs several.
macro_rules! service {
    ($($name:ident($request:ident) -> $response:ident = $to_call:expr, $result:expr;)*) => {
        #[tonic::async_trait]
        impl CentrifugoApi for Api {
            $(
                async fn $name(
                    &self,
                    request: Request<pb::$request>,
                ) -> Result<Response<pb::$response>, Status> {
                    self.authorize(&request)?;
                    let answer = self.answer($to_call(request.into_inner())).await;
                    Ok(Response::new(pb::$response {
                        error: answer.error.map(error_pb),
                        result: answer.result.and_then($result),
                    }))
                }
            )*

            async fn batch(
                &self,
                request: Request<pb::BatchRequest>,
            ) -> Result<Response<pb::BatchResponse>, Status> {
                self.authorize(&request)?;
                Ok(Response::new(self.run_batch(request.into_inner()).await))
            }
        }
    };
}

service! {
    publish(PublishRequest) -> PublishResponse = publish_call, publish_result;
    broadcast(BroadcastRequest) -> BroadcastResponse = broadcast_call, broadcast_result;
    subscribe(SubscribeRequest) -> SubscribeResponse = subscribe_call, done;
    unsubscribe(UnsubscribeRequest) -> UnsubscribeResponse = unsubscribe_call, done;
    disconnect(DisconnectRequest) -> DisconnectResponse = disconnect_call, done;
    presence(PresenceRequest) -> PresenceResponse = presence_call, presence_result;
    presence_stats(PresenceStatsRequest) -> PresenceStatsResponse =
        presence_stats_call, presence_stats_result;
    history(HistoryRequest) -> HistoryResponse = history_call, history_result;
    info(InfoRequest) -> InfoResponse = info_call, info_result;
    refresh(RefreshRequest) -> RefreshResponse = refresh_call, done;
    channels(ChannelsRequest) -> ChannelsResponse = channels_call, channels_result;
}

impl Api {
    /// Commands one after the other, or all at once when `parallel`; the
    /// replies in the commands' order.
    async fn run_batch(&self, batch: pb::BatchRequest) -> pb::BatchResponse {
        let commands = batch.commands.into_iter().map(|c| self.command(c));
        let replies = if batch.parallel {
            futures::future::join_all(commands).await
        } else {
            let mut replies = Vec::new();
            for command in commands {
                replies.push(command.await);
            }
            replies
        };
        pb::BatchResponse { replies }
    }

    /// One command of a batch: its one method, run, in a reply.
    async fn command(&self, command: pb::Command) -> pb::Reply {
        let mut reply = pb::Reply::default();
        let call = match command {
            pb::Command {
                publish: Some(r), ..
            } => publish_call(r),
            pb::Command {
                broadcast: Some(r), ..
            } => broadcast_call(r),
            pb::Command {
                subscribe: Some(r), ..
            } => subscribe_call(r),
            pb::Command {
                unsubscribe: Some(r),
                ..
            } => unsubscribe_call(r),
            pb::Command {
                disconnect: Some(r),
                ..
            } => disconnect_call(r),
            pb::Command {
                presence: Some(r), ..
            } => presence_call(r),
            pb::Command {
                presence_stats: Some(r),
                ..
            } => presence_stats_call(r),
            pb::Command {
                history: Some(r), ..
            } => history_call(r),
            pb::Command { info: Some(_), .. } => Ok(Call::Info),
            pb::Command {
                refresh: Some(r), ..
            } => refresh_call(r),
            pb::Command {
                channels: Some(r), ..
            } => channels_call(r),
            // A method not served here (or none at all).
            _ => {
                reply.error = Some(error_pb(ApiError::of(ErrorCode::METHOD_NOT_FOUND)));
                return reply;
            }
        };
        let method = call.as_ref().map(Call::method).unwrap_or_default();
        let answer = self.answer(call).await;
        reply.error = answer.error.map(error_pb);
        let Some(result) = answer.result else {
            return reply;
        };
        match method {
            "publish" => reply.publish = publish_result(result),
            "broadcast" => reply.broadcast = broadcast_result(result),
            "subscribe" => reply.subscribe = done(result),
            "unsubscribe" => reply.unsubscribe = done(result),
            "disconnect" => reply.disconnect = done(result),
            "presence" => reply.presence = presence_result(result),
            "presence_stats" => reply.presence_stats = presence_stats_result(result),
            "history" => reply.history = history_result(result),
            "info" => reply.info = info_result(result),
            "refresh" => reply.refresh = done(result),
            "channels" => reply.channels = channels_result(result),
            _ => {}
        }
        reply
    }
}

// Messages to calls.

fn nonempty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

/// Refuses a field Centrifugo has and this API does not serve.
fn not_served(set: bool, field: &str) -> Result<(), String> {
    if set {
        return Err(format!("`{field}` is not supported"));
    }
    Ok(())
}

/// JSON given as bytes or as base64 (at most one), as its text.
fn json_field(bytes: Bytes, b64: String, field: &str) -> Result<Option<String>, String> {
    let bytes = match (bytes.is_empty(), b64.is_empty()) {
        (true, true) => return Ok(None),
        (false, true) => bytes.to_vec(),
        (true, false) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("b64{field} is not base64: {e}"))?,
        (false, false) => return Err(format!("give `{field}` or `b64{field}`, not both")),
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
        .map_err(|e| format!("`{field}` is not JSON: {e}"))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| format!("`{field}` is not UTF-8"))
}

fn publication(
    channel: Option<String>,
    channels: Option<Vec<String>>,
    data: Bytes,
    b64data: String,
    skip_history: bool,
    tags: std::collections::HashMap<String, String>,
    idempotency_key: String,
) -> PublicationBody {
    PublicationBody {
        channel,
        channels,
        data: Some(data).filter(|d| !d.is_empty()),
        b64data: Some(b64data),
        skip_history: Some(skip_history),
        tags: Some(tags.into_iter().collect()),
        idempotency_key: Some(idempotency_key),
        _delta: None,
        _version: None,
        _version_epoch: None,
    }
}

fn publish_call(r: pb::PublishRequest) -> Result<Call, String> {
    let body = publication(
        Some(r.channel),
        None,
        r.data,
        r.b64data,
        r.skip_history,
        r.tags,
        r.idempotency_key,
    );
    PublishReq::try_from(body).map(Call::Publish)
}

fn broadcast_call(r: pb::BroadcastRequest) -> Result<Call, String> {
    let body = publication(
        None,
        Some(r.channels),
        r.data,
        r.b64data,
        r.skip_history,
        r.tags,
        r.idempotency_key,
    );
    BroadcastReq::try_from(body).map(Call::Broadcast)
}

fn since(p: Option<pb::StreamPosition>) -> Option<Since> {
    p.map(|p| Since {
        offset: p.offset,
        epoch: p.epoch,
    })
}

fn subscribe_call(r: pb::SubscribeRequest) -> Result<Call, String> {
    not_served(r.expire_at != 0, "expire_at")?;
    not_served(r.r#override.is_some(), "override")?;
    not_served(!r.session.is_empty(), "session")?;
    Ok(Call::Subscribe(SubscribeReq {
        user: r.user,
        channel: r.channel,
        client: nonempty(r.client),
        info: json_field(r.info, r.b64info, "info")?,
        data: json_field(r.data, r.b64data, "data")?,
        recover_since: since(r.recover_since),
    }))
}

fn unsubscribe_call(r: pb::UnsubscribeRequest) -> Result<Call, String> {
    not_served(!r.session.is_empty(), "session")?;
    Ok(Call::Unsubscribe(UnsubscribeReq {
        channel: r.channel,
        user: r.user,
        client: nonempty(r.client),
    }))
}

fn disconnect_call(r: pb::DisconnectRequest) -> Result<Call, String> {
    not_served(!r.whitelist.is_empty(), "whitelist")?;
    not_served(!r.session.is_empty(), "session")?;
    let disconnect = match r.disconnect {
        None => None,
        Some(d) => Some(DisconnectSpec {
            code: u16::try_from(d.code).map_err(|_| format!("disconnect code {}", d.code))?,
            reason: d.reason,
        }),
    };
    Ok(Call::Disconnect(DisconnectReq {
        user: r.user,
        client: nonempty(r.client),
        disconnect,
    }))
}

fn presence_call(r: pb::PresenceRequest) -> Result<Call, String> {
    Ok(Call::Presence(ChannelReq { channel: r.channel }))
}

fn presence_stats_call(r: pb::PresenceStatsRequest) -> Result<Call, String> {
    Ok(Call::PresenceStats(ChannelReq { channel: r.channel }))
}

fn info_call(_: pb::InfoRequest) -> Result<Call, String> {
    Ok(Call::Info)
}

fn history_call(r: pb::HistoryRequest) -> Result<Call, String> {
    Ok(Call::History(HistoryReq {
        channel: r.channel,
        limit: r.limit,
        since: since(r.since),
        reverse: r.reverse,
    }))
}

fn refresh_call(r: pb::RefreshRequest) -> Result<Call, String> {
    not_served(!r.session.is_empty(), "session")?;
    Ok(Call::Refresh(RefreshReq {
        user: r.user,
        client: nonempty(r.client),
        expired: r.expired,
        expire_at: u64::try_from(r.expire_at).ok().filter(|&at| at > 0),
        info: json_field(r.info, String::new(), "info")?,
    }))
}

fn channels_call(r: pb::ChannelsRequest) -> Result<Call, String> {
    Ok(Call::Channels(ChannelsReq {
        pattern: nonempty(r.pattern),
    }))
}

// Replies to messages. Each takes the reply its method gives, and `None` for
// any other (which `run` never gives it).

fn position(p: StreamPosition) -> pb::PublishResult {
    pb::PublishResult {
        offset: p.offset,
        epoch: p.epoch,
    }
}

fn publish_result(reply: Reply) -> Option<pb::PublishResult> {
    match reply {
        Reply::Position(p) => Some(position(p)),
        _ => None,
    }
}

fn broadcast_result(reply: Reply) -> Option<pb::BroadcastResult> {
    let Reply::Broadcast(answers) = reply else {
        return None;
    };
    let responses = answers
        .into_iter()
        .map(|a| pb::PublishResponse {
            error: a.error.map(error_pb),
            result: a.result.and_then(publish_result),
        })
        .collect();
    Some(pb::BroadcastResult { responses })
}

/// The empty result of the methods that only act.
fn done<T: Default>(reply: Reply) -> Option<T> {
    matches!(reply, Reply::Done).then(T::default)
}

fn client_info(info: ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        user: info.user,
        client: info.client,
        conn_info: info.conn_info.unwrap_or_default(),
        chan_info: info.chan_info.unwrap_or_default(),
    }
}

fn presence_result(reply: Reply) -> Option<pb::PresenceResult> {
    let Reply::Presence(members) = reply else {
        return None;
    };
    let presence = members
        .into_iter()
        .map(|(client, info)| (client, client_info(info)))
        .collect();
    Some(pb::PresenceResult { presence })
}

fn presence_stats_result(reply: Reply) -> Option<pb::PresenceStatsResult> {
    let Reply::PresenceStats(s) = reply else {
        return None;
    };
    Some(pb::PresenceStatsResult {
        num_clients: s.num_clients,
        num_users: s.num_users,
    })
}

fn history_result(reply: Reply) -> Option<pb::HistoryResult> {
    let Reply::History(h) = reply else {
        return None;
    };
    let publications = h
        .publications
        .into_iter()
        .map(|p| pb::Publication {
            data: p.data,
            info: p.info.map(client_info),
            offset: p.offset,
            tags: p.tags.into_iter().collect(),
        })
        .collect();
    Some(pb::HistoryResult {
        publications,
        epoch: h.position.epoch,
        offset: h.position.offset,
    })
}

/// A count as the proto's `uint32` carries it.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn info_result(reply: Reply) -> Option<pb::InfoResult> {
    let Reply::Nodes(nodes) = reply else {
        return None;
    };
    let nodes = nodes
        .into_iter()
        .map(|n| pb::NodeResult {
            uptime: u32::try_from(n.uptime()).unwrap_or(u32::MAX),
            uid: n.id,
            name: n.name,
            version: n.version,
            num_clients: count(n.clients),
            num_users: count(n.users),
            num_channels: count(n.channels),
            num_subs: count(n.subscriptions),
            metrics: None,
            process: None,
        })
        .collect();
    Some(pb::InfoResult { nodes })
}

fn channels_result(reply: Reply) -> Option<pb::ChannelsResult> {
    let Reply::Channels(channels) = reply else {
        return None;
    };
    let channels: BTreeMap<String, usize> = channels;
    let channels = channels
        .into_iter()
        .map(|(name, n)| {
            let info = pb::ChannelInfo {
                num_clients: count(n),
            };
            (name, info)
        })
        .collect();
    Some(pb::ChannelsResult { channels })
}
