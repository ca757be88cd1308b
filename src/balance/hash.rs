//! Consistent hashing: Maglev lookup tables, weighted, and the stable key hash they use.
//!
//! A pool with `algorithm = "consistent_hash"` sends every request carrying the same key
//! (a header, a cookie, the client address or the path; see `hash_key`) to the same
//! backend for as long as that backend stays in the pool, and when backends come and go
//! moves as few keys as it can. That is what caches and sticky sessions behind the pool
//! rely on.
//!
//! # The key hash
//! [`key_hash`] is FNV-1a 64 over the key's bytes followed by MurmurHash3's `fmix64`
//! finaliser. Both are fixed, published algorithms written out here (not `std`'s
//! `DefaultHasher`, whose output may change between Rust releases, nor a randomly
//! seeded hasher), so a key maps to the same slot on every machine, in every release and
//! in every instance of a fleet. FNV-1a alone is fast on short keys but mixes poorly:
//! a multiplication only carries upwards, so its low bits depend only on the low bits
//! of the input bytes. The finaliser spreads every input bit over all 64 output bits
//! (it is a bijection with full avalanche), which the table lookup's `h mod M` needs. It is not a
//! keyed hash: a client that picks its own keys can aim them at one backend, as with any
//! unkeyed consistent hash; a key the client cannot choose (a session cookie the
//! application sets) avoids that.
//!
//! # The table
//! [`ConsistentHash`] is Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, §3.4). A lookup table of prime size `M`
//! maps each slot to a candidate; a request with key hash `h` goes to `table[h mod M]`,
//! one array read. The table is filled by letting candidates take turns; on its turn a
//! candidate claims the next still-empty slot of its own *permutation* of the slots,
//! `offset, offset + skip, offset + 2·skip, … (mod M)`, where `offset ∈ [0, M)` and
//! `skip ∈ [1, M)` come from hashing the candidate's [`Candidate::identity`]. `M` being
//! prime, every such sequence visits every slot, so a turn always finds an empty one.
//!
//! Why it is right:
//! - **Balance.** Each turn claims exactly one slot, so a candidate's share of the table
//!   is its share of the turns. In the paper every candidate takes one turn per round,
//!   giving equal shares within one slot. Here turns are weighted: candidate `i` takes
//!   its `k`-th turn at virtual time `k / wᵢ`, and turns are taken in time order (ties by
//!   identity). When the table is full at some time `T`, each candidate has had `⌊T·wᵢ⌋`
//!   turns, give or take the one at `T`, so its slots are within about one of
//!   `M · wᵢ / Σw`. The order repeats every unit of time (each candidate has exactly `wᵢ`
//!   turns per unit), so it is computed once for one period and cycled. It depends on
//!   the ratios of the weights only — not on the largest weight, nor on who else is in
//!   the pool — so removing a backend leaves the relative order of everyone else's turns
//!   alone.
//! - **Little disruption.** The permutations derive from identities, never from list
//!   positions, and turns are ordered by time and identity, so tables built over
//!   different candidate sets (or the same set in another order) come from the same
//!   permutations and the same order of turns. When a backend leaves, the others walk
//!   the same permutations as before and find its slots free; a candidate that claims
//!   one of them earlier in its walk than it used to reaches its later slots sooner,
//!   which can displace another claim — so slightly more than the removed backend's keys
//!   move. The paper measures that excess as small when `M` is large against the number
//!   of backends, hence `M ≥ 100 · n`; the property tests hold the keys moved by a
//!   removal to the removed backend's share plus two percentage points (observed: under
//!   one point).
//! - **Size.** `M` is the smallest of the primes 65 537, 655 373 and 6 553 577 that is at
//!   least 100 times the number of candidates (the largest beyond 65 535 candidates).
//!   The table stores positions in the candidate list as `u16` when they fit (up to
//!   65 536 candidates, always the case in practice), else `u32`: 128 KiB for a pool of
//!   up to 655 backends. It is built whenever the candidate set changes, never on the
//!   request path: about `M · ln M` probes of the table, a few milliseconds for 100
//!   backends and a few tens for 1,000 (see `benches/balance.rs`).
//!
//! A request **without** the key is not sent to one fixed backend (that would pile every
//! keyless request on whichever backend owns some fixed slot — one of the outages this
//! project exists to prevent): it goes to a uniformly random table slot drawn from the
//! seeded [`SharedRng`], which spreads keyless requests in proportion to weight. The seed
//! affects only those; the table itself is the same for every seed, so every instance of
//! a fleet maps a key to the same backend.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;

use super::{pickable, Balancer, Candidate, PickContext, SharedRng};

/// FNV-1a 64's offset basis.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64's prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A stable 64-bit hash of a request key: FNV-1a 64, then MurmurHash3's `fmix64`.
///
/// Fixed forever: the same bytes give the same hash on every machine, Rust release and
/// evenkeel version, so a key keeps its backend across restarts and across a fleet.
pub fn key_hash(bytes: &[u8]) -> u64 {
    fmix64(fnv1a64(bytes))
}

/// FNV-1a, 64-bit (Fowler, Noll and Vo; IETF draft-eastlake-fnv).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// MurmurHash3's 64-bit finaliser (Appleby): a bijection with full avalanche.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Table sizes, all prime; the smallest at least 100 times the number of candidates is used.
const TABLE_SIZES: [u64; 3] = [65_537, 655_373, 6_553_577];

/// Slots of the table per candidate, at least (the paper's `M ≫ N`).
const SLOTS_PER_CANDIDATE: u64 = 100;

/// Salts separating a candidate's permutation offset from its skip (both from its identity).
const OFFSET_SALT: u64 = 0x6d61_676c_6576_2d6f; // "maglev-o"
const SKIP_SALT: u64 = 0x6d61_676c_6576_2d73; // "maglev-s"

/// Maglev consistent hashing, weighted: a key goes to the candidate owning slot
/// `key mod M` of a lookup table built from the candidates' identities and weights.
pub struct ConsistentHash {
    candidates: Box<[Candidate]>,
    /// Number of slots, `M` (prime); 0 when there are no candidates.
    size: u64,
    /// Each slot's owner, as a position in `candidates`.
    table: Table,
    /// Spreads requests that lack the key.
    rng: SharedRng,
}

/// The lookup table, in the narrowest integer that holds every candidate position.
enum Table {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Table {
    fn owner(&self, slot: usize) -> Option<usize> {
        match self {
            Table::Narrow(slots) => slots.get(slot).map(|&p| usize::from(p)),
            Table::Wide(slots) => slots.get(slot).map(|&p| p as usize),
        }
    }

    fn len(&self) -> usize {
        match self {
            Table::Narrow(slots) => slots.len(),
            Table::Wide(slots) => slots.len(),
        }
    }
}

impl ConsistentHash {
    /// A Maglev table over `candidates` (weight-zero ones dropped). `seed` only feeds the
    /// spreading of requests without a key; the table does not depend on it.
    pub fn new(candidates: Vec<Candidate>, seed: u64) -> Self {
        let candidates = pickable(candidates).into_boxed_slice();
        let size = table_size(candidates.len());
        let owners = fill(&candidates, size);
        let table = if candidates.len() <= usize::from(u16::MAX) + 1 {
            Table::Narrow(owners.iter().map(|&p| p as u16).collect())
        } else {
            Table::Wide(owners)
        };
        ConsistentHash {
            candidates,
            size,
            table,
            rng: SharedRng::new(seed),
        }
    }

    /// Number of slots in the lookup table (`M`, a prime); 0 with no candidates.
    pub fn table_size(&self) -> u64 {
        self.size
    }

    /// How many table slots each candidate owns, as `(Candidate::index, slots)` in
    /// candidate order. A candidate's share of the key space is its slots over
    /// [`table_size`](Self::table_size): what `plan` and `check` can show as its
    /// intended share, and what the tests hold against its weight share.
    pub fn slots_per_candidate(&self) -> Vec<(usize, u64)> {
        let mut slots = vec![0u64; self.candidates.len()];
        for slot in 0..self.table.len() {
            if let Some(count) = self.table.owner(slot).and_then(|p| slots.get_mut(p)) {
                *count += 1;
            }
        }
        self.candidates
            .iter()
            .zip(slots)
            .map(|(c, count)| (c.index, count))
            .collect()
    }
}

impl Balancer for ConsistentHash {
    fn pick(&self, ctx: &PickContext) -> Option<usize> {
        if self.size == 0 {
            return None;
        }
        let slot = match ctx.key {
            Some(hash) => hash % self.size,
            None => self.rng.below(self.size),
        };
        let position = self.table.owner(slot as usize)?;
        self.candidates.get(position).map(|c| c.index)
    }
}

impl fmt::Debug for ConsistentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The table itself (up to millions of slots) is left out.
        f.debug_struct("ConsistentHash")
            .field("candidates", &self.candidates)
            .field("table_size", &self.size)
            .field("rng", &self.rng)
            .finish_non_exhaustive()
    }
}

/// The table size for `n` candidates: see the module documentation.
fn table_size(n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    let wanted = (n as u64).saturating_mul(SLOTS_PER_CANDIDATE);
    TABLE_SIZES
        .iter()
        .copied()
        .find(|&size| size >= wanted)
        .unwrap_or(TABLE_SIZES[TABLE_SIZES.len() - 1])
}

/// A candidate's next turn at filling the table, ordered by virtual time `turn / weight`
/// (earliest first), then identity, then position (for duplicate identities).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Turn {
    /// Which turn of this candidate it is, from 1.
    turn: u64,
    weight: u64,
    identity: u64,
    position: usize,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // turn / weight vs other.turn / other.weight, without division: a turn never
        // exceeds M + 1 (see `turn_order`), so both products stay below 2^23 · 2^32.
        (self.turn * other.weight)
            .cmp(&(other.turn * self.weight))
            .then(self.identity.cmp(&other.identity))
            .then(self.position.cmp(&other.position))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Fills a table of `size` slots over `candidates` (all of weight above zero); each slot
/// holds the position of its owner in `candidates`.
fn fill(candidates: &[Candidate], size: u64) -> Box<[u32]> {
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; size as usize];
    if candidates.is_empty() || size < 2 {
        return table.into_boxed_slice();
    }
    // Each candidate's permutation, walked lazily: the slot it tries next, and its stride.
    let mut next_slot: Vec<u64> = candidates
        .iter()
        .map(|c| fmix64(c.identity ^ OFFSET_SALT) % size)
        .collect();
    let skips: Vec<u64> = candidates
        .iter()
        .map(|c| fmix64(c.identity ^ SKIP_SALT) % (size - 1) + 1)
        .collect();
    let schedule = turn_order(candidates, size);

    // One slot per turn: `size` turns fill the table.
    for &p in schedule.iter().cycle().take(size as usize) {
        let p = p as usize;
        // Walk this candidate's permutation to its next empty slot. M is prime and the
        // skip is in [1, M), so the walk visits every slot and an empty one is found.
        while let (Some(slot), Some(&skip)) = (next_slot.get_mut(p), skips.get(p)) {
            let current = *slot as usize;
            *slot += skip;
            if *slot >= size {
                *slot -= size;
            }
            if let Some(owner) = table.get_mut(current) {
                if *owner == EMPTY {
                    *owner = p as u32;
                    break;
                }
            }
        }
    }
    table.into_boxed_slice()
}

/// The order in which candidates take turns at filling the table, as positions in
/// `candidates`: turn `k` of candidate `i` at virtual time `k / wᵢ`, earliest first (see
/// [`Turn`] for ties).
///
/// Shifting every time by one keeps the order, and candidate `i` has exactly `wᵢ` turns
/// in each unit of time (`k` from `(e−1)·wᵢ + 1` to `e·wᵢ` in `(e−1, e]`), so the whole
/// order is the first unit's `Σw` turns repeated. Only that first period is computed
/// (with a heap, `O(Σw · log n)`), after dividing the weights by their greatest common
/// divisor (which scales all times alike) and stopping at `size` turns if the period is
/// longer than the table.
fn turn_order(candidates: &[Candidate], size: u64) -> Vec<u32> {
    let divisor = candidates.iter().fold(0, |g, c| gcd(g, c.weight)).max(1);
    let period: u64 = candidates
        .iter()
        .map(|c| u64::from(c.weight / divisor))
        .sum();
    let mut turns: BinaryHeap<Reverse<Turn>> = candidates
        .iter()
        .enumerate()
        .map(|(position, c)| {
            Reverse(Turn {
                turn: 1,
                weight: u64::from(c.weight / divisor),
                identity: c.identity,
                position,
            })
        })
        .collect();
    let length = period.min(size) as usize;
    let mut order = Vec::with_capacity(length);
    while order.len() < length {
        // The earliest turn; advancing it in place re-sorts the heap once, on drop.
        let Some(mut earliest) = turns.peek_mut() else {
            break;
        };
        let Reverse(turn) = &mut *earliest;
        order.push(turn.position as u32);
        turn.turn += 1;
    }
    order
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_published_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn table_sizes_are_prime() {
        // Maglev's permutations visit every slot only if the table size is prime.
        for size in TABLE_SIZES {
            let composite = (2..).take_while(|d| d * d <= size).any(|d| size % d == 0);
            assert!(!composite, "{size} is not prime");
        }
    }

    /// The table as the module documentation defines it: every turn taken in time order
    /// from one heap, with no shortcut through the repeating period.
    fn fill_by_definition(candidates: &[Candidate], size: u64) -> Vec<u32> {
        let mut turns: BinaryHeap<Reverse<Turn>> = candidates
            .iter()
            .enumerate()
            .map(|(position, c)| {
                Reverse(Turn {
                    turn: 1,
                    weight: u64::from(c.weight),
                    identity: c.identity,
                    position,
                })
            })
            .collect();
        let mut cursor: Vec<u64> = candidates
            .iter()
            .map(|c| fmix64(c.identity ^ OFFSET_SALT) % size)
            .collect();
        let mut table = vec![u32::MAX; size as usize];
        for _ in 0..size {
            let Some(Reverse(mut turn)) = turns.pop() else {
                break;
            };
            let p = turn.position;
            let skip = fmix64(candidates[p].identity ^ SKIP_SALT) % (size - 1) + 1;
            while table[cursor[p] as usize] != u32::MAX {
                cursor[p] = (cursor[p] + skip) % size;
            }
            table[cursor[p] as usize] = p as u32;
            cursor[p] = (cursor[p] + skip) % size;
            turn.turn += 1;
            turns.push(Reverse(turn));
        }
        table
    }

    fn candidates(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(index, &weight)| Candidate {
                index,
                weight,
                identity: key_hash(format!("backend-{index}").as_bytes()),
                load: Default::default(),
            })
            .collect()
    }

    #[test]
    fn fill_repeats_the_period_exactly_as_defined() {
        // Small weights, a common divisor, duplicates, and a period longer than the
        // table (weights summing past 1,009 slots).
        let weight_sets: [&[u32]; 6] = [
            &[1],
            &[1, 1, 1],
            &[3, 1, 2, 5, 1],
            &[100, 200, 300, 50],
            &[7, 7, 14, 21, 1, 9, 10, 3],
            &[900, 1, 450, 77, 1000, 3],
        ];
        for weights in weight_sets {
            let pool = candidates(weights);
            assert_eq!(
                fill(&pool, 1009).to_vec(),
                fill_by_definition(&pool, 1009),
                "weights {weights:?}"
            );
        }
    }

    #[test]
    fn fmix64_is_a_bijection_on_samples() {
        // A finaliser that collided would merge keys; spot-check distinct outputs.
        let mut outputs: Vec<u64> = (0..10_000u64).map(fmix64).collect();
        outputs.sort_unstable();
        outputs.dedup();
        assert_eq!(outputs.len(), 10_000);
    }
}
