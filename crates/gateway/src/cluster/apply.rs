//! A [`Command`] run on this node's own connections, whichever gateway asked.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use switchboard_core::{channel, Disconnect, StreamPosition};

use super::command::{Answer, Command, Posted};
use super::nodes::NodeInfo;
use crate::node::Node;
use crate::registry::{ConnHandle, Control, Undelivered};

/// Runs `command` here. Its arguments were checked by the gateway that took the
/// API call.
pub async fn apply(node: &Node, command: Command) -> Answer {
    let text = |s: Option<String>| s.map(Bytes::from);
    match command {
        Command::Disconnect {
            app,
            user,
            client,
            farewell,
        } => {
            let disconnect = match farewell {
                Some(f) => Disconnect::custom(f.code, f.reason),
                None => Disconnect::FORCE_NO_RECONNECT,
            };
            let connections = node
                .registry
                .of_user(app.as_deref(), &user, client.as_deref());
            for conn in &connections {
                conn.outbound.close(disconnect.clone(), true);
            }
            done(connections.len())
        }
        Command::Unsubscribe {
            user,
            client,
            channel,
        } => ask(node, &user, client, Control::Unsubscribe { channel }),
        Command::Subscribe {
            user,
            client,
            channel,
            info,
            data,
            recover_since,
        } => {
            let control = Control::Subscribe {
                channel,
                info: text(info),
                data: text(data),
                recover_since: recover_since.map(|s| StreamPosition {
                    offset: s.offset,
                    epoch: s.epoch,
                }),
            };
            ask(node, &user, client, control)
        }
        Command::Refresh {
            user,
            client,
            expired,
            expire_at,
            info,
        } => {
            // An expiry at the epoch has passed: the connection closes as expired.
            let expire_at = if expired { Some(0) } else { expire_at };
            let control = Control::Refresh {
                expire_at,
                info: text(info),
            };
            ask(node, &user, client, control)
        }
        Command::Channels { pattern } => {
            let pattern = pattern.unwrap_or_default();
            let channels: BTreeMap<String, usize> = node
                .hub
                .channels()
                .into_iter()
                .filter(|(name, _)| pattern.is_empty() || channel::matches_pattern(name, &pattern))
                .collect();
            Answer::Channels { channels }
        }
        Command::Info => Answer::Node {
            node: NodeInfo::of(node),
        },
        Command::Post { session, data } => {
            let Ok(data) = base64::engine::general_purpose::STANDARD.decode(data) else {
                return Answer::Failed {
                    error: "post data is not base64".into(),
                };
            };
            let posted = match node.registry.post(&session, Bytes::from(data)) {
                Ok(()) => Posted::Delivered,
                Err(Undelivered::NoSession) => Posted::NoSession,
                Err(Undelivered::Busy) => Posted::Busy,
            };
            Answer::Posted { posted }
        }
    }
}

fn done(connections: usize) -> Answer {
    Answer::Done { connections }
}

/// Hands `control` to each of the user's connections.
fn ask(node: &Node, user: &str, client: Option<String>, control: Control) -> Answer {
    let connections = node.registry.of_user(None, user, client.as_deref());
    for conn in &connections {
        request(conn, control.clone());
    }
    done(connections.len())
}

fn request(conn: &ConnHandle, control: Control) {
    if !conn.request(control) {
        // A connection that cannot take a control message now is stuck or
        // closing: make it reconnect rather than leave it as it was.
        conn.outbound.close(Disconnect::INSUFFICIENT_STATE, true);
    }
}
