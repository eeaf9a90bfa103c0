//! A publication that skips one client keeps that exclusion across gateways:
//! it travels in the envelope, live and through the stream's RePublish.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use switchboard_broker_nats::{NatsBroker, NatsConfig};
use switchboard_core::broker::HistoryOptions;
use switchboard_core::namespace::{NamespaceOptions, Namespaces};
use switchboard_core::{Broker, ChannelEvent, EventSink, PublishOptions};
use switchboard_test_support::{eventually, NatsServer};

#[derive(Default)]
struct Events(Mutex<Vec<ChannelEvent>>);

impl EventSink for Events {
    fn on_event(&self, _channel: &str, event: ChannelEvent) {
        self.0.lock().unwrap().push(event);
    }
    fn has_subscribers(&self, _channel: &str) -> bool {
        true
    }
    fn reset(&self, _channel: &str) {}
}

impl Events {
    /// The exclusions of the publications received so far, by payload.
    fn exclusions(&self) -> Vec<(String, Option<String>)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                ChannelEvent::Publication(p) => Some((
                    String::from_utf8_lossy(&p.data).into_owned(),
                    p.exclude_client.clone(),
                )),
                _ => None,
            })
            .collect()
    }
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
    let connect = || {
        NatsBroker::connect(
            NatsConfig {
                urls: vec![nats.url()],
                ..Default::default()
            },
            &namespaces,
        )
    };
    let (sender, receiver) = (connect().await.unwrap(), connect().await.unwrap());
    sender.set_sink(Arc::new(Events::default()));
    let events = Arc::new(Events::default());
    receiver.set_sink(events.clone());
    receiver.subscribe("room").await.unwrap();

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
        async || events.exclusions().len() == publishes.len(),
    )
    .await;
    let mut got = events.exclusions();
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
