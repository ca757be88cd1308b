//! The retry budget: retries may be at most `budget_percent` of a pool's requests over
//! the last ten seconds, so retries cannot multiply an overload (a failing backend
//! under full load would otherwise double the traffic it causes).
//!
//! Counters live in ten one-second buckets of atomics shared by every worker; a
//! request adds to the current bucket, a retry is allowed while the retries of the
//! window stay under the budget. A few retries are always allowed (`MIN_RETRIES` in
//! the window), so a quiet pool can still retry its rare failures. Time is passed in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: usize = 10;
/// Retries allowed in a window whatever the budget, so low traffic can still retry.
pub const MIN_RETRIES: u64 = 3;

/// Requests and retries per second over the last ten seconds.
#[derive(Debug, Default)]
pub struct RetryBudget {
    buckets: [Bucket; BUCKETS],
}

#[derive(Debug, Default)]
struct Bucket {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    fn bucket(&self, now: Duration) -> &Bucket {
        let second = now.as_secs();
        let bucket = &self.buckets[(second % BUCKETS as u64) as usize];
        // A bucket from an older second is reset by whoever gets there first; a
        // count racing with the reset may be lost, which only loosens the estimate.
        if bucket.second.swap(second, Ordering::Relaxed) != second {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
        }
        bucket
    }

    /// Counts one client request.
    pub fn record_request(&self, now: Duration) {
        self.bucket(now).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget if `budget_percent` of the window's requests
    /// (or `MIN_RETRIES`) allow it.
    pub fn try_retry(&self, now: Duration, budget_percent: u8) -> bool {
        let current = now.as_secs();
        let in_window =
            |b: &Bucket| current.saturating_sub(b.second.load(Ordering::Relaxed)) < BUCKETS as u64;
        let (requests, retries) =
            self.buckets
                .iter()
                .filter(|b| in_window(b))
                .fold((0, 0), |(q, r), b| {
                    (
                        q + b.requests.load(Ordering::Relaxed),
                        r + b.retries.load(Ordering::Relaxed),
                    )
                });
        let allowed = (requests * u64::from(budget_percent) / 100).max(MIN_RETRIES);
        if budget_percent == 0 || retries >= allowed {
            return false;
        }
        self.bucket(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_percent_of_requests() {
        let budget = RetryBudget::default();
        let now = Duration::from_secs(100);
        for _ in 0..1000 {
            budget.record_request(now);
        }
        let granted = (0..1000).filter(|_| budget.try_retry(now, 20)).count();
        assert_eq!(granted, 200);
    }

    #[test]
    fn a_quiet_pool_may_still_retry_a_few_times_and_zero_means_never() {
        let budget = RetryBudget::default();
        let now = Duration::from_secs(5);
        budget.record_request(now);
        assert_eq!(
            (0..10).filter(|_| budget.try_retry(now, 20)).count(),
            MIN_RETRIES as usize
        );
        assert!(!RetryBudget::default().try_retry(now, 0));
    }

    #[test]
    fn the_window_moves_on() {
        let budget = RetryBudget::default();
        for _ in 0..100 {
            budget.record_request(Duration::from_secs(10));
        }
        assert_eq!(
            (0..100)
                .filter(|_| budget.try_retry(Duration::from_secs(10), 10))
                .count(),
            10
        );
        // Eleven seconds later the old requests and retries no longer count.
        let later = Duration::from_secs(21);
        assert_eq!(
            (0..100).filter(|_| budget.try_retry(later, 10)).count(),
            MIN_RETRIES as usize
        );
    }
}
