//! The process-level shutdown signal every Switchboard binary listens to.

use std::future::Future;

use tokio::signal::unix::{signal as unix_signal, SignalKind};

/// Completes on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is first
/// polled: a binary calls it before it announces that it listens, so a SIGTERM
/// sent right after the announcement drains instead of killing the process.
/// Must be called inside a tokio runtime.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    let terminate = unix_signal(SignalKind::terminate());
    let interrupt = unix_signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(terminate) => {}
            _ = wait(interrupt) => {}
        }
    }
}
