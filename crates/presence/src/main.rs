//! `switchboard-presence`: the presence service binary.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Parser;
use switchboard_broker_nats::PresenceBucket;
use switchboard_core::startup::{self, Backoff};
use switchboard_presence::config::{Cli, Config};
use switchboard_presence::{probes, serve, PresenceService};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::resolve(Cli::parse()) {
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
    let http = tokio::net::TcpListener::bind(config.http_listen).await?;
    let http_addr = http.local_addr()?;
    // Installed before any announcement, so that a SIGTERM right after one stops us.
    let signal = switchboard_core::shutdown::signal();
    tokio::pin!(signal);
    startup::announce(&format!(
        "switchboard-presence starting, http {http_addr}: connecting to NATS"
    ));
    let (stop_tx, stop) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The probes answer from the start: /readyz is 503 until NATS is reached.
    let nats: Arc<OnceLock<async_nats::Client>> = Arc::default();
    let ready: probes::Readiness = {
        let nats = nats.clone();
        Arc::new(move || {
            nats.get().is_some_and(|client| {
                client.connection_state() == async_nats::connection::State::Connected
            })
        })
    };
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
    let (client, bucket) = tokio::select! {
        connected = connect(&config) => connected,
        _ = &mut signal => {
            tracing::info!("stopped before NATS was reached");
            let _ = stop_tx.send(true);
            upkeep.abort();
            let _ = probes_task.await;
            return Ok(());
        }
    };
    let _ = nats.set(client);
    // The gRPC port opens only now: a gateway's call to a replica that is still
    // starting is refused at once and goes to the next replica.
    let grpc = tokio::net::TcpListener::bind(config.listen).await?;
    // Scripts and tests read this line to learn the ports when listening on port 0.
    startup::announce(&format!(
        "switchboard-presence listening on {} http {http_addr}",
        grpc.local_addr()?
    ));
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

/// Connects to NATS and opens the presence bucket, retrying with a backoff (250 ms
/// doubling to 5 s) while NATS cannot be reached or its JetStream cannot serve yet;
/// each failure is logged and counted in `switchboard_nats_connect_failures_total`.
async fn connect(config: &Config) -> (async_nats::Client, PresenceBucket) {
    let mut backoff = Backoff::startup();
    for attempt in 1u64.. {
        let connected = async {
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
            let bucket = PresenceBucket::open(&js, &config.prefix, config.ttl, config.replicas)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((client, bucket))
        };
        match connected.await {
            Ok(connected) => return connected,
            Err(error) => {
                let delay = backoff.next_delay();
                metrics::counter!("switchboard_nats_connect_failures_total").increment(1);
                tracing::warn!(%error, attempt, retry_in = ?delay, "NATS not reached yet; not ready");
                tokio::time::sleep(delay).await;
            }
        }
    }
    unreachable!("attempts are unbounded")
}

/// How long calls in flight may take after SIGTERM.
const GRACE: Duration = Duration::from_secs(5);
