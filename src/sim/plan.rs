//! Each backend's expected share before and after a config change, and what in that
//! change deserves a second look: the second half of `evenkeel plan OLD NEW` (the first
//! is [`crate::config::diff`]).
//!
//! A backend's **expected share** is what its pool is meant to send it with every
//! backend usable:
//! - its intended share ([`balance::intended_shares`]: equal for round robin, weight
//!   over total weight for the others) — exact, no sampling;
//! - for `consistent_hash`, its **key-space share** instead: the share of the Maglev
//!   table's slots it owns, from the very table the proxy builds
//!   ([`ConsistentHash::slots_per_candidate`]). Keys are spread over slots uniformly,
//!   so this is the share of a large, even key population it gets — which can differ
//!   from the weight share by a little (the table is within about one slot per backend,
//!   see `balance/hash.rs`).
//!
//! For a pool that uses `consistent_hash` before and after, [`PoolComparison::keys_moved`]
//! is the share of keys that change backend: both tables are built and [`KEY_SAMPLE`]
//! keys (`key-0`, `key-1`, …) looked up in each — what a cache behind the pool loses.
//!
//! Its **load ratio** is expected share over capacity share (DESIGN "Words"; `plan` uses
//! the intended share, the live monitor the observed one).
//!
//! Flags ([`Flag`]), judged with NEW's `[guard]`:
//! - the share is multiplied by more than `guard.max_shift` (default 2: "more than
//!   doubles"), for a backend that had a share before. The live guard only judges
//!   backends with 5% or more, because small live shares are noisy; these shares are
//!   exact, so every backend is judged;
//! - the share drops to zero (weight 0, or removed from a pool that stays) from above
//!   zero: whatever that backend served now lands elsewhere;
//! - the load ratio after the change is above `guard.max_load_ratio` and higher than
//!   before (a backend new to the pool: above the line at all). A backend that was
//!   already over the line and is no worse is not the change's doing: `plan` shows it
//!   without flagging it, so `--deny-flags` does not block every unrelated change.

use crate::balance::{self, Algorithm, Balancer, ConsistentHash, PickContext};
use crate::config::{Config, Pool};

use super::{above, backend_states, capacity_shares};

/// One backend's expected share in one config.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedShare {
    /// Its weight.
    pub weight: u32,
    /// Its capacity.
    pub capacity: f64,
    /// Its expected share of the pool's requests (0 to 1).
    pub share: f64,
    /// Its capacity share (0 to 1; 0 for weight 0).
    pub capacity_share: f64,
    /// Share over capacity share; `None` when the capacity share is 0.
    pub load_ratio: Option<f64>,
}

/// Keys looked up to measure [`PoolComparison::keys_moved`].
pub const KEY_SAMPLE: u32 = 100_000;

/// The Maglev table of `pool` with every backend usable.
fn table(pool: &Pool) -> ConsistentHash {
    let states = backend_states(pool, &[]);
    let selection = balance::select_candidates(&states, pool.panic_threshold);
    // The table does not depend on the seed (only keyless requests do).
    ConsistentHash::new(selection.candidates, 0)
}

/// The share of keys (of [`KEY_SAMPLE`]) that go to another backend — by address as
/// written — in `new` than in `old`, both consistent-hash pools.
fn keys_moved(old: &Pool, new: &Pool) -> f64 {
    let (before, after) = (table(old), table(new));
    fn address(pool: &Pool, index: Option<usize>) -> Option<&str> {
        index
            .and_then(|i| pool.backends.get(i))
            .map(|b| b.address.as_str())
    }
    let moved = (0..KEY_SAMPLE)
        .filter(|i| {
            let key = Some(balance::key_hash(super::key_name(*i).as_bytes()));
            let ctx = PickContext { key };
            address(old, before.pick(&ctx)) != address(new, after.pick(&ctx))
        })
        .count();
    moved as f64 / f64::from(KEY_SAMPLE)
}

/// Every backend's expected share in `pool`, in config order, with every backend usable.
pub fn expected_shares(pool: &Pool) -> Vec<ExpectedShare> {
    let states = backend_states(pool, &[]);
    let shares = match pool.algorithm {
        Algorithm::ConsistentHash => {
            let table = table(pool);
            let size = table.table_size() as f64;
            let mut shares = vec![0.0; states.len()];
            for (index, slots) in table.slots_per_candidate() {
                if let Some(share) = shares.get_mut(index) {
                    *share = slots as f64 / size;
                }
            }
            shares
        }
        algorithm => balance::intended_shares(algorithm, &states, pool.panic_threshold),
    };
    let capacity = capacity_shares(pool, &states);
    pool.backends
        .iter()
        .zip(shares.iter().zip(&capacity))
        .map(|(b, (&share, &capacity_share))| ExpectedShare {
            weight: b.weight,
            capacity: b.capacity,
            share,
            capacity_share,
            load_ratio: (capacity_share > 0.0).then(|| share / capacity_share),
        })
        .collect()
}

/// Something about a backend's traffic after the change that deserves a second look.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Flag {
    /// Its share is multiplied by `ratio`, more than `limit` (`guard.max_shift`).
    ShareMultiplied {
        /// Share after over share before.
        ratio: f64,
        /// NEW's `guard.max_shift`.
        limit: f64,
    },
    /// It had traffic and gets none.
    DropsToZero,
    /// Its load ratio after the change is `ratio`, above `limit` (`guard.max_load_ratio`)
    /// and above what it was.
    Overloaded {
        /// Load ratio after.
        ratio: f64,
        /// NEW's `guard.max_load_ratio`.
        limit: f64,
    },
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flag::ShareMultiplied { ratio, limit } => {
                write!(f, "share ×{ratio:.2} (over guard.max_shift {limit})")
            }
            Flag::DropsToZero => f.write_str("drops to 0"),
            Flag::Overloaded { ratio, limit } => {
                write!(f, "load ratio {ratio:.2} > guard.max_load_ratio {limit}")
            }
        }
    }
}

/// One backend before and after.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendComparison {
    /// Its address as written.
    pub address: String,
    /// Its expected share in OLD (`None`: not in OLD's pool).
    pub before: Option<ExpectedShare>,
    /// Its expected share in NEW (`None`: not in NEW's pool).
    pub after: Option<ExpectedShare>,
    /// What deserves a second look.
    pub flags: Vec<Flag>,
}

/// One pool before and after.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolComparison {
    /// Its name.
    pub pool: String,
    /// Its algorithm in OLD (`None`: not in OLD).
    pub before: Option<Algorithm>,
    /// Its algorithm in NEW (`None`: removed).
    pub after: Option<Algorithm>,
    /// Its backends: NEW's in order, then those only OLD has.
    pub backends: Vec<BackendComparison>,
    /// For a pool hashing consistently before and after: the share of keys (0 to 1)
    /// that go to another backend after the change.
    pub keys_moved: Option<f64>,
}

impl PoolComparison {
    /// Number of flags on its backends.
    pub fn flags(&self) -> usize {
        self.backends.iter().map(|b| b.flags.len()).sum()
    }
}

/// Every pool's backends before (`old`; `None` when there is no valid OLD to compare
/// with) and after (`new`), flagged with NEW's guard. Pools in NEW's order, then those
/// only OLD has.
pub fn compare(old: Option<&Config>, new: &Config) -> Vec<PoolComparison> {
    let old_pool = |name: &str| old.and_then(|c| c.pool(name));
    let mut pools: Vec<PoolComparison> = new
        .pools
        .iter()
        .map(|pool| compare_pool(old_pool(&pool.name), Some(pool), new))
        .collect();
    if let Some(old) = old {
        pools.extend(
            old.pools
                .iter()
                .filter(|p| new.pool(&p.name).is_none())
                .map(|p| compare_pool(Some(p), None, new)),
        );
    }
    pools
}

fn compare_pool(old: Option<&Pool>, new: Option<&Pool>, config: &Config) -> PoolComparison {
    let shares = |pool: Option<&Pool>| -> Vec<(String, ExpectedShare)> {
        pool.map(|p| {
            p.backends
                .iter()
                .map(|b| b.address.clone())
                .zip(expected_shares(p))
                .collect()
        })
        .unwrap_or_default()
    };
    let (before, after) = (shares(old), shares(new));
    let find = |list: &[(String, ExpectedShare)], address: &str| {
        list.iter()
            .find(|(a, _)| a == address)
            .map(|(_, s)| s.clone())
    };
    let mut addresses: Vec<&String> = after.iter().map(|(a, _)| a).collect();
    addresses.extend(
        before
            .iter()
            .map(|(a, _)| a)
            .filter(|a| find(&after, a).is_none()),
    );
    let backends = addresses
        .into_iter()
        .map(|address| {
            let b = find(&before, address);
            let a = find(&after, address);
            let flags = flags(b.as_ref(), a.as_ref(), new.is_some(), config);
            BackendComparison {
                address: address.clone(),
                before: b,
                after: a,
                flags,
            }
        })
        .collect();
    let hashed = |p: &&Pool| p.algorithm == Algorithm::ConsistentHash;
    let keys_moved = match (old.filter(hashed), new.filter(hashed)) {
        (Some(old), Some(new)) => Some(keys_moved(old, new)),
        _ => None,
    };
    PoolComparison {
        keys_moved,
        pool: new.or(old).map(|p| p.name.clone()).unwrap_or_default(),
        before: old.map(|p| p.algorithm),
        after: new.map(|p| p.algorithm),
        backends,
    }
}

fn flags(
    before: Option<&ExpectedShare>,
    after: Option<&ExpectedShare>,
    pool_stays: bool,
    new: &Config,
) -> Vec<Flag> {
    let mut flags = Vec::new();
    let before_share = before.map_or(0.0, |b| b.share);
    let after_share = after.map_or(0.0, |a| a.share);
    if before_share > 0.0 && pool_stays {
        let ratio = after_share / before_share;
        if after_share == 0.0 {
            flags.push(Flag::DropsToZero);
        } else if above(ratio, new.guard.max_shift) {
            flags.push(Flag::ShareMultiplied {
                ratio,
                limit: new.guard.max_shift,
            });
        }
    }
    if let Some(ratio) = after.and_then(|a| a.load_ratio) {
        let before_ratio = before.and_then(|b| b.load_ratio).unwrap_or(0.0);
        if above(ratio, new.guard.max_load_ratio) && ratio > before_ratio {
            flags.push(Flag::Overloaded {
                ratio,
                limit: new.guard.max_load_ratio,
            });
        }
    }
    flags
}
