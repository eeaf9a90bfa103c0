//! Reconnecting after a disconnect: backoff with jitter, the next target first, and
//! a resubscribe that recovers from the last (offset, epoch), accounting whatever the
//! recovery reply carries. Centrifugo only: Pusher has no recovery, and the
//! command line refuses `failover` with it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{account, count, options, Shared, Subscription};
use crate::accounting::Arrival;
use crate::client::{centrifugo, Client, ClientError, Connection, Protocol};
use crate::payload;
use crate::target::Target;
use std::sync::atomic::Ordering::Relaxed;

/// Reconnects with backoff and jitter, to the next target first, and resubscribes
/// recovering from the last position. `None` when stopped first.
pub(super) async fn reconnect(
    index: u64,
    attempt: &mut u64,
    sub: &mut Option<Subscription>,
    shared: &Shared,
    stop: &CancellationToken,
) -> Option<Connection> {
    let spec = &shared.spec;
    let mut backoff = Duration::from_millis(50);
    loop {
        *attempt += 1;
        let target = &spec.targets[((index + *attempt) % spec.targets.len() as u64) as usize];
        let jittered = backoff.mul_f64(0.5 + fastrand::f64());
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(jittered) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
        let attempt_result = tokio::select! {
            _ = stop.cancelled() => return None,
            r = resubscribe(target, index, sub, shared) => r,
        };
        match attempt_result {
            Ok(client) => return Some(Connection::Centrifugo(Box::new(client))),
            Err(e) => {
                let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
                count(
                    &mut stats.result.failures,
                    format!("reconnect {}", e.reason()),
                );
            }
        }
    }
}

async fn resubscribe(
    target: &Target,
    index: u64,
    sub: &mut Option<Subscription>,
    shared: &Shared,
) -> Result<Client, ClientError> {
    let Protocol::Centrifugo { protobuf } = shared.spec.protocol else {
        return Err(ClientError::Decode(
            "only Centrifugo connections recover".into(),
        ));
    };
    let encoding = centrifugo::encoding(protobuf);
    let opts = options(&shared.spec, index, target);
    let mut client = Client::open(target, encoding, &opts).await?;
    let Some(s) = sub.as_mut() else {
        return Ok(client);
    };
    let name = s.name.clone();
    let epoch = s.epoch.clone();
    let reply = client.subscribe(&name, Some((s.offset, &epoch))).await?;
    if std::env::var_os("SWITCHBOARD_LOADTEST_TRACE").is_some() {
        eprintln!(
            "trace: connection {index} resubscribed {name} from offset {} epoch {epoch}: recovered {} top {} epoch {} publications {:?}, seq max before {}",
            s.offset,
            reply.recovered,
            reply.offset,
            reply.epoch,
            reply
                .publications
                .iter()
                .map(|p| (p.offset, payload::decode(&p.data).map(|x| x.seq)))
                .collect::<Vec<_>>(),
            s.tracker.max()
        );
    }
    let (mut dups, mut late, mut unique) = (0, 0, 0);
    for p in &reply.publications {
        match account(s, p.offset, &p.data) {
            Some((Arrival::InOrder, _)) => unique += 1,
            Some((Arrival::Late, _)) => {
                unique += 1;
                late += 1
            }
            Some((Arrival::Duplicate, _)) => dups += 1,
            None => {}
        }
    }
    s.epoch = reply.epoch;
    s.offset = s.offset.max(reply.offset);
    shared.live.delivered.fetch_add(unique, Relaxed);
    let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    let r = &mut stats.result;
    if reply.recovered {
        r.recovered += 1;
    } else {
        r.not_recovered += 1;
    }
    r.recovered_publications += unique;
    r.tally.duplicates += dups;
    r.tally.out_of_order += late;
    Ok(client)
}
