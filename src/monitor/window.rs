//! Sliding windows over the proxy's counters.
//!
//! Once a second the monitor copies every backend's cumulative counters (requests,
//! responses by class, failures) and every pool's latency histogram into a
//! [`Sample`]; a window is the difference between two samples. Nothing here touches the
//! request path: the counters are relaxed atomics the workers bump anyway.
//!
//! [`view`] turns a window into what DESIGN.md's words define: each backend's observed
//! share against its intended share (from weights, health, draining and slow start, as
//! the balancer sees them now) and its capacity share, its load ratio, the pool's skew,
//! error rate and latency percentiles.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::latency::{quantile_ms, BUCKETS};
use crate::runtime::Snapshot;

/// Cumulative counters of one backend at one moment.
#[derive(Clone, Debug, Default)]
pub struct BackendSample {
    /// Tries sent.
    pub requests: u64,
    /// Responses by class 1xx..5xx.
    pub responses: [u64; 5],
    /// Tries without a response.
    pub failures: u64,
    /// Its latency histogram since the previous sample the monitor took, sparse
    /// (bucket, count) — empty for samples taken without a [`LatencyBase`].
    pub latency: Vec<(u16, u32)>,
}

/// Every backend's cumulative latency counts at the last sample, so the next sample
/// keeps only what changed (a few buckets a second), not 148 counters per backend per
/// second of history.
#[derive(Debug, Default)]
pub struct LatencyBase {
    cumulative: HashMap<(String, String), Vec<u64>>,
}

/// Everything counted, at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When (monotonic, `health::now()`).
    pub at: Duration,
    /// Per pool name: per backend address, its counters; and the pool's latency counts.
    pub pools: HashMap<String, PoolSample>,
}

/// Cumulative counters of one pool.
#[derive(Clone, Debug, Default)]
pub struct PoolSample {
    /// Client requests routed to it, and those answered 500 or more.
    pub clients: (u64, u64),
    /// Per backend address.
    pub backends: HashMap<String, BackendSample>,
    /// Latency histogram counts summed over its backends.
    pub latency: Vec<u64>,
}

impl Sample {
    /// Reads the counters of `snapshot` now.
    pub fn take(snapshot: &Snapshot, at: Duration) -> Sample {
        Sample::take_tracking(snapshot, at, None)
    }

    /// Reads the counters of `snapshot` now; with `base`, each backend's latency since
    /// the previous such sample too (and `base` moves on).
    pub fn take_tracking(
        snapshot: &Snapshot,
        at: Duration,
        mut base: Option<&mut LatencyBase>,
    ) -> Sample {
        let mut kept = HashMap::new();
        let pools = snapshot
            .pools
            .iter()
            .map(|pool| {
                let mut latency = vec![0u64; BUCKETS];
                let backends = pool
                    .backends
                    .iter()
                    .map(|b| {
                        let counts = b.stats.latency.snapshot();
                        for (sum, count) in latency.iter_mut().zip(&counts) {
                            *sum += count;
                        }
                        let mut since = Vec::new();
                        if let Some(base) = base.as_deref_mut() {
                            let key = (pool.name.clone(), b.address.clone());
                            let before = base.cumulative.get(&key);
                            for (bucket, &count) in counts.iter().enumerate() {
                                let was = before.and_then(|c| c.get(bucket)).copied().unwrap_or(0);
                                let new = count.saturating_sub(was);
                                if new > 0 {
                                    since.push((
                                        bucket as u16,
                                        u32::try_from(new).unwrap_or(u32::MAX),
                                    ));
                                }
                            }
                            kept.insert(key, counts);
                        }
                        let sample = BackendSample {
                            requests: b.stats.requests.load(Ordering::Relaxed),
                            responses: std::array::from_fn(|i| {
                                b.stats.responses[i].load(Ordering::Relaxed)
                            }),
                            failures: b.stats.failures.load(Ordering::Relaxed),
                            latency: since,
                        };
                        (b.address.clone(), sample)
                    })
                    .collect();
                let clients = (
                    pool.stats.requests.load(Ordering::Relaxed),
                    pool.stats.errors.load(Ordering::Relaxed),
                );
                (
                    pool.name.clone(),
                    PoolSample {
                        clients,
                        backends,
                        latency,
                    },
                )
            })
            .collect();
        if let Some(base) = base {
            // Backends a reload removed are forgotten.
            base.cumulative = kept;
        }
        Sample { at, pools }
    }
}

/// Sets each backend's p50/p99 in `views` from the latencies of `samples` (the samples
/// of the window after its first: each holds what came since the one before).
pub fn add_backend_latency<'a>(views: &mut [PoolView], samples: impl Iterator<Item = &'a Sample>) {
    let mut sums: HashMap<(&str, &str), Vec<u64>> = HashMap::new();
    for sample in samples {
        for (pool, pool_sample) in &sample.pools {
            for (address, backend) in &pool_sample.backends {
                if backend.latency.is_empty() {
                    continue;
                }
                let sum = sums
                    .entry((pool.as_str(), address.as_str()))
                    .or_insert_with(|| vec![0; BUCKETS]);
                for &(bucket, count) in &backend.latency {
                    sum[usize::from(bucket)] += u64::from(count);
                }
            }
        }
    }
    for pool in views {
        for backend in &mut pool.backends {
            if let Some(counts) = sums.get(&(pool.name.as_str(), backend.address.as_str())) {
                backend.p50_ms = quantile_ms(counts, 0.5);
                backend.p99_ms = quantile_ms(counts, 0.99);
            }
        }
    }
}

/// One backend over a window.
#[derive(Clone, Debug, Serialize)]
pub struct BackendView {
    /// Address as written in the config.
    pub address: String,
    /// Tries it got in the window.
    pub requests: u64,
    /// 5xx responses and failures in the window.
    pub errors: u64,
    /// Its share of the pool's tries.
    pub observed_share: f64,
    /// The share it should get now.
    pub intended_share: f64,
    /// Its capacity over the usable capacity.
    pub capacity_share: f64,
    /// observed share / capacity share (0 when it has no capacity share).
    pub load_ratio: f64,
    /// Its requests expected from the intended share (for significance rules).
    pub expected: f64,
    /// Median latency to the response head over the window, in ms (`None`: no
    /// response, or the window was read without per-backend latency).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency over the window, in ms.
    pub p99_ms: Option<f64>,
}

/// One pool over a window.
#[derive(Clone, Debug, Serialize)]
pub struct PoolView {
    /// Its name.
    pub name: String,
    /// Its algorithm.
    pub algorithm: String,
    /// Whether skew is alarmed for it (weight-driven algorithms).
    pub weight_driven: bool,
    /// Tries sent to its backends in the window.
    pub requests: u64,
    /// Client requests routed to it in the window.
    pub client_requests: u64,
    /// Share of client requests answered with 500 or more — by a backend or by
    /// evenkeel itself (no usable backend, backend unreachable, timeout).
    pub error_rate: f64,
    /// Median time to response head, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// DESIGN's skew (None when no backend's difference is significant).
    pub skew: Option<f64>,
    /// The backend that sets the skew.
    pub skew_backend: Option<String>,
    /// Panic mode now.
    pub panic: bool,
    /// Failed over to its backup now.
    pub failed_over: bool,
    /// Usable backends now, and backends of weight above zero.
    pub usable: usize,
    /// Backends of weight above zero.
    pub total: usize,
    /// Its backends, in config order.
    pub backends: Vec<BackendView>,
}

/// The window from `older` to `newer`, judged against `snapshot` (the config in force
/// at the end of the window) at time `now`.
pub fn view(older: &Sample, newer: &Sample, snapshot: &Snapshot, now: Duration) -> Vec<PoolView> {
    snapshot
        .pools
        .iter()
        .map(|pool| {
            let empty = PoolSample::default();
            let (old, new) = (
                older.pools.get(&pool.name).unwrap_or(&empty),
                newer.pools.get(&pool.name).unwrap_or(&empty),
            );
            let zero = BackendSample::default();
            let deltas: Vec<(u64, u64)> = pool
                .backends
                .iter()
                .map(|b| {
                    let (o, n) = (
                        old.backends.get(&b.address).unwrap_or(&zero),
                        new.backends.get(&b.address).unwrap_or(&zero),
                    );
                    let requests = n.requests.saturating_sub(o.requests);
                    let errors = n.responses[4].saturating_sub(o.responses[4])
                        + n.failures.saturating_sub(o.failures);
                    (requests, errors)
                })
                .collect();
            let total: u64 = deltas.iter().map(|d| d.0).sum();
            let client_requests = new.clients.0.saturating_sub(old.clients.0);
            let client_errors = new.clients.1.saturating_sub(old.clients.1);
            let intended = pool.intended_shares(now);
            let usable: Vec<bool> = pool
                .backends
                .iter()
                .map(|b| b.weight > 0 && b.health.is_usable(now))
                .collect();
            let capacity: f64 = pool
                .backends
                .iter()
                .zip(&usable)
                .filter(|(_, u)| **u)
                .map(|(b, _)| b.capacity)
                .sum();
            let counts: Vec<u64> = deltas.iter().map(|d| d.0).collect();
            let latency: Vec<u64> = match old.latency.len() {
                0 => new.latency.clone(),
                _ => new
                    .latency
                    .iter()
                    .zip(&old.latency)
                    .map(|(n, o)| n.saturating_sub(*o))
                    .collect(),
            };
            let skew = crate::sim::skew::skew(&counts, &intended);
            let backends = pool
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let observed = if total == 0 {
                        0.0
                    } else {
                        counts[i] as f64 / total as f64
                    };
                    let capacity_share = if usable[i] && capacity > 0.0 {
                        b.capacity / capacity
                    } else {
                        0.0
                    };
                    BackendView {
                        address: b.address.clone(),
                        requests: counts[i],
                        errors: deltas[i].1,
                        observed_share: observed,
                        intended_share: intended[i],
                        capacity_share,
                        load_ratio: if capacity_share > 0.0 {
                            observed / capacity_share
                        } else {
                            0.0
                        },
                        expected: intended[i] * total as f64,
                        p50_ms: None,
                        p99_ms: None,
                    }
                })
                .collect();
            PoolView {
                name: pool.name.clone(),
                algorithm: pool.config.algorithm.name().to_string(),
                weight_driven: pool.config.algorithm.is_weight_driven(),
                requests: total,
                client_requests,
                error_rate: if client_requests == 0 {
                    0.0
                } else {
                    client_errors as f64 / client_requests as f64
                },
                p50_ms: quantile_ms(&latency, 0.5),
                p99_ms: quantile_ms(&latency, 0.99),
                skew: skew.backend.map(|_| skew.value),
                skew_backend: skew
                    .backend
                    .and_then(|i| pool.backends.get(i))
                    .map(|b| b.address.clone()),
                panic: pool.in_panic(),
                failed_over: pool.is_failed_over(),
                usable: usable.iter().filter(|u| **u).count(),
                total: pool.backends.iter().filter(|b| b.weight > 0).count(),
                backends,
            }
        })
        .collect()
}

pub use crate::sim::skew::MIN_EXPECTED;
