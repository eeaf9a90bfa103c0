use std::sync::atomic::AtomicU32;
use std::sync::Mutex;

use switchboard_test_support::eventually;

use super::*;

/// A name server the test edits: every name resolves to what it was told last.
#[derive(Default)]
struct Hosts {
    answer: Mutex<Option<Vec<SocketAddr>>>,
    lookups: AtomicU32,
}

impl Hosts {
    fn set(&self, addrs: Option<&[&str]>) {
        *self.answer.lock().unwrap() =
            addrs.map(|a| a.iter().map(|a| a.parse().unwrap()).collect());
    }
}

#[async_trait]
impl Resolve for Hosts {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        assert_eq!((host, port), ("presence", 9000));
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.answer
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| std::io::Error::other("no such host"))
    }
}

fn addrs(replicas: &Replicas) -> Vec<String> {
    replicas
        .pick()
        .0
        .iter()
        .map(|r| r.addr.to_string())
        .collect()
}

async fn start(hosts: &Arc<Hosts>, urls: &[&str], interval: Duration) -> Arc<Replicas> {
    let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
    let discovery = Discovery {
        resolver: hosts.clone(),
        interval,
    };
    Replicas::start(&urls, discovery).await.unwrap()
}

#[test]
fn ip_urls_are_taken_as_given_and_names_are_looked_up() {
    let t = Target::parse("http://10.1.2.3:9000").unwrap();
    assert_eq!(t.fixed, Some("10.1.2.3:9000".parse().unwrap()));
    let t = Target::parse("http://[::1]:9000").unwrap();
    assert_eq!(t.fixed, Some("[::1]:9000".parse().unwrap()));
    let t = Target::parse("http://switchboard-presence:9000").unwrap();
    assert_eq!(
        (t.fixed, t.host.as_str(), t.port),
        (None, "switchboard-presence", 9000)
    );
    assert_eq!(t.origin.to_string(), "http://switchboard-presence:9000/");
    assert_eq!(Target::parse("http://presence").unwrap().port, 80);
    assert!(Target::parse("not a url").is_err());
    assert!(Target::parse("/just/a/path").is_err());
}

#[tokio::test(start_paused = true)]
async fn the_set_follows_what_the_name_resolves_to() {
    let hosts = Arc::new(Hosts::default());
    hosts.set(Some(&["10.0.0.1:9000"]));
    let every = Duration::from_secs(5);
    let replicas = start(&hosts, &["http://presence:9000"], every).await;
    assert_eq!(addrs(&replicas), ["10.0.0.1:9000"]);

    hosts.set(Some(&["10.0.0.2:9000", "10.0.0.1:9000"]));
    let patience = every * 3;
    eventually("a replica added", patience, async || {
        addrs(&replicas).len() == 2
    })
    .await;
    assert_eq!(addrs(&replicas), ["10.0.0.1:9000", "10.0.0.2:9000"]);

    // A lookup that fails keeps the last answer.
    hosts.set(None);
    let before = hosts.lookups.load(Ordering::Relaxed);
    eventually("two failed lookups", patience, async || {
        hosts.lookups.load(Ordering::Relaxed) >= before + 2
    })
    .await;
    assert_eq!(addrs(&replicas), ["10.0.0.1:9000", "10.0.0.2:9000"]);

    // The first replica rescheduled to a new address.
    hosts.set(Some(&["10.0.0.2:9000", "10.0.0.3:9000"]));
    eventually("a replica replaced", patience, async || {
        addrs(&replicas) == ["10.0.0.2:9000", "10.0.0.3:9000"]
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn ip_urls_and_names_merge_into_one_set_without_duplicates() {
    let hosts = Arc::new(Hosts::default());
    hosts.set(Some(&["10.0.0.1:9000", "10.0.0.2:9000"]));
    let urls = [
        "http://presence:9000",
        "http://10.0.0.2:9000",
        "http://presence:9000",
        "http://10.0.0.9:9000",
    ];
    let replicas = start(&hosts, &urls, Duration::from_secs(5)).await;
    assert_eq!(
        addrs(&replicas),
        ["10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.9:9000"]
    );
}

#[tokio::test(start_paused = true)]
async fn only_ip_urls_are_never_looked_up() {
    let hosts = Arc::new(Hosts::default());
    let urls = ["http://10.0.0.1:9000", "http://10.0.0.2:9000"];
    let replicas = start(&hosts, &urls, Duration::from_secs(1)).await;
    replicas.suspect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(hosts.lookups.load(Ordering::Relaxed), 0);
    assert_eq!(addrs(&replicas), ["10.0.0.1:9000", "10.0.0.2:9000"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_brings_the_next_lookup_forward_within_bounds() {
    let hosts = Arc::new(Hosts::default());
    hosts.set(None);
    let hour = Duration::from_secs(3600);
    let replicas = start(&hosts, &["http://presence:9000"], hour).await;
    assert!(addrs(&replicas).is_empty(), "not resolvable yet");
    hosts.set(Some(&["10.0.0.1:9000"]));
    replicas.suspect();
    eventually(
        "looked up again long before the hour",
        MIN_GAP * 3,
        async || addrs(&replicas).len() == 1,
    )
    .await;
    // A storm of failed calls: one lookup per gap at most.
    let before = hosts.lookups.load(Ordering::Relaxed);
    for _ in 0..10 {
        for _ in 0..100 {
            replicas.suspect();
        }
        tokio::time::sleep(MIN_GAP / 2).await;
    }
    let lookups = hosts.lookups.load(Ordering::Relaxed) - before;
    assert!((1..=6).contains(&lookups), "{lookups} lookups in 5 gaps");
}
