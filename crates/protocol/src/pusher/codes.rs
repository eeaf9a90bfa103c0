//! Close codes (in WebSocket close frames and in `pusher:error` frames) and the
//! protocol versions of Pusher Channels.
//!
//! The range of a code tells the client what to do next:
//! - 4000–4099: do not reconnect (the same connection would fail again);
//! - 4100–4199: reconnect after a back-off;
//! - 4200–4299: reconnect at once;
//! - 4300–4399: any other error; the connection may stay open.

use std::ops::RangeInclusive;

/// The protocol version this module speaks; pusher-js 8 connects with it.
pub const PROTOCOL_VERSION: u32 = 7;

/// The `protocol` query parameter values accepted at connect time. Versions 5
/// and 6 differ from 7 in nothing a server sends, so Pusher's servers serve
/// all three; anything else is refused with [`UNSUPPORTED_PROTOCOL`].
pub const SUPPORTED_PROTOCOL_VERSIONS: RangeInclusive<u32> = 5..=7;

/// Whether a client asking for protocol `version` can be served.
pub fn is_supported_protocol(version: u32) -> bool {
    SUPPORTED_PROTOCOL_VERSIONS.contains(&version)
}

/// The app accepts only TLS connections and this one is not.
pub const SSL_ONLY: u16 = 4000;
/// Unknown app: no app has the key in the connection's path.
pub const APP_NOT_FOUND: u16 = 4001;
/// The app exists but is disabled.
pub const APP_DISABLED: u16 = 4003;
/// The app is over its connection quota.
pub const OVER_QUOTA: u16 = 4004;
/// The connection's path is not `/app/<key>`.
pub const PATH_NOT_FOUND: u16 = 4005;
/// The `protocol` query parameter is not a number.
pub const INVALID_VERSION: u16 = 4006;
/// The requested protocol version is not one of [`SUPPORTED_PROTOCOL_VERSIONS`].
pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
/// The client named no protocol version.
pub const NO_PROTOCOL: u16 = 4008;
/// The connection is unauthorized (for instance it did not sign in in time).
pub const UNAUTHORIZED: u16 = 4009;
/// The server is over capacity; try again after a back-off.
pub const OVER_CAPACITY: u16 = 4100;
/// Generic "reconnect immediately", for instance when a server shuts down.
pub const RECONNECT_NOW: u16 = 4200;
/// The client did not answer a `pusher:ping` with a `pusher:pong` in time.
pub const PONG_TIMEOUT: u16 = 4201;
/// The connection was closed after a period of inactivity.
pub const INACTIVE: u16 = 4202;
/// The client sent client events faster than its rate limit allows.
pub const CLIENT_EVENT_RATE: u16 = 4301;

/// What a client closed (or told) with a code should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// 4000–4099: give up; reconnecting would fail the same way.
    Never,
    /// 4100–4199: reconnect after a back-off.
    Backoff,
    /// 4200–4299: reconnect at once.
    Immediately,
    /// Anything else: not a reconnect instruction.
    Unspecified,
}

impl Retry {
    /// The instruction carried by `code`.
    pub fn of(code: u16) -> Retry {
        match code {
            4000..=4099 => Retry::Never,
            4100..=4199 => Retry::Backoff,
            4200..=4299 => Retry::Immediately,
            _ => Retry::Unspecified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions_five_to_seven_are_served() {
        assert!(is_supported_protocol(PROTOCOL_VERSION));
        assert!(is_supported_protocol(5));
        assert!(!is_supported_protocol(4));
        assert!(!is_supported_protocol(8));
    }

    #[test]
    fn ranges_carry_the_retry_instruction() {
        assert_eq!(Retry::of(APP_NOT_FOUND), Retry::Never);
        assert_eq!(Retry::of(UNAUTHORIZED), Retry::Never);
        assert_eq!(Retry::of(OVER_CAPACITY), Retry::Backoff);
        assert_eq!(Retry::of(RECONNECT_NOW), Retry::Immediately);
        assert_eq!(Retry::of(PONG_TIMEOUT), Retry::Immediately);
        assert_eq!(Retry::of(INACTIVE), Retry::Immediately);
        assert_eq!(Retry::of(CLIENT_EVENT_RATE), Retry::Unspecified);
        assert_eq!(Retry::of(1000), Retry::Unspecified);
    }
}
