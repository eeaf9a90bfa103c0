//! `publish` and `broadcast`: every field of Centrifugo's PublishRequest and
//! BroadcastRequest.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_core::PublishOptions;
use switchboard_protocol::centrifugo::codes::ErrorCode;

use super::{Answer, Reply};
use crate::node::Node;

/// The body of `publish` and `broadcast`: the fields Centrifugo's PublishRequest and
/// BroadcastRequest share, declared once (publish names a `channel`, broadcast
/// `channels`). Any of them may be null, as Centrifugo's decoding allows.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublicationBody {
    pub(super) channel: Option<String>,
    pub(super) channels: Option<Vec<String>>,
    /// JSON `null` is data too: absent is not. (Over gRPC the bytes as they are.)
    #[serde(default, deserialize_with = "present")]
    pub(super) data: Option<Bytes>,
    pub(super) b64data: Option<String>,
    pub(super) skip_history: Option<bool>,
    pub(super) tags: Option<BTreeMap<String, String>>,
    pub(super) idempotency_key: Option<String>,
    // Accepted and ignored (docs/compatibility.md): delta compression and
    // document versions.
    #[serde(rename = "delta")]
    pub(super) _delta: Option<bool>,
    #[serde(rename = "version")]
    pub(super) _version: Option<u64>,
    #[serde(rename = "version_epoch")]
    pub(super) _version_epoch: Option<String>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
    Box::<RawValue>::deserialize(d).map(|raw| Some(Bytes::copy_from_slice(raw.get().as_bytes())))
}

/// A publication as `publish` and `broadcast` asked for it, checked.
struct Outgoing {
    data: Bytes,
    /// Tags and idempotency key; the node adds the history.
    options: PublishOptions,
    skip_history: bool,
}

impl PublicationBody {
    /// The payload (exactly one of `data` and `b64data`) and the options.
    fn outgoing(self) -> Result<Outgoing, String> {
        // Centrifugo's SDKs may send the empty string for "none".
        let b64data = self.b64data.filter(|d| !d.is_empty());
        let data = match (self.data, b64data) {
            (Some(data), None) => data,
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| format!("b64data is not base64: {e}"))?,
            (None, None) => return Err("missing field `data` (or `b64data`)".into()),
            (Some(_), Some(_)) => return Err("give `data` or `b64data`, not both".into()),
        };
        Ok(Outgoing {
            data,
            options: PublishOptions {
                tags: self.tags.unwrap_or_default(),
                idempotency_key: self.idempotency_key.filter(|k| !k.is_empty()),
                ..Default::default()
            },
            skip_history: self.skip_history.unwrap_or(false),
        })
    }
}

#[derive(Deserialize)]
#[serde(try_from = "PublicationBody")]
pub(in crate::centrifugo) struct PublishReq {
    channel: String,
    publication: Outgoing,
}

impl TryFrom<PublicationBody> for PublishReq {
    type Error = String;

    fn try_from(mut body: PublicationBody) -> Result<Self, String> {
        if body.channels.is_some() {
            return Err("unknown field `channels` (publish takes `channel`)".into());
        }
        let channel = body.channel.take().ok_or("missing field `channel`")?;
        Ok(PublishReq {
            channel,
            publication: body.outgoing()?,
        })
    }
}

#[derive(Deserialize)]
#[serde(try_from = "PublicationBody")]
pub(in crate::centrifugo) struct BroadcastReq {
    channels: Vec<String>,
    publication: Outgoing,
}

impl TryFrom<PublicationBody> for BroadcastReq {
    type Error = String;

    fn try_from(mut body: PublicationBody) -> Result<Self, String> {
        if body.channel.is_some() {
            return Err("unknown field `channel` (broadcast takes `channels`)".into());
        }
        let channels = body.channels.take().ok_or("missing field `channels`")?;
        Ok(BroadcastReq {
            channels,
            publication: body.outgoing()?,
        })
    }
}

pub(super) async fn publish(node: &Arc<Node>, req: PublishReq) -> Answer {
    let Outgoing {
        data,
        options,
        skip_history,
    } = req.publication;
    match node
        .publish_with(&req.channel, data, None, options, skip_history)
        .await
    {
        Ok(position) => {
            metrics::counter!("switchboard_publications_total", "source" => "api").increment(1);
            Answer::ok(Reply::Position(position))
        }
        Err(e) => Answer::channel_error(e),
    }
}

pub(super) async fn broadcast(node: &Arc<Node>, req: BroadcastReq) -> Answer {
    if req.channels.is_empty() {
        return Answer::error(ErrorCode::BAD_REQUEST);
    }
    let publication = &req.publication;
    let mut answers = Vec::with_capacity(req.channels.len());
    for channel in &req.channels {
        let mut options = publication.options.clone();
        // One key per channel: a retried broadcast is deduplicated channel by channel.
        options.idempotency_key = options.idempotency_key.map(|k| format!("{k}:{channel}"));
        let data = publication.data.clone();
        let published = node
            .publish_with(channel, data, None, options, publication.skip_history)
            .await;
        answers.push(match published {
            Ok(p) => Answer::ok(Reply::Position(p)),
            Err(e) => Answer::channel_error(e),
        });
    }
    Answer::ok(Reply::Broadcast(answers))
}
