//! Lints about timeouts that work against each other, or hold resources too long.

use super::{Finding, Rule, Severity};
use crate::config::values::format_duration;

pub const TIMEOUT_ORDER: Rule = Rule {
    name: "timeout-order",
    severity: Severity::Warning,
    summary: "drain_timeout shorter than a pool's request timeout",
    explain: "On SIGTERM (every deploy and every restart) evenkeel stops accepting \
connections and gives the requests in flight drain_timeout to finish, then exits and cuts \
the rest. A pool's timeouts.request says how long one of its requests may legitimately take \
to get its response. When drain_timeout is shorter, a slow but healthy request that started \
just before the signal is cut: every rolling deploy turns into a burst of errors on exactly \
the slowest endpoints (reports, exports, uploads). Make drain_timeout at least the longest request \
timeout of any pool, or shorten that pool's timeouts.request.",
    check: |config, out| {
        for pool in &config.pools {
            let request = pool.timeouts.request;
            if config.drain_timeout >= request {
                continue;
            }
            // The pool's own value when it is written, else the global one.
            let span = pool
                .spans
                .request_timeout
                .clone()
                .or(config.drain_timeout_span.clone())
                .unwrap_or(pool.span.clone());
            out.push(
                Finding::warning(
                    "",
                    Some(span),
                    format!(
                        "drain_timeout ({}) is shorter than the request timeout of pool {:?} ({}): requests still running at SIGTERM may be cut",
                        format_duration(config.drain_timeout),
                        pool.name,
                        format_duration(request)
                    ),
                )
                .with_help(format!(
                    "set drain_timeout = \"{}\" or more, or lower pool.{}.timeouts.request (and per_try) to {}",
                    format_duration(request),
                    pool.name,
                    format_duration(config.drain_timeout)
                )),
            );
        }
    },
};

/// The longest `timeouts.tunnel_idle` that passes without a warning.
const TUNNEL_IDLE_LINE: std::time::Duration = std::time::Duration::from_secs(3600);

pub const TUNNEL_IDLE_LONG: Rule = Rule {
    name: "tunnel-idle-long",
    severity: Severity::Warning,
    summary: "a pool's tunnel_idle above an hour",
    explain: "An upgraded connection (a WebSocket session) stays open until one side \
closes it or nothing moves through it for the pool's timeouts.tunnel_idle (default 1h). A \
client that vanishes without closing (a phone that lost its network, a laptop that went to \
sleep, a NAT that forgot the mapping) leaves a tunnel no one will ever close, and while it \
lasts it counts: it holds a connection to its backend, a slot of the listener's \
max_tunnels, and one in flight on the backend, which least_connections reads as load. Over \
a day such tunnels pile up on whichever backends served the most sessions, and \
least_connections then steers new sessions away from backends that are in fact idle, while \
max_tunnels fills with the dead. Keep tunnel_idle at an hour or less, and have the \
application send pings (WebSocket ping frames every 30 to 60 seconds are usual) so a live \
session is never silent that long.",
    check: |config, out| {
        for pool in &config.pools {
            let idle = pool.timeouts.tunnel_idle;
            if idle <= TUNNEL_IDLE_LINE {
                continue;
            }
            let span = pool.spans.tunnel_idle.clone().unwrap_or(pool.span.clone());
            out.push(
                Finding::warning(
                    "",
                    Some(span),
                    format!(
                        "pool {:?} keeps a silent tunnel open for {}: tunnels whose client vanished hold a backend connection, a max_tunnels slot and in-flight load that long",
                        pool.name,
                        format_duration(idle)
                    ),
                )
                .with_help(format!(
                    "set pool.{}.timeouts.tunnel_idle to \"1h\" or less, and have clients send WebSocket pings more often than that",
                    pool.name
                )),
            );
        }
    },
};
