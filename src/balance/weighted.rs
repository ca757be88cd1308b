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
//! looking at its members. Its contender's `cᵢ = t·w − x·W` is shared by every member
//! with as many picks `x`: a line in `t` that drops by `W` only when the class completes
//! a round. So each step asks which of `classes` lines is highest at `t` (NGINX's tie
//! rule: then first in list order), where only the picked class's line changed since
//! the step before. A *kinetic tournament* answers that (Basch, Guibas and Hershberger,
//! "Data structures for mobile data", J. Algorithms 31(1), 1999): a binary tree over
//! the classes whose every node keeps the winner of its subtree and the step at which
//! the loser's steeper line will overtake it; a step replays only the nodes whose
//! overtaking step has come and the picked class's path to the root. Building costs
//! `O(log classes)` per step plus the overtakings it replays, which a node sees at most
//! as often as the upper envelope of the line pieces below it changes: `O((len +
//! classes) · log classes · α(len))` in all (α the inverse Ackermann function, below 5
//! for any input), i.e. `O(len · log n)` as with a binary heap, and less when weights
//! repeat; plus `len` entries of `u16`. Measured
//! on this project's 2-core machine (`cargo bench --bench balance`,
//! `pool_change/weighted_round_robin_build*`), 1,000 backends: 64 µs with weights 1 to 5
//! (3,000 picks, 5 classes), 2.0 ms with weights 1 to 100 (50,500 picks, 100 classes),
//! 59 ms with 1,000 distinct weights 1 to 1,000 (500,500 picks).
//!
//! Bounds: a pool's balancer is rebuilt on every health change and, during a slow-start
//! ramp, at every step (every 250 ms), so the cycle is precomputed only when it has at
//! most 2²⁰ picks ([`SmoothWeighted::MAX_CYCLE`]; 2 MiB of positions, and about 120 ms
//! to build with a thousand distinct weights, extrapolated from the 59 ms above) and
//! the pool at most 65,536 candidates. Any
//! 1,000 backends of weights up to 100 fit: at most 100,000 picks (200 KB), a few
//! milliseconds. Past a bound the balancer runs NGINX's per-pick scan instead, under a
//! [`Mutex`]: the lock is held for a few nanoseconds per candidate, with no allocation
//! or system call inside; nothing in it can panic (the sums fit an `i64` for any number
//! of `u32` weights a pool can hold), and a poisoned lock is recovered, not propagated.
//! Both paths give the same sequence, which property tests check.
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

    /// A smooth weighted round robin over `candidates` (weight-zero ones dropped),
    /// with its cycle precomputed when it is within [`Self::MAX_CYCLE`].
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
    /// `x·W`, with `x` the contender's picks so far: its current weight at step `t` is
    /// `t·w − x·W`. All members with `x` picks share it, so it grows by `W` only when a
    /// round ends.
    picked: i64,
}

impl WeightClass {
    /// The contender's current weight at step `t` (after step 1).
    fn current(&self, t: i64) -> i64 {
        t * self.weight - self.picked
    }
}

/// Whether class `a`'s contender beats class `b`'s at step `t`: a larger current weight,
/// or the same and first in list order (NGINX's tie rule).
fn beats(a: &WeightClass, b: &WeightClass, t: i64) -> bool {
    let (ca, cb) = (a.current(t), b.current(t));
    ca > cb || (ca == cb && a.position < b.position)
}

/// The first step after `t` at which `loser` may beat `winner` (which beats it at `t`),
/// if neither changes: never when the loser's weight is not larger, since the winner's
/// lead then never shrinks; otherwise when the lead, shrinking by the difference of
/// the weights per step, is gone (or reaches zero with the loser first in list order).
fn overtaken_at(winner: &WeightClass, loser: &WeightClass, t: i64) -> i64 {
    let gain = loser.weight - winner.weight;
    if gain <= 0 {
        return i64::MAX;
    }
    let lead = winner.current(t) - loser.current(t);
    let steps = if loser.position < winner.position {
        (lead + gain - 1) / gain
    } else {
        lead / gain + 1
    };
    t + steps.max(1)
}

/// A kinetic tournament over the weight classes (Basch, Guibas and Hershberger,
/// "Data structures for mobile data", 1999): a complete binary tree whose node `k` holds
/// the winner of its subtree at the current step and the step its comparison may flip,
/// so a step only revisits the nodes whose comparison has expired and the picked
/// class's path to the root.
struct Tournament {
    /// Leaves start here; node `k` has children `2k` and `2k + 1`; the root is node 1.
    leaves: usize,
    /// Winning class of each node's subtree, `None` for padding.
    winner: Vec<Option<usize>>,
    /// Earliest step at which anything in each node's subtree may change its winner.
    expires: Vec<i64>,
}

impl Tournament {
    /// The tournament of `classes` at step 1.
    fn new(classes: &[WeightClass]) -> Self {
        let leaves = classes.len().next_power_of_two();
        let mut winner = vec![None; 2 * leaves];
        for (class_at, slot) in winner
            .iter_mut()
            .skip(leaves)
            .take(classes.len())
            .enumerate()
        {
            *slot = Some(class_at);
        }
        let mut tournament = Tournament {
            leaves,
            winner,
            expires: vec![i64::MAX; 2 * leaves],
        };
        for node in (1..leaves).rev() {
            tournament.replay(node, classes, 1);
        }
        tournament
    }

    /// Recomputes node `node` at step `t` from its children's winners.
    fn replay(&mut self, node: usize, classes: &[WeightClass], t: i64) {
        let (left, right) = (2 * node, 2 * node + 1);
        let pair = (
            self.winner.get(left).copied().flatten(),
            self.winner.get(right).copied().flatten(),
        );
        let (winner, expires) = match pair {
            (Some(l), Some(r)) => match (classes.get(l), classes.get(r)) {
                (Some(a), Some(b)) if beats(a, b, t) => (Some(l), overtaken_at(a, b, t)),
                (Some(a), Some(b)) => (Some(r), overtaken_at(b, a, t)),
                _ => (None, i64::MAX),
            },
            (one, None) | (None, one) => (one, i64::MAX),
        };
        let below = |k: usize| self.expires.get(k).copied().unwrap_or(i64::MAX);
        let expires = expires.min(below(left)).min(below(right));
        if let Some(slot) = self.winner.get_mut(node) {
            *slot = winner;
        }
        if let Some(slot) = self.expires.get_mut(node) {
            *slot = expires;
        }
    }

    /// Brings node `node`'s subtree up to step `t`: replays, children first, every node
    /// whose comparison has expired.
    fn catch_up(&mut self, node: usize, classes: &[WeightClass], t: i64) {
        if node >= self.leaves || self.expires.get(node).is_none_or(|&e| e > t) {
            return;
        }
        self.catch_up(2 * node, classes, t);
        self.catch_up(2 * node + 1, classes, t);
        self.replay(node, classes, t);
    }

    /// Replays the path from class `class_at`'s leaf to the root at step `t`.
    fn replay_path(&mut self, class_at: usize, classes: &[WeightClass], t: i64) {
        let mut node = (self.leaves + class_at) / 2;
        while node >= 1 {
            self.replay(node, classes, t);
            node /= 2;
        }
    }
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
    let total = i64::try_from(len).ok()?;
    let mut classes = Vec::with_capacity(by_weight.len());
    for (weight, members) in by_weight {
        classes.push(WeightClass {
            weight: i64::from(weight),
            position: *members.first()?,
            members,
            next: 0,
            picked: 0,
        });
    }
    let mut tournament = Tournament::new(&classes);
    let mut cycle = Vec::with_capacity(len);
    for t in 1..=total {
        // Steps 1 and 2: the contender with the largest current weight (first in list
        // order on a tie) is the tournament's winner at step t.
        tournament.catch_up(1, &classes, t);
        let class_at = tournament.winner.get(1).copied().flatten()?;
        let class = classes.get_mut(class_at)?;
        cycle.push(class.position);
        // Step 3: the class's round robin moves on; when every member has had its pick
        // this round, the contender is again one with a pick more, W lower.
        class.next += 1;
        if class.next == class.members.len() {
            class.next = 0;
            class.picked += total;
        }
        class.position = *class.members.get(class.next)?;
        tournament.replay_path(class_at, &classes, t);
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
