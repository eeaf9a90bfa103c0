//! The webhook state and queue on a real nats-server: compare-and-set by
//! revision, a job to one taker at a time, handed out again after a negative
//! acknowledgement, dropped when queued twice, and the decisions of the core's
//! `Hooks` over them as two gateways race.

mod common;

use std::time::Duration;

use bytes::Bytes;
use switchboard_core::hooks::{HookEvent, Hooks, Job};
use switchboard_core::namespace::Namespaces;
use switchboard_test_support::NatsServer;

const PATIENCE: Duration = Duration::from_secs(10);

async fn hooks(nats: &NatsServer) -> Hooks {
    let broker = common::broker(nats, &Namespaces::default()).await;
    broker.hooks().await.expect("webhook bucket and queue")
}

#[tokio::test]
async fn keys_change_only_from_the_revision_they_were_read_at() {
    let nats = NatsServer::start();
    let state = hooks(&nats).await.state;
    let first = state.create("k", Bytes::from("a")).await.unwrap().unwrap();
    assert_eq!(state.create("k", Bytes::from("b")).await.unwrap(), None);
    let second = state
        .update("k", Bytes::from("c"), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.update("k", Bytes::from("d"), first).await.unwrap(),
        None
    );
    assert_eq!(
        state.get("k").await.unwrap(),
        Some((Bytes::from("c"), second))
    );
    assert!(!state.delete("k", first).await.unwrap());
    assert!(state.delete("k", second).await.unwrap());
    assert_eq!(state.get("k").await.unwrap(), None);
    // A deleted key can be created again.
    assert!(state.create("k", Bytes::from("e")).await.unwrap().is_some());
    assert_eq!(state.keys("k").await.unwrap(), vec!["k".to_owned()]);
}

#[tokio::test]
async fn a_job_goes_to_one_taker_comes_back_when_refused_and_is_queued_once() {
    let nats = NatsServer::start();
    let one = hooks(&nats).await;
    let other = hooks(&nats).await;
    let job = Job::new("c", HookEvent::ChannelOccupied);
    one.queue.push(&job).await.unwrap();
    one.queue.push(&job).await.unwrap();
    let taken = tokio::time::timeout(PATIENCE, other.queue.take())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.job(), &job);
    assert_eq!(taken.deliveries(), 1);
    taken.again(Duration::from_millis(100)).await;
    // Back to whichever taker is waiting.
    let either = async {
        tokio::select! {
            t = one.queue.take() => t,
            t = other.queue.take() => t,
        }
    };
    let taken = tokio::time::timeout(PATIENCE, either)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.job(), &job);
    assert_eq!(taken.deliveries(), 2);
    taken.done().await;
    assert_eq!(
        one.queue.depth().await.unwrap(),
        0,
        "the repeat was dropped"
    );
}

#[tokio::test]
async fn two_gateways_racing_on_one_channel_occupy_it_once_and_vacate_it_once() {
    let nats = NatsServer::start();
    let a = hooks(&nats).await;
    let b = hooks(&nats).await;
    for round in 0..20 {
        let channel = format!("race-{round}");
        let (x, y) = tokio::join!(a.occupy(&channel, "a"), b.occupy(&channel, "b"));
        assert_eq!(
            [x.unwrap(), y.unwrap()].iter().filter(|o| **o).count(),
            1,
            "{channel}"
        );
        let (x, y) = tokio::join!(a.vacate(&channel, "a"), b.vacate(&channel, "b"));
        x.unwrap();
        y.unwrap();
        assert!(!a.occupied(&channel).await.unwrap());
    }
    let mut vacated = 0;
    while a.queue.depth().await.unwrap() > 0 {
        let taken = tokio::time::timeout(PATIENCE, a.queue.take())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.job().event, HookEvent::ChannelVacated);
        assert!(a.claim(taken.job().claim.as_ref().unwrap()).await.unwrap());
        vacated += 1;
        taken.done().await;
    }
    assert_eq!(vacated, 20);
}
