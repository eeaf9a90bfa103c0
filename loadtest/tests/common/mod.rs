//! A real gateway in this process for the loadtest's tests: `config/dev.toml` on
//! port 0, plus whatever flags a test adds (e.g. `--nats-url` for cluster mode).

pub mod run;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use switchboard_gateway::config::{Cli as GatewayCli, Config};
use switchboard_gateway::node::Node;
use tokio::sync::oneshot;

pub struct Gateway {
    pub addr: SocketAddr,
    _node: Arc<Node>,
    _stop: oneshot::Sender<()>,
}

pub async fn gateway(flags: &[&str]) -> Gateway {
    gateway_edited(flags, |_| {}).await
}

/// [`gateway`], with its configuration changed by `edit` once resolved.
pub async fn gateway_edited(flags: &[&str], edit: impl FnOnce(&mut Config)) -> Gateway {
    let dev = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/dev.toml");
    let mut argv = vec![
        "switchboard-gateway",
        "--config",
        dev,
        "--listen",
        "127.0.0.1:0",
        "--log",
        "warn",
    ];
    argv.extend_from_slice(flags);
    let cli = GatewayCli::try_parse_from(argv).expect("gateway flags");
    let mut config = Config::resolve(cli).expect("config/dev.toml resolves");
    edit(&mut config);
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Node::from_config(config).await.unwrap();
    let routes = switchboard_gateway::http::Routes::new(node.clone()).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(switchboard_gateway::server::run(
        listener,
        routes,
        None,
        async {
            let _ = stopped.await;
        },
    ));
    Gateway {
        addr,
        _node: node,
        _stop: stop,
    }
}

pub fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/connection/websocket")
}
