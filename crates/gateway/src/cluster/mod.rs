//! The cluster acts as one server: a server API call that acts on connections
//! (disconnect, unsubscribe, subscribe, refresh) or asks about them (channels,
//! info) reaches every live gateway, whichever one took it.
//!
//! Standalone, the node is the whole cluster and commands run in process. In
//! cluster mode the node joins the control plane over NATS
//! ([`switchboard_broker_nats::control`]): it announces itself in the node
//! registry every third of the node TTL, runs the commands other gateways
//! broadcast, and answers requests addressed to it.
//!
//! # Layout
//! - here: [`Cluster`], a node's way to the others: [`Cluster::run`] (every node),
//!   [`Cluster::request`] (one node), [`Cluster::nodes`].
//! - [`command`]: the commands and answers, as they travel.
//! - `apply`: a command run on this node's connections.
//! - [`nodes`]: what a node announces about itself.

mod apply;
pub mod command;
pub mod nodes;

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use switchboard_broker_nats::control::{ControlBus, ControlError, ControlHandler};
use switchboard_broker_nats::{NatsBroker, NatsError};

use crate::config::NatsSettings;
use crate::node::Node;
pub use command::{Answer, Command};
pub use nodes::NodeInfo;

/// A node's way to the rest of the cluster.
#[derive(Default)]
pub struct Cluster {
    joined: OnceLock<Joined>,
}

/// The control plane, once joined.
struct Joined {
    bus: ControlBus,
    timeout: Duration,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// A gateway that did not confirm a command, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconfirmed {
    pub id: String,
    pub name: String,
    pub why: String,
}

/// Every node's answer to a command run cluster-wide.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One per node that ran it, this one first.
    pub answers: Vec<Answer>,
    /// Live nodes that did not answer in time, or could not run it.
    pub unconfirmed: Vec<Unconfirmed>,
}

impl Cluster {
    /// Joins the control plane over `broker` and announces `node`.
    pub async fn join(
        node: &Arc<Node>,
        broker: &NatsBroker,
        settings: &NatsSettings,
    ) -> Result<(), NatsError> {
        let handler = Arc::new(Handler(Arc::downgrade(node)));
        let bus = ControlBus::start(broker, node.id.clone(), settings.node_ttl, handler).await?;
        if let Err(e) = bus.announce(announcement(node)).await {
            tracing::warn!(error = %e, "node registry announcement failed");
        }
        let heartbeat = tokio::spawn(heartbeat(Arc::downgrade(node), settings.node_ttl / 3));
        let joined = Joined {
            bus,
            timeout: settings.control_timeout,
            heartbeat,
        };
        if node.cluster.joined.set(joined).is_err() {
            tracing::warn!("node joined the control plane twice");
        }
        Ok(())
    }

    /// Leaves the control plane: no longer listed, no longer answering.
    pub async fn leave(&self) {
        if let Some(joined) = self.joined.get() {
            joined.heartbeat.abort();
            if let Err(e) = joined.bus.withdraw().await {
                tracing::warn!(error = %e, "node registry withdrawal failed");
            }
        }
    }

    /// Every live node, this one first (its counts as of now).
    pub fn nodes(&self, node: &Node) -> Vec<NodeInfo> {
        let mut nodes = vec![NodeInfo::of(node)];
        nodes.extend(self.others(node));
        nodes
    }

    /// The other live nodes, as they last announced themselves.
    pub fn others(&self, node: &Node) -> Vec<NodeInfo> {
        let Some(joined) = self.joined.get() else {
            return Vec::new();
        };
        joined
            .bus
            .nodes()
            .into_iter()
            .filter(|(id, _)| *id != node.id)
            .filter_map(|(id, value)| match serde_json::from_slice(&value) {
                Ok(info) => Some(info),
                Err(e) => {
                    tracing::debug!(node = id, error = %e, "node registry entry not understood");
                    None
                }
            })
            .collect()
    }

    /// Runs `command` on every live node: here, and on the others over the
    /// control plane, waiting for them at most the control timeout.
    pub async fn run(&self, node: &Node, command: Command) -> Outcome {
        let started = Instant::now();
        let op = command.op();
        let mut outcome = Outcome::default();
        if let Some(joined) = self.joined.get() {
            let message = Bytes::from(serde_json::to_vec(&command).unwrap_or_default());
            let (local, gathered) = tokio::join!(
                apply::apply(node, command),
                joined.bus.broadcast(op, message, joined.timeout)
            );
            outcome.answers.push(local);
            // Names only for the nodes that did not confirm: usually none.
            let others = std::cell::OnceCell::new();
            let name_of = |id: &str| {
                others
                    .get_or_init(|| self.others(node))
                    .iter()
                    .find(|n: &&NodeInfo| n.id == id)
                    .map(|n| n.name.clone())
                    .unwrap_or_default()
            };
            for (id, answer) in gathered.answers {
                match serde_json::from_slice::<Answer>(&answer) {
                    Ok(Answer::Failed { error }) => outcome.unconfirmed.push(Unconfirmed {
                        name: name_of(&id),
                        id,
                        why: error,
                    }),
                    Ok(answer) => outcome.answers.push(answer),
                    Err(e) => outcome.unconfirmed.push(Unconfirmed {
                        name: name_of(&id),
                        id,
                        why: format!("answer not understood: {e}"),
                    }),
                }
            }
            for id in gathered.missing {
                outcome.unconfirmed.push(Unconfirmed {
                    name: name_of(&id),
                    id,
                    why: "no answer within the control timeout".into(),
                });
            }
        } else {
            outcome.answers.push(apply::apply(node, command).await);
        }
        let result = if outcome.unconfirmed.is_empty() {
            "confirmed"
        } else {
            "unconfirmed"
        };
        metrics::counter!("switchboard_cluster_commands_total", "op" => op, "result" => result)
            .increment(1);
        metrics::histogram!("switchboard_cluster_command_seconds", "op" => op)
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Runs `command` on node `target` only (this one runs it in process).
    pub async fn request(
        &self,
        node: &Node,
        target: &str,
        command: Command,
    ) -> Result<Answer, ControlError> {
        if target == node.id {
            return Ok(apply::apply(node, command).await);
        }
        let Some(joined) = self.joined.get() else {
            return Err(ControlError::NoSuchNode(target.to_owned()));
        };
        let message = Bytes::from(serde_json::to_vec(&command).unwrap_or_default());
        let answer = joined.bus.request(target, message, joined.timeout).await?;
        serde_json::from_slice(&answer).map_err(|e| ControlError::Unavailable(e.to_string()))
    }
}

fn announcement(node: &Node) -> Bytes {
    Bytes::from(serde_json::to_vec(&NodeInfo::of(node)).unwrap_or_default())
}

/// Announces the node every `period` while it exists.
async fn heartbeat(node: Weak<Node>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(node) = node.upgrade() else {
            return;
        };
        let Some(joined) = node.cluster.joined.get() else {
            return;
        };
        if let Err(e) = joined.bus.announce(announcement(&node)).await {
            tracing::warn!(error = %e, "node registry announcement failed");
        }
        // Forgets nodes past their TTL, and sets the gauge of live nodes.
        joined.bus.nodes();
    }
}

/// Runs what other gateways send this one.
struct Handler(Weak<Node>);

#[async_trait]
impl ControlHandler for Handler {
    async fn handle(&self, message: Bytes) -> Bytes {
        let answer = match (
            self.0.upgrade(),
            serde_json::from_slice::<Command>(&message),
        ) {
            (None, _) => Answer::Failed {
                error: "the node is stopping".into(),
            },
            (_, Err(e)) => Answer::Failed {
                error: format!("command not understood: {e}"),
            },
            (Some(node), Ok(command)) => apply::apply(&node, command).await,
        };
        Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
    }
}
