//! The Pusher protocol's words for the core's: disconnect reasons → close codes.
//! pusher-js reads the code: 4000–4099 it does not reconnect, 4100–4199 it
//! reconnects after a back-off, 4200–4299 at once.

use switchboard_core::disconnect::Reason;
use switchboard_core::Disconnect;
use switchboard_protocol::pusher::codes;

use crate::connection::Goodbye;

/// The close code of `d`.
pub fn close_code(d: &Disconnect) -> u16 {
    match d.reason {
        // Ours to end, the client's to come back at once (elsewhere, when draining).
        Reason::ConnectionClosed
        | Reason::Shutdown
        | Reason::ServerError
        | Reason::WriteError
        | Reason::InsufficientState
        | Reason::ForceReconnect => codes::RECONNECT_NOW,
        Reason::Slow | Reason::ConnectionLimit | Reason::ChannelLimit => codes::OVER_CAPACITY,
        Reason::NoPong => codes::PONG_TIMEOUT,
        Reason::Stale => codes::INACTIVE,
        Reason::TooManyRequests => codes::CLIENT_EVENT_RATE,
        Reason::InvalidToken
        | Reason::PermissionDenied
        | Reason::Expired
        | Reason::SubscriptionExpired
        | Reason::ForceNoReconnect => codes::UNAUTHORIZED,
        // Input that is not the protocol: coming back would send it again.
        Reason::BadRequest
        | Reason::MessageTooBig
        | Reason::InappropriateProtocol
        | Reason::NotAvailable => codes::UNSUPPORTED_PROTOCOL,
        Reason::Custom(custom) => custom,
    }
}

pub fn goodbye(d: &Disconnect) -> Goodbye {
    let code = close_code(d);
    Goodbye {
        code,
        reconnect: (4100..4300).contains(&code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_asks_for_an_immediate_reconnect() {
        assert_eq!(goodbye(&Disconnect::SHUTDOWN).code, codes::RECONNECT_NOW);
        assert!(goodbye(&Disconnect::SHUTDOWN).reconnect);
    }

    #[test]
    fn every_reason_has_a_pusher_code() {
        let cases = [
            (Disconnect::NO_PONG, codes::PONG_TIMEOUT, true),
            (
                Disconnect::TOO_MANY_REQUESTS,
                codes::CLIENT_EVENT_RATE,
                false,
            ),
            (Disconnect::SLOW, codes::OVER_CAPACITY, true),
            (Disconnect::PERMISSION_DENIED, codes::UNAUTHORIZED, false),
            (Disconnect::FORCE_NO_RECONNECT, codes::UNAUTHORIZED, false),
            (Disconnect::BAD_REQUEST, codes::UNSUPPORTED_PROTOCOL, false),
            (Disconnect::custom(4001, "x"), codes::APP_NOT_FOUND, false),
        ];
        for (d, code, reconnect) in cases {
            assert_eq!(goodbye(&d), Goodbye { code, reconnect }, "{d:?}");
        }
    }
}
