//! Events: one place every decision goes through (DESIGN principle 3) — health
//! transitions, ejections, panic and failover, drains, config changes, the guard's
//! verdicts and alarms. Each event is logged here; the journal, the webhook and the
//! admin API subscribe to the same stream as they arrive.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::broadcast;

/// Something that changed a backend's or a pool's state.
///
/// Written to the journal as JSON (`kind` names the variant) and read back as this
/// same type (`crate::store::JournalEntry::event`): `report` works on these variants,
/// never on JSON keys. Word-valued fields accept only the words evenkeel writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Active checks found a backend healthy or unhealthy.
    Health {
        /// Pool name.
        pool: String,
        /// Backend address.
        backend: String,
        /// `healthy` or `unhealthy`.
        #[serde(deserialize_with = "health_verdict")]
        verdict: &'static str,
        /// The backend's first verdict (it was not yet probed): a first `healthy` is no
        /// recovery, and `report` does not take it for one.
        #[serde(default)]
        first: bool,
        /// The last probe's result (`status 200`, `connection refused`, ...).
        cause: String,
    },
    /// Passive checks ejected a backend.
    Ejected {
        /// Pool name.
        pool: String,
        /// Backend address.
        backend: String,
        /// Ejections of this backend so far.
        count: u32,
        /// How long this one lasts, in seconds.
        seconds: f64,
    },
    /// An ejection ended.
    Returned {
        /// Pool name.
        pool: String,
        /// Backend address.
        backend: String,
    },
    /// A backend was drained or enabled through the admin API.
    Draining {
        /// Pool name.
        pool: String,
        /// Backend address.
        backend: String,
        /// True: draining started; false: the backend was enabled again.
        draining: bool,
    },
    /// A pool entered or left panic mode.
    Panic {
        /// Pool name.
        pool: String,
        /// True: entered.
        panic: bool,
        /// Usable backends.
        usable: usize,
        /// Backends of weight above zero.
        total: usize,
    },
    /// A config was applied or refused.
    Config {
        /// Its version number (None when the history could not record it).
        version: Option<u64>,
        /// The version in force before.
        previous: u64,
        /// `start`, `sighup`, `api` or `rollback`.
        #[serde(deserialize_with = "origin")]
        origin: &'static str,
        /// `applied` or `refused`.
        #[serde(deserialize_with = "outcome")]
        outcome: &'static str,
        /// For a rollback: the version it restored.
        restores: Option<u64>,
        /// The operator said the change moves traffic on purpose (the guard then does
        /// not judge shift).
        expect_shift: bool,
        /// Why it was refused, or the first warning.
        detail: String,
    },
    /// The guard judged a change: it held, or was rolled back.
    Guard {
        /// The version watched.
        version: u64,
        /// `passed` or `rolled_back`.
        #[serde(deserialize_with = "guard_verdict")]
        verdict: &'static str,
        /// What breached (or "within thresholds").
        reason: String,
        /// The version rolled back to.
        restored: Option<u64>,
        /// Whether the change saw `guard.min_requests` requests (false: `passed` on too
        /// little traffic — not evidence enough to promote a canary).
        #[serde(default = "judged_by_default")]
        judged: bool,
    },
    /// A staged (canary) rollout in a fleet started or ended.
    Rollout {
        /// The version rolled out.
        version: u64,
        /// `started`, `promoted` or `rolled_back`.
        #[serde(deserialize_with = "rollout_verdict")]
        verdict: &'static str,
        /// The canary nodes.
        canaries: Vec<String>,
        /// Why it ended so (empty when it started).
        reason: String,
    },
    /// An alarm was raised or cleared.
    Alarm {
        /// Stable key: kind and subject (`load_ratio/web/127.0.0.1:9001`).
        key: String,
        /// True: raised; false: cleared.
        raised: bool,
        /// What it is about, with the numbers.
        message: String,
    },
    /// A pool failed over to its backup pool, or back.
    Failover {
        /// Pool name.
        pool: String,
        /// Backup pool name.
        backup: String,
        /// True: traffic goes to the backup; false: back to the pool.
        active: bool,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Health {
                pool,
                backend,
                verdict,
                cause,
                ..
            } => {
                write!(f, "pool {pool:?} backend {backend} is {verdict} ({cause})")
            }
            Event::Ejected { pool, backend, count, seconds } => write!(
                f,
                "pool {pool:?} backend {backend} ejected for {seconds}s (ejection {count}) after consecutive failures"
            ),
            Event::Returned { pool, backend } => write!(f, "pool {pool:?} backend {backend} returned from ejection"),
            Event::Draining { pool, backend, draining: true } => write!(f, "pool {pool:?} backend {backend} is draining"),
            Event::Draining { pool, backend, draining: false } => write!(f, "pool {pool:?} backend {backend} enabled"),
            Event::Panic { pool, panic: true, usable, total } => write!(
                f,
                "pool {pool:?} entered panic mode: {usable} of {total} backends usable, spreading over all of them"
            ),
            Event::Panic { pool, panic: false, usable, total } => {
                write!(f, "pool {pool:?} left panic mode: {usable} of {total} backends usable")
            }
            Event::Config { version, origin, outcome, restores, detail, .. } => {
                let version = version.map_or("unrecorded".to_string(), |v| format!("version {v}"));
                let restores = restores.map_or(String::new(), |r| format!(", restoring version {r}"));
                let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
                write!(f, "config {version} from {origin} {outcome}{restores}{detail}")
            }
            Event::Rollout { version, verdict, canaries, reason } => {
                let reason = if reason.is_empty() { String::new() } else { format!(": {reason}") };
                write!(f, "rollout of version {version} to canaries {}: {verdict}{reason}", canaries.join(", "))
            }
            Event::Guard { version, verdict, reason, restored, .. } => match restored {
                Some(to) => write!(f, "guard: version {version} {verdict} to version {to}: {reason}"),
                None => write!(f, "guard: version {version} {verdict}: {reason}"),
            },
            Event::Alarm { key, raised: true, message } => write!(f, "ALARM raised [{key}]: {message}"),
            Event::Alarm { key, raised: false, message } => write!(f, "alarm cleared [{key}]: {message}"),
            Event::Failover { pool, backup, active: true } => {
                write!(f, "pool {pool:?} has no usable backend: failing over to pool {backup:?}")
            }
            Event::Failover { pool, backup, active: false } => {
                write!(f, "pool {pool:?} recovered: traffic returns from pool {backup:?}")
            }
        }
    }
}

/// Reads one of `words` (the words evenkeel writes in that field) as the `&'static
/// str` the event holds.
fn one_of<'de, D: Deserializer<'de>>(
    deserializer: D,
    words: &'static [&'static str],
) -> Result<&'static str, D::Error> {
    let word = String::deserialize(deserializer)?;
    words
        .iter()
        .find(|w| **w == word)
        .copied()
        .ok_or_else(|| serde::de::Error::unknown_variant(&word, words))
}

/// Guard verdicts journaled before `judged` existed were judged.
fn judged_by_default() -> bool {
    true
}

fn health_verdict<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    one_of(d, &["healthy", "unhealthy"])
}

fn origin<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    one_of(d, &["start", "sighup", "api", "rollback"])
}

fn outcome<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    one_of(d, &["applied", "refused"])
}

fn guard_verdict<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    one_of(d, &["passed", "rolled_back", "rollback_failed"])
}

fn rollout_verdict<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    one_of(d, &["started", "promoted", "rolled_back"])
}

/// Where events are sent: logged, then broadcast to subscribers (a slow subscriber
/// misses old events rather than slowing anyone down).
#[derive(Debug)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            sender: broadcast::channel(1024).0,
        }
    }
}

impl Events {
    /// Logs and broadcasts `event`.
    pub fn emit(&self, event: Event) {
        match &event {
            Event::Health {
                verdict: "healthy", ..
            }
            | Event::Returned { .. }
            | Event::Draining { .. }
            | Event::Panic { panic: false, .. }
            | Event::Failover { active: false, .. }
            | Event::Config {
                outcome: "applied", ..
            }
            | Event::Guard {
                verdict: "passed", ..
            }
            | Event::Rollout {
                verdict: "started" | "promoted",
                ..
            }
            | Event::Alarm { raised: false, .. } => {
                tracing::info!(target: "evenkeel::events", "{event}")
            }
            _ => tracing::warn!(target: "evenkeel::events", "{event}"),
        }
        let _ = self.sender.send(event);
    }

    /// A receiver of every event emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

/// Seconds of a duration, for events.
pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event reads back as written (the journal is read as events, not JSON).
    #[test]
    fn every_event_reads_back_as_written() {
        let events = [
            Event::Health {
                pool: "web".into(),
                backend: "10.0.0.1:80".into(),
                verdict: "unhealthy",
                first: false,
                cause: "status 500".into(),
            },
            Event::Ejected {
                pool: "web".into(),
                backend: "b".into(),
                count: 2,
                seconds: 60.0,
            },
            Event::Returned {
                pool: "web".into(),
                backend: "b".into(),
            },
            Event::Draining {
                pool: "web".into(),
                backend: "b".into(),
                draining: true,
            },
            Event::Panic {
                pool: "web".into(),
                panic: true,
                usable: 1,
                total: 4,
            },
            Event::Config {
                version: Some(3),
                previous: 2,
                origin: "api",
                outcome: "applied",
                restores: None,
                expect_shift: true,
                detail: "w".into(),
            },
            Event::Guard {
                version: 3,
                verdict: "rolled_back",
                reason: "r".into(),
                restored: Some(2),
                judged: true,
            },
            Event::Alarm {
                key: "skew/web".into(),
                raised: true,
                message: "m".into(),
            },
            Event::Failover {
                pool: "web".into(),
                backup: "standby".into(),
                active: false,
            },
            Event::Rollout {
                version: 4,
                verdict: "promoted",
                canaries: vec!["a".into()],
                reason: "held".into(),
            },
        ];
        for event in events {
            let json = serde_json::to_value(&event).expect("JSON");
            let back = Event::deserialize(json.clone()).expect("reads back");
            assert_eq!(back, event, "{json}");
        }
    }

    #[test]
    fn unknown_words_and_old_entries() {
        let bad = serde_json::json!({"kind": "guard", "version": 1, "verdict": "maybe", "reason": "", "restored": null});
        assert!(
            Event::deserialize(bad).is_err(),
            "only the words evenkeel writes"
        );
        let old = serde_json::json!({"kind": "guard", "version": 1, "verdict": "passed", "reason": "", "restored": null});
        let Ok(Event::Guard { judged, .. }) = Event::deserialize(old) else {
            panic!("a guard verdict from before `judged`");
        };
        assert!(judged);
    }
}
