//! Configuration: flags win over environment variables (`SWITCHBOARD_<OPTION>`),
//! which win over the TOML file (`--config`), which wins over defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use switchboard_core::namespace::{Namespace, NamespaceError, NamespaceOptions, Namespaces};

/// The algorithm connection and subscription tokens must be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum TokenAlgorithm {
    HS256,
    RS256,
    ES256,
}

/// Command-line flags; each also reads `SWITCHBOARD_<FLAG>` from the environment.
#[derive(Debug, Default, Parser)]
#[command(
    name = "switchboard-gateway",
    version,
    about = "The Switchboard gateway: WebSocket connections (Centrifugo protocol, JSON and protobuf), \
             the server API, metrics.",
    long_about = "The Switchboard gateway: WebSocket connections (Centrifugo protocol, JSON and protobuf, \
                  at /connection/websocket), the server HTTP API (/api/<method>), /metrics, /healthz and \
                  /readyz.\n\nEvery option can also be set in the TOML file given by --config or in the \
                  environment variable shown; flags win over the environment, the environment over the \
                  file, the file over defaults. Namespaces are set in the file ([channel] for the default \
                  namespace, [[namespaces]] for named ones)."
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on for WebSocket, API and metrics [default: 0.0.0.0:8000].
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Key the server API requires (X-API-Key or Authorization: apikey <key>). No key: API disabled.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allow connections without a token (anonymous user ""). For development.
    #[arg(long, env = "SWITCHBOARD_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// Algorithm tokens must be signed with [default: HS256].
    #[arg(long, env = "SWITCHBOARD_TOKEN_ALGORITHM", value_enum)]
    pub token_algorithm: Option<TokenAlgorithm>,
    /// Secret of HS256 tokens.
    #[arg(long, env = "SWITCHBOARD_TOKEN_HMAC_SECRET", hide_env_values = true)]
    pub token_hmac_secret: Option<String>,
    /// PEM file with the public key of RS256 or ES256 tokens.
    #[arg(long, env = "SWITCHBOARD_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<PathBuf>,
    /// PEM certificate chain: serve wss:// and https:// (with --tls-key).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Client connections this node accepts at once [default: 100000].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest WebSocket message a client may send, in bytes [default: 65536].
    #[arg(long, env = "SWITCHBOARD_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Subscriptions one connection may hold [default: 128].
    #[arg(long, env = "SWITCHBOARD_MAX_CHANNELS_PER_CONNECTION")]
    pub max_channels_per_connection: Option<usize>,
    /// Commands one connection may send per second (burst of the same size) [default: 100].
    #[arg(long, env = "SWITCHBOARD_MAX_COMMANDS_PER_SECOND")]
    pub max_commands_per_second: Option<u32>,
    /// Longest channel name, in bytes [default: 255].
    #[arg(long, env = "SWITCHBOARD_MAX_CHANNEL_LENGTH")]
    pub max_channel_length: Option<usize>,
    /// Outbound bytes queued per connection before it is closed as slow [default: 1048576].
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUE_BYTES")]
    pub max_queue_bytes: Option<usize>,
    /// Seconds between server pings [default: 25].
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL")]
    pub ping_interval: Option<u64>,
    /// Seconds a client has to answer a ping [default: 10].
    #[arg(long, env = "SWITCHBOARD_PONG_TIMEOUT")]
    pub pong_timeout: Option<u64>,
    /// Seconds a new connection has to send its connect command [default: 10].
    #[arg(long, env = "SWITCHBOARD_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<u64>,
    /// Seconds over which clients are told to reconnect on shutdown [default: 10].
    #[arg(long, env = "SWITCHBOARD_DRAIN_WINDOW")]
    pub drain_window: Option<u64>,
    /// Log filter, e.g. "info" or "switchboard_gateway=debug" [default: info].
    #[arg(long, env = "SWITCHBOARD_LOG")]
    pub log: Option<String>,
    /// NATS server URLs, comma-separated: run as a cluster node over NATS JetStream.
    /// Without it the gateway runs alone with an in-memory broker.
    #[arg(long, env = "SWITCHBOARD_NATS_URL", value_delimiter = ',')]
    pub nats_url: Option<Vec<String>>,
    /// Replicas of each history stream (3 in production) [default: 1].
    #[arg(long, env = "SWITCHBOARD_NATS_REPLICAS")]
    pub nats_replicas: Option<usize>,
    /// Where history streams are stored: file or memory [default: file].
    #[arg(long, env = "SWITCHBOARD_NATS_STORAGE", value_enum)]
    pub nats_storage: Option<NatsStorage>,
    /// Prefix of NATS subjects and stream names, to share a NATS cluster [default: sb].
    #[arg(long, env = "SWITCHBOARD_NATS_PREFIX")]
    pub nats_prefix: Option<String>,
    /// Seconds a member of a gateway that died stays in presence (cluster mode) [default: 20].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_TTL")]
    pub presence_ttl: Option<u64>,
    /// Presence service URLs (http://host:port), comma-separated: cluster-mode presence
    /// through its replicas. Without it, gateways use the presence bucket directly.
    #[arg(long, env = "SWITCHBOARD_PRESENCE_URL", value_delimiter = ',')]
    pub presence_url: Option<Vec<String>>,
}

/// Where history streams are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NatsStorage {
    File,
    Memory,
}

/// The TOML file: the same options as the flags, plus namespaces.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub api_key: Option<String>,
    pub insecure: Option<bool>,
    pub token_algorithm: Option<TokenAlgorithm>,
    pub token_hmac_secret: Option<String>,
    pub token_public_key: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub max_frame_bytes: Option<usize>,
    pub max_channels_per_connection: Option<usize>,
    pub max_commands_per_second: Option<u32>,
    pub max_channel_length: Option<usize>,
    pub max_queue_bytes: Option<usize>,
    pub ping_interval: Option<u64>,
    pub pong_timeout: Option<u64>,
    pub connect_timeout: Option<u64>,
    pub drain_window: Option<u64>,
    pub log: Option<String>,
    pub nats_url: Option<Vec<String>>,
    pub nats_replicas: Option<usize>,
    pub nats_storage: Option<NatsStorage>,
    pub nats_prefix: Option<String>,
    pub presence_ttl: Option<u64>,
    pub presence_url: Option<Vec<String>>,
    /// Options of the default namespace (channels without `ns:`).
    pub channel: NamespaceOptions,
    pub namespaces: Vec<Namespace>,
}

/// Limits that protect a node from its clients.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    pub max_channels_per_connection: usize,
    pub max_commands_per_second: u32,
    pub max_channel_length: usize,
    pub max_queue_bytes: usize,
    /// Commands in one frame.
    pub max_commands_per_frame: usize,
    /// Bytes of one server API request body.
    pub max_api_body_bytes: usize,
}

/// Token verification settings.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub algorithm: TokenAlgorithm,
    pub hmac_secret: Option<String>,
    /// PEM text of the RS256/ES256 public key.
    pub public_key_pem: Option<String>,
}

/// The resolved gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub api_key: Option<String>,
    pub insecure: bool,
    pub token: TokenConfig,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub limits: Limits,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub connect_timeout: Duration,
    pub drain_window: Duration,
    pub log: String,
    pub namespaces: Namespaces,
    /// Cluster mode over NATS; `None`: standalone with the in-memory broker.
    pub nats: Option<NatsSettings>,
}

/// How to reach NATS and shape the streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    pub urls: Vec<String>,
    pub replicas: usize,
    pub storage: NatsStorage,
    pub prefix: String,
    /// Members of a gateway that died expire after this.
    pub presence_ttl: Duration,
    /// Presence service replicas; empty: the bucket directly.
    pub presence_urls: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            api_key: None,
            insecure: false,
            token: TokenConfig {
                algorithm: TokenAlgorithm::HS256,
                hmac_secret: None,
                public_key_pem: None,
            },
            tls: None,
            limits: Limits {
                max_connections: 100_000,
                max_frame_bytes: 65_536,
                max_channels_per_connection: 128,
                max_commands_per_second: 100,
                max_channel_length: 255,
                max_queue_bytes: 1 << 20,
                max_commands_per_frame: 100,
                max_api_body_bytes: 1 << 20,
            },
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            drain_window: Duration::from_secs(10),
            log: "info".into(),
            namespaces: Namespaces::default(),
            nats: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error("{0}")]
    Invalid(String),
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

impl Config {
    /// Resolves flags (with their environment variables) and the file they name.
    pub fn resolve(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                toml::from_str::<FileConfig>(&read(path)?).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(source),
                })?
            }
            None => FileConfig::default(),
        };
        let d = Config::default();
        let public_key = cli.token_public_key.or(file.token_public_key);
        let public_key_pem = public_key.as_deref().map(read).transpose()?;
        let tls = match (cli.tls_cert.or(file.tls_cert), cli.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "--tls-cert and --tls-key go together".into(),
                ))
            }
        };
        let secs =
            |v: Option<u64>, default: Duration| v.map(Duration::from_secs).unwrap_or(default);
        let config = Config {
            listen: cli.listen.or(file.listen).unwrap_or(d.listen),
            api_key: cli.api_key.or(file.api_key).filter(|k| !k.is_empty()),
            insecure: cli.insecure.or(file.insecure).unwrap_or(d.insecure),
            token: TokenConfig {
                algorithm: cli
                    .token_algorithm
                    .or(file.token_algorithm)
                    .unwrap_or(d.token.algorithm),
                hmac_secret: cli.token_hmac_secret.or(file.token_hmac_secret),
                public_key_pem,
            },
            tls,
            limits: Limits {
                max_connections: cli
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(d.limits.max_connections),
                max_frame_bytes: cli
                    .max_frame_bytes
                    .or(file.max_frame_bytes)
                    .unwrap_or(d.limits.max_frame_bytes),
                max_channels_per_connection: cli
                    .max_channels_per_connection
                    .or(file.max_channels_per_connection)
                    .unwrap_or(d.limits.max_channels_per_connection),
                max_commands_per_second: cli
                    .max_commands_per_second
                    .or(file.max_commands_per_second)
                    .unwrap_or(d.limits.max_commands_per_second),
                max_channel_length: cli
                    .max_channel_length
                    .or(file.max_channel_length)
                    .unwrap_or(d.limits.max_channel_length),
                max_queue_bytes: cli
                    .max_queue_bytes
                    .or(file.max_queue_bytes)
                    .unwrap_or(d.limits.max_queue_bytes),
                ..d.limits
            },
            ping_interval: secs(cli.ping_interval.or(file.ping_interval), d.ping_interval),
            pong_timeout: secs(cli.pong_timeout.or(file.pong_timeout), d.pong_timeout),
            connect_timeout: secs(
                cli.connect_timeout.or(file.connect_timeout),
                d.connect_timeout,
            ),
            drain_window: secs(cli.drain_window.or(file.drain_window), d.drain_window),
            log: cli.log.or(file.log).unwrap_or(d.log),
            namespaces: Namespaces::new(file.channel, file.namespaces)?,
            nats: cli
                .nats_url
                .or(file.nats_url)
                .filter(|urls| urls.iter().any(|u| !u.trim().is_empty()))
                .map(|urls| NatsSettings {
                    urls: urls
                        .into_iter()
                        .map(|u| u.trim().to_owned())
                        .filter(|u| !u.is_empty())
                        .collect(),
                    replicas: cli.nats_replicas.or(file.nats_replicas).unwrap_or(1),
                    storage: cli
                        .nats_storage
                        .or(file.nats_storage)
                        .unwrap_or(NatsStorage::File),
                    prefix: cli
                        .nats_prefix
                        .or(file.nats_prefix)
                        .unwrap_or_else(|| "sb".into()),
                    presence_ttl: Duration::from_secs(
                        cli.presence_ttl.or(file.presence_ttl).unwrap_or(20).max(3),
                    ),
                    presence_urls: cli
                        .presence_url
                        .or(file.presence_url)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|u| !u.trim().is_empty())
                        .collect(),
                }),
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.ping_interval.is_zero() || self.pong_timeout.is_zero() {
            return invalid("ping_interval and pong_timeout must be at least 1 second");
        }
        if self.limits.max_commands_per_second == 0 || self.limits.max_frame_bytes < 1024 {
            return invalid("max_commands_per_second must be > 0 and max_frame_bytes >= 1024");
        }
        match self.token.algorithm {
            TokenAlgorithm::HS256 if self.token.public_key_pem.is_some() => {
                invalid("token_public_key is for RS256/ES256; HS256 uses token_hmac_secret")
            }
            TokenAlgorithm::RS256 | TokenAlgorithm::ES256 if self.token.hmac_secret.is_some() => {
                invalid("token_hmac_secret is for HS256; RS256/ES256 use token_public_key")
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
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
            Err(ConfigError::Parse { .. })
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
        assert_eq!(config.listen.port(), 1);
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
}
