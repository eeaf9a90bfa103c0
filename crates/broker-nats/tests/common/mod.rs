//! What the broker tests share.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use switchboard_broker_nats::{NatsBroker, NatsConfig};
use switchboard_core::namespace::Namespaces;
use switchboard_core::{Broker, ChannelEvent, EventSink};
use switchboard_test_support::NatsServer;

/// A gateway's broker on `nats`, every other setting at its default.
pub async fn broker(nats: &NatsServer, namespaces: &Namespaces) -> Arc<NatsBroker> {
    let config = NatsConfig {
        urls: vec![nats.url()],
        ..NatsConfig::default()
    };
    NatsBroker::connect(config, namespaces).await.unwrap()
}

/// Two gateways' brokers: the sender, and the receiver with local interest in
/// `channel`, whose events the returned sink keeps.
pub async fn sender_and_receiver(
    nats: &NatsServer,
    namespaces: &Namespaces,
    channel: &str,
) -> (Arc<NatsBroker>, Arc<NatsBroker>, Arc<Events>) {
    let (sender, receiver) = (
        broker(nats, namespaces).await,
        broker(nats, namespaces).await,
    );
    sender.set_sink(Arc::new(Events::default()));
    let events = Arc::new(Events::default());
    receiver.set_sink(events.clone());
    receiver.subscribe(channel).await.unwrap();
    (sender, receiver, events)
}

/// An event sink that keeps every event it receives, for a test to inspect.
#[derive(Default)]
pub struct Events(Mutex<Vec<ChannelEvent>>);

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
    /// What the events received so far map to, in arrival order, skipping `None`s.
    pub fn collect<T>(&self, pick: impl FnMut(&ChannelEvent) -> Option<T>) -> Vec<T> {
        self.0.lock().unwrap().iter().filter_map(pick).collect()
    }
}
