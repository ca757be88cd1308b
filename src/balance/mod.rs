//! Picking a backend for a request.
//!
//! A pool's balancer works over its **usable** backends only (DESIGN.md, "Words"):
//! healthy or not yet probed, not ejected, not draining, with a weight above zero.
//! The pool builds the list of [`Candidate`]s whenever usability or effective
//! weights change (health flips, slow-start steps, reloads) and builds a fresh
//! balancer over it with [`build`]; the request path only calls
//! [`Balancer::pick`]. That split keeps every algorithm tiny — none of them
//! re-implements "skip what is not usable" — and lets an immutable balancer be
//! swapped whole, so a request never sees half of an update.
//!
//! Panic mode (spreading over *all* backends when too few are usable) is decided
//! by the pool in [`select_candidates`], outside the [`Balancer`] trait.
//!
//! Nothing here touches sockets, wall-clock time or a global RNG: randomness comes
//! from a seeded [`SharedRng`], so the simulator and preflight drive exactly the
//! code that serves live traffic and get repeatable results (DESIGN principle 1).

mod hash;
mod least_conn;
mod p2c;
mod random;
mod rng;
mod round_robin;
mod weighted;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub use hash::{key_hash, ConsistentHash};
pub use least_conn::LeastConnections;
pub use p2c::LeastRequest;
pub use random::WeightedRandom;
pub use rng::{LocalRng, SharedRng};
pub use round_robin::RoundRobin;
pub use weighted::SmoothWeighted;

/// Live load of one backend, shared by every worker thread and carried over
/// between snapshots for the same backend.
#[derive(Debug, Default)]
pub struct BackendLoad {
    in_flight: AtomicU32,
    /// Connections open to the backend that requests share (HTTP/2), over all workers.
    shared_connections: AtomicU32,
}

impl BackendLoad {
    /// Requests sent to this backend and not finished yet.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Connections open to this backend that requests share (HTTP/2).
    pub fn shared_connections(&self) -> u32 {
        self.shared_connections.load(Ordering::Relaxed)
    }

    /// Counts one more shared connection; the returned guard counts it closed when
    /// dropped.
    pub fn open_shared(self: &Arc<Self>) -> SharedConnection {
        self.shared_connections.fetch_add(1, Ordering::Relaxed);
        SharedConnection(Arc::clone(self))
    }

    /// Count one more request in flight; the returned guard counts it done when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// One shared connection open to a backend; dropping it ends its count.
#[derive(Debug)]
pub struct SharedConnection(Arc<BackendLoad>);

impl Drop for SharedConnection {
    fn drop(&mut self) {
        self.0.shared_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request in flight to a backend; dropping it ends the request's count.
#[derive(Debug)]
pub struct InFlight(Arc<BackendLoad>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A usable backend as a balancer sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Position of the backend in its pool's backend list: what [`Balancer::pick`] returns.
    pub index: usize,
    /// Effective weight, above zero: the configured weight, scaled down during slow start.
    pub weight: u32,
    /// Stable identity of the backend (a hash of its address as written), so consistent
    /// hashing keeps a backend's keys when other backends come and go.
    pub identity: u64,
    /// Its live load, read by the load-aware algorithms.
    pub load: Arc<BackendLoad>,
}

/// What a balancer may know about the request it picks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickContext {
    /// Hash of the request's key ([`key_hash`]), for consistent hashing; `None` when the
    /// request lacks the key (such requests are spread over the pool).
    pub key: Option<u64>,
}

/// Picks one of the candidates it was built over.
pub trait Balancer: Send + Sync + fmt::Debug {
    /// The [`Candidate::index`] of the chosen backend, or `None` when there are no candidates.
    fn pick(&self, ctx: &PickContext) -> Option<usize>;
}

/// The balancing algorithms, by their configuration names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Each usable backend in turn; weights are ignored.
    RoundRobin,
    /// Smooth weighted round robin (NGINX's): interleaved, exact per cycle, precomputed.
    WeightedRoundRobin,
    /// Fewest in-flight requests relative to weight: over all usable backends up to 32
    /// of them, over 16 (the one in turn and 15 at random) in larger pools.
    LeastConnections,
    /// Power of two choices on in-flight requests relative to weight.
    LeastRequest,
    /// Weighted random.
    Random,
    /// Maglev consistent hashing on a request key.
    ConsistentHash,
}

impl Algorithm {
    /// Every algorithm, in documentation order.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConnections,
        Algorithm::LeastRequest,
        Algorithm::Random,
        Algorithm::ConsistentHash,
    ];

    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::LeastRequest => "least_request",
            Algorithm::Random => "random",
            Algorithm::ConsistentHash => "consistent_hash",
        }
    }

    /// Whether the algorithm follows weights (skew is meaningful and alarmed), as opposed
    /// to load-aware algorithms that are meant to depart from weights.
    pub fn is_weight_driven(self) -> bool {
        !matches!(self, Algorithm::LeastConnections | Algorithm::LeastRequest)
    }

    /// Whether configured weights affect the split at all.
    pub fn uses_weights(self) -> bool {
        self != Algorithm::RoundRobin
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Algorithm::ALL.into_iter().find(|a| a.name() == s).ok_or(())
    }
}

/// Builds the balancer for `algorithm` over `candidates`. `seed` feeds every random
/// choice, so the same seed and the same sequence of calls give the same picks.
pub fn build(algorithm: Algorithm, candidates: Vec<Candidate>, seed: u64) -> Box<dyn Balancer> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::new(candidates)),
        Algorithm::WeightedRoundRobin => Box::new(SmoothWeighted::new(candidates)),
        Algorithm::LeastConnections => Box::new(LeastConnections::new(candidates, seed)),
        Algorithm::LeastRequest => Box::new(LeastRequest::new(candidates, seed)),
        Algorithm::Random => Box::new(WeightedRandom::new(candidates, seed)),
        Algorithm::ConsistentHash => Box::new(ConsistentHash::new(candidates, seed)),
    }
}

/// The candidates a balancer may pick from: those of weight above zero, in their given
/// order. [`select_candidates`] never hands over a weight-zero candidate, but the
/// algorithms are public, so each constructor passes its input through here and a
/// weight-zero backend is never picked, whoever built the list.
fn pickable(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.retain(|c| c.weight > 0);
    candidates
}

/// One backend of a pool with its current state, as the pool hands it to
/// [`select_candidates`].
#[derive(Clone, Debug)]
pub struct BackendState {
    /// See [`Candidate::index`].
    pub index: usize,
    /// Effective weight (zero: never picked, not even in panic mode).
    pub weight: u32,
    /// Healthy (or not yet probed), not ejected, not draining.
    pub usable: bool,
    /// See [`Candidate::identity`].
    pub identity: u64,
    /// See [`Candidate::load`].
    pub load: Arc<BackendLoad>,
}

/// The candidates a pool balances over, and whether it is in panic mode.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The backends to balance over.
    pub candidates: Vec<Candidate>,
    /// True when too few backends were usable and the pool spreads over all of them.
    pub panic: bool,
}

/// Chooses what a pool balances over. Normally its usable backends; but when some,
/// yet fewer than `panic_threshold` percent, of its backends (of weight above zero)
/// are usable, the pool is in **panic mode** and spreads over all of them, usable or
/// not — so the last one or two survivors are not crushed by the whole load (Envoy's
/// "panic threshold"). When none is usable there is no panic: the pool has nothing to
/// offer, and requests fail fast with 503 or go to its backup pool rather than to
/// backends known to be down. A threshold of 0 disables panic mode. Backends of
/// weight zero are never candidates.
pub fn select_candidates(backends: &[BackendState], panic_threshold: u8) -> Selection {
    let weighted = || backends.iter().filter(|b| b.weight > 0);
    let total = weighted().count();
    let usable = weighted().filter(|b| b.usable).count();
    let panic = usable > 0 && usable * 100 < usize::from(panic_threshold) * total;
    let candidates = weighted()
        .filter(|b| panic || b.usable)
        .map(|b| Candidate {
            index: b.index,
            weight: b.weight,
            identity: b.identity,
            load: Arc::clone(&b.load),
        })
        .collect();
    Selection { candidates, panic }
}

/// The share of a pool's requests each backend should get (DESIGN "Words": intended
/// share), given the algorithm and each backend's effective weight and usability:
/// zero for backends that are not candidates, equal shares for round robin, weight
/// over total weight for the others. Indexed like `backends`. Load-aware algorithms
/// are meant to depart from this when backends differ; it is their target when
/// backends are alike.
pub fn intended_shares(
    algorithm: Algorithm,
    backends: &[BackendState],
    panic_threshold: u8,
) -> Vec<f64> {
    let selection = select_candidates(backends, panic_threshold);
    let mut shares = vec![0.0; backends.len()];
    let total: f64 = selection
        .candidates
        .iter()
        .map(|c| {
            if algorithm.uses_weights() {
                f64::from(c.weight)
            } else {
                1.0
            }
        })
        .sum();
    // The candidates are a subsequence of `backends`, in order: walk both at once, so a
    // pool of n backends costs O(n), not O(n²) (issue 12, defect 10).
    let mut positions = backends.iter().enumerate();
    for c in &selection.candidates {
        if let Some((position, _)) = positions.find(|(_, b)| b.index == c.index) {
            let part = if algorithm.uses_weights() {
                f64::from(c.weight)
            } else {
                1.0
            };
            shares[position] = part / total;
        }
    }
    shares
}

#[cfg(test)]
mod tests;
