//! The `switchboard-presence` binary: start-up, gRPC, probes, metrics, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use switchboard_presence::pb::presence_client::PresenceClient;
use switchboard_presence::pb::{JoinRequest, ListRequest, Member, Membership, StatsRequest};
use switchboard_test_support::{eventually_some, NatsServer};

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
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let rest = line
        .trim()
        .strip_prefix("switchboard-presence listening on ")
        .expect("listening line");
    let (grpc, http) = rest.split_once(" http ").expect("both addresses");

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
