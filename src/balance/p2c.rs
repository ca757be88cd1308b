//! Least request by the power of two choices.
//!
//! Each pick draws two *distinct* candidates uniformly at random and sends the request
//! to the less loaded of the two, load being `(in_flight + 1) / weight`: the load the
//! backend would have with this request, per unit of weight. Ratios are compared by
//! cross-multiplication in `u64`, exactly; on a tie the first drawn wins.
//!
//! Why it is right: Mitzenmacher ("The Power of Two Choices in Randomized Load
//! Balancing", IEEE TPDS 12(10), 2001; after Azar, Broder, Karlin and Upfal, 1994)
//! showed that choosing the lesser loaded of two random bins brings the maximum load
//! from `Θ(log n / log log n)` above average (one random choice) down to
//! `log log n / ln 2 + O(1)` — an exponential improvement — while a third choice only
//! adds a constant factor. Looking at two candidates instead of all of them also keeps a
//! pick `O(1)` at any pool size and avoids the herd effect of every worker sending its
//! next request to the same least-loaded backend on stale counts. The same design is
//! Envoy's `LEAST_REQUEST`, Finagle's and tower's `p2c` balancers.
//!
//! Two facts follow from the rule and are checked by tests: with two or more candidates
//! the strictly most-loaded one is never picked (it loses to whichever other candidate
//! it is drawn with), and a heavily loaded backend is therefore starved until it catches
//! up. The `+ 1` makes weights count among idle backends: with nothing in flight a
//! weight-2 backend still wins against a weight-1 one.

use super::{pickable, Balancer, Candidate, PickContext, SharedRng};

/// Power of two choices on `(in_flight + 1) / weight`, drawing from a seeded [`SharedRng`].
#[derive(Debug)]
pub struct LeastRequest {
    candidates: Box<[Candidate]>,
    rng: SharedRng,
}

impl LeastRequest {
    /// A least-request balancer over `candidates` (weight-zero ones dropped) whose random
    /// draws come from `seed`.
    pub fn new(candidates: Vec<Candidate>, seed: u64) -> Self {
        LeastRequest {
            candidates: pickable(candidates).into_boxed_slice(),
            rng: SharedRng::new(seed),
        }
    }
}

impl Balancer for LeastRequest {
    fn pick(&self, _ctx: &PickContext) -> Option<usize> {
        let n = self.candidates.len() as u64;
        match n {
            0 => return None,
            1 => return self.candidates.first().map(|c| c.index),
            _ => {}
        }
        let first = self.rng.below(n);
        // A uniform choice among the other n - 1 candidates: skip over `first`.
        let mut second = self.rng.below(n - 1);
        if second >= first {
            second += 1;
        }
        let a = self.candidates.get(first as usize)?;
        let b = self.candidates.get(second as usize)?;
        let load_a = u64::from(a.load.in_flight()) + 1;
        let load_b = u64::from(b.load.in_flight()) + 1;
        // load_a / a.weight <= load_b / b.weight, without division.
        if load_a * u64::from(b.weight) <= load_b * u64::from(a.weight) {
            Some(a.index)
        } else {
            Some(b.index)
        }
    }
}
