//! `--protocol sse` end to end: the load generator as Centrifugo clients over
//! server-sent events (subscribing and answering pings through /emulation) against a
//! gateway in this process. Assertions are on counts, never on timings.

mod common;

use common::run::{assert_exact, run};
use common::{gateway, url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_sse_delivers_everything_exactly_once_across_pings() {
    // A ping a second, a second to answer (through /emulation): a receiver that
    // missed one would be disconnected and lose what was published meanwhile.
    let gw = gateway(&["--ping-interval", "1", "--pong-timeout", "1"]).await;
    let u = url(gw.addr);
    let s = run(&[
        "fanout",
        "--protocol",
        "sse",
        "--url",
        &u,
        "--channels",
        "2",
        "--subscribers",
        "10",
        "--rate",
        "30",
        "--duration",
        "3",
    ])
    .await;
    assert_exact(&s, 20);
    assert_eq!(s.connections.attempted, 20);
    assert!(s.connections.failures.is_empty(), "{}", s.table());
    assert!(s.reconnection.is_none(), "{}", s.table());
}
