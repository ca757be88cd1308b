//! Failure-detection coverage: for each pool and each way a backend fails, which
//! mechanism takes it out of traffic (and roughly how soon), and which only alarms.
//!
//! The kinds of failure are the ones outages are made of: a backend that **refuses**
//! connections (process down), one that **accepts but never answers** (hung, a full
//! accept queue, a black-holed route), one that **answers with errors** (5xx), and one
//! that **answers, slowly**. Each remover is judged as configured, not as named: a
//! `tcp` health check cannot see a hung application (the connect succeeds), an `http`
//! check whose `expect_status` accepts 5xx cannot see errors, and passive ejection
//! that `max_ejected_percent` never lets eject a single backend of the pool removes
//! nothing. The rule `undetected-failure` warns when a failure that stops service — any
//! of the first three — is removed by nothing; a slow backend is left to the
//! `slow_backend` alarm. `evenkeel check --coverage` prints the whole matrix.

use super::{Finding, Rule, Severity};
use crate::config::model::{Pool, Probe};
use crate::config::values::format_duration;

/// A way a backend fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Connections are refused (or reset at once).
    Refuses,
    /// Connections are accepted but nothing is ever answered.
    NeverAnswers,
    /// Requests are answered with 5xx.
    Errors,
    /// Requests are answered correctly, but slowly.
    Slow,
}

impl Failure {
    /// Every kind, in the matrix's order.
    pub const ALL: [Failure; 4] = [
        Failure::Refuses,
        Failure::NeverAnswers,
        Failure::Errors,
        Failure::Slow,
    ];

    /// The kind in words.
    pub fn describe(self) -> &'static str {
        match self {
            Failure::Refuses => "refuses connections",
            Failure::NeverAnswers => "accepts connections but never answers",
            Failure::Errors => "answers with errors (5xx)",
            Failure::Slow => "answers correctly but slowly",
        }
    }

    /// Whether the failure stops service for the requests it gets.
    pub fn stops_service(self) -> bool {
        self != Failure::Slow
    }
}

/// How one kind of failure is met in one pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Coverage {
    /// The failure.
    pub failure: Failure,
    /// What takes the backend out of traffic, each with how soon, in words.
    pub removed_by: Vec<String>,
    /// Why the configured mechanisms do not (for the finding's message).
    pub missed_by: Vec<String>,
    /// The alarms that say so (without removing it).
    pub alarmed_by: &'static str,
}

/// The coverage matrix of `pool`: one row per [`Failure`]. A TCP pool (the pool of a
/// `mode = "tcp"` listener) has no answers to judge: only refusing and never answering
/// are its failures.
pub fn of(pool: &Pool) -> Vec<Coverage> {
    Failure::ALL
        .iter()
        .filter(|&&failure| {
            !pool.tcp || matches!(failure, Failure::Refuses | Failure::NeverAnswers)
        })
        .map(|&failure| {
            let mut removed_by = Vec::new();
            let mut missed_by = Vec::new();
            match active(pool, failure) {
                Ok(how) => removed_by.push(how),
                Err(why) => missed_by.push(why),
            }
            match passive(pool, failure) {
                Ok(how) => removed_by.push(how),
                Err(why) => missed_by.push(why),
            }
            Coverage {
                failure,
                removed_by,
                missed_by,
                alarmed_by: match failure {
                    Failure::Slow => "slow_backend",
                    _ => "error_rate (the pool's)",
                },
            }
        })
        .collect()
}

/// The active health check against `failure`: how it removes the backend, or why not.
fn active(pool: &Pool, failure: Failure) -> Result<String, String> {
    let Some(health) = &pool.health else {
        return Err("there is no active health check".into());
    };
    let soon = format_duration(health.interval * health.unhealthy_after);
    let (kind, accepts_5xx) = match &health.probe {
        Probe::Http { expect_status, .. } => ("http", expect_status.contains(&500)),
        Probe::Tcp => ("tcp", false),
        Probe::Grpc { .. } => ("grpc", false),
    };
    let after = format!(
        "active {kind} check, within about {soon} (interval {} x unhealthy_after {})",
        format_duration(health.interval),
        health.unhealthy_after
    );
    match (failure, kind) {
        (Failure::Refuses, _) => Ok(after),
        (Failure::NeverAnswers, "http" | "grpc") => Ok(format!(
            "{after}; each probe fails after timeout {}",
            format_duration(health.timeout)
        )),
        (Failure::NeverAnswers, _) => Err("a tcp check's connect succeeds".into()),
        (Failure::Errors, "http") if !accepts_5xx => {
            Ok(format!("{after}, if its path fails as the traffic does"))
        }
        (Failure::Errors, "http") => Err("the http check's expect_status accepts 5xx".into()),
        (Failure::Errors, "grpc") => Ok(format!(
            "{after}, if its health service reports NOT_SERVING as the traffic fails"
        )),
        (Failure::Errors, _) => Err("a tcp check cannot see HTTP errors".into()),
        (Failure::Slow, "http" | "grpc") => Ok(format!(
            "{after}, only when slower than the probe timeout {}",
            format_duration(health.timeout)
        )),
        (Failure::Slow, _) => Err("a tcp check cannot see slow answers".into()),
    }
}

/// Passive ejection against `failure`: how it removes the backend, or why not.
fn passive(pool: &Pool, failure: Failure) -> Result<String, String> {
    let outlier = &pool.outlier;
    let n = outlier.consecutive_failures;
    if n == 0 {
        return Err("passive ejection is off (outlier.consecutive_failures = 0)".into());
    }
    // The same test the pool applies before an ejection (runtime::PoolRuntime::record).
    if 100 > usize::from(outlier.max_ejected_percent) * pool.backends.len() {
        return Err(format!(
            "max_ejected_percent {} lets passive ejection eject no backend of {}",
            outlier.max_ejected_percent,
            pool.backends.len()
        ));
    }
    match failure {
        Failure::Refuses if pool.tcp => Ok(format!(
            "passive ejection, after {n} failed connects in a row"
        )),
        // An open TCP connection that carries nothing is no failure evenkeel can see.
        Failure::NeverAnswers if pool.tcp => Err(
            "a TCP pool's passive checks see failed connects and resets, not a backend that accepts and stays silent (its clients' own timeouts must)".into(),
        ),
        Failure::Refuses => Ok(format!(
            "passive ejection, after {n} failed requests in a row"
        )),
        Failure::NeverAnswers => Ok(format!(
            "passive ejection, after {n} requests in a row time out (timeouts.per_try {} each)",
            format_duration(pool.timeouts.per_try)
        )),
        Failure::Errors => Ok(format!("passive ejection, after {n} 5xx answers in a row")),
        Failure::Slow => Err("passive ejection counts failures, not slowness".into()),
    }
}

pub const UNDETECTED_FAILURE: Rule = Rule {
    name: "undetected-failure",
    severity: Severity::Warning,
    summary: "a kind of backend failure that nothing takes out of traffic",
    explain: "For each pool evenkeel works out which mechanism removes a failing backend \
from traffic for each way a backend fails — refusing connections, accepting them but never \
answering (a hung process), answering with 5xx — as the pool is configured: a `tcp` health \
check cannot see a hung application or HTTP errors (its connect succeeds), an `http` check \
whose expect_status accepts 5xx cannot see errors, and passive ejection that is off, or \
that max_ejected_percent never lets eject a backend of the pool, removes nothing. A failure \
nothing removes keeps its full share of traffic until someone notices: the outage the \
alarms then report. (A pool with a single backend is left to `single-backend-pool`: there is \
nowhere else to send its traffic.) Turn passive ejection on (outlier.consecutive_failures, on by default), \
or use an `http` health check whose path fails when the application does. \
`evenkeel check --coverage` prints the whole matrix, with how soon each mechanism acts.",
    check: |config, out| {
        // A pool with one backend has nowhere else to send its traffic: removing the
        // backend changes its errors into 503s (`single-backend-pool` says so).
        for pool in config.pools.iter().filter(|p| p.backends.iter().filter(|b| b.weight > 0).count() > 1) {
            // A silent TCP backend is beyond what a TCP pool can see: the matrix says so,
            // but no config change would quiet the finding.
            let missed: Vec<Coverage> = of(pool)
                .into_iter()
                .filter(|c| c.failure.stops_service() && c.removed_by.is_empty())
                .filter(|c| !(pool.tcp && c.failure == Failure::NeverAnswers))
                .collect();
            for coverage in missed {
                let at = pool.health.as_ref().map_or(&pool.span, |h| &h.span);
                out.push(
                    Finding::warning(
                        "",
                        Some(at.clone()),
                        format!(
                            "pool {:?}: a backend that {} stays in traffic: {}",
                            pool.name,
                            coverage.failure.describe(),
                            coverage.missed_by.join(", and ")
                        ),
                    )
                    .with_help(
                        "turn passive ejection on (outlier.consecutive_failures), or use an http health check whose path fails with the application",
                    ),
                );
            }
        }
    },
};

/// The matrix of every pool of `config`, as `check --coverage` prints it.
pub fn render(config: &crate::config::Config) -> String {
    let mut out = String::new();
    for pool in &config.pools {
        out.push_str(&format!("pool {:?}\n", pool.name));
        for coverage in of(pool) {
            let removed = if coverage.removed_by.is_empty() {
                if coverage.failure.stops_service() {
                    "NOTHING (undetected-failure)".to_string()
                } else {
                    "nothing".to_string()
                }
            } else {
                coverage.removed_by.join("; ")
            };
            out.push_str(&format!(
                "  a backend that {}\n    removed by: {removed}\n    alarmed by: {}\n",
                coverage.failure.describe(),
                coverage.alarmed_by
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{check_source, Source};

    fn pool(lines: &str, backends: usize) -> Pool {
        let list: Vec<String> = (0..backends)
            .map(|i| format!("{{ address = \"127.0.0.1:{}\" }}", 9001 + i))
            .collect();
        let checked = check_source(Source {
            path: "t.toml".into(),
            text: format!(
                "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n[[route]]\npool = \"web\"\n\
                 [pool.web]\nbackends = [{}]\n{lines}",
                list.join(", ")
            ),
        });
        checked.config.expect("valid").pools.remove(0)
    }

    fn removed(pool: &Pool) -> Vec<(Failure, usize)> {
        of(pool)
            .into_iter()
            .map(|c| (c.failure, c.removed_by.len()))
            .collect()
    }

    #[test]
    fn each_mechanism_is_judged_by_what_it_can_see() {
        use Failure::*;
        // The defaults: an http check and passive ejection both see every failure that
        // stops service; only the check (beyond its timeout) sees slowness.
        let defaults = pool("[pool.web.health]\npath = \"/healthz\"\n", 3);
        assert_eq!(
            removed(&defaults),
            [(Refuses, 2), (NeverAnswers, 2), (Errors, 2), (Slow, 1)]
        );
        // An http check that accepts 5xx, passive off: errors pass.
        let lenient = pool(
            "[pool.web.health]\nexpect_status = \"200-599\"\n[pool.web.outlier]\nconsecutive_failures = 0\n",
            3,
        );
        assert_eq!(
            removed(&lenient),
            [(Refuses, 1), (NeverAnswers, 1), (Errors, 0), (Slow, 1)]
        );
        // No active check; passive ejection may not eject the only backend (50%).
        let alone = pool("", 1);
        assert_eq!(
            removed(&alone),
            [(Refuses, 0), (NeverAnswers, 0), (Errors, 0), (Slow, 0)]
        );
        let why = &of(&alone)[0].missed_by;
        assert!(
            why.iter().any(|w| w.contains("max_ejected_percent 50")),
            "{why:?}"
        );
        // Passive alone, two backends: every failure that stops service is removed.
        assert_eq!(
            removed(&pool("", 2)),
            [(Refuses, 1), (NeverAnswers, 1), (Errors, 1), (Slow, 0)]
        );
    }

    #[test]
    fn the_matrix_names_the_mechanism_and_how_soon() {
        let text = render(&{
            let checked = check_source(Source {
                path: "t.toml".into(),
                text: "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n[[route]]\npool = \"web\"\n\
                       [pool.web]\nbackends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\" }]\n\
                       [pool.web.health]\ntype = \"tcp\"\ninterval = \"5s\"\n"
                    .into(),
            });
            checked.config.expect("valid")
        });
        assert!(text.contains("a backend that refuses connections\n    removed by: active tcp check, within about 15s (interval 5s x unhealthy_after 3); passive ejection, after 5 failed requests in a row\n"), "{text}");
        assert!(text.contains("a backend that answers correctly but slowly\n    removed by: nothing\n    alarmed by: slow_backend\n"), "{text}");
    }
}
