//! The `switchboard-presence` binary: start-up, gRPC, probes, metrics, SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use switchboard_presence::pb::presence_client::PresenceClient;
use switchboard_presence::pb::{JoinRequest, ListRequest, Member, Membership, StatsRequest};
use switchboard_test_support::{eventually_some, Lines, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-presence");

async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[test]
fn help_documents_every_option_and_its_environment_variable() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for option in [
        "config",
        "listen",
        "http-listen",
        "nats-url",
        "nats-prefix",
        "nats-replicas",
        "presence-ttl",
        "log",
    ] {
        assert!(help.contains(&format!("--{option}")), "--{option} missing");
        let env = format!("SWITCHBOARD_{}", option.to_uppercase().replace('-', "_"));
        assert!(help.contains(&env), "{env} missing");
    }
}

/// A presence process, killed on drop.
struct Presence(std::process::Child);

impl Drop for Presence {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and reads its addresses (gRPC, HTTP) from its listening line.
fn start(args: &[&str], env: &[(&str, &str)]) -> (Presence, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = Lines::of(&mut child).after("switchboard-presence listening on ");
    let (grpc, http) = line.split_once(" http ").expect("both addresses");
    let ip = |addr: &str| addr.rsplit_once(':').unwrap().0.to_owned();
    (Presence(child), ip(grpc), ip(http))
}

#[test]
fn flags_override_environment_which_overrides_the_file() {
    // Loopback addresses tell the sources apart: 127.0.0.2 from the file, .3 from the
    // environment, .4 from a flag. The file's NATS URL leads nowhere: the service only
    // starts when the environment or a flag wins over it.
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("presence.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.2:0\"\nhttp_listen = \"127.0.0.2:0\"\n\
         nats_url = [\"nats://127.0.0.1:1\"]\n",
    )
    .unwrap();
    let file = ["--config", path.to_str().unwrap()];
    let url = nats.url();
    let (_p, grpc, http) = start(&file, &[("SWITCHBOARD_NATS_URL", &url)]);
    assert_eq!((grpc.as_str(), http.as_str()), ("127.0.0.2", "127.0.0.2"));
    let env = [
        ("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:1"),
        ("SWITCHBOARD_LISTEN", "127.0.0.3:0"),
    ];
    let flags = [&file[..], &["--listen", "127.0.0.4:0", "--nats-url", &url]].concat();
    let (_p, grpc, http) = start(&flags, &env);
    assert_eq!((grpc.as_str(), http.as_str()), ("127.0.0.4", "127.0.0.2"));
    let env = [
        ("SWITCHBOARD_NATS_URL", url.as_str()),
        ("SWITCHBOARD_LISTEN", "127.0.0.3:0"),
    ];
    let (_p, grpc, _) = start(&file, &env);
    assert_eq!(grpc, "127.0.0.3");
}

#[test]
fn an_unknown_key_in_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("presence.toml");
    std::fs::write(&path, "nats_storage = \"file\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `nats_storage`"), "{stderr}");
}

#[tokio::test]
async fn serves_grpc_probes_and_metrics_and_stops_on_sigterm() {
    let nats = NatsServer::start();
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--nats-url",
            &nats.url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = Lines::of(&mut child).after("switchboard-presence listening on ");
    let (grpc, http) = line.split_once(" http ").expect("both addresses");

    let mut client = PresenceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    for (client_id, user) in [("c1", "u1"), ("c2", "u1"), ("c3", "u2")] {
        client
            .join(JoinRequest {
                node: "n1".into(),
                membership: Some(Membership {
                    channel: "room".into(),
                    member: Some(Member {
                        user: user.into(),
                        client: client_id.into(),
                        conn_info: None,
                        chan_info: None,
                    }),
                }),
            })
            .await
            .unwrap();
    }
    let stats = client
        .stats(StatsRequest {
            channel: "room".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.num_clients, stats.num_users), (3, 2));
    let first = client
        .list(ListRequest {
            channel: "room".into(),
            limit: 2,
            page: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.members.len(), 2);
    assert!(!first.next_page.is_empty());
    let second = client
        .list(ListRequest {
            channel: "room".into(),
            limit: 2,
            page: first.next_page,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.members.len(), 1);
    assert!(second.next_page.is_empty());
    let bad = client
        .stats(StatsRequest {
            channel: String::new(),
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    let forged = client
        .list(ListRequest {
            channel: "room".into(),
            limit: 2,
            page: "not-a-page".into(),
        })
        .await;
    assert_eq!(forged.unwrap_err().code(), tonic::Code::InvalidArgument);

    assert_eq!(http_get(http, "/healthz").await.0, 200);
    assert_eq!(http_get(http, "/readyz").await.0, 200);
    let (_, metrics) = http_get(http, "/metrics").await;
    assert!(
        metrics.contains("switchboard_presence_rpc_total"),
        "{metrics}"
    );

    drop(client);
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let patience = Duration::from_secs(20);
    let status = eventually_some("exit after SIGTERM", patience, async || {
        child.try_wait().unwrap()
    })
    .await;
    assert!(status.success(), "exit status {status}");
}

/// A replica started before NATS answers stays up: probes live, `/readyz` 503, no
/// gRPC port yet; it retries, and serves once NATS is there, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_before_nats_is_live_not_ready_and_serves_once_nats_answers() {
    let nats_port = switchboard_test_support::free_port();
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--nats-url", &format!("nats://127.0.0.1:{nats_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut child);
    let rest = lines.after("switchboard-presence starting, http ");
    let http = rest
        .strip_suffix(": connecting to NATS")
        .unwrap_or_else(|| panic!("{rest}"))
        .to_owned();
    let _presence = Presence(child);

    assert_eq!(http_get(&http, "/healthz").await.0, 200);
    assert_eq!(http_get(&http, "/readyz").await.0, 503);
    let patience = Duration::from_secs(30);
    eventually_some("two failed attempts to reach NATS", patience, async || {
        let (_, metrics) = http_get(&http, "/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_nats_connect_failures_total "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|n| *n >= 2.0)
    })
    .await;

    let _nats = NatsServer::start_on(nats_port);
    let line = lines.after("switchboard-presence listening on ");
    let (grpc, _) = line.split_once(" http ").expect("both addresses");
    assert_eq!(http_get(&http, "/readyz").await.0, 200);
    let mut client = PresenceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let stats = client
        .stats(StatsRequest {
            channel: "room".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.num_clients, stats.num_users), (0, 0));
}
