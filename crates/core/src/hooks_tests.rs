use super::*;
use crate::memory::{MemoryHookQueue, MemoryHookState};

fn hooks() -> Hooks {
    Hooks::new(
        Arc::new(MemoryHookState::new()),
        Arc::new(MemoryHookQueue::new()),
    )
}

/// Every job queued now, settled as done.
async fn drain(hooks: &Hooks) -> Vec<Job> {
    let mut jobs = Vec::new();
    while hooks.queue.depth().await.unwrap() > 0 {
        let taken = hooks.queue.take().await.unwrap();
        jobs.push(taken.job().clone());
        taken.done().await;
    }
    jobs
}

#[tokio::test]
async fn the_first_node_occupies_and_the_last_one_vacates_after_the_delay() {
    let h = hooks();
    assert!(h.occupy("c", "n1").await.unwrap());
    assert!(!h.occupy("c", "n2").await.unwrap());
    assert!(!h.occupy("c", "n1").await.unwrap());
    h.vacate("c", "n1").await.unwrap();
    assert!(drain(&h).await.is_empty());
    assert!(h.occupied("c").await.unwrap());
    h.vacate("c", "n2").await.unwrap();
    assert!(!h.occupied("c").await.unwrap());
    let jobs = drain(&h).await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.event, HookEvent::ChannelVacated);
    assert_eq!(job.channel, "c");
    assert!(job.due_ms >= job.time_ms + 3000);
    // Nothing came back: the claim stands, and the channel can be occupied again.
    assert!(h.claim(job.claim.as_ref().unwrap()).await.unwrap());
    assert!(h.occupy("c", "n3").await.unwrap());
}

#[tokio::test]
async fn a_channel_occupied_again_within_the_delay_sends_neither_event() {
    let h = hooks();
    assert!(h.occupy("c", "n1").await.unwrap());
    h.vacate("c", "n1").await.unwrap();
    assert!(
        !h.occupy("c", "n2").await.unwrap(),
        "the return is no new occupation"
    );
    let jobs = drain(&h).await;
    assert!(!h.claim(jobs[0].claim.as_ref().unwrap()).await.unwrap());
    // Its vacancy later is a new one, with a claim that stands.
    h.vacate("c", "n2").await.unwrap();
    let jobs = drain(&h).await;
    assert!(h.claim(jobs[0].claim.as_ref().unwrap()).await.unwrap());
}

#[tokio::test]
async fn a_user_back_within_the_delay_is_neither_removed_nor_added() {
    let h = hooks();
    assert!(h.member_joined("c", "u").await.unwrap());
    h.member_left("c", "u", None).await.unwrap();
    assert!(!h.member_joined("c", "u").await.unwrap());
    let jobs = drain(&h).await;
    assert_eq!(
        jobs[0].event,
        HookEvent::MemberRemoved {
            user_id: "u".into()
        }
    );
    assert!(!h.claim(jobs[0].claim.as_ref().unwrap()).await.unwrap());
    h.member_left("c", "u", None).await.unwrap();
    let jobs = drain(&h).await;
    assert!(h.claim(jobs[0].claim.as_ref().unwrap()).await.unwrap());
    assert!(h.member_joined("c", "u").await.unwrap());
}

#[tokio::test]
async fn one_departure_reported_twice_is_queued_once() {
    let h = hooks();
    h.member_left("c", "u", Some("d1")).await.unwrap();
    h.member_left("c", "u", Some("d1")).await.unwrap();
    let jobs = drain(&h).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, "departure.d1");
    // A second removal while one is pending replaces it: only the last claim stands.
    h.member_left("c", "v", None).await.unwrap();
    h.member_left("c", "v", None).await.unwrap();
    let jobs = drain(&h).await;
    assert_eq!(jobs.len(), 2);
    assert!(!h.claim(jobs[0].claim.as_ref().unwrap()).await.unwrap());
    assert!(h.claim(jobs[1].claim.as_ref().unwrap()).await.unwrap());
}

#[tokio::test]
async fn channels_held_by_a_node_that_died_are_vacated_by_whoever_notices() {
    let h = hooks();
    assert!(h.occupy("a", "dead").await.unwrap());
    assert!(h.occupy("b", "dead").await.unwrap());
    assert!(!h.occupy("b", "alive").await.unwrap());
    assert!(h.occupy("odd name/ü.*", "alive").await.unwrap());
    let live: HashSet<String> = ["alive".to_owned()].into();
    assert_eq!(h.forget_nodes(&live).await.unwrap(), 2);
    // A second process noticing the same death changes nothing.
    assert_eq!(h.forget_nodes(&live).await.unwrap(), 0);
    let jobs = drain(&h).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].channel, "a");
    assert!(h.occupied("b").await.unwrap());
    assert!(h.occupied("odd name/ü.*").await.unwrap());
}

#[test]
fn jobs_and_tokens_round_trip() {
    let mut job = Job::new(
        "c",
        HookEvent::ClientEvent {
            event: "client-x".into(),
            data: "{}".into(),
            socket_id: "1.2".into(),
            user_id: None,
        },
    );
    job.target = Some(1);
    assert_eq!(Job::decode(&job.encode()).unwrap(), job);
    assert!(Job::decode(b"{").is_err());
    for s in ["", "a", "ü/.*>"] {
        assert_eq!(untoken(&token(s)).as_deref(), Some(s));
    }
    assert_eq!(untoken("zz"), None);
    assert_eq!(untoken("a"), None);
}
