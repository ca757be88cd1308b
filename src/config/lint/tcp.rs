//! Lints about TCP pools (the pools of `mode = "tcp"` listeners), whose unit is the
//! connection and whose backends need not speak HTTP.

use super::{Finding, Rule, Severity};
use crate::config::{HashKey, Probe};

pub const TCP_POOL_HTTP_HEALTH: Rule = Rule {
    name: "tcp-pool-http-health",
    severity: Severity::Warning,
    summary: "a TCP pool whose health check speaks HTTP",
    explain: "A TCP listener carries whatever its clients speak — Redis, PostgreSQL, MQTT, \
TLS — to its pool unread. An HTTP health check sends each backend an HTTP request and \
wants an HTTP status back: a database answers with an error or closes, every probe fails, \
and every backend is marked unhealthy at once. The pool then serves only in panic mode, or \
not at all with a backup, and every alarm points at the backends when the fault is the \
check. Use type = \"tcp\" (a connect), which every TCP service answers; keep an HTTP \
check only when the backends really speak HTTP on that port, and allow the rule with that \
reason.",
    check: |config, out| {
        for pool in config.pools.iter().filter(|p| p.tcp) {
            let Some(health) = &pool.health else { continue };
            if let Probe::Http { path, .. } = &health.probe {
                out.push(
                    Finding::warning(
                        "",
                        Some(health.span.clone()),
                        format!(
                            "pool {:?} is a TCP listener's pool, but its health check sends HTTP (GET {path}): backends that speak another protocol all fail it",
                            pool.name
                        ),
                    )
                    .with_help(format!(
                        "set type = \"tcp\" in [pool.{}.health], or allow the rule if the backends speak HTTP on this port",
                        pool.name
                    )),
                );
            }
        }
    },
};

pub const TCP_POOL_HASH_KEY: Rule = Rule {
    name: "tcp-pool-hash-key",
    severity: Severity::Warning,
    summary: "a TCP pool hashing on a header, cookie or path",
    explain: "A TCP listener balances connections before a byte of them is read, so a \
connection has no header, cookie or path to hash on. In a TCP pool with \
algorithm = \"consistent_hash\" and such a hash_key, every connection lacks its key and is \
spread at random: nothing sticks to a backend, which is what the hash was for (a cache \
shard, a session). Hash on client_ip, the one key a TCP connection has.",
    check: |config, out| {
        for pool in config.pools.iter().filter(|p| p.tcp) {
            let Some(key) = pool.hash_key.as_ref() else {
                continue;
            };
            if *key == HashKey::ClientIp {
                continue;
            }
            out.push(
                Finding::warning(
                    "",
                    Some(pool.spans.hash_key.clone().unwrap_or(pool.span.clone())),
                    format!(
                        "pool {:?} is a TCP listener's pool hashing on {key}, which a TCP connection does not have: every connection is spread at random",
                        pool.name
                    ),
                )
                .with_help("set hash_key = \"client_ip\""),
            );
        }
    },
};
