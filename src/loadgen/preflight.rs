//! `preflight`: load-test a config before it ships, against stand-in backends.
//!
//! The config is taken as the value `check` validated and changed in three ways only:
//! every backend points at a [stand-in](super::standin) on 127.0.0.1 (answering after a
//! latency inversely proportional to its `capacity`, so a backend declared twice as big
//! answers twice as fast; in HTTP/2 when its pool speaks HTTP/2, and without the pool's
//! `tls`), every listener binds 127.0.0.1 port 0, and there is no admin listener. Then the real proxy and the real health checks run it, in-process:
//!
//! 1. **load**: the same number of requests through every route (with a varying hash
//!    key for consistent-hash pools), counting what each stand-in received;
//! 2. **failure**: in each pool, the stand-in with the largest intended share is
//!    stopped, and the route is driven again.
//!
//! Then each pool is judged against the thresholds (`[guard]` by default): skew and
//! load ratio under load, the error rate under load and with one backend down. A pool
//! that keeps sending traffic to its dead backend, or that has nothing left when one
//! backend fails, fails the preflight with a message naming it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use serde::Serialize;

use super::report::Report as LoadReport;
use super::spec::{LoadSpec, Pacing, RequestKey, Stop, Target};
use super::standin::StandIn;
use crate::balance::Algorithm;
use crate::config::{Config, HashKey, Protocol};
use crate::health;
use crate::monitor::window::{self, BackendView, Sample};
use crate::proxy::{self, Options as ProxyOptions};
use crate::runtime::Runtime;

/// How to run a preflight.
#[derive(Clone, Debug)]
pub struct Options {
    /// Requests per route in each phase.
    pub requests: u64,
    /// Client connections.
    pub connections: usize,
    /// Latency of a stand-in of capacity 1 (others: this / capacity).
    pub latency: Duration,
    /// Latency per backend address, overriding the above.
    pub latency_of: HashMap<String, Duration>,
    /// Largest acceptable skew.
    pub max_skew: f64,
    /// Largest acceptable load ratio.
    pub max_load_ratio: f64,
    /// Largest acceptable error rate, under load and with a backend down.
    pub max_error_rate: f64,
    /// Percent of synthetic requests without the hash key (consistent-hash pools).
    pub key_missing: u8,
}

/// A pool with one backend down.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverResult {
    /// The backend stopped.
    pub failed_backend: String,
    /// Client requests sent.
    pub requests: u64,
    /// Of those, answered 500 or more or not at all.
    pub errors: u64,
    /// errors / requests.
    pub error_rate: f64,
    /// Tries evenkeel still sent to the stopped backend.
    pub tries_to_failed_backend: u64,
}

/// Where a consistent-hash pool's synthetic requests carried their key.
#[derive(Clone, Debug, Serialize)]
pub struct KeyResult {
    /// The pool's `hash_key`.
    pub hash_key: String,
    /// Percent of synthetic requests that carried it.
    pub carried_percent: f64,
}

/// One pool's results.
#[derive(Clone, Debug, Serialize)]
pub struct PoolResult {
    /// Its name.
    pub name: String,
    /// Its algorithm.
    pub algorithm: String,
    /// Client requests sent through its routes.
    pub requests: u64,
    /// Of those, answered 500 or more or not at all.
    pub errors: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Skew (weight-driven algorithms; None when nothing is significant).
    pub skew: Option<f64>,
    /// Its backends.
    pub backends: Vec<BackendView>,
    /// The hash key's share, for consistent-hash pools.
    pub key: Option<KeyResult>,
    /// With one backend down.
    pub failover: Option<FailoverResult>,
}

/// Everything a preflight found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Per pool driven through a route.
    pub pools: Vec<PoolResult>,
    /// What failed, one sentence each, naming the pool or backend.
    pub failures: Vec<String>,
    /// Pools no route sends traffic to (not driven).
    pub not_driven: Vec<String>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs the preflight of `config` (validated). Blocks until done.
pub fn run(mut config: Config, options: &Options) -> std::io::Result<Report> {
    // Stand-ins, one per backend entry, in pool order.
    let mut standins: Vec<Vec<Option<StandIn>>> = Vec::new();
    for pool in &mut config.pools {
        // Stand-ins speak plain HTTP (HTTP/2 in clear text for an HTTP/2 pool): what
        // is measured is the balance, not the TLS.
        if pool.tls.take().is_some() {
            for backend in &mut pool.backends {
                backend.tls_name = None;
            }
            if pool.protocol == Protocol::H2 {
                pool.protocol = Protocol::H2c;
            }
        }
        let http2 = pool.protocol.is_http2();
        let mut list = Vec::new();
        for backend in &mut pool.backends {
            let latency = options
                .latency_of
                .get(&backend.address)
                .copied()
                .unwrap_or_else(|| options.latency.div_f64(backend.capacity.max(0.01)));
            let standin = StandIn::start(&backend.address, latency, http2)?;
            backend.socket_addr = standin.addr;
            list.push(Some(standin));
        }
        standins.push(list);
    }
    for listener in &mut config.listeners {
        listener.listen = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
    }
    config.admin = None;
    let runtime = Runtime::new(config.clone());
    let running = proxy::start(
        Arc::clone(&runtime),
        ProxyOptions {
            workers: 2,
            access_log: false,
        },
    )
    .map_err(std::io::Error::other)?;
    let (stop_health, stopped) = tokio::sync::watch::channel(false);
    health::start(Arc::clone(&runtime), stopped)?;

    let mut report = Report {
        pools: Vec::new(),
        failures: Vec::new(),
        not_driven: Vec::new(),
    };
    for (index, pool) in config.pools.iter().enumerate() {
        let routes: Vec<_> = config
            .routes
            .iter()
            .filter(|r| r.pool == pool.name)
            .collect();
        if routes.is_empty() {
            report.not_driven.push(pool.name.clone());
            continue;
        }
        let targets: Vec<LoadSpec> = routes
            .iter()
            .filter_map(|route| {
                let listen = running
                    .listeners
                    .iter()
                    .find(|(name, _)| *name == route.listener)?
                    .1;
                spec(
                    listen,
                    route.host.as_deref(),
                    &route.path_prefix,
                    pool.hash_key.as_ref(),
                    options,
                )
            })
            .collect();
        let snapshot = runtime.snapshot();
        let live = &snapshot.pools[index];
        // Shares, capacity shares, load ratios and skew exactly as the live monitor
        // defines them: a window of the proxy's own counters around the load.
        let before = Sample::take(&snapshot, health::now());
        let load = drive(&targets)?;
        let now = health::now();
        let view = window::view(&before, &Sample::take(&snapshot, now), &snapshot, now);
        let Some(window) = view.into_iter().nth(index) else {
            continue;
        };
        let skew = window.skew.filter(|_| window.weight_driven);
        let intended: Vec<f64> = window.backends.iter().map(|b| b.intended_share).collect();
        let backends = window.backends;
        let errors = load.failed_or_5xx();
        let key = match (&pool.hash_key, pool.algorithm) {
            (Some(k @ (HashKey::Header(_) | HashKey::Cookie(_))), Algorithm::ConsistentHash) => {
                Some(KeyResult {
                    hash_key: k.to_string(),
                    carried_percent: 100.0 - f64::from(options.key_missing),
                })
            }
            (Some(k), Algorithm::ConsistentHash) => Some(KeyResult {
                hash_key: k.to_string(),
                carried_percent: 100.0,
            }),
            _ => None,
        };
        let mut result = PoolResult {
            name: pool.name.clone(),
            algorithm: pool.algorithm.name().to_string(),
            requests: load.requests,
            errors,
            p50_ms: load.latency_ms.p50,
            p99_ms: load.latency_ms.p99,
            skew,
            backends,
            key,
            failover: None,
        };
        judge_load(&result, options, &mut report.failures);

        // Failure: stop the backend with the largest intended share, drive again.
        if let Some(victim) = (0..pool.backends.len())
            .max_by(|a, b| intended[*a].total_cmp(&intended[*b]).then(b.cmp(a)))
        {
            let failed = pool.backends[victim].address.clone();
            standins[index][victim] = None;
            let live_backend = &live.backends[victim];
            let tries_before = live_backend.stats.requests.load(Ordering::Relaxed);
            let load = drive(&targets)?;
            let tries = live_backend.stats.requests.load(Ordering::Relaxed) - tries_before;
            let errors = load.failed_or_5xx();
            let failover = FailoverResult {
                failed_backend: failed,
                requests: load.requests,
                errors,
                error_rate: if load.requests == 0 {
                    0.0
                } else {
                    errors as f64 / load.requests as f64
                },
                tries_to_failed_backend: tries,
            };
            judge_failover(
                &result.name,
                pool.backends.len(),
                pool.backup.as_deref(),
                &failover,
                options,
                &mut report.failures,
            );
            result.failover = Some(failover);
        }
        report.pools.push(result);
    }
    running.shutdown();
    running.wait();
    stop_health.send_replace(true);
    Ok(report)
}

fn spec(
    listen: std::net::SocketAddr,
    host: Option<&str>,
    path: &str,
    hash_key: Option<&HashKey>,
    options: &Options,
) -> Option<LoadSpec> {
    let host = HeaderValue::from_str(host.unwrap_or("preflight.local")).ok()?;
    let path: Uri = path.parse().ok()?;
    let key = match hash_key {
        Some(HashKey::Header(name)) => Some((HeaderName::from_bytes(name.as_bytes()).ok()?, false)),
        Some(HashKey::Cookie(name)) => Some((HeaderName::from_bytes(name.as_bytes()).ok()?, true)),
        _ => None,
    };
    Some(LoadSpec {
        target: Target {
            url: format!("http://{listen}{path}"),
            addr: listen,
            host,
            path,
        },
        method: Method::GET,
        headers: Vec::new(),
        body: bytes::Bytes::new(),
        pacing: Pacing::Closed {
            connections: options.connections,
        },
        stop: Stop::Count(options.requests),
        http2: false,
        timeout: Duration::from_secs(10),
        group_by: None,
        key: key.map(|(name, cookie)| RequestKey {
            name,
            cookie,
            distinct: 1000,
            missing_percent: options.key_missing,
        }),
    })
}

/// Drives every route of a pool in turn; the reports merged.
fn drive(targets: &[LoadSpec]) -> std::io::Result<LoadReport> {
    let mut merged: Option<LoadReport> = None;
    for spec in targets {
        let report = super::run_blocking(spec, false)?;
        merged = Some(match merged {
            None => report,
            Some(mut m) => {
                m.requests += report.requests;
                for (k, v) in report.statuses {
                    *m.statuses.entry(k).or_default() += v;
                }
                for (k, v) in report.errors {
                    *m.errors.entry(k).or_default() += v;
                }
                m.latency_ms.p50 = m.latency_ms.p50.max(report.latency_ms.p50);
                m.latency_ms.p99 = m.latency_ms.p99.max(report.latency_ms.p99);
                m
            }
        });
    }
    merged.ok_or_else(|| std::io::Error::other("no route to drive"))
}

fn judge_load(pool: &PoolResult, options: &Options, failures: &mut Vec<String>) {
    let name = &pool.name;
    if let Some(skew) = pool.skew.filter(|s| *s > options.max_skew) {
        let worst = pool
            .backends
            .iter()
            .filter(|b| b.intended_share > 0.0)
            .max_by(|a, b| {
                let d = |x: &BackendView| {
                    (x.observed_share - x.intended_share).abs() / x.intended_share
                };
                d(a).total_cmp(&d(b))
            });
        let detail = worst.map_or(String::new(), |b| {
            format!(
                ": backend {} got {:.1}%, intended {:.1}%",
                b.address,
                b.observed_share * 100.0,
                b.intended_share * 100.0
            )
        });
        failures.push(format!(
            "pool {name:?} is skewed: {skew:.2} > {}{detail}",
            options.max_skew
        ));
    }
    for b in pool
        .backends
        .iter()
        .filter(|b| b.load_ratio > options.max_load_ratio)
    {
        failures.push(format!(
            "backend {} of pool {name:?} is overloaded: it got {:.1}% of requests for {:.1}% of the capacity (load ratio {:.2} > {})",
            b.address,
            b.observed_share * 100.0,
            b.capacity_share * 100.0,
            b.load_ratio,
            options.max_load_ratio
        ));
    }
    let rate = if pool.requests == 0 {
        0.0
    } else {
        pool.errors as f64 / pool.requests as f64
    };
    if rate > options.max_error_rate {
        failures.push(format!(
            "pool {name:?} failed {:.1}% of requests under load (threshold {:.1}%)",
            rate * 100.0,
            options.max_error_rate * 100.0
        ));
    }
}

fn judge_failover(
    name: &str,
    backends: usize,
    backup: Option<&str>,
    failover: &FailoverResult,
    options: &Options,
    failures: &mut Vec<String>,
) {
    if failover.error_rate <= options.max_error_rate {
        return;
    }
    let rate = failover.error_rate * 100.0;
    let down = &failover.failed_backend;
    let message = if backends == 1 && backup.is_none() {
        format!("pool {name:?} has a single backend and no backup pool: with {down} down, {rate:.1}% of requests failed — nothing is left to serve")
    } else if failover.tries_to_failed_backend > 0 {
        format!(
            "pool {name:?} kept sending traffic to its failed backend {down} ({} tries) and {rate:.1}% of requests failed (threshold {:.1}%): add [pool.{name}.health], keep passive checks on, or allow retries",
            failover.tries_to_failed_backend,
            options.max_error_rate * 100.0
        )
    } else {
        format!(
            "pool {name:?}: with {down} down, {rate:.1}% of requests failed (threshold {:.1}%)",
            options.max_error_rate * 100.0
        )
    };
    failures.push(message);
}
