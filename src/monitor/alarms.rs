//! Alarms: conditions on the live windows that an operator must hear about, each
//! raised once and cleared once.
//!
//! Every second the monitor computes which conditions hold (over the last 10 seconds
//! of traffic); a condition that starts holding raises its alarm at once, and an
//! alarm clears only after its condition has not held for [`CLEAR_AFTER`] consecutive
//! evaluations — hysteresis, so a value hovering at its threshold does not raise and
//! clear every second. Raising and clearing are events (journal, webhook, log).
//!
//! What an alarm is about is a [`Subject`]: its [`Kind`] and the pool, backend,
//! listener or certificate it names. Each of its constructors forms the alarm's stable
//! key (`kind/pool[/backend]`, what `/status`, the journal and the webhook show) and
//! the labels of `evenkeel_alarm_active` together, so the two cannot disagree and no
//! reader has to take a key apart.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use super::window::{PoolView, MIN_EXPECTED};
use crate::config::Guard;
use crate::health::{Event, Events};

/// Evaluations without the condition before an alarm clears.
pub const CLEAR_AFTER: u32 = 5;
/// Least requests in a window before its error rate is judged.
pub const MIN_REQUESTS_FOR_ERRORS: u64 = 20;
/// Health changes of one backend within [`FLAP_WINDOW`] that make it flapping.
pub const FLAP_CHANGES: usize = 4;
/// See [`FLAP_CHANGES`].
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);

/// What an alarm can be about. The names are the first part of alarm keys and the
/// `kind` label of `evenkeel_alarm_active`: Prometheus rules match on them, so they
/// stay as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A weight-driven pool's observed shares depart from the intended ones.
    Skew,
    /// A backend gets more than `guard.max_load_ratio` times its capacity share.
    LoadRatio,
    /// A backend's p99 is far above the other backends' of its pool.
    SlowBackend,
    /// A pool fails more than `guard.max_error_rate` of its requests.
    ErrorRate,
    /// A pool is in panic mode (too few usable backends).
    Panic,
    /// A pool's traffic goes to its backup pool.
    Failover,
    /// A pool has no usable backend.
    AllDown,
    /// A backend's health keeps changing.
    Flapping,
    /// The guard rolled a config version back (one-off).
    Guard,
    /// A served certificate is near its end, or past it.
    CertificateExpiry,
    /// A fleet node cannot reach its store (etcd): it serves what it has.
    StoreUnreachable,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 11] = [
        Kind::Skew,
        Kind::LoadRatio,
        Kind::SlowBackend,
        Kind::ErrorRate,
        Kind::Panic,
        Kind::Failover,
        Kind::AllDown,
        Kind::Flapping,
        Kind::Guard,
        Kind::CertificateExpiry,
        Kind::StoreUnreachable,
    ];

    /// Its name in keys and labels (`load_ratio`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Skew => "skew",
            Kind::LoadRatio => "load_ratio",
            Kind::SlowBackend => "slow_backend",
            Kind::ErrorRate => "error_rate",
            Kind::Panic => "panic",
            Kind::Failover => "failover",
            Kind::AllDown => "all_down",
            Kind::Flapping => "flapping",
            Kind::Guard => "guard",
            Kind::CertificateExpiry => "certificate_expiry",
            Kind::StoreUnreachable => "store_unreachable",
        }
    }
}

/// What an alarm is about: its stable key and what it names, each field empty where it
/// does not apply (Prometheus treats an empty label as absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// Stable key (`kind/pool[/backend]`, `guard/VERSION`,
    /// `certificate_expiry/LISTENER/FINGERPRINT-PREFIX`).
    pub key: String,
    #[serde(skip)]
    pub kind: Kind,
    /// The pool's name.
    #[serde(skip)]
    pub pool: String,
    /// The backend's address as written in the config.
    #[serde(skip)]
    pub backend: String,
    /// The listener's name.
    #[serde(skip)]
    pub listener: String,
    /// The certificate's file, as `evenkeel_tls_certificate_expiry_timestamp_seconds`
    /// names it.
    #[serde(skip)]
    pub certificate: String,
}

impl Subject {
    fn new(kind: Kind, key: String) -> Subject {
        Subject {
            key,
            kind,
            pool: String::new(),
            backend: String::new(),
            listener: String::new(),
            certificate: String::new(),
        }
    }

    /// An alarm about pool `pool` (`kind/pool`).
    pub fn pool(kind: Kind, pool: &str) -> Subject {
        Subject {
            pool: pool.to_string(),
            ..Subject::new(kind, format!("{}/{pool}", kind.name()))
        }
    }

    /// An alarm about the backend at `backend` in pool `pool` (`kind/pool/backend`).
    pub fn backend(kind: Kind, pool: &str, backend: &str) -> Subject {
        Subject {
            pool: pool.to_string(),
            backend: backend.to_string(),
            ..Subject::new(kind, format!("{}/{pool}/{backend}", kind.name()))
        }
    }

    /// The guard's rollback of config version `version` (`guard/VERSION`).
    pub fn guard(version: u64) -> Subject {
        Subject::new(Kind::Guard, format!("{}/{version}", Kind::Guard.name()))
    }

    /// This fleet node's store (`store_unreachable`).
    pub fn store() -> Subject {
        Subject::new(
            Kind::StoreUnreachable,
            Kind::StoreUnreachable.name().to_string(),
        )
    }

    /// A certificate of listener `listener`, read from `path`, whose SHA-256
    /// fingerprint (hex) is `fingerprint`
    /// (`certificate_expiry/LISTENER/FINGERPRINT-PREFIX`, 12 hex digits).
    pub fn certificate(listener: &str, fingerprint: &str, path: &str) -> Subject {
        let kind = Kind::CertificateExpiry;
        let prefix = fingerprint.get(..12).unwrap_or(fingerprint);
        Subject {
            listener: listener.to_string(),
            certificate: path.to_string(),
            ..Subject::new(kind, format!("{}/{listener}/{prefix}", kind.name()))
        }
    }

    /// The labels of its `evenkeel_alarm_active` series: `key`, `kind`, `pool`,
    /// `backend`, `listener`, `certificate`.
    pub fn labels(&self) -> [(&'static str, &str); 6] {
        [
            ("key", self.key.as_str()),
            ("kind", self.kind.name()),
            ("pool", self.pool.as_str()),
            ("backend", self.backend.as_str()),
            ("listener", self.listener.as_str()),
            ("certificate", self.certificate.as_str()),
        ]
    }
}

/// A condition that holds: what it is about, and what holds, with numbers.
pub type Condition = (Subject, String);

/// An alarm in force.
#[derive(Clone, Debug, Serialize)]
pub struct ActiveAlarm {
    /// What it is about (its `key` in JSON).
    #[serde(flatten)]
    pub subject: Subject,
    /// What holds, with numbers.
    pub message: String,
    /// Seconds since it was raised.
    pub seconds: f64,
    #[serde(skip)]
    since: Duration,
    #[serde(skip)]
    quiet: u32,
}

/// The alarms in force, with their hysteresis.
#[derive(Debug, Default)]
pub struct Alarms {
    active: BTreeMap<String, ActiveAlarm>,
}

impl Alarms {
    /// Applies the conditions that hold at `now`: raises the new ones, clears those quiet
    /// for long enough.
    pub fn update(&mut self, holding: Vec<Condition>, now: Duration, events: &Events) {
        let holding: HashMap<String, Condition> = holding
            .into_iter()
            .map(|(subject, message)| (subject.key.clone(), (subject, message)))
            .collect();
        for (key, (subject, message)) in &holding {
            match self.active.get_mut(key) {
                Some(alarm) => {
                    alarm.quiet = 0;
                    alarm.message.clone_from(message);
                }
                None => {
                    self.active.insert(
                        key.clone(),
                        ActiveAlarm {
                            subject: subject.clone(),
                            message: message.clone(),
                            seconds: 0.0,
                            since: now,
                            quiet: 0,
                        },
                    );
                    events.emit(Event::Alarm {
                        key: key.clone(),
                        raised: true,
                        message: message.clone(),
                    });
                }
            }
        }
        let mut cleared = Vec::new();
        for (key, alarm) in self.active.iter_mut() {
            if !holding.contains_key(key) {
                alarm.quiet += 1;
                if alarm.quiet >= CLEAR_AFTER {
                    cleared.push(key.clone());
                }
            }
            alarm.seconds = now.saturating_sub(alarm.since).as_secs_f64();
        }
        for key in cleared {
            if let Some(alarm) = self.active.remove(&key) {
                events.emit(Event::Alarm {
                    key,
                    raised: false,
                    message: alarm.message,
                });
            }
        }
    }

    /// Raises a one-off alarm (an event, not a condition): it clears by itself after
    /// [`CLEAR_AFTER`] evaluations.
    pub fn raise_once(
        &mut self,
        subject: Subject,
        message: String,
        now: Duration,
        events: &Events,
    ) {
        events.emit(Event::Alarm {
            key: subject.key.clone(),
            raised: true,
            message: message.clone(),
        });
        self.active.insert(
            subject.key.clone(),
            ActiveAlarm {
                subject,
                message,
                seconds: 0.0,
                since: now,
                quiet: 0,
            },
        );
    }

    /// The alarms in force, by key.
    pub fn active(&self) -> Vec<ActiveAlarm> {
        self.active.values().cloned().collect()
    }
}

/// A served certificate this close to its end raises the `certificate_expiry` alarm.
pub const CERTIFICATE_ALARM_DAYS: i64 = 7;

/// The certificate conditions that hold at `now` (seconds since the Unix epoch): every
/// served certificate within [`CERTIFICATE_ALARM_DAYS`] of its end, or past it (served
/// because it was in force when a reload or restart kept it), keyed
/// `certificate_expiry/LISTENER/FINGERPRINT-PREFIX`.
pub fn certificate_conditions(config: &crate::config::Config, now: i64) -> Vec<Condition> {
    config
        .certificates()
        .filter(|(_, c)| c.not_after - now < CERTIFICATE_ALARM_DAYS * 86_400)
        .map(|(listener, c)| {
            let end = crate::store::rfc3339(c.not_after);
            let when = if c.not_after < now {
                format!("expired at {end}: clients refuse it")
            } else {
                format!(
                    "expires at {end} ({:.1} days left)",
                    (c.not_after - now) as f64 / 86_400.0
                )
            };
            (
                Subject::certificate(
                    &listener.name,
                    &c.fingerprint,
                    &c.cert_path.to_string_lossy(),
                ),
                format!(
                    "the certificate {} of listener {:?} {when}; renew it and reload",
                    c.cert_path.display(),
                    listener.name
                ),
            )
        })
        .collect()
}

/// The fleet's condition: its store (etcd) cannot be reached.
pub fn store_conditions(fleet: Option<&crate::fleet::Fleet>) -> Vec<Condition> {
    let Some(unreachable) = fleet.and_then(crate::fleet::Fleet::unreachable) else {
        return Vec::new();
    };
    vec![(
        Subject::store(),
        format!(
            "the fleet store (etcd) is unreachable since {} ({}): this node serves the version it has, applies are refused, and it catches up when etcd returns",
            unreachable.since, unreachable.error
        ),
    )]
}

/// Least requests a backend needs in the window for its p99 to be judged slow (or to
/// count in the others' median).
pub const MIN_REQUESTS_FOR_BACKEND_LATENCY: u64 = 20;

/// A backend slower than the others of its pool.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowBackend {
    /// Its address as written.
    pub address: String,
    /// Its p99 over the window, in ms.
    pub p99_ms: f64,
    /// The median p99 of the other backends judged, in ms.
    pub others_ms: f64,
}

/// The backends of `pool` whose p99 over the window is above
/// `guard.max_backend_latency_ratio` times the median p99 of the *other* backends with
/// at least [`MIN_REQUESTS_FOR_BACKEND_LATENCY`] requests (so it works in a pool of
/// two), and above it by at least `guard.latency_floor`.
pub fn slow_backends(pool: &PoolView, guard: &Guard) -> Vec<SlowBackend> {
    let judged: Vec<(&str, f64)> = pool
        .backends
        .iter()
        .filter(|b| b.requests >= MIN_REQUESTS_FOR_BACKEND_LATENCY)
        .filter_map(|b| b.p99_ms.map(|p99| (b.address.as_str(), p99)))
        .collect();
    let floor_ms = guard.latency_floor.as_secs_f64() * 1000.0;
    let mut slow = Vec::new();
    for (i, &(address, p99)) in judged.iter().enumerate() {
        let mut others: Vec<f64> = judged
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &(_, p))| p)
            .collect();
        if others.is_empty() {
            continue;
        }
        others.sort_by(f64::total_cmp);
        let mid = others.len() / 2;
        let median = if others.len() % 2 == 1 {
            others[mid]
        } else {
            (others[mid - 1] + others[mid]) / 2.0
        };
        if p99 > guard.max_backend_latency_ratio * median && p99 - median >= floor_ms {
            slow.push(SlowBackend {
                address: address.to_string(),
                p99_ms: p99,
                others_ms: median,
            });
        }
    }
    slow
}

/// The conditions that hold in `views` (the last seconds of traffic) against the
/// `[guard]` thresholds, plus the `flapping` backends `(pool, address, changes)`.
pub fn conditions(
    views: &[PoolView],
    guard: &Guard,
    flapping: &[(String, String, usize)],
) -> Vec<Condition> {
    let mut holding = Vec::new();
    for pool in views {
        let name = &pool.name;
        if pool.weight_driven {
            if let Some(skew) = pool.skew.filter(|s| *s > guard.max_skew) {
                let worst = pool
                    .skew_backend
                    .as_ref()
                    .and_then(|a| pool.backends.iter().find(|b| &b.address == a));
                let detail = worst.map_or(String::new(), |b| {
                    format!(
                        ": backend {} gets {:.1}% of requests, intended {:.1}%",
                        b.address,
                        b.observed_share * 100.0,
                        b.intended_share * 100.0
                    )
                });
                holding.push((
                    Subject::pool(Kind::Skew, name),
                    format!(
                        "pool {name:?} is skewed (skew {skew:.2} > {}){detail}",
                        guard.max_skew
                    ),
                ));
            }
        }
        for b in &pool.backends {
            let expected_by_capacity = b.capacity_share * pool.requests as f64;
            if expected_by_capacity >= MIN_EXPECTED && b.load_ratio > guard.max_load_ratio {
                holding.push((
                    Subject::backend(Kind::LoadRatio, name, &b.address),
                    format!(
                        "backend {} of pool {name:?} is overloaded: it gets {:.1}% of requests for {:.1}% of the capacity (load ratio {:.2} > {})",
                        b.address,
                        b.observed_share * 100.0,
                        b.capacity_share * 100.0,
                        b.load_ratio,
                        guard.max_load_ratio
                    ),
                ));
            }
        }
        for slow in slow_backends(pool, guard) {
            // What the balancer does about it: load-aware algorithms send it less.
            let consequence = if pool.weight_driven {
                format!("{} keeps sending it its full share", pool.algorithm)
            } else {
                format!("{} sends it fewer requests", pool.algorithm)
            };
            holding.push((
                Subject::backend(Kind::SlowBackend, name, &slow.address),
                format!(
                    "backend {} of pool {name:?} is slow: p99 {:.1} ms is {:.1}x the median p99 of the other backends ({:.1} ms; line {}x); {consequence}",
                    slow.address,
                    slow.p99_ms,
                    slow.p99_ms / slow.others_ms.max(f64::MIN_POSITIVE),
                    slow.others_ms,
                    guard.max_backend_latency_ratio
                ),
            ));
        }
        if pool.client_requests >= MIN_REQUESTS_FOR_ERRORS && pool.error_rate > guard.max_error_rate
        {
            holding.push((
                Subject::pool(Kind::ErrorRate, name),
                format!("pool {name:?} fails {:.1}% of requests (5xx and connection errors; threshold {:.1}%)", pool.error_rate * 100.0, guard.max_error_rate * 100.0),
            ));
        }
        if pool.panic {
            holding.push((
                Subject::pool(Kind::Panic, name),
                format!(
                    "pool {name:?} is in panic mode: {} of {} backends usable",
                    pool.usable, pool.total
                ),
            ));
        }
        if pool.failed_over {
            holding.push((
                Subject::pool(Kind::Failover, name),
                format!("pool {name:?} has failed over to its backup pool"),
            ));
        }
        if pool.total > 0 && pool.usable == 0 {
            holding.push((
                Subject::pool(Kind::AllDown, name),
                format!("pool {name:?} has no usable backend"),
            ));
        }
    }
    for (pool, backend, changes) in flapping {
        holding.push((
            Subject::backend(Kind::Flapping, pool, backend),
            format!("backend {backend} of pool {pool:?} is flapping: {changes} health changes in the last minute"),
        ));
    }
    holding
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_is_raised_once_and_cleared_once_after_quiet_evaluations() {
        let events = Events::default();
        let mut received = events.subscribe();
        let mut alarms = Alarms::default();
        let s = Duration::from_secs;
        let cond = || vec![(Subject::pool(Kind::Skew, "web"), "skewed".to_string())];
        for t in 0..3 {
            alarms.update(cond(), s(t), &events);
        }
        // /status shows it as before labels came: key, message, seconds.
        let shown = serde_json::to_value(&alarms.active()[0]).expect("JSON");
        assert_eq!(
            shown,
            serde_json::json!({ "key": "skew/web", "message": "skewed", "seconds": 2.0 })
        );
        // A brief dip does not clear it.
        alarms.update(vec![], s(3), &events);
        alarms.update(cond(), s(4), &events);
        for t in 5..(5 + u64::from(CLEAR_AFTER)) {
            alarms.update(vec![], s(t), &events);
        }
        let mut kinds = Vec::new();
        while let Ok(Event::Alarm { raised, .. }) = received.try_recv() {
            kinds.push(raised);
        }
        assert_eq!(kinds, [true, false]);
        assert!(alarms.active().is_empty());
    }

    #[test]
    fn a_subjects_key_and_labels_name_the_same_things() {
        let labels = |s: &Subject| {
            s.labels()
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let backend = Subject::backend(Kind::LoadRatio, "web", "10.0.0.1:80");
        assert_eq!(
            labels(&backend),
            "key=load_ratio/web/10.0.0.1:80 kind=load_ratio pool=web backend=10.0.0.1:80 listener= certificate="
        );
        let pool = Subject::pool(Kind::AllDown, "api");
        assert_eq!(
            labels(&pool),
            "key=all_down/api kind=all_down pool=api backend= listener= certificate="
        );
        assert_eq!(
            labels(&Subject::guard(7)),
            "key=guard/7 kind=guard pool= backend= listener= certificate="
        );
        let certificate = Subject::certificate("https", "AB12CD34EF56AB78", "/etc/site.pem");
        assert_eq!(
            labels(&certificate),
            "key=certificate_expiry/https/AB12CD34EF56 kind=certificate_expiry pool= backend= listener=https certificate=/etc/site.pem"
        );
        // Every kind has a name of its own, which starts its keys.
        let names: std::collections::HashSet<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), Kind::ALL.len());
        for kind in Kind::ALL {
            let key = Subject::pool(kind, "p").key;
            assert_eq!(key.split('/').next(), Some(kind.name()));
        }
    }
}
