//! What one gateway asks of the others, and their answers: the cluster-wide
//! server API as JSON messages on the control plane. A gateway that does not know
//! a command (a newer one's, mid-upgrade) answers [`Answer::Failed`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::nodes::NodeInfo;

/// A code and reason a backend chose for a disconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Farewell {
    pub code: u16,
    pub reason: String,
}

/// A stream position, as the API names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

/// A command every gateway runs on its own connections. `client` narrows a
/// user's connections to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Close the connections; `None`: "force no reconnect". `app` names the
    /// Pusher app whose user it is (`None`: a Centrifugo user).
    Disconnect {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        user: String,
        client: Option<String>,
        farewell: Option<Farewell>,
    },
    /// End the connections' subscription to `channel`.
    Unsubscribe {
        user: String,
        client: Option<String>,
        channel: String,
    },
    /// Subscribe the connections to `channel` (server-side), with channel info
    /// and data for the subscribe push (JSON text), from `recover_since` when set.
    Subscribe {
        user: String,
        client: Option<String>,
        channel: String,
        info: Option<String>,
        data: Option<String>,
        recover_since: Option<Since>,
    },
    /// Extend or end the connections' credentials: `expired` closes them now;
    /// otherwise they expire at `expire_at` (Unix seconds), or never when unset.
    /// `info` (JSON text) replaces the connection info.
    Refresh {
        user: String,
        client: Option<String>,
        expired: bool,
        expire_at: Option<u64>,
        info: Option<String>,
    },
    /// The node's channels with local subscribers, filtered by `pattern`.
    Channels { pattern: Option<String> },
    /// The node's counts now.
    Info,
    /// Hand a client message (base64) to the stream of `session` on this node:
    /// a command of an HTTP-streaming client that reached another gateway.
    Post { session: String, data: String },
}

/// What became of a message posted to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Posted {
    Delivered,
    /// The node has no stream of that session (any more).
    NoSession,
    /// The stream has too many messages waiting.
    Busy,
}

impl Command {
    /// The command's name, the last token of its subject.
    pub fn op(&self) -> &'static str {
        match self {
            Command::Disconnect { .. } => "disconnect",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Subscribe { .. } => "subscribe",
            Command::Refresh { .. } => "refresh",
            Command::Channels { .. } => "channels",
            Command::Info => "info",
            Command::Post { .. } => "post",
        }
    }
}

/// One gateway's answer to a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// Run on this many of the node's connections.
    Done { connections: usize },
    /// Subscribers per channel on the node.
    Channels { channels: BTreeMap<String, usize> },
    /// The node as it is now.
    Node { node: NodeInfo },
    /// What became of a [`Command::Post`].
    Posted { posted: Posted },
    /// Not run: why.
    Failed { error: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_travel_as_json_with_their_op() {
        let command = Command::Subscribe {
            user: "42".into(),
            client: None,
            channel: "news".into(),
            info: Some(r#"{"role":"admin"}"#.into()),
            data: None,
            recover_since: Some(Since {
                offset: 7,
                epoch: "e".into(),
            }),
        };
        let json = serde_json::to_value(&command).unwrap();
        assert_eq!(json["op"], "subscribe");
        assert_eq!(serde_json::from_value::<Command>(json).unwrap(), command);
    }

    #[test]
    fn an_unknown_command_is_an_error_not_a_panic() {
        let unknown = br#"{"op":"rewind","user":"42"}"#;
        assert!(serde_json::from_slice::<Command>(unknown).is_err());
    }
}
