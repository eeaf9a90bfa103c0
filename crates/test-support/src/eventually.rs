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
use std::future::Future;
use std::panic::Location;
use std::time::Duration;

use tokio::time::Instant;

/// The pause after the first failed check.
pub const FIRST_INTERVAL: Duration = Duration::from_millis(10);
/// The longest pause between two checks.
pub const MAX_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns true; panics after `patience` naming `what`
/// and the caller's line.
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
// Plain functions returning futures rather than `async fn`s, so that
// `#[track_caller]` can name the test's line in the failure.
#[track_caller]
pub fn eventually(
    what: impl Display,
    patience: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> impl Future<Output = ()> {
    let at = Location::caller();
    poll(what, patience, at, async move || {
        if check().await {
            Ok(())
        } else {
            Err(None::<Infallible>)
        }
    })
}

/// Polls `check` until it returns `Some`, and returns that value; panics after
/// `patience` naming `what` and the caller's line.
#[track_caller]
pub fn eventually_some<T>(
    what: impl Display,
    patience: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> impl Future<Output = T> {
    let at = Location::caller();
    poll(what, patience, at, async move || {
        check().await.ok_or(None::<Infallible>)
    })
}

/// Polls `check` until it returns `Ok`, and returns that value; panics after
/// `patience` naming `what` and the caller's line, and showing the last `Err`
/// (what was seen instead).
#[track_caller]
pub fn eventually_ok<T, E: Display>(
    what: impl Display,
    patience: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> impl Future<Output = T> {
    let at = Location::caller();
    poll(what, patience, at, async move || {
        check().await.map_err(Some)
    })
}

/// The one polling loop: `Err(Some(seen))` is a miss worth reporting,
/// `Err(None)` a plain miss.
async fn poll<T, E: Display>(
    what: impl Display,
    patience: Duration,
    at: &'static Location<'static>,
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
            let seen = miss.map_or(String::new(), |seen| format!("; last seen: {seen}"));
            panic!("timed out after {patience:?} waiting for: {what} (at {at}){seen}");
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

    /// The message of the panic that `wait` ends in.
    async fn failure(wait: impl Future<Output = ()> + Send + 'static) -> String {
        let panic = tokio::spawn(wait).await.expect_err("it gave up");
        *panic.into_panic().downcast::<String>().expect("a message")
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_names_what_how_long_and_where() {
        let line = line!() + 1;
        let wait = eventually("the door to open", Duration::from_secs(2), async || false);
        let message = failure(wait).await;
        assert!(
            message.starts_with("timed out after 2s waiting for: the door to open (at "),
            "{message}"
        );
        assert!(
            message.contains(&format!("{}:{line}:", file!())),
            "{message}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_shows_what_was_seen_last() {
        let wait = async {
            eventually_ok("a green light", Duration::from_secs(2), async || {
                Err::<(), _>("red")
            })
            .await
        };
        let message = failure(wait).await;
        assert!(message.ends_with("; last seen: red"), "{message}");
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
