//! `GET /metrics`: what evenkeel counts, in the OpenMetrics text format that Prometheus
//! scrapes (no token; docs/metrics.md lists every metric).
//!
//! Nothing here runs on the request path. A scrape reads what is there already: the
//! live [`Snapshot`] (per backend the relaxed atomic counters the workers bump anyway —
//! responses by class, failures, the latency histogram, ejections — plus load and
//! health; per pool the retry counters), the [`MonitorState`] the monitor thread
//! published for its last window (shares, load ratio, skew, error ratio, alarms), the
//! [`Applier`]'s counts of applies and guard rollbacks, and the webhook's delivery
//! counters. From them it builds a [`Scrape`], registers it as the one collector of a
//! fresh `prometheus-client` registry and encodes that: no global registry, nothing to
//! keep in step, and scrapes are rare enough that building it each time costs nothing
//! worth measuring.
//!
//! Counters that live with a backend (or a pool) survive reloads as long as the backend
//! keeps its address in the same pool (the pool its name), like `/status`'s.
//!
//! The latency histogram of a backend has fine log-linear buckets (four per doubling,
//! see [`crate::monitor::latency`]); Prometheus wants a short fixed list of `le`
//! bounds. [`le_buckets`] moves each fine bucket under the smallest bound at or above
//! its upper edge, so a `le` count never includes a slower request (it may leave out
//! one up to 25% faster than its bound, which then counts under the next bound up).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::apply::{Applier, ApplyCounts};
use crate::health::Verdict;
use crate::monitor::latency;
use crate::monitor::window::BackendView;
use crate::monitor::{Monitor, MonitorState};
use crate::runtime::{BackendRuntime, Runtime, Snapshot, TlsCounters};

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `le` bounds of `evenkeel_request_duration_seconds`, in µs (1 ms to 30 s; the
/// `+Inf` bucket follows).
pub const LE_MICROS: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// Status classes, in the order of `BackendStats::responses`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The latency counts of a backend's fine buckets (as
/// [`latency::LatencyHistogram::snapshot`] gives them) regrouped under [`LE_MICROS`]
/// and `+Inf`: `(bound in seconds, count)` pairs, not cumulative (the encoder adds them
/// up), `+Inf` last as `f64::INFINITY`. Each fine bucket goes under the smallest bound
/// at or above its upper edge; the counts add up to the fine counts' total.
pub fn le_buckets(fine: &[u64]) -> Vec<(f64, u64)> {
    let mut buckets: Vec<(f64, u64)> = LE_MICROS
        .iter()
        .map(|&le| (le as f64 / 1e6, 0))
        .chain([(f64::INFINITY, 0)])
        .collect();
    for (index, &count) in fine.iter().enumerate().filter(|(_, c)| **c > 0) {
        let upper = latency::upper_bound(index);
        let slot = LE_MICROS
            .iter()
            .position(|&le| upper <= le as f64)
            .unwrap_or(LE_MICROS.len());
        buckets[slot].1 += count;
    }
    buckets
}

/// Everything one scrape reports, read at one moment.
#[derive(Debug)]
pub struct Scrape {
    /// The live configuration, with its counters.
    pub snapshot: Arc<Snapshot>,
    /// What the monitor computed for its last window.
    pub monitor: Arc<MonitorState>,
    /// The config version in force.
    pub version: u64,
    /// Applies so far: (origin, outcome, count).
    pub applies: Vec<(&'static str, &'static str, u64)>,
    /// Versions the guard rolled back.
    pub guard_rollbacks: u64,
    /// Connections to backends open now.
    pub upstream_connections: u64,
    /// Upgraded connections (tunnels) open now, per listener in config order.
    pub tunnels: Vec<u64>,
    /// Webhook alerts delivered, dropped (queue full) and failed (every try failed).
    pub alerts: [u64; 3],
    /// Access-log batches dropped because the log writer fell behind.
    pub access_log_dropped: u64,
    /// TLS handshakes completed with clients.
    pub tls_handshakes: u64,
    /// Failed TLS handshakes by reason (in the order of [`TlsCounters::REASONS`]).
    pub tls_failures: [u64; 8],
    /// When (monotonic, `health::now()`), for ejections and usability.
    pub now: Duration,
}

impl Scrape {
    /// Reads everything now.
    pub fn take(runtime: &Runtime, applier: &Applier, monitor: &Monitor) -> Scrape {
        let counts = applier.counts();
        let applies = ApplyCounts::ORIGINS
            .iter()
            .flat_map(|&origin| {
                ApplyCounts::OUTCOMES.iter().map(move |&outcome| {
                    (
                        origin.as_str(),
                        outcome.as_str(),
                        counts.applies(origin, outcome),
                    )
                })
            })
            .collect();
        let webhook = &monitor.webhook;
        Scrape {
            snapshot: runtime.snapshot(),
            monitor: monitor.state(),
            version: applier.current(),
            applies,
            guard_rollbacks: counts.guard_rollbacks(),
            upstream_connections: runtime.upstream_connections.load(Ordering::Relaxed),
            tunnels: runtime
                .tunnels
                .iter()
                .map(|open| open.load(Ordering::Relaxed))
                .collect(),
            alerts: [
                webhook.delivered.load(Ordering::Relaxed),
                webhook.dropped.load(Ordering::Relaxed),
                webhook.failed.load(Ordering::Relaxed),
            ],
            access_log_dropped: crate::proxy::access::dropped(),
            tls_handshakes: runtime.tls.handshakes.load(Ordering::Relaxed),
            tls_failures: std::array::from_fn(|i| runtime.tls.failures[i].load(Ordering::Relaxed)),
            now: crate::health::now(),
        }
    }

    /// The exposition text, ending with `# EOF`.
    pub fn render(self) -> Result<String, fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// The answer to `GET /metrics`, read now.
pub fn render(
    runtime: &Runtime,
    applier: &Applier,
    monitor: &Monitor,
) -> Result<String, fmt::Error> {
    Scrape::take(runtime, applier, monitor).render()
}

/// Writes one family of gauges (integers for counts and flags, else `f64`).
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in rows {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// Writes one family of counters (`name` without `_total`, which the encoder adds).
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// Writes one gauge without labels.
fn gauge<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// Writes one counter without labels.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A per-backend gauge of the monitor's window: name, help, and how to read it.
type WindowGauge = (&'static str, &'static str, fn(&BackendView) -> f64);

/// The labels of a backend's series.
fn labels<'a>(pool: &'a str, backend: &'a BackendRuntime) -> [(&'static str, &'a str); 2] {
    [("pool", pool), ("backend", backend.address.as_str())]
}

/// 1 for true, 0 for false.
fn flag(on: bool) -> u64 {
    u64::from(on)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.traffic(&mut encoder)?;
        self.health(&mut encoder)?;
        self.window(&mut encoder)?;
        self.config(&mut encoder)?;
        self.tls(&mut encoder)
    }
}

impl Scrape {
    /// Every (pool, backend) of the snapshot, in config order.
    fn backends(&self) -> impl Iterator<Item = (&str, &BackendRuntime)> {
        self.snapshot.pools.iter().flat_map(|pool| {
            pool.backends
                .iter()
                .map(move |b| (pool.name.as_str(), b.as_ref()))
        })
    }

    /// Per-backend counters (cumulative), in-flight requests and connections; per-pool
    /// retries.
    fn traffic(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        counters(
            e,
            "evenkeel_requests",
            "Responses from a backend, by status class (every try counts, retries too).",
            self.backends().flat_map(|(pool, b)| {
                CLASSES.iter().enumerate().map(move |(i, class)| {
                    (
                        [
                            ("pool", pool),
                            ("backend", b.address.as_str()),
                            ("class", class),
                        ],
                        b.stats.responses[i].load(Ordering::Relaxed),
                    )
                })
            }),
        )?;
        counters(
            e,
            "evenkeel_request_failures",
            "Tries that got no response from a backend: connect failure, reset, timeout.",
            self.backends()
                .map(|(pool, b)| (labels(pool, b), b.stats.failures.load(Ordering::Relaxed))),
        )?;
        let mut histogram = e.encode_descriptor(
            "evenkeel_request_duration",
            "Time from sending a try to a backend to its response head.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (pool, b) in self.backends() {
            let buckets = le_buckets(&b.stats.latency.snapshot());
            let count = buckets.iter().map(|(_, c)| c).sum();
            let sum = b.stats.latency.sum_micros() as f64 / 1e6;
            histogram
                .encode_family(&labels(pool, b))?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        gauges(
            e,
            "evenkeel_in_flight_requests",
            "Requests to a backend in flight now (response bodies included).",
            None,
            self.backends()
                .map(|(pool, b)| (labels(pool, b), b.load.in_flight())),
        )?;
        gauge(
            e,
            "evenkeel_upstream_connections",
            "Connections to backends open now, idle or busy, all workers together.",
            self.upstream_connections,
        )?;
        gauges(
            e,
            "evenkeel_tunnels",
            "Upgraded connections (WebSocket tunnels) open now, per listener; listener max_tunnels caps them.",
            None,
            self.snapshot
                .config
                .listeners
                .iter()
                .zip(&self.tunnels)
                .map(|(listener, open)| ([("listener", listener.name.as_str())], *open)),
        )?;
        let pools = || self.snapshot.pools.iter();
        counters(
            e,
            "evenkeel_retries",
            "Tries sent again to another backend after a failed one.",
            pools().map(|p| {
                (
                    [("pool", p.name.as_str())],
                    p.stats.retries.load(Ordering::Relaxed),
                )
            }),
        )?;
        counters(
            e,
            "evenkeel_retry_budget_exhausted",
            "Failed tries that could have been retried but the retry budget said no.",
            pools().map(|p| {
                (
                    [("pool", p.name.as_str())],
                    p.stats.retry_budget_exhausted.load(Ordering::Relaxed),
                )
            }),
        )
    }

    /// Per-backend health now, and ejections so far.
    fn health(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let now = self.now;
        gauges(
            e,
            "evenkeel_backend_healthy",
            "1 if the backend is usable now (healthy or not yet probed, not ejected, not draining), else 0.",
            None,
            self.backends()
                .map(|(pool, b)| (labels(pool, b), flag(b.health.is_usable(now)))),
        )?;
        let states = [Verdict::Unknown, Verdict::Healthy, Verdict::Unhealthy];
        gauges(
            e,
            "evenkeel_backend_health_state",
            "Active-check verdict, one-hot: 1 on the label state it is in (unknown, healthy, unhealthy).",
            None,
            self.backends().flat_map(|(pool, b)| {
                let verdict = b.health.verdict();
                states.iter().map(move |state| {
                    (
                        [
                            ("pool", pool),
                            ("backend", b.address.as_str()),
                            ("state", state.name()),
                        ],
                        flag(*state == verdict),
                    )
                })
            }),
        )?;
        gauges(
            e,
            "evenkeel_backend_ejected",
            "1 while passive checks keep the backend ejected, else 0.",
            None,
            self.backends()
                .map(|(pool, b)| (labels(pool, b), flag(b.health.is_ejected(now)))),
        )?;
        gauges(
            e,
            "evenkeel_backend_draining",
            "1 while the backend is drained through the admin API, else 0.",
            None,
            self.backends()
                .map(|(pool, b)| (labels(pool, b), flag(b.health.is_draining()))),
        )?;
        counters(
            e,
            "evenkeel_backend_ejections",
            "Times passive checks ejected the backend.",
            self.backends()
                .map(|(pool, b)| (labels(pool, b), b.stats.ejections.load(Ordering::Relaxed))),
        )?;
        gauges(
            e,
            "evenkeel_pool_panic",
            "1 while the pool is in panic mode (too few usable backends: spreads over all), else 0.",
            None,
            self.snapshot
                .pools
                .iter()
                .map(|p| ([("pool", p.name.as_str())], flag(p.in_panic()))),
        )?;
        gauges(
            e,
            "evenkeel_pool_failed_over",
            "1 while the pool's traffic goes to its backup pool, else 0.",
            None,
            self.snapshot
                .pools
                .iter()
                .map(|p| ([("pool", p.name.as_str())], flag(p.is_failed_over()))),
        )
    }

    /// What the monitor computed over its last window.
    fn window(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let state = &self.monitor;
        gauge(
            e,
            "evenkeel_monitor_window_seconds",
            "Seconds of traffic the share, load-ratio, skew and error-ratio gauges cover.",
            state.window_seconds,
        )?;
        let backends = || {
            state.pools.iter().flat_map(|p| {
                p.backends.iter().map(move |b| {
                    (
                        [("pool", p.name.as_str()), ("backend", b.address.as_str())],
                        b,
                    )
                })
            })
        };
        let per_backend: [WindowGauge; 4] = [
            (
                "evenkeel_backend_intended_share",
                "Share of its pool's requests the backend should get now (weights, health, draining, slow start).",
                |b| b.intended_share,
            ),
            (
                "evenkeel_backend_observed_share",
                "Share of its pool's tries the backend got over the monitor window.",
                |b| b.observed_share,
            ),
            (
                "evenkeel_backend_capacity_share",
                "The backend's capacity over the capacity of its pool's usable backends.",
                |b| b.capacity_share,
            ),
            (
                "evenkeel_backend_load_ratio",
                "Observed share over capacity share (1 = loaded as its capacity says; 0 without capacity share).",
                |b| b.load_ratio,
            ),
        ];
        for (name, help, value) in per_backend {
            gauges(e, name, help, None, backends().map(|(l, b)| (l, value(b))))?;
        }
        // Only backends that answered in the window: no latency is not zero latency.
        type Quantile = (&'static str, &'static str, fn(&BackendView) -> Option<f64>);
        let quantiles: [Quantile; 2] = [
            (
                "evenkeel_backend_latency_p50",
                "Median time to the response head over the monitor window, per backend.",
                |b| b.p50_ms,
            ),
            (
                "evenkeel_backend_latency_p99",
                "99th percentile time to the response head over the monitor window, per backend (the slow-backend alarm compares it to the other backends').",
                |b| b.p99_ms,
            ),
        ];
        for (name, help, value) in quantiles {
            gauges(
                e,
                name,
                help,
                Some(&Unit::Seconds),
                backends().filter_map(|(l, b)| value(b).map(|ms| (l, ms / 1000.0))),
            )?;
        }
        gauges(
            e,
            "evenkeel_pool_skew",
            "Largest significant |observed - intended| / intended share over the window (0: none significant).",
            None,
            state
                .pools
                .iter()
                .map(|p| ([("pool", p.name.as_str())], p.skew.unwrap_or(0.0))),
        )?;
        gauges(
            e,
            "evenkeel_pool_error",
            "(5xx responses + failed tries) / tries over the window.",
            Some(&Unit::Other("ratio".into())),
            state
                .pools
                .iter()
                .map(|p| ([("pool", p.name.as_str())], p.error_rate)),
        )?;
        gauge(
            e,
            "evenkeel_alarms_active",
            "Alarms in force now.",
            state.alarms.len(),
        )?;
        gauges(
            e,
            "evenkeel_alarm_active",
            "1 for each alarm in force: its key (kind/pool[/backend]) and what it names (kind, pool, backend, listener, certificate; empty where none).",
            None,
            state.alarms.iter().map(|a| (a.subject.labels(), 1u64)),
        )
    }

    /// TLS handshakes with clients, and the served certificates' ends.
    fn tls(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        counter(
            e,
            "evenkeel_tls_handshakes",
            "TLS handshakes with clients completed, all HTTPS listeners together.",
            self.tls_handshakes,
        )?;
        counters(
            e,
            "evenkeel_tls_handshake_failures",
            "TLS handshakes with clients that failed, by reason (timeout, closed, not_tls, protocol_version, no_shared_cipher, no_application_protocol, certificate_rejected, other).",
            TlsCounters::REASONS
                .iter()
                .zip(self.tls_failures)
                .map(|(reason, n)| ([("reason", *reason)], n)),
        )?;
        gauges(
            e,
            "evenkeel_tls_certificate_expiry_timestamp_seconds",
            "When each served certificate expires (its notAfter), in seconds since the Unix epoch.",
            None,
            self.snapshot.config.certificates().map(|(listener, c)| {
                (
                    [
                        ("listener", listener.name.as_str()),
                        ("certificate", c.cert_path.to_str().unwrap_or("")),
                        ("fingerprint", c.fingerprint.as_str()),
                    ],
                    c.not_after,
                )
            }),
        )
    }

    /// Config versions, applies, the guard and alert delivery.
    fn config(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        gauge(
            e,
            "evenkeel_config_version",
            "The config version in force.",
            self.version,
        )?;
        counters(
            e,
            "evenkeel_config_applies",
            "Configs applied or refused since start, by origin (start, sighup, api, rollback) and outcome.",
            self.applies
                .iter()
                .map(|&(origin, outcome, n)| ([("origin", origin), ("outcome", outcome)], n)),
        )?;
        counter(
            e,
            "evenkeel_guard_rollbacks",
            "Config versions the guard rolled back since start.",
            self.guard_rollbacks,
        )?;
        gauge(
            e,
            "evenkeel_guard_watching",
            "1 while the guard watches a change just applied, else 0.",
            flag(self.monitor.watching.is_some()),
        )?;
        // The lines the alarms hold the windows to, so a dashboard draws them from the
        // config in force rather than from a copy that drifts.
        let guard = &self.snapshot.config.guard;
        let thresholds = [
            (
                "evenkeel_guard_max_load_ratio",
                "guard.max_load_ratio in force: the load ratio above which a backend raises the load_ratio alarm.",
                guard.max_load_ratio,
            ),
            (
                "evenkeel_guard_max_error_rate",
                "guard.max_error_rate in force: the pool error ratio above which a pool raises the error_rate alarm.",
                guard.max_error_rate,
            ),
            (
                "evenkeel_guard_max_skew",
                "guard.max_skew in force: the pool skew above which a weight-driven pool raises the skew alarm.",
                guard.max_skew,
            ),
        ];
        for (name, help, value) in thresholds {
            gauge(e, name, help, value)?;
        }
        let [delivered, dropped, failed] = self.alerts;
        counter(
            e,
            "evenkeel_alerts_delivered",
            "Alerts the webhook accepted (2xx).",
            delivered,
        )?;
        counter(
            e,
            "evenkeel_alerts_dropped",
            "Alerts dropped because the delivery queue was full.",
            dropped,
        )?;
        counter(
            e,
            "evenkeel_alerts_failed",
            "Alerts given up after every delivery try failed.",
            failed,
        )?;
        counter(
            e,
            "evenkeel_access_log_dropped",
            "Access-log lines dropped (a batch at a time) because the log writer fell behind; requests never wait for the log.",
            self.access_log_dropped,
        )
    }
}

#[cfg(test)]
mod tests;
