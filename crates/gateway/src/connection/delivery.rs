//! Per-delivery metrics, recorded by a transport as records leave.

use std::sync::OnceLock;

use switchboard_core::queue::Record;

/// Handles of the per-delivery metrics, looked up once: resolving a metric by
/// name on every write costs a registry lookup per delivery.
fn handles() -> &'static (metrics::Histogram, metrics::Counter) {
    static HANDLES: OnceLock<(metrics::Histogram, metrics::Counter)> = OnceLock::new();
    HANDLES.get_or_init(|| {
        (
            metrics::histogram!("switchboard_delivery_latency_seconds"),
            metrics::counter!("switchboard_messages_out_total"),
        )
    })
}

/// Records the delivery latency of every publication in `batch`.
pub fn account(batch: &[Record]) {
    let (latency_histogram, messages_out) = handles();
    let now = switchboard_core::now_micros();
    let mut publications = 0u64;
    for record in batch.iter().filter(|r| r.time_us > 0) {
        publications += 1;
        let latency = now.saturating_sub(record.time_us) as f64 / 1e6;
        latency_histogram.record(latency);
    }
    if publications > 0 {
        messages_out.increment(publications);
    }
}
