//! Command-line interface. Every option is also an environment variable
//! `SWITCHBOARD_<OPTION>`; flags win over the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::pusher::PusherApp;
use crate::client::Protocol;
use crate::target::Target;

const ABOUT: &str = "Load generator for Switchboard (and other Centrifugo- or Pusher-protocol \
servers): connect storms, fan-out, churn and failover, with exact delivery accounting.";

const LONG_ABOUT: &str = "\
Load generator for Switchboard (and other Centrifugo- or Pusher-protocol servers): connect \
storms, fan-out, churn and failover, with exact delivery accounting.

Clients speak the Centrifugo protocol (JSON, or protobuf with --protobuf) and publish \
through its server API or its publish command, or, with --protocol pusher, Pusher \
Channels protocol 7 (pusher-js's: /app/KEY, pusher:subscribe, pusher:ping/pong) and \
publish through the signed Pusher HTTP API (POST /apps/ID/events), so the same run \
measures Switchboard, Centrifugo, sockudo or soketi. connect, fanout and churn speak \
both; failover (Centrifugo's recovery) and api (its server API) only Centrifugo's.

Every publication carries its channel, a per-channel sequence number and its send time. \
Every receiver records the delivery latency in an HDR histogram and sorts each arrival \
into in order, late (out of order) or duplicate; at the end, lost = published × \
subscribers − distinct deliveries, per channel. Reports: p50/p95/p99/max latency, \
connection success rate and failures by reason, delivery rate, reconnection time, and \
the server's CPU and memory (from /proc, with --server-pid).";

const AFTER_HELP: &str = "\
MANY CONNECTIONS FROM ONE MACHINE
  Source addresses: each client socket is bound to 127.0.0.K:0 before it connects, K \
going round 1..=--sources, when the target is on loopback. Every source address has its \
own ~28,000 ephemeral ports (net.ipv4.ip_local_port_range), so 4 sources allow ~110,000 \
connections to one server port. Linux routes all of 127.0.0.0/8 to loopback: nothing to \
configure.
  File descriptors: the tool raises its soft RLIMIT_NOFILE to the hard limit at start. \
When a run needs more connections than --conns-per-process (default 15,000; keep it \
under the hard limit, e.g. 20,000), the connections are split over worker processes: the \
same binary re-executed with a hidden `worker` subcommand, one JSON spec on its stdin, \
progress and a final result (counts and lossless HDR histograms) as JSON lines on its \
stdout. The parent runs the publishers, merges the workers' histograms and counts, and \
reports as if one process had measured everything. --workers N forces N workers.

EXAMPLES
  switchboard-loadtest connect --connections 19000 --connect-rate 10000 --duration 10 --server-pid $PID
  switchboard-loadtest fanout --subscribers 5000 --rate 20 --payload 100 --api-key dev-api-key --duration 30
  switchboard-loadtest fanout --channels 10 --subscribers 100 --publishers 2 --via client --protobuf
  switchboard-loadtest connect --protocol pusher --url ws://127.0.0.1:8000 --connections 10000
  switchboard-loadtest fanout --protocol pusher --url ws://127.0.0.1:6001 --subscribers 5000 --rate 20 \\
      --pusher-app-id app-id --pusher-app-key app-key --pusher-app-secret app-secret
  switchboard-loadtest churn --subscribers 1000 --churn-rate 200 --api-key dev-api-key
  switchboard-loadtest failover --url ws://127.0.0.1:8001 --url ws://127.0.0.1:8002 \\
      --kill-command 'kill -9 $(cat gw1.pid)' --kill-at 5 --api-key dev-api-key
  switchboard-loadtest floor --sockets 5000 --writers 2 --rate 20 --messages 600
  switchboard-loadtest presence --presence-url http://127.0.0.1:9000 --members 10000 \\
      --url ws://127.0.0.1:8001/connection/websocket --server-pid $PRESENCE_PID";

#[derive(Debug, Parser)]
#[command(name = "switchboard-loadtest", version, about = ABOUT, long_about = LONG_ABOUT, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// TOML file of options (`subscribers = 5000`, `url = ["ws://…"]`): each key is an
    /// option; flags and SWITCHBOARD_<OPTION> variables win over it.
    #[arg(long, global = true, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Open N connections at a target rate and hold them: connect latency, success rate,
    /// failures by reason, server memory per connection and CPU.
    Connect {
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, env = "SWITCHBOARD_CONNECTIONS", default_value_t = 1000)]
        connections: u64,
        /// Subscribe each connection to one of --channels channels (idle subscribers).
        #[arg(long, env = "SWITCHBOARD_SUBSCRIBE")]
        subscribe: bool,
        #[arg(long, env = "SWITCHBOARD_CHANNELS", default_value_t = 1)]
        channels: u32,
        /// Channel names are PREFIX0, PREFIX1, … [default: chat:lt, or lt- with
        /// --protocol pusher, whose channel names have no ':']
        #[arg(long, env = "SWITCHBOARD_CHANNEL_PREFIX")]
        channel_prefix: Option<String>,
    },
    /// C channels × S subscribers each, P publishers at R messages/s: latency, loss,
    /// duplicates, order, server CPU per delivery.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fanout: FanoutArgs,
    },
    /// Fan-out while other connections arrive and leave at a rate.
    Churn {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fanout: FanoutArgs,
        #[command(flatten)]
        churn: ChurnArgs,
    },
    /// Fan-out over several --url gateways while hook commands kill or restart one;
    /// subscribers reconnect to the next URL and recover. Reports reconnection time and
    /// loss after recovery. Centrifugo protocol only.
    Failover {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fanout: FanoutArgs,
        #[command(flatten)]
        failover: FailoverArgs,
    },
    /// Connections held on the gateways (--url) while a bounded loop calls the server
    /// API through one of them, one call at a time: the latency of each cluster-wide
    /// method (disconnect, channels, info, unsubscribe), p50/p99. Centrifugo protocol only.
    Api {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The presence service under one gateway's worth of members: join latency,
    /// refresh cost per 10,000 members, stats and list latency, and (with --url, a
    /// gateway of the same cluster) the time from a gateway's death to each leave.
    Presence {
        #[command(flatten)]
        presence: PresenceArgs,
    },
    /// Pusher webhooks while presence members churn: the tool holds --members
    /// connections in presence channels, each leaving after a random stay and joining
    /// again as a new user, and is the app's webhook receiver (--listen): event → POST
    /// latency of member_added and member_removed, and exact counts (one event per join
    /// and per leave, no repeats).
    Webhooks {
        #[command(flatten)]
        webhooks: WebhooksArgs,
    },
    /// The machine's floor for fan-out, with no server: writer threads write each
    /// message to N loopback sockets (one write each) that tokio tasks read. Delivery
    /// latency, loss and the CPU per write that any server would pay here at least.
    Floor {
        #[command(flatten)]
        floor: FloorArgs,
    },
    /// Internal: run a share of the connections for a parent process.
    #[command(hide = true)]
    Worker,
}

impl Scenario {
    /// Why these options cannot run together, if they cannot: what the Pusher
    /// protocol has no counterpart for.
    pub fn refusal(&self) -> Option<&'static str> {
        let (common, via) = match self {
            Scenario::Connect { common, .. } => (common, None),
            Scenario::Fanout { common, fanout } | Scenario::Churn { common, fanout, .. } => {
                (common, Some(fanout.via))
            }
            Scenario::Failover { common, .. } if common.protocol == ProtocolName::Pusher => {
                return Some(
                    "failover resubscribes recovering from Centrifugo stream positions, which \
                     Pusher has not: it needs --protocol centrifugo",
                )
            }
            Scenario::Failover { common, fanout, .. } => (common, Some(fanout.via)),
            Scenario::Api { common, .. } if common.protocol == ProtocolName::Pusher => {
                return Some("api times Centrifugo's server API: it needs --protocol centrifugo")
            }
            Scenario::Api { common, .. } => (common, None),
            Scenario::Presence { .. }
            | Scenario::Webhooks { .. }
            | Scenario::Floor { .. }
            | Scenario::Worker => return None,
        };
        if common.protocol == ProtocolName::Sse {
            if common.protobuf {
                return Some("--protobuf does not go with --protocol sse: server-sent events carry text (JSON)");
            }
            if matches!(self, Scenario::Failover { .. }) {
                return Some(
                    "failover resubscribes over WebSocket connections: it needs --protocol centrifugo",
                );
            }
            return None;
        }
        if common.protocol != ProtocolName::Pusher {
            return None;
        }
        if common.protobuf {
            return Some(
                "--protobuf is a Centrifugo encoding: it does not go with --protocol pusher",
            );
        }
        if via == Some(Via::Client) {
            return Some(
                "--via client publishes with Centrifugo's publish command: with --protocol \
                 pusher, publish with --via api (the Pusher HTTP API)",
            );
        }
        None
    }
}

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Loopback socket pairs (two file descriptors each, in this one process).
    #[arg(long, env = "SWITCHBOARD_SOCKETS", default_value_t = 5_000)]
    pub sockets: usize,
    /// Writer threads sharing the sockets (a server using that many cores).
    #[arg(long, env = "SWITCHBOARD_WRITERS", default_value_t = 2)]
    pub writers: usize,
    /// Messages written to every socket.
    #[arg(long, env = "SWITCHBOARD_MESSAGES", default_value_t = 600)]
    pub messages: u64,
    /// Messages per second.
    #[arg(long, env = "SWITCHBOARD_RATE", default_value_t = 20.0)]
    pub rate: f64,
    /// Bytes per message (at least 16: due time and sequence number).
    #[arg(long, env = "SWITCHBOARD_PAYLOAD", default_value_t = 100)]
    pub payload: usize,
    /// Write every figure to this file as JSON.
    #[arg(long, env = "SWITCHBOARD_JSON")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct PresenceArgs {
    /// Presence service replica (http://HOST:PORT); repeat for several.
    #[arg(
        long = "presence-url",
        env = "SWITCHBOARD_PRESENCE_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9000"
    )]
    pub presence_urls: Vec<String>,
    /// A gateway of the same cluster (ws://…/connection/websocket): a subscriber there
    /// counts the leave pushes after the tool stops refreshing. Without it the expiry
    /// phase is skipped.
    #[arg(long, env = "SWITCHBOARD_URL")]
    pub url: Option<String>,
    /// Members to join (connections of one simulated gateway).
    #[arg(long, env = "SWITCHBOARD_MEMBERS", default_value_t = 10_000)]
    pub members: usize,
    /// Distinct users among them (member i belongs to user i mod users).
    #[arg(long, env = "SWITCHBOARD_USERS", default_value_t = 5_000)]
    pub users: usize,
    /// The channel they join; its namespace needs presence and join_leave (per
    /// connection) for the leave count.
    #[arg(long, env = "SWITCHBOARD_CHANNEL", default_value = "presence-lt")]
    pub channel: String,
    /// Joins in flight at once.
    #[arg(long, env = "SWITCHBOARD_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// Refreshes of every member to time.
    #[arg(long, env = "SWITCHBOARD_REFRESH_ROUNDS", default_value_t = 3)]
    pub refresh_rounds: usize,
    /// Stats calls to time.
    #[arg(long, env = "SWITCHBOARD_STATS_CALLS", default_value_t = 20)]
    pub stats_calls: usize,
    /// Longest wait for the leaves after the last refresh, seconds.
    #[arg(long, env = "SWITCHBOARD_EXPIRE_TIMEOUT", default_value_t = 90.0)]
    pub expire_timeout: f64,
    /// This simulated gateway's node name (member ids derive from it).
    #[arg(long, env = "SWITCHBOARD_NODE", default_value = "loadtest")]
    pub node: String,
    /// PIDs of the presence service replicas, for their CPU.
    #[arg(
        long = "server-pid",
        env = "SWITCHBOARD_SERVER_PID",
        value_delimiter = ','
    )]
    pub server_pids: Vec<u32>,
    /// PIDs of nats-server, for its CPU.
    #[arg(long = "nats-pid", env = "SWITCHBOARD_NATS_PID", value_delimiter = ',')]
    pub nats_pids: Vec<u32>,
    /// Write every figure as JSON to this file.
    #[arg(long, env = "SWITCHBOARD_JSON")]
    pub json: Option<PathBuf>,
}

impl PresenceArgs {
    /// Distinct users, at least 1 and at most one per member.
    pub fn users(&self) -> usize {
        self.users.clamp(1, self.members.max(1))
    }

    pub fn expire_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.expire_timeout.clamp(0.0, 3600.0))
    }
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Gateway WebSocket URL, ws://IP:PORT/path (with --protocol pusher, ws://IP:PORT
    /// will do); repeat (or separate with commas) for several gateways: connection i
    /// goes to URL i mod n.
    #[arg(
        long = "url",
        env = "SWITCHBOARD_URL",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8000/connection/websocket"
    )]
    pub urls: Vec<Target>,
    /// The client protocol: centrifugo, or pusher (Pusher Channels 7 at
    /// /app/KEY?protocol=7 on each --url, unless the URL names another path than
    /// Centrifugo's; fanout and churn publish through the Pusher HTTP API).
    #[arg(long, env = "SWITCHBOARD_PROTOCOL", value_enum, default_value_t = ProtocolName::Centrifugo)]
    pub protocol: ProtocolName,
    /// Speak the protobuf encoding (subprotocol centrifuge-protobuf) instead of JSON
    /// (Centrifugo only).
    #[arg(long, env = "SWITCHBOARD_PROTOBUF")]
    pub protobuf: bool,
    #[command(flatten)]
    pub pusher: PusherArgs,
    /// Connection token (JWT) every Centrifugo client sends; none: anonymous.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seconds of publishing (fanout, churn, failover) or of holding (connect). Setup is
    /// bounded by --setup-timeout and the drain by --drain.
    #[arg(long, env = "SWITCHBOARD_DURATION", default_value_t = 10.0)]
    pub duration: f64,
    /// New connections per second (over all processes).
    #[arg(long, env = "SWITCHBOARD_CONNECT_RATE", default_value_t = 5000.0)]
    pub connect_rate: f64,
    /// Connection setups in flight at once, per process.
    #[arg(long, env = "SWITCHBOARD_CONCURRENCY", default_value_t = 1000)]
    pub concurrency: usize,
    /// Seconds one connection setup (TCP, upgrade, connect, subscribe) may take.
    #[arg(long, env = "SWITCHBOARD_TIMEOUT", default_value_t = 10.0)]
    pub timeout: f64,
    /// Seconds every connection together may take to set up before the run goes on.
    #[arg(long, env = "SWITCHBOARD_SETUP_TIMEOUT", default_value_t = 120.0)]
    pub setup_timeout: f64,
    /// Loopback source addresses to spread client sockets over: 127.0.0.1..=127.0.0.N.
    #[arg(long, env = "SWITCHBOARD_SOURCES", default_value_t = 4)]
    pub sources: u8,
    /// Connections one process holds at most; more go to worker processes.
    #[arg(long, env = "SWITCHBOARD_CONNS_PER_PROCESS", default_value_t = 15_000)]
    pub conns_per_process: u64,
    /// Worker processes to use whatever the count (0: only when needed).
    #[arg(long, env = "SWITCHBOARD_WORKERS", default_value_t = 0)]
    pub workers: u32,
    /// PID of a server process to measure (CPU, RSS) from /proc; repeatable.
    #[arg(
        long = "server-pid",
        env = "SWITCHBOARD_SERVER_PID",
        value_delimiter = ','
    )]
    pub server_pids: Vec<u32>,
    /// Write every figure as JSON to this file.
    #[arg(long, env = "SWITCHBOARD_JSON")]
    pub json: Option<PathBuf>,
    /// Write a latency histogram and a timeline to this file (.svg, or .html with the table).
    #[arg(long, env = "SWITCHBOARD_REPORT")]
    pub report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, env = "SWITCHBOARD_QUIET")]
    pub quiet: bool,
    /// Write the run into a section of this markdown file (e.g. BENCHMARKS.md).
    #[arg(long, env = "SWITCHBOARD_BENCH_MD", requires = "bench_section")]
    pub bench_md: Option<PathBuf>,
    /// Name of the section --bench-md replaces (between its markers) or appends.
    #[arg(long, env = "SWITCHBOARD_BENCH_SECTION")]
    pub bench_section: Option<String>,
    /// Heading of the section.
    #[arg(long, env = "SWITCHBOARD_BENCH_TITLE", default_value = "")]
    pub bench_title: String,
    /// A paragraph under the heading (e.g. how the server was started).
    #[arg(long, env = "SWITCHBOARD_BENCH_NOTE", default_value = "")]
    pub bench_note: String,
    /// A target to judge the run by, FIGURE<=N or FIGURE>=N (repeatable), e.g.
    /// p99_ms<=5, rss_per_connection_bytes<=4096, connect_rate_per_s>=10000, lost<=0,
    /// cpu_us_per_delivery<=1, success_rate_percent>=100, reconnect_p99_ms<=5000, not_back<=0, hook_failures<=0.
    #[arg(long = "target", env = "SWITCHBOARD_TARGET", value_delimiter = ';')]
    pub targets: Vec<crate::benchmd::Target>,
    /// Exit with status 3 when a --target is missed or not measured (for scripts and CI).
    #[arg(long, env = "SWITCHBOARD_STRICT")]
    pub strict: bool,
}

impl Common {
    /// The protocol the run's clients speak.
    pub fn client_protocol(&self) -> Protocol {
        match self.protocol {
            ProtocolName::Centrifugo => Protocol::Centrifugo {
                protobuf: self.protobuf,
            },
            ProtocolName::Pusher => Protocol::Pusher {
                app_key: self.pusher.app_key.clone(),
            },
            ProtocolName::Sse => Protocol::Sse,
        }
    }

    pub fn pusher_app(&self) -> PusherApp {
        PusherApp {
            id: self.pusher.app_id.clone(),
            key: self.pusher.app_key.clone(),
            secret: self.pusher.app_secret.clone(),
        }
    }

    /// The channel prefix given, or the protocol's default: `chat:lt` (a namespace
    /// of config/dev.toml that lets clients publish), `lt-` for Pusher.
    pub fn channel_prefix(&self, given: Option<&str>) -> String {
        match (given, self.protocol) {
            (Some(prefix), _) => prefix.to_owned(),
            (None, ProtocolName::Centrifugo | ProtocolName::Sse) => "chat:lt".to_owned(),
            (None, ProtocolName::Pusher) => "lt-".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolName {
    /// The Centrifugo client protocol (JSON; protobuf with --protobuf).
    Centrifugo,
    /// Pusher Channels protocol 7, as pusher-js speaks it.
    Pusher,
    /// The Centrifugo protocol (JSON) over server-sent events, as centrifuge-js's `sse`
    /// transport speaks it: /connection/sse and /emulation on the --url's address.
    Sse,
}

/// The Pusher app a `--protocol pusher` run connects to and publishes through;
/// the defaults are config/dev.toml's app.
#[derive(Debug, Clone, Args)]
pub struct PusherArgs {
    /// Pusher app id: the HTTP API's /apps/ID (--protocol pusher).
    #[arg(
        long = "pusher-app-id",
        value_name = "ID",
        env = "SWITCHBOARD_PUSHER_APP_ID",
        default_value = "app-id"
    )]
    pub app_id: String,
    /// Pusher app key: the WebSocket path /app/KEY and the HTTP API's auth_key.
    #[arg(
        long = "pusher-app-key",
        value_name = "KEY",
        env = "SWITCHBOARD_PUSHER_APP_KEY",
        default_value = "app-key"
    )]
    pub app_key: String,
    /// Pusher app secret, which signs the HTTP API requests.
    #[arg(
        long = "pusher-app-secret",
        value_name = "SECRET",
        env = "SWITCHBOARD_PUSHER_APP_SECRET",
        hide_env_values = true,
        default_value = "app-secret"
    )]
    pub app_secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// POST /api/publish with X-API-Key; with --protocol pusher, the Pusher HTTP API
    /// (POST /apps/ID/events, signed with the app's secret).
    Api,
    /// The Centrifugo publish command (the namespace must allow client publish).
    Client,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Channels.
    #[arg(long, env = "SWITCHBOARD_CHANNELS", default_value_t = 1)]
    pub channels: u32,
    /// Subscribers per channel (one connection each).
    #[arg(long, env = "SWITCHBOARD_SUBSCRIBERS", default_value_t = 100)]
    pub subscribers: u64,
    /// Publishers; channel c belongs to publisher c mod P.
    #[arg(long, env = "SWITCHBOARD_PUBLISHERS", default_value_t = 1)]
    pub publishers: u32,
    /// Publications per second of each publisher, round robin over its channels.
    #[arg(long, env = "SWITCHBOARD_RATE", default_value_t = 10.0)]
    pub rate: f64,
    /// Payload size in bytes (JSON; at least the ~30-byte stamp).
    #[arg(long, env = "SWITCHBOARD_PAYLOAD", default_value_t = 100)]
    pub payload: usize,
    /// How publications reach the server.
    #[arg(long, env = "SWITCHBOARD_VIA", value_enum, default_value_t = Via::Api)]
    pub via: Via,
    /// Centrifugo server API key (X-API-Key), for --via api.
    #[arg(
        long,
        env = "SWITCHBOARD_API_KEY",
        hide_env_values = true,
        default_value = "dev-api-key"
    )]
    pub api_key: String,
    /// Address(es) of the HTTP API to publish to, IP:PORT (default: those of --url). The
    /// publisher moves to the next one after a failure.
    #[arg(long = "api-addr", env = "SWITCHBOARD_API_ADDR", value_delimiter = ',')]
    pub api_addrs: Vec<std::net::SocketAddr>,
    /// Channel names are PREFIX0, PREFIX1, … [default: chat:lt, or lt- with
    /// --protocol pusher, whose channel names have no ':']
    #[arg(long, env = "SWITCHBOARD_CHANNEL_PREFIX")]
    pub channel_prefix: Option<String>,
    /// Seconds to wait after publishing for the last deliveries.
    #[arg(long, env = "SWITCHBOARD_DRAIN", default_value_t = 5.0)]
    pub drain: f64,
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Connections held meanwhile, spread over --url.
    #[arg(long, env = "SWITCHBOARD_CONNECTIONS", default_value_t = 1000)]
    pub connections: u64,
    /// Each connection subscribes to one of this many channels.
    #[arg(long, env = "SWITCHBOARD_CHANNELS", default_value_t = 100)]
    pub channels: u32,
    /// Channel names are PREFIX0, PREFIX1, …
    #[arg(long, env = "SWITCHBOARD_CHANNEL_PREFIX", default_value = "chat:lt")]
    pub channel_prefix: String,
    /// API methods to time, one after the other (disconnect and unsubscribe name a user
    /// nobody is, so the held connections stay).
    #[arg(
        long = "method",
        env = "SWITCHBOARD_METHODS",
        value_delimiter = ',',
        default_value = "disconnect,channels",
        value_parser = ["disconnect", "unsubscribe", "channels", "info"]
    )]
    pub methods: Vec<String>,
    /// Calls of each method.
    #[arg(long, env = "SWITCHBOARD_CALLS", default_value_t = 1000)]
    pub calls: u32,
    /// Server API key (X-API-Key).
    #[arg(
        long,
        env = "SWITCHBOARD_API_KEY",
        hide_env_values = true,
        default_value = "dev-api-key"
    )]
    pub api_key: String,
    /// Address of the HTTP API to call, IP:PORT (default: that of the first --url).
    #[arg(long = "api-addr", env = "SWITCHBOARD_API_ADDR")]
    pub api_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Churning connections arriving per second (each subscribes, stays, leaves).
    #[arg(long, env = "SWITCHBOARD_CHURN_RATE", default_value_t = 100.0)]
    pub churn_rate: f64,
    /// Mean seconds a churning connection stays (uniform in 0..2×mean).
    #[arg(long, env = "SWITCHBOARD_CHURN_LIFETIME", default_value_t = 2.0)]
    pub churn_lifetime: f64,
    /// Churning connections open at once, at most.
    #[arg(long, env = "SWITCHBOARD_CHURN_MAX", default_value_t = 5000)]
    pub churn_max: usize,
}

#[derive(Debug, Clone, Args)]
pub struct WebhooksArgs {
    /// The gateway's Pusher endpoint, ws://IP:PORT (the app's /app/KEY is added).
    #[arg(long, env = "SWITCHBOARD_URL", default_value = "ws://127.0.0.1:8000")]
    pub url: Target,
    /// Where the receiver listens; the app's webhook URL must point here.
    #[arg(
        long,
        env = "SWITCHBOARD_WEBHOOK_LISTEN",
        default_value = "127.0.0.1:9300"
    )]
    pub listen: std::net::SocketAddr,
    /// The app the members connect to (its key) and whose channels they are
    /// signed into (its secret).
    #[command(flatten)]
    pub pusher: PusherArgs,
    /// Members held at once (one connection each).
    #[arg(long, env = "SWITCHBOARD_MEMBERS", default_value_t = 10_000)]
    pub members: usize,
    /// Presence channels they spread over (presence-wh-0 …).
    #[arg(long, env = "SWITCHBOARD_CHANNELS", default_value_t = 500)]
    pub channels: u32,
    /// Mean seconds a member stays (uniform in 0..2×mean) before it leaves and its
    /// slot joins again as a new user.
    #[arg(long, env = "SWITCHBOARD_LIFETIME", default_value_t = 30.0)]
    pub lifetime: f64,
    /// Seconds of churn, from the first join.
    #[arg(long, env = "SWITCHBOARD_DURATION", default_value_t = 60.0)]
    pub duration: f64,
    /// Members joining per second while the slots fill.
    #[arg(long, env = "SWITCHBOARD_JOIN_RATE", default_value_t = 1000.0)]
    pub join_rate: f64,
    /// Longest wait for the last webhooks after everyone left, seconds.
    #[arg(long, env = "SWITCHBOARD_SETTLE", default_value_t = 60.0)]
    pub settle: f64,
    /// Source addresses 127.0.0.1 … 127.0.0.N for the connections.
    #[arg(long, env = "SWITCHBOARD_SOURCES", default_value_t = 4)]
    pub sources: u8,
    /// Write every figure as JSON to this file.
    #[arg(long, env = "SWITCHBOARD_JSON")]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct FailoverArgs {
    /// Shell command run (sh -c) at each --kill-at time, e.g. 'kill -9 1234'. Each run
    /// sees its number (0, 1, …) in SWITCHBOARD_LOADTEST_HOOK_RUN, so one command can
    /// restart a different gateway each time (a rolling restart).
    #[arg(long, env = "SWITCHBOARD_KILL_COMMAND")]
    pub kill_command: Option<String>,
    /// Seconds after publishing starts to run --kill-command; several (comma-separated
    /// or repeated) run it several times, one run after the other.
    #[arg(
        long,
        env = "SWITCHBOARD_KILL_AT",
        value_delimiter = ',',
        default_value = "3"
    )]
    pub kill_at: Vec<f64>,
    /// Shell command run at each --restart-at time; must return (start servers in the
    /// background).
    #[arg(long, env = "SWITCHBOARD_RESTART_COMMAND")]
    pub restart_command: Option<String>,
    /// Seconds after publishing starts to run --restart-command (several allowed).
    #[arg(
        long,
        env = "SWITCHBOARD_RESTART_AT",
        value_delimiter = ',',
        default_value = "6"
    )]
    pub restart_at: Vec<f64>,
    /// Seconds one hook run may take before the run goes on without it.
    #[arg(long, env = "SWITCHBOARD_HOOK_TIMEOUT", default_value_t = 30.0)]
    pub hook_timeout: f64,
}
