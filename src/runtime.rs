//! The live configuration the proxy serves from.
//!
//! A [`Snapshot`] is built from a validated [`Config`] and never changes: routing
//! tables per listener, and per pool its backends (with their shared load and traffic
//! counters) and its balancer. The [`Runtime`] holds the current snapshot in an
//! `ArcSwap`; a request loads it once and finishes on it, so a reload (a new snapshot
//! stored whole) never shows a request half of an update (DESIGN principle 2).
//!
//! A pool's balancer sits behind its own `ArcSwap` so that health changes can rebuild
//! it over the new set of usable backends without building a new snapshot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::balance::{self, BackendLoad, BackendState, Balancer, PickContext};
use crate::config::{Config, HashKey, Pool, Timeouts};

/// The current snapshot, swapped whole on reload.
#[derive(Debug)]
pub struct Runtime {
    current: ArcSwap<Snapshot>,
}

impl Runtime {
    /// A runtime serving `config`.
    pub fn new(config: Config) -> Arc<Runtime> {
        Arc::new(Runtime {
            current: ArcSwap::from_pointee(Snapshot::build(config, None)),
        })
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts `config` in force. Requests in flight finish on the snapshot they started
    /// with; backends that stay (same pool, same address) keep their load and
    /// counters. Listeners are bound at start, so a config whose listeners differ is
    /// refused and nothing changes.
    pub fn replace(&self, config: Config) -> Result<(), ReplaceError> {
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
                    )
                })
                .collect::<Vec<_>>()
        };
        if listeners(&current.config) != listeners(&config) {
            return Err(ReplaceError::ListenersChanged);
        }
        self.current
            .store(Arc::new(Snapshot::build(config, Some(&current))));
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
    fn build(config: Config, previous: Option<&Snapshot>) -> Snapshot {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let pools: Vec<Arc<PoolRuntime>> = config
            .pools
            .iter()
            .map(|pool| {
                let before =
                    previous.and_then(|p| p.pools.iter().find(|old| old.name == pool.name));
                Arc::new(PoolRuntime::new(pool, seed, before.map(|p| p.as_ref())))
            })
            .collect();
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
                .max_by_key(|r| r.prefix.len())
        };
        let entry = best(true).or_else(|| best(false))?;
        self.pools.get(entry.pool)
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
    picker: ArcSwap<Picker>,
    seed: u64,
}

#[derive(Debug)]
struct Picker {
    balancer: Box<dyn Balancer>,
    panic: bool,
}

impl PoolRuntime {
    fn new(pool: &Pool, seed: u64, previous: Option<&PoolRuntime>) -> PoolRuntime {
        let backends: Vec<Arc<BackendRuntime>> = pool
            .backends
            .iter()
            .map(|b| {
                let before =
                    previous.and_then(|p| p.backends.iter().find(|old| old.address == b.address));
                Arc::new(BackendRuntime {
                    address: b.address.clone(),
                    socket_addr: b.socket_addr,
                    weight: b.weight,
                    capacity: b.capacity,
                    identity: balance::key_hash(b.address.as_bytes()),
                    load: before.map_or_else(Default::default, |old| Arc::clone(&old.load)),
                    stats: before.map_or_else(Default::default, |old| Arc::clone(&old.stats)),
                })
            })
            .collect();
        let seed = seed ^ balance::key_hash(pool.name.as_bytes());
        let runtime = PoolRuntime {
            name: pool.name.clone(),
            hash_key: pool.hash_key.clone(),
            timeouts: pool.timeouts,
            picker: ArcSwap::from_pointee(Picker {
                balancer: balance::build(pool.algorithm, Vec::new(), seed),
                panic: false,
            }),
            backends,
            config: pool.clone(),
            seed,
        };
        runtime.rebuild();
        runtime
    }

    /// Rebuilds the balancer over the backends usable now (panic mode decided here).
    pub fn rebuild(&self) {
        let selection = balance::select_candidates(&self.states(), self.config.panic_threshold);
        self.picker.store(Arc::new(Picker {
            balancer: balance::build(self.config.algorithm, selection.candidates, self.seed),
            panic: selection.panic,
        }));
    }

    /// Each backend's state as the balancer sees it now.
    pub fn states(&self) -> Vec<BackendState> {
        self.backends
            .iter()
            .enumerate()
            .map(|(index, b)| BackendState {
                index,
                weight: b.weight,
                usable: true,
                identity: b.identity,
                load: Arc::clone(&b.load),
            })
            .collect()
    }

    /// Each backend's intended share of the pool's requests now.
    pub fn intended_shares(&self) -> Vec<f64> {
        balance::intended_shares(
            self.config.algorithm,
            &self.states(),
            self.config.panic_threshold,
        )
    }

    /// Picks a backend for a request whose key hashes to `key`.
    pub fn pick(&self, key: Option<u64>) -> Option<&Arc<BackendRuntime>> {
        let index = self.picker.load().balancer.pick(&PickContext { key })?;
        self.backends.get(index)
    }

    /// Whether the pool is in panic mode.
    pub fn in_panic(&self) -> bool {
        self.picker.load().panic
    }
}

/// One backend at run time.
#[derive(Debug)]
pub struct BackendRuntime {
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
}

/// Monotonic traffic counters of one backend, updated on the request path with
/// relaxed atomic adds and read off it.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests sent to it.
    pub requests: AtomicU64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub responses: [AtomicU64; 5],
    /// Requests that got no response: connect failures, resets, timeouts.
    pub failures: AtomicU64,
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
        Snapshot::build(checked.config.expect("valid"), None)
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

    #[test]
    fn no_matching_route_gives_no_pool() {
        let s = snapshot("[[route]]\npath_prefix = \"/api\"\npool = \"a\"\n");
        assert!(s.route(0, None, "/web").is_none());
        assert!(s.route(1, None, "/api").is_none());
    }
}
