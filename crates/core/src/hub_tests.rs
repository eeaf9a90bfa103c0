//! Tests of the hub: pending subscribers, shared encodings, exclusion, join/leave wishes.
use super::*;
use crate::queue::Batch;
use crate::types::Publication;
use crate::types::{ClientInfo, PresenceChange};

struct Plain;
impl PushEncoder for Plain {
    fn encode(&self, _: &str, event: &ChannelEvent) -> Result<Bytes, Disconnect> {
        match event {
            ChannelEvent::Publication(p) => Ok(p.data.clone()),
            _ => Err(Disconnect::INAPPROPRIATE_PROTOCOL),
        }
    }
}

/// A hub with the one format of these tests.
fn plain_hub() -> (Hub, FormatId) {
    let hub = Hub::new();
    let format = hub.register(Arc::new(Plain));
    (hub, format)
}

fn publication(offset: u64, data: &'static str) -> ChannelEvent {
    ChannelEvent::Publication(Publication {
        offset,
        data: Bytes::from_static(data.as_bytes()),
        ..Default::default()
    })
}

fn drain(q: &Outbound) -> Vec<String> {
    let mut out = Vec::new();
    q.try_batch(&mut out);
    out.iter()
        .map(|r| String::from_utf8(r.data.to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn pending_subscriber_skips_what_the_reply_covered() {
    let (hub, format) = plain_hub();
    let q = Arc::new(Outbound::new(1 << 20));
    let sub = Subscriber::pending("c1".into(), format, q.clone(), true);
    assert!(hub.add("ch", sub.clone()));
    hub.broadcast("ch", &publication(1, "a"));
    hub.broadcast("ch", &publication(2, "b"));
    assert!(drain(&q).is_empty(), "held back until live");
    assert_eq!(sub.go_live(1), 1);
    hub.broadcast("ch", &publication(3, "c"));
    assert_eq!(drain(&q), vec!["b", "c"]);
}

#[tokio::test]
async fn encodes_once_and_shares_bytes() {
    let (hub, format) = plain_hub();
    let queues: Vec<_> = (0..3).map(|_| Arc::new(Outbound::new(1 << 20))).collect();
    for (i, q) in queues.iter().enumerate() {
        let sub = Subscriber::pending(format!("c{i}").into(), format, q.clone(), true);
        hub.add("ch", sub.clone());
        sub.go_live(0);
    }
    assert_eq!(hub.broadcast("ch", &publication(1, "x")), 3);
    let mut a = Vec::new();
    let mut b = Vec::new();
    queues[0].try_batch(&mut a);
    queues[1].try_batch(&mut b);
    assert_eq!(a[0].data.as_ptr(), b[0].data.as_ptr());
}

#[tokio::test]
async fn unencodable_event_closes_the_subscriber() {
    let (hub, format) = plain_hub();
    let q = Arc::new(Outbound::new(1 << 20));
    let sub = Subscriber::pending("c1".into(), format, q.clone(), true);
    hub.add("ch", sub.clone());
    sub.go_live(0);
    hub.broadcast("ch", &ChannelEvent::Join(Default::default()));
    let mut out = Vec::new();
    match q.try_batch(&mut out).expect("a close") {
        Batch::Close(d) => assert_eq!(d, Disconnect::INAPPROPRIATE_PROTOCOL),
        other => panic!("expected close, got {other:?}"),
    }
}

#[tokio::test]
async fn join_and_leave_reach_only_subscribers_that_asked() {
    let (hub, format) = plain_hub();
    let asked = Arc::new(Outbound::new(1 << 20));
    let quiet = Arc::new(Outbound::new(1 << 20));
    let a = Subscriber::pending("a".into(), format, asked.clone(), true);
    let b = Subscriber::pending("b".into(), format, quiet.clone(), false);
    hub.add("ch", a.clone());
    hub.add("ch", b.clone());
    a.go_live(0);
    b.go_live(0);
    // Plain refuses to encode joins: the one that asked is closed for it.
    assert_eq!(
        hub.broadcast("ch", &ChannelEvent::Join(Default::default())),
        0
    );
    assert!(asked.is_closed());
    assert!(!quiet.is_closed());
}

#[test]
fn per_user_subscribers_see_only_a_users_first_join_and_last_leave() {
    let change = |user_changed| PresenceChange {
        info: Default::default(),
        user_changed,
    };
    let per_user = JoinLeave::PerUser;
    assert!(per_user.wants(&ChannelEvent::Join(change(true)), "c"));
    assert!(!per_user.wants(&ChannelEvent::Join(change(false)), "c"));
    assert!(per_user.wants(&ChannelEvent::Leave(change(true)), "c"));
    assert!(!per_user.wants(&ChannelEvent::Leave(change(false)), "c"));
    assert!(JoinLeave::EveryConnection.wants(&ChannelEvent::Leave(change(false)), "c"));
    assert!(!JoinLeave::None.wants(&ChannelEvent::Leave(change(true)), "c"));
    assert!(per_user.wants(&publication(1, "x"), "c"));
}

#[test]
fn to_others_subscribers_never_see_their_own_join() {
    let join = |client: &str| {
        ChannelEvent::Join(PresenceChange {
            info: ClientInfo {
                client: client.into(),
                ..Default::default()
            },
            user_changed: true,
        })
    };
    let others = JoinLeave::PerUserToOthers;
    assert!(!others.wants(&join("me"), "me"));
    assert!(others.wants(&join("someone"), "me"));
    assert!(JoinLeave::PerUser.wants(&join("me"), "me"));
    let not_first = ChannelEvent::Join(PresenceChange {
        info: Default::default(),
        user_changed: false,
    });
    assert!(!others.wants(&not_first, "me"));
}

#[tokio::test]
async fn a_publication_can_skip_one_client() {
    let (hub, format) = plain_hub();
    let queues: Vec<_> = (0..3).map(|_| Arc::new(Outbound::new(1 << 20))).collect();
    for (i, q) in queues.iter().enumerate() {
        let sub = Subscriber::pending(format!("c{i}").into(), format, q.clone(), false);
        hub.add("ch", sub.clone());
        sub.go_live(0);
    }
    let event = ChannelEvent::Publication(Publication {
        offset: 1,
        data: Bytes::from_static(b"x"),
        exclude_client: Some("c1".into()),
        ..Default::default()
    });
    assert_eq!(hub.broadcast("ch", &event), 2);
    let got: Vec<usize> = queues.iter().map(|q| drain(q).len()).collect();
    assert_eq!(got, vec![1, 0, 1]);
}

#[test]
fn formats_are_told_apart_by_the_id_register_returns() {
    let hub = Hub::new();
    let a = hub.register(Arc::new(Plain));
    let b = hub.register(Arc::new(Plain));
    assert_ne!(a, b);
}

#[test]
fn first_and_last_subscriber() {
    let (hub, format) = plain_hub();
    let q = Arc::new(Outbound::new(100));
    assert!(hub.add(
        "ch",
        Subscriber::pending("a".into(), format, q.clone(), true)
    ));
    assert!(!hub.add(
        "ch",
        Subscriber::pending("b".into(), format, q.clone(), true)
    ));
    assert_eq!(hub.num_subscribers("ch"), 2);
    assert!(!hub.remove("ch", "a"));
    assert!(hub.remove("ch", "b"));
    assert!(hub.channels().is_empty());
}

#[tokio::test]
async fn unsubscribes_in_any_order_leave_exactly_the_others_subscribed() {
    let (hub, format) = plain_hub();
    let queues: Vec<Arc<Outbound>> = (0..100).map(|_| Arc::new(Outbound::new(1000))).collect();
    for (i, q) in queues.iter().enumerate() {
        let sub = Subscriber::pending(format!("c{i}").into(), format, q.clone(), false);
        hub.add("ch", sub.clone());
        sub.go_live(0);
    }
    // Every third, from the end and the middle, so that moved entries are removed too.
    let gone: Vec<usize> = (0..100).rev().filter(|i| i % 3 == 0).collect();
    for i in &gone {
        hub.remove("ch", &format!("c{i}"));
    }
    hub.remove("ch", "never-subscribed");
    assert_eq!(hub.num_subscribers("ch"), 100 - gone.len());
    assert_eq!(hub.broadcast("ch", &publication(1, "x")), 100 - gone.len());
    for (i, q) in queues.iter().enumerate() {
        let mut out = Vec::new();
        let got = q.try_batch(&mut out).is_some();
        assert_eq!(got, !gone.contains(&i), "c{i}");
    }
    // The same client subscribing again replaces its subscriber.
    let q = Arc::new(Outbound::new(1000));
    let again = Subscriber::pending("c1".into(), format, q.clone(), false);
    assert!(!hub.add("ch", again.clone()));
    again.go_live(0);
    assert_eq!(hub.num_subscribers("ch"), 100 - gone.len());
    hub.broadcast("ch", &publication(2, "y"));
    assert_eq!(drain(&q), vec!["y".to_owned()]);
}
