//! Why a connection is closed, in the core's words.
//!
//! A [`Disconnect`] carries a [`Reason`] and a human-readable message, but no
//! wire number: each client protocol maps a reason to its own close code and
//! reconnect advice (the Centrifugo front end to 3000–3999, the Pusher one to
//! 4000–4299), so the hub and the queues can close connections of any protocol.

use std::borrow::Cow;

/// What ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The client went away (or its socket failed).
    ConnectionClosed,
    /// This node is shutting down: reconnect elsewhere.
    Shutdown,
    /// Something failed on our side.
    ServerError,
    /// The connection's credentials expired.
    Expired,
    /// A subscription's credentials expired.
    SubscriptionExpired,
    /// The client did not read fast enough; its queue overflowed.
    Slow,
    /// The socket took nothing for too long, or failed while writing.
    WriteError,
    /// The node lost events of a channel it cannot fill in: reconnect and recover.
    InsufficientState,
    /// The server asks the client to reconnect.
    ForceReconnect,
    /// The client did not answer a ping.
    NoPong,
    /// The client sent more commands than its rate allows.
    TooManyRequests,
    /// The connection's credentials were refused.
    InvalidToken,
    /// The client broke the protocol.
    BadRequest,
    /// A message larger than the size limit.
    MessageTooBig,
    /// The client did not authenticate in time.
    Stale,
    /// The server asks the client to go and not come back.
    ForceNoReconnect,
    /// The node or the application has no room for another connection.
    ConnectionLimit,
    /// The connection has no room for another subscription.
    ChannelLimit,
    /// Something the connection must receive cannot be carried by its encoding.
    InappropriateProtocol,
    /// The client asked for something it is not allowed.
    PermissionDenied,
    /// The client asked for something this server does not offer.
    NotAvailable,
    /// A code chosen by a backend through a server API; the protocol whose API it
    /// came through gives it its meaning.
    Custom(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: Reason,
    /// Said to the client (close frame reason, disconnect push) and logged.
    pub message: Cow<'static, str>,
}

macro_rules! disconnects {
    ($($name:ident = $reason:ident, $message:expr;)*) => {
        impl Disconnect {
            $(pub const $name: Disconnect = Disconnect {
                reason: Reason::$reason,
                message: Cow::Borrowed($message),
            };)*
        }
    };
}

disconnects! {
    CONNECTION_CLOSED = ConnectionClosed, "connection closed";
    SHUTDOWN = Shutdown, "shutdown";
    SERVER_ERROR = ServerError, "internal server error";
    EXPIRED = Expired, "connection expired";
    SUB_EXPIRED = SubscriptionExpired, "subscription expired";
    SLOW = Slow, "slow";
    WRITE_ERROR = WriteError, "write error";
    INSUFFICIENT_STATE = InsufficientState, "insufficient state";
    FORCE_RECONNECT = ForceReconnect, "force reconnect";
    NO_PONG = NoPong, "no pong";
    TOO_MANY_REQUESTS = TooManyRequests, "too many requests";
    INVALID_TOKEN = InvalidToken, "invalid token";
    BAD_REQUEST = BadRequest, "bad request";
    MESSAGE_TOO_BIG = MessageTooBig, "message size limit";
    STALE = Stale, "stale";
    FORCE_NO_RECONNECT = ForceNoReconnect, "force disconnect";
    CONNECTION_LIMIT = ConnectionLimit, "connection limit";
    CHANNEL_LIMIT = ChannelLimit, "channel limit";
    INAPPROPRIATE_PROTOCOL = InappropriateProtocol, "inappropriate protocol";
    PERMISSION_DENIED = PermissionDenied, "permission denied";
    NOT_AVAILABLE = NotAvailable, "not available";
}

impl Disconnect {
    /// A disconnect with a backend's own code and message, as a server API allows.
    pub fn custom(code: u16, message: impl Into<String>) -> Disconnect {
        Disconnect {
            reason: Reason::Custom(code),
            message: Cow::Owned(message.into()),
        }
    }
}
