//! A seedable random number generator that every worker thread can share.
//!
//! The random algorithms ([`super::LeastRequest`], [`super::WeightedRandom`] and the
//! keyless side of [`super::ConsistentHash`]) need a cheap source of randomness on the
//! request path, reachable from `&self` by many threads at once, and repeatable for a
//! given seed so that tests, `simulate` and `preflight` see the same picks every time
//! (STYLE.md, "Deterministic where it matters").
//!
//! [`SharedRng`] is SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
//! number generators", OOPSLA 2014; the generator Java's `SplittableRandom` uses and
//! Vigna recommends for seeding xoshiro). Its state is a Weyl sequence: a counter that
//! advances by the odd "golden gamma" `0x9e3779b97f4a7c15` at every draw, and each
//! output is a strong 64-bit mix of the new counter value. Because advancing the state
//! is a plain addition, it can be one `fetch_add` on an [`AtomicU64`]: no lock, no
//! compare-and-swap loop, and no two threads ever draw the same state (the additions
//! are serialised by the atomic, and the Weyl sequence has period 2^64). With a single
//! thread the sequence is exactly the one of the reference SplitMix64 for the seed; with
//! several threads each draw still gets a distinct state, only the interleaving varies.
//!
//! A pick that needs several draws takes one from the shared generator and seeds a
//! [`LocalRng`] with it ([`SharedRng::split`]): the rest of its draws are plain
//! arithmetic on a local SplitMix64 state, one atomic operation in all.
//!
//! It is a statistical generator, not a cryptographic one: fine for spreading load,
//! unsuitable for anything an attacker must not predict.

use std::sync::atomic::{AtomicU64, Ordering};

/// The increment of SplitMix64's Weyl sequence: 2^64 divided by the golden ratio, made odd.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64 over an atomic counter: seedable, lock-free, shareable by `&self`.
#[derive(Debug)]
pub struct SharedRng {
    state: AtomicU64,
}

impl SharedRng {
    /// A generator whose single-threaded output is SplitMix64's sequence for `seed`.
    pub fn new(seed: u64) -> Self {
        SharedRng {
            state: AtomicU64::new(seed),
        }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&self) -> u64 {
        // `fetch_add` returns the previous value; the reference algorithm mixes the new one.
        let state = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        mix64(state)
    }

    /// A uniformly distributed integer in `0..n`; `0` when `n` is `0`.
    ///
    /// Lemire's multiply-shift ("Fast random integer generation in an interval",
    /// ACM TOMACS 2019) with its rejection step, so the result is exactly uniform. The
    /// rejection (and its one division) happens with probability below `n / 2^64`.
    pub fn below(&self, n: u64) -> u64 {
        below(n, || self.next_u64())
    }

    /// A generator for one caller's several draws, seeded by one draw of this one.
    pub fn split(&self) -> LocalRng {
        LocalRng {
            state: self.next_u64(),
        }
    }
}

/// SplitMix64 over a plain counter, for one thread's short run of draws (see
/// [`SharedRng::split`]).
#[derive(Debug)]
pub struct LocalRng {
    state: u64,
}

impl LocalRng {
    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A uniformly distributed integer in `0..n`; `0` when `n` is `0` (as
    /// [`SharedRng::below`]).
    pub fn below(&mut self, n: u64) -> u64 {
        below(n, || self.next_u64())
    }
}

/// Lemire's exactly uniform `0..n` from the 64-bit draws of `next`.
fn below(n: u64, mut next: impl FnMut() -> u64) -> u64 {
    let mut product = u128::from(next()) * u128::from(n);
    let mut low = product as u64;
    if low < n {
        // Draws whose low half falls under `2^64 mod n` would over-represent some
        // results; redraw them.
        let threshold = n.wrapping_neg() % n;
        while low < threshold {
            product = u128::from(next()) * u128::from(n);
            low = product as u64;
        }
    }
    (product >> 64) as u64
}

/// SplitMix64's output function (Stafford's "Mix13" variant of MurmurHash3's finaliser).
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
