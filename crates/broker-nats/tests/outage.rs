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

/// A hung NATS (frozen with SIGSTOP: its socket open, silent) is noticed within
/// a few probe intervals: the broker reports unhealthy and publishes fail at once
/// instead of waiting out their timeout; once NATS answers again, all is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_nats_is_noticed_and_refused_fast_until_it_answers_again() {
    let nats = NatsServer::start();
    let broker = common::broker(&nats, &Namespaces::default()).await;
    let publish = |n: u8| {
        let broker = broker.clone();
        async move {
            let data = bytes::Bytes::from(vec![b'0' + n]);
            broker
                .publish("hung", data, None, &Default::default())
                .await
        }
    };
    publish(1).await.unwrap();

    nats.freeze();
    eventually("the broker notices the silence", PATIENCE, async || {
        !broker.is_healthy()
    })
    .await;
    // Refused without waiting on the frozen server (a publish would otherwise
    // wait for its confirmation until the publish timeout, 5 s, and say so).
    let refused = tokio::time::timeout(Duration::from_secs(1), publish(2)).await;
    assert!(
        matches!(refused, Ok(Err(BrokerError::Unavailable(_)))),
        "{refused:?}"
    );

    nats.thaw();
    eventually("NATS answers again", PATIENCE, async || broker.is_healthy()).await;
    publish(3).await.unwrap();
}

/// A publish whose confirmation does not come in time is reported as
/// unconfirmed (it may have been made), not as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_server_does_not_confirm_is_unconfirmed_not_failed() {
    let nats = NatsServer::start();
    let config = switchboard_broker_nats::NatsConfig {
        urls: vec![nats.url()],
        publish_timeout: Duration::from_millis(500),
        // Probes far apart, so that the publish itself meets the silence.
        probe_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let broker = switchboard_broker_nats::NatsBroker::connect(config, &Namespaces::default())
        .await
        .unwrap();
    nats.freeze();
    let data = bytes::Bytes::from_static(b"1");
    let outcome = broker
        .publish("hung", data, None, &Default::default())
        .await;
    nats.thaw();
    assert!(
        matches!(outcome, Err(BrokerError::Unconfirmed(_))),
        "{outcome:?}"
    );
}
