//! Round robin: each candidate in turn, weights ignored.
//!
//! One atomic counter, advanced by `fetch_add` on every pick; the pick is the counter
//! modulo the number of candidates. `fetch_add` hands every pick a distinct counter
//! value, so any `n` consecutive draws of the counter cover each of the `n` candidates
//! exactly once — even when worker threads interleave — and over any run of picks the
//! counts differ by at most one. (The counter is 64 bits: it would take centuries at a
//! billion picks a second to wrap, and the wrap costs one uneven cycle.)
//!
//! This is the algorithm to use when the backends are alike; when they are not, weights
//! say so and [`super::SmoothWeighted`] honours them.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{pickable, Balancer, Candidate, PickContext};

/// Each candidate in turn through an atomic counter; exact per cycle of `n` picks.
#[derive(Debug)]
pub struct RoundRobin {
    candidates: Box<[Candidate]>,
    next: AtomicU64,
}

impl RoundRobin {
    /// A round robin over `candidates` (weight-zero ones dropped), starting at the first.
    pub fn new(candidates: Vec<Candidate>) -> Self {
        RoundRobin {
            candidates: pickable(candidates).into_boxed_slice(),
            next: AtomicU64::new(0),
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, _ctx: &PickContext) -> Option<usize> {
        let n = self.candidates.len() as u64;
        if n == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % n;
        self.candidates.get(turn as usize).map(|c| c.index)
    }
}
