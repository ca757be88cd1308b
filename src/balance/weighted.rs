//! Smooth weighted round robin, as NGINX does it — one cycle precomputed, so a pick is
//! one atomic increment and one table read.
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
//! # One cycle, computed once
//!
//! NGINX runs those three steps on every request, a scan of all peers under the
//! upstream's lock: about 1 µs per pick at 1,000 backends. But the sequence depends on
//! nothing but the weights, and it is periodic, so [`SmoothWeighted::new`] computes one
//! period up front and a pick is `cycle[turn % len]`, `turn` being a shared atomic
//! counter: `O(1)`, lock-free, and exact across threads (every pick takes a distinct
//! turn, so any `len` consecutive turns are one whole cycle, however threads interleave).
//!
//! The period is shorter than `W` when the weights share a factor: with `g` the greatest
//! common divisor of the weights, every `cᵢ` stays a multiple of `g`, so the run is the
//! one of the weights `wᵢ / g` scaled by `g` — same comparisons, same ties, same picks —
//! and it repeats every `Σ wᵢ / g` picks. Weights `{50, 10, 10}` cycle like `{5, 1, 1}`.
//!
//! Computing the cycle does not scan every candidate per pick either. Candidates of
//! equal weight have equal `wᵢ`, so among them `cᵢ` is largest for the one with the
//! fewest picks, and the first such in list order wins ties: within a *weight class*
//! the picks go round robin in list order, and the class's next pick is known without
//! looking at its members. Its contender's `cᵢ` is shared by every member with as many
//! picks, so it grows by `w` per step and drops by `W` only when the class completes a
//! round. Each step of the cycle therefore compares one contender per class, with
//! NGINX's tie rule (largest `cᵢ`, then first in list order): `O(len · classes)` time,
//! where `classes` is the number of distinct weights (5 with weights 1 to 5, at most
//! 100 with weights up to 100; a slow-start ramp adds one per backend ramping on its
//! own schedule), and `len` entries of `u16`. For the few distinct weights pools
//! usually have this beats a binary heap's `O(len · log n)`, with no allocation per
//! step; its worst case is capped below. Measured on this project's 2-core machine
//! (`cargo bench --bench balance`, `pool_change/weighted_round_robin_build*`): about
//! 1 ns per class per step — 34 µs for 1,000 backends of weights 1 to 5 (3,000 picks,
//! 5 classes), 5 ms for 1,000 backends of weights 1 to 100 (50,500 picks, 100
//! classes).
//!
//! Bounds (a pool's balancer is rebuilt on every health change and, during a slow-start
//! ramp, at every step — every 250 ms — so the build must stay cheap): the cycle is
//! precomputed when it has at most 2²⁰ picks ([`SmoothWeighted::MAX_CYCLE`]; 2 MiB of
//! positions), the build does at most 2²⁴ class comparisons
//! ([`SmoothWeighted::MAX_BUILD_STEPS`]; about 17 ms at the rate above, under 7% of a
//! core during a ramp), and the pool has at most 65,536 candidates. Any
//! 1,000 backends of weights up to 100 fit: at most 100,000 picks (200 KB) and 10⁷
//! comparisons. Past a bound the balancer runs NGINX's per-pick scan instead, under a
//! [`Mutex`]: the lock is held for a few nanoseconds per candidate, with no allocation
//! or system call inside; nothing in it can panic (the sums fit an `i64` for any number
//! of `u32` weights a pool can hold), and a poisoned lock is recovered, not propagated.
//! Both paths give the same sequence, which a property test checks.
//!
//! The turn counter is a `u64`: at a billion picks a second it wraps after 584 years.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{pickable, Balancer, Candidate, PickContext};

/// NGINX's smooth weighted round robin: exactly `weight` picks per cycle of
/// `sum(weights)` picks, heavy backends interleaved with light ones.
#[derive(Debug)]
pub struct SmoothWeighted {
    candidates: Box<[Candidate]>,
    order: Order,
}

/// How the next pick is found.
#[derive(Debug)]
enum Order {
    /// One precomputed cycle of positions in `candidates`; pick `cycle[turn % len]`.
    Cycle {
        cycle: Box<[u16]>,
        next_turn: AtomicU64,
    },
    /// NGINX's per-pick scan of every candidate's current weight.
    Scan {
        /// Sum of all candidates' weights.
        total: i64,
        /// Current weight of each candidate, by position in `candidates`.
        current: Mutex<Box<[i64]>>,
    },
}

impl SmoothWeighted {
    /// Longest cycle, in picks, that [`Self::new`] precomputes: 2²⁰ (2 MiB of
    /// `u16` positions). Longer cycles are picked by NGINX's per-pick scan.
    pub const MAX_CYCLE: usize = 1 << 20;

    /// Most class comparisons (cycle length × distinct weights) spent building a cycle:
    /// 2²⁴, about 17 ms on this project's machine. Costlier cycles are picked by NGINX's
    /// per-pick scan.
    pub const MAX_BUILD_STEPS: usize = 1 << 24;

    /// A smooth weighted round robin over `candidates` (weight-zero ones dropped),
    /// with its cycle precomputed when it is within [`Self::MAX_CYCLE`] and
    /// [`Self::MAX_BUILD_STEPS`].
    pub fn new(candidates: Vec<Candidate>) -> Self {
        let candidates = pickable(candidates).into_boxed_slice();
        let order = match precompute_cycle(&candidates) {
            Some(cycle) => Order::Cycle {
                cycle,
                next_turn: AtomicU64::new(0),
            },
            None => scan_order(&candidates),
        };
        SmoothWeighted { candidates, order }
    }

    /// The same balancer without a precomputed cycle: NGINX's per-pick scan, whatever
    /// the weights. The reference the tests compare the cycle against.
    pub fn scanning(candidates: Vec<Candidate>) -> Self {
        let candidates = pickable(candidates).into_boxed_slice();
        let order = scan_order(&candidates);
        SmoothWeighted { candidates, order }
    }

    /// Picks per cycle when the cycle is precomputed; `None` when picks scan.
    pub fn cycle_len(&self) -> Option<usize> {
        match &self.order {
            Order::Cycle { cycle, .. } => Some(cycle.len()),
            Order::Scan { .. } => None,
        }
    }
}

fn scan_order(candidates: &[Candidate]) -> Order {
    Order::Scan {
        total: candidates.iter().map(|c| i64::from(c.weight)).sum(),
        current: Mutex::new(vec![0; candidates.len()].into_boxed_slice()),
    }
}

/// Candidates of one weight, and how far their round robin has gone.
struct WeightClass {
    /// The weight divided by the weights' greatest common divisor.
    weight: i64,
    /// Positions in the candidate list, ascending; never empty.
    members: Vec<u16>,
    /// Where the class's contender is in `members`: its member with the fewest picks,
    /// first in list order, i.e. the next in its round robin.
    next: usize,
    /// The contender's position in the candidate list (`members[next]`).
    position: u16,
    /// The contender's current weight, `t·w − x·W` with `x` its picks so far: all
    /// members with `x` picks share it, so it drops by `W` only when a round ends.
    current: i64,
}

/// One period of NGINX's sequence as positions in `candidates`, or `None` when there
/// is nothing to pick or a bound is exceeded.
fn precompute_cycle(candidates: &[Candidate]) -> Option<Box<[u16]>> {
    let divisor = candidates.iter().fold(0, |g, c| gcd(g, c.weight));
    if divisor == 0 {
        return None; // No candidates (pickable ones have weight above zero).
    }
    let mut by_weight: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
    for (position, candidate) in candidates.iter().enumerate() {
        by_weight
            .entry(candidate.weight / divisor)
            .or_default()
            .push(u16::try_from(position).ok()?);
    }
    let len: u64 = candidates
        .iter()
        .map(|c| u64::from(c.weight / divisor))
        .sum();
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= SmoothWeighted::MAX_CYCLE)?;
    if len.saturating_mul(by_weight.len()) > SmoothWeighted::MAX_BUILD_STEPS {
        return None;
    }
    let total = i64::try_from(len).ok()?;
    let mut classes = Vec::with_capacity(by_weight.len());
    for (weight, members) in by_weight {
        classes.push(WeightClass {
            weight: i64::from(weight),
            position: *members.first()?,
            members,
            next: 0,
            current: 0,
        });
    }
    let mut cycle = Vec::with_capacity(len);
    for _ in 0..len {
        // Step 1 for every contender, and step 2: the largest current weight, the first
        // in list order on a tie. (current weight, position, class) of the winner so far:
        let mut best = (i64::MIN, u16::MAX, 0);
        for (class_at, class) in classes.iter_mut().enumerate() {
            class.current += class.weight;
            if class.current > best.0 || (class.current == best.0 && class.position < best.1) {
                best = (class.current, class.position, class_at);
            }
        }
        let class = classes.get_mut(best.2)?;
        cycle.push(class.position);
        // Step 3: the class's round robin moves on; when every member has had its pick
        // this round, the contender is again one with a pick more, W lower.
        class.next += 1;
        if class.next == class.members.len() {
            class.next = 0;
            class.current -= total;
        }
        class.position = *class.members.get(class.next)?;
    }
    Some(cycle.into_boxed_slice())
}

/// Greatest common divisor (Euclid); `gcd(0, b) = b`.
fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Balancer for SmoothWeighted {
    fn pick(&self, _ctx: &PickContext) -> Option<usize> {
        let position = match &self.order {
            Order::Cycle { cycle, next_turn } => {
                let turn = next_turn.fetch_add(1, Ordering::Relaxed);
                let at = turn.checked_rem(cycle.len() as u64)?;
                usize::from(*cycle.get(at as usize)?)
            }
            Order::Scan { total, current } => scan_pick(&self.candidates, *total, current)?,
        };
        self.candidates.get(position).map(|c| c.index)
    }
}

/// One step of NGINX's `ngx_http_upstream_get_peer`: the position picked.
fn scan_pick(candidates: &[Candidate], total: i64, current: &Mutex<Box<[i64]>>) -> Option<usize> {
    let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
    let mut best: Option<usize> = None;
    let mut best_current = i64::MIN;
    for (position, (candidate, current)) in candidates.iter().zip(current.iter_mut()).enumerate() {
        *current += i64::from(candidate.weight);
        if *current > best_current {
            best_current = *current;
            best = Some(position);
        }
    }
    let best = best?;
    if let Some(picked) = current.get_mut(best) {
        *picked -= total;
    }
    Some(best)
}
