//! Configuration: flags win over environment variables (`SWITCHBOARD_<OPTION>`),
//! which win over the TOML file (`--config`), which wins over defaults.
//!
//! - [`options`]: every option, declared once ([`Cli`]): flag, variable, key, default.
//! - here: [`Config`], what the rest of the gateway reads, resolved from the options.

mod options;
pub mod proxy;
pub mod pusher;

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard_broker_nats::NatsConfig;
use switchboard_core::namespace::{NamespaceError, Namespaces};
use switchboard_options::FileError;

pub use options::{Cli, TokenAlgorithm};
pub use proxy::Proxies;
pub use pusher::PusherApp;

/// Commands in one frame.
const MAX_COMMANDS_PER_FRAME: usize = 100;
/// Bytes of one server API request body.
const MAX_API_BODY_BYTES: usize = 1 << 20;
/// The shortest presence TTL: refreshes must fit in it several times.
const MIN_PRESENCE_TTL_SECS: u64 = 3;
/// The shortest node TTL: announcements must fit in it several times.
const MIN_NODE_TTL_SECS: u64 = 3;

/// Limits that protect a node from its clients.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Connections not authenticated yet, held at once.
    pub max_unauthenticated: usize,
    /// Connections not authenticated yet from one IP address; 0: no limit.
    pub max_unauthenticated_per_address: usize,
    pub max_frame_bytes: usize,
    pub max_channels_per_connection: usize,
    pub max_commands_per_second: u32,
    pub max_channel_length: usize,
    pub max_queue_bytes: usize,
    /// Commands in one frame.
    pub max_commands_per_frame: usize,
    /// Bytes of one server API request body.
    pub max_api_body_bytes: usize,
    /// HTTP connections not upgraded (yet) held at once.
    pub max_http_connections: usize,
    /// Time to send a request's headers, or the next request on an idle connection.
    pub http_header_timeout: Duration,
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
    pub listen: std::net::SocketAddr,
    /// The node's name in `info`; `None`: the host name, else the listen address.
    pub name: Option<String>,
    pub api_key: Option<String>,
    /// The proxies to the application backend.
    pub proxies: Proxies,
    /// Where the gRPC server API listens, if anywhere.
    pub grpc_api_listen: Option<std::net::SocketAddr>,
    /// Centrifugo's development mode: anonymous connections without a token, and no
    /// channel permission checks for clients.
    pub insecure: bool,
    /// Anonymous connections without a token; permissions still apply.
    pub allow_anonymous_connect_without_token: bool,
    pub token: TokenConfig,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub limits: Limits,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub connect_timeout: Duration,
    pub drain_window: Duration,
    /// Between SIGTERM and closing the listener, /readyz answers 503.
    pub shutdown_delay: Duration,
    pub log: String,
    pub namespaces: Namespaces,
    /// Origins allowed to use the HTTP transports from a browser (`*`: any).
    pub allowed_origins: Vec<String>,
    /// The Pusher apps served at `/app/{key}` and `/apps/{id}/*`.
    pub pusher_apps: Vec<PusherApp>,
    /// Cluster mode over NATS; `None`: standalone with the in-memory broker.
    pub nats: Option<NatsSettings>,
}

/// Cluster mode: the NATS broker and how presence is shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// How to reach NATS and shape the streams.
    pub broker: NatsConfig,
    /// Members of a gateway that died expire after this.
    pub presence_ttl: Duration,
    /// Presence service replicas; empty: the bucket directly.
    pub presence_urls: Vec<String>,
    /// How often each presence URL's host name is looked up again.
    pub presence_resolve_interval: Duration,
    /// A gateway not heard of for this long is no longer live.
    pub node_ttl: Duration,
    /// How long a cluster-wide call waits for every live gateway.
    pub control_timeout: Duration,
}

impl NatsSettings {
    /// Cluster mode over `broker`, every other option at its default.
    pub fn new(broker: NatsConfig) -> NatsSettings {
        let cli = Cli {
            nats_url: Some(broker.urls.clone()),
            ..Cli::default()
        };
        let config = Config::resolve(cli).expect("the defaults are a valid configuration");
        NatsSettings {
            broker,
            ..config.nats.expect("a NATS URL was given")
        }
    }
}

/// Every option at its default.
impl Default for Config {
    fn default() -> Self {
        Config::resolve(Cli::default()).expect("the defaults are a valid configuration")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read or is not TOML (the same errors as every binary's).
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error("{0}")]
    Invalid(String),
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| {
        ConfigError::File(FileError::Read {
            path: path.to_owned(),
            source,
        })
    })
}

/// An option with a declared default, once resolved.
fn defaulted<T>(value: Option<T>) -> T {
    value.expect("switchboard_options::resolve sets every option that has a default")
}

fn secs(value: Option<u64>) -> Duration {
    Duration::from_secs(defaulted(value))
}

impl Config {
    /// Resolves flags (with their environment variables) over the file they name over
    /// the defaults.
    pub fn resolve(cli: Cli) -> Result<Config, ConfigError> {
        let file = cli.config.clone();
        let o = switchboard_options::resolve(cli, file.as_deref())?;
        let public_key_pem = o.token_public_key.as_deref().map(read).transpose()?;
        let tls = match (o.tls_cert, o.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "--tls-cert and --tls-key go together".into(),
                ))
            }
        };
        let mut pusher_apps = o.pusher.map(|p| p.apps).unwrap_or_default();
        match (o.pusher_app_id, o.pusher_app_key, o.pusher_app_secret) {
            (Some(id), Some(key), Some(secret)) => {
                let mut app = PusherApp::new(&id, &key, &secret);
                app.enable_client_events = defaulted(o.pusher_enable_client_events);
                pusher_apps.push(app);
            }
            (None, None, None) => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "--pusher-app-id, --pusher-app-key and --pusher-app-secret go together".into(),
                ))
            }
        }
        let (channel, named) = (
            o.channel.unwrap_or_default(),
            o.namespaces.unwrap_or_default(),
        );
        let proxies = Proxies::resolve(o.proxy.unwrap_or_default(), &channel, &named)
            .map_err(ConfigError::Invalid)?;
        let mut namespaces = Namespaces::new(channel, named)?;
        pusher::register(&pusher_apps, &mut namespaces).map_err(ConfigError::Invalid)?;
        let api_key = o.api_key.filter(|k| !k.is_empty());
        if o.grpc_api_listen.is_some() && api_key.is_none() {
            return Err(ConfigError::Invalid(
                "--grpc-api-listen needs --api-key: the gRPC API would refuse every call".into(),
            ));
        }
        let config = Config {
            listen: defaulted(o.listen),
            name: o.name.filter(|n| !n.trim().is_empty()),
            api_key,
            grpc_api_listen: o.grpc_api_listen,
            proxies,
            insecure: defaulted(o.insecure),
            allow_anonymous_connect_without_token: defaulted(
                o.allow_anonymous_connect_without_token,
            ),
            token: TokenConfig {
                algorithm: defaulted(o.token_algorithm),
                hmac_secret: o.token_hmac_secret,
                public_key_pem,
            },
            tls,
            limits: Limits {
                max_connections: defaulted(o.max_connections),
                max_unauthenticated: match defaulted(o.max_unauthenticated_connections) {
                    0 => (defaulted::<usize>(o.max_connections) / 10).max(1),
                    n => n,
                },
                max_unauthenticated_per_address: defaulted(o.max_unauthenticated_per_address),
                max_frame_bytes: defaulted(o.max_frame_bytes),
                max_channels_per_connection: defaulted(o.max_channels_per_connection),
                max_commands_per_second: defaulted(o.max_commands_per_second),
                max_channel_length: defaulted(o.max_channel_length),
                max_queue_bytes: defaulted(o.max_queue_bytes),
                max_commands_per_frame: MAX_COMMANDS_PER_FRAME,
                max_api_body_bytes: MAX_API_BODY_BYTES,
                max_http_connections: defaulted(o.max_http_connections),
                http_header_timeout: secs(o.http_header_timeout),
            },
            ping_interval: secs(o.ping_interval),
            pong_timeout: secs(o.pong_timeout),
            connect_timeout: secs(o.connect_timeout),
            drain_window: secs(o.drain_window),
            shutdown_delay: secs(o.shutdown_delay),
            log: defaulted(o.log),
            namespaces,
            allowed_origins: o
                .allowed_origins
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            pusher_apps,
            nats: o
                .nats_url
                .filter(|urls| urls.iter().any(|u| !u.trim().is_empty()))
                .map(|urls| NatsSettings {
                    broker: NatsConfig {
                        urls: urls
                            .into_iter()
                            .map(|u| u.trim().to_owned())
                            .filter(|u| !u.is_empty())
                            .collect(),
                        replicas: defaulted(o.nats_replicas),
                        storage: defaulted(o.nats_storage),
                        prefix: defaulted(o.nats_prefix),
                        ..NatsConfig::default()
                    },
                    presence_ttl: Duration::from_secs(
                        defaulted(o.presence_ttl).max(MIN_PRESENCE_TTL_SECS),
                    ),
                    presence_urls: o
                        .presence_url
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|u| !u.trim().is_empty())
                        .collect(),
                    presence_resolve_interval: secs(o.presence_resolve_interval)
                        .max(Duration::from_secs(1)),
                    node_ttl: Duration::from_secs(defaulted(o.node_ttl).max(MIN_NODE_TTL_SECS)),
                    control_timeout: Duration::from_secs(defaulted(o.control_timeout).max(1)),
                }),
        };
        config.check()?;
        Ok(config)
    }

    /// Whether a client may connect without a token (as the anonymous user "").
    pub fn anonymous_connect(&self) -> bool {
        self.insecure || self.allow_anonymous_connect_without_token
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.ping_interval.is_zero() || self.pong_timeout.is_zero() {
            return invalid("ping_interval and pong_timeout must be at least 1 second");
        }
        if self.limits.max_http_connections == 0 || self.limits.http_header_timeout.is_zero() {
            return invalid("max_http_connections and http_header_timeout must be at least 1");
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
mod tests;
