//! Lints about how a pool spreads traffic and notices failure.

use std::collections::HashSet;
use std::time::Duration;

use super::{Finding, Rule, Severity};
use crate::config::values::format_duration;

/// Longest acceptable time for active checks to declare a dead backend unhealthy.
const MAX_DETECTION: Duration = Duration::from_secs(30);

pub const SINGLE_BACKEND_POOL: Rule = Rule {
    name: "single-backend-pool",
    severity: Severity::Warning,
    summary: "a pool with a single backend",
    explain: "A pool with one backend has nowhere to send traffic when that backend fails: \
health checks, ejection and retries can only turn its failure into fast 503s. \
Add a second backend, or give the pool a `backup` pool. If the service really has one \
host, say so under [lint.allow] with the reason.",
    check: |config, out| {
        for pool in &config.pools {
            if pool.backends.len() == 1 && pool.backup.is_none() {
                out.push(
                    Finding::warning(
                        "",
                        Some(pool.span.clone()),
                        format!(
                            "pool {:?} has a single backend and no backup pool",
                            pool.name
                        ),
                    )
                    .with_help(
                        "add another backend or a `backup` pool, or allow the rule with a reason",
                    ),
                );
            }
        }
    },
};

pub const WEIGHTS_IGNORED: Rule = Rule {
    name: "weights-ignored",
    severity: Severity::Warning,
    summary: "weights set on a round_robin pool, which ignores them",
    explain: "round_robin gives every usable backend the same share whatever its weight. \
A pool whose weights differ was almost certainly meant to be weighted: the bigger \
backends get too little and the small ones too much. Use \
algorithm = \"weighted_round_robin\" to honour the weights, or remove them.",
    check: |config, out| {
        for pool in &config.pools {
            if pool.algorithm.uses_weights() {
                continue;
            }
            let first = pool.backends.first().map(|b| b.weight);
            if let Some(b) = pool.backends.iter().find(|b| Some(b.weight) != first) {
                out.push(
                    Finding::warning("", Some(b.weight_span.clone()), format!("pool {:?} uses round_robin, which ignores the different weights of its backends", pool.name))
                        .with_help("set algorithm = \"weighted_round_robin\", or remove the weights"),
                );
            }
        }
    },
};

pub const NO_HEALTH_CHECK: Rule = Rule {
    name: "no-health-check",
    severity: Severity::Warning,
    summary: "a pool without active health checks",
    explain: "Without [pool.NAME.health], a dead backend is only noticed by passive checks, \
after real requests have failed on it, and a backend that is up but broken behind a \
healthy TCP port is never noticed while traffic is low. Add an active check: \
[pool.NAME.health] with type = \"http\" and a path the backend answers only when it can serve.",
    check: |config, out| {
        for pool in config.pools.iter().filter(|p| p.health.is_none()) {
            out.push(
                Finding::warning(
                    "",
                    Some(pool.span.clone()),
                    format!("pool {:?} has no active health check", pool.name),
                )
                .with_help(if pool.tcp {
                    format!("add [pool.{}.health] with type = \"tcp\"", pool.name)
                } else {
                    format!(
                        "add [pool.{}.health] with path = \"/healthz\" (or type = \"tcp\")",
                        pool.name
                    )
                }),
            );
        }
    },
};

pub const SLOW_FAILURE_DETECTION: Rule = Rule {
    name: "slow-failure-detection",
    severity: Severity::Warning,
    summary: "active checks that take over 30 s to notice a dead backend",
    explain: "A dead backend is marked unhealthy after `unhealthy_after` failed probes, one \
every `interval`: until then it keeps receiving its share of traffic. Past 30 seconds \
that is a long, visible outage for the users it serves. Shorten the interval or lower \
unhealthy_after so interval × unhealthy_after is at most 30 s.",
    check: |config, out| {
        for pool in &config.pools {
            let Some(health) = &pool.health else { continue };
            let detection = health.interval * health.unhealthy_after;
            if detection > MAX_DETECTION {
                out.push(
                    Finding::warning("", Some(health.span.clone()), format!(
                        "pool {:?} needs {} (interval {} × unhealthy_after {}) to notice a dead backend",
                        pool.name, format_duration(detection), format_duration(health.interval), health.unhealthy_after
                    ))
                    .with_help("make interval × unhealthy_after at most 30s"),
                );
            }
        }
    },
};

pub const UNUSED_POOL: Rule = Rule {
    name: "unused-pool",
    severity: Severity::Warning,
    summary: "a pool that no route and no other pool's backup uses",
    explain: "A pool nothing routes to receives no traffic: usually a route was meant to \
point at it (a renamed pool, a typo in a route that still matches another pool) and \
traffic goes somewhere unintended. Point a route at it, use it as a `backup`, or remove it.",
    check: |config, out| {
        // Every pool a route or a backup names, collected once (not a scan per pool).
        let used: HashSet<&str> = config
            .routes
            .iter()
            .map(|r| r.pool.as_str())
            .chain(config.pools.iter().filter_map(|p| p.backup.as_deref()))
            .collect();
        for pool in config
            .pools
            .iter()
            .filter(|p| !used.contains(p.name.as_str()))
        {
            out.push(
                Finding::warning(
                    "",
                    Some(pool.span.clone()),
                    format!(
                        "pool {:?} receives no traffic: no route or backup uses it",
                        pool.name
                    ),
                )
                .with_help(
                    "add a [[route]] with pool = the name, use it as a backup, or remove it",
                ),
            );
        }
    },
};

pub const LISTENER_WITHOUT_ROUTES: Rule = Rule {
    name: "listener-without-routes",
    severity: Severity::Warning,
    summary: "a listener that no route uses",
    explain: "A listener with no route answers every request with 404. Usually a route names \
the wrong listener (after a rename, or when a second listener was added and routes no \
longer default to the only one). Add a [[route]] with listener = its name, or remove it. \
A listener with `redirect_https = true` needs no route: it answers every request with a \
redirect.",
    check: |config, out| {
        let routed: HashSet<&str> = config.routes.iter().map(|r| r.listener.as_str()).collect();
        for listener in &config.listeners {
            // A redirect listener answers every request itself.
            if !routed.contains(listener.name.as_str()) && !listener.redirect_https {
                out.push(
                    Finding::warning(
                        "",
                        Some(listener.span.clone()),
                        format!(
                            "listener {:?} has no route: every request to it gets 404",
                            listener.name
                        ),
                    )
                    .with_help(format!(
                        "add a [[route]] with listener = {:?}, or remove the listener",
                        listener.name
                    )),
                );
            }
        }
    },
};
