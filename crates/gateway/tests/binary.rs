//! The `switchboard-gateway` binary as an operator runs it: `--help`, config
//! precedence, the start-up line, SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Api, Client, GatewayProcess};
use serde_json::json;
use switchboard_test_support::eventually_some;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-gateway");
const DEV_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/dev.toml");

/// Starts the binary and reads its "listening on" line; returns the port.
fn start(args: &[&str], env: &[(&str, &str)]) -> (GatewayProcess, u16) {
    let process = GatewayProcess::spawn(args, env);
    let port = process.1.port();
    (process, port)
}

#[test]
fn help_documents_every_option_and_its_environment_variable() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for option in [
        "config",
        "listen",
        "api-key",
        "insecure",
        "allow-anonymous-connect-without-token",
        "token-algorithm",
        "token-hmac-secret",
        "token-public-key",
        "tls-cert",
        "tls-key",
        "max-connections",
        "max-frame-bytes",
        "max-channels-per-connection",
        "max-commands-per-second",
        "max-channel-length",
        "max-queue-bytes",
        "ping-interval",
        "pong-timeout",
        "connect-timeout",
        "drain-window",
        "log",
        "nats-url",
        "nats-replicas",
        "nats-storage",
        "nats-prefix",
        "presence-ttl",
        "presence-url",
        "presence-resolve-interval",
        "name",
        "node-ttl",
        "control-timeout",
        "shutdown-delay",
        "max-http-connections",
        "http-header-timeout",
    ] {
        assert!(help.contains(&format!("--{option}")), "--{option} missing");
        let env = format!("SWITCHBOARD_{}", option.to_uppercase().replace('-', "_"));
        assert!(help.contains(&env), "{env} missing");
    }
}

#[test]
fn flags_override_environment_which_overrides_the_file() {
    // dev.toml says 127.0.0.1:8000; the environment moves it to port 0.
    let (_p, port) = start(
        &["--config", DEV_CONFIG],
        &[("SWITCHBOARD_LISTEN", "127.0.0.1:0")],
    );
    assert_ne!(port, 8000);
    // ... and a flag wins over the environment.
    let (_p, port2) = start(
        &["--config", DEV_CONFIG, "--listen", "127.0.0.1:0"],
        &[("SWITCHBOARD_LISTEN", "127.0.0.1:1")],
    );
    assert_ne!(port2, 1);
}

/// Whether the gateway at `addr` takes `key` for its server API.
async fn takes_api_key(addr: std::net::SocketAddr, key: &str) -> bool {
    let api = Api { addr };
    let (status, _) = api.raw("info", Some(("X-API-Key", key)), "{}".into()).await;
    status == 200
}

#[tokio::test]
async fn the_api_key_comes_from_the_flag_then_the_environment_then_the_file() {
    let file = ["--config", DEV_CONFIG, "--listen", "127.0.0.1:0"];
    // No key anywhere: the default, no API.
    let p = GatewayProcess::spawn(&["--listen", "127.0.0.1:0"], &[]);
    assert!(!takes_api_key(p.1, "dev-api-key").await);
    // config/dev.toml says dev-api-key.
    let p = GatewayProcess::spawn(&file, &[]);
    assert!(takes_api_key(p.1, "dev-api-key").await);
    // The environment over the file.
    let env = [("SWITCHBOARD_API_KEY", "from-env")];
    let p = GatewayProcess::spawn(&file, &env);
    assert!(takes_api_key(p.1, "from-env").await);
    assert!(!takes_api_key(p.1, "dev-api-key").await);
    // A flag over the environment.
    let flag = [&file[..], &["--api-key", "from-flag"]].concat();
    let p = GatewayProcess::spawn(&flag, &env);
    assert!(takes_api_key(p.1, "from-flag").await);
    assert!(!takes_api_key(p.1, "from-env").await);
}

/// Whether the gateway at `addr` lets a client connect without a token.
async fn lets_anonymous_in(addr: std::net::SocketAddr) -> bool {
    let mut c = Client::open(addr, false).await;
    let reply = c.call(json!({ "connect": {} })).await;
    reply.get("error").is_none()
}

#[tokio::test]
async fn anonymous_connect_comes_from_the_flag_then_the_environment_then_the_file() {
    let file = ["--config", DEV_CONFIG, "--listen", "127.0.0.1:0"];
    // The default: tokens required.
    let p = GatewayProcess::spawn(&["--listen", "127.0.0.1:0"], &[]);
    assert!(!lets_anonymous_in(p.1).await);
    // config/dev.toml says allow_anonymous_connect_without_token = true.
    let p = GatewayProcess::spawn(&file, &[]);
    assert!(lets_anonymous_in(p.1).await);
    // The environment over the file.
    let env = [("SWITCHBOARD_ALLOW_ANONYMOUS_CONNECT_WITHOUT_TOKEN", "false")];
    let p = GatewayProcess::spawn(&file, &env);
    assert!(!lets_anonymous_in(p.1).await);
    // A bare flag over the environment.
    let flag = [&file[..], &["--allow-anonymous-connect-without-token"]].concat();
    let p = GatewayProcess::spawn(&flag, &env);
    assert!(lets_anonymous_in(p.1).await);
    // insecure (development mode) lets anonymous clients in as well.
    let flag = [&file[..], &["--insecure"]].concat();
    let p = GatewayProcess::spawn(&flag, &env);
    assert!(lets_anonymous_in(p.1).await);
}

#[test]
fn an_unknown_key_in_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "lisen = \"127.0.0.1:0\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `lisen`"), "{stderr}");
}

#[test]
fn a_bad_configuration_is_refused_with_a_message() {
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/switchboard.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let (mut p, _port) = start(
        &[
            "--config",
            DEV_CONFIG,
            "--listen",
            "127.0.0.1:0",
            "--drain-window",
            "1",
        ],
        &[],
    );
    let pid = p.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let patience = Duration::from_secs(20);
    let status = eventually_some("gateway exit after SIGTERM", patience, async || {
        p.0.try_wait().unwrap()
    })
    .await;
    assert!(status.success(), "exit status {status}");
}
