//! A latency histogram cheap enough for the request path: fixed log-linear buckets of
//! relaxed atomic counters, shared by every worker, read (and subtracted between two
//! samples) by the monitor.
//!
//! Bucket `4k + j` (j in 0..4) covers microseconds in `[2^k (1 + j/4), 2^k (1 + (j+1)/4))`:
//! four buckets per doubling, so a bucket is at most 25% wide — fine enough to tell a
//! p99 latency ratio of 2.0 (the guard's default) from noise. Recording is a leading-
//! zeros count, two shifts and two atomic adds (the bucket, and the running sum that
//! `/metrics` reports as the histogram's `_sum`). Covers 1 µs to about 2^36 µs (19 hours).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Number of buckets.
pub const BUCKETS: usize = 37 * 4;

/// Latencies of one backend's requests (time to the response head).
#[derive(Debug)]
pub struct LatencyHistogram {
    counts: [AtomicU64; BUCKETS],
    /// Every latency recorded, added up, in µs.
    sum_micros: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

/// The bucket of a latency of `micros` µs.
pub fn bucket_of(micros: u64) -> usize {
    let micros = micros.max(1);
    let k = 63 - micros.leading_zeros() as usize;
    let j = if k >= 2 {
        ((micros >> (k - 2)) & 0b11) as usize
    } else {
        ((micros << (2 - k)) & 0b11) as usize
    };
    (k * 4 + j).min(BUCKETS - 1)
}

/// The upper bound of bucket `index`, in µs.
pub fn upper_bound(index: usize) -> f64 {
    let (k, j) = (index / 4, index % 4);
    (1u64 << k) as f64 * (1.0 + (j as f64 + 1.0) / 4.0)
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Every latency recorded so far, added up, in µs (wraps after about 580,000
    /// years of latency).
    pub fn sum_micros(&self) -> u64 {
        self.sum_micros.load(Ordering::Relaxed)
    }

    /// The counts now (to subtract from a later snapshot).
    pub fn snapshot(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

/// The `q` quantile (0..=1), in milliseconds, of bucket counts (None when empty):
/// the upper bound of the bucket holding it, so it errs on the slow side.
pub fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (index, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(upper_bound(index) / 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_at_most_a_quarter_wide() {
        let mut last = 0;
        for micros in [
            1u64, 2, 3, 4, 5, 7, 8, 100, 1000, 1250, 5000, 1_000_000, 60_000_000,
        ] {
            let b = bucket_of(micros);
            assert!(b >= last, "{micros}");
            last = b;
            assert!(
                upper_bound(b) >= micros as f64,
                "{micros} ≤ bound {}",
                upper_bound(b)
            );
            assert!(
                upper_bound(b) <= micros as f64 * 1.25 + 1.0,
                "{micros}: bound {}",
                upper_bound(b)
            );
        }
    }

    #[test]
    fn quantiles_from_counts() {
        let h = LatencyHistogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let counts = h.snapshot();
        let p50 = quantile_ms(&counts, 0.5).unwrap();
        let p99 = quantile_ms(&counts, 0.99).unwrap();
        assert!((50.0..=62.5).contains(&p50), "{p50}");
        assert!((99.0..=125.0).contains(&p99), "{p99}");
        assert_eq!(quantile_ms(&vec![0; BUCKETS], 0.5), None);
    }

    #[test]
    fn the_sum_adds_every_latency_in_microseconds() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_millis(3));
        h.record(Duration::from_micros(250));
        assert_eq!(h.sum_micros(), 3_250);
        assert_eq!(h.snapshot().iter().sum::<u64>(), 2);
    }
}
