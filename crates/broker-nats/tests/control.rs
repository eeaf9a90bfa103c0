//! The control plane on its own: the registry of live gateways, broadcasts
//! gathered until every live gateway answered or the deadline passed, and
//! requests to one gateway.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use switchboard_broker_nats::control::{ControlBus, ControlError, ControlHandler};

use switchboard_core::namespace::Namespaces;
use switchboard_test_support::{eventually, NatsServer};
use tokio::sync::Semaphore;

const PATIENCE: Duration = Duration::from_secs(10);
const TTL: Duration = Duration::from_secs(30);

/// Answers `<name>:<message>`, one at a time; while someone holds `gate`'s one
/// permit, it does not answer.
struct Echo {
    name: &'static str,
    gate: Arc<Semaphore>,
}

#[async_trait]
impl ControlHandler for Echo {
    async fn handle(&self, message: Bytes) -> Bytes {
        let _pass = self.gate.acquire().await;
        let mut answer = format!("{}:", self.name).into_bytes();
        answer.extend_from_slice(&message);
        Bytes::from(answer)
    }
}

/// A gateway's bus named `name`, announced; the semaphore opens and closes its handler.
async fn bus(nats: &NatsServer, name: &'static str) -> (ControlBus, Arc<Semaphore>) {
    let broker = common::broker(nats, &Namespaces::default()).await;
    let gate = Arc::new(Semaphore::new(1));
    let handler = Arc::new(Echo {
        name,
        gate: gate.clone(),
    });
    let bus = ControlBus::start(&broker, name.to_owned(), TTL, handler)
        .await
        .unwrap();
    bus.announce(Bytes::from(name)).await.unwrap();
    (bus, gate)
}

fn ids(bus: &ControlBus) -> Vec<String> {
    bus.nodes().into_iter().map(|(id, _)| id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_is_answered_by_every_other_live_gateway_or_names_it() {
    let nats = NatsServer::start();
    let (a, _) = bus(&nats, "a").await;
    let (b, _) = bus(&nats, "b").await;
    let (c, c_gate) = bus(&nats, "c").await;
    for bus in [&a, &b, &c] {
        eventually("all three listed", PATIENCE, async || {
            ids(bus) == ["a", "b", "c"]
        })
        .await;
    }
    assert_eq!(
        a.nodes()[1],
        ("b".to_owned(), Bytes::from("b")),
        "each with what it announced"
    );

    let gathered = a.broadcast("ping", Bytes::from("hi"), PATIENCE).await;
    let mut answers: Vec<(String, Bytes)> = gathered.answers;
    answers.sort();
    assert_eq!(
        answers,
        [
            ("b".to_owned(), Bytes::from("b:hi")),
            ("c".to_owned(), Bytes::from("c:hi"))
        ],
        "the sender does not answer itself"
    );
    assert!(gathered.missing.is_empty());

    // c stops answering: the broadcast ends at its deadline and names c.
    let held = c_gate.acquire().await.unwrap();
    let gathered = a
        .broadcast("ping", Bytes::from("again"), Duration::from_millis(500))
        .await;
    assert_eq!(gathered.answers, [("b".to_owned(), Bytes::from("b:again"))]);
    assert_eq!(gathered.missing, ["c"]);
    drop(held);

    // b leaves: no longer listed nor awaited.
    b.withdraw().await.unwrap();
    eventually("b gone from a's view", PATIENCE, async || {
        ids(&a) == ["a", "c"]
    })
    .await;
    let gathered = a.broadcast("ping", Bytes::from("3"), PATIENCE).await;
    assert_eq!(gathered.answers, [("c".to_owned(), Bytes::from("c:3"))]);
    assert!(gathered.missing.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reaches_the_gateway_it_names_only() {
    let nats = NatsServer::start();
    let (a, _) = bus(&nats, "a").await;
    let (_b, _) = bus(&nats, "b").await;
    let (_c, c_gate) = bus(&nats, "c").await;
    let answer = a.request("b", Bytes::from("x"), PATIENCE).await.unwrap();
    assert_eq!(answer, Bytes::from("b:x"));
    assert_eq!(
        a.request("nobody", Bytes::from("x"), PATIENCE).await,
        Err(ControlError::NoSuchNode("nobody".into()))
    );
    let _held = c_gate.acquire().await.unwrap();
    assert_eq!(
        a.request("c", Bytes::from("x"), Duration::from_millis(300))
            .await,
        Err(ControlError::TimedOut("c".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_starts_later_sees_the_ones_registered_before() {
    let nats = NatsServer::start();
    let (_a, _) = bus(&nats, "a").await;
    let (_b, _) = bus(&nats, "b").await;
    // Read at start, before any watch update: no wait needed.
    let (late, _) = bus(&nats, "late").await;
    assert_eq!(ids(&late), ["a", "b", "late"]);
}
