//! The gateway's options, each declared once: its flag, its `SWITCHBOARD_*` variable,
//! its key in the `--config` file and its default all come from its field of [`Cli`]
//! (see `switchboard_options`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Command, CommandFactory, Parser};
use serde::Deserialize;
use switchboard_broker_nats::{NatsConfig, Storage};
use switchboard_core::namespace::{Namespace, NamespaceOptions};
use switchboard_options::value_name;

use super::proxy::ProxySection;
use super::pusher::PusherSection;

/// The algorithm connection and subscription tokens must be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum TokenAlgorithm {
    // The names of the file and of the README; the lowercase ones are what flags and
    // variables took first.
    #[value(name = "HS256", alias = "hs256")]
    #[serde(alias = "hs256")]
    HS256,
    #[value(name = "RS256", alias = "rs256")]
    #[serde(alias = "rs256")]
    RS256,
    #[value(name = "ES256", alias = "es256")]
    #[serde(alias = "es256")]
    ES256,
}

const ABOUT: &str = "The Switchboard gateway: WebSocket connections (Centrifugo protocol, JSON \
                     and protobuf; Pusher Channels protocol 7), the server APIs, metrics.";
const LONG_ABOUT: &str = "The Switchboard gateway: WebSocket connections (Centrifugo protocol, JSON \
                          and protobuf, at /connection/websocket, and over HTTP-streaming and SSE \
                          at /connection/http_stream and /connection/sse with /emulation; Pusher \
                          Channels protocol 7 at /app/{key}), the server HTTP APIs (/api/<method>; Pusher's at \
                          /apps/{id}/*), /metrics, /healthz and /readyz.\n\nEvery option can also \
                          be set in the TOML file given by --config or in the environment variable \
                          shown; flags win over the environment, the environment over the file, the \
                          file over defaults. Namespaces are set in the file ([channel] for the \
                          default namespace, [[namespaces]] for named ones), and so are Pusher \
                          apps ([[pusher.apps]]; one app also from --pusher-app-*).";

switchboard_options::layered! {
    /// The gateway's options as one source gives them: the command line (flags and
    /// environment variables), the file, or the declared defaults. `Config::resolve`
    /// ranks them and turns them into a [`Config`](super::Config).
    #[derive(Debug, Default, Clone, clap::Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Cli {
        /// TOML configuration file.
        #[arg(long)]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// Address to listen on for WebSocket, API and metrics.
        #[arg(long, default_value = "0.0.0.0:8000")]
        pub listen: Option<SocketAddr>,
        /// This gateway's name in the API's `info` (default: $HOSTNAME, else the listen
        /// address).
        #[arg(long)]
        pub name: Option<String>,
        /// Key the server API requires (X-API-Key or Authorization: apikey <key>). No key: API
        /// disabled.
        #[arg(long, hide_env_values = true)]
        pub api_key: Option<String>,
        /// Address to serve the server API over gRPC on (Centrifugo's api.proto, the key as
        /// `authorization: apikey <key>` metadata). None: no gRPC API. Needs --api-key.
        #[arg(long)]
        pub grpc_api_listen: Option<SocketAddr>,
        /// Development mode, as Centrifugo's: connections without a token (anonymous user ""),
        /// and no channel permission checks for clients (subscribe to any channel, publish,
        /// presence, history). Never in production.
        #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
        pub insecure: Option<bool>,
        /// Allow connections without a token, as the anonymous user ""; channel permissions
        /// still apply (Centrifugo's option of the same name).
        #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
        pub allow_anonymous_connect_without_token: Option<bool>,
        /// Algorithm tokens must be signed with.
        #[arg(long, value_enum, default_value = "HS256")]
        pub token_algorithm: Option<TokenAlgorithm>,
        /// Secret of HS256 tokens.
        #[arg(long, hide_env_values = true)]
        pub token_hmac_secret: Option<String>,
        /// PEM file with the public key of RS256 or ES256 tokens.
        #[arg(long)]
        pub token_public_key: Option<PathBuf>,
        /// PEM certificate chain: serve wss:// and https:// (with --tls-key).
        #[arg(long)]
        pub tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long)]
        pub tls_key: Option<PathBuf>,
        /// Client connections this node accepts at once.
        #[arg(long, default_value = "100000")]
        pub max_connections: Option<usize>,
        /// Of those, connections not authenticated yet (Centrifugo connections before their
        /// connect command succeeds) held at once, so that sockets that never authenticate
        /// cannot take every slot; 0: a tenth of --max-connections.
        #[arg(long, default_value = "0")]
        pub max_unauthenticated_connections: Option<usize>,
        /// Connections not authenticated yet from one IP address; 0: no limit per address.
        /// Only useful where the gateway sees clients' addresses (not behind a proxy that
        /// hides them).
        #[arg(long, default_value = "0")]
        pub max_unauthenticated_per_address: Option<usize>,
        /// Largest WebSocket message a client may send, in bytes (also the largest connect
        /// command of an HTTP stream, and the commands of one /emulation request).
        #[arg(long, default_value = "65536")]
        pub max_frame_bytes: Option<usize>,
        /// Subscriptions one connection may hold.
        #[arg(long, default_value = "128")]
        pub max_channels_per_connection: Option<usize>,
        /// Commands one connection may send per second (burst of the same size).
        #[arg(long, default_value = "100")]
        pub max_commands_per_second: Option<u32>,
        /// Longest channel name, in bytes.
        #[arg(long, default_value = "255")]
        pub max_channel_length: Option<usize>,
        /// Outbound bytes queued per connection before it is closed as slow.
        #[arg(long, default_value = "1048576")]
        pub max_queue_bytes: Option<usize>,
        /// Seconds between server pings.
        #[arg(long, default_value = "25")]
        pub ping_interval: Option<u64>,
        /// Seconds a client has to answer a ping.
        #[arg(long, default_value = "10")]
        pub pong_timeout: Option<u64>,
        /// Seconds a new connection has to send its connect command.
        #[arg(long, default_value = "10")]
        pub connect_timeout: Option<u64>,
        /// Seconds between SIGTERM and closing the listener: /readyz answers 503 meanwhile
        /// while new connections are still served, so load balancers stop sending
        /// clients before the drain.
        #[arg(long, default_value = "0")]
        pub shutdown_delay: Option<u64>,
        /// HTTP connections not upgraded to WebSocket (handshakes under way, API
        /// keep-alives, emulation requests) held at once; more are closed as soon as they
        /// are accepted. One whose request opened an HTTP stream leaves this count.
        #[arg(long, default_value = "10000")]
        pub max_http_connections: Option<usize>,
        /// Seconds a client has to send a request's headers, and an idle kept-alive HTTP
        /// connection its next request; then the connection is closed.
        #[arg(long, default_value = "10")]
        pub http_header_timeout: Option<u64>,
        /// Seconds over which clients are told to reconnect on shutdown.
        #[arg(long, default_value = "10")]
        pub drain_window: Option<u64>,
        /// Origins browser pages may use the HTTP transports (HTTP-streaming, SSE and
        /// /emulation) from, comma-separated, exact (`https://app.example`) or `*` for any;
        /// they get CORS answers. Empty: pages of the gateway's own origin only; requests
        /// from other origins are refused with 403.
        #[arg(long, value_delimiter = ',')]
        pub allowed_origins: Option<Vec<String>>,
        /// Log filter, e.g. "info" or "switchboard_gateway=debug".
        #[arg(long, default_value = "info")]
        pub log: Option<String>,
        /// NATS server URLs, comma-separated: run as a cluster node over NATS JetStream.
        /// Without it the gateway runs alone with an in-memory broker.
        #[arg(long, value_delimiter = ',')]
        pub nats_url: Option<Vec<String>>,
        /// Replicas of each history stream (3 in production).
        #[arg(long, default_value = NatsConfig::default().replicas.to_string())]
        pub nats_replicas: Option<usize>,
        /// Where history streams are stored: file or memory.
        #[arg(long, value_enum, default_value = value_name(&NatsConfig::default().storage))]
        pub nats_storage: Option<Storage>,
        /// Prefix of NATS subjects and stream names, to share a NATS cluster.
        #[arg(long, default_value = NatsConfig::default().prefix)]
        pub nats_prefix: Option<String>,
        /// Seconds a member of a gateway that died stays in presence (cluster mode; at
        /// least 3).
        #[arg(long, default_value = "20")]
        pub presence_ttl: Option<u64>,
        /// Seconds a gateway that died stays listed in `info` and awaited by cluster-wide
        /// API calls (cluster mode; at least 3). Gateways re-announce every third of it.
        #[arg(long, default_value = "15")]
        pub node_ttl: Option<u64>,
        /// Seconds a cluster-wide API call (disconnect, unsubscribe, subscribe, refresh,
        /// channels) waits for every live gateway before it answers naming the ones that
        /// did not confirm (cluster mode; at least 1).
        #[arg(long, default_value = "1")]
        pub control_timeout: Option<u64>,
        /// Presence service URLs (http://host:port), comma-separated: cluster-mode presence
        /// through its replicas. Without it, gateways use the presence bucket directly.
        #[arg(long, value_delimiter = ',')]
        pub presence_url: Option<Vec<String>>,
        /// Seconds between lookups of each --presence-url host name: calls spread over
        /// every address it resolves to, replicas added behind it get calls, replicas gone
        /// from it are dropped (at least 1; a URL with an IP address is not looked up).
        #[arg(long, default_value = "5")]
        pub presence_resolve_interval: Option<u64>,
        /// The id of a single Pusher app (with --pusher-app-key and --pusher-app-secret), served
        /// at /app/{key} and /apps/{id}/*. More apps, or any other app option: [[pusher.apps]]
        /// in the file.
        #[arg(long)]
        pub pusher_app_id: Option<String>,
        /// The key of the single Pusher app (see --pusher-app-id).
        #[arg(long)]
        pub pusher_app_key: Option<String>,
        /// The secret of the single Pusher app (see --pusher-app-id).
        #[arg(long)]
        pub pusher_app_secret: Option<String>,
        /// The single Pusher app lets clients send client-* events.
        #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
        pub pusher_enable_client_events: Option<bool>,
        /// In the file only: the Pusher apps, `[[pusher.apps]]` (id, key, secret and their
        /// options; see docs/compatibility.md).
        #[arg(skip)]
        pub pusher: Option<PusherSection>,
        /// In the file only: options of the default namespace (channels without `ns:`),
        /// `[channel]`.
        #[arg(skip)]
        pub channel: Option<NamespaceOptions>,
        /// In the file only: the named namespaces, `[[namespaces]]`.
        #[arg(skip)]
        pub namespaces: Option<Vec<Namespace>>,
        /// In the file only: the proxies to the application backend, `[proxy]`.
        #[arg(skip)]
        pub proxy: Option<ProxySection>,
    }
}

impl CommandFactory for Cli {
    fn command() -> Command {
        let name = Command::new("switchboard-gateway").version(env!("CARGO_PKG_VERSION"));
        switchboard_options::command::<Cli>(name)
            .about(ABOUT)
            .long_about(LONG_ABOUT)
    }

    fn command_for_update() -> Command {
        Cli::command()
    }
}

impl Parser for Cli {}
