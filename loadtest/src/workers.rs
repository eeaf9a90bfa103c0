//! Worker processes: the same binary re-executed with the hidden `worker`
//! subcommand, so a run can hold more connections than one process may open files.
//!
//! The parent writes the worker's [`PartSpec`] as one JSON line on its stdin, then
//! `stop` when the run ends (closing stdin stops it too). The worker answers on its
//! stdout with JSON lines: [`WorkerMsg::Progress`] a few times a second and one
//! [`WorkerMsg::Done`] with its [`PartResult`], whose histograms travel in the
//! lossless compact form of `hist::Compact`. The parent merges them as if one
//! process had measured everything. A part that fits in this process runs as a
//! task instead, behind the same [`PartHandle`].

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::receivers::{self, Live, PartResult, PartSpec, Progress};

/// What a worker writes on its stdout, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
pub enum WorkerMsg {
    Progress(Progress),
    Done(Box<PartResult>),
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start worker {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("worker ended without a result (exit {0})")]
    NoResult(String),
    #[error("worker i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A running part, local or in a worker process.
pub struct PartHandle {
    pub live: Arc<Live>,
    /// The worker's process id; none for a local part.
    pub pid: Option<u32>,
    pub stop: CancellationToken,
    result: JoinHandle<Result<PartResult, WorkerError>>,
}

impl PartHandle {
    /// Runs `spec` as a task of this process.
    pub fn local(spec: PartSpec) -> PartHandle {
        let live = Arc::new(Live::default());
        let stop = CancellationToken::new();
        let result = tokio::spawn({
            let (live, stop) = (live.clone(), stop.clone());
            async move { Ok(receivers::run(spec, live, stop).await) }
        });
        PartHandle {
            live,
            pid: None,
            stop,
            result,
        }
    }

    /// Runs `spec` in a new worker process.
    pub fn spawn(spec: &PartSpec) -> Result<PartHandle, WorkerError> {
        let exe = std::env::current_exe().map_err(|e| WorkerError::Spawn("self".into(), e))?;
        let mut child = Command::new(&exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| WorkerError::Spawn(exe.display().to_string(), e))?;
        let line = serde_json::to_string(spec).map_err(|e| WorkerError::Io(e.into()))? + "\n";
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| WorkerError::NoResult("no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| WorkerError::NoResult("no stdout".into()))?;
        let pid = child.id();
        let live = Arc::new(Live::default());
        let stop = CancellationToken::new();
        let result = tokio::spawn({
            let (live, stop) = (live.clone(), stop.clone());
            async move {
                stdin.write_all(line.as_bytes()).await?;
                let stopper = tokio::spawn({
                    let stop = stop.clone();
                    async move {
                        stop.cancelled().await;
                        let _ = stdin.write_all(b"stop\n").await;
                        let _ = stdin.flush().await;
                        stdin
                    }
                });
                let mut lines = BufReader::new(stdout).lines();
                let mut done = None;
                while let Some(line) = lines.next_line().await? {
                    match serde_json::from_str::<WorkerMsg>(&line) {
                        Ok(WorkerMsg::Progress(p)) => live.store(p),
                        Ok(WorkerMsg::Done(r)) => {
                            done = Some(*r);
                            break;
                        }
                        Err(_) => {} // not ours: ignore
                    }
                }
                let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                stopper.abort();
                match done {
                    Some(r) => Ok(r),
                    None => Err(WorkerError::NoResult(format!("{status:?}"))),
                }
            }
        });
        Ok(PartHandle {
            live,
            pid,
            stop,
            result,
        })
    }

    /// Stops the part and waits for its result.
    pub async fn finish(self) -> Result<PartResult, WorkerError> {
        self.stop.cancel();
        match self.result.await {
            Ok(r) => r,
            Err(e) => Err(WorkerError::NoResult(e.to_string())),
        }
    }
}

/// The worker side: reads a spec from stdin, runs it, reports on stdout.
pub async fn worker_main() -> anyhow::Result<()> {
    crate::limits::raise_nofile();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let line = stdin
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no part spec on stdin"))?;
    let spec: PartSpec = serde_json::from_str(&line)?;
    let live = Arc::new(Live::default());
    let stop = CancellationToken::new();
    // Stop on "stop" or when the parent goes away (stdin closes).
    tokio::spawn({
        let stop = stop.clone();
        async move {
            while let Ok(Some(l)) = stdin.next_line().await {
                if l.trim() == "stop" {
                    break;
                }
            }
            stop.cancel();
        }
    });
    let reporter = tokio::spawn({
        let live = live.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                emit(&WorkerMsg::Progress(live.snapshot()));
            }
        }
    });
    // Spawned, as a local part is: on `block_on`'s thread, every connection's
    // pacing timer and spawn would be a wake-up across threads.
    let result = tokio::spawn(receivers::run(spec, live.clone(), stop)).await?;
    reporter.abort();
    emit(&WorkerMsg::Progress(live.snapshot()));
    emit(&WorkerMsg::Done(Box::new(result)));
    Ok(())
}

fn emit(msg: &WorkerMsg) {
    use std::io::Write;
    if let Ok(line) = serde_json::to_string(msg) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Splits `total` connections into parts of at most `per_process`: one part in
/// this process when it fits (and `workers` is 0), else `workers` (or as many as
/// needed) worker processes of equal share.
pub fn split(total: u64, per_process: u64, workers: u32) -> Vec<(u64, u64)> {
    let n = if workers > 0 {
        u64::from(workers)
    } else if total <= per_process.max(1) {
        1
    } else {
        total.div_ceil(per_process.max(1))
    };
    let n = n.max(1);
    (0..n)
        .map(|i| {
            let first = total * i / n;
            (first, total * (i + 1) / n - first)
        })
        .filter(|&(_, count)| count > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_every_connection_once() {
        assert_eq!(split(100, 15_000, 0), vec![(0, 100)]);
        let parts = split(40_000, 15_000, 0);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(|p| p.1).sum::<u64>(), 40_000);
        assert!(parts.iter().all(|p| p.1 <= 15_000));
        assert_eq!(parts[1].0, parts[0].1);
        assert_eq!(split(10, 100, 4).len(), 4);
        assert_eq!(split(2, 100, 4).len(), 2);
    }
}
