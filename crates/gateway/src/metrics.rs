//! Prometheus metrics. Every metric is named `switchboard_*`.
//!
//! The four the field watches first: delivery latency
//! (`switchboard_delivery_latency_seconds`), connection success
//! (`switchboard_connections_accepted_total` / `_refused_total{reason}`),
//! reconnection and recovery (`switchboard_recovery_total{result}`), and delivery
//! (`switchboard_messages_out_total`, `switchboard_deliveries_dropped_total{reason}`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process-wide recorder once and returns its handle; later calls
/// (several gateways in one test process) share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program's):
            // then our handle renders nothing, which /metrics shows as empty.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// Drains histogram samples into buckets now and then, so that memory stays
/// bounded even when nobody scrapes.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticker.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("switchboard_connections", "Client connections open now.");
    describe_counter!(
        "switchboard_connections_accepted_total",
        "Client connections accepted."
    );
    describe_counter!(
        "switchboard_connections_refused_total",
        "Client connections refused or failed, by reason."
    );
    describe_counter!(
        "switchboard_commands_total",
        "Client commands, by method and result."
    );
    describe_counter!(
        "switchboard_messages_in_total",
        "Channel events received from the broker."
    );
    describe_counter!(
        "switchboard_messages_out_total",
        "Publications written to client sockets."
    );
    describe_histogram!(
        "switchboard_delivery_latency_seconds",
        Unit::Seconds,
        "Time from a publication's acceptance to its write to a client socket."
    );
    describe_counter!(
        "switchboard_deliveries_dropped_total",
        "Deliveries not made, by reason (slow_consumer, closing, unencodable)."
    );
    describe_counter!(
        "switchboard_disconnects_total",
        "Connections closed by the server, by code."
    );
    describe_counter!(
        "switchboard_recovery_total",
        "Subscriptions that asked to recover, by result (recovered, not_recovered)."
    );
    describe_counter!(
        "switchboard_api_requests_total",
        "Server API requests, by method and result."
    );
    describe_counter!(
        "switchboard_publications_total",
        "Publications accepted, by source (client, api)."
    );
    describe_gauge!(
        "switchboard_presence_client_replicas",
        "Presence service replicas (addresses) the gateway spreads its calls over."
    );
    describe_counter!(
        "switchboard_presence_client_lookups_total",
        "Lookups of presence URL host names, by result (ok, failed: the last addresses kept)."
    );
    describe_counter!(
        "switchboard_presence_client_replica_changes_total",
        "Presence replicas added to or removed from the set in use, by change."
    );
    describe_counter!(
        "switchboard_presence_client_retries_total",
        "Presence calls to one replica that failed (the next replica is tried, if any)."
    );
}
