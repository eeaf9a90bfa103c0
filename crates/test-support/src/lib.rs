//! Test support: real `nats-server` processes, and waiting for a condition.
//!
//! Layout: this file runs the servers; [`eventually`](mod@eventually) polls an
//! async check with a deadline, for tests that wait for something to happen;
//! [`Lines`] reads the lines a binary under test prints, with a deadline.
//!
//! Every server gets free ports and its own temporary JetStream store, so tests
//! run in parallel; it is killed (and its store removed) on drop. Start-up is
//! awaited by polling the server's log with a deadline, never by sleeping.
//!
//! ```no_run
//! let nats = switchboard_test_support::NatsServer::start();
//! println!("connect to {}", nats.url());
//! ```

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod eventually;
mod lines;

pub use eventually::{eventually, eventually_ok, eventually_some};
pub use lines::Lines;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to say it is ready.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// The `nats-server` binary: `$NATS_SERVER` or the one on `PATH`.
fn binary() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

/// A port that was free a moment ago (for cluster routes, which must be known
/// before the servers start).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// One nats-server process with JetStream.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
}

impl NatsServer {
    /// A single node with JetStream on a free port.
    pub fn start() -> NatsServer {
        NatsServer::start_with(Vec::new())
    }

    /// A single node with JetStream on `port` (one that was free, for a process
    /// started before its NATS and pointed at it).
    pub fn start_on(port: u16) -> NatsServer {
        NatsServer::start_with_port(Vec::new(), Some(port))
    }

    fn start_with(extra: Vec<String>) -> NatsServer {
        NatsServer::start_with_port(extra, None)
    }

    fn start_with_port(extra: Vec<String>, port: Option<u16>) -> NatsServer {
        let store = tempfile::Builder::new()
            .prefix("switchboard-nats-")
            .tempdir()
            .expect("temp store dir");
        let mut server = NatsServer {
            child: None,
            port: 0,
            store,
            extra,
        };
        server.spawn(port);
        server
    }

    fn spawn(&mut self, port: Option<u16>) {
        let port_arg = port.map_or("-1".to_owned(), |p| p.to_string());
        let mut cmd = Command::new(binary());
        cmd.args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
            .arg(self.store.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {}: {e} (is nats-server installed?)", binary())
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    // Keep draining so the server never blocks on a full pipe.
                    continue;
                }
            }
        });
        let deadline = Instant::now() + START_DEADLINE;
        let mut client_port = port;
        let mut ready = false;
        let mut log = Vec::new();
        while !ready {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "nats-server did not start in time; log:\n{}",
                        log.join("\n")
                    );
                }
            };
            if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                client_port = rest.trim().rsplit(':').next().and_then(|p| p.parse().ok());
            }
            ready = line.contains("Server is ready");
            log.push(line);
        }
        self.port = client_port.expect("nats-server logged its client port");
        self.child = Some(child);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store(&self) -> PathBuf {
        self.store.path().to_owned()
    }

    /// Kills the process (SIGKILL); the store stays for a restart.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.spawn(Some(port));
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Freezes the process (SIGSTOP): its sockets stay open and say nothing, as
    /// a hung or partitioned server's do.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("a running server");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen process too.
        self.kill();
    }
}

/// A JetStream cluster of nodes with routes to each other.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(size: usize) -> NatsCluster {
        let name = format!("sb{}", free_port());
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        // Nodes start one after another; each logs "Server is ready" once its
        // client port listens, before the routes (and JetStream meta leader) settle.
        let nodes = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                NatsServer::start_with(vec![
                    "-n".into(),
                    format!("{name}-n{i}"),
                    "--cluster_name".into(),
                    name.clone(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{port}"),
                    "--routes".into(),
                    routes.clone(),
                ])
            })
            .collect();
        NatsCluster { nodes }
    }

    /// Every node's client URL, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_free_port_and_restarts_on_the_same_one() {
        let mut a = NatsServer::start();
        let b = NatsServer::start();
        assert_ne!(a.port(), b.port());
        let port = a.port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        a.kill();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        a.restart();
        assert_eq!(a.port(), port);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    }
}
