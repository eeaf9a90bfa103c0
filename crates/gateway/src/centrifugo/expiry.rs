//! When tokens end: the instants of `exp` claims, and the close delay that gives a
//! refresh at expiry time to arrive.

use std::time::Duration;

use tokio::time::Instant;

use super::auth::now_secs;

/// A far-away instant for "no deadline".
pub(super) fn never() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// The instant of `exp` (seconds since the Unix epoch); now when it has passed,
/// "never" when it is too far away to represent.
pub(super) fn instant_of(exp: u64) -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(exp.saturating_sub(now_secs())))
        .unwrap_or_else(never)
}

/// How long a connection or subscription may outlive its token: centrifuge-js
/// asks for a new token when the old one expires, and its refresh must have time
/// to arrive (Centrifugo's `client_expired_close_delay`, 25 s by default).
const EXPIRED_CLOSE_DELAY: Duration = Duration::from_secs(25);

/// When a connection or subscription whose token expires at `exp` is closed: at
/// once when it has expired already, else [`EXPIRED_CLOSE_DELAY`] after `exp`.
pub(super) fn close_at(exp: u64) -> Instant {
    if exp <= now_secs() {
        return Instant::now();
    }
    let at = instant_of(exp);
    at.checked_add(EXPIRED_CLOSE_DELAY).unwrap_or(at)
}

/// Whether a token's expiry is set, and its seconds from now, as replies carry them.
pub(super) fn expiry(exp: Option<u64>) -> (bool, u32) {
    match exp {
        Some(exp) => (
            true,
            u32::try_from(exp.saturating_sub(now_secs())).unwrap_or(u32::MAX),
        ),
        None => (false, 0),
    }
}
