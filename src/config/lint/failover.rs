//! Lints about what a pool does when backends fail: retries that amplify an overload
//! or never happen, ejection that may empty a pool, backup pools that loop.

use std::collections::HashMap;

use super::{Finding, Rule, Severity};
use crate::config::model::{Config, Pool};

pub const RETRIES_WITHOUT_BUDGET: Rule = Rule {
    name: "retries-without-budget",
    severity: Severity::Warning,
    summary: "retries allowed up to 100% of a pool's requests",
    explain: "The retry budget caps retries at budget_percent of a pool's requests over the \
last ten seconds. A failed try is retried on another backend, which helps when one backend \
is broken — but when backends fail because they are overloaded, every failure comes back as \
more load. At budget_percent = 100 nothing holds that back: retries may equal the requests \
themselves, so a pool that starts failing under load can receive up to twice its traffic \
(and with attempts above 1 a single request may be tried attempts + 1 times), on exactly \
the backends that are still standing. That retry storm is how one slow backend becomes a \
pool-wide outage. Keep the budget small — the default 20 is enough to hide the odd reset \
— or set attempts = 0 if the service cannot take retries at all.",
    check: |config, out| {
        for pool in config.pools.iter().filter(|p| p.retries.attempts > 0) {
            if pool.retries.budget_percent == 100 {
                out.push(
                    Finding::warning(
                        "",
                        Some(budget_span(pool)),
                        format!(
                            "pool {:?} lets retries reach 100% of its requests (attempts = {}): when its backends fail under load, retries can double the traffic they get",
                            pool.name, pool.retries.attempts
                        ),
                    )
                    .with_help("lower budget_percent (the default is 20)"),
                );
            }
        }
    },
};

pub const RETRIES_NEVER_ALLOWED: Rule = Rule {
    name: "retries-never-allowed",
    severity: Severity::Warning,
    summary: "retries configured, but a retry budget of 0% forbids every one",
    explain: "With budget_percent = 0 the proxy refuses every retry — even the few a quiet \
pool is otherwise always allowed — whatever `attempts` says. The config reads as if a reset \
connection or a backend dying in the middle of a deploy were retried on another backend, \
but the client gets the 502. Set attempts = 0 if no retries is what you mean, or give the \
budget a value such as the default 20.",
    check: |config, out| {
        for pool in config.pools.iter().filter(|p| p.retries.attempts > 0) {
            if pool.retries.budget_percent == 0 {
                out.push(
                    Finding::warning(
                        "",
                        Some(budget_span(pool)),
                        format!(
                            "pool {:?} sets retries.attempts = {} but budget_percent = 0, so no request is ever retried",
                            pool.name, pool.retries.attempts
                        ),
                    )
                    .with_help("set attempts = 0 to say there are no retries, or give budget_percent a value such as 20"),
                );
            }
        }
    },
};

fn budget_span(pool: &Pool) -> std::ops::Range<usize> {
    pool.spans
        .budget_percent
        .clone()
        .unwrap_or(pool.span.clone())
}

pub const EJECT_ALL_ALLOWED: Rule = Rule {
    name: "eject-all-allowed",
    severity: Severity::Warning,
    summary: "passive checks allowed to eject every backend of a pool at once",
    explain: "Passive checks eject a backend after consecutive_failures failed requests in a \
row, for `ejection` or longer. max_ejected_percent caps how much of the pool may be out at \
once. At 100 there is no cap: a failure every backend shares — an overload, a dependency \
such as the database going down, a bad release — ejects them one after another (each \
ejection pushes its traffic onto the rest, which then fail faster), and the pool has no \
usable backend left: requests get 503 or go to the backup pool, and keep doing so for the \
ejection time after the cause is gone. Keep a cap (the default is 50) so the pool keeps \
serving from its least-bad backends, or set consecutive_failures = 0 to turn passive \
checks off.",
    check: |config, out| {
        for pool in &config.pools {
            let outlier = &pool.outlier;
            if outlier.max_ejected_percent == 100 && outlier.consecutive_failures > 0 {
                out.push(
                    Finding::warning(
                        "",
                        Some(
                            pool.spans
                                .max_ejected_percent
                                .clone()
                                .unwrap_or(pool.span.clone()),
                        ),
                        format!(
                            "pool {:?} may eject all of its backends at once (max_ejected_percent = 100): a failure they share leaves it with none",
                            pool.name
                        ),
                    )
                    .with_help("lower max_ejected_percent (the default is 50)"),
                );
            }
        }
    },
};

pub const BACKUP_CYCLE: Rule = Rule {
    name: "backup-cycle",
    severity: Severity::Warning,
    summary: "backup pools that form a loop",
    explain: "`backup` names the pool that takes over when a pool has no usable backend; a \
backup may have its own backup. When the chain loops (a → b → a) no pool in it is the last \
resort: each is the standby of another that is already serving its own traffic, so when \
one fails its whole load lands on a pool sized for less, and if that one falls over too \
the traffic bounces back to the first, which is still down. The proxy cuts the loop at run \
time (a request walks it at most once, then gets 503), so the config works, but it rarely \
says what its author meant — usually a pool was renamed or a `backup` line was copied. End \
the chain at a pool without a backup, sized for the traffic it may take over; if the pools \
really are each other's standby and sized for it, allow the rule with the reason.",
    check: |config, out| {
        for cycle in backup_cycles(config) {
            // Reported once, at the first pool of the loop in file order.
            let Some(first) = cycle.iter().min() else {
                continue;
            };
            let start = cycle.iter().position(|i| i == first).unwrap_or(0);
            let mut names: Vec<&str> = cycle[start..]
                .iter()
                .chain(&cycle[..start])
                .map(|&i| config.pools[i].name.as_str())
                .collect();
            names.push(names[0]);
            let pool = &config.pools[*first];
            out.push(
                Finding::warning(
                    "",
                    Some(pool.spans.backup.clone().unwrap_or(pool.span.clone())),
                    format!(
                        "backup pools form a loop: {}; no pool in it is the last resort",
                        names.join(" → ")
                    ),
                )
                .with_help(
                    "end the chain at a pool without a backup, or allow the rule with the reason",
                ),
            );
        }
    },
};

/// Every loop of `backup` links, each as pool positions in link order, each loop once.
fn backup_cycles(config: &Config) -> Vec<Vec<usize>> {
    let position: HashMap<&str, usize> = config
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let next = |i: usize| {
        config.pools[i]
            .backup
            .as_deref()
            .and_then(|b| position.get(b).copied())
    };
    // Every pool has at most one backup, so each walk ends at a pool without one or
    // enters exactly one loop; a pool seen on an earlier walk leads nowhere new.
    let mut seen = vec![false; config.pools.len()];
    // Pools on the current walk, so finding a loop costs a lookup, not a scan.
    let mut on_path = vec![false; config.pools.len()];
    let mut cycles = Vec::new();
    for start in 0..config.pools.len() {
        let mut path: Vec<usize> = Vec::new();
        let mut at = Some(start);
        while let Some(i) = at {
            if on_path[i] {
                if let Some(pos) = path.iter().position(|&p| p == i) {
                    cycles.push(path[pos..].to_vec());
                }
                break;
            }
            if seen[i] {
                break;
            }
            seen[i] = true;
            on_path[i] = true;
            path.push(i);
            at = next(i);
        }
        for &i in &path {
            on_path[i] = false;
        }
    }
    cycles
}
