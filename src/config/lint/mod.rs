//! Lint rules: configurations that are valid but risky.
//!
//! A rule has a stable kebab-case name, a default severity (warning for balancing
//! risks, so a risky but valid config can still be applied and then watched), and an
//! `explain` text (`evenkeel explain RULE`) saying what it catches, why it matters and
//! how to fix it. Rules live one family per file and run only on a config that passed
//! validation. A rule named in `[lint.allow]` still reports, marked as allowed with the
//! operator's reason, so the decision stays visible in every `check`.
//!
//! Families: `pools` (redundancy, health checks, unused pools and listeners), `shares`
//! (the split of traffic against capacity, hash keys), `failover` (retries, ejection,
//! backup chains), `timeouts`, `routes`, `exposure` (the admin API), `certificates`
//! (HTTPS listeners' certificates and TLS versions, and unverified TLS to backends),
//! `failures` (the whole config against the failure of any one server:
//! [`crate::sim::failures`]). docs/lints.md shows
//! every rule with an example; its examples are tested.

mod certificates;
pub mod coverage;
mod exposure;
mod failover;
mod failures;
pub use failures::route_labels;
mod pools;
mod routes;
mod shares;
mod tcp;
mod timeouts;

use super::diagnostic::{Finding, Severity};
use super::model::Config;

/// One lint rule.
#[derive(Debug)]
pub struct Rule {
    /// Stable name, used in findings, `[lint.allow]` and `evenkeel explain`.
    pub name: &'static str,
    /// Severity of its findings unless allowed.
    pub severity: Severity,
    /// One line: what it catches.
    pub summary: &'static str,
    /// What it catches, why it matters and how to fix it.
    pub explain: &'static str,
    /// Appends the rule's findings for the config of `input`.
    pub check: fn(&Input, &mut Vec<Finding>),
}

/// What the rules judge: a config, and for the rules that rest on it, how the traffic
/// divides between its pools. Dereferences to the config, so a rule that needs only
/// the config reads it as one.
#[derive(Debug)]
pub struct Input<'a> {
    /// The config.
    pub config: &'a Config,
    /// The observed split between pools (`check --traffic`), or `None` to assume equal
    /// traffic per route.
    pub traffic: Option<&'a crate::sim::traffic::Observed>,
    /// The failure analysis, made once for the rules that use it.
    analysis: std::cell::OnceCell<crate::sim::failures::Analysis<'a>>,
}

impl<'a> Input<'a> {
    /// What the rules judge: `config`, with the `traffic` split (or equal per route).
    pub fn new(
        config: &'a Config,
        traffic: Option<&'a crate::sim::traffic::Observed>,
    ) -> Input<'a> {
        Input {
            config,
            traffic,
            analysis: std::cell::OnceCell::new(),
        }
    }

    /// The failure analysis of the config under the split.
    pub fn analysis(&self) -> &crate::sim::failures::Analysis<'a> {
        self.analysis.get_or_init(|| {
            crate::sim::failures::Analysis::with_observed(self.config, self.traffic)
        })
    }
}

impl std::ops::Deref for Input<'_> {
    type Target = Config;

    fn deref(&self) -> &Config {
        self.config
    }
}

/// Every rule, in `explain` order.
pub static RULES: &[Rule] = &[
    pools::SINGLE_BACKEND_POOL,
    pools::WEIGHTS_IGNORED,
    pools::NO_HEALTH_CHECK,
    pools::SLOW_FAILURE_DETECTION,
    coverage::UNDETECTED_FAILURE,
    pools::UNUSED_POOL,
    pools::LISTENER_WITHOUT_ROUTES,
    shares::LOAD_RATIO,
    shares::NEAR_ZERO_WEIGHT,
    shares::HASH_KEY_MAY_BE_MISSING,
    failover::RETRIES_WITHOUT_BUDGET,
    failover::RETRIES_NEVER_ALLOWED,
    failover::EJECT_ALL_ALLOWED,
    failover::BACKUP_CYCLE,
    failures::SERVER_LOAD_RATIO,
    failures::SINGLE_FAILURE_OUTAGE,
    failures::SINGLE_FAILURE_OVERLOAD,
    failures::SHARED_FAILURE_DOMAIN,
    timeouts::TIMEOUT_ORDER,
    timeouts::TUNNEL_IDLE_LONG,
    tcp::TCP_POOL_HTTP_HEALTH,
    tcp::TCP_POOL_HASH_KEY,
    routes::SHADOWED_ROUTE,
    exposure::ADMIN_OFF_LOOPBACK,
    exposure::ADMIN_TOKEN_MISSING,
    exposure::ETCD_CREDENTIALS_IN_CLEAR,
    certificates::CERTIFICATE_EXPIRED,
    certificates::CERTIFICATE_KEY_MISMATCH,
    certificates::CERTIFICATE_EXPIRING,
    certificates::CERTIFICATE_HOST_UNCOVERED,
    certificates::TLS_MIN_VERSION,
    certificates::BACKEND_TLS_UNVERIFIED,
];

/// Rules whose findings the clock raises, not the config: they never refuse a config
/// under its own `guard.deny_warnings` ([`crate::config::Checked::is_rejected`]).
pub const CLOCK_RULES: [&str; 2] = [
    certificates::CERTIFICATE_EXPIRING.name,
    certificates::CERTIFICATE_EXPIRED.name,
];

/// The name of the rule a reload may soften ([`crate::config::Checked::tolerate_expired`]).
pub const CERTIFICATE_EXPIRED: &str = certificates::CERTIFICATE_EXPIRED.name;

/// The rule called `name`.
pub fn rule(name: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.name == name)
}

/// Runs every rule on `config`, applying its severity and `[lint.allow]`; traffic
/// between pools assumed equal per route.
pub fn run(config: &Config) -> Vec<Finding> {
    run_with(&Input::new(config, None))
}

/// Runs every rule on `input`, applying its severity and `[lint.allow]`.
pub fn run_with(input: &Input) -> Vec<Finding> {
    let config = input.config;
    let mut all = Vec::new();
    for rule in RULES {
        let mut found = Vec::new();
        (rule.check)(input, &mut found);
        // An error cannot be allowed: it is what would make the config fail live.
        let allowed = config
            .lint_allow
            .iter()
            .find(|a| a.rule == rule.name)
            .filter(|_| rule.severity != Severity::Error);
        for mut finding in found {
            finding.rule = rule.name;
            // A rule's note (something it could not judge) stays a note.
            if finding.severity != Severity::Note {
                finding.severity = rule.severity;
            }
            finding.allowed = allowed.map(|a| a.reason.clone());
            all.push(finding);
        }
    }
    all
}

#[cfg(test)]
pub(crate) mod tests;
