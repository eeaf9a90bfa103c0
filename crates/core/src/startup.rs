//! What the binaries share at start-up: the backoff between attempts to reach
//! NATS (a gateway or presence replica started before NATS answers keeps trying,
//! and reports not-ready, instead of exiting into a crash loop), and the lines on
//! stdout that scripts and tests read to learn the ports.

pub use crate::backoff::Backoff;

/// Prints `line` on stdout and flushes it; a closed stdout (a script that read
/// the line it wanted and went away) is not an error.
pub fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
