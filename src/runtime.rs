//! The live configuration the proxy serves from.
//!
//! A [`Snapshot`] is built from a validated [`Config`] and never changes: routing
//! tables per listener, and per pool its backends (with their shared load, health and
//! traffic counters). The [`Runtime`] holds the current snapshot in an `ArcSwap`; a
//! request loads it once and finishes on it, so a reload (a new snapshot stored whole)
//! never shows a request half of an update (DESIGN principle 2).
//!
//! Within a snapshot, a pool's balancer sits behind its own `ArcSwap`:
//! [`PoolRuntime::refresh`] (run by the health thread, never by a request) rebuilds it
//! over the backends usable now, with slow-start weights, and decides panic mode and
//! failover. The request path only loads it and re-checks the picked backend's
//! usability and limits, which covers the moment between an ejection and the next
//! refresh.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

use crate::balance::{self, Algorithm, BackendLoad, BackendState, Balancer, PickContext};
use crate::config::backend_tls;
use crate::config::{Config, HashKey, Pool, Protocol, Timeouts, TlsTarget};
use crate::health::{self, BackendHealth, Event, Events};
use crate::proxy::retry::RetryBudget;

/// How long a failed-over pool must keep a usable backend before traffic returns to
/// it from its backup (hysteresis against flapping).
pub const FAILBACK_AFTER: Duration = Duration::from_secs(5);
/// Weights are multiplied by this while a backend ramps up under slow start, so a
/// weight of 1 can still ramp in small steps.
const RAMP_SCALE: u32 = 100;
/// How often a pool is refreshed while a backend ramps up.
const RAMP_STEP: Duration = Duration::from_millis(250);

/// The current snapshot, swapped whole on reload, and the event stream.
#[derive(Debug)]
pub struct Runtime {
    current: ArcSwap<Snapshot>,
    generation: watch::Sender<u64>,
    /// Every health and traffic event goes through here.
    pub events: Events,
    /// Connections to backends open now, every worker's together (idle in a pool or
    /// carrying a request): one more when a connection is made, one less when it
    /// closes. Read by `/metrics`.
    pub upstream_connections: Arc<AtomicU64>,
    /// TLS handshakes with clients, every worker's together.
    pub tls: TlsCounters,
    /// Upgraded connections (tunnels) open now on each listener (config order;
    /// listeners never change while running), every worker's together.
    pub tunnels: Box<[AtomicU64]>,
}

/// TLS handshakes with clients since the process started (for `/metrics`).
#[derive(Debug, Default)]
pub struct TlsCounters {
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Handshakes that failed, by reason (in the order of [`TlsCounters::REASONS`]).
    pub failures: [AtomicU64; 8],
}

impl TlsCounters {
    /// Why a handshake failed, as the `reason` label says it.
    pub const REASONS: [&'static str; 8] = [
        // The client took longer than `header_timeout`.
        "timeout",
        // The client closed or reset the connection inside the handshake.
        "closed",
        // The client spoke something other than TLS (plain HTTP to an HTTPS port).
        "not_tls",
        // No protocol version both sides speak (a TLS 1.0/1.1-only client).
        "protocol_version",
        // No cipher suite, group or signature scheme in common.
        "no_shared_cipher",
        // The client offered ALPN protocols and none is h2 or http/1.1.
        "no_application_protocol",
        // The client refused evenkeel's certificate (an alert such as unknown_ca,
        // bad_certificate, certificate_expired).
        "certificate_rejected",
        // Anything else.
        "other",
    ];

    /// Counts a failed handshake.
    pub fn failed(&self, reason: &str) {
        let index = Self::REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(Self::REASONS.len() - 1);
        self.failures[index].fetch_add(1, Ordering::Relaxed);
    }
}

impl Runtime {
    /// A runtime serving `config`.
    pub fn new(config: Config) -> Arc<Runtime> {
        let events = Events::default();
        let tunnels = config.listeners.iter().map(|_| AtomicU64::new(0)).collect();
        let snapshot = Snapshot::build(config, None, &events, health::now());
        Arc::new(Runtime {
            tunnels,
            current: ArcSwap::from_pointee(snapshot),
            generation: watch::channel(0).0,
            events,
            upstream_connections: Arc::default(),
            tls: TlsCounters::default(),
        })
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A receiver told of every replaced snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Puts `config` in force. Requests in flight finish on the snapshot they started
    /// with; backends that stay (same pool, same address) keep their load, health and
    /// counters; backends added to an existing pool ramp up under its slow start.
    /// Listeners are bound at start, so a config whose listeners differ is refused and
    /// nothing changes.
    pub fn replace(&self, config: Config) -> Result<(), ReplaceError> {
        self.can_replace(&config)?;
        let current = self.snapshot();
        let next = Snapshot::build(config, Some(&current), &self.events, health::now());
        self.current.store(Arc::new(next));
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Whether `config` can be put in force live (its listeners are the ones bound).
    pub fn can_replace(&self, config: &Config) -> Result<(), ReplaceError> {
        let current = self.snapshot();
        let listeners = |c: &Config| {
            c.listeners
                .iter()
                .map(|l| {
                    (
                        l.name.clone(),
                        l.listen,
                        l.header_timeout,
                        l.max_connections,
                        l.mode,
                    )
                })
                .collect::<Vec<_>>()
        };
        if listeners(&current.config) != listeners(config) {
            return Err(ReplaceError::ListenersChanged);
        }
        Ok(())
    }
}

/// Why a config could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// Listeners were added, removed or changed; they are bound once, at start.
    #[error("listeners changed: listeners are bound at start, so restart evenkeel to change them")]
    ListenersChanged,
}

/// Everything a request needs to be routed and balanced, immutable.
#[derive(Debug)]
pub struct Snapshot {
    /// The config it was built from.
    pub config: Arc<Config>,
    /// Pools, in config order.
    pub pools: Vec<Arc<PoolRuntime>>,
    /// Routing table per listener, in config order of listeners.
    routers: Vec<Router>,
}

impl Snapshot {
    fn build(
        config: Config,
        previous: Option<&Snapshot>,
        events: &Events,
        now: Duration,
    ) -> Snapshot {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let pools: Vec<Arc<PoolRuntime>> = config
            .pools
            .iter()
            .map(|pool| {
                let before =
                    previous.and_then(|p| p.pools.iter().find(|old| old.name == pool.name));
                let backup = pool
                    .backup
                    .as_ref()
                    .and_then(|b| config.pools.iter().position(|p| &p.name == b));
                Arc::new(PoolRuntime::new(
                    pool,
                    backup,
                    seed,
                    before.map(|p| p.as_ref()),
                    now,
                ))
            })
            .collect();
        for pool in &pools {
            pool.refresh(now, events);
        }
        let routers = config
            .listeners
            .iter()
            .map(|listener| Router {
                routes: config
                    .routes
                    .iter()
                    .filter(|r| r.listener == listener.name)
                    .filter_map(|r| {
                        let pool = config.pools.iter().position(|p| p.name == r.pool)?;
                        Some(RouteEntry {
                            host: r.host.clone(),
                            prefix: r.path_prefix.clone(),
                            pool,
                            label: format!("{}{}", r.host.as_deref().unwrap_or(""), r.path_prefix)
                                .into(),
                        })
                    })
                    .collect(),
            })
            .collect();
        Snapshot {
            config: Arc::new(config),
            pools,
            routers,
        }
    }

    /// The pool serving a request to `host` (without port) and `path` on listener
    /// number `listener`: routes for that exact host first, then routes for any host;
    /// among them the longest path prefix matching on a `/` boundary.
    pub fn route(
        &self,
        listener: usize,
        host: Option<&str>,
        path: &str,
    ) -> Option<&Arc<PoolRuntime>> {
        self.route_with_label(listener, host, path)
            .map(|(pool, _)| pool)
    }

    /// [`Snapshot::route`], with the route's label for the access log: `HOST/PREFIX`,
    /// or `/PREFIX` for a route of any host.
    pub fn route_with_label(
        &self,
        listener: usize,
        host: Option<&str>,
        path: &str,
    ) -> Option<(&Arc<PoolRuntime>, &Arc<str>)> {
        let router = self.routers.get(listener)?;
        let best = |want_host: bool| {
            router
                .routes
                .iter()
                .filter(|r| match (&r.host, host) {
                    (Some(h), Some(req)) if want_host => h.eq_ignore_ascii_case(req),
                    (None, _) => !want_host,
                    _ => false,
                })
                .filter(|r| prefix_matches(&r.prefix, path))
                // Longest prefix; among equals the first defined (min_by_key keeps the
                // first of equal elements).
                .min_by_key(|r| std::cmp::Reverse(r.prefix.len()))
        };
        let entry = best(true).or_else(|| best(false))?;
        Some((self.pools.get(entry.pool)?, &entry.label))
    }

    /// The pool that serves traffic meant for `pool`: the pool itself, or — while it
    /// has failed over — its backup (or the backup's backup), never looping.
    pub fn serving<'a>(&'a self, mut pool: &'a Arc<PoolRuntime>) -> &'a Arc<PoolRuntime> {
        for _ in 0..self.pools.len() {
            match pool
                .backup
                .filter(|_| pool.is_failed_over())
                .and_then(|b| self.pools.get(b))
            {
                Some(backup) => pool = backup,
                None => break,
            }
        }
        pool
    }
}

/// Whether `prefix` matches `path` on a `/` boundary: `/api` matches `/api` and
/// `/api/x` but not `/apis`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
}

#[derive(Debug)]
struct Router {
    routes: Vec<RouteEntry>,
}

#[derive(Debug)]
struct RouteEntry {
    host: Option<String>,
    prefix: String,
    pool: usize,
    /// `HOST/PREFIX` (see [`Snapshot::route_with_label`]).
    label: Arc<str>,
}

/// Why a pool could not give a backend to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBackend {
    /// No backend is usable (or every usable one was tried already).
    Unusable,
    /// Every usable backend is at `limits.max_connections`.
    Full,
}

/// One pool at run time.
#[derive(Debug)]
pub struct PoolRuntime {
    /// Its name.
    pub name: String,
    /// Where requests find their key (consistent hashing).
    pub hash_key: Option<HashKey>,
    /// Its timeouts.
    pub timeouts: Timeouts,
    /// Its backends, in config order.
    pub backends: Vec<Arc<BackendRuntime>>,
    /// The config of the pool.
    pub config: Pool,
    /// The client config of its `tls` (shared by its backends' [`TlsTarget`]s); `None`:
    /// plain TCP.
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    /// Position of the backup pool in the snapshot.
    pub backup: Option<usize>,
    /// Retries may not exceed `retries.budget_percent` of requests.
    pub budget: RetryBudget,
    /// What its clients got, and its retries (kept across reloads while the pool
    /// keeps its name).
    pub stats: Arc<PoolStats>,
    /// Nudged when a backend's usability may have changed (ejection, probe, drain):
    /// the health thread refreshes the pool.
    pub changed: Notify,
    /// Requests waiting for a backend under its connection limit, and their wake-up.
    pub waiting: AtomicU32,
    /// Woken when a request of this pool ends while others wait.
    pub slot_freed: Notify,
    picker: ArcSwap<Picker>,
    failed_over: AtomicBool,
    refresh_state: Mutex<RefreshState>,
    seed: u64,
}

#[derive(Debug)]
struct Picker {
    balancer: Box<dyn Balancer>,
    candidates: usize,
    panic: bool,
}

#[derive(Debug, Default)]
struct RefreshState {
    /// (index, effective weight) of the candidates the balancer was built over.
    signature: Option<(Vec<(usize, u32)>, bool)>,
    /// Since when a failed-over pool has had a usable backend.
    recovered_since: Option<Duration>,
}

impl PoolRuntime {
    fn new(
        pool: &Pool,
        backup: Option<usize>,
        seed: u64,
        previous: Option<&PoolRuntime>,
        now: Duration,
    ) -> PoolRuntime {
        // One client config per pool, kept while the pool's `tls` stays as it was (so
        // sessions resume across reloads), made anew when it changes.
        let same_tls = previous.filter(|p| match (&p.config.tls, &pool.tls) {
            (Some(before), Some(now)) => {
                before.same_settings(now) && p.config.protocol == pool.protocol
            }
            (None, None) => true,
            _ => false,
        });
        let tls_client = pool.tls.as_ref().map(|tls| {
            same_tls
                .and_then(|p| p.tls_client.clone())
                .unwrap_or_else(|| backend_tls::client_config(tls, pool.protocol == Protocol::H2))
        });
        let backends: Vec<Arc<BackendRuntime>> = pool
            .backends
            .iter()
            .enumerate()
            .map(|(index, b)| {
                let before =
                    previous.and_then(|p| p.backends.iter().find(|old| old.address == b.address));
                // A backend whose TLS stays as it was keeps its target: its idle pooled
                // connections stay usable (the upstream pools key by it).
                let tls = match (&tls_client, &b.tls_name) {
                    (Some(client), Some(server_name)) => Some(
                        before
                            .filter(|_| same_tls.is_some())
                            .and_then(|old| old.tls.clone())
                            .filter(|old| old.server_name == *server_name)
                            .unwrap_or_else(|| {
                                Arc::new(TlsTarget {
                                    client: Arc::clone(client),
                                    server_name: server_name.clone(),
                                })
                            }),
                    ),
                    _ => None,
                };
                // A backend added to a running pool ramps up; one present from the start does not.
                let health = match (before, previous) {
                    (Some(old), _) => Arc::clone(&old.health),
                    (None, Some(_)) => Arc::new(BackendHealth::added(now)),
                    (None, None) => Arc::default(),
                };
                Arc::new(BackendRuntime {
                    index,
                    address: b.address.clone(),
                    socket_addr: b.socket_addr,
                    weight: b.weight,
                    capacity: b.capacity,
                    identity: balance::key_hash(b.address.as_bytes()),
                    load: before.map_or_else(Default::default, |old| Arc::clone(&old.load)),
                    stats: before.map_or_else(Default::default, |old| Arc::clone(&old.stats)),
                    health,
                    tls,
                })
            })
            .collect();
        let seed = seed ^ balance::key_hash(pool.name.as_bytes());
        PoolRuntime {
            name: pool.name.clone(),
            hash_key: pool.hash_key.clone(),
            timeouts: pool.timeouts,
            picker: ArcSwap::from_pointee(Picker {
                balancer: balance::build(pool.algorithm, Vec::new(), seed),
                candidates: 0,
                panic: false,
            }),
            backends,
            config: pool.clone(),
            tls_client,
            backup,
            budget: RetryBudget::default(),
            stats: previous.map_or_else(Default::default, |p| Arc::clone(&p.stats)),
            changed: Notify::new(),
            waiting: AtomicU32::new(0),
            slot_freed: Notify::new(),
            failed_over: AtomicBool::new(previous.is_some_and(|p| p.is_failed_over())),
            refresh_state: Mutex::new(RefreshState::default()),
            seed,
        }
    }

    /// Each backend's state as the balancer should see it at `now`: usability from
    /// health, weights scaled by slow start.
    pub fn states(&self, now: Duration) -> Vec<BackendState> {
        self.balancing(now).1
    }

    /// The algorithm the pool balances with at `now`, and each backend's state.
    ///
    /// Round robin ignores weights, so slow start could not slow anything down with
    /// it: while a backend ramps up, a round-robin pool balances with smooth weighted
    /// round robin over equal weights (a weight above zero counts as 1) scaled by the
    /// ramp — which is plain round robin again once every ramp has ended.
    fn balancing(&self, now: Duration) -> (Algorithm, Vec<BackendState>) {
        let slow_start = self.config.slow_start;
        let ramps: Vec<f64> = self
            .backends
            .iter()
            .map(|b| b.health.ramp(slow_start, now))
            .collect();
        let ramping = ramps.iter().any(|r| *r < 1.0);
        let scale = if ramping { RAMP_SCALE } else { 1 };
        let algorithm = match self.config.algorithm {
            Algorithm::RoundRobin if ramping => Algorithm::WeightedRoundRobin,
            algorithm => algorithm,
        };
        let equal_weights = !self.config.algorithm.uses_weights();
        let states = self
            .backends
            .iter()
            .zip(ramps)
            .enumerate()
            .map(|(index, (b, ramp))| BackendState {
                index,
                weight: match b.weight {
                    0 => 0,
                    _ if equal_weights => ((f64::from(scale) * ramp).round() as u32).max(1),
                    w => ((f64::from(w * scale) * ramp).round() as u32).max(1),
                },
                usable: b.health.is_usable(now),
                identity: b.identity,
                load: Arc::clone(&b.load),
            })
            .collect();
        (algorithm, states)
    }

    /// Each backend's intended share of the pool's requests at `now`.
    pub fn intended_shares(&self, now: Duration) -> Vec<f64> {
        let (algorithm, states) = self.balancing(now);
        balance::intended_shares(algorithm, &states, self.config.panic_threshold)
    }

    /// Brings the pool up to date at `now`: notices ejections that ended, rebuilds the
    /// balancer when the usable set or the effective weights changed, decides panic
    /// mode and failover. Returns when it next needs to run (an ejection ending, a
    /// slow-start step, a fail-back), if ever. Runs off the request path.
    pub fn refresh(&self, now: Duration, events: &Events) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        let mut soonest = |at: Duration| next = Some(next.map_or(at, |n: Duration| n.min(at)));
        for b in &self.backends {
            match b.health.ejected_until() {
                Some(until) if until <= now => {
                    b.health.ejection_ended(until);
                    events.emit(Event::Returned {
                        pool: self.name.clone(),
                        backend: b.address.clone(),
                    });
                }
                Some(until) => soonest(until),
                None => {}
            }
        }
        let (algorithm, states) = self.balancing(now);
        if self
            .backends
            .iter()
            .any(|b| b.health.is_usable(now) && b.health.ramp(self.config.slow_start, now) < 1.0)
        {
            soonest(now + RAMP_STEP);
        }
        let selection = balance::select_candidates(&states, self.config.panic_threshold);
        let total = states.iter().filter(|s| s.weight > 0).count();
        let usable = states.iter().filter(|s| s.weight > 0 && s.usable).count();
        let signature = (
            selection
                .candidates
                .iter()
                .map(|c| (c.index, c.weight))
                .collect::<Vec<_>>(),
            selection.panic,
        );
        let mut state = self.refresh_state.lock().unwrap_or_else(|e| e.into_inner());
        if state.signature.as_ref() != Some(&signature) {
            let was_panic = state.signature.as_ref().is_some_and(|(_, panic)| *panic);
            if was_panic != selection.panic {
                events.emit(Event::Panic {
                    pool: self.name.clone(),
                    panic: selection.panic,
                    usable,
                    total,
                });
            }
            self.picker.store(Arc::new(Picker {
                candidates: selection.candidates.len(),
                balancer: balance::build(algorithm, selection.candidates, self.seed),
                panic: selection.panic,
            }));
            state.signature = Some(signature);
        }
        if let Some(backup) = &self.config.backup {
            let failed_over = self.is_failed_over();
            if usable == 0 {
                state.recovered_since = None;
                if !failed_over {
                    self.failed_over.store(true, Ordering::Relaxed);
                    events.emit(Event::Failover {
                        pool: self.name.clone(),
                        backup: backup.clone(),
                        active: true,
                    });
                }
            } else if failed_over {
                let since = *state.recovered_since.get_or_insert(now);
                if now >= since + FAILBACK_AFTER {
                    self.failed_over.store(false, Ordering::Relaxed);
                    state.recovered_since = None;
                    events.emit(Event::Failover {
                        pool: self.name.clone(),
                        backup: backup.clone(),
                        active: false,
                    });
                } else {
                    soonest(since + FAILBACK_AFTER);
                }
            }
        }
        next
    }

    /// Picks a backend for a request whose key hashes to `key`, other than those in
    /// `tried`, usable at `now` (unless in panic mode) and under its connection limit.
    pub fn pick(
        &self,
        key: Option<u64>,
        tried: &[usize],
        now: Duration,
    ) -> Result<&Arc<BackendRuntime>, NoBackend> {
        let picker = self.picker.load();
        let mut full = false;
        // A few draws: a balancer rebuilt a moment ago may still offer a backend that
        // was just ejected, tried, or is full; then look at every candidate once.
        for attempt in 0..(picker.candidates + 2).min(8) as u64 {
            let key = key.map(|k| if attempt == 0 { k } else { rehash(k, attempt) });
            let Some(index) = picker.balancer.pick(&PickContext { key }) else {
                break;
            };
            if tried.contains(&index) {
                continue;
            }
            let Some(backend) = self.backends.get(index) else {
                continue;
            };
            if !picker.panic && !backend.health.is_usable(now) {
                self.changed.notify_one();
                continue;
            }
            if backend.load.in_flight() >= self.config.in_flight_limit() {
                full = true;
                continue;
            }
            return Ok(backend);
        }
        Err(if full {
            NoBackend::Full
        } else {
            NoBackend::Unusable
        })
    }

    /// Whether the pool is in panic mode.
    pub fn in_panic(&self) -> bool {
        self.picker.load().panic
    }

    /// Whether traffic for this pool goes to its backup.
    pub fn is_failed_over(&self) -> bool {
        self.failed_over.load(Ordering::Relaxed)
    }

    /// Records the outcome of a request to backend `backend` (`ok`: a response below
    /// 500) for passive health, ejecting it when it crosses the failure threshold and
    /// the pool stays within `max_ejected_percent`.
    pub fn record(&self, backend: &BackendRuntime, ok: bool, now: Duration, events: &Events) {
        let outlier = &self.config.outlier;
        let may_eject = || {
            let ejected = self
                .backends
                .iter()
                .filter(|b| b.health.is_ejected(now))
                .count();
            (ejected + 1) * 100 <= usize::from(outlier.max_ejected_percent) * self.backends.len()
        };
        if let Some(ejection) = backend.health.record(ok, now, outlier, may_eject) {
            backend.stats.ejections.fetch_add(1, Ordering::Relaxed);
            events.emit(Event::Ejected {
                pool: self.name.clone(),
                backend: backend.address.clone(),
                count: ejection.count,
                seconds: ejection.duration.as_secs_f64(),
            });
            self.changed.notify_one();
        }
    }
}

/// A different, well-mixed key for a re-pick.
fn rehash(key: u64, attempt: u64) -> u64 {
    let mut x = key ^ attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^ (x >> 33)
}

/// One backend at run time.
#[derive(Debug)]
pub struct BackendRuntime {
    /// Its position in its pool's backend list (what the balancer picks).
    pub index: usize,
    /// Address as written in the config: its identity.
    pub address: String,
    /// Resolved address.
    pub socket_addr: SocketAddr,
    /// Configured weight.
    pub weight: u32,
    /// Configured capacity.
    pub capacity: f64,
    /// Hash of the address, for consistent hashing.
    pub identity: u64,
    /// Requests in flight, shared by all workers.
    pub load: Arc<BackendLoad>,
    /// Traffic counters (kept across reloads).
    pub stats: Arc<BackendStats>,
    /// Health (kept across reloads).
    pub health: Arc<BackendHealth>,
    /// How it is reached over TLS; `None`: plain TCP. Kept across reloads that change
    /// neither the pool's `tls` nor the backend's server name.
    pub tls: Option<Arc<TlsTarget>>,
}

/// What a pool's clients got: every request routed to it counts once, whatever the
/// tries behind it, and so does every answer of 500 or more (from a backend, or
/// evenkeel's own 502/503/504). This is the error rate users see.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Client requests routed to the pool.
    pub requests: AtomicU64,
    /// Of those, answered with a status of 500 or more.
    pub errors: AtomicU64,
    /// Tries sent again to another backend after a failed one.
    pub retries: AtomicU64,
    /// Failed tries that could have been retried but the retry budget
    /// (`retries.budget_percent`) said no.
    pub retry_budget_exhausted: AtomicU64,
}

impl PoolStats {
    /// Counts one client request answered with `status`.
    pub fn record(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Monotonic traffic counters of one backend, updated on the request path with
/// relaxed atomic adds and read off it.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests sent to it (every try counts).
    pub requests: AtomicU64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub responses: [AtomicU64; 5],
    /// Requests that got no response: connect failures, resets, timeouts.
    pub failures: AtomicU64,
    /// Time from sending a try to its response head.
    pub latency: crate::monitor::latency::LatencyHistogram,
    /// Times passive checks ejected it.
    pub ejections: AtomicU64,
    /// Bytes carried both ways by a TCP pool's connections to it, once they ended.
    pub bytes: AtomicU64,
}

impl BackendStats {
    /// Counts a response with `status`.
    pub fn record_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_slash_boundaries() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/users"));
        assert!(!prefix_matches("/api", "/apis"));
        assert!(prefix_matches("/api/", "/api/users"));
        assert!(!prefix_matches("/api/", "/api"));
    }

    fn snapshot(routes: &str) -> Snapshot {
        let text = format!(
            "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n{routes}\n\
             [pool.a]\nbackends = [{{ address = \"127.0.0.1:1\" }}]\n\
             [pool.b]\nbackends = [{{ address = \"127.0.0.1:2\" }}]\n\
             [pool.c]\nbackends = [{{ address = \"127.0.0.1:3\" }}]\n"
        );
        let checked = crate::config::check_source(crate::config::Source {
            path: "t.toml".into(),
            text,
        });
        Snapshot::build(
            checked.config.expect("valid"),
            None,
            &Events::default(),
            crate::health::now(),
        )
    }

    /// A reload that only moves a pool's `tls` in the file (a comment above it) keeps
    /// its client config — its TLS sessions, and so its idle connections' key; one
    /// that changes it makes a new one.
    #[test]
    fn a_reload_that_only_moves_text_keeps_a_pools_tls_client() {
        let config = |prefix: &str, verify: bool| {
            let text = format!(
                "{prefix}[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                 [[route]]\npool = \"a\"\n\
                 [pool.a]\ntls = {{ sni = \"a.internal\", verify = {verify} }}\n\
                 backends = [{{ address = \"127.0.0.1:1\" }}]\n"
            );
            let checked = crate::config::check_source(crate::config::Source {
                path: "t.toml".into(),
                text,
            });
            checked.config.expect("valid")
        };
        let runtime = Runtime::new(config("", false));
        let client = |r: &Runtime| r.snapshot().pools[0].tls_client.clone().expect("tls");
        let first = client(&runtime);
        runtime
            .replace(config("# moved down by a comment\n", false))
            .expect("reload");
        assert!(
            Arc::ptr_eq(&first, &client(&runtime)),
            "same settings, same client"
        );
        runtime.replace(config("", true)).expect("reload");
        assert!(!Arc::ptr_eq(&first, &client(&runtime)), "verify changed");
    }

    #[test]
    fn routing_prefers_the_exact_host_then_the_longest_prefix() {
        let s = snapshot(
            "[[route]]\npool = \"a\"\n\
             [[route]]\npath_prefix = \"/api\"\npool = \"b\"\n\
             [[route]]\nhost = \"shop.example\"\npool = \"c\"\n",
        );
        let pool = |host, path| s.route(0, host, path).map(|p| p.name.as_str());
        assert_eq!(pool(None, "/"), Some("a"));
        assert_eq!(pool(None, "/api/v1"), Some("b"));
        assert_eq!(pool(None, "/apis"), Some("a"));
        assert_eq!(pool(Some("SHOP.example"), "/api/v1"), Some("c"));
        assert_eq!(pool(Some("other.example"), "/api"), Some("b"));
    }

    /// Regression: round robin ignores weights, so slow start did nothing under it (the
    /// default algorithm): a recovered backend got its full share at once.
    #[test]
    fn slow_start_ramps_a_recovered_backend_under_round_robin_too() {
        let checked = crate::config::check_source(crate::config::Source {
            path: "t.toml".into(),
            text: "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                   [[route]]\npool = \"web\"\n\
                   [pool.web]\nslow_start = \"10s\"\nbackends = [{ address = \"127.0.0.1:1\" }, \
                   { address = \"127.0.0.1:2\" }, { address = \"127.0.0.1:3\", weight = 5 }]\n"
                .into(),
        });
        let runtime = Runtime::new(checked.config.expect("valid"));
        let snapshot = runtime.snapshot();
        let pool = &snapshot.pools[0];
        let share_of_third = |now: Duration| {
            let picks = (0..3000)
                .filter(|_| pool.pick(None, &[], now).expect("a backend").address == "127.0.0.1:3")
                .count();
            picks as f64 / 3000.0
        };
        let t = crate::health::now();
        let third = &pool.backends[2].health;
        third.set_verdict(crate::health::Verdict::Unhealthy, t);
        pool.refresh(t, &runtime.events);
        assert_eq!(share_of_third(t), 0.0);
        third.set_verdict(crate::health::Verdict::Healthy, t);
        let early = t + Duration::from_secs(1);
        pool.refresh(early, &runtime.events);
        // A tenth of the way: 10 / (100 + 100 + 10); round robin ignores weight = 5.
        let expected = 10.0 / 210.0;
        assert!((share_of_third(early) - expected).abs() < 0.01);
        assert!((pool.intended_shares(early)[2] - expected).abs() < 1e-9);
        let done = t + Duration::from_secs(10);
        pool.refresh(done, &runtime.events);
        assert_eq!(share_of_third(done), 1.0 / 3.0);
        assert_eq!(pool.intended_shares(done)[2], 1.0 / 3.0);
    }

    /// The lint `shadowed-route` tells the operator which of two identical routes wins
    /// (the first, as DESIGN says: a later duplicate can never match); this holds
    /// routing to it.
    #[test]
    fn of_two_identical_routes_the_first_one_wins() {
        let s = snapshot(
            "[[route]]\npath_prefix = \"/api\"\npool = \"a\"\n\
             [[route]]\npath_prefix = \"/api\"\npool = \"b\"\n",
        );
        assert_eq!(
            s.route(0, None, "/api/x").map(|p| p.name.as_str()),
            Some("a")
        );
    }

    #[test]
    fn no_matching_route_gives_no_pool() {
        let s = snapshot("[[route]]\npath_prefix = \"/api\"\npool = \"a\"\n");
        assert!(s.route(0, None, "/web").is_none());
        assert!(s.route(1, None, "/api").is_none());
    }
}
