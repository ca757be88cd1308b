//! Least connections: the candidate with the fewest in-flight requests per unit of
//! weight — exactly, over every candidate, in pools of up to 32
//! ([`LeastConnections::EXACT_UP_TO`]); in larger pools, over 16 candidates
//! ([`LeastConnections::LOOKS`]): the one in turn and the rest drawn at random.
//!
//! The rule is NGINX's `least_conn` and HAProxy's `leastconn`: minimise
//! `in_flight / weight`, so a weight-2 backend is "as loaded" as a weight-1 backend when
//! it has twice the requests in flight. The ratio is compared by cross-multiplication in
//! `u64` (`a.in_flight · b.weight < b.in_flight · a.weight`), exact for any `u32` counts
//! and weights, with no floats.
//!
//! **Small pools: every candidate.** With up to 32 candidates a pick scans them all
//! (tens of nanoseconds) and the result is, by construction, a candidate of minimal
//! ratio among all of them at the moment each was read.
//!
//! **Large pools: 16 of them.** A scan costs about a nanosecond per candidate, a
//! microsecond at 1,000 backends. So above 32 a pick looks at 16 candidates — the one
//! whose turn it is (a rotating counter) and 15 drawn uniformly at random, with
//! replacement, from the seeded [`SharedRng`] — and takes the least loaded of those.
//! This is the power of `d` choices (Azar, Broder, Karlin and Upfal, 1994;
//! Mitzenmacher, IEEE TPDS 12(10), 2001): with `d` random candidates the most loaded
//! backend sits `ln ln n / ln d + O(1)` above the average, against
//! `Θ(log n / log log n)` for one random choice; [`super::LeastRequest`] is the `d = 2`
//! case, and 15 random candidates (the one in turn only adds to them) bring the gap to
//! about a quarter of that of two choices (`ln 2 / ln 15`). Put
//! plainly: a pick goes to a backend among the most loaded tenth of the pool only when
//! all 16 candidates it looked at are in that tenth (ties aside), about one pick in
//! 10¹⁶. Looking at a sample rather than at all of them also damps the herd effect of
//! every worker sending its next request to the same backend on stale counts.
//!
//! **Ties rotate.** Ties are common (every idle backend has zero in flight), and
//! breaking them always towards the same candidate would send an idle pool's traffic to
//! one backend. Candidates are looked at starting from a rotating position, and a later
//! one replaces the best only when strictly less loaded: in a small pool the tied
//! candidates share the picks round robin; in a large one the candidate whose turn it
//! is wins every tie, so an idle pool is served exactly round robin too.
//!
//! The loads are read with relaxed atomics while other threads change them, so under
//! concurrency the minimum is of a snapshot that may be a few requests stale — the same
//! as every least-connections balancer, and harmless: the error is bounded by the picks
//! made concurrently.
//!
//! Cost: a scan of up to 32 candidates, or 16 looks (one counter increment, one shared
//! random draw, then 15 draws from a local SplitMix64 stream):
//! constant in the pool's size, about 60 ns at 100 or 1,000 backends on this project's
//! machine against about 1 µs for a full scan of 1,000 (docs/benchmarks.md).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{pickable, Balancer, Candidate, PickContext, SharedRng};

/// Fewest in-flight requests relative to weight among the candidates it looks at (all of
/// them up to [`Self::EXACT_UP_TO`], [`Self::LOOKS`] above); ties spread evenly.
#[derive(Debug)]
pub struct LeastConnections {
    candidates: Box<[Candidate]>,
    /// Whose turn it is: where the next scan starts, so ties rotate among the tied.
    next_start: AtomicU64,
    /// Draws the random candidates looked at in large pools.
    rng: SharedRng,
}

impl LeastConnections {
    /// Largest pool in which every pick scans every candidate, so picks are exactly
    /// least loaded: 32 candidates.
    pub const EXACT_UP_TO: usize = 32;

    /// Candidates a pick looks at in a pool larger than [`Self::EXACT_UP_TO`]: 16.
    pub const LOOKS: usize = 16;

    /// A least-connections balancer over `candidates` (weight-zero ones dropped) whose
    /// random draws (in pools above [`Self::EXACT_UP_TO`]) come from `seed`.
    pub fn new(candidates: Vec<Candidate>, seed: u64) -> Self {
        LeastConnections {
            candidates: pickable(candidates).into_boxed_slice(),
            next_start: AtomicU64::new(0),
            rng: SharedRng::new(seed),
        }
    }

    /// Calls `visit` on each candidate the next pick looks at, in order: all of them
    /// from the rotating start, or the one in turn and `LOOKS − 1` random ones.
    fn look_at<'a>(&'a self, mut visit: impl FnMut(&'a Candidate)) {
        let n = self.candidates.len();
        if n == 0 {
            return;
        }
        let start = (self.next_start.fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
        if n <= Self::EXACT_UP_TO {
            // From `start` to the end, then round to the candidates before it.
            let (wrapped, from_start) = self.candidates.split_at(start);
            from_start.iter().chain(wrapped).for_each(visit);
            return;
        }
        if let Some(in_turn) = self.candidates.get(start) {
            visit(in_turn);
        }
        let mut draws = self.rng.split();
        for _ in 1..Self::LOOKS {
            if let Some(drawn) = self.candidates.get(draws.below(n as u64) as usize) {
                visit(drawn);
            }
        }
    }

    /// The pool positions ([`Candidate::index`]) the next pick would look at, drawing
    /// them as a pick does; for tests comparing a balancer with a twin of the same seed.
    #[cfg(test)]
    pub(super) fn looked_at(&self) -> Vec<usize> {
        let mut seen = Vec::new();
        self.look_at(|c| seen.push(c.index));
        seen
    }
}

impl Balancer for LeastConnections {
    fn pick(&self, _ctx: &PickContext) -> Option<usize> {
        let mut best: Option<(&Candidate, u64)> = None;
        self.look_at(|candidate| {
            let load = u64::from(candidate.load.in_flight());
            // load / weight < best_load / best.weight, without division.
            let better = best.is_none_or(|(best, best_load)| {
                load * u64::from(best.weight) < best_load * u64::from(candidate.weight)
            });
            if better {
                best = Some((candidate, load));
            }
        });
        best.map(|(candidate, _)| candidate.index)
    }
}
