//! Core channel events → Pusher events: one hub format, encoded once per event
//! for every Pusher subscriber of the channel.

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_core::hub::PushEncoder;
use switchboard_core::{ChannelEvent, Disconnect, Publication};
use switchboard_protocol::pusher::events;

use super::channels::pusher_name;

/// The publication tag holding a Pusher event's name: it travels with the data,
/// live and in a cache channel's stream.
pub const EVENT_TAG: &str = "event";

/// Encodes the events of every app's channels (the app is in the channel name).
pub struct PusherEncoder;

impl PushEncoder for PusherEncoder {
    fn encode(&self, channel: &str, event: &ChannelEvent) -> Result<Bytes, Disconnect> {
        let name = pusher_name(channel);
        let text = match event {
            ChannelEvent::Publication(p) => publication(name, p)?,
            ChannelEvent::Join(change) => {
                let info = user_info(change.info.chan_info.as_deref());
                events::member_added(name, &change.info.user, info.as_deref())
            }
            ChannelEvent::Leave(change) => events::member_removed(name, &change.info.user),
        };
        Ok(Bytes::from(text))
    }
}

/// A publication as the event its publisher sent, on the Pusher channel `name`.
/// `user_id` is the presence member of a client event.
pub fn publication(name: &str, p: &Publication) -> Result<String, Disconnect> {
    let Some(event) = p.tags.get(EVENT_TAG) else {
        // Not published by a Pusher front end: nothing a Pusher client can read.
        return Err(Disconnect::INAPPROPRIATE_PROTOCOL);
    };
    let data = std::str::from_utf8(&p.data).map_err(|_| Disconnect::INAPPROPRIATE_PROTOCOL)?;
    let user = p
        .info
        .as_ref()
        .map(|i| i.user.as_str())
        .filter(|u| !u.is_empty());
    Ok(events::event(event, Some(name), data, user))
}

/// A member's `user_info` (JSON), if it has any that parses.
pub fn user_info(info: Option<&[u8]>) -> Option<Box<RawValue>> {
    let text = std::str::from_utf8(info?).ok()?;
    RawValue::from_string(text.to_owned()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use switchboard_core::{ClientInfo, PresenceChange};

    fn json(bytes: &Bytes) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn a_publication_is_its_event_on_the_pusher_channel() {
        let p = Publication {
            data: Bytes::from_static(br#""{\"a\":1}""#),
            tags: BTreeMap::from([(EVENT_TAG.to_owned(), "order.shipped".to_owned())]),
            ..Default::default()
        };
        let out = PusherEncoder
            .encode("~app~b:orders", &ChannelEvent::Publication(p))
            .unwrap();
        let v = json(&out);
        assert_eq!(v["event"], "order.shipped");
        assert_eq!(v["channel"], "orders");
        assert_eq!(v["data"], r#"{"a":1}"#);
        assert!(v.get("user_id").is_none());
    }

    #[test]
    fn a_client_event_on_a_presence_channel_names_its_user() {
        let p = Publication {
            data: Bytes::from_static(br#"{"typing":true}"#),
            tags: BTreeMap::from([(EVENT_TAG.to_owned(), "client-typing".to_owned())]),
            info: Some(ClientInfo {
                user: "42".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = json(
            &PusherEncoder
                .encode("~app~p:presence-room", &ChannelEvent::Publication(p))
                .unwrap(),
        );
        assert_eq!(v["user_id"], "42");
        assert_eq!(v["data"]["typing"], true);
    }

    #[test]
    fn joins_and_leaves_are_member_events() {
        let change = PresenceChange {
            info: ClientInfo {
                user: "7".into(),
                chan_info: Some(Bytes::from_static(br#"{"name":"Ann"}"#)),
                ..Default::default()
            },
            user_changed: true,
        };
        let added = json(
            &PusherEncoder
                .encode("~a~p:presence-r", &ChannelEvent::Join(change.clone()))
                .unwrap(),
        );
        assert_eq!(added["event"], "pusher_internal:member_added");
        assert_eq!(added["channel"], "presence-r");
        let data: serde_json::Value =
            serde_json::from_str(added["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["user_id"], "7");
        assert_eq!(data["user_info"]["name"], "Ann");
        let removed = json(
            &PusherEncoder
                .encode("~a~p:presence-r", &ChannelEvent::Leave(change))
                .unwrap(),
        );
        assert_eq!(removed["event"], "pusher_internal:member_removed");
    }

    #[test]
    fn a_publication_without_an_event_name_is_refused() {
        let p = Publication::default();
        assert!(PusherEncoder
            .encode("~a~b:x", &ChannelEvent::Publication(p))
            .is_err());
    }
}
