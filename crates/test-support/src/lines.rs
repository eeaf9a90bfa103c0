//! A child process's stdout, line by line, for tests of the binaries: they print
//! a line with their address once bound ("starting on …") and again once they
//! serve ("listening on …").

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a binary may take to print the line a test waits for.
const LINE_DEADLINE: Duration = Duration::from_secs(30);

/// The lines of a child's stdout, read on a thread so that every wait is bounded
/// and the child never blocks on a full pipe (the thread keeps draining after
/// this is dropped).
pub struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// Takes the child's piped stdout.
    pub fn of(child: &mut Child) -> Lines {
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Nobody listening any more: keep draining.
                let _ = tx.send(line);
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The rest of the next line that begins with `prefix`; panics, showing the
    /// lines that came instead, when the child closes stdout (exits) or after 30 s.
    #[track_caller]
    pub fn after(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + LINE_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix(prefix) {
                        return rest.to_owned();
                    }
                    self.seen.push(line);
                }
                Err(e) => panic!(
                    "no line starting {prefix:?} ({}); the child printed {:?}",
                    match e {
                        mpsc::RecvTimeoutError::Timeout => "timed out",
                        mpsc::RecvTimeoutError::Disconnected => "it closed stdout",
                    },
                    self.seen
                ),
            }
        }
    }
}
