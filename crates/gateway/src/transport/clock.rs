//! The timers of a connection task, whatever its transport: server pings, the
//! session's deadline, the moment a drain closes the connection, and a write that
//! stalled. One sleep waits for the nearest; when it fires, [`Clock::fired`] says
//! what is due.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::time::Duration;

use switchboard_core::Disconnect;
use tokio::time::{Instant, Sleep};

use super::{panicked, WRITE_TIMEOUT};
use crate::connection::Session;

pub struct Clock {
    ping_interval: Duration,
    next_ping: Instant,
    /// Set once the node drains: when this connection is told to go.
    drain_at: Option<Instant>,
}

/// What a fired timer asks of the connection.
pub enum Due {
    /// Nothing yet (the sleep is re-armed).
    Nothing,
    /// A write has taken nothing for [`WRITE_TIMEOUT`]: the client stopped reading.
    Stalled,
    /// The drain reached this connection.
    Shutdown,
    /// The session ended the connection (no pong, expired, …).
    Disconnect(Disconnect),
}

impl Clock {
    pub fn new(ping_interval: Duration) -> Clock {
        Clock {
            ping_interval,
            next_ping: Instant::now() + ping_interval,
            drain_at: None,
        }
    }

    /// The first thing due, for the connection's sleep.
    pub fn first(&self, deadline: Instant) -> Instant {
        self.next_ping.min(deadline)
    }

    pub fn is_draining(&self) -> bool {
        self.drain_at.is_some()
    }

    /// The node drains: this connection goes at a moment spread over `window`, so
    /// that the other nodes are not hit by every client of this one at once.
    pub fn drain_within(&mut self, window: Duration) {
        self.drain_at = Some(Instant::now() + window.mul_f64(fastrand::f64()));
    }

    /// Re-arms `timer` for the nearest of: the next ping, the session's
    /// `deadline`, the drain, the timeout of a write stalled since `stalled`.
    pub fn arm(&self, timer: Pin<&mut Sleep>, deadline: Instant, stalled: Option<Instant>) {
        let mut wake = self.next_ping.min(deadline);
        if let Some(at) = self.drain_at {
            wake = wake.min(at);
        }
        if let Some(since) = stalled {
            wake = wake.min(since + WRITE_TIMEOUT);
        }
        let fired = timer.is_elapsed();
        if fired || timer.deadline() != wake {
            // A deadline that passed without ending anything would fire at once
            // again and again: look again a little later instead.
            let floor = Instant::now() + Duration::from_millis(10);
            timer.reset(if fired { wake.max(floor) } else { wake });
        }
    }

    /// What is due now that the timer fired. Pings and the session's `deadline`
    /// run the session's handlers here; a panic in one ends the connection.
    pub fn fired<S: Session>(
        &mut self,
        session: &mut S,
        deadline: Instant,
        stalled: Option<Instant>,
    ) -> Due {
        let now = Instant::now();
        if stalled.is_some_and(|since| now >= since + WRITE_TIMEOUT) {
            return Due::Stalled;
        }
        if self.drain_at.is_some_and(|at| now >= at) {
            return Due::Shutdown;
        }
        if now >= self.next_ping {
            self.next_ping = now + self.ping_interval;
            let ticked = catch_unwind(AssertUnwindSafe(|| session.on_ping_tick()));
            if let Err(d) = ticked.unwrap_or_else(|_| Err(panicked("a ping"))) {
                return Due::Disconnect(d);
            }
        }
        if now >= deadline {
            let fired = catch_unwind(AssertUnwindSafe(|| session.on_deadline()));
            if let Err(d) = fired.unwrap_or_else(|_| Err(panicked("a deadline"))) {
                return Due::Disconnect(d);
            }
        }
        Due::Nothing
    }
}
