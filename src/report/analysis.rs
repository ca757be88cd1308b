//! What the incident's events say: its probable root cause (with the config diff and
//! lint findings when it is a config change), what ended it, and its impact per pool as
//! the alarms quoted it.
//!
//! The root cause is chosen among the changes and failures up to
//! [`CAUSE_LOOKBACK`] before the onset:
//! - an incident that starts with a backend failure (unhealthy, ejected) is caused by
//!   that failure — unless the last config change before it changed that backend's
//!   pool, which then is the probable cause (it may have added a bad address);
//! - any other incident (an alarm, panic, failover, a guard rollback) is caused by the
//!   config version the guard rolled back during it, if any, and otherwise by the last
//!   config change before the onset;
//! - with neither, the cause is unknown and the report says where to look.
//!
//! Rollbacks made by the guard are never candidate causes: they are its response.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::incident::Found;
use super::{Timed, CAUSE_LOOKBACK};
use crate::config::{self, diff, Checked, Source};
use crate::health::Event;
use crate::store::{Origin, Outcome, Version};

/// The probable root cause of an incident.
#[derive(Clone, Debug, PartialEq)]
pub enum Cause {
    /// A config change.
    Config {
        /// The version applied.
        version: u64,
        /// The version in force before it, if known.
        previous: Option<u64>,
        /// How it came (`api`, `sighup`, `rollback`, `start`).
        origin: String,
        /// When it was applied.
        at: SystemTime,
        /// Why it is the probable cause, in words.
        basis: String,
    },
    /// A backend failure.
    Backend {
        /// Its pool.
        pool: String,
        /// Its address.
        backend: String,
        /// What happened, in words (`turned unhealthy (connection refused)`).
        what: String,
        /// When.
        at: SystemTime,
        /// Why it is the probable cause, in words.
        basis: String,
    },
    /// Neither a config change nor a backend failure before the onset.
    Unknown {
        /// What was looked for, in words.
        basis: String,
    },
}

/// A config version put in force, from the journal (or, for `start`, the history).
#[derive(Clone, Debug)]
pub(crate) struct ConfigChange {
    pub(crate) at: SystemTime,
    pub(crate) version: u64,
    pub(crate) previous: Option<u64>,
    pub(crate) origin: String,
    pub(crate) restores: Option<u64>,
    /// The guard made it (a rollback).
    pub(crate) by_guard: bool,
    /// Its journal entry, when it has one.
    pub(crate) entry: Option<u64>,
}

/// Lint findings on one version's text.
#[derive(Clone, Debug)]
pub(crate) struct Lints {
    pub(crate) version: u64,
    pub(crate) checked: Checked,
    /// The findings worth showing (see [`lints`]).
    pub(crate) findings: Vec<config::Finding>,
}

/// An alarm of the incident: first and last wording, when raised and cleared.
#[derive(Clone, Debug)]
pub(crate) struct AlarmSpan {
    pub(crate) key: String,
    /// The fleet node that raised it (`None`: one instance).
    pub(crate) node: Option<String>,
    pub(crate) first_message: String,
    pub(crate) last_message: String,
    pub(crate) raised: SystemTime,
    pub(crate) cleared: Option<SystemTime>,
    pub(crate) times: usize,
}

impl AlarmSpan {
    /// Its kind (`load_ratio`, `error_rate`, `guard`, ...).
    pub(crate) fn kind(&self) -> &str {
        self.key.split('/').next().unwrap_or("")
    }

    /// The pool it is about (`None` for the guard's, and for a certificate's, whose
    /// key names a listener).
    pub(crate) fn pool(&self) -> Option<&str> {
        (!matches!(self.kind(), "guard" | "certificate_expiry"))
            .then(|| self.key.split('/').nth(1))
            .flatten()
    }
}

/// One step of the resolution.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub(crate) at: SystemTime,
    /// Its journal entry.
    pub(crate) entry: u64,
    pub(crate) words: String,
    /// Something done or recovered (not just the last trouble clearing).
    pub(crate) action: bool,
}

/// Everything the Markdown is written from.
#[derive(Clone, Debug)]
pub(crate) struct Analysis {
    pub(crate) cause: Cause,
    /// The journal entry of the cause, when it has one.
    pub(crate) cause_entry: Option<u64>,
    /// For a config cause: what changed from the previous version, or why that is not known.
    pub(crate) changes: Option<Result<Vec<diff::Change>, String>>,
    /// Lint findings on the cause's version (config cause) or the version in force at
    /// the onset.
    pub(crate) lints: Option<Lints>,
    /// What was done or happened to end it, in order.
    pub(crate) resolution: Vec<Step>,
    /// The guard rolled the cause back.
    pub(crate) cause_rolled_back: bool,
    /// The guard passed the cause: its reason.
    pub(crate) cause_passed: Option<String>,
    /// Alarms of the incident, by first raise.
    pub(crate) alarms: Vec<AlarmSpan>,
    /// Pools in trouble, in order of first trouble.
    pub(crate) pools: Vec<String>,
    /// Health troubles per pool: (pool, words).
    pub(crate) failures: Vec<(String, String)>,
    /// `guard.max_error_rate` of the config in force at the onset.
    pub(crate) max_error_rate: Option<f64>,
    /// Every config change known, oldest first.
    pub(crate) config_changes: Vec<ConfigChange>,
}

/// Reads the incident's events and the history.
pub(crate) fn analyse(events: &[Timed<'_>], versions: &[Version], found: &Found<'_>) -> Analysis {
    let config_changes = config_changes(events, versions);
    let onset = found.onset;
    let (cause, cause_entry) = cause(events, versions, found, &config_changes);
    let (changes, lint_version) = match &cause {
        Cause::Config {
            version, previous, ..
        } => (
            Some(version_diff(versions, *previous, *version)),
            Some(*version),
        ),
        _ => (None, onset.entry.version),
    };
    let lints = lint_version.and_then(|v| lints(versions, v));
    let verdict = |wanted: &str| match &cause {
        Cause::Config { version, .. } => events.iter().find_map(|e| match e.event {
            Event::Guard {
                version: judged,
                verdict,
                reason,
                ..
            } if judged == version && *verdict == wanted => Some(reason.clone()),
            _ => None,
        }),
        _ => None,
    };
    let cause_rolled_back = verdict("rolled_back").is_some();
    let cause_passed = verdict("passed");
    let max_error_rate = onset
        .entry
        .version
        .and_then(|v| checked_version(versions, v))
        .and_then(|c| c.config)
        .map(|c| c.guard.max_error_rate);
    let (alarms, pools, failures) = impact(events, found);
    Analysis {
        resolution: resolution(events, versions, found, &config_changes, &cause),
        cause,
        cause_entry,
        changes,
        lints,
        cause_rolled_back,
        cause_passed,
        alarms,
        pools,
        failures,
        max_error_rate,
        config_changes,
    }
}

/// Every config version put in force: `config` entries of the journal, and versions of
/// origin `start` from the history (a start is not journaled).
fn config_changes(events: &[Timed<'_>], versions: &[Version]) -> Vec<ConfigChange> {
    let guard_made: BTreeSet<u64> = events
        .iter()
        .filter_map(|e| match e.event {
            Event::Guard {
                verdict: "rolled_back",
                restored,
                ..
            } => *restored,
            _ => None,
        })
        .collect();
    // In a fleet every node journals the version it puts in force: the first one
    // tells when the change happened.
    let mut seen = BTreeSet::new();
    let mut changes: Vec<ConfigChange> = events
        .iter()
        .filter_map(|e| match e.event {
            Event::Config {
                version: Some(version),
                previous,
                origin,
                outcome: "applied",
                restores,
                ..
            } if seen.insert(*version) => Some(ConfigChange {
                at: e.at,
                version: *version,
                previous: Some(*previous),
                origin: origin.to_string(),
                restores: *restores,
                by_guard: guard_made.contains(version),
                entry: Some(e.entry.id),
            }),
            _ => None,
        })
        .collect();
    // A start is a change only when it brought another text than the version before.
    for (i, v) in versions.iter().enumerate() {
        if v.origin != Origin::Start || v.outcome != Outcome::Applied {
            continue;
        }
        let Some(at) = super::parse_time(&v.time) else {
            continue;
        };
        let Some(before) = versions[..i]
            .iter()
            .rev()
            .find(|p| p.outcome == Outcome::Applied)
        else {
            continue;
        };
        if before.sha256 == v.sha256 {
            continue;
        }
        let previous = Some(before.id);
        changes.push(ConfigChange {
            at,
            version: v.id,
            previous,
            origin: Origin::Start.as_str().to_string(),
            restores: None,
            by_guard: false,
            entry: None,
        });
    }
    changes.sort_by_key(|c| (c.at, c.version));
    changes
}

/// The onset in words: "the first alarm (`key`)", "backend B of pool P turning unhealthy"
/// (and on which node, in a fleet).
pub(crate) fn onset_words(onset: &Timed<'_>) -> String {
    let node = onset.on_node();
    let words = match onset.event {
        Event::Alarm { key, .. } => format!("the first alarm (`{key}`)"),
        Event::Guard { .. } => "the guard's rollback".to_string(),
        Event::Rollout { .. } => "the canary rollout's rollback".to_string(),
        Event::Health { pool, backend, .. } => {
            format!("backend {backend} of pool {pool:?} turning unhealthy")
        }
        Event::Ejected { pool, backend, .. } => {
            format!("the ejection of backend {backend} from pool {pool:?}")
        }
        Event::Panic { pool, .. } => format!("pool {pool:?} entering panic mode"),
        Event::Failover { pool, .. } => format!("pool {pool:?} failing over to its backup"),
        _ => "the first trouble".to_string(),
    };
    format!("{words}{node}")
}

/// `d` in words: `4 s`, `2 min 5 s`, `1 h 3 min`.
pub(crate) fn duration_words(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 if s % 60 == 0 => format!("{} min", s / 60),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

fn cause(
    events: &[Timed<'_>],
    versions: &[Version],
    found: &Found<'_>,
    changes: &[ConfigChange],
) -> (Cause, Option<u64>) {
    let onset = found.onset;
    let earliest = onset.at.checked_sub(CAUSE_LOOKBACK).unwrap_or(onset.at);
    let last_change = changes.iter().rev().find(|c| {
        !c.by_guard
            && c.at >= earliest
            && c.at <= onset.at
            && c.entry.is_none_or(|id| id < onset.entry.id)
    });
    let blamed = events
        .iter()
        .filter(|e| found.covers(e.entry.id))
        .find_map(|e| match e.event {
            Event::Guard {
                version, verdict, ..
            } if *verdict != "passed" => Some(*version),
            _ => None,
        })
        .and_then(|v| changes.iter().rev().find(|c| c.version == v && !c.by_guard));
    let words = onset_words(&onset);
    let before =
        |c: &ConfigChange| duration_words(onset.at.duration_since(c.at).unwrap_or_default());
    let config = |c: &ConfigChange, basis: String| {
        (
            Cause::Config {
                version: c.version,
                previous: c.previous,
                origin: c.origin.clone(),
                at: c.at,
                basis,
            },
            c.entry,
        )
    };
    let failed = match onset.event {
        Event::Health {
            pool,
            backend,
            cause,
            ..
        } => Some((pool, backend, format!("turned unhealthy ({cause})"))),
        Event::Ejected {
            pool,
            backend,
            count,
            ..
        } => Some((
            pool,
            backend,
            format!("was ejected after consecutive failures (ejection {count})"),
        )),
        _ => None,
    };
    if let Some((pool, backend, what)) = failed {
        let (pool, backend) = (pool.clone(), backend.clone());
        let what = format!("{what}{}", onset.on_node());
        if let Some(c) = last_change {
            let touches = matches!(
                version_diff(versions, c.previous, c.version),
                Ok(list) if list.iter().any(|change| change.pool() == Some(pool.as_str()))
            );
            if touches {
                let basis = format!(
                    "it is the last config change before {words}, {} earlier, and it changed pool {pool:?}",
                    before(c)
                );
                return config(c, basis);
            }
        }
        let mut basis = "the incident starts with this failure".to_string();
        match last_change {
            Some(c) => basis.push_str(&format!(
                "; config version {} was applied {} before it but does not change pool {pool:?}",
                c.version,
                before(c)
            )),
            None => basis.push_str(&format!(
                ", with no config change in the {} before it",
                duration_words(CAUSE_LOOKBACK)
            )),
        }
        return (
            Cause::Backend {
                pool,
                backend,
                what,
                at: onset.at,
                basis,
            },
            Some(onset.entry.id),
        );
    }
    match (blamed, last_change) {
        (Some(b), Some(l)) if b.version == l.version => config(
            b,
            format!(
                "it is the last config change before {words}, {} earlier, and the guard, which watches every change, rolled it back for breaching its thresholds",
                before(b)
            ),
        ),
        (Some(b), _) => config(
            b,
            "the guard, which watches every change, rolled it back for breaching its thresholds"
                .to_string(),
        ),
        (None, Some(l)) => config(
            l,
            format!(
                "it is the last config change before {words}, {} earlier",
                before(l)
            ),
        ),
        (None, None) => (
            Cause::Unknown {
                basis: format!(
                    "no config change and no backend failure in the {} before {words}",
                    duration_words(CAUSE_LOOKBACK)
                ),
            },
            None,
        ),
    }
}

/// Version `id` of the history.
pub(crate) fn version(versions: &[Version], id: u64) -> Option<&Version> {
    versions.iter().find(|v| v.id == id)
}

/// Version `id`'s text run through `check`.
fn checked_version(versions: &[Version], id: u64) -> Option<Checked> {
    let v = version(versions, id)?;
    Some(config::check_source(Source {
        path: PathBuf::from(format!("version {id}")),
        text: v.text.clone(),
    }))
}

/// What changed from `previous` to `version`, as `plan` lists it.
fn version_diff(
    versions: &[Version],
    previous: Option<u64>,
    version: u64,
) -> Result<Vec<diff::Change>, String> {
    let previous = previous.ok_or("the version in force before it is not known")?;
    let valid = |id: u64| {
        let checked = checked_version(versions, id)
            .ok_or_else(|| format!("version {id} is not in the history"))?;
        // Lint findings aside: the admin token file is relative to the instance's
        // config folder, which the report does not know (see `lints`).
        let invalid = checked
            .findings
            .iter()
            .any(|f| f.severity == config::Severity::Error && config::lint::rule(f.rule).is_none());
        checked.config.filter(|_| !invalid).ok_or_else(|| {
            format!("version {id} does not pass `check` where the report runs (a host name that no longer resolves?)")
        })
    };
    Ok(diff::diff(&valid(previous)?, &valid(version)?))
}

/// The lint findings on version `id`. `admin-token-missing` reads a file relative to the
/// instance's config folder, which the report does not know: it is kept only when the
/// instance itself found it (it is in the version's recorded warnings).
fn lints(versions: &[Version], id: u64) -> Option<Lints> {
    let checked = checked_version(versions, id)?;
    let detail = version(versions, id).map_or("", |v| v.detail.as_str());
    let findings = checked
        .findings
        .iter()
        .filter(|f| f.rule != "admin-token-missing" || detail.contains("[admin-token-missing]"))
        .cloned()
        .collect();
    Some(Lints {
        version: id,
        checked,
        findings,
    })
}

/// What was done or happened during the incident to end it.
fn resolution(
    events: &[Timed<'_>],
    versions: &[Version],
    found: &Found<'_>,
    changes: &[ConfigChange],
    cause: &Cause,
) -> Vec<Step> {
    let sha = |id: u64| version(versions, id).map(|v| v.sha256.as_str());
    // A version with the probable cause's text, applied again.
    let same_as_cause = |id: u64| match cause {
        Cause::Config { version: c, .. } if *c != id => {
            sha(id).is_some_and(|s| Some(s) == sha(*c)).then_some(*c)
        }
        _ => None,
    };
    let mut steps: Vec<Step> = Vec::new();
    for event in events.iter().filter(|e| found.covers(e.entry.id)) {
        let e = event.entry;
        let node = event.on_node();
        let words = match event.event {
            Event::Guard {
                version,
                verdict: "rolled_back",
                reason,
                restored,
                ..
            } => {
                let old = restored
                    .and_then(|r| changes.iter().find(|c| c.version == r))
                    .and_then(|c| c.restores);
                let restoring = match (restored, old) {
                    (Some(r), Some(o)) => format!(" (version {r} restores version {o})"),
                    (Some(r), None) => format!(" (now version {r})"),
                    _ => String::new(),
                };
                format!("the guard{node} rolled config version {version} back{restoring}: {reason}")
            }
            Event::Guard {
                version,
                verdict,
                reason,
                ..
            } if *verdict != "passed" => format!(
                "the guard{node} could not roll config version {version} back ({reason}): it stays in force"
            ),
            Event::Rollout {
                version,
                verdict: "rolled_back",
                canaries,
                reason,
            } => format!(
                "the canary rollout of config version {version} was rolled back on {} and never reached the other nodes: {reason}",
                canaries.join(", ")
            ),
            Event::Config {
                outcome: "applied",
                ..
            } if e.id != found.onset.entry.id => {
                let Some(change) = changes.iter().find(|c| c.entry == Some(e.id)) else {
                    continue;
                };
                match (change.origin.as_str(), change.by_guard, change.restores) {
                    (_, true, _) => continue,
                    ("rollback", false, Some(old)) => format!(
                        "an operator rolled back to version {old} (now version {})",
                        change.version
                    ),
                    (origin, _, _) => match same_as_cause(change.version) {
                        Some(c) => format!(
                            "config version {} was applied (from {origin}): the same text as version {c}, the probable cause, again",
                            change.version
                        ),
                        None => format!(
                            "config version {} was applied (from {origin})",
                            change.version
                        ),
                    },
                }
            }
            Event::Health {
                pool,
                backend,
                verdict: "healthy",
                cause,
                ..
            } => format!("backend {backend} of pool {pool:?} is healthy again{node} ({cause})"),
            Event::Returned { pool, backend } => {
                format!("backend {backend} of pool {pool:?} returned from ejection{node}")
            }
            Event::Draining {
                pool,
                backend,
                draining: true,
            } => format!("backend {backend} of pool {pool:?} was drained{node}"),
            Event::Draining { pool, backend, .. } => {
                format!("backend {backend} of pool {pool:?} was enabled again{node}")
            }
            Event::Panic {
                pool, panic: false, ..
            } => format!("pool {pool:?} left panic mode{node}"),
            Event::Failover {
                pool,
                active: false,
                ..
            } => format!("traffic of pool {pool:?} returned from its backup{node}"),
            _ => continue,
        };
        steps.push(Step {
            at: event.at,
            entry: e.id,
            words,
            action: true,
        });
    }
    if let Some(end) = found.end {
        let last = match end.event {
            Event::Alarm { key, .. } => format!(
                "the last alarm cleared (`{key}`{}): no trouble holds any more",
                end.on_node()
            ),
            _ => "no trouble holds any more".to_string(),
        };
        match steps.last_mut() {
            Some(step) if step.entry == end.entry.id => {
                step.words.push_str("; no trouble holds any more");
            }
            _ => steps.push(Step {
                at: end.at,
                entry: end.entry.id,
                words: last,
                action: false,
            }),
        }
    }
    steps
}

/// Alarms, pools in trouble and health failures of the incident.
fn impact(
    events: &[Timed<'_>],
    found: &Found<'_>,
) -> (Vec<AlarmSpan>, Vec<String>, Vec<(String, String)>) {
    let mut alarms: Vec<AlarmSpan> = Vec::new();
    let mut pools: Vec<String> = Vec::new();
    let mut failures: Vec<(String, String)> = Vec::new();
    for event in events.iter().filter(|e| found.covers(e.entry.id)) {
        let node = event.on_node();
        match event.event {
            Event::Alarm {
                key,
                raised,
                message,
            } => {
                // Per node in a fleet: each node raises and clears its own.
                let from = event.entry.node.clone();
                let message = message.clone();
                match alarms.iter_mut().find(|a| a.key == *key && a.node == from) {
                    Some(alarm) => {
                        alarm.last_message = message;
                        if *raised {
                            alarm.times += 1;
                            alarm.cleared = None;
                        } else {
                            alarm.cleared = Some(event.at);
                        }
                    }
                    None if *raised => alarms.push(AlarmSpan {
                        key: key.clone(),
                        node: from.clone(),
                        first_message: message.clone(),
                        last_message: message,
                        raised: event.at,
                        cleared: None,
                        times: 1,
                    }),
                    None => {}
                }
                if let Some(p) = alarms
                    .iter()
                    .find(|a| a.key == *key && a.node == from)
                    .and_then(AlarmSpan::pool)
                {
                    note_pool(p, &mut pools);
                }
            }
            Event::Health {
                pool,
                backend,
                verdict: "unhealthy",
                cause,
                ..
            } => {
                note_pool(pool, &mut pools);
                failures.push((
                    pool.to_string(),
                    format!("backend {backend} turned unhealthy{node} ({cause})"),
                ));
            }
            Event::Ejected {
                pool,
                backend,
                count,
                seconds,
            } => {
                note_pool(pool, &mut pools);
                failures.push((
                    pool.to_string(),
                    format!(
                        "backend {backend} was ejected{node} for {seconds} s (ejection {count})"
                    ),
                ));
            }
            Event::Panic {
                pool,
                panic: true,
                usable,
                total,
            } => {
                note_pool(pool, &mut pools);
                failures.push((
                    pool.to_string(),
                    format!("entered panic mode{node} ({usable} of {total} backends usable)"),
                ));
            }
            Event::Failover {
                pool,
                backup,
                active: true,
            } => {
                note_pool(pool, &mut pools);
                failures.push((
                    pool.to_string(),
                    format!("failed over to pool {backup:?}{node}"),
                ));
            }
            _ => {}
        }
    }
    (alarms, pools, failures)
}

/// Adds `pool` to `pools` unless it is there already (or empty).
fn note_pool(pool: &str, pools: &mut Vec<String>) {
    if !pool.is_empty() && !pools.iter().any(|p| p == pool) {
        pools.push(pool.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate alarm's key names a listener, not a pool: the report must not
    /// list the listener among the pools in trouble.
    #[test]
    fn only_pool_alarms_name_a_pool() {
        let span = |key: &str| AlarmSpan {
            key: key.to_string(),
            node: None,
            first_message: String::new(),
            last_message: String::new(),
            raised: SystemTime::UNIX_EPOCH,
            cleared: None,
            times: 1,
        };
        assert_eq!(span("load_ratio/web/10.0.0.1:80").pool(), Some("web"));
        assert_eq!(span("error_rate/api").pool(), Some("api"));
        assert_eq!(span("guard/7").pool(), None);
        assert_eq!(span("certificate_expiry/https/1a2b3c4d").pool(), None);
    }
}
