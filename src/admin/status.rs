//! `GET /status`: pools and backends with their intended and observed shares.
//!
//! Observed shares here count every request since the backend appeared (counters
//! survive reloads); windowed shares, skew and alarms are the monitor's, added beside
//! this document by the admin API (`monitor`). The `[guard]` thresholds in force are
//! included so that a client (`evenkeel status`) marks what the alarms would judge
//! against the same lines.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::runtime::Snapshot;

/// The whole status document.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// The config file in force.
    pub config_file: String,
    /// Every pool, in config order.
    pub pools: Vec<PoolStatus>,
    /// The `[guard]` thresholds in force.
    pub guard: GuardThresholds,
    /// The certificates HTTPS listeners serve, in config order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateStatus>,
}

/// A certificate an HTTPS listener serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// The listener.
    pub listener: String,
    /// The certificate file.
    pub cert: String,
    /// SHA-256 of the leaf certificate (DER), hex.
    pub fingerprint: String,
    /// The names it covers.
    pub names: Vec<String>,
    /// End of its validity (RFC 3339, UTC).
    pub not_after: String,
    /// Days until then (negative: expired that long ago).
    pub days_left: f64,
}

/// The `[guard]` thresholds in force: the lines alarms and the guard judge against
/// (DESIGN "Configuration", `[guard]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuardThresholds {
    /// How long every applied change is watched, in seconds. Default: 60.
    pub watch_seconds: f64,
    /// Requests needed after a change before it is judged. Default: 200.
    pub min_requests: u64,
    /// Largest acceptable ratio of 5xx and connection errors to requests. Default: 0.02.
    pub max_error_rate: f64,
    /// Largest acceptable p99 latency after / before a change. Default: 2.0.
    pub max_latency_ratio: f64,
    /// A p99 rise smaller than this never breaches, in milliseconds. Default: 25.
    /// (Absent from an older instance's answer: the default.)
    #[serde(default = "default_latency_floor_ms")]
    pub latency_floor_ms: f64,
    /// The slow-backend alarm's line: a backend's p99 over the median p99 of the
    /// others. Default: 3. (Absent from an older instance's answer: the default.)
    #[serde(default = "default_max_backend_latency_ratio")]
    pub max_backend_latency_ratio: f64,
    /// Largest acceptable pool skew. Default: 0.25.
    pub max_skew: f64,
    /// Largest acceptable backend load ratio (observed share / capacity share). Default: 2.0.
    pub max_load_ratio: f64,
    /// Largest acceptable share after / before a change for a backend. Default: 2.0.
    pub max_shift: f64,
    /// Whether applies refuse lint warnings too. Default: false.
    pub deny_warnings: bool,
}

fn default_max_backend_latency_ratio() -> f64 {
    crate::config::Guard::default().max_backend_latency_ratio
}

fn default_latency_floor_ms() -> f64 {
    crate::config::DEFAULT_LATENCY_FLOOR.as_secs_f64() * 1000.0
}

impl GuardThresholds {
    /// The thresholds of `guard`.
    pub fn of(guard: &crate::config::Guard) -> GuardThresholds {
        GuardThresholds {
            watch_seconds: guard.watch.as_secs_f64(),
            min_requests: guard.min_requests,
            max_error_rate: guard.max_error_rate,
            max_latency_ratio: guard.max_latency_ratio,
            latency_floor_ms: guard.latency_floor.as_secs_f64() * 1000.0,
            max_backend_latency_ratio: guard.max_backend_latency_ratio,
            max_skew: guard.max_skew,
            max_load_ratio: guard.max_load_ratio,
            max_shift: guard.max_shift,
            deny_warnings: guard.deny_warnings,
        }
    }
}

/// One pool.
#[derive(Debug, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Its name.
    pub name: String,
    /// Its balancing algorithm.
    pub algorithm: String,
    /// Whether it is in panic mode.
    pub panic: bool,
    /// Whether its traffic goes to its backup pool.
    pub failed_over: bool,
    /// Requests sent to its backends (connections, for a TCP pool).
    pub requests: u64,
    /// A TCP listener's pool: its counts are connections, and its backends show bytes.
    #[serde(default)]
    pub tcp: bool,
    /// What it speaks to its backends: `http1`, `h2c` or `h2` (`protocol`).
    #[serde(default = "http1")]
    pub protocol: String,
    /// Its backends, in config order.
    pub backends: Vec<BackendStatus>,
}

/// One backend.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Address as written in the config.
    pub address: String,
    /// Configured weight.
    pub weight: u32,
    /// Configured capacity.
    pub capacity: f64,
    /// Share of the pool's requests it should get.
    pub intended_share: f64,
    /// Share of the pool's requests it got.
    pub observed_share: f64,
    /// Its capacity over the pool's capacity.
    pub capacity_share: f64,
    /// Requests sent to it.
    pub requests: u64,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub responses: [u64; 5],
    /// Requests that got no response (connect failure, reset, timeout).
    pub failures: u64,
    /// Active-check verdict: `unknown` (not probed yet, or no active checks),
    /// `healthy` or `unhealthy`.
    pub health: String,
    /// Ejected by passive checks now.
    pub ejected: bool,
    /// Draining (no new requests).
    pub draining: bool,
    /// Usable: may be picked.
    pub usable: bool,
    /// A TCP pool's backend: bytes its ended connections carried, both ways.
    #[serde(default)]
    pub bytes: u64,
}

impl Status {
    /// The status of `snapshot` now.
    pub fn of(snapshot: &Snapshot) -> Status {
        let pools = snapshot
            .pools
            .iter()
            .map(|pool| {
                let now = crate::health::now();
                let intended = pool.intended_shares(now);
                let requests: Vec<u64> = pool
                    .backends
                    .iter()
                    .map(|b| b.stats.requests.load(Ordering::Relaxed))
                    .collect();
                let total: u64 = requests.iter().sum();
                let capacity: f64 = pool
                    .backends
                    .iter()
                    .filter(|b| b.weight > 0)
                    .map(|b| b.capacity)
                    .sum();
                let backends = pool
                    .backends
                    .iter()
                    .zip(&intended)
                    .zip(&requests)
                    .map(|((b, &intended_share), &requests)| BackendStatus {
                        address: b.address.clone(),
                        weight: b.weight,
                        capacity: b.capacity,
                        intended_share,
                        observed_share: if total == 0 {
                            0.0
                        } else {
                            requests as f64 / total as f64
                        },
                        capacity_share: if b.weight == 0 || capacity == 0.0 {
                            0.0
                        } else {
                            b.capacity / capacity
                        },
                        requests,
                        in_flight: b.load.in_flight(),
                        responses: std::array::from_fn(|i| {
                            b.stats.responses[i].load(Ordering::Relaxed)
                        }),
                        failures: b.stats.failures.load(Ordering::Relaxed),
                        health: b.health.verdict().name().to_string(),
                        ejected: b.health.is_ejected(now),
                        draining: b.health.is_draining(),
                        usable: b.health.is_usable(now),
                        bytes: b.stats.bytes.load(Ordering::Relaxed),
                    })
                    .collect();
                PoolStatus {
                    name: pool.name.clone(),
                    algorithm: pool.config.algorithm.name().to_string(),
                    panic: pool.in_panic(),
                    failed_over: pool.is_failed_over(),
                    requests: total,
                    tcp: pool.config.tcp,
                    protocol: pool.config.protocol.as_str().to_string(),
                    backends,
                }
            })
            .collect();
        let unix_now = crate::config::tls::unix_now();
        let certificates = snapshot
            .config
            .certificates()
            .map(|(listener, c)| CertificateStatus {
                listener: listener.name.clone(),
                cert: c.cert_path.display().to_string(),
                fingerprint: c.fingerprint.clone(),
                names: c.names.clone(),
                not_after: crate::store::rfc3339(c.not_after),
                days_left: (c.not_after - unix_now) as f64 / 86_400.0,
            })
            .collect();
        Status {
            config_file: snapshot.config.source.path.display().to_string(),
            pools,
            guard: GuardThresholds::of(&snapshot.config.guard),
            certificates,
        }
    }
}

/// The protocol of a pool in a status written before `protocol` was shown.
fn http1() -> String {
    "http1".to_string()
}
