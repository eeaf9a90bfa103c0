//! Exponential backoff with jitter: the binaries' start-up attempts to reach
//! NATS, and reads retried while a JetStream stream elects a new leader.

use std::time::Duration;

/// Delays that double from `initial` up to `max`, each spread by ±20 % so that
/// many processes started together do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// The start-up default: 250 ms, doubling up to 5 s.
    pub fn startup() -> Backoff {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(5))
    }

    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            next: initial.min(max),
            max,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next.mul_f64(0.8 + 0.4 * fastrand::f64());
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let bounds = [100, 200, 400, 700, 700, 700];
        for base in bounds {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            let base = base as f64;
            assert!(
                d >= base * 0.8 - 1e-6 && d <= base * 1.2 + 1e-6,
                "{d} ms not within 20 % of {base} ms"
            );
        }
    }

    #[test]
    fn an_initial_delay_above_the_cap_is_capped() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(1));
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }
}
