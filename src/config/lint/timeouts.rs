//! Lints about timeouts that work against each other.

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
