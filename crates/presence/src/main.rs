//! `switchboard-presence`: the presence service binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use switchboard_broker_nats::PresenceBucket;
use switchboard_presence::{probes, serve, PresenceService};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// Flags; each also reads `SWITCHBOARD_<FLAG>` from the environment. Flags win
/// over the environment, the environment over the file, the file over defaults.
#[derive(Debug, Default, Parser)]
#[command(
    name = "switchboard-presence",
    version,
    about = "The Switchboard presence service: who is in a channel, over gRPC. Stateless: members \
             live in a NATS JetStream KV bucket, so any replica answers any call."
)]
struct Cli {
    /// TOML configuration file with the same options.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC address [default: 0.0.0.0:9000].
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of /metrics, /healthz and /readyz [default: 0.0.0.0:9001].
    #[arg(long, env = "SWITCHBOARD_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// NATS server URLs, comma-separated [default: nats://127.0.0.1:4222].
    #[arg(long, env = "SWITCHBOARD_NATS_URL", value_delimiter = ',')]
    nats_url: Option<Vec<String>>,
    /// Prefix of the presence bucket's name; the gateways' --nats-prefix [default: sb].
    #[arg(long, env = "SWITCHBOARD_NATS_PREFIX")]
    nats_prefix: Option<String>,
    /// Replicas of the presence bucket (3 in production) [default: 1].
    #[arg(long, env = "SWITCHBOARD_NATS_REPLICAS")]
    nats_replicas: Option<usize>,
    /// Seconds a member lives without a refresh; the gateways' --presence-ttl [default: 20].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_TTL")]
    presence_ttl: Option<u64>,
    /// Log filter [default: info].
    #[arg(long, env = "SWITCHBOARD_LOG")]
    log: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    nats_url: Option<Vec<String>>,
    nats_prefix: Option<String>,
    nats_replicas: Option<usize>,
    presence_ttl: Option<u64>,
    log: Option<String>,
}

struct Config {
    listen: SocketAddr,
    http_listen: SocketAddr,
    nats_urls: Vec<String>,
    prefix: String,
    replicas: usize,
    ttl: Duration,
    log: String,
}

fn resolve(cli: Cli) -> Result<Config, String> {
    let file = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .map_err(|e| format!("invalid configuration file {}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    Ok(Config {
        listen: cli
            .listen
            .or(file.listen)
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 9000))),
        http_listen: cli
            .http_listen
            .or(file.http_listen)
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 9001))),
        nats_urls: cli
            .nats_url
            .or(file.nats_url)
            .unwrap_or_else(|| vec!["nats://127.0.0.1:4222".into()]),
        prefix: cli
            .nats_prefix
            .or(file.nats_prefix)
            .unwrap_or_else(|| "sb".into()),
        replicas: cli.nats_replicas.or(file.nats_replicas).unwrap_or(1),
        ttl: Duration::from_secs(cli.presence_ttl.or(file.presence_ttl).unwrap_or(20).max(3)),
        log: cli.log.or(file.log).unwrap_or_else(|| "info".into()),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match resolve(Cli::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard-presence: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-presence: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics_handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    let client = async_nats::ConnectOptions::new()
        .name("switchboard-presence")
        .connect(config.nats_urls.as_slice())
        .await
        .map_err(|e| {
            format!(
                "cannot connect to NATS at {}: {e}",
                config.nats_urls.join(",")
            )
        })?;
    let js = async_nats::jetstream::new(client.clone());
    let bucket = PresenceBucket::open(&js, &config.prefix, config.ttl, config.replicas).await?;
    let grpc = tokio::net::TcpListener::bind(config.listen).await?;
    let http = tokio::net::TcpListener::bind(config.http_listen).await?;
    // Installed before the announcement, so that a SIGTERM right after it drains.
    let signal = switchboard_core::shutdown::signal();
    // Scripts and tests read this line to learn the ports when listening on port 0.
    println!(
        "switchboard-presence listening on {} http {}",
        grpc.local_addr()?,
        http.local_addr()?
    );
    let (stop_tx, stop) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let ready: probes::Readiness =
        Arc::new(move || client.connection_state() == async_nats::connection::State::Connected);
    let probes_task = tokio::spawn(probes::serve(
        http,
        metrics_handle.clone(),
        ready,
        stopped(stop.clone()),
    ));
    let upkeep = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticker.tick().await;
            metrics_handle.run_upkeep();
        }
    });
    let bucket = Arc::new(bucket);
    let replica = format!("{}-{}", std::process::id(), grpc.local_addr()?);
    let sweeper = tokio::spawn(switchboard_broker_nats::sweeper::run_while(
        Arc::downgrade(&bucket),
        replica,
    ));
    let service = PresenceService::new(bucket);
    let served = serve(grpc, service, stopped(stop.clone()));
    tokio::pin!(served);
    // On SIGTERM, calls in flight get a grace period; connections gateways keep
    // open do not hold the process past it.
    let signalled = async move {
        signal.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        tokio::time::sleep(GRACE).await;
    };
    tokio::select! {
        result = &mut served => result?,
        _ = signalled => tracing::warn!("grace period over; exiting with connections open"),
    }
    upkeep.abort();
    sweeper.abort();
    let _ = probes_task.await;
    Ok(())
}

/// How long calls in flight may take after SIGTERM.
const GRACE: Duration = Duration::from_secs(5);
