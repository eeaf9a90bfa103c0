//! The presence buckets against a real nats-server: per-user join and leave,
//! counts, pages, and the sweep of members nobody refreshes.

mod common;
use common::Events;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use switchboard_broker_nats::{sweeper, NatsBroker, NatsConfig, PresenceBucket};
use switchboard_core::namespace::Namespaces;
use switchboard_core::{Broker, ChannelEvent, ClientInfo};
use switchboard_test_support::{eventually_ok, eventually_some, NatsServer};

async fn bucket(url: &str, ttl: Duration) -> Arc<PresenceBucket> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    Arc::new(PresenceBucket::open(&js, "sb", ttl, 1).await.unwrap())
}

fn member(user: usize, connection: usize) -> ClientInfo {
    ClientInfo {
        user: format!("user-{user}"),
        client: format!("conn-{user}-{connection}"),
        ..Default::default()
    }
}

const USERS: usize = 25;
const CONNECTIONS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_joins_with_its_first_connection_and_leaves_with_its_last() {
    let nats = NatsServer::start();
    // Two replicas of the store, as two presence service replicas would be.
    let replicas = [
        bucket(&nats.url(), Duration::from_secs(30)).await,
        bucket(&nats.url(), Duration::from_secs(30)).await,
    ];
    let every: Vec<ClientInfo> = (0..USERS)
        .flat_map(|u| (0..CONNECTIONS).map(move |c| member(u, c)))
        .collect();

    // Every connection joins at once, half through each replica.
    let joins = every.iter().enumerate().map(|(i, m)| {
        let b = replicas[i % 2].clone();
        let m = m.clone();
        async move { (m.user.clone(), b.join("room", m).await.unwrap()) }
    });
    let mut joined: HashMap<String, usize> = HashMap::new();
    for (user, first) in futures::future::join_all(joins).await {
        *joined.entry(user).or_default() += usize::from(first);
    }
    assert_eq!(joined.len(), USERS);
    assert!(
        joined.values().all(|&n| n == 1),
        "exactly one join per user: {joined:?}"
    );
    let stats = replicas[1].stats("room").await.unwrap();
    assert_eq!(
        (stats.num_clients, stats.num_users),
        ((USERS * CONNECTIONS) as u32, USERS as u32)
    );
    assert_eq!(
        replicas[0].stats("other-room").await.unwrap(),
        Default::default()
    );

    // Pages of 7 cover every member once.
    let mut listed = HashSet::new();
    let mut start = 0;
    for _ in 0..100 {
        let page = replicas[0].page("room", start, 7).await.unwrap();
        assert!(page.members.len() <= 7);
        for m in page.members {
            assert!(listed.insert(m.client.clone()), "{} twice", m.client);
        }
        match page.next {
            Some(next) => start = next,
            None => break,
        }
    }
    assert_eq!(listed.len(), USERS * CONNECTIONS);
    assert_eq!(
        replicas[1].members("room").await.unwrap().len(),
        listed.len()
    );

    // Every connection leaves at once: one leave per user, whichever was last.
    let leaves = every.iter().enumerate().map(|(i, m)| {
        let b = replicas[(i + 1) % 2].clone();
        let m = m.clone();
        async move { (m.user.clone(), b.leave("room", &m).await.unwrap()) }
    });
    let mut left: HashMap<String, usize> = HashMap::new();
    for (user, last) in futures::future::join_all(leaves).await {
        *left.entry(user).or_default() += usize::from(last);
    }
    assert!(
        left.values().all(|&n| n == 1),
        "exactly one leave per user: {left:?}"
    );
    assert!(!replicas[0].leave("room", &member(0, 0)).await.unwrap());
    let stats = replicas[0].stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (0, 0));
    assert!(replicas[0]
        .page("room", 0, 10)
        .await
        .unwrap()
        .members
        .is_empty());

    // A user who comes back joins again.
    assert!(replicas[0].join("room", member(3, 9)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_connections_join_and_leave_one_by_one_and_count_as_one_user() {
    let nats = NatsServer::start();
    let b = bucket(&nats.url(), Duration::from_secs(30)).await;
    let anonymous = |c: usize| ClientInfo {
        user: String::new(),
        client: format!("anon-{c}"),
        ..Default::default()
    };
    for c in 0..5 {
        assert!(
            b.join("lobby", anonymous(c)).await.unwrap(),
            "anon-{c} joins"
        );
    }
    b.join("lobby", member(1, 0)).await.unwrap();
    let stats = b.stats("lobby").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (6, 2));
    assert!(
        b.leave("lobby", &anonymous(0)).await.unwrap(),
        "anon-0 leaves"
    );
    assert!(
        !b.leave("lobby", &anonymous(0)).await.unwrap(),
        "leaving twice is one leave"
    );
    for c in 1..5 {
        assert!(b.leave("lobby", &anonymous(c)).await.unwrap());
    }
    let stats = b.stats("lobby").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));
}

/// Every read that decides a compare-and-set or a "not there" goes to the
/// stream's leader: a replica catching up after a restart answers a direct get
/// (`DIRECT.GET`) with an older value or none. A second connection sees every
/// direct get the first one sends; two made on purpose bracket the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reads_its_buckets_from_the_stream_leader_not_by_direct_get() {
    use futures::StreamExt;
    let nats = NatsServer::start();
    let probe = async_nats::connect(nats.url()).await.unwrap();
    let mut direct_gets = probe.subscribe("$JS.API.DIRECT.GET.>").await.unwrap();
    probe.flush().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let ttl = Duration::from_secs(1);
    let b = Arc::new(PresenceBucket::open(&js, "sb", ttl, 1).await.unwrap());
    // The key-value client's own read is a direct get; the probe sees it.
    let kv = js.get_key_value("sb-presence").await.unwrap();
    let mut control = async |name: &str| {
        assert!(kv.entry(name).await.unwrap().is_none());
        client.flush().await.unwrap();
        let seen = Duration::from_secs(10);
        let mut subjects = Vec::new();
        loop {
            let message = tokio::time::timeout(seen, direct_gets.next())
                .await
                .unwrap_or_else(|_| panic!("the probe saw no direct get of {name}"))
                .unwrap();
            let subject = message.subject.to_string();
            if subject.ends_with(name) {
                return subjects;
            }
            subjects.push(subject);
        }
    };
    assert_eq!(control("before").await, Vec::<String>::new());

    let (one, two) = (member(1, 1), member(1, 2));
    let anonymous = ClientInfo {
        client: "anonymous-1".into(),
        ..Default::default()
    };
    assert!(b.join("room", one.clone()).await.unwrap());
    assert!(!b.join("room", two.clone()).await.unwrap());
    assert!(b.join("room", anonymous.clone()).await.unwrap());
    b.refresh("room", one.clone()).await.unwrap();
    assert!(!b.rejoin("room", one.clone()).await.unwrap());
    assert!(!b.leave("room", &two).await.unwrap());
    assert!(b.leave("room", &anonymous).await.unwrap());
    let stats = b.stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));
    assert_eq!(b.members("room").await.unwrap().len(), 1);
    // Overdue, then refreshed before the sweep's delete: the sweep reads again.
    let found = overdue(&b, &one.client).await;
    b.refresh("room", one.clone()).await.unwrap();
    assert!(!b.expire(found).await.unwrap());
    // Overdue for good: expired, its user with it.
    let found = overdue(&b, &one.client).await;
    assert!(b.expire(found).await.unwrap());
    let stats = b.stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (0, 0));
    // Two sweepers contend for the lease; one of them expires the next member.
    b.join("room", member(2, 1)).await.unwrap();
    let other = Arc::new(PresenceBucket::open(&js, "sb", ttl, 1).await.unwrap());
    let sweepers = [("one", &b), ("two", &other)].map(|(name, bucket)| {
        let sweeper = sweeper::run_while(Arc::downgrade(bucket), name.to_owned());
        tokio::spawn(sweeper)
    });
    eventually_ok("the sweep", Duration::from_secs(20), async || {
        match b.stats("room").await.unwrap() {
            stats if stats.num_clients == 0 => Ok(()),
            stats => Err(format!("{stats:?}")),
        }
    })
    .await;
    sweepers.iter().for_each(|s| s.abort());

    assert_eq!(
        control("after").await,
        Vec::<String>::new(),
        "presence read its buckets by direct get"
    );
}

/// Records the presence events a broker delivers.
/// Each leave received so far: (client, user_changed).
fn leaves(events: &Events) -> Vec<(String, bool)> {
    events.collect(|e| match e {
        ChannelEvent::Leave(l) => Some((l.info.client.clone(), l.user_changed)),
        _ => None,
    })
}

/// Sweeps with both replicas until `client` is found overdue and expired;
/// returns how many of the two expired it.
async fn sweep_until_expired(
    replicas: &[Arc<PresenceBucket>],
    client: &str,
    keep: &ClientInfo,
) -> usize {
    let patience = Duration::from_secs(20);
    let found = eventually_some(format!("{client} stale"), patience, async || {
        // The connection that stays is refreshed, as its live gateway would.
        replicas[0].refresh("room", keep.clone()).await.unwrap();
        let found: Vec<_> = futures::future::join_all(replicas.iter().map(|r| r.stale(100)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        found
            .iter()
            .all(|f| f.iter().any(|m| m.info.client == client))
            .then_some(found)
    })
    .await;
    let mut expired = 0;
    for (replica, stale) in replicas.iter().zip(found) {
        for m in stale {
            assert_eq!(
                m.info.client, client,
                "only the abandoned member is overdue"
            );
            expired += usize::from(replica.expire(m).await.unwrap());
        }
    }
    expired
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_member_expires_once_and_its_user_leaves_with_the_last() {
    let nats = NatsServer::start();
    let ttl = Duration::from_secs(1);
    let replicas = [
        bucket(&nats.url(), ttl).await,
        bucket(&nats.url(), ttl).await,
    ];
    let events = Arc::new(Events::default());
    let config = NatsConfig {
        urls: vec![nats.url()],
        ..Default::default()
    };
    let broker = NatsBroker::connect(config, &Namespaces::default())
        .await
        .unwrap();
    broker.set_sink(events.clone());
    broker.subscribe("room").await.unwrap();

    let (stays, abandoned) = (member(1, 1), member(1, 2));
    assert!(replicas[0].join("room", stays.clone()).await.unwrap());
    assert!(!replicas[1].join("room", abandoned.clone()).await.unwrap());

    // Two sweepers find the abandoned member; one of them expires it. The user
    // still has a connection: the leave is not the user's.
    assert_eq!(
        sweep_until_expired(&replicas, &abandoned.client, &stays).await,
        1
    );
    let stats = replicas[0].stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));

    // Its last connection abandoned too: now the user leaves.
    let other = member(2, 1);
    replicas[0].join("room", other.clone()).await.unwrap();
    assert_eq!(
        sweep_until_expired(&replicas, &stays.client, &other).await,
        1
    );
    let stats = replicas[0].stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));

    eventually_ok("two leaves", Duration::from_secs(10), async || {
        let leaves = leaves(&events);
        if leaves.len() >= 2 {
            Ok(())
        } else {
            Err(format!("{leaves:?}"))
        }
    })
    .await;
    assert_eq!(
        leaves(&events),
        vec![
            (abandoned.client.clone(), false),
            (stays.client.clone(), true)
        ]
    );
}

/// Two replicas over one nats-server (TTL 1 s) and a broker subscribed to
/// "room" that records what it delivers.
async fn two_replicas_and_a_listener() -> (
    NatsServer,
    [Arc<PresenceBucket>; 2],
    NatsBroker,
    Arc<Events>,
) {
    let nats = NatsServer::start();
    let ttl = Duration::from_secs(1);
    let replicas = [
        bucket(&nats.url(), ttl).await,
        bucket(&nats.url(), ttl).await,
    ];
    let events = Arc::new(Events::default());
    let config = NatsConfig {
        urls: vec![nats.url()],
        ..Default::default()
    };
    let broker = NatsBroker::connect(config, &Namespaces::default())
        .await
        .unwrap();
    broker.set_sink(events.clone());
    broker.subscribe("room").await.unwrap();
    let broker = Arc::try_unwrap(broker).unwrap_or_else(|_| panic!("one owner"));
    (nats, replicas, broker, events)
}

/// Waits until `replica` finds `client` overdue and returns it.
async fn overdue(replica: &PresenceBucket, client: &str) -> switchboard_broker_nats::StaleMember {
    eventually_some(
        format!("{client} overdue"),
        Duration::from_secs(20),
        async || {
            let stale = replica.stale(100).await.unwrap();
            stale.into_iter().find(|m| m.info.client == client)
        },
    )
    .await
}

/// Joins and departs `marker` through `replica` and waits for its leave: on the
/// same connection, it arrives after everything `replica` announced before.
async fn after_marker(replica: &PresenceBucket, events: &Events, marker: &ClientInfo) {
    replica.join("room", marker.clone()).await.unwrap();
    replica.depart("room", marker.clone()).await.unwrap();
    marker_seen(events, marker).await;
}

/// Waits until an event of `marker` was received.
async fn marker_seen(events: &Events, marker: &ClientInfo) {
    eventually_ok("the marker's leave", Duration::from_secs(10), async || {
        let seen = changes(events);
        if seen.iter().any(|(_, c, _)| *c == marker.client) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
}

/// Every join and leave received so far: ("join"/"leave", client, user_changed).
fn changes(events: &Events) -> Vec<(&'static str, String, bool)> {
    events.collect(|e| match e {
        ChannelEvent::Join(j) => Some(("join", j.info.client.clone(), j.user_changed)),
        ChannelEvent::Leave(l) => Some(("leave", l.info.client.clone(), l.user_changed)),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweeper_killed_between_its_leave_and_its_delete_leaves_no_ghost_and_no_second_leave() {
    let (_nats, replicas, _broker, events) = two_replicas_and_a_listener().await;
    let abandoned = member(1, 1);
    assert!(replicas[0].join("room", abandoned.clone()).await.unwrap());

    // The first sweeper announces the departure and dies before its delete.
    let found = overdue(&replicas[0], &abandoned.client).await;
    replicas[0].announce_departure(&found).await.unwrap();
    // The member is still there and overdue: the sweeper that takes over expires it.
    let again = overdue(&replicas[1], &abandoned.client).await;
    assert!(replicas[1].expire(again).await.unwrap());
    let stats = replicas[1].stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (0, 0));

    // A marker after the second announcement, on the same connection (so it
    // arrives after it): another member departs through replica 1.
    let marker = member(2, 1);
    after_marker(&replicas[1], &events, &marker).await;
    assert_eq!(
        changes(&events),
        vec![
            ("leave", abandoned.client.clone(), true),
            ("leave", marker.client.clone(), true)
        ],
        "one leave for the abandoned member, with its user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_refreshed_while_it_expires_is_left_in_place_and_joins_again() {
    let (_nats, replicas, _broker, events) = two_replicas_and_a_listener().await;
    let late = member(3, 1);
    assert!(replicas[0].join("room", late.clone()).await.unwrap());
    let found = overdue(&replicas[0], &late.client).await;
    // Its gateway was frozen and continues: the refresh lands before the delete.
    replicas[1].refresh("room", late.clone()).await.unwrap();
    assert!(!replicas[0].expire(found).await.unwrap());

    let stats = replicas[0].stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));
    eventually_ok(
        "the leave, then the join",
        Duration::from_secs(10),
        async || {
            let seen = changes(&events);
            let want = vec![
                ("leave", late.client.clone(), true),
                ("join", late.client.clone(), true),
            ];
            if seen == want {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_expired_while_its_gateway_was_away_joins_again_on_its_lapsed_refresh() {
    let (_nats, replicas, _broker, events) = two_replicas_and_a_listener().await;
    let (away, stays) = (member(4, 1), member(5, 1));
    assert!(replicas[0].join("room", away.clone()).await.unwrap());
    let found = overdue(&replicas[1], &away.client).await;
    assert!(replicas[1].expire(found).await.unwrap());
    assert!(replicas[0].join("room", stays.clone()).await.unwrap());

    // Its gateway continues: the lapsed round re-asserts both of its members.
    assert!(replicas[0].rejoin("room", away.clone()).await.unwrap());
    assert!(
        !replicas[0].rejoin("room", stays.clone()).await.unwrap(),
        "still there"
    );
    let stats = replicas[0].stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));
    // A marker on the same connection, after the rejoins.
    let marker = member(6, 1);
    after_marker(&replicas[0], &events, &marker).await;
    assert_eq!(
        changes(&events),
        vec![
            ("leave", away.client.clone(), true),
            ("join", away.client.clone(), true),
            ("leave", marker.client.clone(), true)
        ],
        "the expired member's leave, then its join; nothing for the one still there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_its_gateway_ends_after_the_sweep_announced_it_leaves_once() {
    let (_nats, replicas, broker, events) = two_replicas_and_a_listener().await;
    let frozen = member(4, 1);
    assert!(replicas[0].join("room", frozen.clone()).await.unwrap());
    // Its gateway is frozen past the TTL: the sweep announces the leave.
    let found = overdue(&replicas[0], &frozen.client).await;
    assert!(replicas[0].expire(found).await.unwrap());
    // The gateway continues and the connection ends before any refresh: it leaves
    // (gone already, so not its user's last) and announces a leave of its own.
    assert!(!replicas[1].leave("room", &frozen).await.unwrap());
    let own = switchboard_core::PresenceChange {
        info: frozen.clone(),
        user_changed: false,
    };
    broker.publish_leave("room", own).await.unwrap();
    // A marker behind it on the same connection.
    let marker = member(5, 1);
    let marker_leave = switchboard_core::PresenceChange {
        info: marker.clone(),
        user_changed: true,
    };
    broker.publish_leave("room", marker_leave).await.unwrap();
    marker_seen(&events, &marker).await;
    assert_eq!(
        changes(&events),
        vec![
            ("leave", frozen.client.clone(), true),
            ("leave", marker.client.clone(), true)
        ],
        "one leave for the connection"
    );
    // Should it join again (its gateway's lapsed refresh), its next leave counts.
    let rejoin = switchboard_core::PresenceChange {
        info: frozen.clone(),
        user_changed: true,
    };
    broker.publish_join("room", rejoin.clone()).await.unwrap();
    broker.publish_leave("room", rejoin).await.unwrap();
    eventually_ok(
        "the leave after the join",
        Duration::from_secs(10),
        async || {
            let seen = changes(&events);
            if seen.len() == 4 && seen[3] == ("leave", frozen.client.clone(), true) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
}

/// Waits until the listener delivered a leave of `client`.
async fn leave_seen(events: &Events, client: &str) {
    eventually_ok("the sweeper's leave", Duration::from_secs(10), async || {
        let seen = changes(events);
        if seen
            .iter()
            .any(|(kind, c, _)| *kind == "leave" && c == client)
        {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_leaves_while_its_leave_is_undone_stays_gone() {
    let (_nats, replicas, _broker, events) = two_replicas_and_a_listener().await;
    let leaving = member(7, 1);
    assert!(replicas[0].join("room", leaving.clone()).await.unwrap());
    let found = overdue(&replicas[0], &leaving.client).await;
    replicas[0].announce_departure(&found).await.unwrap();
    // Its gateway was alive after all: a refresh, which the sweeper saw, then the
    // connection ends before the sweeper puts it back.
    replicas[1].refresh("room", leaving.clone()).await.unwrap();
    replicas[1].leave("room", &leaving).await.unwrap();
    replicas[0]
        .undo_leave(&mut found.into_rejoin())
        .await
        .unwrap();

    let stats = replicas[0].stats("room").await.unwrap();
    assert_eq!(
        (stats.num_clients, stats.num_users),
        (0, 0),
        "no connection put back in its user's key"
    );
    let marker = member(8, 1);
    after_marker(&replicas[0], &events, &marker).await;
    assert_eq!(
        changes(&events),
        vec![
            ("leave", leaving.client.clone(), true),
            ("leave", marker.client.clone(), true)
        ],
        "the sweeper's leave, and no join after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweepers_join_after_the_connections_own_leave_is_not_delivered() {
    let (_nats, replicas, broker, events) = two_replicas_and_a_listener().await;
    let leaving = member(9, 1);
    assert!(replicas[0].join("room", leaving.clone()).await.unwrap());
    let found = overdue(&replicas[0], &leaving.client).await;
    replicas[0].announce_departure(&found).await.unwrap();
    leave_seen(&events, &leaving.client).await;
    // Its gateway was alive: a refresh, then its connection ends. Its own leave
    // arrives before the sweeper's join, which read the member before the delete.
    replicas[1].refresh("room", leaving.clone()).await.unwrap();
    let own = switchboard_core::PresenceChange {
        info: leaving.clone(),
        user_changed: false,
    };
    broker.publish_leave("room", own).await.unwrap();
    let first = member(10, 1);
    let first_leave = switchboard_core::PresenceChange {
        info: first.clone(),
        user_changed: true,
    };
    broker.publish_leave("room", first_leave).await.unwrap();
    marker_seen(&events, &first).await;
    replicas[0]
        .undo_leave(&mut found.into_rejoin())
        .await
        .unwrap();
    replicas[1].leave("room", &leaving).await.unwrap();

    let stats = replicas[0].stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (0, 0));
    let last = member(11, 1);
    after_marker(&replicas[0], &events, &last).await;
    assert_eq!(
        changes(&events),
        vec![
            ("leave", leaving.client.clone(), true),
            ("leave", first.client.clone(), true),
            ("leave", last.client.clone(), true)
        ],
        "one leave for the connection and no join after it"
    );
}
