use std::process::ExitCode;

use clap::Parser;
use switchboard_core::startup;
use switchboard_gateway::centrifugo::api;
use switchboard_gateway::config::{Cli, Config};
use switchboard_gateway::http::Routes;
use switchboard_gateway::node::Node;
use switchboard_gateway::{metrics, server, tls};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::resolve(Cli::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchboard-gateway: {e}");
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
            eprintln!("switchboard-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let listener = server::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    // Bound now, so that a taken port stops the start; served once the node is.
    let grpc_listener = match config.grpc_api_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (gRPC API): {e}"))?,
        ),
        None => None,
    };
    let mode = if config.nats.is_some() {
        "cluster"
    } else {
        "standalone"
    };
    // The node announces where it really listens (port 0 picks one).
    config.listen = listener.local_addr()?;
    // Installed before any announcement, so that a SIGTERM right after one stops us.
    let signal = switchboard_core::shutdown::signal();
    tokio::pin!(signal);
    let node = if config.nats.is_some() {
        // Until NATS answers: probes only, /readyz 503, clients refused with 503.
        startup::announce(&format!(
            "switchboard-gateway starting on {}: connecting to NATS",
            config.listen
        ));
        let limits = config.limits.clone();
        let connecting = server::starting(&listener, tls.clone(), &limits, Node::connect(config));
        tokio::select! {
            node = connecting => node?,
            _ = &mut signal => {
                tracing::info!("stopped before NATS was reached");
                return Ok(());
            }
        }
    } else {
        Node::from_config(config).await?
    };
    let routes = Routes::new(node.clone())?;
    tokio::spawn(metrics::upkeep(node.metrics.clone()));
    // Before the listening line: whoever waits for it finds the gRPC port too.
    let grpc = grpc_listener.map(|listener| {
        let addr = listener.local_addr().ok();
        let stop = tokio_util::sync::CancellationToken::new();
        let serving = api::grpc::serve(node.clone(), listener, stop.clone().cancelled_owned());
        let task = tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "the gRPC API stopped");
            }
        });
        if let Some(addr) = addr {
            startup::announce(&format!("switchboard-gateway gRPC API on {addr}"));
        }
        (stop, task)
    });
    let addr = node.config.listen;
    // Scripts and tests read this line to learn the port when listening on port 0.
    startup::announce(&format!("switchboard-gateway listening on {addr}"));
    tracing::info!(%addr, tls = tls.is_some(), mode, "gateway started");
    if node.config.insecure {
        tracing::warn!("insecure: clients connect without tokens and skip channel permissions");
    }
    server::run(listener, routes, tls, signal).await;
    // The API serves backends through the drain; it stops with the clients.
    if let Some((stop, task)) = grpc {
        stop.cancel();
        let _ = task.await;
    }
    if let Err(e) = node.presence.node_gone().await {
        tracing::warn!(error = %e, "presence cleanup on shutdown failed");
    }
    tracing::info!("gateway stopped");
    Ok(())
}
