use clap::{CommandFactory, Parser};
use switchboard_broker_nats::Storage;

use super::*;

fn write(text: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::new(text)
}

/// A file in the system temp dir, removed on drop.
mod tempfile_path {
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn new(text: &str) -> TempPath {
            let path = std::env::temp_dir().join(format!(
                "switchboard-config-{}-{}.toml",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::write(&path, text).unwrap();
            TempPath(path)
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn flags_win_over_file_and_file_over_defaults() {
    let file = write(
        "listen = \"127.0.0.1:9000\"\napi_key = \"from-file\"\nmax_queue_bytes = 77\n\
         [channel]\nhistory_size = 5\nhistory_ttl = 60\n[[namespaces]]\nname = \"chat\"\n\
         allow_publish_for_client = true\n",
    );
    let cli = Cli {
        config: Some(file.0.clone()),
        api_key: Some("from-flag".into()),
        ..Default::default()
    };
    let config = Config::resolve(cli).unwrap();
    assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(config.api_key.as_deref(), Some("from-flag"));
    assert_eq!(config.limits.max_queue_bytes, 77);
    assert_eq!(config.limits.max_frame_bytes, 65_536);
    assert!(config.namespaces.resolve("news").unwrap().history_enabled());
    assert!(
        config
            .namespaces
            .resolve("chat:1")
            .unwrap()
            .allow_publish_for_client
    );
}

#[test]
fn unknown_keys_are_refused() {
    let file = write("lisen = \"127.0.0.1:9000\"\n");
    let cli = Cli {
        config: Some(file.0.clone()),
        ..Default::default()
    };
    assert!(matches!(
        Config::resolve(cli),
        Err(ConfigError::File(FileError::Parse { .. }))
    ));
}

#[test]
fn a_bare_insecure_flag_means_true() {
    let cli = Cli::try_parse_from([
        "switchboard-gateway",
        "--insecure",
        "--listen",
        "127.0.0.1:1",
    ])
    .unwrap();
    assert_eq!(cli.insecure, Some(true));
    let config = Config::resolve(cli).unwrap();
    assert!(config.insecure);
    assert!(!config.allow_anonymous_connect_without_token);
    assert!(
        config.anonymous_connect(),
        "insecure lets anonymous clients in"
    );
    assert_eq!(config.listen.port(), 1);
}

#[test]
fn anonymous_connect_without_insecure() {
    let cli = Cli::try_parse_from([
        "switchboard-gateway",
        "--allow-anonymous-connect-without-token",
    ])
    .unwrap();
    let config = Config::resolve(cli).unwrap();
    assert!(config.allow_anonymous_connect_without_token && config.anonymous_connect());
    assert!(!config.insecure);
    let defaults = Config::default();
    assert!(
        !defaults.anonymous_connect(),
        "tokens are required by default"
    );
}

#[test]
fn mismatched_token_settings_are_refused() {
    let cli = Cli {
        token_algorithm: Some(TokenAlgorithm::RS256),
        token_hmac_secret: Some("s".into()),
        ..Default::default()
    };
    assert!(matches!(Config::resolve(cli), Err(ConfigError::Invalid(_))));
}

#[test]
fn a_grpc_api_needs_an_api_key() {
    let addr = Some("127.0.0.1:0".parse().unwrap());
    let without = Cli {
        grpc_api_listen: addr,
        ..Default::default()
    };
    assert!(matches!(
        Config::resolve(without),
        Err(ConfigError::Invalid(m)) if m.contains("--api-key")
    ));
    let with = Cli {
        grpc_api_listen: addr,
        api_key: Some("k".into()),
        ..Default::default()
    };
    assert_eq!(Config::resolve(with).unwrap().grpc_api_listen, addr);
}

const DEV_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/dev.toml");
const DEPLOY_TOML: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/k8s/base/config/gateway.toml"
);

#[test]
fn the_command_is_sound() {
    Cli::command().debug_assert();
}

#[test]
fn defaults_are_the_declared_ones() {
    let c = Config::default();
    assert_eq!(c.listen, "0.0.0.0:8000".parse().unwrap());
    assert_eq!(c.api_key, None);
    assert!(!c.insecure);
    assert_eq!(c.token.algorithm, TokenAlgorithm::HS256);
    assert_eq!(c.tls, None);
    let l = &c.limits;
    assert_eq!(
        (
            l.max_connections,
            l.max_frame_bytes,
            l.max_channels_per_connection
        ),
        (100_000, 65_536, 128)
    );
    assert_eq!(
        (
            l.max_commands_per_second,
            l.max_channel_length,
            l.max_queue_bytes
        ),
        (100, 255, 1 << 20)
    );
    assert_eq!(
        (l.max_commands_per_frame, l.max_api_body_bytes),
        (100, 1 << 20)
    );
    let secs = Duration::from_secs;
    assert_eq!(
        (
            c.ping_interval,
            c.pong_timeout,
            c.connect_timeout,
            c.drain_window
        ),
        (secs(25), secs(10), secs(10), secs(10))
    );
    assert_eq!(c.log, "info");
    assert_eq!(c.nats, None);
}

#[test]
fn each_source_wins_over_the_next_one_down() {
    let file = write(
        "max_frame_bytes = 2048\nping_interval = 7\ninsecure = true\n\
         nats_url = [\"nats://file:4222\"]\nnats_replicas = 3\nnats_storage = \"memory\"\n\
         presence_ttl = 1\n",
    );
    let cli = Cli {
        config: Some(file.0.clone()),
        max_frame_bytes: Some(4096),
        insecure: Some(false),
        nats_replicas: Some(1),
        ..Default::default()
    };
    let c = Config::resolve(cli).unwrap();
    // Flags over the file.
    assert_eq!(c.limits.max_frame_bytes, 4096);
    assert!(!c.insecure);
    // The file over defaults.
    assert_eq!(c.ping_interval, Duration::from_secs(7));
    // Defaults where neither says.
    assert_eq!(c.pong_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.max_queue_bytes, 1 << 20);
    let nats = c.nats.unwrap();
    assert_eq!(
        nats.broker,
        NatsConfig {
            urls: vec!["nats://file:4222".into()],
            replicas: 1,
            storage: Storage::Memory,
            prefix: "sb".into(),
            ..NatsConfig::default()
        }
    );
    assert_eq!(nats.presence_ttl, Duration::from_secs(3), "at least 3 s");
    assert!(nats.presence_urls.is_empty());
    assert_eq!(nats.presence_resolve_interval, Duration::from_secs(5));
}

#[test]
fn flags_parse_as_the_file_reads() {
    let cli = Cli::try_parse_from([
        "switchboard-gateway",
        "--nats-url",
        "nats://a:4222, ,nats://b:4222",
        "--nats-storage",
        "memory",
        "--presence-url",
        "http://p1:9000,,http://p2:9000",
        "--presence-resolve-interval",
        "0",
        "--token-algorithm",
        "RS256",
    ])
    .unwrap();
    let c = Config::resolve(cli).unwrap();
    assert_eq!(c.token.algorithm, TokenAlgorithm::RS256);
    let nats = c.nats.unwrap();
    assert_eq!(nats.broker.urls, ["nats://a:4222", "nats://b:4222"]);
    assert_eq!(nats.broker.storage, Storage::Memory);
    assert_eq!(nats.presence_urls, ["http://p1:9000", "http://p2:9000"]);
    assert_eq!(
        nats.presence_resolve_interval,
        Duration::from_secs(1),
        "at least 1 s"
    );
    // The lowercase names flags and variables took first still work.
    let cli = Cli::try_parse_from(["switchboard-gateway", "--token-algorithm", "es256"]).unwrap();
    assert_eq!(cli.token_algorithm, Some(TokenAlgorithm::ES256));
    // A parse yields only what was given: defaults come last, below the file.
    let cli = Cli::try_parse_from(["switchboard-gateway"]).unwrap();
    assert_eq!(
        (cli.listen, cli.max_frame_bytes, cli.log),
        (None, None, None)
    );
}

#[test]
fn keys_that_are_not_options_are_refused() {
    for text in [
        "config = \"other.toml\"\n",
        "max_frame_bytes = \"big\"\n",
        "[channel]\nhistory = 5\n",
        // Options are top-level keys: there is no such table.
        "[limits]\nmax_frame_bytes = 2048\n",
    ] {
        let file = write(text);
        let cli = Cli {
            config: Some(file.0.clone()),
            ..Default::default()
        };
        assert!(
            matches!(
                Config::resolve(cli),
                Err(ConfigError::File(FileError::Parse { .. }))
            ),
            "{text}"
        );
    }
}

#[test]
fn the_shipped_files_resolve() {
    let resolve = |path: &str| {
        Config::resolve(Cli {
            config: Some(path.into()),
            ..Default::default()
        })
        .unwrap()
    };
    let dev = resolve(DEV_TOML);
    assert_eq!(dev.api_key.as_deref(), Some("dev-api-key"));
    // Anonymous clients, with the namespaces' permissions.
    assert!(dev.allow_anonymous_connect_without_token && !dev.insecure);
    assert!(
        dev.namespaces
            .resolve("chat:1")
            .unwrap()
            .join_leave_per_user
    );
    let deploy = resolve(DEPLOY_TOML);
    assert_eq!(deploy.limits.max_connections, 50_000);
    // Cluster options without URLs: standalone until SWITCHBOARD_NATS_URL names them.
    assert_eq!(deploy.nats, None);
}

#[test]
fn help_shows_every_default() {
    let help = Cli::command().render_long_help().to_string();
    for shown in [
        "[default: 0.0.0.0:8000]",
        "[default: false]",
        "[default: HS256]",
        "[default: 100000]",
        "[default: 65536]",
        "[default: 1048576]",
        "[default: 25]",
        "[default: info]",
        "[default: file]",
        "[default: sb]",
        "[default: 20]",
        "[env: SWITCHBOARD_NATS_REPLICAS=]",
    ] {
        assert!(help.contains(shown), "{shown} missing from:\n{help}");
    }
}

#[test]
fn pusher_apps_come_from_the_file_with_their_defaults() {
    let file = write(
        "[[pusher.apps]]\nid = \"a1\"\nkey = \"k1\"\nsecret = \"s1\"\nenable_client_events = true\n\
         max_presence_members = 5\n[[pusher.apps]]\nid = \"a2\"\nkey = \"k2\"\nsecret = \"s2\"\n",
    );
    let cli = Cli {
        config: Some(file.0.clone()),
        ..Default::default()
    };
    let config = Config::resolve(cli).unwrap();
    let apps = &config.pusher_apps;
    assert_eq!(apps.len(), 2);
    assert!(apps[0].enable_client_events);
    assert_eq!(apps[0].max_presence_members, 5);
    assert_eq!(apps[1], PusherApp::new("a2", "k2", "s2"));
    assert_eq!(apps[1].max_event_bytes, 10 * 1024);
    assert_eq!(apps[1].max_presence_members, 100);
    // Each app's spaces are reserved namespaces: a cache channel keeps its newest event.
    let cache = config.namespaces.resolve_reserved("~a1~c:cache-x").unwrap();
    assert!(cache.history_enabled());
    assert!(config.namespaces.resolve("~a1~c:cache-x").is_none());
}

#[test]
fn one_pusher_app_comes_from_flags() {
    let cli = Cli::try_parse_from([
        "switchboard-gateway",
        "--pusher-app-id",
        "app",
        "--pusher-app-key",
        "key",
        "--pusher-app-secret",
        "secret",
        "--pusher-enable-client-events",
    ])
    .unwrap();
    let config = Config::resolve(cli).unwrap();
    assert_eq!(config.pusher_apps.len(), 1);
    assert_eq!(config.pusher_apps[0].key, "key");
    assert!(config.pusher_apps[0].enable_client_events);

    let partial = Cli::try_parse_from(["switchboard-gateway", "--pusher-app-id", "app"]).unwrap();
    assert!(matches!(
        Config::resolve(partial),
        Err(ConfigError::Invalid(_))
    ));
}

#[test]
fn pusher_apps_are_checked() {
    let refused = |apps: &str| {
        let file = write(apps);
        let cli = Cli {
            config: Some(file.0.clone()),
            ..Default::default()
        };
        Config::resolve(cli).is_err()
    };
    let app = |id: &str, key: &str| {
        format!("[[pusher.apps]]\nid = \"{id}\"\nkey = \"{key}\"\nsecret = \"s\"\n")
    };
    assert!(!refused(&app("a", "k")));
    assert!(refused(&app("a.b", "k")), "an id outside [A-Za-z0-9_-]");
    assert!(refused(&app("a", "k/1")), "a key with a slash");
    assert!(refused(&(app("a", "k1") + &app("a", "k2"))), "an id twice");
    assert!(refused(&(app("a", "k") + &app("b", "k"))), "a key twice");
    assert!(
        refused("[[pusher.apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"\"\n"),
        "no secret"
    );
    assert!(
        refused("[[pusher.apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"s\"\ncolour = 1\n"),
        "unknown key"
    );
    assert!(
        refused("[[namespaces]]\nname = \"~a~b\"\n"),
        "a reserved namespace name"
    );
    let hook = |lines: &str| app("a", "k") + "[[pusher.apps.webhooks]]\n" + lines;
    assert!(!refused(&hook(
        "url = \"http://127.0.0.1:3000/hooks\"\nevent_types = [\"member_added\"]\n"
    )));
    assert!(refused(&hook("url = \"https://app/hooks\"\n")), "https");
    assert!(refused(&hook("url = \"/hooks\"\n")), "not absolute");
    assert!(
        refused(&hook(
            "url = \"http://app/hooks\"\nevent_types = [\"channel_existence\"]\n"
        )),
        "an unknown event type"
    );
}
