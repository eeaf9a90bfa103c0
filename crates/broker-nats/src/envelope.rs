//! The body of every message on NATS, and its mapping to core events.

use bytes::Bytes;
use prost::Message as _;
use switchboard_core::{ChannelEvent, ClientInfo, PresenceChange, Publication, PublishOptions};

#[allow(clippy::all, missing_docs)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/switchboard.broker.rs"));
}

pub use pb::envelope::Kind;
pub use pb::Envelope;

fn to_pb(info: ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        user: info.user,
        client: info.client,
        conn_info: info.conn_info,
        chan_info: info.chan_info,
    }
}

fn from_pb(info: pb::ClientInfo) -> ClientInfo {
    ClientInfo {
        user: info.user,
        client: info.client,
        conn_info: info.conn_info,
        chan_info: info.chan_info,
    }
}

/// Client info alone, as presence values hold it.
pub mod presence_info {
    use prost::Message as _;

    use super::{from_pb, pb, to_pb};
    use switchboard_core::ClientInfo;

    pub fn encode(info: ClientInfo) -> pb::ClientInfo {
        to_pb(info)
    }

    pub fn decode(bytes: &[u8]) -> Result<ClientInfo, prost::DecodeError> {
        pb::ClientInfo::decode(bytes).map(from_pb)
    }
}

/// A publication's body, with what of its options travels to other gateways: the
/// connection that must not receive it live, and its tags.
pub fn publication(
    data: Bytes,
    info: Option<ClientInfo>,
    time_us: u64,
    first: bool,
    options: &PublishOptions,
) -> Bytes {
    let envelope = Envelope {
        kind: Kind::Publication as i32,
        data,
        info: info.map(to_pb),
        time_us,
        first,
        user_changed: false,
        exclude_client: options.exclude_client.clone(),
        tags: options.tags.clone(),
        departure: String::new(),
    };
    Bytes::from(envelope.encode_to_vec())
}

pub fn presence(kind: Kind, change: PresenceChange) -> Bytes {
    departure(kind, change, String::new())
}

/// A join or leave a presence sweeper announces, with the departure's id
/// (see `Envelope.departure`).
pub fn departure(kind: Kind, change: PresenceChange, id: String) -> Bytes {
    let envelope = Envelope {
        kind: kind as i32,
        info: Some(to_pb(change.info)),
        user_changed: change.user_changed,
        departure: id,
        ..Default::default()
    };
    Bytes::from(envelope.encode_to_vec())
}

pub fn decode(payload: &[u8]) -> Result<Envelope, prost::DecodeError> {
    Envelope::decode(payload)
}

/// The core event an envelope carries, at stream offset `offset` (0: none).
pub fn event(envelope: Envelope, offset: u64) -> ChannelEvent {
    let info = envelope.info.map(from_pb);
    let change = |info: Option<ClientInfo>| PresenceChange {
        info: info.unwrap_or_default(),
        user_changed: envelope.user_changed,
    };
    match Kind::try_from(envelope.kind).unwrap_or(Kind::Publication) {
        Kind::Publication => ChannelEvent::Publication(Publication {
            offset,
            data: envelope.data,
            info,
            time_us: envelope.time_us,
            exclude_client: envelope.exclude_client,
            tags: envelope.tags,
        }),
        Kind::Join => ChannelEvent::Join(change(info)),
        Kind::Leave => ChannelEvent::Leave(change(info)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let info = ClientInfo {
            user: "u".into(),
            client: "c".into(),
            conn_info: Some(Bytes::from_static(b"{}")),
            chan_info: None,
        };
        let tags: std::collections::BTreeMap<String, String> =
            [("kind".to_owned(), "note".to_owned())].into();
        let options = PublishOptions {
            exclude_client: Some("sender".into()),
            tags: tags.clone(),
            ..Default::default()
        };
        let body = publication(
            Bytes::from_static(b"[1]"),
            Some(info.clone()),
            42,
            true,
            &options,
        );
        let env = decode(&body).unwrap();
        assert!(env.first);
        match event(env, 7) {
            ChannelEvent::Publication(p) => {
                assert_eq!((p.offset, p.time_us, &p.data[..]), (7, 42, &b"[1]"[..]));
                assert_eq!(p.info, Some(info.clone()));
                assert_eq!(p.exclude_client.as_deref(), Some("sender"));
                assert_eq!(p.tags, tags);
            }
            other => panic!("{other:?}"),
        }
        let leave = PresenceChange {
            info,
            user_changed: true,
        };
        let body = presence(Kind::Leave, leave.clone());
        assert_eq!(event(decode(&body).unwrap(), 0), ChannelEvent::Leave(leave));
    }
}
