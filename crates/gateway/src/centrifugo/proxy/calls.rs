//! Each proxy call's request body and answer, over the shared exchange of
//! [`super`].

use bytes::Bytes;
use http::Uri;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_core::Disconnect;
use switchboard_protocol::centrifugo::pb;

use super::{
    answer_data, ask, data, encoding, info, protocol, then, Answer, Caller, Data, Envelope, Verdict,
};
use crate::node::Node;

/// The backend's answer to `connect`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ConnectResult {
    pub user: String,
    /// Unix seconds; 0: never.
    pub expire_at: i64,
    info: Option<Box<RawValue>>,
    b64info: String,
    data: Option<Box<RawValue>>,
    b64data: String,
    pub channels: Vec<String>,
}

/// What a connect proxy grants.
pub(in crate::centrifugo) struct Connected {
    pub user: String,
    pub expire_at: Option<u64>,
    pub info: Option<Bytes>,
    pub data: Option<Bytes>,
    pub channels: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubscribeResult {
    info: Option<Box<RawValue>>,
    b64info: String,
    data: Option<Box<RawValue>>,
    b64data: String,
    /// Unix seconds; 0: never.
    expire_at: i64,
}

/// What a subscribe proxy grants: the channel info, data for the reply, and
/// until when (`None`: for good).
pub(in crate::centrifugo) struct Subscribed {
    pub info: Option<Bytes>,
    pub data: Option<Bytes>,
    pub expire_at: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PublishResult {
    data: Option<Box<RawValue>>,
    b64data: String,
    skip_history: bool,
}

/// What a publish proxy allows: the data to publish (the client's, or the
/// backend's instead), and whether to keep it out of history.
pub(in crate::centrifugo) struct Publishing {
    pub data: Bytes,
    pub skip_history: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RpcResult {
    data: Option<Box<RawValue>>,
    b64data: String,
}

#[derive(Serialize)]
struct ConnectBody<'a> {
    #[serde(flatten)]
    data: Data,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    version: &'a str,
}

/// A client connecting without a token: who is it?
pub(in crate::centrifugo) async fn connect(
    node: &Node,
    endpoint: &Uri,
    caller: &Caller<'_>,
    req: &pb::ConnectRequest,
) -> Verdict<Connected> {
    let body = ConnectBody {
        data: data(caller.encoding, &req.data),
        name: &req.name,
        version: &req.version,
    };
    let verdict = ask::<_, ConnectResult>(node, "connect_proxy", endpoint, caller, body).await;
    then(verdict, "connect_proxy", |r| {
        Ok(Connected {
            info: info(r.info, &r.b64info)?,
            data: answer_data(r.data, r.b64data, caller.encoding)?,
            expire_at: u64::try_from(r.expire_at).ok().filter(|&at| at > 0),
            user: r.user,
            channels: r.channels,
        })
    })
}

#[derive(Serialize)]
struct ChannelBody<'a> {
    channel: &'a str,
    #[serde(flatten)]
    data: Data,
}

/// A client subscribing without a subscription token: may it?
pub(in crate::centrifugo) async fn subscribe(
    node: &Node,
    endpoint: &Uri,
    caller: &Caller<'_>,
    req: &pb::SubscribeRequest,
) -> Verdict<Subscribed> {
    let body = ChannelBody {
        channel: &req.channel,
        data: data(caller.encoding, &req.data),
    };
    let verdict = ask::<_, SubscribeResult>(node, "subscribe_proxy", endpoint, caller, body).await;
    then(verdict, "subscribe_proxy", |r| {
        Ok(Subscribed {
            info: info(r.info, &r.b64info)?,
            data: answer_data(r.data, r.b64data, caller.encoding)?,
            expire_at: u64::try_from(r.expire_at).ok().filter(|&at| at > 0),
        })
    })
}

/// A client publishing: may it, and what goes out?
pub(in crate::centrifugo) async fn publish(
    node: &Node,
    endpoint: &Uri,
    caller: &Caller<'_>,
    req: &pb::PublishRequest,
) -> Verdict<Publishing> {
    let body = ChannelBody {
        channel: &req.channel,
        data: data(caller.encoding, &req.data),
    };
    let verdict = ask::<_, PublishResult>(node, "publish_proxy", endpoint, caller, body).await;
    then(verdict, "publish_proxy", |r| {
        Ok(Publishing {
            data: answer_data(r.data, r.b64data, caller.encoding)?
                .unwrap_or_else(|| req.data.clone()),
            skip_history: r.skip_history,
        })
    })
}

#[derive(Serialize)]
struct RpcBody<'a> {
    method: &'a str,
    #[serde(flatten)]
    data: Data,
}

/// A client's rpc: the backend's answer data.
pub(in crate::centrifugo) async fn rpc(
    node: &Node,
    endpoint: &Uri,
    caller: &Caller<'_>,
    req: &pb::RpcRequest,
) -> Verdict<Bytes> {
    let body = RpcBody {
        method: &req.method,
        data: data(caller.encoding, &req.data),
    };
    let verdict = ask::<_, RpcResult>(node, "rpc_proxy", endpoint, caller, body).await;
    then(verdict, "rpc_proxy", |r| {
        Ok(answer_data(r.data, r.b64data, caller.encoding)?.unwrap_or_default())
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RefreshResult {
    expired: bool,
    expire_at: i64,
    info: Option<Box<RawValue>>,
    b64info: String,
}

/// What a refresh proxy decides: the connection goes on until `expire_at`
/// (`None`: for good), with new info if given; or it has expired.
pub(in crate::centrifugo) struct Refreshed {
    pub expired: bool,
    pub expire_at: Option<u64>,
    pub info: Option<Bytes>,
}

/// A refresh or sub_refresh answer as what it decides.
fn refreshed(r: RefreshResult) -> Result<Refreshed, String> {
    Ok(Refreshed {
        expired: r.expired,
        expire_at: u64::try_from(r.expire_at).ok().filter(|&at| at > 0),
        info: info(r.info, &r.b64info)?,
    })
}

/// The credentials of a connection the connect proxy let in have expired:
/// does it go on?
pub(in crate::centrifugo) async fn refresh(
    node: &Node,
    endpoint: &Uri,
    caller: &Caller<'_>,
) -> Verdict<Refreshed> {
    #[derive(Serialize)]
    struct Nothing {}
    let verdict =
        ask::<_, RefreshResult>(node, "refresh_proxy", endpoint, caller, Nothing {}).await;
    then(verdict, "refresh_proxy", refreshed)
}

/// A subscription the subscribe proxy granted until now: does it go on?
pub(in crate::centrifugo) async fn sub_refresh(
    node: &Node,
    endpoint: &Uri,
    caller: &Caller<'_>,
    channel: &str,
) -> Verdict<Refreshed> {
    #[derive(Serialize)]
    struct Channel<'a> {
        channel: &'a str,
    }
    let body = Channel { channel };
    let verdict = ask::<_, RefreshResult>(node, "sub_refresh_proxy", endpoint, caller, body).await;
    then(verdict, "sub_refresh_proxy", refreshed)
}

/// A client's asynchronous message, for the backend. Only a disconnect in the
/// answer matters (any 2xx answer is taken): there is nobody to tell about an
/// error.
pub(in crate::centrifugo) async fn send(
    node: &Node,
    endpoint: &Uri,
    caller: &Caller<'_>,
    req: &pb::SendRequest,
) -> Option<Disconnect> {
    let body = Envelope {
        client: caller.client,
        transport: caller.request.transport,
        protocol: protocol(caller.encoding),
        encoding: encoding(caller.encoding),
        user: caller.user,
        body: data(caller.encoding, &req.data),
    };
    let body = Bytes::from(serde_json::to_vec(&body).ok()?);
    let answer = node
        .backend
        .post_json("send_proxy", endpoint, &caller.request.headers, body)
        .await;
    match answer {
        Ok(answer) => {
            let answer: Answer<serde::de::IgnoredAny> = serde_json::from_slice(&answer).ok()?;
            answer
                .disconnect
                .map(|d| Disconnect::custom(d.code, d.reason))
        }
        Err(e) => {
            tracing::warn!(client = caller.client, error = %e, "send proxy call failed");
            None
        }
    }
}
