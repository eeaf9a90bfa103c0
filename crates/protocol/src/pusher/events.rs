//! The JSON frames of the Pusher Channels protocol.
//!
//! Every frame is one JSON object `{"event": …, "channel": …, "data": …}`.
//! Pusher's quirk: in most frames the server sends, `data` is a JSON *string*
//! holding JSON (`"data":"{\"socket_id\":…}"`); in `pusher:error`,
//! `pusher:signin_success` and `pusher:subscription_error` it is an object.
//! Clients send objects, though some old ones send the string form too; both
//! are accepted.
//!
//! # Layout
//! - [`name`]: the event names of the protocol.
//! - `client`: what a client sends: [`ClientMessage`] and the data of its
//!   `pusher:subscribe` ([`SubscribeData`]) and `pusher:signin` ([`SigninData`]),
//!   and the JSON a subscription or sign-in signs ([`ChannelData`], [`UserData`]).
//! - `server`: builders of every frame the server sends, each a whole frame as a
//!   `String`; all escaping is serde_json's.

mod client;
mod server;

use thiserror::Error;

pub use client::{
    ChannelData, ClientMessage, SigninData, SubscribeData, UnsubscribeData, UserData,
};
pub use server::{
    cache_miss, connection_established, error, event, member_added, member_removed, ping, pong,
    presence_data, signin_success, subscription_error, subscription_succeeded,
};

/// Event names, declared once.
pub mod name {
    /// Server → client: the socket is ready, here is its id.
    pub const CONNECTION_ESTABLISHED: &str = "pusher:connection_established";
    /// Server → client: something went wrong (data carries a code and message).
    pub const ERROR: &str = "pusher:error";
    /// Either way: are you there?
    pub const PING: &str = "pusher:ping";
    /// Either way: the answer to a ping.
    pub const PONG: &str = "pusher:pong";
    /// Client → server: subscribe to a channel.
    pub const SUBSCRIBE: &str = "pusher:subscribe";
    /// Client → server: leave a channel.
    pub const UNSUBSCRIBE: &str = "pusher:unsubscribe";
    /// Client → server: sign in as a user.
    pub const SIGNIN: &str = "pusher:signin";
    /// Server → client: the sign-in was accepted.
    pub const SIGNIN_SUCCESS: &str = "pusher:signin_success";
    /// Server → client: a subscription was refused.
    pub const SUBSCRIPTION_ERROR: &str = "pusher:subscription_error";
    /// Server → client: a cache channel has no event to replay.
    pub const CACHE_MISS: &str = "pusher:cache_miss";
    /// Server → client: the subscription is in place.
    pub const SUBSCRIPTION_SUCCEEDED: &str = "pusher_internal:subscription_succeeded";
    /// Server → client: a user joined a presence channel.
    pub const MEMBER_ADDED: &str = "pusher_internal:member_added";
    /// Server → client: a user left a presence channel.
    pub const MEMBER_REMOVED: &str = "pusher_internal:member_removed";
    /// The prefix of the events clients trigger for each other.
    pub const CLIENT_EVENT_PREFIX: &str = "client-";

    /// Whether `event` is a client event (`client-…`).
    pub fn is_client_event(event: &str) -> bool {
        event.starts_with(CLIENT_EVENT_PREFIX)
    }
}

/// Why a client's frame, or the JSON inside it, was refused. A client error:
/// answer it with a `pusher:error`, never panic.
#[derive(Debug, Error)]
pub enum EventError {
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0} needs a data object")]
    MissingData(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
}
