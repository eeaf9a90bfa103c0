//! Waiting for a condition: poll it until it holds or the patience runs out.
//!
//! The check is an async closure (`async || …`, or `|| async { … }`), so it can
//! call an API, read metrics or query a bucket. It is polled at once, then with
//! a short interval that backs off from [`FIRST_INTERVAL`] to [`MAX_INTERVAL`]:
//! in-memory conditions are noticed within milliseconds, and a check that costs a
//! round trip is not repeated more than ten times a second.
//!
//! A check still running at the deadline is allowed to finish, and its answer
//! counts: the deadline bounds the waiting, not the check itself.

use std::convert::Infallible;
use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;

/// The pause after the first failed check.
pub const FIRST_INTERVAL: Duration = Duration::from_millis(10);
/// The longest pause between two checks.
pub const MAX_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns true; panics after `patience` naming `what`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// let start = std::time::Instant::now();
/// switchboard_test_support::eventually("a moment to pass", Duration::from_secs(5), async || {
///     start.elapsed() > Duration::from_millis(30)
/// })
/// .await;
/// # }
/// ```
pub async fn eventually(
    what: impl Display,
    patience: Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    poll(what, patience, async || {
        if check().await {
            Ok(())
        } else {
            Err(None::<Infallible>)
        }
    })
    .await
}

/// Polls `check` until it returns `Some`, and returns that value; panics after
/// `patience` naming `what`.
pub async fn eventually_some<T>(
    what: impl Display,
    patience: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    poll(what, patience, async || {
        check().await.ok_or(None::<Infallible>)
    })
    .await
}

/// Polls `check` until it returns `Ok`, and returns that value; panics after
/// `patience` naming `what` and showing the last `Err` (what was seen instead).
pub async fn eventually_ok<T, E: Display>(
    what: impl Display,
    patience: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    poll(what, patience, async || check().await.map_err(Some)).await
}

/// The one polling loop: `Err(Some(seen))` is a miss worth reporting,
/// `Err(None)` a plain miss.
async fn poll<T, E: Display>(
    what: impl Display,
    patience: Duration,
    mut check: impl AsyncFnMut() -> Result<T, Option<E>>,
) -> T {
    let deadline = Instant::now() + patience;
    let mut interval = FIRST_INTERVAL;
    loop {
        let miss = match check().await {
            Ok(value) => return value,
            Err(miss) => miss,
        };
        let now = Instant::now();
        if now >= deadline {
            match miss {
                Some(seen) => {
                    panic!("timed out after {patience:?} waiting for: {what}; last seen: {seen}")
                }
                None => panic!("timed out after {patience:?} waiting for: {what}"),
            }
        }
        // The last check falls on the deadline rather than an interval past it.
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_once_the_condition_holds() {
        let mut polls = 0;
        eventually("three polls", Duration::from_secs(1), async || {
            polls += 1;
            polls == 3
        })
        .await;
        assert_eq!(polls, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_back_the_value_waited_for() {
        let mut polls = 0;
        let got = eventually_some("a value", Duration::from_secs(1), async || {
            polls += 1;
            (polls > 2).then_some(polls * 10)
        })
        .await;
        assert_eq!(got, 30);
        let got = eventually_ok("ok", Duration::from_secs(1), async || {
            Ok::<_, String>("fine")
        })
        .await;
        assert_eq!(got, "fine");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_check_is_on_the_deadline() {
        let start = Instant::now();
        let mut at = Vec::new();
        let holds_at_deadline = async || {
            at.push(start.elapsed().as_millis());
            start.elapsed() >= Duration::from_millis(250)
        };
        eventually(
            "the deadline",
            Duration::from_millis(250),
            holds_at_deadline,
        )
        .await;
        assert_eq!(at, [0, 10, 30, 70, 150, 250]);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 2s waiting for: the door to open")]
    async fn the_failure_names_what_and_how_long() {
        eventually("the door to open", Duration::from_secs(2), async || false).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for: a green light; last seen: red")]
    async fn the_failure_shows_what_was_seen_last() {
        eventually_ok("a green light", Duration::from_secs(2), async || {
            Err::<(), _>("red")
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_in_flight_at_the_deadline_counts() {
        eventually("a slow yes", Duration::from_millis(100), async || {
            tokio::time::sleep(Duration::from_millis(500)).await;
            true
        })
        .await;
    }
}
