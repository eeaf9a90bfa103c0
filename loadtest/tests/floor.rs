//! The `floor` scenario's accounting: every message written to every socket is
//! counted once, in order. Assertions are on counts, never on timings.

use switchboard_loadtest::cli::FloorArgs;
use switchboard_loadtest::scenario;

fn args(sockets: usize, writers: usize, messages: u64) -> FloorArgs {
    FloorArgs {
        sockets,
        writers,
        messages,
        rate: 200.0,
        payload: 64,
        json: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_socket_once_and_in_order() {
    let s = scenario::floor::run(&args(30, 3, 20)).await.unwrap();
    assert_eq!(s.expected, 600);
    assert_eq!(s.received, 600);
    assert_eq!((s.lost, s.out_of_order), (0, 0));
    assert_eq!(s.latency.count, 600, "one latency per delivery");
    assert_eq!(s.write_round.count, 60, "one round per message and writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_too_short_for_its_header_is_refused() {
    let mut a = args(2, 1, 1);
    a.payload = 8;
    let e = scenario::floor::run(&a).await.unwrap_err();
    assert!(e.to_string().contains("at least 16"), "{e}");
}
