//! Smooth weighted round robin, as NGINX does it.
//!
//! The algorithm is NGINX's `ngx_http_upstream_get_peer` in
//! `src/http/ngx_http_upstream_round_robin.c` (introduced in NGINX 1.3.1, 2012). Every
//! candidate keeps a *current weight*, starting at zero. On each pick:
//!
//! 1. every candidate's current weight grows by its weight;
//! 2. the candidate with the largest current weight is picked (the first one on a tie);
//! 3. the picked candidate's current weight drops by the total of all weights.
//!
//! Why it is right (with `W` the total weight and `cᵢ` the current weights):
//! - **Exact per cycle.** Step 1 adds `W` to the sum of the `cᵢ` and step 3 removes it,
//!   so after every pick they sum to zero. They also stay above `−W`: after step 1 they
//!   sum to `W`, so the largest is positive and the picked one lands above `−W`, while
//!   the others only grow. After `t` picks, `cᵢ = t·wᵢ − xᵢ·W` where `xᵢ` counts the
//!   picks of `i`. At `t = W` every `cᵢ = W·(wᵢ − xᵢ)` is a multiple of `W` above `−W`,
//!   hence at least zero; they sum to zero, so all are zero: each candidate got exactly
//!   `wᵢ` picks and the state is back where it started — the sequence repeats with
//!   period `W`, whatever the weights.
//! - **Smooth.** Picks of a heavy backend are interleaved with the others instead of
//!   coming in one burst: with weights `{5, 1, 1}` the cycle is `a a b a c a a`, not
//!   `a a a a a b c`. A backend never gets more than `⌈max weight / min weight⌉` picks in
//!   a row (checked by a property test).
//!
//! Cost: one scan of all candidates per pick, under a [`Mutex`]. The lock is held for
//! a few nanoseconds per candidate, with no allocation or system call inside, so it is
//! short; the workers sharing a pool's balancer contend only when they pick within the
//! same few nanoseconds. Nothing inside the critical section can panic (the sums fit an
//! `i64` for any number of `u32` weights a pool can hold), so the lock is never poisoned
//! by this code; should it be anyway, its state is recovered, not propagated as a panic.

use std::sync::Mutex;

use super::{pickable, Balancer, Candidate, PickContext};

/// NGINX's smooth weighted round robin: exactly `weight` picks per cycle of
/// `sum(weights)` picks, heavy backends interleaved with light ones.
#[derive(Debug)]
pub struct SmoothWeighted {
    candidates: Box<[Candidate]>,
    /// Sum of all candidates' weights.
    total: i64,
    /// Current weight of each candidate, by position in `candidates`.
    current: Mutex<Box<[i64]>>,
}

impl SmoothWeighted {
    /// A smooth weighted round robin over `candidates` (weight-zero ones dropped).
    pub fn new(candidates: Vec<Candidate>) -> Self {
        let candidates = pickable(candidates).into_boxed_slice();
        let total = candidates.iter().map(|c| i64::from(c.weight)).sum();
        let current = vec![0; candidates.len()].into_boxed_slice();
        SmoothWeighted {
            candidates,
            total,
            current: Mutex::new(current),
        }
    }
}

impl Balancer for SmoothWeighted {
    fn pick(&self, _ctx: &PickContext) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut best: Option<usize> = None;
        let mut best_current = i64::MIN;
        for (position, (candidate, current)) in
            self.candidates.iter().zip(current.iter_mut()).enumerate()
        {
            *current += i64::from(candidate.weight);
            if *current > best_current {
                best_current = *current;
                best = Some(position);
            }
        }
        let best = best?;
        if let Some(picked) = current.get_mut(best) {
            *picked -= self.total;
        }
        self.candidates.get(best).map(|c| c.index)
    }
}
