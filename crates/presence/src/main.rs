//! `switchboard-presence`: the presence service binary.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchboard_broker_nats::PresenceBucket;
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
