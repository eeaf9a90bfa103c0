//! A publication that skips one client keeps that exclusion across gateways:
//! it travels in the envelope, live and through the stream's RePublish.

mod common;
use common::{sender_and_receiver, Events};

use std::time::Duration;

use bytes::Bytes;

use switchboard_core::broker::HistoryOptions;
use switchboard_core::namespace::{NamespaceOptions, Namespaces};
use switchboard_core::{Broker, ChannelEvent, PublishOptions};
use switchboard_test_support::{eventually, NatsServer};

/// The exclusions of the publications received so far, by payload.
fn exclusions(events: &Events) -> Vec<(String, Option<String>)> {
    events.collect(|e| match e {
        ChannelEvent::Publication(p) => Some((
            String::from_utf8_lossy(&p.data).into_owned(),
            p.exclude_client.clone(),
        )),
        _ => None,
    })
}

#[tokio::test]
async fn the_excluded_client_travels_to_other_gateways_live_and_stored() {
    let nats = NatsServer::start();
    let history = NamespaceOptions {
        history_size: 10,
        history_ttl: 60,
        ..Default::default()
    };
    let namespaces = Namespaces::new(history, Vec::new()).unwrap();
    let (sender, _receiver, events) = sender_and_receiver(&nats, &namespaces, "room").await;

    let stored = HistoryOptions {
        size: 10,
        ttl: Duration::from_secs(60),
    };
    let publishes = [
        ("live-skip", None, Some("socket-1")),
        ("live-all", None, None),
        ("stored-skip", Some(stored), Some("socket-2")),
    ];
    for (data, history, exclude) in publishes {
        let options = PublishOptions {
            history,
            exclude_client: exclude.map(str::to_owned),
            ..Default::default()
        };
        sender
            .publish("room", Bytes::from(data), None, &options)
            .await
            .unwrap();
    }
    eventually(
        "every publication arrived",
        Duration::from_secs(10),
        async || exclusions(&events).len() == publishes.len(),
    )
    .await;
    let mut got = exclusions(&events);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("live-all".to_owned(), None),
            ("live-skip".to_owned(), Some("socket-1".to_owned())),
            ("stored-skip".to_owned(), Some("socket-2".to_owned())),
        ]
    );
}
