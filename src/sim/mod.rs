//! Predicting how a config spreads traffic, before it serves any: `evenkeel simulate`
//! and `evenkeel plan`.
//!
//! # One balancer, two uses
//! A prediction drives the very code that serves live traffic (DESIGN principle 1): for
//! each pool it builds the pool's [`BackendState`]s the way `runtime.rs` does (weights
//! as configured, identities hashed from the addresses as written), lets
//! [`balance::select_candidates`] decide the candidates and panic mode, builds the
//! balancer with [`balance::build`] and a seed, and calls [`pick`](balance::Balancer::pick) once per
//! virtual request, counting where each one goes. Nothing here knows how an algorithm
//! works, so a prediction cannot drift from the proxy; and nothing here touches
//! `proxy/`, sockets or the clock.
//!
//! # The model
//! - **Requests.** `requests` virtual requests per pool (default 100,000), every pool
//!   simulated on its own. Backends named by `--down` are not usable, as if their
//!   health checks had failed; everything else is healthy, not ejected, not draining,
//!   at full weight (slow start is a ramp after a change: the prediction is the steady
//!   state after it).
//! - **Weight-driven algorithms** (round robin, weighted round robin, random,
//!   consistent hash) never read backend load, so time plays no part: the requests are
//!   picked one after another. Consistent-hash requests carry keys drawn from a
//!   [`KeyDistribution`] (see [`keys`]), hashed with [`balance::key_hash`] as the proxy
//!   hashes the real key.
//! - **Load-aware algorithms** (least connections, least request) pick by requests in
//!   flight, so the simulation runs in *virtual time*, as a closed loop: `concurrency`
//!   requests (default 32) are in flight at once, and the moment one finishes the next
//!   one is picked. A request to backend `i` takes an exponentially distributed time
//!   with mean `1 / capacityᵢ` — a backend of capacity 2 serves twice as fast — and
//!   holds a [`BackendLoad::begin`] guard meanwhile, so the balancer reads real
//!   in-flight counts. An event queue (a binary heap ordered by finish time) finds the
//!   next request to finish. By Little's law a backend's throughput is its requests in
//!   flight over its service time; least connections keeps in-flight counts in
//!   proportion to weights, so its shares come out in proportion to *weight × capacity*,
//!   and a slow backend of equal weight gets less. With fewer requests in flight than
//!   backends most backends sit idle and the load-aware algorithms spread like round
//!   robin — as they do live at light load; raise `concurrency` to see them under load.
//! - **Down backends in panic mode.** When too few backends are usable the pool spreads
//!   over all of them (DESIGN "panic mode"), down ones included. A request picked for a
//!   down backend is counted there (it is where the first try goes) and fails at once,
//!   like a refused connection: it never holds a request in flight. Retries are not
//!   modelled.
//! - **No usable backend.** The pool picks nothing; those requests are reported as
//!   *unserved* (live, they go to the pool's backup or get 503).
//!
//! Not modelled: retries, connection limits, passive ejection, the backup pool's own
//! load, and the interleaving of worker threads (they share one balancer per pool, so
//! the split is the same).
//!
//! # What comes out
//! Per backend ([`BackendPrediction`]): weight, capacity, **intended share** (from
//! [`balance::intended_shares`] with the down backends unusable), **predicted share**
//! (its count over the pool's requests), **capacity share** (its capacity over that of
//! the pool's usable backends of weight above 0; 0 for the others) and **load ratio**
//! (predicted over capacity share), flagged above `guard.max_load_ratio`. Per pool
//! ([`PoolPrediction`]): panic mode and the [`skew::skew`] of predicted against intended
//! counts, flagged above `guard.max_skew` for weight-driven algorithms only.
//!
//! # Deterministic
//! The same config, options and seed give the same prediction, on every run and
//! machine. A pool's balancer gets `seed ^ key_hash(pool name)` (as `runtime.rs` derives
//! it from its own seed); request keys and service times come from separate streams of
//! the same seed. The live proxy seeds from the clock, so its random algorithms agree
//! with a prediction in distribution, not pick by pick.
//!
//! # Cost
//! One pick per request, plus for load-aware pools one heap push and pop and one
//! random service time: a million requests over a thousand backends take about a
//! second for the algorithms that scan every backend per pick (weighted round robin,
//! least connections) and a few tens of milliseconds for the others
//! (`benches/sim.rs`, numbers in docs/benchmarks.md).

mod engine;
pub mod failures;
pub mod keys;
pub mod plan;
pub mod servers;
pub mod skew;
pub mod traffic;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::balance::{self, Algorithm, BackendLoad, BackendState, SharedRng};
use crate::config::{Config, Pool};

pub use keys::{key_name, KeyDistribution, KeysError};
pub use skew::{skew, Skew};

/// Default for [`SimOptions::requests`].
pub const DEFAULT_REQUESTS: u64 = 100_000;
/// Default for [`SimOptions::concurrency`].
pub const DEFAULT_CONCURRENCY: u32 = 32;
/// Default for [`SimOptions::seed`]: any fixed number would do.
pub const DEFAULT_SEED: u64 = 1;

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct SimOptions {
    /// Virtual requests per pool. Default: [`DEFAULT_REQUESTS`].
    pub requests: u64,
    /// Backends to treat as down.
    pub down: Vec<Down>,
    /// Keys of requests to consistent-hash pools. Default: `uniform:10000`.
    pub keys: KeyDistribution,
    /// Share of requests without a key, 0 to 1. Default: 0.
    pub key_missing: f64,
    /// Seed of every random choice. Default: [`DEFAULT_SEED`].
    pub seed: u64,
    /// Requests in flight at once in load-aware pools (at least 1). Default: 32.
    pub concurrency: u32,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            requests: DEFAULT_REQUESTS,
            down: Vec::new(),
            keys: KeyDistribution::default(),
            key_missing: 0.0,
            seed: DEFAULT_SEED,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// A backend to treat as down: `ADDR` (in every pool that lists it) or `POOL/ADDR`,
/// the address as the config writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    /// The pool, or `None` for every pool.
    pub pool: Option<String>,
    /// The backend's address as written in the config.
    pub address: String,
}

impl FromStr for Down {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (pool, address) = match text.split_once('/') {
            Some((pool, address)) => (Some(pool.to_string()), address),
            None => (None, text),
        };
        if address.is_empty() || pool.as_deref() == Some("") {
            return Err(format!(
                "{text:?} is not a backend: write its address as the config does \
                 (127.0.0.1:9001) or POOL/ADDRESS (web/127.0.0.1:9001)"
            ));
        }
        Ok(Down {
            pool,
            address: address.to_string(),
        })
    }
}

impl fmt::Display for Down {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pool {
            Some(pool) => write!(f, "{pool}/{}", self.address),
            None => f.write_str(&self.address),
        }
    }
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    /// `--down POOL/ADDR` names a pool the config does not have.
    #[error("--down {down}: the config has no pool {pool:?}{}", hint(suggestion))]
    UnknownPool {
        /// The option as given.
        down: String,
        /// The pool it names.
        pool: String,
        /// A pool with a similar name, if any.
        suggestion: Option<String>,
    },
    /// `--down` names no backend of the config.
    #[error(
        "--down {down}: no backend{} has the address {address:?} as written in the config{}",
        in_pool(pool),
        hint(suggestion)
    )]
    UnknownBackend {
        /// The option as given.
        down: String,
        /// The pool it was looked for in, if one was given.
        pool: Option<String>,
        /// The address.
        address: String,
        /// An address with a similar spelling, if any.
        suggestion: Option<String>,
    },
    /// `key_missing` is not a share from 0 to 1.
    #[error("the share of requests without a key must be from 0 to 100 percent")]
    KeyMissing,
}

fn hint(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map_or(String::new(), |s| format!(" (did you mean {s}?)"))
}

fn in_pool(pool: &Option<String>) -> String {
    pool.as_ref()
        .map_or(String::new(), |p| format!(" of pool {p:?}"))
}

/// A whole prediction: one entry per pool, in config order.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The options it ran with.
    pub options: SimOptions,
    /// One prediction per pool.
    pub pools: Vec<PoolPrediction>,
}

/// What one pool is predicted to do.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolPrediction {
    /// The pool's name.
    pub name: String,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Virtual requests sent to it.
    pub requests: u64,
    /// Requests for which it had no backend at all (live: its backup pool, or 503).
    pub unserved: u64,
    /// Its backup pool, if any.
    pub backup: Option<String>,
    /// Whether it is in panic mode (spreading over down backends too).
    pub panic: bool,
    /// Its backends of weight above 0 that are usable.
    pub usable: usize,
    /// Its backends of weight above 0.
    pub weighted: usize,
    /// Skew of the predicted counts against the intended shares.
    pub skew: Skew,
    /// Whether skew is alarmed for this algorithm (weight-driven ones only).
    pub skew_alarmed: bool,
    /// `guard.max_skew` of the config.
    pub max_skew: f64,
    /// `guard.max_load_ratio` of the config.
    pub max_load_ratio: f64,
    /// One prediction per backend, in config order.
    pub backends: Vec<BackendPrediction>,
}

impl PoolPrediction {
    /// Whether the skew is alarmed and above `guard.max_skew`.
    pub fn skew_flagged(&self) -> bool {
        self.skew_alarmed && above(self.skew.value, self.max_skew)
    }
}

/// What one backend is predicted to get.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendPrediction {
    /// Its address as written.
    pub address: String,
    /// Its configured weight.
    pub weight: u32,
    /// Its configured capacity.
    pub capacity: f64,
    /// Whether it was marked down.
    pub down: bool,
    /// Requests it was picked for.
    pub picks: u64,
    /// Its intended share (0 to 1).
    pub intended_share: f64,
    /// Its predicted share: picks over the pool's requests (0 to 1).
    pub predicted_share: f64,
    /// Its capacity over the capacity of the pool's usable backends of weight above 0
    /// (0 when it is not one of them).
    pub capacity_share: f64,
    /// Predicted share over capacity share; `None` when the capacity share is 0.
    pub load_ratio: Option<f64>,
    /// Whether the load ratio is above `guard.max_load_ratio` (to two decimals, as shown).
    pub overloaded: bool,
}

/// Simulates every pool of `config` under `options`.
pub fn simulate(config: &Config, options: &SimOptions) -> Result<Prediction, SimError> {
    if !(0.0..=1.0).contains(&options.key_missing) {
        return Err(SimError::KeyMissing);
    }
    let down = down_backends(config, &options.down)?;
    let pools = config
        .pools
        .iter()
        .zip(&down)
        .map(|(pool, down)| simulate_pool(config, pool, down, options))
        .collect();
    Ok(Prediction {
        options: options.clone(),
        pools,
    })
}

/// For each pool, which of its backends `down` names; an error for a `--down` that
/// names nothing.
fn down_backends(config: &Config, down: &[Down]) -> Result<Vec<Vec<bool>>, SimError> {
    let mut marks: Vec<Vec<bool>> = config
        .pools
        .iter()
        .map(|p| vec![false; p.backends.len()])
        .collect();
    for spec in down {
        if let Some(name) = &spec.pool {
            if config.pool(name).is_none() {
                let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
                return Err(SimError::UnknownPool {
                    down: spec.to_string(),
                    pool: name.clone(),
                    suggestion: crate::config::suggest(name, &names).map(str::to_string),
                });
            }
        }
        let mut found = false;
        for (pool, marks) in config.pools.iter().zip(marks.iter_mut()) {
            if spec.pool.as_ref().is_some_and(|name| *name != pool.name) {
                continue;
            }
            for (backend, mark) in pool.backends.iter().zip(marks.iter_mut()) {
                if backend.address == spec.address {
                    *mark = true;
                    found = true;
                }
            }
        }
        if !found {
            let addresses: Vec<&str> = config
                .pools
                .iter()
                .filter(|p| spec.pool.as_ref().is_none_or(|name| *name == p.name))
                .flat_map(|p| p.backends.iter().map(|b| b.address.as_str()))
                .collect();
            return Err(SimError::UnknownBackend {
                down: spec.to_string(),
                pool: spec.pool.clone(),
                address: spec.address.clone(),
                suggestion: crate::config::suggest(&spec.address, &addresses).map(str::to_string),
            });
        }
    }
    Ok(marks)
}

/// Each backend's state as the balancer sees it, built as `runtime.rs` builds it:
/// configured weight, identity hashed from the address as written, its own load.
pub(crate) fn backend_states(pool: &Pool, down: &[bool]) -> Vec<BackendState> {
    pool.backends
        .iter()
        .enumerate()
        .map(|(index, b)| BackendState {
            index,
            weight: b.weight,
            usable: !down.get(index).copied().unwrap_or(false),
            identity: balance::key_hash(b.address.as_bytes()),
            load: Arc::new(BackendLoad::default()),
        })
        .collect()
}

/// Each backend's capacity over the capacity of the usable backends of weight above
/// 0 (0 for the others), indexed like `states`.
pub(crate) fn capacity_shares(pool: &Pool, states: &[BackendState]) -> Vec<f64> {
    let counts = |s: &BackendState| s.usable && s.weight > 0;
    let total: f64 = pool
        .backends
        .iter()
        .zip(states)
        .filter(|(_, s)| counts(s))
        .map(|(b, _)| b.capacity)
        .sum();
    pool.backends
        .iter()
        .zip(states)
        .map(|(b, s)| {
            if counts(s) && total > 0.0 {
                b.capacity / total
            } else {
                0.0
            }
        })
        .collect()
}

/// Whether `value` (a load ratio, skew or shift) is above `limit` as it is shown, to
/// two decimals: a load ratio of 2.00004 (one request left over from a round-robin
/// cycle) is not above 2.
pub fn above(value: f64, limit: f64) -> bool {
    (value * 100.0).round() / 100.0 > limit
}

/// A pool's balancer seed, derived from the simulation's seed as `runtime.rs` derives
/// it from its own.
fn pool_seed(seed: u64, pool: &Pool) -> u64 {
    seed ^ balance::key_hash(pool.name.as_bytes())
}

/// Salts separating the workload's random streams from the balancer's.
const KEY_STREAM: u64 = 0x6b65_7973; // "keys"
const SERVICE_STREAM: u64 = 0x0073_6572_7669_6365; // "service"

fn simulate_pool(
    config: &Config,
    pool: &Pool,
    down: &[bool],
    options: &SimOptions,
) -> PoolPrediction {
    let states = backend_states(pool, down);
    let intended = balance::intended_shares(pool.algorithm, &states, pool.panic_threshold);
    let capacity = capacity_shares(pool, &states);
    let selection = balance::select_candidates(&states, pool.panic_threshold);
    let seed = pool_seed(options.seed, pool);
    let balancer = balance::build(pool.algorithm, selection.candidates, seed);
    let keys = (pool.algorithm == Algorithm::ConsistentHash).then(|| {
        keys::KeySampler::new(
            options.keys,
            options.key_missing,
            balance::key_hash(&(seed ^ KEY_STREAM).to_le_bytes()),
        )
    });
    let next_key = || keys.as_ref().and_then(|k| k.next());
    let outcome = if pool.algorithm.is_weight_driven() {
        engine::in_sequence(balancer.as_ref(), states.len(), options.requests, next_key)
    } else {
        let service_rates: Vec<Option<f64>> = pool
            .backends
            .iter()
            .zip(&states)
            .map(|(b, s)| s.usable.then_some(b.capacity))
            .collect();
        engine::in_virtual_time(
            balancer.as_ref(),
            &states,
            &service_rates,
            engine::VirtualTime {
                requests: options.requests,
                concurrency: options.concurrency.max(1),
                rng: SharedRng::new(balance::key_hash(&(seed ^ SERVICE_STREAM).to_le_bytes())),
            },
        )
    };
    let backends: Vec<BackendPrediction> = pool
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let picks = outcome.picks.get(i).copied().unwrap_or(0);
            let predicted_share = if options.requests > 0 {
                picks as f64 / options.requests as f64
            } else {
                0.0
            };
            let capacity_share = capacity.get(i).copied().unwrap_or(0.0);
            let load_ratio = (capacity_share > 0.0).then(|| predicted_share / capacity_share);
            BackendPrediction {
                address: b.address.clone(),
                weight: b.weight,
                capacity: b.capacity,
                down: down.get(i).copied().unwrap_or(false),
                picks,
                intended_share: intended.get(i).copied().unwrap_or(0.0),
                predicted_share,
                capacity_share,
                load_ratio,
                overloaded: load_ratio.is_some_and(|r| above(r, config.guard.max_load_ratio)),
            }
        })
        .collect();
    let skew = skew::skew(&outcome.picks, &intended);
    PoolPrediction {
        name: pool.name.clone(),
        algorithm: pool.algorithm,
        requests: options.requests,
        unserved: outcome.unserved,
        backup: pool.backup.clone(),
        panic: selection.panic,
        usable: states.iter().filter(|s| s.weight > 0 && s.usable).count(),
        weighted: states.iter().filter(|s| s.weight > 0).count(),
        skew,
        skew_alarmed: pool.algorithm.is_weight_driven(),
        max_skew: config.guard.max_skew,
        max_load_ratio: config.guard.max_load_ratio,
        backends,
    }
}

#[cfg(test)]
mod tests;
