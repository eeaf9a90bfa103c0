//! Builders of the frames a server sends, each a whole frame. User strings only
//! ever reach the output through serde_json, so they cannot break out of it.

use std::collections::HashSet;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::name;

#[derive(Serialize)]
struct Frame<'a, D> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: D,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

/// Serializes to a `{}`.
#[derive(Serialize)]
struct Empty {}

fn to_json<T: Serialize>(value: &T) -> String {
    // serde_json fails only on non-string map keys and on Serialize impls that
    // fail; these values hold strings, numbers, options and validated RawValues.
    serde_json::to_string(value).expect("a frame always serializes")
}

fn frame<D: Serialize>(event: &str, channel: Option<&str>, data: D) -> String {
    to_json(&Frame {
        event,
        channel,
        data,
        user_id: None,
    })
}

/// `pusher:connection_established`: the socket's id and how many seconds of
/// silence the client should allow before it pings. Its data is a JSON string.
pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        socket_id: &'a str,
        activity_timeout: u64,
    }
    let data = to_json(&Data {
        socket_id,
        activity_timeout: activity_timeout_secs,
    });
    frame(name::CONNECTION_ESTABLISHED, None, data)
}

/// `pusher:error` with a code from [`super::super::codes`] (or `null`).
pub fn error(code: Option<u16>, message: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        code: Option<u16>,
        message: &'a str,
    }
    frame(name::ERROR, None, Data { code, message })
}

/// `pusher:ping`, asking the client for a pong.
pub fn ping() -> String {
    frame(name::PING, None, Empty {})
}

/// `pusher:pong`, the answer to a client's ping.
pub fn pong() -> String {
    frame(name::PONG, None, Empty {})
}

/// `pusher_internal:subscription_succeeded`. `data_json` is `{}` for most
/// channels and [`presence_data`] for presence ones; it goes out as a JSON string.
pub fn subscription_succeeded(channel: &str, data_json: &str) -> String {
    frame(name::SUBSCRIPTION_SUCCEEDED, Some(channel), data_json)
}

/// The data of a presence channel's `subscription_succeeded`: every member's id
/// and info. Members are one per user: a repeated id keeps its first entry.
pub fn presence_data(members: &[(String, Option<&RawValue>)]) -> String {
    let mut seen = HashSet::with_capacity(members.len());
    let members: Vec<(&str, Option<&RawValue>)> = members
        .iter()
        .filter(|(id, _)| seen.insert(id.as_str()))
        .map(|(id, info)| (id.as_str(), *info))
        .collect();

    #[derive(Serialize)]
    struct Data<'a> {
        presence: Presence<'a>,
    }
    #[derive(Serialize)]
    struct Presence<'a> {
        ids: Vec<&'a str>,
        hash: Hash<'a>,
        count: usize,
    }
    /// `{id: info-or-null}`, in member order.
    struct Hash<'a>(&'a [(&'a str, Option<&'a RawValue>)]);
    impl Serialize for Hash<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for (id, info) in self.0 {
                map.serialize_entry(id, info)?;
            }
            map.end()
        }
    }

    to_json(&Data {
        presence: Presence {
            ids: members.iter().map(|(id, _)| *id).collect(),
            hash: Hash(&members),
            count: members.len(),
        },
    })
}

/// `pusher:subscription_error`: why `channel` was refused. `kind` is the error's
/// class as pusher-js knows them (`"AuthError"`, …), `status` an HTTP-like status.
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        error: &'a str,
        status: u16,
    }
    let data = Data {
        kind,
        error,
        status,
    };
    frame(name::SUBSCRIPTION_ERROR, Some(channel), data)
}

/// `pusher_internal:member_added`: a user joined a presence channel. Its data is
/// a JSON string; `user_info` is `null` when the member has none.
pub fn member_added(channel: &str, user_id: &str, user_info: Option<&RawValue>) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user_id: &'a str,
        user_info: Option<&'a RawValue>,
    }
    let data = to_json(&Data { user_id, user_info });
    frame(name::MEMBER_ADDED, Some(channel), data)
}

/// `pusher_internal:member_removed`: a user's last connection left the channel.
pub fn member_removed(channel: &str, user_id: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user_id: &'a str,
    }
    let data = to_json(&Data { user_id });
    frame(name::MEMBER_REMOVED, Some(channel), data)
}

/// `pusher:signin_success`, echoing the `user_data` string as signed.
pub fn signin_success(user_data: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user_data: &'a str,
    }
    frame(name::SIGNIN_SUCCESS, None, Data { user_data })
}

/// `pusher:cache_miss`: a cache channel has no event to replay. Its data is the
/// string `"{}"`, so a client decoding it gets an empty object rather than
/// nothing (servers differ here; pusher-js takes either).
pub fn cache_miss(channel: &str) -> String {
    frame(name::CACHE_MISS, Some(channel), "{}")
}

/// An application event: `data_raw` is the JSON text of its data, relayed as
/// is (from the HTTP API that is a JSON string, quotes included, like
/// `"{\"a\":1}"`). Text that is not JSON is sent as a JSON string, so the frame
/// stays valid whatever the caller passes. `user_id` names the sender of a
/// client event on a presence channel.
pub fn event(name: &str, channel: Option<&str>, data_raw: &str, user_id: Option<&str>) -> String {
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Data<'a> {
        Raw(&'a RawValue),
        Text(&'a str),
    }
    let data = match serde_json::from_str::<&RawValue>(data_raw) {
        Ok(raw) => Data::Raw(raw),
        Err(_) => Data::Text(data_raw),
    };
    to_json(&Frame {
        event: name,
        channel,
        data,
        user_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(frame: &str) -> Value {
        serde_json::from_str(frame).expect("a frame is JSON")
    }

    /// The value of a `data` that travels as a JSON string.
    fn inner(frame: &Value) -> Value {
        let text = frame["data"].as_str().expect("data is a string");
        serde_json::from_str(text).expect("data holds JSON")
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn connection_established_data_is_a_string() {
        let frame = parse(&connection_established("123.456", 120));
        assert_eq!(frame["event"], "pusher:connection_established");
        assert!(frame.get("channel").is_none());
        assert_eq!(
            inner(&frame),
            json!({"socket_id": "123.456", "activity_timeout": 120})
        );
    }

    #[test]
    fn error_has_a_code_or_null() {
        let frame = parse(&error(Some(4001), "unknown app \"x\""));
        assert_eq!(
            frame,
            json!({"event": "pusher:error", "data": {"code": 4001, "message": "unknown app \"x\""}})
        );
        let frame = parse(&error(None, "bad"));
        assert_eq!(frame["data"], json!({"code": null, "message": "bad"}));
    }

    #[test]
    fn ping_and_pong() {
        assert_eq!(parse(&ping()), json!({"event": "pusher:ping", "data": {}}));
        assert_eq!(parse(&pong()), json!({"event": "pusher:pong", "data": {}}));
    }

    #[test]
    fn subscription_succeeded_carries_a_string() {
        let frame = parse(&subscription_succeeded("my-channel", "{}"));
        assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
        assert_eq!(frame["channel"], "my-channel");
        assert_eq!(frame["data"], "{}");
    }

    #[test]
    fn presence_data_lists_members_once() {
        let info = raw(r#"{"name":"Ada"}"#);
        let members = vec![
            ("1".to_string(), Some(&*info)),
            ("2".to_string(), None),
            ("1".to_string(), None),
        ];
        let data = presence_data(&members);
        assert_eq!(
            parse(&data),
            json!({"presence": {
                "ids": ["1", "2"],
                "hash": {"1": {"name": "Ada"}, "2": null},
                "count": 2
            }})
        );
        let frame = parse(&subscription_succeeded("presence-a", &data));
        assert_eq!(inner(&frame)["presence"]["count"], 2);
        assert_eq!(
            parse(&presence_data(&[])),
            json!({"presence": {"ids": [], "hash": {}, "count": 0}})
        );
    }

    #[test]
    fn subscription_error_data_is_an_object() {
        let frame = parse(&subscription_error(
            "private-a",
            "AuthError",
            "invalid signature",
            401,
        ));
        assert_eq!(
            frame,
            json!({
                "event": "pusher:subscription_error",
                "channel": "private-a",
                "data": {"type": "AuthError", "error": "invalid signature", "status": 401}
            })
        );
    }

    #[test]
    fn member_events() {
        let info = raw(r#"{"name":"Ada"}"#);
        let frame = parse(&member_added("presence-a", "7", Some(&info)));
        assert_eq!(frame["event"], "pusher_internal:member_added");
        assert_eq!(frame["channel"], "presence-a");
        assert_eq!(
            inner(&frame),
            json!({"user_id": "7", "user_info": {"name": "Ada"}})
        );
        let frame = parse(&member_added("presence-a", "7", None));
        assert_eq!(inner(&frame), json!({"user_id": "7", "user_info": null}));

        let frame = parse(&member_removed("presence-a", "7"));
        assert_eq!(frame["event"], "pusher_internal:member_removed");
        assert_eq!(inner(&frame), json!({"user_id": "7"}));
    }

    #[test]
    fn signin_success_echoes_user_data() {
        let user_data = r#"{"id":"42"}"#;
        let frame = parse(&signin_success(user_data));
        assert_eq!(
            frame,
            json!({"event": "pusher:signin_success", "data": {"user_data": user_data}})
        );
    }

    #[test]
    fn cache_miss_names_its_channel() {
        let frame = parse(&cache_miss("cache-a"));
        assert_eq!(
            frame,
            json!({"event": "pusher:cache_miss", "channel": "cache-a", "data": "{}"})
        );
    }

    #[test]
    fn events_relay_raw_data() {
        let frame = parse(&event(
            "my-event",
            Some("my-channel"),
            r#""{\"some\":\"data\"}""#,
            None,
        ));
        assert_eq!(
            frame,
            json!({"event": "my-event", "channel": "my-channel", "data": "{\"some\":\"data\"}"})
        );
        let frame = parse(&event(
            "client-x",
            Some("presence-a"),
            r#"{"a":[1,2]}"#,
            Some("7"),
        ));
        assert_eq!(frame["data"], json!({"a": [1, 2]}));
        assert_eq!(frame["user_id"], "7");
        let frame = parse(&event("e", None, "42", None));
        assert!(frame.get("channel").is_none());
        assert!(frame.get("user_id").is_none());
        assert_eq!(frame["data"], 42);
    }

    #[test]
    fn hostile_strings_stay_inside_their_fields() {
        let evil = "\"},\"event\":\"pusher:error\n\u{0}\u{2028}";
        let frame = parse(&event(evil, Some(evil), "not json {", Some(evil)));
        assert_eq!(frame["event"], evil);
        assert_eq!(frame["channel"], evil);
        assert_eq!(frame["data"], "not json {");
        assert_eq!(frame["user_id"], evil);
        assert_eq!(parse(&error(None, evil))["data"]["message"], evil);
        assert_eq!(
            inner(&parse(&connection_established(evil, 1)))["socket_id"],
            evil
        );
        assert_eq!(inner(&parse(&member_removed(evil, evil)))["user_id"], evil);
        assert_eq!(parse(&subscription_succeeded(evil, evil))["data"], evil);
    }
}
