//! The guard: after every applied change (not its own rollbacks), watch the traffic
//! for `guard.watch` and roll the change back as soon as it breaches a `[guard]`
//! threshold against the window before it (DESIGN "Applying, the guard").
//!
//! The judgement ([`judge`]) is a pure function of two windows — before the change and
//! since — so it is tested without a network. It waits until `min_requests` requests
//! went through after the change, then looks at every pool:
//! - error rate after above `max_error_rate` (absolute);
//! - p99 latency after / before above `max_latency_ratio` (both windows busy enough),
//!   and the rise at least `latency_floor`: a few milliseconds more is noise (a reload
//!   storm, a GC pause), not a bad change, however large the ratio (issue 12, defect 11);
//! - skew after above `max_skew` (weight-driven algorithms);
//! - a backend's load ratio after above `max_load_ratio`;
//! - a backend slow against the others of its pool after (and not before): p99 above
//!   `max_backend_latency_ratio` times their median, by at least `latency_floor`;
//! - a backend's share after / before above `max_shift`, for backends that had at
//!   least 5% before, unless the change was applied with `expect_shift`.

use std::time::Duration;

use super::window::{PoolView, MIN_EXPECTED};
use crate::config::Guard;

/// Least share before the change for a backend's shift to be judged.
pub const MIN_SHARE_FOR_SHIFT: f64 = 0.05;
/// Least requests in each window before p99 latencies are compared.
pub const MIN_REQUESTS_FOR_LATENCY: u64 = 100;

/// A change under watch.
#[derive(Clone, Debug)]
pub struct Watch {
    /// The version applied.
    pub version: u64,
    /// The version in force before it (what a rollback restores).
    pub previous: u64,
    /// When it was applied.
    pub applied_at: Duration,
    /// The operator said the change moves traffic on purpose.
    pub expect_shift: bool,
    /// The traffic in the `watch` before the change.
    pub before: Vec<PoolView>,
}

/// What breached, in words, or `None` when `after` is within every threshold (or has
/// not seen `min_requests` yet — then judging waits).
pub fn judge(
    before: &[PoolView],
    after: &[PoolView],
    guard: &Guard,
    expect_shift: bool,
) -> Option<String> {
    let total: u64 = after
        .iter()
        .map(|p| p.client_requests.max(p.requests))
        .sum();
    if total < guard.min_requests {
        return None;
    }
    let mut breaches = Vec::new();
    for pool in after {
        let name = &pool.name;
        let old = before.iter().find(|p| &p.name == name);
        // Clients' requests, not backends': a change that leaves no usable backend
        // sends none to backends and fails every client.
        if pool.client_requests.max(pool.requests) >= super::alarms::MIN_REQUESTS_FOR_ERRORS
            && pool.error_rate > guard.max_error_rate
        {
            breaches.push(format!(
                "pool {name:?} error rate {:.1}% > {:.1}%",
                pool.error_rate * 100.0,
                guard.max_error_rate * 100.0
            ));
        }
        if let (Some(old), Some(p99)) = (old, pool.p99_ms) {
            if let Some(was) = old.p99_ms.filter(|_| {
                old.requests >= MIN_REQUESTS_FOR_LATENCY
                    && pool.requests >= MIN_REQUESTS_FOR_LATENCY
            }) {
                let floor_ms = guard.latency_floor.as_secs_f64() * 1000.0;
                if was > 0.0 && p99 / was > guard.max_latency_ratio && p99 - was >= floor_ms {
                    breaches.push(format!(
                        "pool {name:?} p99 latency {p99:.1} ms is {:.1}x the {was:.1} ms before (> {}, and {:.1} ms more, at least latency_floor {floor_ms} ms)",
                        p99 / was,
                        guard.max_latency_ratio,
                        p99 - was
                    ));
                }
            }
        }
        // A backend the change made slow against the others (not one that was before).
        let slow_before = old
            .map(|o| super::alarms::slow_backends(o, guard))
            .unwrap_or_default();
        for slow in super::alarms::slow_backends(pool, guard) {
            if slow_before.iter().any(|s| s.address == slow.address) {
                continue;
            }
            breaches.push(format!(
                "backend {} of pool {name:?} p99 {:.1} ms is above {}x the median p99 of the others ({:.1} ms)",
                slow.address, slow.p99_ms, guard.max_backend_latency_ratio, slow.others_ms
            ));
        }
        if let Some(skew) = pool
            .skew
            .filter(|s| pool.weight_driven && *s > guard.max_skew)
        {
            breaches.push(format!("pool {name:?} skew {skew:.2} > {}", guard.max_skew));
        }
        for b in &pool.backends {
            if b.capacity_share * pool.requests as f64 >= MIN_EXPECTED
                && b.load_ratio > guard.max_load_ratio
            {
                breaches.push(format!(
                    "backend {} of pool {name:?} load ratio {:.2} > {} ({:.1}% of requests for {:.1}% of capacity)",
                    b.address,
                    b.load_ratio,
                    guard.max_load_ratio,
                    b.observed_share * 100.0,
                    b.capacity_share * 100.0
                ));
            }
            if expect_shift {
                continue;
            }
            let was = old
                .and_then(|o| o.backends.iter().find(|x| x.address == b.address))
                .map_or(0.0, |x| x.observed_share);
            if was >= MIN_SHARE_FOR_SHIFT
                && b.expected >= MIN_EXPECTED
                && b.observed_share / was > guard.max_shift
            {
                breaches.push(format!(
                    "backend {} of pool {name:?} share went from {:.1}% to {:.1}% ({:.1}x > {}; apply with --expect-shift if intended)",
                    b.address,
                    was * 100.0,
                    b.observed_share * 100.0,
                    b.observed_share / was,
                    guard.max_shift
                ));
            }
        }
    }
    (!breaches.is_empty()).then(|| breaches.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::window::BackendView;

    fn pool(shares: &[f64], requests: u64, errors: f64) -> PoolView {
        let backends = shares
            .iter()
            .enumerate()
            .map(|(i, &s)| BackendView {
                address: format!("127.0.0.1:{}", 9000 + i),
                requests: (s * requests as f64) as u64,
                errors: 0,
                observed_share: s,
                intended_share: s,
                capacity_share: 1.0 / shares.len() as f64,
                load_ratio: s * shares.len() as f64,
                expected: s * requests as f64,
                p50_ms: Some(1.0),
                p99_ms: Some(5.0),
            })
            .collect();
        PoolView {
            name: "web".into(),
            algorithm: "weighted_round_robin".into(),
            weight_driven: true,
            requests,
            client_requests: requests,
            error_rate: errors,
            p50_ms: Some(1.0),
            p99_ms: Some(5.0),
            skew: None,
            skew_backend: None,
            panic: false,
            failed_over: false,
            usable: shares.len(),
            total: shares.len(),
            backends,
        }
    }

    #[test]
    fn an_even_change_passes_and_a_pile_on_one_backend_breaches() {
        let guard = Guard::default();
        let before = [pool(&[1.0 / 3.0; 3], 1000, 0.0)];
        assert_eq!(
            judge(&before, &[pool(&[1.0 / 3.0; 3], 1000, 0.0)], &guard, false),
            None
        );
        let piled = judge(
            &before,
            &[pool(&[0.9, 0.05, 0.05], 1000, 0.0)],
            &guard,
            false,
        )
        .unwrap();
        assert!(piled.contains("load ratio 2.70"), "{piled}");
        assert!(piled.contains("share went from 33.3% to 90.0%"), "{piled}");
    }

    /// A backend slow against the others breaches after a change only when the change
    /// made it so; the alarm condition is the same function, with its floor.
    #[test]
    fn a_backend_made_slow_by_a_change_breaches_and_one_slow_before_does_not() {
        let guard = Guard::default();
        let even = pool(&[0.5, 0.5], 1000, 0.0);
        let mut slow = even.clone();
        slow.backends[1].p99_ms = Some(80.0);
        let breach = judge(
            std::slice::from_ref(&even),
            std::slice::from_ref(&slow),
            &guard,
            false,
        )
        .expect("a breach");
        assert!(breach.contains("backend 127.0.0.1:9001"), "{breach}");
        let again = std::slice::from_ref(&slow);
        assert!(judge(again, again, &guard, false).is_none());
        // 3.2x the others but only 11 ms more: under latency_floor (25 ms), no alarm.
        let mut quick = even.clone();
        quick.backends[1].p99_ms = Some(16.0);
        assert!(super::super::alarms::slow_backends(&quick, &guard).is_empty());
        // Too few requests to judge.
        slow.backends[1].requests = 10;
        assert!(super::super::alarms::slow_backends(&slow, &guard).is_empty());
    }

    #[test]
    fn expect_shift_skips_shift_but_not_load_ratio() {
        let guard = Guard {
            max_load_ratio: 10.0,
            ..Guard::default()
        };
        let before = [pool(&[0.5, 0.5], 1000, 0.0)];
        let after = [pool(&[0.1, 0.9], 1000, 0.0)];
        assert!(
            judge(&before, &after, &guard, false).is_none(),
            "0.9/0.5 = 1.8 < 2: no shift breach"
        );
        let after = [pool(&[0.02, 0.98], 1000, 0.0)];
        assert!(judge(&before, &after, &guard, true).is_none());
    }

    fn with_p99(mut pool: PoolView, p99_ms: f64) -> PoolView {
        pool.p99_ms = Some(p99_ms);
        pool
    }

    /// Issue 12, defect 11: during a reload storm the guard rolled back a good change
    /// because p99 went from 4.1 ms to 10.2 ms (2.5x). A rise under `latency_floor`
    /// never breaches; the same ratio over a rise above the floor still does.
    #[test]
    fn guard_ignores_latency_rises_below_the_floor() {
        let guard = Guard::default();
        assert_eq!(guard.max_latency_ratio, 2.0);
        assert_eq!(guard.latency_floor, Duration::from_millis(25));
        let even = || pool(&[0.5, 0.5], 1000, 0.0);
        assert_eq!(
            judge(
                &[with_p99(even(), 4.1)],
                &[with_p99(even(), 10.2)],
                &guard,
                false
            ),
            None
        );
        let slower = judge(
            &[with_p99(even(), 30.0)],
            &[with_p99(even(), 90.0)],
            &guard,
            false,
        )
        .expect("30 ms → 90 ms breaches");
        assert!(slower.contains("p99 latency 90.0 ms is 3.0x"), "{slower}");
        // A floor of zero leaves the ratio alone.
        let no_floor = Guard {
            latency_floor: Duration::ZERO,
            ..Guard::default()
        };
        assert!(judge(
            &[with_p99(even(), 4.1)],
            &[with_p99(even(), 10.2)],
            &no_floor,
            false
        )
        .is_some());
    }

    /// Regression: the guard judged errors on requests that reached backends, so a
    /// change that left no usable backend (every client answered 503, no backend
    /// request at all) was never rolled back — while the error_rate alarm rang.
    #[test]
    fn a_change_that_leaves_no_usable_backend_is_rolled_back() {
        let guard = Guard::default();
        let before = [pool(&[0.5, 0.5], 1000, 0.0)];
        let mut after = pool(&[0.0, 0.0], 0, 1.0);
        after.client_requests = 1000;
        after.usable = 0;
        let verdict = judge(&before, &[after], &guard, false);
        assert!(
            verdict
                .as_deref()
                .is_some_and(|v| v.contains("error rate 100.0%")),
            "{verdict:?}"
        );
    }

    #[test]
    fn errors_breach_and_nothing_is_judged_below_min_requests() {
        let guard = Guard::default();
        let before = [pool(&[0.5, 0.5], 1000, 0.0)];
        assert!(
            judge(&before, &[pool(&[0.5, 0.5], 1000, 0.3)], &guard, false)
                .unwrap()
                .contains("error rate 30.0%")
        );
        assert_eq!(
            judge(&before, &[pool(&[0.5, 0.5], 100, 0.3)], &guard, false),
            None
        );
    }
}
