//! What changes between two configurations, as a list of explicit [`Change`] values.
//!
//! `evenkeel plan OLD NEW` prints this list before it shows what the change does to
//! each backend's traffic; a reload can log it. The diff is a pure function of two
//! validated [`Config`]s (DESIGN principle 2, "a config is a value"; the shape follows
//! sozu's `ConfigState::diff`, which turns two states into the orders that lead from one
//! to the other): nothing is read, resolved or bound.
//!
//! How things are matched between OLD and NEW:
//! - listeners and pools by name;
//! - routes by what they match — listener, host and path prefix — so a route that now
//!   sends the same requests to another pool is one [`Change::RouteChanged`], not a
//!   removal and an addition (route order does not matter: matching is by host, then
//!   longest prefix);
//! - backends by their address *as written*, within their pool — the identity status,
//!   metrics and consistent hashing use — so rewriting `localhost:9001` as
//!   `127.0.0.1:9001` shows as one backend removed and one added, which is what it is
//!   for consistent hashing.
//!
//! Settings are compared by value and reported with the field's name as the config
//! writes it (`timeouts.connect`, `health.interval`, `guard.max_skew`) and both values
//! formatted the way the config writes them (`"250ms"`, `header:x-user-id`). Changes come
//! out in a fixed order: top-level settings, listeners, routes, then each pool (in NEW's
//! order, removed pools last) with its settings before its backends.

use std::collections::BTreeSet;
use std::fmt;

use super::model::{
    Backend, BackendTls, Config, HealthCheck, Listener, Outlier, Pool, Probe, Route,
};
use super::values::format_duration;
use crate::balance::Algorithm;

/// One difference between two configurations.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A top-level setting changed (`drain_timeout`, `admin.listen`, `guard.max_skew`,
    /// `lint.allow.RULE`, `alerts.webhook`, ...).
    Setting(Setting),
    /// A listener appeared.
    ListenerAdded {
        /// Its name.
        name: String,
        /// Its address as configured.
        listen: String,
    },
    /// A listener disappeared.
    ListenerRemoved {
        /// Its name.
        name: String,
        /// Its address as configured.
        listen: String,
    },
    /// A setting of a listener present in both changed.
    ListenerChanged {
        /// The listener's name.
        name: String,
        /// What changed.
        setting: Setting,
    },
    /// A route appeared.
    RouteAdded {
        /// What it matches.
        route: RouteMatch,
        /// Where it sends requests.
        pool: String,
    },
    /// A route disappeared.
    RouteRemoved {
        /// What it matched.
        route: RouteMatch,
        /// Where it sent requests.
        pool: String,
    },
    /// The same requests now go to another pool.
    RouteChanged {
        /// What the route matches.
        route: RouteMatch,
        /// The pool before.
        before: String,
        /// The pool after.
        after: String,
    },
    /// A pool appeared.
    PoolAdded {
        /// Its name.
        pool: String,
        /// Its algorithm.
        algorithm: Algorithm,
        /// How many backends it has.
        backends: usize,
    },
    /// A pool disappeared.
    PoolRemoved {
        /// Its name.
        pool: String,
        /// How many backends it had.
        backends: usize,
    },
    /// A setting of a pool present in both changed (`algorithm`, `hash_key`, `backup`,
    /// `panic_threshold`, `slow_start`, `timeouts.*`, `retries.*`, `limits.*`,
    /// `health`, `health.*`, `outlier.*`).
    PoolChanged {
        /// The pool's name.
        pool: String,
        /// What changed.
        setting: Setting,
    },
    /// A backend appeared in a pool present in both.
    BackendAdded {
        /// Its pool.
        pool: String,
        /// Its address as written.
        address: String,
        /// Its weight.
        weight: u32,
        /// Its capacity.
        capacity: f64,
    },
    /// A backend disappeared from a pool present in both.
    BackendRemoved {
        /// Its pool.
        pool: String,
        /// Its address as written.
        address: String,
        /// Its weight before.
        weight: u32,
        /// Its capacity before.
        capacity: f64,
    },
    /// A backend's weight changed.
    WeightChanged {
        /// Its pool.
        pool: String,
        /// Its address as written.
        address: String,
        /// Weight before.
        before: u32,
        /// Weight after.
        after: u32,
    },
    /// A backend's capacity changed.
    CapacityChanged {
        /// Its pool.
        pool: String,
        /// Its address as written.
        address: String,
        /// Capacity before.
        before: f64,
        /// Capacity after.
        after: f64,
    },
}

/// A named setting with its value before and after, both formatted as the config
/// writes them (`none` for an absent optional value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The field, as the config writes it (`timeouts.connect`).
    pub field: String,
    /// The value before.
    pub before: String,
    /// The value after.
    pub after: String,
}

/// What a route matches: its listener, host (any when `None`) and path prefix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteMatch {
    /// Listener name.
    pub listener: String,
    /// Exact host, or any.
    pub host: Option<String>,
    /// Path prefix.
    pub path_prefix: String,
}

impl RouteMatch {
    fn of(route: &Route) -> RouteMatch {
        RouteMatch {
            listener: route.listener.clone(),
            host: route.host.clone(),
            path_prefix: route.path_prefix.clone(),
        }
    }
}

impl fmt::Display for RouteMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener {:?}", self.listener)?;
        if let Some(host) = &self.host {
            write!(f, " host {host}")?;
        }
        write!(f, " path {}", self.path_prefix)
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} → {}", self.field, self.before, self.after)
    }
}

impl Change {
    /// `+` for something added, `-` for something removed, `~` for a change.
    pub fn sign(&self) -> char {
        match self {
            Change::ListenerAdded { .. }
            | Change::RouteAdded { .. }
            | Change::PoolAdded { .. }
            | Change::BackendAdded { .. } => '+',
            Change::ListenerRemoved { .. }
            | Change::RouteRemoved { .. }
            | Change::PoolRemoved { .. }
            | Change::BackendRemoved { .. } => '-',
            _ => '~',
        }
    }

    /// The pool the change concerns, if any.
    pub fn pool(&self) -> Option<&str> {
        match self {
            Change::PoolAdded { pool, .. }
            | Change::PoolRemoved { pool, .. }
            | Change::PoolChanged { pool, .. }
            | Change::BackendAdded { pool, .. }
            | Change::BackendRemoved { pool, .. }
            | Change::WeightChanged { pool, .. }
            | Change::CapacityChanged { pool, .. } => Some(pool),
            _ => None,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Setting(setting) => write!(f, "{setting}"),
            Change::ListenerAdded { name, listen } => write!(f, "listener {name:?} on {listen}"),
            Change::ListenerRemoved { name, listen } => {
                write!(f, "listener {name:?} on {listen}")
            }
            Change::ListenerChanged { name, setting } => {
                write!(f, "listener {name:?}: {setting}")
            }
            Change::RouteAdded { route, pool } | Change::RouteRemoved { route, pool } => {
                write!(f, "route {route} → pool {pool:?}")
            }
            Change::RouteChanged {
                route,
                before,
                after,
            } => write!(f, "route {route}: pool {before:?} → {after:?}"),
            Change::PoolAdded {
                pool,
                algorithm,
                backends,
            } => write!(f, "pool {pool:?} ({algorithm}, {})", plural(*backends)),
            Change::PoolRemoved { pool, backends } => {
                write!(f, "pool {pool:?} ({})", plural(*backends))
            }
            Change::PoolChanged { pool, setting } => write!(f, "pool {pool:?}: {setting}"),
            Change::BackendAdded {
                pool,
                address,
                weight,
                capacity,
            }
            | Change::BackendRemoved {
                pool,
                address,
                weight,
                capacity,
            } => write!(
                f,
                "pool {pool:?}: backend {address} (weight {weight}, capacity {capacity})"
            ),
            Change::WeightChanged {
                pool,
                address,
                before,
                after,
            } => write!(
                f,
                "pool {pool:?}: backend {address}: weight {before} → {after}"
            ),
            Change::CapacityChanged {
                pool,
                address,
                before,
                after,
            } => write!(
                f,
                "pool {pool:?}: backend {address}: capacity {before} → {after}"
            ),
        }
    }
}

fn plural(backends: usize) -> String {
    format!("{backends} backend{}", if backends == 1 { "" } else { "s" })
}

/// Everything that differs between `old` and `new`, in the order the module doc gives.
/// Empty when they are equivalent (file text, spans and comments do not count).
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut setting = |field: &str, before: String, after: String| {
        if before != after {
            changes.push(Change::Setting(Setting {
                field: field.to_string(),
                before,
                after,
            }));
        }
    };
    setting(
        "state_dir",
        old.state_dir.display().to_string(),
        new.state_dir.display().to_string(),
    );
    setting(
        "drain_timeout",
        format_duration(old.drain_timeout),
        format_duration(new.drain_timeout),
    );
    let admin_listen = |c: &Config| {
        c.admin
            .as_ref()
            .map_or("none".to_string(), |a| a.listen.to_string())
    };
    let admin_token = |c: &Config| {
        c.admin
            .as_ref()
            .map_or("none".to_string(), |a| a.token_file.display().to_string())
    };
    setting("admin.listen", admin_listen(old), admin_listen(new));
    setting("admin.token_file", admin_token(old), admin_token(new));
    // The admin limits only when both have an admin listener: its appearance or
    // removal is already the `admin.listen` change.
    if let (Some(a), Some(b)) = (&old.admin, &new.admin) {
        setting(
            "admin.max_connections",
            a.max_connections.to_string(),
            b.max_connections.to_string(),
        );
        setting(
            "admin.header_timeout",
            format_duration(a.header_timeout),
            format_duration(b.header_timeout),
        );
        setting(
            "admin.idle_timeout",
            format_duration(a.idle_timeout),
            format_duration(b.idle_timeout),
        );
        setting(
            "admin.metrics_require_token",
            a.metrics_require_token.to_string(),
            b.metrics_require_token.to_string(),
        );
    }
    let (g, h) = (&old.guard, &new.guard);
    setting(
        "guard.watch",
        format_duration(g.watch),
        format_duration(h.watch),
    );
    let show = |x: &dyn fmt::Display| x.to_string();
    setting(
        "guard.min_requests",
        show(&g.min_requests),
        show(&h.min_requests),
    );
    setting(
        "guard.max_error_rate",
        show(&g.max_error_rate),
        show(&h.max_error_rate),
    );
    setting(
        "guard.max_latency_ratio",
        show(&g.max_latency_ratio),
        show(&h.max_latency_ratio),
    );
    setting(
        "guard.latency_floor",
        format_duration(g.latency_floor),
        format_duration(h.latency_floor),
    );
    setting(
        "guard.max_backend_latency_ratio",
        show(&g.max_backend_latency_ratio),
        show(&h.max_backend_latency_ratio),
    );
    setting("guard.max_skew", show(&g.max_skew), show(&h.max_skew));
    setting(
        "guard.max_load_ratio",
        show(&g.max_load_ratio),
        show(&h.max_load_ratio),
    );
    setting("guard.max_shift", show(&g.max_shift), show(&h.max_shift));
    setting(
        "guard.deny_warnings",
        show(&g.deny_warnings),
        show(&h.deny_warnings),
    );
    let rules: BTreeSet<&str> = old
        .lint_allow
        .iter()
        .chain(&new.lint_allow)
        .map(|a| a.rule.as_str())
        .collect();
    for rule in rules {
        let reason = |c: &Config| {
            c.lint_allow
                .iter()
                .find(|a| a.rule == rule)
                .map_or("none".to_string(), |a| format!("{:?}", a.reason))
        };
        setting(&format!("lint.allow.{rule}"), reason(old), reason(new));
    }
    let webhook = |c: &Config| c.alerts.webhook.clone().unwrap_or_else(|| "none".into());
    setting("alerts.webhook", webhook(old), webhook(new));

    listeners(old, new, &mut changes);
    routes(old, new, &mut changes);
    for pool in &new.pools {
        match old.pool(&pool.name) {
            Some(before) => pool_changes(before, pool, &mut changes),
            None => changes.push(Change::PoolAdded {
                pool: pool.name.clone(),
                algorithm: pool.algorithm,
                backends: pool.backends.len(),
            }),
        }
    }
    for pool in old.pools.iter().filter(|p| new.pool(&p.name).is_none()) {
        changes.push(Change::PoolRemoved {
            pool: pool.name.clone(),
            backends: pool.backends.len(),
        });
    }
    changes
}

/// How to show one setting of a listener.
type ListenerField = fn(&Listener) -> String;

fn listeners(old: &Config, new: &Config, changes: &mut Vec<Change>) {
    for listener in &new.listeners {
        let Some(before) = old.listener(&listener.name) else {
            changes.push(Change::ListenerAdded {
                name: listener.name.clone(),
                listen: listener.listen.to_string(),
            });
            continue;
        };
        let fields: [(&str, ListenerField); 9] = [
            ("listen", |l| l.listen.to_string()),
            ("header_timeout", |l| format_duration(l.header_timeout)),
            ("max_connections", |l| l.max_connections.to_string()),
            ("redirect_https", |l| l.redirect_https.to_string()),
            ("max_tunnels", |l| l.max_tunnels.to_string()),
            ("mode", |l| l.mode.as_str().to_string()),
            ("accept_proxy_protocol", |l| {
                l.accept_proxy_protocol.to_string()
            }),
            ("tls.min_version", |l| {
                l.tls
                    .as_ref()
                    .map_or("-".into(), |t| t.min_version.as_str().into())
            }),
            // Each certificate by its file and the first bytes of its fingerprint, so a
            // renewal written over the same files shows as a change.
            ("tls.certificates", |l| {
                l.tls.as_ref().map_or("none".into(), |t| {
                    t.certificates
                        .iter()
                        .map(|c| format!("{} ({})", c.cert_path.display(), &c.fingerprint[..12]))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            }),
        ];
        for (field, value) in fields {
            if let Some(setting) = compare(field, value(before), value(listener)) {
                changes.push(Change::ListenerChanged {
                    name: listener.name.clone(),
                    setting,
                });
            }
        }
    }
    for listener in &old.listeners {
        if new.listener(&listener.name).is_none() {
            changes.push(Change::ListenerRemoved {
                name: listener.name.clone(),
                listen: listener.listen.to_string(),
            });
        }
    }
}

fn routes(old: &Config, new: &Config, changes: &mut Vec<Change>) {
    let matches: BTreeSet<RouteMatch> = old
        .routes
        .iter()
        .chain(&new.routes)
        .map(RouteMatch::of)
        .collect();
    for route in matches {
        let pools = |c: &Config| -> Vec<String> {
            c.routes
                .iter()
                .filter(|r| RouteMatch::of(r) == route)
                .map(|r| r.pool.clone())
                .collect()
        };
        let (before, after) = (pools(old), pools(new));
        if let ([before], [after]) = (before.as_slice(), after.as_slice()) {
            if before != after {
                changes.push(Change::RouteChanged {
                    route: route.clone(),
                    before: before.clone(),
                    after: after.clone(),
                });
            }
            continue;
        }
        // Duplicated matches (the config allows them; one shadows the other): compare
        // the pools they name as lists.
        for pool in before.iter().filter(|p| !after.contains(p)) {
            changes.push(Change::RouteRemoved {
                route: route.clone(),
                pool: pool.clone(),
            });
        }
        for pool in after.iter().filter(|p| !before.contains(p)) {
            changes.push(Change::RouteAdded {
                route: route.clone(),
                pool: pool.clone(),
            });
        }
    }
}

fn compare(field: &str, before: String, after: String) -> Option<Setting> {
    (before != after).then(|| Setting {
        field: field.to_string(),
        before,
        after,
    })
}

fn pool_changes(old: &Pool, new: &Pool, changes: &mut Vec<Change>) {
    let d = format_duration;
    let optional = |v: Option<String>| v.unwrap_or_else(|| "none".to_string());
    let mut settings: Vec<Option<Setting>> = vec![
        compare(
            "algorithm",
            old.algorithm.to_string(),
            new.algorithm.to_string(),
        ),
        compare(
            "hash_key",
            optional(old.hash_key.as_ref().map(|k| k.to_string())),
            optional(new.hash_key.as_ref().map(|k| k.to_string())),
        ),
        compare(
            "backup",
            optional(old.backup.clone()),
            optional(new.backup.clone()),
        ),
        compare(
            "panic_threshold",
            old.panic_threshold.to_string(),
            new.panic_threshold.to_string(),
        ),
        compare("slow_start", d(old.slow_start), d(new.slow_start)),
        compare(
            "proxy_protocol",
            proxy(old.proxy_protocol).into(),
            proxy(new.proxy_protocol).into(),
        ),
        compare(
            "protocol",
            old.protocol.as_str().into(),
            new.protocol.as_str().into(),
        ),
    ];
    let (t, u) = (&old.timeouts, &new.timeouts);
    settings.extend([
        compare("timeouts.connect", d(t.connect), d(u.connect)),
        compare("timeouts.request", d(t.request), d(u.request)),
        compare("timeouts.idle", d(t.idle), d(u.idle)),
        compare("timeouts.per_try", d(t.per_try), d(u.per_try)),
        compare("timeouts.body_idle", d(t.body_idle), d(u.body_idle)),
        compare("timeouts.tunnel_idle", d(t.tunnel_idle), d(u.tunnel_idle)),
        compare(
            "retries.attempts",
            old.retries.attempts.to_string(),
            new.retries.attempts.to_string(),
        ),
        compare(
            "retries.budget_percent",
            old.retries.budget_percent.to_string(),
            new.retries.budget_percent.to_string(),
        ),
        compare(
            "limits.max_connections",
            old.limits.max_connections.to_string(),
            new.limits.max_connections.to_string(),
        ),
        compare(
            "limits.max_streams",
            old.limits.max_streams.to_string(),
            new.limits.max_streams.to_string(),
        ),
        compare(
            "limits.max_pending",
            old.limits.max_pending.to_string(),
            new.limits.max_pending.to_string(),
        ),
        compare(
            "limits.body_buffer",
            old.limits.body_buffer.to_string(),
            new.limits.body_buffer.to_string(),
        ),
        compare(
            "limits.body_spill",
            old.limits.body_spill.to_string(),
            new.limits.body_spill.to_string(),
        ),
    ]);
    settings.extend(health(old.health.as_ref(), new.health.as_ref()));
    settings.extend(outlier(&old.outlier, &new.outlier));
    settings.push(compare(
        "tls",
        describe_tls(old.tls.as_deref()),
        describe_tls(new.tls.as_deref()),
    ));
    for setting in settings.into_iter().flatten() {
        changes.push(Change::PoolChanged {
            pool: new.name.clone(),
            setting,
        });
    }
    backends(&new.name, &old.backends, &new.backends, changes);
}

/// TLS to a pool's backends in one line, as the config writes it; a CA bundle with the
/// start of its digest, so a rotated bundle under the same name shows as a change.
fn describe_tls(tls: Option<&BackendTls>) -> String {
    let Some(tls) = tls else {
        return "none".to_string();
    };
    let mut fields = Vec::new();
    if let Some(sni) = &tls.sni {
        fields.push(format!("sni = {sni:?}"));
    }
    if let Some(ca) = &tls.ca {
        fields.push(format!(
            "ca = {:?} (sha256 {})",
            ca.path.display().to_string(),
            &ca.sha256[..12]
        ));
    }
    fields.push(format!("verify = {}", tls.verify));
    format!("{{ {} }}", fields.join(", "))
}

/// A health check in one line, for a section that appears or disappears.
fn describe_health(health: Option<&HealthCheck>) -> String {
    let Some(h) = health else {
        return "none".to_string();
    };
    format!(
        "{} every {}, timeout {}",
        describe_probe(&h.probe),
        format_duration(h.interval),
        format_duration(h.timeout)
    )
}

/// What a probe does, in a few words (`http GET /healthz`, `tcp`).
fn describe_probe(probe: &Probe) -> String {
    match probe {
        Probe::Http { method, path, .. } => format!("http {method} {path}"),
        Probe::Tcp => "tcp".to_string(),
        Probe::Grpc { service } if service.is_empty() => "grpc".to_string(),
        Probe::Grpc { service } => format!("grpc {service}"),
    }
}

fn health(old: Option<&HealthCheck>, new: Option<&HealthCheck>) -> Vec<Option<Setting>> {
    let (Some(h), Some(i)) = (old, new) else {
        return vec![compare(
            "health",
            describe_health(old),
            describe_health(new),
        )];
    };
    let mut settings = match (&h.probe, &i.probe) {
        (
            Probe::Http {
                method,
                path,
                host,
                expect_status,
            },
            Probe::Http {
                method: method2,
                path: path2,
                host: host2,
                expect_status: expect_status2,
            },
        ) => {
            let or_none = |h: &Option<String>| h.clone().unwrap_or_else(|| "none".into());
            let range = |r: &std::ops::RangeInclusive<u16>| format!("{}-{}", r.start(), r.end());
            vec![
                compare("health.method", method.clone(), method2.clone()),
                compare("health.path", path.clone(), path2.clone()),
                compare("health.host", or_none(host), or_none(host2)),
                compare(
                    "health.expect_status",
                    range(expect_status),
                    range(expect_status2),
                ),
            ]
        }
        (Probe::Tcp, Probe::Tcp) => Vec::new(),
        (Probe::Grpc { service }, Probe::Grpc { service: service2 }) => {
            vec![compare("health.service", service.clone(), service2.clone())]
        }
        // Another kind of probe: the probe's own fields do not carry over.
        _ => vec![compare(
            "health.type",
            describe_probe(&h.probe),
            describe_probe(&i.probe),
        )],
    };
    let d = format_duration;
    settings.extend([
        compare("health.interval", d(h.interval), d(i.interval)),
        compare("health.timeout", d(h.timeout), d(i.timeout)),
        compare(
            "health.healthy_after",
            h.healthy_after.to_string(),
            i.healthy_after.to_string(),
        ),
        compare(
            "health.unhealthy_after",
            h.unhealthy_after.to_string(),
            i.unhealthy_after.to_string(),
        ),
    ]);
    settings
}

fn outlier(old: &Outlier, new: &Outlier) -> Vec<Option<Setting>> {
    let d = format_duration;
    vec![
        compare(
            "outlier.consecutive_failures",
            old.consecutive_failures.to_string(),
            new.consecutive_failures.to_string(),
        ),
        compare("outlier.ejection", d(old.ejection), d(new.ejection)),
        compare(
            "outlier.max_ejection",
            d(old.max_ejection),
            d(new.max_ejection),
        ),
        compare(
            "outlier.max_ejected_percent",
            old.max_ejected_percent.to_string(),
            new.max_ejected_percent.to_string(),
        ),
    ]
}

fn backends(pool: &str, old: &[Backend], new: &[Backend], changes: &mut Vec<Change>) {
    for backend in new {
        let Some(before) = old.iter().find(|b| b.address == backend.address) else {
            changes.push(Change::BackendAdded {
                pool: pool.to_string(),
                address: backend.address.clone(),
                weight: backend.weight,
                capacity: backend.capacity,
            });
            continue;
        };
        if before.weight != backend.weight {
            changes.push(Change::WeightChanged {
                pool: pool.to_string(),
                address: backend.address.clone(),
                before: before.weight,
                after: backend.weight,
            });
        }
        if before.capacity != backend.capacity {
            changes.push(Change::CapacityChanged {
                pool: pool.to_string(),
                address: backend.address.clone(),
                before: before.capacity,
                after: backend.capacity,
            });
        }
    }
    for backend in old {
        if !new.iter().any(|b| b.address == backend.address) {
            changes.push(Change::BackendRemoved {
                pool: pool.to_string(),
                address: backend.address.clone(),
                weight: backend.weight,
                capacity: backend.capacity,
            });
        }
    }
}

#[cfg(test)]
mod tests;

/// A pool's `proxy_protocol` as the config writes it.
fn proxy(v2: bool) -> &'static str {
    if v2 {
        "v2"
    } else {
        "-"
    }
}
