//! What a client sends: its frames and the JSON inside them.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{name, EventError};

/// One frame from a client. `data` stays raw: for a `client-` event it is relayed
/// as is, for the `pusher:` events the methods below read it.
#[derive(Debug, Deserialize)]
pub struct ClientMessage {
    pub event: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

impl ClientMessage {
    /// Parses a text frame. Unknown fields are ignored, as Pusher does.
    pub fn parse(text: &[u8]) -> Result<ClientMessage, EventError> {
        let start = text.iter().position(|b| !b.is_ascii_whitespace());
        if start.map(|i| text[i]) != Some(b'{') {
            return Err(EventError::Invalid("a frame must be a JSON object"));
        }
        Ok(serde_json::from_slice(text)?)
    }

    /// The data of a `pusher:subscribe`.
    pub fn subscribe_data(&self) -> Result<SubscribeData, EventError> {
        decode_object(self.data.as_deref(), name::SUBSCRIBE)
    }

    /// The data of a `pusher:unsubscribe`.
    pub fn unsubscribe_data(&self) -> Result<UnsubscribeData, EventError> {
        decode_object(self.data.as_deref(), name::UNSUBSCRIBE)
    }

    /// The data of a `pusher:signin`.
    pub fn signin_data(&self) -> Result<SigninData, EventError> {
        decode_object(self.data.as_deref(), name::SIGNIN)
    }
}

/// Reads the data of a `pusher:` event: an object, or (from some old clients) a
/// JSON string holding the object.
fn decode_object<T: DeserializeOwned>(
    data: Option<&RawValue>,
    event: &'static str,
) -> Result<T, EventError> {
    let text = data.ok_or(EventError::MissingData(event))?.get();
    if text.trim_start().starts_with('"') {
        let inner: String = serde_json::from_str(text)?;
        from_object(&inner)
    } else {
        from_object(text)
    }
}

/// serde's derived structs also read arrays (`["a"]` as `{"channel":"a"}`);
/// the protocol has only objects.
fn from_object<T: DeserializeOwned>(text: &str) -> Result<T, EventError> {
    if !text.trim_start().starts_with('{') {
        return Err(EventError::Invalid("expected a JSON object"));
    }
    Ok(serde_json::from_str(text)?)
}

/// The data of a `pusher:subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscribeData {
    pub channel: String,
    /// `<key>:<signature>` for private and presence channels. pusher-js sends an
    /// empty string for public ones.
    #[serde(default)]
    pub auth: Option<String>,
    /// For presence channels: the member's JSON as a string, exactly as signed.
    #[serde(default)]
    pub channel_data: Option<String>,
}

/// The data of a `pusher:unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UnsubscribeData {
    pub channel: String,
}

/// The data of a `pusher:signin`: the app's signature and the user it signs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SigninData {
    pub auth: String,
    /// A JSON object as a string, exactly as signed; read it with [`UserData::parse`].
    pub user_data: String,
}

/// A presence member, from the `channel_data` of a subscription.
#[derive(Debug)]
pub struct ChannelData {
    /// The member's id; a number in the JSON becomes its decimal text, so
    /// `10` and `"10"` are the same member.
    pub user_id: String,
    /// Whatever the app says about the member, shown to the other members.
    pub user_info: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct ChannelDataWire {
    #[serde(default)]
    user_id: Option<Value>,
    #[serde(default)]
    user_info: Option<Box<RawValue>>,
}

impl ChannelData {
    /// Parses a `channel_data` string.
    pub fn parse(text: &str) -> Result<ChannelData, EventError> {
        let wire: ChannelDataWire = from_object(text)?;
        let user_id = match wire.user_id {
            Some(Value::String(id)) if !id.is_empty() => id,
            Some(Value::Number(id)) if id.is_u64() || id.is_i64() => id.to_string(),
            _ => {
                return Err(EventError::Invalid(
                    "channel_data needs a user_id: a non-empty string or an integer",
                ))
            }
        };
        Ok(ChannelData {
            user_id,
            user_info: wire.user_info,
        })
    }
}

/// A signed-in user, from the `user_data` of a `pusher:signin`.
#[derive(Debug)]
pub struct UserData {
    /// The user's id, a non-empty string.
    pub id: String,
    /// What the app says about the user.
    pub user_info: Option<Box<RawValue>>,
    /// The ids whose online/offline events the user wants.
    pub watchlist: Vec<String>,
    /// The `user_data` text as received: what `pusher:signin_success` echoes.
    pub raw: String,
}

#[derive(Deserialize)]
struct UserDataWire {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    user_info: Option<Box<RawValue>>,
    #[serde(default)]
    watchlist: Option<Vec<String>>,
}

impl UserData {
    /// Parses a `user_data` string.
    pub fn parse(text: &str) -> Result<UserData, EventError> {
        let wire: UserDataWire = from_object(text)?;
        let id = match wire.id {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => {
                return Err(EventError::Invalid(
                    "user_data needs an id: a non-empty string",
                ))
            }
        };
        Ok(UserData {
            id,
            user_info: wire.user_info,
            watchlist: wire.watchlist.unwrap_or_default(),
            raw: text.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_subscribe_with_object_data() {
        let frame = br#"{"event":"pusher:subscribe","data":{"auth":"k:s","channel":"presence-a","channel_data":"{\"user_id\":1}"},"extra":true}"#;
        let message = ClientMessage::parse(frame).unwrap();
        assert_eq!(message.event, name::SUBSCRIBE);
        assert_eq!(message.channel, None);
        let data = message.subscribe_data().unwrap();
        assert_eq!(
            data,
            SubscribeData {
                channel: "presence-a".into(),
                auth: Some("k:s".into()),
                channel_data: Some(r#"{"user_id":1}"#.into()),
            }
        );
    }

    #[test]
    fn parses_a_subscribe_with_string_data() {
        let frame = br#"{"event":"pusher:subscribe","data":"{\"channel\":\"my-channel\"}"}"#;
        let data = ClientMessage::parse(frame)
            .unwrap()
            .subscribe_data()
            .unwrap();
        assert_eq!(data.channel, "my-channel");
        assert_eq!(data.auth, None);
        assert_eq!(data.channel_data, None);
    }

    #[test]
    fn parses_unsubscribe_and_signin() {
        let frame = br#"{"event":"pusher:unsubscribe","data":{"channel":"a"}}"#;
        let data = ClientMessage::parse(frame)
            .unwrap()
            .unsubscribe_data()
            .unwrap();
        assert_eq!(data.channel, "a");

        let frame =
            br#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\"id\":\"7\"}"}}"#;
        let data = ClientMessage::parse(frame).unwrap().signin_data().unwrap();
        assert_eq!(data.auth, "k:s");
        assert_eq!(data.user_data, r#"{"id":"7"}"#);
    }

    #[test]
    fn keeps_client_event_data_raw() {
        let frame = br#"{"event":"client-typing","channel":"private-a","data":{"who": "me"}}"#;
        let message = ClientMessage::parse(frame).unwrap();
        assert!(name::is_client_event(&message.event));
        assert_eq!(message.channel.as_deref(), Some("private-a"));
        assert_eq!(message.data.unwrap().get(), r#"{"who": "me"}"#);
    }

    #[test]
    fn refuses_malformed_frames() {
        let bad: [&[u8]; 10] = [
            b"",
            br#"["pusher:ping"]"#,
            b"null",
            b"not json",
            b"[]",
            b"{}",
            br#"{"event":5}"#,
            br#"{"event":"pusher:ping""#,
            br#"{"event":"pusher:ping","channel":7}"#,
            b"\xff\xfe",
        ];
        for frame in bad {
            assert!(ClientMessage::parse(frame).is_err(), "{frame:?}");
        }
    }

    #[test]
    fn refuses_malformed_subscribe_data() {
        let cases: [&[u8]; 8] = [
            br#"{"event":"pusher:subscribe","data":["a"]}"#,
            br#"{"event":"pusher:subscribe"}"#,
            br#"{"event":"pusher:subscribe","data":null}"#,
            br#"{"event":"pusher:subscribe","data":{}}"#,
            br#"{"event":"pusher:subscribe","data":5}"#,
            br#"{"event":"pusher:subscribe","data":"not json"}"#,
            br#"{"event":"pusher:subscribe","data":{"channel":1}}"#,
            br#"{"event":"pusher:subscribe","data":{"channel":"a","channel_data":{"user_id":1}}}"#,
        ];
        for frame in cases {
            let message = ClientMessage::parse(frame).unwrap();
            assert!(
                message.subscribe_data().is_err(),
                "{}",
                String::from_utf8_lossy(frame)
            );
        }
        let missing = ClientMessage::parse(br#"{"event":"pusher:subscribe"}"#).unwrap();
        let error = missing.subscribe_data().unwrap_err().to_string();
        assert_eq!(error, "pusher:subscribe needs a data object");
    }

    #[test]
    fn channel_data_user_id_may_be_a_string_or_an_integer() {
        let data =
            ChannelData::parse(r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#).unwrap();
        assert_eq!(data.user_id, "10");
        assert_eq!(data.user_info.unwrap().get(), r#"{"name":"Mr. Pusher"}"#);
        let data = ChannelData::parse(r#"{"user_id":"abc"}"#).unwrap();
        assert_eq!(data.user_id, "abc");
        assert!(data.user_info.is_none());
        assert_eq!(
            ChannelData::parse(r#"{"user_id":-3}"#).unwrap().user_id,
            "-3"
        );
    }

    #[test]
    fn channel_data_without_a_usable_user_id_is_refused() {
        for text in [
            "",
            "{}",
            r#"{"user_id":""}"#,
            r#"{"user_id":null}"#,
            r#"{"user_id":1.5}"#,
            r#"{"user_id":[1]}"#,
            r#"{"user_id":true}"#,
            r#""{\"user_id\":1}""#,
            "[1]",
        ] {
            assert!(ChannelData::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn user_data_needs_a_string_id_and_keeps_its_text() {
        let text = r#"{"id":"42","user_info":{"name":"Ada"},"watchlist":["1","2"]}"#;
        let user = UserData::parse(text).unwrap();
        assert_eq!(user.id, "42");
        assert_eq!(user.user_info.unwrap().get(), r#"{"name":"Ada"}"#);
        assert_eq!(user.watchlist, ["1", "2"]);
        assert_eq!(user.raw, text);
        assert!(UserData::parse(r#"{"id":"1"}"#)
            .unwrap()
            .watchlist
            .is_empty());
        for bad in [
            "",
            "{}",
            r#"["1"]"#,
            r#"{"id":""}"#,
            r#"{"id":42}"#,
            r#"{"id":"1","watchlist":[1]}"#,
        ] {
            assert!(UserData::parse(bad).is_err(), "{bad}");
        }
    }
}
