//! Weighted random: each pick independent, each candidate with probability
//! `weight / total weight`.
//!
//! The candidates' weights are laid end to end on `0..total` as prefix sums (built once,
//! with the balancer). A pick draws a uniform integer `r` in `0..total` from the seeded
//! [`SharedRng`] and returns the candidate whose interval `[prefixᵢ₋₁, prefixᵢ)` holds
//! it, found by binary search (`O(log n)`, no allocation).
//!
//! Why it is right: candidate `i`'s interval holds exactly `wᵢ` of the `total` equally
//! likely values of `r` (the draw is exactly uniform: [`SharedRng::below`] rejects the
//! biased draws), so it is picked with probability `wᵢ / total`. Picks are independent,
//! so counts over `N` picks are binomial: the property tests hold them within five
//! standard deviations of `N · wᵢ / total`. Unlike the round robins it keeps no shared
//! mutable state beyond the generator's counter, and unlike them it is only right on
//! average: short runs can be lumpy.

use super::{pickable, Balancer, Candidate, PickContext, SharedRng};

/// Independent picks with probability proportional to weight, from a seeded [`SharedRng`].
#[derive(Debug)]
pub struct WeightedRandom {
    candidates: Box<[Candidate]>,
    /// `prefix[i]` is the sum of the weights of candidates `0..=i`.
    prefix: Box<[u64]>,
    rng: SharedRng,
}

impl WeightedRandom {
    /// A weighted random balancer over `candidates` (weight-zero ones dropped) whose
    /// draws come from `seed`.
    pub fn new(candidates: Vec<Candidate>, seed: u64) -> Self {
        let candidates = pickable(candidates).into_boxed_slice();
        let prefix = candidates
            .iter()
            .scan(0u64, |sum, c| {
                *sum += u64::from(c.weight);
                Some(*sum)
            })
            .collect();
        WeightedRandom {
            candidates,
            prefix,
            rng: SharedRng::new(seed),
        }
    }
}

impl Balancer for WeightedRandom {
    fn pick(&self, _ctx: &PickContext) -> Option<usize> {
        let total = *self.prefix.last()?;
        let r = self.rng.below(total);
        // The first candidate whose interval ends beyond r.
        let position = self.prefix.partition_point(|&end| end <= r);
        self.candidates.get(position).map(|c| c.index)
    }
}
