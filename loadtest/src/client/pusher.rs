//! A Pusher Channels client (protocol 7), as pusher-js speaks it: the app's
//! endpoint `/app/{key}?protocol=7&client=…&version=…`, the server's
//! `pusher:connection_established`, `pusher:subscribe` to public channels until
//! `pusher_internal:subscription_succeeded`, and a `pusher:pong` for every
//! `pusher:ping`. Events come one per text frame, their `data` a JSON string;
//! what a receiver gets is that string's content (the publisher's payload).
//!
//! Frames are read with the protocol crate's [`ClientMessage`]: a server's frames
//! have the same shape as a client's (`event`, `channel`, raw `data`). Receivers
//! read channel events through `lean` first, which gives the same data without
//! building one.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Duration;

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_protocol::pusher::codes::PROTOCOL_VERSION;
use switchboard_protocol::pusher::events::{self, name, ClientMessage};
use tokio::net::TcpStream;

use super::{
    closed, tcp_connect, undecodable, upgrade, within, ClientError, ClientOptions, BACKLOG,
};
use crate::target::{Target, DEFAULT_PATH};

mod lean;

/// What the client says it is, in the connection's query.
const CLIENT_NAME: &str = "switchboard-loadtest";

pub struct PusherClient {
    ws: FragmentCollector<TcpStream>,
    /// The data of events read while waiting for a subscription, oldest first.
    backlog: VecDeque<Vec<u8>>,
    /// The unescaped data of the last event read lean, reused frame after frame.
    data: Vec<u8>,
    /// The id the server gave this connection.
    pub socket_id: String,
    /// Seconds of silence the server allows before a client should ping.
    pub activity_timeout_s: Option<u64>,
}

/// One frame from the server, as far as a subscriber cares.
enum Message {
    Established {
        socket_id: String,
        activity_timeout_s: Option<u64>,
    },
    Ping,
    Subscribed(Option<String>),
    /// A `pusher:error` or a `pusher:subscription_error`.
    Refused(ClientError),
    /// A channel event's data.
    Event(String),
    /// Any other protocol event (`pusher:pong`, member events, …).
    Other,
}

impl PusherClient {
    /// TCP connect, WebSocket upgrade and the server's `pusher:connection_established`.
    pub async fn open(
        target: &Target,
        app_key: &str,
        opts: &ClientOptions,
    ) -> Result<PusherClient, ClientError> {
        let connecting = async {
            let stream = tcp_connect(target, opts.source).await?;
            let ws = upgrade::upgrade(target, stream, &path(target, app_key), None).await?;
            let mut client = PusherClient {
                ws: FragmentCollector::new(ws),
                backlog: VecDeque::new(),
                data: Vec::new(),
                socket_id: String::new(),
                activity_timeout_s: None,
            };
            loop {
                let frame = client.ws.read_frame().await?;
                let message = match frame.opcode {
                    OpCode::Close => return Err(closed(&frame.payload)),
                    OpCode::Text => read(&frame.payload)?,
                    _ => continue,
                };
                match message {
                    Message::Established {
                        socket_id,
                        activity_timeout_s,
                    } => {
                        client.socket_id = socket_id;
                        client.activity_timeout_s = activity_timeout_s;
                        return Ok(client);
                    }
                    Message::Refused(e) => return Err(e),
                    Message::Ping => {
                        drop(frame);
                        client.send(events::pong()).await?;
                    }
                    _ => {}
                }
            }
        };
        within(opts.timeout, "connect", connecting).await
    }

    /// Subscribes to the public channel `channel` and waits for the server's
    /// `pusher_internal:subscription_succeeded`; events read meanwhile are kept
    /// for [`PusherClient::next_publications`].
    pub async fn subscribe(&mut self, channel: &str) -> Result<(), ClientError> {
        let frame = serde_json::json!({
            "event": name::SUBSCRIBE,
            "data": { "channel": channel },
        });
        self.subscribe_with(channel, frame).await
    }

    /// Subscribes to the presence channel `channel` as member `user_id`, with the
    /// channel signature an app's auth endpoint would give (app `key`, `secret`).
    pub async fn subscribe_presence(
        &mut self,
        channel: &str,
        user_id: &str,
        key: &str,
        secret: &str,
    ) -> Result<(), ClientError> {
        let channel_data = serde_json::json!({ "user_id": user_id }).to_string();
        let signed = format!("{}:{channel}:{channel_data}", self.socket_id);
        let auth = format!(
            "{key}:{}",
            switchboard_protocol::pusher::auth::sign(secret, &signed)
        );
        let frame = serde_json::json!({
            "event": name::SUBSCRIBE,
            "data": { "channel": channel, "auth": auth, "channel_data": channel_data },
        });
        self.subscribe_with(channel, frame).await
    }

    async fn subscribe_with(
        &mut self,
        channel: &str,
        frame: serde_json::Value,
    ) -> Result<(), ClientError> {
        self.send(frame.to_string()).await?;
        loop {
            let frame = self.ws.read_frame().await?;
            let message = match frame.opcode {
                OpCode::Close => return Err(closed(&frame.payload)),
                OpCode::Text => read(&frame.payload)?,
                _ => continue,
            };
            match message {
                Message::Subscribed(Some(c)) if c == channel => return Ok(()),
                Message::Refused(e) => return Err(e),
                Message::Event(data) => {
                    if self.backlog.len() == BACKLOG {
                        self.backlog.pop_front();
                    }
                    self.backlog.push_back(data.as_bytes().to_vec());
                }
                Message::Ping => {
                    drop(frame);
                    self.send(events::pong()).await?;
                }
                _ => {}
            }
        }
    }

    /// Hands `each` the data of the next channel event (offset 0: Pusher has
    /// none), or of every event [`PusherClient::subscribe`] kept; answers pings
    /// and skips other protocol events on the way. Not cancel-safe: a cancelled
    /// read leaves the connection unusable.
    pub async fn next_publications(
        &mut self,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<(), ClientError> {
        if !self.backlog.is_empty() {
            for data in self.backlog.drain(..) {
                each(0, &data);
            }
            return Ok(());
        }
        loop {
            let frame = self.ws.read_frame().await?;
            let message = match frame.opcode {
                OpCode::Close => return Err(closed(&frame.payload)),
                OpCode::Text if lean::event_data(&frame.payload, &mut self.data) => {
                    each(0, &self.data);
                    return Ok(());
                }
                OpCode::Text => read(&frame.payload)?,
                _ => continue,
            };
            match message {
                Message::Event(data) => {
                    each(0, data.as_bytes());
                    return Ok(());
                }
                Message::Ping => {
                    drop(frame);
                    self.send(events::pong()).await?;
                }
                _ => {}
            }
        }
    }

    /// Closes the connection with a normal close frame (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.ws.write_frame(Frame::close(1000, b"")),
        )
        .await;
    }

    async fn send(&mut self, text: String) -> Result<(), ClientError> {
        // Owned, so the frame is masked in place.
        let frame = Frame::text(Payload::Owned(text.into_bytes()));
        self.ws.write_frame(frame).await?;
        Ok(())
    }
}

/// The path (and query) a Pusher client asks for: the app's endpoint at the
/// server's root, or, when the URL names a path of its own (anything but `/` and
/// the Centrifugo default), that path as given.
pub fn path(target: &Target, app_key: &str) -> String {
    if target.path != DEFAULT_PATH && target.path != "/" {
        return target.path.clone();
    }
    format!(
        "/app/{app_key}?protocol={PROTOCOL_VERSION}&client={CLIENT_NAME}&version={}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Reads one text frame of the server.
fn read(frame: &[u8]) -> Result<Message, ClientError> {
    let message = ClientMessage::parse(frame).map_err(undecodable)?;
    let data = message.data.as_deref();
    Ok(match message.event.as_str() {
        name::PING => Message::Ping,
        name::CONNECTION_ESTABLISHED => {
            #[derive(Deserialize)]
            struct Established {
                socket_id: String,
                #[serde(default)]
                activity_timeout: Option<u64>,
            }
            let e: Established = serde_json::from_str(&text(data)?).map_err(undecodable)?;
            Message::Established {
                socket_id: e.socket_id,
                activity_timeout_s: e.activity_timeout,
            }
        }
        name::SUBSCRIPTION_SUCCEEDED => Message::Subscribed(message.channel),
        name::ERROR => {
            #[derive(Deserialize)]
            struct Error {
                #[serde(default)]
                code: Option<u32>,
                #[serde(default)]
                message: String,
            }
            let e: Error = serde_json::from_str(&text(data)?).map_err(undecodable)?;
            Message::Refused(ClientError::Reply {
                code: e.code.unwrap_or(0),
                message: e.message,
            })
        }
        name::SUBSCRIPTION_ERROR => {
            #[derive(Deserialize)]
            struct Error {
                #[serde(default)]
                error: String,
                #[serde(default)]
                status: u32,
            }
            let e: Error = serde_json::from_str(&text(data)?).map_err(undecodable)?;
            Message::Refused(ClientError::Reply {
                code: e.status,
                message: e.error,
            })
        }
        event if event.starts_with("pusher:") || event.starts_with("pusher_internal:") => {
            Message::Other
        }
        _ => Message::Event(text(data)?.into_owned()),
    })
}

/// The JSON text a frame's `data` holds: the content of a JSON string (most
/// server frames), or the JSON itself (an object: `pusher:error` and a few others).
fn text(data: Option<&RawValue>) -> Result<Cow<'_, str>, ClientError> {
    let Some(raw) = data else {
        return Ok(Cow::Borrowed(""));
    };
    let json = raw.get();
    if json.starts_with('"') {
        serde_json::from_str::<String>(json)
            .map(Cow::Owned)
            .map_err(undecodable)
    } else {
        Ok(Cow::Borrowed(json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(frame: &str) -> Option<String> {
        match read(frame.as_bytes()).ok()? {
            Message::Event(data) => Some(data),
            _ => None,
        }
    }

    #[test]
    fn an_events_data_string_is_the_publishers_payload() {
        let payload = crate::payload::encode(
            crate::payload::Stamp {
                channel: 3,
                seq: 17,
                sent_us: 42,
            },
            80,
        );
        let payload = String::from_utf8(payload).unwrap();
        // The server keeps the HTTP API's `data` as JSON: a string literal.
        let stored = serde_json::to_string(&payload).unwrap();
        let frame = events::event("loadtest", Some("lt-3"), &stored, None);
        let data = event(&frame).expect("an event");
        assert_eq!(data, payload);
        // The gateway's frame is the one receivers read lean.
        let mut lean_data = Vec::new();
        assert!(lean::event_data(frame.as_bytes(), &mut lean_data));
        assert_eq!(lean_data, payload.as_bytes());
        // A client event's data may be an object: its JSON is the data.
        let frame = events::event("client-x", Some("private-a"), &payload, None);
        assert_eq!(event(&frame).expect("an event"), payload);
        let stamp = crate::payload::decode(data.as_bytes()).unwrap();
        assert_eq!((stamp.channel, stamp.seq, stamp.sent_us), (3, 17, 42));
    }

    #[test]
    fn the_servers_protocol_frames_are_read_as_such() {
        let established = events::connection_established("123.456", 120);
        match read(established.as_bytes()) {
            Ok(Message::Established {
                socket_id,
                activity_timeout_s,
            }) => assert_eq!(
                (socket_id.as_str(), activity_timeout_s),
                ("123.456", Some(120))
            ),
            _ => panic!("{established}"),
        }
        assert!(matches!(read(events::ping().as_bytes()), Ok(Message::Ping)));
        let ok = events::subscription_succeeded("lt-0", "{}");
        assert!(matches!(read(ok.as_bytes()), Ok(Message::Subscribed(Some(c))) if c == "lt-0"));
        let refused = events::error(Some(4001), "Could not find app by key");
        match read(refused.as_bytes()) {
            Ok(Message::Refused(e)) => assert_eq!(e.reason(), "error 4001"),
            _ => panic!("{refused}"),
        }
        let denied = events::subscription_error("private-a", "AuthError", "no", 401);
        match read(denied.as_bytes()) {
            Ok(Message::Refused(e)) => assert_eq!(e.reason(), "error 401"),
            _ => panic!("{denied}"),
        }
        assert!(matches!(
            read(events::pong().as_bytes()),
            Ok(Message::Other)
        ));
        assert!(read(b"not json").is_err());
        assert!(read(br#"{"event":"x","data":"unterminated}"#).is_err());
    }

    #[test]
    fn the_path_is_the_apps_endpoint_unless_the_url_names_one() {
        let at = |url: &str| path(&url.parse().unwrap(), "app-key");
        let endpoint = format!(
            "/app/app-key?protocol=7&client=switchboard-loadtest&version={}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(at("ws://127.0.0.1:8000"), endpoint);
        assert_eq!(at("ws://127.0.0.1:8000/"), endpoint);
        assert_eq!(at("ws://127.0.0.1:8000/connection/websocket"), endpoint);
        assert_eq!(
            at("ws://127.0.0.1:6001/ws/app/k?protocol=7"),
            "/ws/app/k?protocol=7"
        );
    }
}
