//! While NATS is away, a channel's first local subscriber is refused at once
//! with a temporary error, and served again once NATS is back.

mod common;

use std::time::Duration;

use switchboard_core::namespace::Namespaces;
use switchboard_core::{Broker, BrokerError};
use switchboard_test_support::{eventually, NatsServer};

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_subscriber_during_an_outage_is_refused_not_kept_waiting() {
    let mut nats = NatsServer::start();
    let broker = common::broker(&nats, &Namespaces::default()).await;
    broker.subscribe("before").await.unwrap();

    nats.kill();
    eventually("the broker notices", PATIENCE, async || {
        !broker.is_healthy()
    })
    .await;
    // Without the check it waits for the reconnect, past this bound.
    let refused = tokio::time::timeout(PATIENCE, broker.subscribe("during")).await;
    assert!(
        matches!(refused, Ok(Err(BrokerError::Unavailable(_)))),
        "{refused:?}"
    );

    nats.restart();
    eventually("NATS back", PATIENCE, async || broker.is_healthy()).await;
    tokio::time::timeout(PATIENCE, broker.subscribe("during"))
        .await
        .expect("served once NATS is back")
        .unwrap();
}
