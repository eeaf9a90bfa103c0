//! The Centrifugo front end's side of the hub: core types → protocol messages,
//! and a [`PushEncoder`] per encoding (registered by [`super::Centrifugo::new`]).

use bytes::Bytes;
use switchboard_core::hub::PushEncoder;
use switchboard_core::{ChannelEvent, ClientInfo, Disconnect, Publication};
use switchboard_protocol::centrifugo::pb;
use switchboard_protocol::centrifugo::Encoding;

pub fn client_info(info: &ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        user: info.user.clone(),
        client: info.client.clone(),
        conn_info: info.conn_info.clone().unwrap_or_default(),
        chan_info: info.chan_info.clone().unwrap_or_default(),
    }
}

pub fn publication(p: &Publication) -> pb::Publication {
    pb::Publication {
        data: p.data.clone(),
        info: p.info.as_ref().map(client_info),
        offset: p.offset,
        tags: p.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

pub struct CentrifugeEncoder(pub Encoding);

impl PushEncoder for CentrifugeEncoder {
    fn encode(&self, channel: &str, event: &ChannelEvent) -> Result<Bytes, Disconnect> {
        let mut push = pb::Push {
            channel: channel.to_owned(),
            ..Default::default()
        };
        match event {
            ChannelEvent::Publication(p) => push.r#pub = Some(publication(p)),
            ChannelEvent::Join(join) => {
                push.join = Some(pb::Join {
                    info: Some(client_info(&join.info)),
                })
            }
            ChannelEvent::Leave(leave) => {
                push.leave = Some(pb::Leave {
                    info: Some(client_info(&leave.info)),
                })
            }
        }
        let reply = pb::Reply {
            push: Some(push),
            ..Default::default()
        };
        self.0
            .encode_reply(&reply)
            .map_err(|_| Disconnect::INAPPROPRIATE_PROTOCOL)
    }
}
