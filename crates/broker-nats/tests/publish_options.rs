//! What a publish carries besides its payload reaches the other gateways: tags, live
//! and stored, and read back from history; and a publication kept out of a channel's
//! history (the server API's `skip_history`: published without history options)
//! goes to the live subject only, arrives with offset 0 and leaves the stream alone.

mod common;
use common::{sender_and_receiver, Events};

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use switchboard_core::broker::HistoryOptions;
use switchboard_core::namespace::{NamespaceOptions, Namespaces};
use switchboard_core::{Broker, ChannelEvent, HistoryQuery, PublishOptions};
use switchboard_test_support::{eventually, NatsServer};

type Tags = BTreeMap<String, String>;

fn tags(kind: &str) -> Tags {
    [("kind".to_owned(), kind.to_owned())].into()
}

/// (payload, offset, tags) of the publications received so far, sorted by payload.
fn received(events: &Events) -> Vec<(String, u64, Tags)> {
    let mut got = events.collect(|e| match e {
        ChannelEvent::Publication(p) => Some((
            String::from_utf8_lossy(&p.data).into_owned(),
            p.offset,
            p.tags.clone(),
        )),
        _ => None,
    });
    got.sort();
    got
}

#[tokio::test]
async fn tags_travel_live_and_stored_and_live_only_publications_skip_the_stream() {
    let nats = NatsServer::start();
    let stored = HistoryOptions {
        size: 10,
        ttl: Duration::from_secs(60),
    };
    let namespace = NamespaceOptions {
        history_size: stored.size,
        history_ttl: stored.ttl.as_secs(),
        ..Default::default()
    };
    let namespaces = Namespaces::new(namespace, Vec::new()).unwrap();
    let (sender, receiver, events) = sender_and_receiver(&nats, &namespaces, "room").await;

    let publish = |data: &'static str, history: Option<HistoryOptions>, kind: &str| {
        let options = PublishOptions {
            history,
            tags: tags(kind),
            ..Default::default()
        };
        let sender = sender.clone();
        async move {
            sender
                .publish("room", Bytes::from(data), None, &options)
                .await
                .unwrap()
        }
    };
    let first = publish("a-stored", Some(stored), "one").await;
    let live = publish("b-live-only", None, "two").await;
    let second = publish("c-stored", Some(stored), "three").await;
    assert_eq!(live.offset, 0, "not in the stream: no offset");
    assert!(live.epoch.is_empty());
    assert!(second.offset > first.offset);

    eventually(
        "every publication arrived",
        Duration::from_secs(10),
        async || received(&events).len() == 3,
    )
    .await;
    assert_eq!(
        received(&events),
        vec![
            ("a-stored".to_owned(), first.offset, tags("one")),
            ("b-live-only".to_owned(), 0, tags("two")),
            ("c-stored".to_owned(), second.offset, tags("three")),
        ]
    );

    let history = receiver
        .history("room", &HistoryQuery::default(), stored)
        .await
        .unwrap();
    let kept: Vec<(u64, Tags)> = history
        .publications
        .iter()
        .map(|p| (p.offset, p.tags.clone()))
        .collect();
    assert_eq!(
        kept,
        vec![(first.offset, tags("one")), (second.offset, tags("three"))]
    );
    assert_eq!(history.position.offset, second.offset);
}
