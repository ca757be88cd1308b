//! Least connections: the candidate with the fewest in-flight requests per unit of weight.
//!
//! Every pick scans all candidates and takes one minimising `in_flight / weight` — the
//! rule of NGINX's `least_conn` and HAProxy's `leastconn`. A weight-2 backend is thus
//! "as loaded" as a weight-1 backend when it has twice the requests in flight. The ratio
//! is compared by cross-multiplication in `u64` (`a.in_flight · b.weight <
//! b.in_flight · a.weight`), exact for any `u32` counts and weights, with no floats.
//!
//! Ties are common (every idle backend has zero in flight), and breaking them always
//! towards the first candidate would send an idle pool's traffic to one backend. So the
//! scan starts at a rotating offset (an atomic counter) and a later candidate replaces
//! the best only when strictly better: among tied candidates the pick goes round robin.
//!
//! Why it is right: the result is, by construction, a candidate of minimal ratio among
//! all of them at the moment each was read. The loads are read with relaxed atomics
//! while other threads change them, so under concurrency the minimum is of a snapshot
//! that may be a few requests stale — the same as every least-connections balancer, and
//! harmless: the error is bounded by the picks made concurrently.
//!
//! Cost: one scan per pick, `O(n)`; with thousands of backends prefer
//! [`super::LeastRequest`], which looks at two.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{pickable, Balancer, Candidate, PickContext};

/// Fewest in-flight requests relative to weight over all candidates; ties spread evenly.
#[derive(Debug)]
pub struct LeastConnections {
    candidates: Box<[Candidate]>,
    /// Where the next scan starts, so ties rotate among the tied candidates.
    next_start: AtomicU64,
}

impl LeastConnections {
    /// A least-connections balancer over `candidates` (weight-zero ones dropped).
    pub fn new(candidates: Vec<Candidate>) -> Self {
        LeastConnections {
            candidates: pickable(candidates).into_boxed_slice(),
            next_start: AtomicU64::new(0),
        }
    }
}

impl Balancer for LeastConnections {
    fn pick(&self, _ctx: &PickContext) -> Option<usize> {
        let n = self.candidates.len();
        if n == 0 {
            return None;
        }
        let start = (self.next_start.fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
        // Scan from `start` to the end, then wrap round to the candidates before it.
        let (wrapped, from_start) = self.candidates.split_at(start);
        let mut scan = from_start.iter().chain(wrapped);
        let mut best = scan.next()?;
        let mut best_load = u64::from(best.load.in_flight());
        for candidate in scan {
            let load = u64::from(candidate.load.in_flight());
            // load / weight < best_load / best.weight, without division.
            if load * u64::from(best.weight) < best_load * u64::from(candidate.weight) {
                best = candidate;
                best_load = load;
            }
        }
        Some(best.index)
    }
}
