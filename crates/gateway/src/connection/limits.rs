//! Limits a connection's commands are held to.

use tokio::time::Instant;

/// Token bucket limiting commands per second.
#[derive(Debug)]
pub struct CommandRate {
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl CommandRate {
    /// A bucket of `rate` commands per second, full.
    pub fn new(rate: u32) -> CommandRate {
        CommandRate {
            tokens: f64::from(rate),
            rate: f64::from(rate),
            last: Instant::now(),
        }
    }

    /// Takes one command's token; false when the client is over its rate.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn refills_at_its_rate_and_never_above_it() {
        let mut rate = CommandRate::new(2);
        assert!(rate.take() && rate.take());
        assert!(!rate.take());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(rate.take());
        assert!(!rate.take());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(rate.take() && rate.take());
        assert!(!rate.take());
    }
}
