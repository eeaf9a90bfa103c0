//! Why a connection is closed. Codes are WebSocket close codes in the application
//! range, following the Centrifugo protocol: 3000–3499 ask the client to
//! reconnect, 3500–3999 ask it not to.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u16,
    pub reason: Cow<'static, str>,
    pub reconnect: bool,
}

macro_rules! disconnects {
    ($($name:ident = $code:expr, $reason:expr;)*) => {
        impl Disconnect {
            $(pub const $name: Disconnect = Disconnect {
                code: $code,
                reason: Cow::Borrowed($reason),
                reconnect: $code < 3500,
            };)*
        }
    };
}

disconnects! {
    CONNECTION_CLOSED = 3000, "connection closed";
    SHUTDOWN = 3001, "shutdown";
    SERVER_ERROR = 3004, "internal server error";
    EXPIRED = 3005, "connection expired";
    SUB_EXPIRED = 3006, "subscription expired";
    SLOW = 3008, "slow";
    WRITE_ERROR = 3009, "write error";
    INSUFFICIENT_STATE = 3010, "insufficient state";
    FORCE_RECONNECT = 3011, "force reconnect";
    NO_PONG = 3012, "no pong";
    TOO_MANY_REQUESTS = 3013, "too many requests";
    INVALID_TOKEN = 3500, "invalid token";
    BAD_REQUEST = 3501, "bad request";
    STALE = 3502, "stale";
    FORCE_NO_RECONNECT = 3503, "force disconnect";
    CONNECTION_LIMIT = 3504, "connection limit";
    CHANNEL_LIMIT = 3505, "channel limit";
    INAPPROPRIATE_PROTOCOL = 3506, "inappropriate protocol";
    PERMISSION_DENIED = 3507, "permission denied";
    NOT_AVAILABLE = 3508, "not available";
}

impl Disconnect {
    /// A disconnect with a custom code, as the server API allows. The reconnect
    /// advice follows the code's range.
    pub fn custom(code: u16, reason: impl Into<String>) -> Disconnect {
        Disconnect {
            code,
            reason: Cow::Owned(reason.into()),
            reconnect: (3000..3500).contains(&code) || (4000..4500).contains(&code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_advice_follows_code_ranges() {
        let cases = [
            (Disconnect::SLOW, true),
            (Disconnect::SHUTDOWN, true),
            (Disconnect::NO_PONG, true),
            (Disconnect::INVALID_TOKEN, false),
            (Disconnect::BAD_REQUEST, false),
            (Disconnect::FORCE_NO_RECONNECT, false),
        ];
        for (d, reconnect) in cases {
            assert_eq!(d.reconnect, reconnect, "{}", d.code);
        }
        assert!(Disconnect::custom(4000, "x").reconnect);
        assert!(!Disconnect::custom(4500, "x").reconnect);
    }
}
