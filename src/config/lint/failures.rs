//! Lints from the failure analysis ([`crate::sim::failures`]): the whole config judged
//! against the failure of any one server, and the load every server carries across
//! pools — risks that no rule about one setting names.

use super::{Finding, Rule, Severity};
use crate::config::model::{Config, Span};
use crate::sim::failures::Analysis;

/// A finding about load whose figure rests on the split between pools: a warning when
/// the split was observed (`--traffic`), a note under the equal-per-route assumption,
/// which a small side route (an `/admin` pinned to one server) would otherwise turn
/// into a false alarm.
fn on_split(a: &Analysis, reached_by: usize, finding: Finding) -> Finding {
    if reached_by > 1 && a.traffic.assumed_equal() {
        Finding {
            severity: Severity::Note,
            ..finding
        }
    } else {
        finding
    }
}

/// The routes that name pool `p`, as `HOST/PREFIX` (`*` for any host).
pub fn route_labels(config: &Config, p: usize) -> String {
    let name = &config.pools[p].name;
    let labels: Vec<String> = config
        .routes
        .iter()
        .filter(|r| &r.pool == name)
        .map(|r| format!("{}{}", r.host.as_deref().unwrap_or("*"), r.path_prefix))
        .collect();
    labels.join(", ")
}

/// Where server `s` is first written in pool `p`, else its first entry anywhere.
fn entry_span(a: &Analysis, s: usize, p: Option<usize>) -> Span {
    let server = &a.servers.list[s];
    let entry = server
        .entries
        .iter()
        .find(|e| Some(e.pool) == p)
        .or(server.entries.first());
    entry.map_or(0..0, |e| {
        a.config.pools[e.pool].backends[e.backend].span.clone()
    })
}

pub const SERVER_LOAD_RATIO: Rule = Rule {
    name: "server-load-ratio",
    severity: Severity::Warning,
    summary: "a server listed by several pools carries more than its share across them",
    explain: "A server (an address after resolution) listed by several pools carries what \
every one of them sends it, and each pool's own split can look fair while the sum is not: \
a server that is one of two in a busy pool and also the only backend of another pool does \
the work of both. evenkeel adds up every pool's part of the traffic (observed with \
`check --traffic STATUS.json`, else assumed equal per route) and compares the server's \
share of the traffic of the routes that reach it with its share of the capacity of every \
server those routes can reach: the cross-pool load ratio. Above guard.max_load_ratio the \
server is overwhelmed while others idle — the outage this project exists to prevent. Give \
the busy pools more servers, move one pool to servers of its own, or state the server's \
real capacity (`capacity`, the same in every pool that lists it). docs/failures.md defines \
the figure.",
    check: |input, out| {
        let a = input.analysis();
        let limit = input.guard.max_load_ratio;
        for (s, server) in a.servers.list.iter().enumerate() {
            let pools = a.servers.pools_of(input.config, s);
            let Some(ratio) = a.baseline.ratio[s] else {
                continue;
            };
            if pools.len() < 2 || !crate::sim::above(ratio, limit) {
                continue;
            }
            out.push(on_split(
                a,
                a.routes_reaching(s),
                Finding::warning(
                    "",
                    Some(entry_span(a, s, None)),
                    format!(
                        "server {} is listed by pools {} and gets {:.1}% of all traffic: its load ratio across them is {ratio:.2}, above guard.max_load_ratio {limit} ({})",
                        server.name,
                        pools.join(", "),
                        a.baseline.load(s) * 100.0,
                        a.traffic.basis()
                    ),
                )
                .with_help("spread the busy pool over more servers, give a pool servers of its own, or state the server's real capacity"),
            ));
        }
    },
};

pub const SINGLE_FAILURE_OUTAGE: Rule = Rule {
    name: "single-failure-outage",
    severity: Severity::Warning,
    summary: "the failure of one server leaves a route with nowhere to go",
    explain: "evenkeel takes every server down in turn — everywhere it is listed, under \
every name that resolves to it — and works out what the pools then do as `serve` would: \
health checks and passive ejection take it out, panic mode puts it back, a pool with \
nothing usable fails over to its backup. A route whose pool (and backup chain) is then \
left with no usable backend, or only with the failed server, goes down with that one \
machine, although the pool lists several backends: the others have weight 0, or several \
names are one server. (A pool of one backend is left to `single-backend-pool`, and a \
backup sharing the failed server to `shared-failure-domain`.) Give the pool a second real \
server, or a backup pool on other servers. `evenkeel simulate --failures` prints the whole \
table.",
    check: |input, out| {
        let a = input.analysis();
        if a.work() > crate::sim::failures::MAX_WORK {
            out.push(Finding {
                severity: Severity::Note,
                ..Finding::warning(
                    "",
                    None,
                    format!(
                        "the single-failure analysis was skipped: the config is too large to analyse quickly (about {} pool entries to visit, over {}); `evenkeel simulate --failures` runs it regardless",
                        a.work(),
                        crate::sim::failures::MAX_WORK
                    ),
                )
            });
            return;
        }
        a.for_each_single(|s, row| {
            for &p in &row.down {
                let pool = &input.pools[p];
                if pool.backends.len() == 1 && pool.backup.is_none() {
                    continue; // single-backend-pool says it
                }
                if chain(input.config, p)
                    .iter()
                    .skip(1)
                    .any(|&q| a.servers.of_entry[q].contains(&s))
                {
                    continue; // shared-failure-domain says it, naming the servers
                }
                let reactions: Vec<String> = chain(input.config, p)
                    .into_iter()
                    .filter_map(|q| {
                        a.reaction(row, q)
                            .map(|r| format!("pool {}: {r}", input.pools[q].name))
                    })
                    .collect();
                out.push(
                    Finding::warning(
                        "",
                        Some(entry_span(a, s, Some(p))),
                        format!(
                            "when server {} fails, route {} (pool {:?}) has no usable backend left: {}",
                            a.servers.list[s].name,
                            route_labels(input.config, p),
                            pool.name,
                            reactions.join("; ")
                        ),
                    )
                    .with_help("give the pool a second server of weight above 0, or a backup pool on other servers"),
                );
            }
        });
    },
};

pub const SINGLE_FAILURE_OVERLOAD: Rule = Rule {
    name: "single-failure-overload",
    severity: Severity::Warning,
    summary: "the failure of one server pushes another over guard.max_load_ratio",
    explain: "When a server fails, its traffic moves — by the weights of the pools that \
listed it, down backup chains, and as retries — onto the servers left. In an evenly spread \
config every survivor takes a fair part of it; but where weights do not follow capacity, \
where a pool fails over to a small backup, or where pools share servers, one survivor may \
get far more than its share of the capacity left: the cascade in which the second server \
falls because the first did. evenkeel takes every server down in turn and flags a failure \
after which another server's cross-pool load ratio is above guard.max_load_ratio (it was \
not before). Make weights follow capacity, give backups the capacity of what they protect, \
or state real capacities. `evenkeel simulate --failures` prints every failure's figures.",
    check: |input, out| {
        let a = input.analysis();
        if a.work() > crate::sim::failures::MAX_WORK {
            return; // single-failure-outage says so
        }
        let limit = input.guard.max_load_ratio;
        a.for_each_single(|s, row| {
            let Some(&(worst, before, after)) =
                row.overloaded.iter().max_by(|x, y| x.2.total_cmp(&y.2))
            else {
                return;
            };
            let before = before.map_or("nothing".to_string(), |b| format!("{b:.2}"));
            let more = match row.overloaded.len() - 1 {
                0 => String::new(),
                n => format!(" ({n} more server{} too)", if n == 1 { "" } else { "s" }),
            };
            // After the failure the survivor may carry routes it did not before (a
            // failover): what rests on the split is what reaches it, before or after.
            let reached_by = a.routes_reaching(worst).max(a.routes_reaching(s));
            out.push(on_split(
                a,
                reached_by,
                Finding::warning(
                    "",
                    Some(entry_span(a, s, None)),
                    format!(
                        "when server {} fails, server {}'s load ratio goes from {before} to {after:.2}, above guard.max_load_ratio {limit}{more} ({})",
                        a.servers.list[s].name,
                        a.servers.list[worst].name,
                        a.traffic.basis()
                    ),
                )
                .with_help("make weights follow capacity, or give the pools (and backups) that take over more servers"),
            ));
        });
    },
};

pub const SHARED_FAILURE_DOMAIN: Rule = Rule {
    name: "shared-failure-domain",
    severity: Severity::Warning,
    summary: "a backup pool shares servers with the pool it protects",
    explain: "A backup pool takes over when its pool has no usable backend — which happens \
when the pool's servers fail. If the backup lists some of the same servers (under the same \
address or another name that resolves to it), those fail with the pool and the backup \
starts short of them, at the moment it gets all the traffic; if every backup server is one \
of the pool's, the backup protects against nothing. Give the backup servers of its own \
(another rack, zone or host).",
    check: |input, out| {
        let a = input.analysis();
        // A pool's servers of weight above 0, and their capacity.
        let serving = |p: usize| -> Vec<usize> {
            input.pools[p]
                .backends
                .iter()
                .zip(&a.servers.of_entry[p])
                .filter(|(b, _)| b.weight > 0)
                .map(|(_, &s)| s)
                .collect()
        };
        let capacity = |servers: &[usize]| -> f64 {
            servers.iter().map(|&s| a.servers.list[s].capacity).sum()
        };
        for (p, pool) in input.pools.iter().enumerate() {
            let Some(span) = pool
                .spans
                .backup
                .clone()
                .or(pool.backup.as_ref().map(|_| pool.span.clone()))
            else {
                continue;
            };
            let own = serving(p);
            for q in chain(input.config, p).into_iter().skip(1) {
                let theirs = serving(q);
                let (shared, left): (Vec<usize>, Vec<usize>) =
                    theirs.iter().partition(|s| own.contains(s));
                // A larger pool that includes the local one (zone failover to the
                // region) still has the capacity of what it protects once that fails.
                if shared.is_empty() || capacity(&left) >= capacity(&own) {
                    continue;
                }
                let names: Vec<&str> = shared
                    .iter()
                    .map(|&s| a.servers.list[s].name.as_str())
                    .collect();
                let consequence = if left.is_empty() {
                    "every one of its servers fails with the pool: it protects against nothing"
                        .to_string()
                } else {
                    format!(
                        "they fail with the pool, and it takes over with {} of its {} servers, capacity {} for the pool's {}",
                        left.len(),
                        theirs.len(),
                        capacity(&left),
                        capacity(&own)
                    )
                };
                out.push(
                    Finding::warning(
                        "",
                        Some(span.clone()),
                        format!(
                            "pool {:?}, which takes over from pool {:?}, shares server{} {} with it: {consequence}",
                            input.pools[q].name,
                            pool.name,
                            if names.len() == 1 { "" } else { "s" },
                            names.join(", ")
                        ),
                    )
                    .with_help("give the backup pool servers of its own, with the capacity of the pool it protects"),
                );
            }
        }
    },
};

/// Pool `p` and its backup chain, without repeats.
fn chain(config: &Config, p: usize) -> Vec<usize> {
    let mut pools = vec![p];
    let mut at = p;
    while let Some(next) = config.pools[at]
        .backup
        .as_deref()
        .and_then(|name| config.pools.iter().position(|q| q.name == name))
    {
        if pools.contains(&next) {
            break;
        }
        pools.push(next);
        at = next;
    }
    pools
}
