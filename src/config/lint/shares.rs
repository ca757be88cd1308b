//! Lints about the split of traffic a pool is configured for: backends meant to take far
//! more than their capacity, backends whose weight leaves them as good as out, and hash
//! keys that many requests may lack.
//!
//! The split is computed by the balancer's own [`intended_shares`] with every backend
//! usable, so `check` judges the same numbers `status` and the monitor compare against
//! (DESIGN principle 1). A backend's **capacity share** is its capacity over the total
//! capacity of the pool's backends of weight above zero; its **load ratio** here is
//! intended share / capacity share (DESIGN "Words"; the monitor uses the observed share).

use std::sync::Arc;

use super::{Finding, Rule, Severity};
use crate::balance::{intended_shares, BackendState};
use crate::config::model::{HashKey, Pool};

/// A backend whose intended share is below this fraction of its capacity share is as
/// good as out of its pool (with equal capacities: below 1/20 of an equal share).
pub const NEAR_ZERO_RATIO: f64 = 1.0 / 20.0;

/// How one backend of a pool is meant to be loaded, with every backend usable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackendSplit {
    /// Fraction of the pool's requests it should get (0 for weight 0).
    pub intended_share: f64,
    /// Its capacity over the capacity of the backends of weight above zero (0 for
    /// weight 0).
    pub capacity_share: f64,
}

impl BackendSplit {
    /// Intended share / capacity share: 1 when the backend takes exactly its part.
    pub fn load_ratio(&self) -> f64 {
        if self.capacity_share > 0.0 {
            self.intended_share / self.capacity_share
        } else {
            0.0
        }
    }
}

/// The split of `pool`, indexed like its backends.
pub fn split(pool: &Pool) -> Vec<BackendSplit> {
    let states: Vec<BackendState> = pool
        .backends
        .iter()
        .enumerate()
        .map(|(index, b)| BackendState {
            index,
            weight: b.weight,
            usable: true,
            identity: 0,
            load: Arc::default(),
        })
        .collect();
    let shares = intended_shares(pool.algorithm, &states, pool.panic_threshold);
    let total_capacity: f64 = pool
        .backends
        .iter()
        .filter(|b| b.weight > 0)
        .map(|b| b.capacity)
        .sum();
    pool.backends
        .iter()
        .zip(shares)
        .map(|(b, intended_share)| BackendSplit {
            intended_share,
            capacity_share: if b.weight > 0 && total_capacity > 0.0 {
                b.capacity / total_capacity
            } else {
                0.0
            },
        })
        .collect()
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

pub const LOAD_RATIO: Rule = Rule {
    name: "load-ratio",
    severity: Severity::Warning,
    summary: "a backend meant to take far more than its share of the pool's capacity",
    explain: "A backend's intended share (from the weights and the algorithm, all backends \
up) divided by its capacity share (its `capacity` over the pool's total) is its load ratio: \
1 means it takes exactly its part. Above guard.max_load_ratio (default 2) the config itself \
sends a backend more than twice its part of the load: it saturates first, its latency and errors climb while the others idle, and the outage looks like a \
sick backend or a database problem rather than the weight typo it is. Without declared \
capacities (all 1) it means a backend gets far more than its peers. round_robin ignores \
weights, so there it fires when capacities differ a lot. For least_connections and \
least_request the weights still bias the split, so the rule applies too. Fix the weight, \
or, when the backend really is bigger, say so with `capacity = N` so evenkeel judges its \
share against what it can take.",
    check: |config, out| {
        let max = config.guard.max_load_ratio;
        for pool in &config.pools {
            for (backend, split) in pool.backends.iter().zip(split(pool)) {
                let ratio = split.load_ratio();
                if ratio <= max {
                    continue;
                }
                let (span, help) = if pool.algorithm.uses_weights() {
                    (
                        backend.weight_span.clone(),
                        "lower its weight (or raise its peers'); if it really can take more, say so with `capacity`",
                    )
                } else {
                    (
                        backend.span.clone(),
                        "round_robin gives every backend the same share: use algorithm = \"weighted_round_robin\" with weights in proportion to capacity, or correct `capacity`",
                    )
                };
                out.push(
                    Finding::warning(
                        "",
                        Some(span),
                        format!(
                            "backend {} of pool {:?} is meant to get {} of the traffic but has {} of the capacity: load ratio {:.2}, above guard.max_load_ratio {max}",
                            backend.address,
                            pool.name,
                            percent(split.intended_share),
                            percent(split.capacity_share),
                            ratio
                        ),
                    )
                    .with_help(help),
                );
            }
        }
    },
};

pub const NEAR_ZERO_WEIGHT: Rule = Rule {
    name: "near-zero-weight",
    severity: Severity::Warning,
    summary: "a backend whose weight leaves it as good as out of the pool",
    explain: "A backend of weight above zero whose intended share is below 1/20 of its \
capacity share (with equal capacities: below 1/20 of an equal share, such as weight 1 among \
weights of 100) gets almost no traffic. It is usually a typo — 1 for 100, or a weight left \
over from a canary — and it hurts twice: the pool runs on less capacity than its author \
counts on, so losing one more backend can overwhelm the rest, and the backend is barely \
exercised, so passive checks learn little about it before it is needed. Fix the weight; to \
take a backend out on purpose use weight = 0 or drain it; for a deliberately small canary \
declare its small `capacity` (or allow the rule with the reason). The rule applies to the \
algorithms that use weights (not round_robin).",
    check: |config, out| {
        for pool in config.pools.iter().filter(|p| p.algorithm.uses_weights()) {
            let total = pool.total_weight();
            for (backend, split) in pool.backends.iter().zip(split(pool)) {
                if backend.weight == 0 || split.load_ratio() >= NEAR_ZERO_RATIO {
                    continue;
                }
                out.push(
                    Finding::warning(
                        "",
                        Some(backend.weight_span.clone()),
                        format!(
                            "backend {} of pool {:?} has weight {} of {total}: it is meant to get {} of the traffic, under 1/20 of its capacity share ({})",
                            backend.address,
                            pool.name,
                            backend.weight,
                            percent(split.intended_share),
                            percent(split.capacity_share)
                        ),
                    )
                    .with_help(
                        "fix the weight if it is a typo; use weight = 0 to take the backend out, or declare a small `capacity` for a canary",
                    ),
                );
            }
        }
    },
};

pub const HASH_KEY_MAY_BE_MISSING: Rule = Rule {
    name: "hash-key-may-be-missing",
    severity: Severity::Warning,
    summary: "consistent hashing on a header or cookie that requests may lack",
    explain: "consistent_hash keeps requests with the same key on the same backend, which \
is what caches and session state rely on. A request without the key cannot stick: evenkeel \
spreads it at random over the pool (in proportion to weight). Keyed on a header or a \
cookie, that can be most requests — a cookie set only after login, a header one client \
library forgets, a misspelled name — and the pool silently becomes a random one: cache hit \
rates collapse and every backend rebuilds state for every user. Make sure clients send the \
key, or hash on client_ip or path, which every request has. `evenkeel preflight --key-missing \
PCT` shows what that share does to the pool; count the real share in your access logs, and \
allow the rule with the reason once you know it is high.",
    check: |config, out| {
        // A TCP pool's key is `tcp-pool-hash-key`'s.
        for pool in config.pools.iter().filter(|p| !p.tcp) {
            let what = match &pool.hash_key {
                Some(HashKey::Header(name)) => format!("header {name:?}"),
                Some(HashKey::Cookie(name)) => format!("cookie {name:?}"),
                _ => continue,
            };
            let key = pool
                .hash_key
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            out.push(
                Finding::warning(
                    "",
                    Some(pool.spans.hash_key.clone().unwrap_or(pool.span.clone())),
                    format!(
                        "pool {:?} hashes on {key}: requests without the {what} are spread at random instead of sticking to one backend",
                        pool.name
                    ),
                )
                .with_help(
                    "make sure clients always send it (`preflight` will measure the share that carries it), or hash on \"client_ip\" or \"path\"",
                ),
            );
        }
    },
};
