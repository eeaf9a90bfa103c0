//! The Centrifugo protocol's words for the core's: disconnect reasons → close
//! codes and reconnect advice, channel errors → reply error codes.

use switchboard_core::disconnect::Reason;
use switchboard_core::Disconnect;
use switchboard_protocol::centrifugo::codes::{disconnect as code, ErrorCode};

use crate::connection::Goodbye;
use crate::node::ChannelError;

/// The close code of `d`: 3000–3499 ask the client to reconnect, 3500–3999 not to.
pub fn close_code(d: &Disconnect) -> u16 {
    match d.reason {
        Reason::ConnectionClosed => code::CONNECTION_CLOSED,
        Reason::Shutdown => code::SHUTDOWN,
        Reason::ServerError => code::SERVER_ERROR,
        Reason::Expired => code::EXPIRED,
        Reason::SubscriptionExpired => code::SUB_EXPIRED,
        Reason::Slow => code::SLOW,
        Reason::WriteError => code::WRITE_ERROR,
        Reason::InsufficientState => code::INSUFFICIENT_STATE,
        Reason::ForceReconnect => code::FORCE_RECONNECT,
        Reason::NoPong => code::NO_PONG,
        Reason::TooManyRequests => code::TOO_MANY_REQUESTS,
        Reason::InvalidToken => code::INVALID_TOKEN,
        Reason::BadRequest => code::BAD_REQUEST,
        Reason::MessageTooBig => code::MESSAGE_TOO_BIG,
        Reason::Stale => code::STALE,
        Reason::ForceNoReconnect => code::FORCE_NO_RECONNECT,
        Reason::ConnectionLimit => code::CONNECTION_LIMIT,
        Reason::ChannelLimit => code::CHANNEL_LIMIT,
        Reason::InappropriateProtocol => code::INAPPROPRIATE_PROTOCOL,
        Reason::PermissionDenied => code::PERMISSION_DENIED,
        Reason::NotAvailable => code::NOT_AVAILABLE,
        Reason::Custom(custom) => custom,
    }
}

pub fn goodbye(d: &Disconnect) -> Goodbye {
    let code = close_code(d);
    Goodbye {
        code,
        reconnect: code::reconnects(code),
    }
}

/// The reply error for a failed channel operation.
pub fn error_code(e: ChannelError) -> ErrorCode {
    match e {
        ChannelError::Invalid | ChannelError::NotJson => ErrorCode::BAD_REQUEST,
        ChannelError::Unknown => ErrorCode::UNKNOWN_CHANNEL,
        ChannelError::NotAvailable => ErrorCode::NOT_AVAILABLE,
        ChannelError::AlreadySubscribed => ErrorCode::ALREADY_SUBSCRIBED,
        ChannelError::LimitExceeded => ErrorCode::LIMIT_EXCEEDED,
        ChannelError::Unrecoverable => ErrorCode::UNRECOVERABLE_POSITION,
        ChannelError::Internal => ErrorCode::INTERNAL,
        ChannelError::Unconfirmed => ErrorCode::UNCONFIRMED,
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
            assert_eq!(goodbye(&d).reconnect, reconnect, "{}", close_code(&d));
        }
        assert!(goodbye(&Disconnect::custom(4000, "x")).reconnect);
        assert!(!goodbye(&Disconnect::custom(4500, "x")).reconnect);
    }

    #[test]
    fn codes_are_centrifugos() {
        assert_eq!(close_code(&Disconnect::SHUTDOWN), 3001);
        assert_eq!(close_code(&Disconnect::SLOW), 3008);
        assert_eq!(close_code(&Disconnect::INSUFFICIENT_STATE), 3010);
        assert_eq!(close_code(&Disconnect::INVALID_TOKEN), 3500);
        assert_eq!(close_code(&Disconnect::INAPPROPRIATE_PROTOCOL), 3506);
        assert_eq!(close_code(&Disconnect::MESSAGE_TOO_BIG), 1009);
        assert!(!goodbye(&Disconnect::MESSAGE_TOO_BIG).reconnect);
        assert_eq!(close_code(&Disconnect::custom(4321, "x")), 4321);
    }
}
