//! The cluster's control plane on NATS: which gateways are live, messages every
//! live gateway answers, and requests addressed to one gateway. What the
//! messages mean is the gateway's business; here they are bytes.
//!
//! - `<prefix>.ctl.<op>`: a broadcast. Every gateway but the sender runs it and
//!   answers on the reply subject, naming itself in the `Switchboard-Node`
//!   header; the sender gathers answers until every live gateway answered or
//!   its deadline passed, and names the ones that did not.
//! - `<prefix>.ctl.node.<id>`: a request only gateway `<id>` answers.
//! - `<prefix>-nodes`: the registry bucket ([`nodes`]).
//!
//! # Layout
//! - here: [`ControlBus`] (broadcast, request, serving) and [`ControlHandler`].
//! - `nodes`: the registry bucket and each gateway's view of it.

mod nodes;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, Message};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::presence::bucket::Bucket;
use crate::{NatsBroker, NatsError};

/// The header naming the gateway that sent a control message or answered it.
const NODE_HEADER: &str = "Switchboard-Node";
/// Control messages one gateway runs at once; more wait in its subscription.
const IN_FLIGHT: usize = 256;

/// What a gateway does with the control messages it receives.
#[async_trait]
pub trait ControlHandler: Send + Sync + 'static {
    /// Runs one message and returns the answer to send back.
    async fn handle(&self, message: Bytes) -> Bytes;
}

/// The answers to a broadcast.
#[derive(Debug, Default)]
pub struct Gathered {
    /// (node id, answer), one per gateway that answered in time.
    pub answers: Vec<(String, Bytes)>,
    /// Live gateways that did not answer before the deadline.
    pub missing: Vec<String>,
}

/// Why a node-addressed request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no gateway {0} is listening")]
    NoSuchNode(String),
    #[error("gateway {0} did not answer in time")]
    TimedOut(String),
    #[error("control request failed: {0}")]
    Unavailable(String),
}

/// One gateway's end of the control plane.
pub struct ControlBus {
    client: async_nats::Client,
    store: async_nats::jetstream::kv::Store,
    prefix: String,
    id: String,
    ttl: Duration,
    view: nodes::View,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlBus {
    /// Joins the control plane as gateway `id` on `broker`'s connection: opens
    /// the registry bucket (entries kept for `ttl`), follows it, and serves
    /// broadcasts and requests to `id` with `handler`. The gateway is not listed
    /// until its first [`ControlBus::announce`].
    pub async fn start(
        broker: &NatsBroker,
        id: String,
        ttl: Duration,
        handler: Arc<dyn ControlHandler>,
    ) -> Result<ControlBus, NatsError> {
        let (client, prefix) = (broker.shared.client.clone(), broker.config.prefix.as_str());
        let name = format!("{prefix}-nodes");
        let bucket = Bucket::open(broker.jetstream(), name, ttl, broker.config.replicas).await?;
        let subscribe = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| NatsError::Stream {
                        stream: subject,
                        reason: e.to_string(),
                    })
            }
        };
        let broadcasts = subscribe(format!("{prefix}.ctl.*")).await?;
        let addressed = subscribe(format!("{prefix}.ctl.node.{id}")).await?;
        // Subscriptions exist on the server once the client flushed them.
        client.flush().await.map_err(|e| NatsError::Subscribe {
            subject: format!("{prefix}.ctl.>"),
            reason: e.to_string(),
        })?;
        // Whoever is registered already is live from the start.
        let view = nodes::View::default();
        nodes::load(&bucket, &view, ttl).await?;
        let incoming = futures::stream::select(broadcasts, addressed);
        let tasks = vec![
            tokio::spawn(nodes::watch(bucket.store.clone(), view.clone(), ttl)),
            tokio::spawn(serve(client.clone(), id.clone(), incoming, handler)),
        ];
        Ok(ControlBus {
            client,
            store: bucket.store,
            prefix: prefix.to_owned(),
            id,
            ttl,
            view,
            tasks,
        })
    }

    /// This gateway's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Puts this gateway's entry in the registry (and in its own view at once).
    pub async fn announce(&self, value: Bytes) -> Result<(), ControlError> {
        self.view
            .seen(&self.id, value.clone(), self.ttl, Duration::ZERO);
        self.store
            .put(&self.id, value)
            .await
            .map(|_| ())
            .map_err(|e| ControlError::Unavailable(e.to_string()))
    }

    /// Takes this gateway out of the registry and stops serving.
    pub async fn withdraw(&self) -> Result<(), ControlError> {
        for task in &self.tasks {
            task.abort();
        }
        self.view.gone(&self.id);
        self.store
            .delete(&self.id)
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))
    }

    /// The live gateways, this one included once announced: (id, announcement).
    pub fn nodes(&self) -> Vec<(String, Bytes)> {
        self.view.live()
    }

    /// Sends `message` to every other gateway on `<prefix>.ctl.<op>` and gathers
    /// their answers until every live one answered or `deadline` passed.
    pub async fn broadcast(&self, op: &str, message: Bytes, deadline: Duration) -> Gathered {
        let mut waiting: HashSet<String> = self
            .nodes()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| *id != self.id)
            .collect();
        let mut gathered = Gathered::default();
        let inbox = self.client.new_inbox();
        let sent = async {
            let answers = self.client.subscribe(inbox.clone()).await?;
            self.client
                .publish_with_reply_and_headers(
                    format!("{}.ctl.{op}", self.prefix),
                    inbox,
                    self.own_header(),
                    message,
                )
                .await?;
            self.client.flush().await?;
            Ok::<_, async_nats::Error>(answers)
        };
        let mut answers = match tokio::time::timeout(deadline, sent).await {
            Ok(Ok(answers)) => answers,
            Ok(Err(e)) => {
                tracing::warn!(op, error = %e, "control broadcast failed");
                gathered.missing = sorted(waiting);
                return gathered;
            }
            Err(_) => {
                gathered.missing = sorted(waiting);
                return gathered;
            }
        };
        let until = tokio::time::Instant::now() + deadline;
        while !waiting.is_empty() {
            let answer = match tokio::time::timeout_at(until, answers.next()).await {
                Ok(Some(answer)) => answer,
                Ok(None) | Err(_) => break,
            };
            let Some(node) = sender(&answer) else {
                continue;
            };
            waiting.remove(&node);
            gathered.answers.push((node, answer.payload));
        }
        gathered.missing = sorted(waiting);
        gathered
    }

    /// Sends `message` to gateway `node` only and waits for its answer.
    pub async fn request(
        &self,
        node: &str,
        message: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ControlError> {
        use async_nats::RequestErrorKind as Kind;
        let request = async_nats::Request::new()
            .payload(message)
            .headers(self.own_header())
            .timeout(Some(timeout));
        match self
            .client
            .send_request(format!("{}.ctl.node.{node}", self.prefix), request)
            .await
        {
            Ok(answer) => Ok(answer.payload),
            Err(e) => Err(match e.kind() {
                Kind::NoResponders => ControlError::NoSuchNode(node.to_owned()),
                Kind::TimedOut => ControlError::TimedOut(node.to_owned()),
                _ => ControlError::Unavailable(e.to_string()),
            }),
        }
    }

    fn own_header(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, self.id.as_str());
        headers
    }
}

impl Drop for ControlBus {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn sorted(ids: HashSet<String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort();
    ids
}

fn sender(message: &Message) -> Option<String> {
    let value = message.headers.as_ref()?.get(NODE_HEADER)?;
    Some(value.as_str().to_owned())
}

/// Runs every control message another gateway sent, at most [`IN_FLIGHT`] at
/// once, and answers it.
async fn serve(
    client: async_nats::Client,
    id: String,
    mut incoming: impl futures::Stream<Item = Message> + Unpin,
    handler: Arc<dyn ControlHandler>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let answer_header = {
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, id.as_str());
        headers
    };
    while let Some(message) = incoming.next().await {
        if sender(&message).as_deref() == Some(id.as_str()) {
            continue;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, handler, headers) = (client.clone(), handler.clone(), answer_header.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let answer = handler.handle(message.payload).await;
            if let Some(reply) = message.reply {
                if let Err(e) = client.publish_with_headers(reply, headers, answer).await {
                    tracing::debug!(error = %e, "control answer not sent");
                }
            }
        });
    }
}
