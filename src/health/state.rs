//! The state behind "usable": active-check verdicts, passive ejection, draining and
//! slow start, for one backend.
//!
//! - [`ActiveCounter`] is the active-check state machine: consecutive successes and
//!   failures with `healthy_after` / `unhealthy_after` hysteresis, so a backend whose
//!   probes alternate never flips on every probe. Before its first probe result a
//!   backend is [`Verdict::Unknown`], which counts as usable (DESIGN "Words").
//! - [`BackendHealth`] is what every thread sees: the verdict, the draining flag and
//!   the passive (outlier) state, in atomics so that the request path reads them and
//!   records outcomes without a lock. The only lock is taken when a backend crosses
//!   its failure threshold and may be ejected — a rare event.
//!
//! Time is passed in (`now`, a monotonic duration since some epoch), never read here,
//! so the simulator can drive the same code with virtual time.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Outlier;

/// What active checks last concluded about a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No probe result yet (or no active checks): usable.
    Unknown,
    /// Probes pass.
    Healthy,
    /// `unhealthy_after` consecutive probes failed.
    Unhealthy,
}

impl Verdict {
    fn from_u8(v: u8) -> Verdict {
        match v {
            1 => Verdict::Healthy,
            2 => Verdict::Unhealthy,
            _ => Verdict::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Verdict::Unknown => 0,
            Verdict::Healthy => 1,
            Verdict::Unhealthy => 2,
        }
    }

    /// Lower-case name for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Unknown => "unknown",
            Verdict::Healthy => "healthy",
            Verdict::Unhealthy => "unhealthy",
        }
    }
}

/// Consecutive probe results of one backend, with hysteresis.
#[derive(Clone, Copy, Debug)]
pub struct ActiveCounter {
    verdict: Verdict,
    successes: u32,
    failures: u32,
}

impl ActiveCounter {
    /// A counter that starts from `verdict` (the backend's current one).
    pub fn new(verdict: Verdict) -> Self {
        ActiveCounter {
            verdict,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one probe result; returns the new verdict when it changes.
    ///
    /// A healthy (or unknown) backend turns unhealthy after `unhealthy_after`
    /// consecutive failures; an unhealthy one turns healthy after `healthy_after`
    /// consecutive successes. An unknown backend's first success makes it healthy at
    /// once: it was already usable, nothing changes for traffic.
    pub fn observe(
        &mut self,
        ok: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<Verdict> {
        let next = if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            match self.verdict {
                Verdict::Unknown => Verdict::Healthy,
                Verdict::Unhealthy if self.successes >= healthy_after => Verdict::Healthy,
                v => v,
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            match self.verdict {
                Verdict::Unhealthy => Verdict::Unhealthy,
                _ if self.failures >= unhealthy_after => Verdict::Unhealthy,
                v => v,
            }
        };
        (next != self.verdict).then(|| {
            self.verdict = next;
            next
        })
    }
}

/// A passive ejection that just started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    /// Ejections of this backend so far, this one included.
    pub count: u32,
    /// How long this one lasts.
    pub duration: Duration,
}

/// Sentinel for "not ramping": the backend was usable from the start.
const NEVER: u64 = u64::MAX;

/// The shared health of one backend. Carried over by reloads for a backend that
/// stays in its pool.
#[derive(Debug)]
pub struct BackendHealth {
    verdict: AtomicU8,
    draining: AtomicBool,
    consecutive_failures: AtomicU32,
    /// End of the current ejection, in nanoseconds of `now`; 0: not ejected.
    ejected_until: AtomicU64,
    /// When the backend last became usable, in nanoseconds (slow start); NEVER: it
    /// was usable from the start.
    usable_since: AtomicU64,
    ejections: Mutex<EjectionHistory>,
    /// When the drain in force started, in nanoseconds of `now` (what runs long on the
    /// backend, tunnels, ends `drain_timeout` after it).
    drain_since: AtomicU64,
}

#[derive(Debug, Default)]
struct EjectionHistory {
    count: u32,
    /// When the last ejection ended (nanoseconds), to forget old ejections.
    last_end: u64,
}

impl Default for BackendHealth {
    fn default() -> Self {
        BackendHealth {
            verdict: AtomicU8::new(Verdict::Unknown.as_u8()),
            draining: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            usable_since: AtomicU64::new(NEVER),
            ejections: Mutex::new(EjectionHistory::default()),
            drain_since: AtomicU64::new(0),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

impl BackendHealth {
    /// A backend added to a running pool: it ramps up under slow start from `now`.
    pub fn added(now: Duration) -> Self {
        let health = BackendHealth::default();
        health.usable_since.store(nanos(now), Ordering::Relaxed);
        health
    }

    /// The active-check verdict.
    pub fn verdict(&self) -> Verdict {
        Verdict::from_u8(self.verdict.load(Ordering::Relaxed))
    }

    /// Sets the active-check verdict at `now`. A backend turning healthy again also
    /// ends a passive ejection (the probe just showed it serving) and starts its
    /// slow-start ramp.
    pub fn set_verdict(&self, verdict: Verdict, now: Duration) {
        let before = Verdict::from_u8(self.verdict.swap(verdict.as_u8(), Ordering::Relaxed));
        if before == Verdict::Unhealthy && verdict == Verdict::Healthy {
            self.ejected_until.store(0, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.usable_since.store(nanos(now), Ordering::Relaxed);
        }
    }

    /// Whether it is draining (no new requests).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts or ends draining; ending it starts the slow-start ramp at `now`.
    pub fn set_draining(&self, draining: bool, now: Duration) {
        // The start first, so a reader that sees the flag sees this drain's start.
        if draining && !self.is_draining() {
            self.drain_since.store(nanos(now), Ordering::Release);
        }
        let before = self.draining.swap(draining, Ordering::AcqRel);
        if before && !draining {
            self.usable_since.store(nanos(now), Ordering::Relaxed);
        }
    }

    /// When the drain in force started (`None`: not draining).
    pub fn draining_since(&self) -> Option<Duration> {
        self.draining
            .load(Ordering::Acquire)
            .then(|| Duration::from_nanos(self.drain_since.load(Ordering::Acquire)))
    }

    /// Whether a passive ejection is in force at `now`.
    pub fn is_ejected(&self, now: Duration) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > nanos(now)
    }

    /// End of the ejection in force, if any (it may lie in the past until the pool
    /// notices it ended).
    pub fn ejected_until(&self) -> Option<Duration> {
        match self.ejected_until.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// Notes that an ejection ended at `end` (called once by the pool when it notices):
    /// the slow-start ramp starts there.
    pub fn ejection_ended(&self, end: Duration) {
        if self
            .ejected_until
            .compare_exchange(nanos(end), 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.usable_since.store(nanos(end), Ordering::Relaxed);
            let mut history = self.ejections.lock().unwrap_or_else(|e| e.into_inner());
            history.last_end = nanos(end);
        }
    }

    /// Usable at `now`: not unhealthy, not draining, not ejected.
    pub fn is_usable(&self, now: Duration) -> bool {
        self.verdict() != Verdict::Unhealthy && !self.is_draining() && !self.is_ejected(now)
    }

    /// Effective weight at `now` under a slow start of `slow_start`: `weight` scaled by
    /// the fraction of the ramp elapsed since the backend became usable, and that
    /// fraction (1.0 when not ramping).
    pub fn ramp(&self, slow_start: Duration, now: Duration) -> f64 {
        let since = self.usable_since.load(Ordering::Relaxed);
        if slow_start.is_zero() || since == NEVER {
            return 1.0;
        }
        let elapsed = nanos(now).saturating_sub(since) as f64;
        (elapsed / nanos(slow_start) as f64).clamp(0.0, 1.0)
    }

    /// Records the outcome of one request (`ok`: a response below 500). After
    /// `outlier.consecutive_failures` failures in a row the backend is ejected for
    /// `ejection × count` (capped at `max_ejection`), if `may_eject()` agrees (the pool
    /// keeps within `max_ejected_percent`). Returns the ejection when one starts.
    pub fn record(
        &self,
        ok: bool,
        now: Duration,
        outlier: &Outlier,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Ejection> {
        if ok {
            // Read first: most requests succeed, and a store would bounce the cache line.
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if outlier.consecutive_failures == 0
            || failures < outlier.consecutive_failures
            || self.is_ejected(now)
        {
            return None;
        }
        let mut history = self.ejections.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_ejected(now) || !may_eject() {
            return None;
        }
        // A backend that has behaved for a whole max_ejection since its last ejection
        // starts counting from scratch.
        if history.count > 0
            && nanos(now).saturating_sub(history.last_end) > nanos(outlier.max_ejection)
        {
            history.count = 0;
        }
        history.count += 1;
        let duration = (outlier.ejection * history.count).min(outlier.max_ejection);
        self.ejected_until
            .store(nanos(now + duration).max(1), Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        Some(Ejection {
            count: history.count,
            duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn flapping_probes_never_flip_the_verdict() {
        let mut counter = ActiveCounter::new(Verdict::Healthy);
        for i in 0..100 {
            assert_eq!(counter.observe(i % 2 == 0, 2, 3), None, "probe {i}");
        }
        let mut counter = ActiveCounter::new(Verdict::Unhealthy);
        for i in 0..100 {
            assert_eq!(counter.observe(i % 2 == 1, 2, 3), None, "probe {i}");
        }
    }

    #[test]
    fn verdicts_change_after_their_thresholds() {
        let mut counter = ActiveCounter::new(Verdict::Unknown);
        assert_eq!(counter.observe(false, 2, 3), None);
        assert_eq!(counter.observe(false, 2, 3), None);
        assert_eq!(counter.observe(false, 2, 3), Some(Verdict::Unhealthy));
        assert_eq!(counter.observe(false, 2, 3), None);
        assert_eq!(counter.observe(true, 2, 3), None);
        assert_eq!(counter.observe(true, 2, 3), Some(Verdict::Healthy));
        let mut fresh = ActiveCounter::new(Verdict::Unknown);
        assert_eq!(
            fresh.observe(true, 2, 3),
            Some(Verdict::Healthy),
            "first success settles an unknown backend"
        );
    }

    #[test]
    fn consecutive_failures_eject_for_growing_capped_times() {
        let outlier = Outlier {
            consecutive_failures: 3,
            ejection: 10 * S,
            max_ejection: 25 * S,
            max_ejected_percent: 50,
        };
        let health = BackendHealth::default();
        let fail = |now| health.record(false, now, &outlier, || true);
        assert_eq!(fail(S), None);
        assert_eq!(fail(S), None);
        assert_eq!(
            fail(S),
            Some(Ejection {
                count: 1,
                duration: 10 * S
            })
        );
        assert!(!health.is_usable(5 * S));
        assert!(health.is_usable(11 * S + Duration::from_nanos(1)));
        health.ejection_ended(11 * S);
        // A success in between resets the run of failures.
        assert_eq!(fail(12 * S), None);
        assert_eq!(health.record(true, 12 * S, &outlier, || true), None);
        assert_eq!(fail(12 * S), None);
        assert_eq!(fail(12 * S), None);
        assert_eq!(
            fail(12 * S),
            Some(Ejection {
                count: 2,
                duration: 20 * S
            })
        );
        health.ejection_ended(32 * S);
        for _ in 0..2 {
            fail(33 * S);
        }
        assert_eq!(
            fail(33 * S),
            Some(Ejection {
                count: 3,
                duration: 25 * S
            }),
            "capped"
        );
        health.ejection_ended(58 * S);
        // Well behaved for longer than max_ejection: the count starts over.
        for _ in 0..2 {
            fail(100 * S);
        }
        assert_eq!(
            fail(100 * S),
            Some(Ejection {
                count: 1,
                duration: 10 * S
            })
        );
    }

    #[test]
    fn the_pool_may_refuse_an_ejection_and_zero_turns_passive_checks_off() {
        let mut outlier = Outlier {
            consecutive_failures: 1,
            ..Outlier::default()
        };
        let health = BackendHealth::default();
        assert_eq!(health.record(false, S, &outlier, || false), None);
        assert!(health.is_usable(S));
        outlier.consecutive_failures = 0;
        for _ in 0..100 {
            assert_eq!(health.record(false, S, &outlier, || true), None);
        }
    }

    #[test]
    fn recovery_ends_ejection_and_ramps_under_slow_start() {
        let health = BackendHealth::default();
        assert_eq!(
            health.ramp(10 * S, 5 * S),
            1.0,
            "usable from the start: no ramp"
        );
        health.set_verdict(Verdict::Unhealthy, S);
        assert!(!health.is_usable(S));
        health.set_verdict(Verdict::Healthy, 10 * S);
        assert!(health.is_usable(10 * S));
        assert_eq!(health.ramp(10 * S, 10 * S), 0.0);
        assert!((health.ramp(10 * S, 15 * S) - 0.5).abs() < 1e-9);
        assert_eq!(health.ramp(10 * S, 30 * S), 1.0);
        let added = BackendHealth::added(100 * S);
        assert!((added.ramp(10 * S, 102 * S) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn a_drain_begun_anew_counts_from_its_own_start() {
        let health = BackendHealth::default();
        assert_eq!(health.draining_since(), None);
        health.set_draining(true, Duration::from_secs(1));
        health.set_draining(true, Duration::from_secs(2));
        assert_eq!(
            health.draining_since(),
            Some(Duration::from_secs(1)),
            "still the first"
        );
        health.set_draining(false, Duration::from_secs(3));
        assert_eq!(health.draining_since(), None);
        health.set_draining(true, Duration::from_secs(4));
        assert_eq!(health.draining_since(), Some(Duration::from_secs(4)));
    }

    #[test]
    fn draining_backends_are_not_usable() {
        let health = BackendHealth::default();
        health.set_draining(true, S);
        assert!(!health.is_usable(S));
        health.set_draining(false, 2 * S);
        assert!(health.is_usable(2 * S));
        assert_eq!(
            health.ramp(10 * S, 2 * S),
            0.0,
            "re-enabled backends ramp up"
        );
    }
}
