//! Failure analysis: what happens to every route and every server when any one server
//! (or, for small configs, any two) fails — computed for the whole config at once, so a
//! risk no single lint names is still found.
//!
//! # The model
//! A failed server refuses connections everywhere it is listed: in every pool, as a
//! backup, under every name it has ([`super::servers`]). The analysis works out the
//! steady state the proxy settles in once its detectors have acted, pool by pool, with
//! the same `balance` code `serve` and `simulate` run:
//! 1. **Detection.** A pool with an active health check (`http` or `tcp`; both see a
//!    refused connection) takes every failed entry out of traffic, after about
//!    `interval × unhealthy_after`. Without one, passive ejection takes failed entries
//!    out after `outlier.consecutive_failures` failed requests — as many as
//!    `max_ejected_percent` allows (the test `runtime.rs` applies before an ejection),
//!    the rest stay in traffic. With neither, nothing takes them out.
//! 2. **Panic mode and the split.** [`balance::select_candidates`] decides the
//!    candidates and panic mode from what is left usable, exactly as live; in panic
//!    mode the failed entries are candidates again. Each candidate's share of the
//!    pool's first tries is [`balance::intended_shares`] for the weight-driven
//!    algorithms and weight × capacity for the load-aware ones (least connections and
//!    least request keep in-flight counts in proportion to weights under load, and a
//!    backend of twice the capacity drains its queue twice as fast: `simulate`'s
//!    model).
//! 3. **Retries.** A first try that reaches a failed entry still in traffic fails at
//!    once and is retried on another candidate — never one already tried — by the same
//!    shares, up to `retries.attempts` times, while the retry budget
//!    (`budget_percent` of the pool's requests) lasts: when the retries wanted exceed
//!    it, every retry is scaled down alike. A retry that lands on another failed entry
//!    fails again. What no retry rescues is an error. (The few retries the budget
//!    always allows a quiet pool are left out: they matter only at low traffic.)
//! 4. **Failover.** A pool left with no usable backend sends its traffic to its
//!    `backup` — or the backup's backup — as live; at the end of the chain there is
//!    nowhere to go (503).
//!
//! A route is **down** after a failure when its pool (or the pool it fails over to)
//! has nowhere to send it, or every candidate left is a failed server.
//!
//! # The cross-pool load ratio
//! Each pool's part of the client traffic comes from [`super::traffic`] (observed, or
//! assumed equal per route). A server's **load** is what every pool sends it — first
//! tries and retries — as a share of all traffic. Its **cross-pool load ratio** is
//! its load as a share of the traffic of the routes that reach it, over its capacity
//! as a share of the capacity of every server those routes can reach (weight above 0,
//! not failed):
//!
//! ```text
//!                 load(s) / Σ traffic of the routes that send s requests
//! ratio(s) =  ─────────────────────────────────────────────────────────────────
//!              capacity(s) / Σ capacity of the servers those routes can reach
//! ```
//!
//! For a server listed by one pool it is the pool's own load ratio (DESIGN "Words"),
//! so it means the same everywhere: 1 is a fair share of the work for the capacity,
//! `guard.max_load_ratio` the line. It measures distribution, not headroom: after a
//! pool of two loses one server the other carries everything, but with all the
//! capacity left — ratio 1. (How much more each server then carries is shown beside it
//! as *load after ÷ before*.)
//!
//! # Cost
//! A state is one pass over every pool entry; the single-failure table is one state per
//! server, O(servers × entries) — 1,000 entries over 300 servers in a few
//! milliseconds (`benches/sim.rs`). The two-failure table is one state per pair, so it
//! is offered for configs of at most [`MAX_PAIR_SERVERS`] servers.

use crate::balance;
use crate::config::{Config, Pool};

use super::servers::Servers;
use super::traffic::Traffic;

/// The two-failure table is computed for configs of at most this many servers.
pub const MAX_PAIR_SERVERS: usize = 120;

/// How a pool takes a server that refuses connections out of traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// An active health check takes every failed entry out.
    Active,
    /// Passive ejection takes out at most `ejectable` entries.
    Passive {
        /// Entries `max_ejected_percent` lets be ejected at once.
        ejectable: usize,
    },
    /// Passive ejection is on, but `max_ejected_percent` lets it eject no backend of
    /// the pool.
    Capped,
    /// Nothing does.
    Nothing,
}

impl Removal {
    /// How `pool` is configured to react.
    pub fn of(pool: &Pool) -> Removal {
        if pool.health.is_some() {
            return Removal::Active;
        }
        let outlier = &pool.outlier;
        if outlier.consecutive_failures == 0 {
            return Removal::Nothing;
        }
        // The most k for which runtime.rs's test (k * 100 <= percent * n) holds.
        let ejectable = usize::from(outlier.max_ejected_percent) * pool.backends.len() / 100;
        if ejectable == 0 {
            Removal::Capped
        } else {
            Removal::Passive { ejectable }
        }
    }
}

/// One pool's steady state with some servers failed.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolOutcome {
    /// Per entry: the share of the pool's requests whose first try goes there.
    pub first: Vec<f64>,
    /// Per entry: the share of the pool's requests retried onto it (and served).
    pub retried: Vec<f64>,
    /// Share of the pool's requests that fail (first try and every retry failed, or no
    /// retry allowed).
    pub errors: f64,
    /// Whether the pool is in panic mode.
    pub panic: bool,
    /// Entries of weight above 0 that are usable (what failover looks at).
    pub usable: usize,
    /// Entries of weight above 0.
    pub weighted: usize,
    /// Entries of failed servers.
    pub failed: usize,
    /// Entries of failed servers nothing took out of traffic (or panic put back).
    pub failed_in_traffic: usize,
}

/// The whole config's steady state with some servers failed.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The failed servers.
    pub failed: Vec<usize>,
    /// Per pool.
    pub pools: Vec<PoolOutcome>,
    /// Per pool named by a route: the pool that serves its traffic (itself, or a
    /// backup down the chain), `None` when there is nowhere to go. `None` too for
    /// pools no route names.
    pub serving: Vec<Option<usize>>,
    /// Per pool named by a route: share of its requests that fail (1 when down).
    pub errors: Vec<f64>,
    /// Per server: share of all client traffic whose first try goes there.
    pub first: Vec<f64>,
    /// Per server: share of all client traffic retried onto it.
    pub retried: Vec<f64>,
    /// Per server: the cross-pool load ratio; `None` for a failed server or one that
    /// carries nothing.
    pub ratio: Vec<Option<f64>>,
}

impl State {
    /// A server's load: first tries and retries, as a share of all traffic.
    pub fn load(&self, server: usize) -> f64 {
        self.first[server] + self.retried[server]
    }

    /// Whether the pool `p`, named by a route, has nowhere to send its requests.
    pub fn down(&self, p: usize) -> bool {
        is_down(self.errors[p])
    }
}

fn is_down(errors: f64) -> bool {
    errors >= 1.0 - 1e-9
}

/// What a failure changes, against the baseline: only the pools, routes and servers
/// it touches, so a row costs what those cost, not the whole config.
#[derive(Clone, Debug, PartialEq)]
pub struct FailureRow {
    /// The failed servers.
    pub failed: Vec<usize>,
    /// The new outcome of every pool that lists a failed server.
    pub pools: Vec<(usize, PoolOutcome)>,
    /// Every routed pool whose backup chain holds one of those pools: (pool, the pool
    /// that now serves it, the share of its requests that now fail).
    pub routes: Vec<(usize, Option<usize>, f64)>,
    /// Every server whose figures may have changed (failed ones excluded).
    pub servers: Vec<ServerChange>,
    /// Routed pools the failure leaves with nowhere to go.
    pub down: Vec<usize>,
    /// Servers the failure pushes over `guard.max_load_ratio` that were not over it
    /// before: (server, ratio before, ratio after).
    pub overloaded: Vec<(usize, Option<f64>, f64)>,
    /// The server with the highest load ratio after the failure, and the ratio.
    pub highest: Option<(usize, f64)>,
}

/// A server's figures after a failure.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerChange {
    /// The server.
    pub server: usize,
    /// Its load (first tries and retries, share of all traffic) after.
    pub load: f64,
    /// Of which first tries.
    pub first: f64,
    /// Its cross-pool load ratio after.
    pub ratio: Option<f64>,
}

/// The failure analysis of one config under one traffic split.
#[derive(Debug)]
pub struct Analysis<'a> {
    /// The config.
    pub config: &'a Config,
    /// Its servers.
    pub servers: Servers,
    /// The split between pools.
    pub traffic: Traffic,
    /// How each pool removes a failed server.
    pub removal: Vec<Removal>,
    /// Position of each pool's backup pool.
    backup: Vec<Option<usize>>,
    /// Whether a route names each pool.
    routed: Vec<bool>,
    /// For each pool, the routed pools whose backup chain holds it.
    members: Vec<Vec<usize>>,
    /// For each pool, the routed pools with traffic it serves with nothing failed.
    served_by: Vec<Vec<usize>>,
    /// Servers, highest baseline load ratio first.
    by_ratio: Vec<usize>,
    /// The state with nothing failed.
    pub baseline: State,
}

/// The work [`Analysis::single`] may do (pool entries visited, about); a config past
/// it is too large to analyse in a second, and the lints say so instead.
pub const MAX_WORK: u64 = 200_000_000;

impl<'a> Analysis<'a> {
    /// Analyses `config` with `traffic` between its pools.
    pub fn new(config: &'a Config, traffic: Traffic) -> Analysis<'a> {
        let servers = Servers::of(config);
        let position = |name: &str| config.pools.iter().position(|p| p.name == name);
        let backup: Vec<Option<usize>> = config
            .pools
            .iter()
            .map(|p| p.backup.as_deref().and_then(position))
            .collect();
        let mut routed = vec![false; config.pools.len()];
        for route in &config.routes {
            if let Some(p) = position(&route.pool) {
                routed[p] = true;
            }
        }
        let mut members = vec![Vec::new(); config.pools.len()];
        for p in (0..config.pools.len()).filter(|&p| routed[p]) {
            let mut at = Some(p);
            let mut seen = Vec::new();
            while let Some(q) = at.filter(|q| !seen.contains(q)) {
                seen.push(q);
                members[q].push(p);
                at = backup[q];
            }
        }
        let mut analysis = Analysis {
            config,
            removal: config.pools.iter().map(Removal::of).collect(),
            servers,
            traffic,
            backup,
            routed,
            members,
            served_by: Vec::new(),
            by_ratio: Vec::new(),
            baseline: State {
                failed: Vec::new(),
                pools: Vec::new(),
                serving: Vec::new(),
                errors: Vec::new(),
                first: Vec::new(),
                retried: Vec::new(),
                ratio: Vec::new(),
            },
        };
        analysis.baseline = analysis.state(&[]);
        analysis.served_by = analysis.served_by_in(&analysis.baseline);
        let mut by_ratio: Vec<usize> = (0..analysis.servers.list.len()).collect();
        by_ratio.sort_by(|&a, &b| {
            let r = |s: usize| analysis.baseline.ratio[s].unwrap_or(0.0);
            r(b).total_cmp(&r(a))
        });
        analysis.by_ratio = by_ratio;
        analysis
    }

    /// Analyses `config` with the `observed` split, or equal traffic per route.
    pub fn with_observed(
        config: &'a Config,
        observed: Option<&super::traffic::Observed>,
    ) -> Analysis<'a> {
        Analysis::new(config, Traffic::of(config, observed))
    }

    /// Whether a route names pool `p`.
    pub fn routed(&self, p: usize) -> bool {
        self.routed[p]
    }

    /// About how many pool entries [`Analysis::single`] visits (module doc, "Cost").
    pub fn work(&self) -> u64 {
        let len = |q: usize| self.config.pools[q].backends.len() as u64;
        let walk = |u: usize| -> u64 {
            let entries = &self.servers.list[u].entries;
            if entries.len() > 1 {
                entries.iter().map(|e| len(e.pool)).sum()
            } else {
                1
            }
        };
        (0..self.config.pools.len())
            .map(|q| {
                let touched: u64 = self.servers.of_entry[q].iter().map(|&u| walk(u)).sum();
                len(q) * (len(q) + touched + self.members[q].len() as u64)
            })
            .sum()
    }

    /// The full steady state with `failed` servers down, computed from scratch (the
    /// baseline; rows are computed as changes to it, and tests compare the two).
    pub fn state(&self, failed: &[usize]) -> State {
        let config = self.config;
        let mut is_failed = vec![false; self.servers.list.len()];
        for &s in failed {
            is_failed[s] = true;
        }
        let pools: Vec<PoolOutcome> = (0..config.pools.len())
            .map(|p| self.outcome(p, &is_failed))
            .collect();
        let n = self.servers.list.len();
        let mut state = State {
            failed: failed.to_vec(),
            serving: vec![None; config.pools.len()],
            errors: vec![0.0; config.pools.len()],
            first: vec![0.0; n],
            retried: vec![0.0; n],
            ratio: vec![None; n],
            pools,
        };
        for p in (0..config.pools.len()).filter(|&p| self.routed[p]) {
            let serving = self.walk(p, |q| &state.pools[q]);
            state.serving[p] = serving;
            let Some(q) = serving else {
                state.errors[p] = 1.0;
                continue;
            };
            let out = &state.pools[q];
            state.errors[p] = out.errors;
            let t = self.traffic.pools[p];
            for (e, &s) in self.servers.of_entry[q].iter().enumerate() {
                state.first[s] += t * out.first[e];
                state.retried[s] += t * out.retried[e];
            }
        }
        let served_by = self.served_by_in(&state);
        let capacity = self.capacities(&is_failed);
        for s in 0..n {
            if !is_failed[s] {
                state.ratio[s] = self.ratio(
                    s,
                    state.load(s),
                    |q| &served_by[q],
                    |u| is_failed[u],
                    |q| capacity[q],
                );
            }
        }
        state
    }

    /// The outcome of pool `p` with the servers `is_failed` marks down.
    fn outcome(&self, p: usize, is_failed: &[bool]) -> PoolOutcome {
        let failed: Vec<bool> = self.servers.of_entry[p]
            .iter()
            .map(|&s| is_failed[s])
            .collect();
        outcome(&self.config.pools[p], self.removal[p], &failed)
    }

    /// For each pool, the routed pools with traffic it serves in `state`.
    fn served_by_in(&self, state: &State) -> Vec<Vec<usize>> {
        let mut served_by = vec![Vec::new(); self.config.pools.len()];
        for (p, serving) in state.serving.iter().enumerate() {
            if let Some(q) = serving.filter(|_| self.traffic.pools[p] > 0.0) {
                served_by[q].push(p);
            }
        }
        served_by
    }

    /// For each pool, the capacity of its servers of weight above 0 not failed.
    fn capacities(&self, is_failed: &[bool]) -> Vec<f64> {
        (0..self.config.pools.len())
            .map(|q| self.capacity_of(q, |u| is_failed[u]))
            .collect()
    }

    fn capacity_of(&self, q: usize, is_failed: impl Fn(usize) -> bool) -> f64 {
        self.config.pools[q]
            .backends
            .iter()
            .zip(&self.servers.of_entry[q])
            .filter(|(b, &u)| b.weight > 0 && !is_failed(u))
            .map(|(_, &u)| self.servers.list[u].capacity)
            .sum()
    }

    /// The pool that serves `p`'s traffic: `p`, or down its backup chain while a
    /// pool has no usable backend (runtime.rs `Snapshot::serving`).
    fn walk<'o>(&self, p: usize, outcome: impl Fn(usize) -> &'o PoolOutcome) -> Option<usize> {
        let mut at = p;
        for _ in 0..=self.config.pools.len() {
            if outcome(at).usable > 0 {
                return Some(at);
            }
            at = self.backup[at]?;
        }
        None
    }

    /// Server `s`'s cross-pool load ratio (module doc) given its load, which routed
    /// pools each pool serves, which servers failed, and each pool's capacity left.
    fn ratio<'s>(
        &self,
        s: usize,
        load: f64,
        served_by: impl Fn(usize) -> &'s [usize],
        is_failed: impl Fn(usize) -> bool,
        capacity_of_pool: impl Fn(usize) -> f64,
    ) -> Option<f64> {
        let server = &self.servers.list[s];
        if load <= 0.0 {
            return None;
        }
        let serving: Vec<usize> = {
            // A pool where it has weight 0 sends it nothing: not one of its routes.
            let mut pools: Vec<usize> = server
                .entries
                .iter()
                .filter(|e| self.config.pools[e.pool].backends[e.backend].weight > 0)
                .map(|e| e.pool)
                .filter(|&q| !served_by(q).is_empty())
                .collect();
            pools.dedup();
            pools
        };
        let traffic: f64 = serving
            .iter()
            .flat_map(|&q| served_by(q))
            .map(|&p| self.traffic.pools[p])
            .sum();
        let capacity = match serving.as_slice() {
            [] => 0.0,
            [q] => capacity_of_pool(*q),
            several => {
                // The union of the pools' servers: each counted once.
                let mut seen = std::collections::HashSet::new();
                several
                    .iter()
                    .flat_map(|&q| {
                        self.config.pools[q]
                            .backends
                            .iter()
                            .zip(&self.servers.of_entry[q])
                    })
                    .filter(|(b, &u)| b.weight > 0 && !is_failed(u) && seen.insert(u))
                    .map(|(_, &u)| self.servers.list[u].capacity)
                    .sum()
            }
        };
        (traffic > 0.0 && capacity > 0.0).then(|| (load / traffic) / (server.capacity / capacity))
    }

    /// What the failure of the `failed` servers changes.
    pub fn row(&self, failed: &[usize]) -> FailureRow {
        let config = self.config;
        let is_failed = |u: usize| failed.contains(&u);
        // Pools that list a failed server get a new outcome.
        let mut changed: Vec<usize> = failed
            .iter()
            .flat_map(|&s| self.servers.list[s].entries.iter().map(|e| e.pool))
            .collect();
        changed.sort_unstable();
        changed.dedup();
        let mut marks = vec![false; self.servers.list.len()];
        for &s in failed {
            marks[s] = true;
        }
        let pools: Vec<(usize, PoolOutcome)> = changed
            .iter()
            .map(|&q| (q, self.outcome(q, &marks)))
            .collect();
        let outcome = |q: usize| {
            pools
                .iter()
                .find(|(p, _)| *p == q)
                .map_or(&self.baseline.pools[q], |(_, o)| o)
        };
        // Routed pools whose chain holds a changed pool: their serving pool and errors.
        let mut affected: Vec<usize> = changed
            .iter()
            .flat_map(|&q| self.members[q].iter().copied())
            .collect();
        affected.sort_unstable();
        affected.dedup();
        let mut routes = Vec::with_capacity(affected.len());
        let mut delta: std::collections::HashMap<usize, (f64, f64)> = Default::default();
        let mut touched_pools: Vec<usize> = changed.clone();
        // Routes (with traffic) now served by another pool than before.
        let mut moved: Vec<(usize, Option<usize>)> = Vec::new();
        for &p in &affected {
            let serving = self.walk(p, outcome);
            let errors = serving.map_or(1.0, |q| outcome(q).errors);
            routes.push((p, serving, errors));
            let t = self.traffic.pools[p];
            let old = self.baseline.serving[p];
            // Served by the same pool, whose outcome did not change: nothing moves.
            let same = old == serving && serving.is_none_or(|q| changed.binary_search(&q).is_err());
            if same || t <= 0.0 {
                continue;
            }
            touched_pools.extend(old.iter().chain(serving.iter()));
            if old != serving {
                moved.push((p, serving));
            }
            for (q, sign, out) in [
                (old, -1.0, old.map(|q| &self.baseline.pools[q])),
                (serving, 1.0, serving.map(outcome)),
            ] {
                let (Some(q), Some(out)) = (q, out) else {
                    continue;
                };
                for (e, &u) in self.servers.of_entry[q].iter().enumerate() {
                    let d = delta.entry(u).or_default();
                    d.0 += sign * t * out.first[e];
                    d.1 += sign * t * out.retried[e];
                }
            }
        }
        touched_pools.sort_unstable();
        touched_pools.dedup();
        // Who each touched pool serves now: its routes before, but those that moved,
        // and those that moved to it.
        let mut served_now: std::collections::HashMap<usize, Vec<usize>> = touched_pools
            .iter()
            .map(|&q| {
                let by = self.served_by[q]
                    .iter()
                    .copied()
                    .filter(|p| moved.iter().all(|(m, _)| m != p))
                    .collect();
                (q, by)
            })
            .collect();
        for &(p, serving) in &moved {
            if let Some(by) = serving.and_then(|q| served_now.get_mut(&q)) {
                by.push(p);
            }
        }
        let served_by = |q: usize| -> &[usize] {
            served_now
                .get(&q)
                .map_or(self.served_by[q].as_slice(), Vec::as_slice)
        };
        let capacity_of_pool = |q: usize| {
            if changed.binary_search(&q).is_ok() {
                self.capacity_of(q, is_failed)
            } else {
                self.capacity_of(q, |_| false)
            }
        };
        let mut touched: Vec<usize> = touched_pools
            .iter()
            .flat_map(|&q| self.servers.of_entry[q].iter().copied())
            .filter(|&u| !is_failed(u))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let servers: Vec<ServerChange> = touched
            .iter()
            .map(|&u| {
                let (df, dr) = delta.get(&u).copied().unwrap_or_default();
                let first = (self.baseline.first[u] + df).max(0.0);
                let load = (self.baseline.load(u) + df + dr).max(0.0);
                ServerChange {
                    server: u,
                    load,
                    first,
                    ratio: self.ratio(u, load, served_by, is_failed, capacity_of_pool),
                }
            })
            .collect();
        let limit = config.guard.max_load_ratio;
        let down = routes
            .iter()
            .filter(|(p, _, errors)| is_down(*errors) && !self.baseline.down(*p))
            .map(|(p, _, _)| *p)
            .collect();
        let overloaded = servers
            .iter()
            .filter_map(|c| {
                let after = c.ratio?;
                let before = self.baseline.ratio[c.server];
                let was_over = before.is_some_and(|b| super::above(b, limit));
                (super::above(after, limit) && !was_over).then_some((c.server, before, after))
            })
            .collect();
        let unchanged_highest = self
            .by_ratio
            .iter()
            .copied()
            .find(|&u| !is_failed(u) && touched.binary_search(&u).is_err())
            .and_then(|u| self.baseline.ratio[u].map(|r| (u, r)));
        let highest = servers
            .iter()
            .filter_map(|c| c.ratio.map(|r| (c.server, r)))
            .chain(unchanged_highest)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        FailureRow {
            failed: failed.to_vec(),
            pools,
            routes,
            servers,
            down,
            overloaded,
            highest,
        }
    }

    /// Calls `each` with every server and the row of its failing alone, one row at a
    /// time (nothing is kept).
    pub fn for_each_single(&self, mut each: impl FnMut(usize, &FailureRow)) {
        for s in 0..self.servers.list.len() {
            each(s, &self.row(&[s]));
        }
    }

    /// The routed pools whose traffic server `s` may carry: those whose backup chain
    /// holds a pool that lists it with a weight above 0. A figure of a server reached
    /// by several rests on the split between pools.
    pub fn routes_reaching(&self, s: usize) -> usize {
        let mut primaries: Vec<usize> = self.servers.list[s]
            .entries
            .iter()
            .filter(|e| self.config.pools[e.pool].backends[e.backend].weight > 0)
            .flat_map(|e| self.members[e.pool].iter().copied())
            .collect();
        primaries.sort_unstable();
        primaries.dedup();
        primaries.len()
    }

    /// One row per server: each failing alone.
    pub fn single(&self) -> Vec<FailureRow> {
        (0..self.servers.list.len())
            .map(|s| self.row(&[s]))
            .collect()
    }

    /// One row per pair of servers, or `None` when the config has more than
    /// [`MAX_PAIR_SERVERS`] servers.
    pub fn pairs(&self) -> Option<Vec<FailureRow>> {
        let n = self.servers.list.len();
        if n > MAX_PAIR_SERVERS {
            return None;
        }
        let mut rows = Vec::with_capacity(n * n.saturating_sub(1) / 2);
        for a in 0..n {
            for b in a + 1..n {
                rows.push(self.row(&[a, b]));
            }
        }
        Some(rows)
    }

    /// The pool that serves routed pool `p` after the failure of `row`.
    pub fn serving(&self, row: &FailureRow, p: usize) -> Option<usize> {
        row.routes
            .iter()
            .find(|(q, _, _)| *q == p)
            .map_or(self.baseline.serving[p], |(_, serving, _)| *serving)
    }

    /// Server `s`'s load after the failure of `row` (share of all traffic); for a
    /// failed server, the first tries that still reach it (and fail).
    pub fn load_after(&self, row: &FailureRow, s: usize) -> f64 {
        if row.failed.contains(&s) {
            // Only first tries, where panic mode (or nothing) keeps it in traffic.
            return self.first_after(row, s);
        }
        row.servers
            .iter()
            .find(|c| c.server == s)
            .map_or(self.baseline.load(s), |c| c.load)
    }

    /// Server `s`'s cross-pool load ratio after the failure of `row`.
    pub fn ratio_after(&self, row: &FailureRow, s: usize) -> Option<f64> {
        if row.failed.contains(&s) {
            return None;
        }
        row.servers
            .iter()
            .find(|c| c.server == s)
            .map_or(self.baseline.ratio[s], |c| c.ratio)
    }

    /// Server `s`'s first tries after the failure of `row` (share of all traffic).
    pub fn first_after(&self, row: &FailureRow, s: usize) -> f64 {
        if row.failed.contains(&s) {
            return row
                .routes
                .iter()
                .filter_map(|(p, serving, _)| Some((*p, (*serving)?)))
                .map(|(p, q)| {
                    let out = row
                        .pools
                        .iter()
                        .find(|(r, _)| *r == q)
                        .map_or(&self.baseline.pools[q], |(_, o)| o);
                    self.servers.of_entry[q]
                        .iter()
                        .zip(&out.first)
                        .filter(|(&u, _)| u == s)
                        .map(|(_, f)| self.traffic.pools[p] * f)
                        .sum::<f64>()
                })
                .sum();
        }
        row.servers
            .iter()
            .find(|c| c.server == s)
            .map_or(self.baseline.first[s], |c| c.first)
    }

    /// The server whose load grows most with the failure of `row`: (server, load
    /// after ÷ before).
    pub fn largest_rise(&self, row: &FailureRow) -> Option<(usize, f64)> {
        row.servers
            .iter()
            .filter(|c| self.baseline.load(c.server) > 0.0)
            .map(|c| (c.server, c.load / self.baseline.load(c.server)))
            .filter(|(_, rise)| *rise > 1.0 + 1e-9)
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Every pool that lists a failed server of `row`, with how it meets the failure
    /// ([`Analysis::reaction`]), in config order.
    pub fn reactions(&self, row: &FailureRow) -> Vec<(usize, String)> {
        row.pools
            .iter()
            .filter_map(|(p, _)| self.reaction(row, *p).map(|r| (*p, r)))
            .collect()
    }

    /// How pool `p` meets the failure of `row`, in words (for tables and findings);
    /// `None` when none of its servers failed.
    pub fn reaction(&self, row: &FailureRow, p: usize) -> Option<String> {
        let (_, out) = row.pools.iter().find(|(q, _)| *q == p)?;
        if out.failed == 0 {
            return None;
        }
        let pool = &self.config.pools[p];
        let percent = |x: f64| format!("{:.0}%", x * 100.0);
        if out.usable == 0 {
            let outcome = |q: usize| {
                row.pools
                    .iter()
                    .find(|(r, _)| *r == q)
                    .map_or(&self.baseline.pools[q], |(_, o)| o)
            };
            let serving = self.backup[p].and_then(|b| self.walk(b, outcome));
            let in_use = self.routed[p] || !self.served_by[p].is_empty();
            return Some(match serving {
                Some(q) => format!(
                    "no usable backend: fails over to {}",
                    self.config.pools[q].name
                ),
                None if in_use => "no usable backend: answers 503".to_string(),
                None => "no usable backend (a backup, not in use now)".to_string(),
            });
        }
        if out.panic {
            return Some(format!(
                "panic mode ({} of {} usable): traffic spreads over the failed server too; {} of its requests fail",
                out.usable,
                out.weighted,
                percent(out.errors)
            ));
        }
        if out.failed_in_traffic > 0 {
            let why = match self.removal[p] {
                Removal::Passive { ejectable } => {
                    format!("max_ejected_percent lets passive ejection eject {ejectable}")
                }
                Removal::Capped => format!(
                    "max_ejected_percent {} lets passive ejection eject none of {}",
                    pool.outlier.max_ejected_percent,
                    pool.backends.len()
                ),
                _ => "no health check and passive ejection off".to_string(),
            };
            return Some(format!(
                "not taken out of traffic ({why}): {} of its requests fail",
                percent(out.errors)
            ));
        }
        Some(match self.removal[p] {
            Removal::Active => {
                let health = pool
                    .health
                    .as_ref()
                    .map_or(0.0, |h| (h.interval * h.unhealthy_after).as_secs_f64());
                format!("taken out by the active check within about {health:.0}s")
            }
            _ => format!(
                "ejected after {} failed requests in a row",
                pool.outlier.consecutive_failures
            ),
        })
    }
}

/// One pool's steady state with `failed` entries down and `removal` as its detectors.
fn outcome(pool: &Pool, removal: Removal, failed: &[bool]) -> PoolOutcome {
    let mut removed = vec![false; failed.len()];
    match removal {
        Removal::Active => removed.clone_from_slice(failed),
        Removal::Passive { ejectable } => {
            // A backend of weight 0 gets no requests, so it is never ejected.
            for (r, _) in removed
                .iter_mut()
                .zip(failed.iter().zip(&pool.backends))
                .filter(|(_, (&f, b))| f && b.weight > 0)
                .take(ejectable)
            {
                *r = true;
            }
        }
        Removal::Capped | Removal::Nothing => {}
    }
    let states = super::backend_states(pool, &removed);
    let selection = balance::select_candidates(&states, pool.panic_threshold);
    let usable = states.iter().filter(|s| s.weight > 0 && s.usable).count();
    let weighted = states.iter().filter(|s| s.weight > 0).count();
    let (first, retried, errors) = if pool.algorithm.is_weight_driven() {
        let first =
            balance::intended_shares(pool.algorithm, states.as_slice(), pool.panic_threshold);
        let (retried, errors) = retries_by_share(pool, &first, failed);
        (first, retried, errors)
    } else {
        load_aware(pool, &selection, failed)
    };
    let failed_in_traffic = (0..failed.len())
        .filter(|&i| failed[i] && first[i] > 0.0)
        .count();
    PoolOutcome {
        first,
        retried,
        errors,
        panic: selection.panic,
        usable,
        weighted,
        failed: failed.iter().filter(|&&f| f).count(),
        failed_in_traffic,
    }
}

/// Least connections and least request: the candidates' shares of first tries are
/// weight × capacity (module doc) — unless a failed server is still a candidate. A
/// refused try gives up its slot at once, so a failed server always has the fewest
/// requests in flight and gets every first try (by weight among the failed ones); each
/// retry goes to another failed candidate while one is left untried, then to the
/// healthy ones by weight × capacity. With `k` failed candidates a request needs `k`
/// retries to be served, as long as `retries.attempts` and the budget allow.
fn load_aware(
    pool: &Pool,
    selection: &balance::Selection,
    failed: &[bool],
) -> (Vec<f64>, Vec<f64>, f64) {
    let n = failed.len();
    let part = |index: usize, weight: u32| f64::from(weight) * pool.backends[index].capacity;
    let split = |keep: &dyn Fn(usize) -> bool, by: &dyn Fn(usize, u32) -> f64| {
        let mut shares = vec![0.0; n];
        let total: f64 = selection
            .candidates
            .iter()
            .filter(|c| keep(c.index))
            .map(|c| by(c.index, c.weight))
            .sum();
        if total > 0.0 {
            for c in selection.candidates.iter().filter(|c| keep(c.index)) {
                shares[c.index] = by(c.index, c.weight) / total;
            }
        }
        shares
    };
    let failing = selection
        .candidates
        .iter()
        .filter(|c| failed[c.index])
        .count();
    if failing == 0 {
        return (split(&|_| true, &part), vec![0.0; n], 0.0);
    }
    let first = split(&|i| failed[i], &|_, w| f64::from(w));
    let healthy = split(&|i| !failed[i], &part);
    let attempts = pool.retries.attempts as usize;
    let budget = f64::from(pool.retries.budget_percent) / 100.0;
    let rescued = if attempts >= failing && healthy.iter().any(|&h| h > 0.0) {
        (budget / failing as f64).min(1.0)
    } else {
        0.0
    };
    let retried = healthy.iter().map(|h| rescued * h).collect();
    (first, retried, 1.0 - rescued)
}

/// The retries the failed entries in traffic cause (module doc, step 3): per entry,
/// the share of the pool's requests retried onto it and served; and the share that
/// fails.
fn retries_by_share(pool: &Pool, first: &[f64], failed: &[bool]) -> (Vec<f64>, f64) {
    let mut retried = vec![0.0; first.len()];
    let failing: f64 = (0..first.len())
        .filter(|&i| failed[i])
        .map(|i| first[i])
        .sum();
    if failing <= 0.0 {
        return (retried, 0.0);
    }
    let healthy = 1.0 - failing;
    let attempts = pool.retries.attempts as i32;
    // q: the chance a retry of entry i lands on another failed entry.
    let chance = |s: f64| {
        if s < 1.0 {
            ((failing - s) / (1.0 - s)).clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let wanted: f64 = (0..first.len())
        .filter(|&i| failed[i] && first[i] > 0.0)
        .map(|i| {
            let q = chance(first[i]);
            first[i] * (0..attempts).map(|k| q.powi(k)).sum::<f64>()
        })
        .sum();
    let budget = f64::from(pool.retries.budget_percent) / 100.0;
    let scale = if wanted > budget {
        budget / wanted
    } else {
        1.0
    };
    let mut rescued = 0.0;
    if healthy > 1e-12 && attempts > 0 {
        for i in (0..first.len()).filter(|&i| failed[i] && first[i] > 0.0) {
            let q = chance(first[i]);
            rescued += first[i] * scale * (1.0 - q.powi(attempts));
        }
        for j in (0..first.len()).filter(|&j| !failed[j]) {
            retried[j] = rescued * first[j] / healthy;
        }
    }
    (retried, (failing - rescued).max(0.0))
}

#[cfg(test)]
mod tests;
