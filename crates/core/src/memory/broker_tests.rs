//! Tests of the in-memory broker.
use super::*;

struct Collect(Mutex<Vec<(String, ChannelEvent)>>);
impl EventSink for Collect {
    fn on_event(&self, channel: &str, event: ChannelEvent) {
        lock(&self.0).push((channel.to_owned(), event));
    }
    fn has_subscribers(&self, _: &str) -> bool {
        true
    }
    fn reset(&self, _: &str) {}
}

fn opts(size: usize, ttl_secs: u64) -> PublishOptions {
    PublishOptions {
        history: Some(history(size, ttl_secs)),
        ..Default::default()
    }
}

fn history(size: usize, ttl_secs: u64) -> HistoryOptions {
    HistoryOptions {
        size,
        ttl: Duration::from_secs(ttl_secs),
    }
}

fn all() -> HistoryQuery {
    HistoryQuery::default()
}

#[tokio::test]
async fn offsets_grow_per_channel_and_events_reach_the_sink_in_order() {
    let broker = MemoryBroker::new(Default::default());
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    broker.set_sink(sink.clone());
    for i in 1..=3u64 {
        let pos = broker
            .publish("a", Bytes::from("1"), None, &opts(10, 60))
            .await
            .unwrap();
        assert_eq!(pos.offset, i);
    }
    let pos = broker
        .publish("b", Bytes::from("1"), None, &opts(10, 60))
        .await
        .unwrap();
    assert_eq!(pos.offset, 1);
    let offsets: Vec<u64> = lock(&sink.0).iter().map(|(_, e)| e.offset()).collect();
    assert_eq!(offsets, vec![1, 2, 3, 1]);
}

#[tokio::test]
async fn recovery_is_complete_or_refused() {
    let broker = MemoryBroker::new(Default::default());
    for _ in 0..5 {
        broker
            .publish("a", Bytes::from("1"), None, &opts(3, 60))
            .await
            .unwrap();
    }
    let top = broker.history("a", &all(), history(3, 60)).await.unwrap();
    assert_eq!(top.position.offset, 5);
    assert_eq!(top.publications.len(), 3);
    let since = |offset| HistoryQuery {
        since: Some(StreamPosition {
            offset,
            epoch: top.position.epoch.clone(),
        }),
        ..Default::default()
    };
    // Offsets 1 and 2 were evicted: from 2 on, 3..5 are all still there.
    let r = broker
        .history("a", &since(2), history(3, 60))
        .await
        .unwrap();
    assert_eq!(
        r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(
        broker.history("a", &since(1), history(3, 60)).await,
        Err(BrokerError::Unrecoverable)
    );
    assert_eq!(
        broker
            .history("a", &since(5), history(3, 60))
            .await
            .unwrap()
            .publications,
        vec![]
    );
    assert_eq!(
        broker.history("a", &since(6), history(3, 60)).await,
        Err(BrokerError::Unrecoverable),
        "an offset from the future is not ours"
    );
    let other_epoch = HistoryQuery {
        since: Some(StreamPosition {
            offset: 4,
            epoch: "other".into(),
        }),
        ..Default::default()
    };
    assert_eq!(
        broker.history("a", &other_epoch, history(3, 60)).await,
        Err(BrokerError::Unrecoverable)
    );
}

#[tokio::test(start_paused = true)]
async fn publications_expire_after_ttl_and_break_recovery() {
    let broker = MemoryBroker::new(Default::default());
    broker
        .publish("a", Bytes::from("1"), None, &opts(10, 5))
        .await
        .unwrap();
    let top = broker
        .history("a", &all(), history(10, 5))
        .await
        .unwrap()
        .position;
    tokio::time::advance(Duration::from_secs(3)).await;
    broker
        .publish("a", Bytes::from("2"), None, &opts(10, 5))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(3)).await;
    let r = broker.history("a", &all(), history(10, 5)).await.unwrap();
    assert_eq!(r.publications.len(), 1, "the first publication expired");
    let from_start = HistoryQuery {
        since: Some(StreamPosition {
            offset: 0,
            epoch: top.epoch.clone(),
        }),
        ..Default::default()
    };
    assert_eq!(
        broker.history("a", &from_start, history(10, 5)).await,
        Err(BrokerError::Unrecoverable)
    );
    let from_first = HistoryQuery {
        since: Some(top),
        ..Default::default()
    };
    assert_eq!(
        broker
            .history("a", &from_first, history(10, 5))
            .await
            .unwrap()
            .publications
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn idle_empty_streams_are_forgotten_and_get_a_new_epoch() {
    let config = MemoryBrokerConfig {
        stream_meta_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let broker = MemoryBroker::new(config);
    broker
        .publish("a", Bytes::from("1"), None, &opts(10, 5))
        .await
        .unwrap();
    let epoch = broker
        .history("a", &all(), history(10, 5))
        .await
        .unwrap()
        .position
        .epoch;
    tokio::time::advance(Duration::from_secs(61)).await;
    broker.sweep();
    assert_eq!(broker.num_streams(), 0);
    let again = broker
        .history("a", &all(), history(10, 5))
        .await
        .unwrap()
        .position;
    assert_ne!(again.epoch, epoch);
    assert_eq!(again.offset, 0);
}

#[tokio::test]
async fn idempotent_publish_is_stored_once() {
    let broker = MemoryBroker::new(Default::default());
    let mut options = opts(10, 60);
    options.idempotency_key = Some("k1".into());
    let a = broker
        .publish("a", Bytes::from("1"), None, &options)
        .await
        .unwrap();
    let b = broker
        .publish("a", Bytes::from("1"), None, &options)
        .await
        .unwrap();
    assert_eq!(a, b);
    let r = broker.history("a", &all(), history(10, 60)).await.unwrap();
    assert_eq!(r.publications.len(), 1);
}

#[tokio::test]
async fn limit_and_reverse() {
    let broker = MemoryBroker::new(Default::default());
    for _ in 0..5 {
        broker
            .publish("a", Bytes::from("1"), None, &opts(10, 60))
            .await
            .unwrap();
    }
    let q = HistoryQuery {
        limit: Some(2),
        reverse: true,
        ..Default::default()
    };
    let r = broker.history("a", &q, history(10, 60)).await.unwrap();
    assert_eq!(
        r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![5, 4]
    );
    let q = HistoryQuery {
        limit: Some(0),
        ..Default::default()
    };
    assert!(broker
        .history("a", &q, history(10, 60))
        .await
        .unwrap()
        .publications
        .is_empty());
}

#[tokio::test]
async fn tags_are_delivered_and_kept_in_history() {
    let broker = MemoryBroker::new(Default::default());
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    broker.set_sink(sink.clone());
    let tags: std::collections::BTreeMap<String, String> =
        [("kind".to_owned(), "note".to_owned())].into();
    let tagged = |history| PublishOptions {
        history,
        tags: tags.clone(),
        ..Default::default()
    };
    broker
        .publish("a", Bytes::from("1"), None, &tagged(Some(history(10, 60))))
        .await
        .unwrap();
    broker
        .publish("a", Bytes::from("2"), None, &tagged(None))
        .await
        .unwrap();
    let delivered: Vec<_> = lock(&sink.0)
        .iter()
        .map(|(_, e)| match e {
            ChannelEvent::Publication(p) => (p.offset, p.tags.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(delivered, vec![(1, tags.clone()), (0, tags.clone())]);
    let stored = broker.history("a", &all(), history(10, 60)).await.unwrap();
    assert_eq!(
        stored.publications.len(),
        1,
        "the live-only one is not kept"
    );
    assert_eq!(stored.publications[0].tags, tags);
}
