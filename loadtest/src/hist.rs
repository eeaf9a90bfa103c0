//! HDR histograms: the constructors every figure uses, percentiles in a serialisable
//! summary, and a compact form that carries a histogram between processes.
//!
//! The compact form is the list of recorded (value, count) pairs. Recording each
//! value back lands it in the same bucket, so a merged histogram equals the one a
//! single process would have recorded.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest value any histogram holds: one hour in microseconds. Larger values are
/// clamped to it (and so show as the maximum), never dropped.
pub const MAX_US: u64 = 3_600_000_000;

/// A histogram of microseconds with three significant digits.
pub fn new_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid")
}

/// A smaller histogram (two significant digits) for the per-second timeline.
pub fn new_coarse_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("static bounds are valid")
}

/// Records `us`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, MAX_US));
}

/// A histogram as recorded (value, count) pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Compact(pub Vec<(u64, u64)>);

impl Compact {
    pub fn of(h: &Histogram<u64>) -> Compact {
        Compact(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Adds every recorded value into `into`.
    pub fn add_to(&self, into: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            let _ = into.record_n(value.clamp(1, MAX_US), count);
        }
    }
}

/// Percentiles of one histogram, in milliseconds, as reports print them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            min_ms: ms(h.min()),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = new_us();
        for us in 1..=10_000 {
            record(&mut h, us);
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 10_000);
        assert!((p.p50_ms - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99_ms - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.max_ms - 10.0).abs() < 0.01, "{p:?}");
        assert_eq!(p.min_ms, 0.001);
    }

    #[test]
    fn empty_histogram_reports_zeroes() {
        assert_eq!(Percentiles::of(&new_us()), Percentiles::default());
    }

    #[test]
    fn compact_form_merges_like_one_histogram() {
        let mut a = new_us();
        let mut b = new_us();
        let mut both = new_us();
        for us in (1..5_000).step_by(7) {
            record(&mut a, us);
            record(&mut both, us);
        }
        for us in (3..900_000).step_by(1013) {
            record(&mut b, us);
            record(&mut both, us);
        }
        let mut merged = new_us();
        let wire = serde_json::to_string(&(Compact::of(&a), Compact::of(&b))).unwrap();
        let (ca, cb): (Compact, Compact) = serde_json::from_str(&wire).unwrap();
        ca.add_to(&mut merged);
        cb.add_to(&mut merged);
        assert_eq!(merged.len(), both.len());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(merged.value_at_quantile(q), both.value_at_quantile(q));
        }
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = new_us();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
    }
}
