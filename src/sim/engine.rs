//! The two loops that drive a balancer with virtual requests (the model is in the
//! parent module's doc).
//!
//! - [`in_sequence`]: for algorithms that never read load — one pick per request, in
//!   order, no time. The loop is the pick and one counter increment.
//! - [`in_virtual_time`]: for the load-aware algorithms — a closed loop of
//!   `concurrency` requests in flight, each holding its backend's
//!   [`crate::balance::InFlight`] guard until its virtual finish time, with a
//!   binary heap of finish times as the event queue. When the loop is full, the earliest
//!   request finishes (its guard drops, the clock moves to its finish time) before the
//!   next one is picked, so every pick sees the in-flight counts of that instant.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::balance::{BackendState, Balancer, InFlight, PickContext, SharedRng};

/// Where the requests went.
#[derive(Debug)]
pub(super) struct Outcome {
    /// Requests picked for each backend, by position in the pool.
    pub picks: Vec<u64>,
    /// Requests for which the balancer had no backend.
    pub unserved: u64,
}

impl Outcome {
    fn new(backends: usize) -> Outcome {
        Outcome {
            picks: vec![0; backends],
            unserved: 0,
        }
    }

    fn count(&mut self, picked: Option<usize>) {
        match picked.and_then(|i| self.picks.get_mut(i)) {
            Some(count) => *count += 1,
            None => self.unserved += 1,
        }
    }
}

/// Picks `requests` times in a row, each request's key from `next_key`.
pub(super) fn in_sequence(
    balancer: &dyn Balancer,
    backends: usize,
    requests: u64,
    next_key: impl Fn() -> Option<u64>,
) -> Outcome {
    let mut outcome = Outcome::new(backends);
    for _ in 0..requests {
        outcome.count(balancer.pick(&PickContext { key: next_key() }));
    }
    outcome
}

/// The closed loop's settings.
pub(super) struct VirtualTime {
    /// Requests to send.
    pub requests: u64,
    /// Requests in flight at once (at least 1).
    pub concurrency: u32,
    /// Draws service times.
    pub rng: SharedRng,
}

/// A request in flight: when it finishes, and the guard that counts it on its backend.
struct Running {
    finish: f64,
    /// Issue order, breaking ties between equal finish times deterministically.
    order: u64,
    _in_flight: InFlight,
}

impl PartialEq for Running {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Running {}

impl PartialOrd for Running {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Running {
    /// Reversed, so the max-heap [`BinaryHeap`] pops the earliest finish first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .finish
            .total_cmp(&self.finish)
            .then(other.order.cmp(&self.order))
    }
}

/// Runs the closed loop over `states` (whose loads the balancer was built over).
/// `service_rates[i]` is backend `i`'s rate (its capacity: mean service time
/// `1 / rate`), or `None` for a down backend, whose requests fail at once.
pub(super) fn in_virtual_time(
    balancer: &dyn Balancer,
    states: &[BackendState],
    service_rates: &[Option<f64>],
    settings: VirtualTime,
) -> Outcome {
    let mut outcome = Outcome::new(states.len());
    let concurrency = settings.concurrency.max(1) as usize;
    let mut running: BinaryHeap<Running> = BinaryHeap::with_capacity(concurrency + 1);
    let mut clock = 0.0_f64;
    for order in 0..settings.requests {
        if running.len() >= concurrency {
            if let Some(done) = running.pop() {
                clock = done.finish;
            }
        }
        let picked = balancer.pick(&PickContext { key: None });
        outcome.count(picked);
        let Some(index) = picked else { continue };
        let (Some(state), Some(Some(rate))) = (states.get(index), service_rates.get(index)) else {
            // Down (or unknown): the request fails at once and holds nothing.
            continue;
        };
        running.push(Running {
            finish: clock + exponential(&settings.rng, *rate),
            order,
            _in_flight: state.load.begin(),
        });
    }
    outcome
}

/// An exponentially distributed time with mean `1 / rate`, by inversion.
fn exponential(rng: &SharedRng, rate: f64) -> f64 {
    // A uniform number in (0, 1], so the logarithm is finite.
    let u = ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    -u.ln() / rate
}
