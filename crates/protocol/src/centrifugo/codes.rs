//! Error codes (in replies) and disconnect codes (in close frames) of the
//! Centrifugo client protocol.
//!
//! Disconnect codes 3000–3499 and 4000–4499 tell a client to reconnect; 3500–3999
//! and 4500–4999 tell it not to. Unsubscribe codes below 2500 end a subscription,
//! from 2500 on the client resubscribes.

/// An error returned in a reply to one command; the connection stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: u32,
    pub message: &'static str,
    /// The client may retry the same command later.
    pub temporary: bool,
}

macro_rules! error_codes {
    ($($name:ident = $code:expr, $msg:expr, $temp:expr;)*) => {
        impl ErrorCode { $(pub const $name: ErrorCode = ErrorCode { code: $code, message: $msg, temporary: $temp };)* }
    };
}

error_codes! {
    INTERNAL = 100, "internal server error", true;
    UNAUTHORIZED = 101, "unauthorized", false;
    UNKNOWN_CHANNEL = 102, "unknown channel", false;
    PERMISSION_DENIED = 103, "permission denied", false;
    METHOD_NOT_FOUND = 104, "method not found", false;
    ALREADY_SUBSCRIBED = 105, "already subscribed", false;
    LIMIT_EXCEEDED = 106, "limit exceeded", false;
    BAD_REQUEST = 107, "bad request", false;
    NOT_AVAILABLE = 108, "not available", false;
    TOKEN_EXPIRED = 109, "token expired", false;
    EXPIRED = 110, "expired", false;
    TOO_MANY_REQUESTS = 111, "too many requests", true;
    UNRECOVERABLE_POSITION = 112, "unrecoverable position", false;
    // Switchboard's words for one case of 100 (internal, temporary): a publish
    // may have been made; the same idempotency key makes a retry safe.
    UNCONFIRMED = 100, "publish not confirmed in time: it may have been made; retry with the same idempotency_key", true;
}

/// Unsubscribe push code: the server ended the subscription, do not resubscribe.
pub const UNSUBSCRIBE_SERVER: u32 = 2000;
/// Unsubscribe push code: the subscription lost its position, resubscribe to recover.
pub const UNSUBSCRIBE_INSUFFICIENT_STATE: u32 = 2500;

/// Disconnect codes, sent as WebSocket close codes (and in disconnect pushes).
pub mod disconnect {
    pub const CONNECTION_CLOSED: u16 = 3000;
    pub const SHUTDOWN: u16 = 3001;
    pub const SERVER_ERROR: u16 = 3004;
    pub const EXPIRED: u16 = 3005;
    pub const SUB_EXPIRED: u16 = 3006;
    pub const SLOW: u16 = 3008;
    pub const WRITE_ERROR: u16 = 3009;
    pub const INSUFFICIENT_STATE: u16 = 3010;
    pub const FORCE_RECONNECT: u16 = 3011;
    pub const NO_PONG: u16 = 3012;
    pub const TOO_MANY_REQUESTS: u16 = 3013;
    pub const INVALID_TOKEN: u16 = 3500;
    pub const BAD_REQUEST: u16 = 3501;
    pub const STALE: u16 = 3502;
    pub const FORCE_NO_RECONNECT: u16 = 3503;
    pub const CONNECTION_LIMIT: u16 = 3504;
    pub const CHANNEL_LIMIT: u16 = 3505;
    pub const INAPPROPRIATE_PROTOCOL: u16 = 3506;
    pub const PERMISSION_DENIED: u16 = 3507;
    pub const NOT_AVAILABLE: u16 = 3508;
    /// The WebSocket close code clients know for "message too big" (RFC 6455).
    pub const MESSAGE_TOO_BIG: u16 = 1009;

    /// Whether a client closed with `code` is told to reconnect.
    pub fn reconnects(code: u16) -> bool {
        (3000..3500).contains(&code) || (4000..4500).contains(&code)
    }
}
