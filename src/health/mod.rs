//! Health: active probes, passive outlier detection, and the state machine that
//! decides which backends are usable.
//!
//! The request path only reads atomics ([`BackendHealth::is_usable`]) and records
//! outcomes ([`BackendHealth::record`]). Everything that takes time runs on one
//! background thread of its own:
//! - one probe task per backend of a pool with `[pool.NAME.health]`, which probes every
//!   `interval` (jittered by up to 10% so probes of many backends do not fire
//!   together; the first probe at a random point of the first interval) and feeds
//!   [`ActiveCounter`];
//! - one refresh task per pool, which sleeps until its next deadline (an ejection
//!   ending, a slow-start step) or until a probe or the request path nudges it, then
//!   rebuilds the pool's balancer over the backends usable now
//!   ([`crate::runtime::PoolRuntime::refresh`]).
//!
//! On reload the tasks restart on the new snapshot; a backend that stays keeps its
//! health. Every state change goes through [`Events`].

pub mod active;
pub mod events;
pub mod state;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

pub use events::{Event, Events};
pub use state::{ActiveCounter, BackendHealth, Ejection, Verdict};

use crate::balance::SharedRng;
use crate::runtime::{PoolRuntime, Runtime};

/// Monotonic time since the process's first call: the `now` that health state uses
/// in a live process (the simulator uses its own virtual time instead).
pub fn now() -> Duration {
    epoch().elapsed() + Duration::from_secs(1)
}

/// [`now`] as of `instant`, a time the caller has read already (the proxy reads the
/// clock once for a request and dates its health records from that reading).
pub fn at(instant: Instant) -> Duration {
    instant.saturating_duration_since(*epoch()) + Duration::from_secs(1)
}

fn epoch() -> &'static Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now)
}

/// Starts the health thread for `runtime`; it stops when `shutdown` turns true.
pub fn start(
    runtime: Arc<Runtime>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("evenkeel-health".into())
        .spawn(move || rt.block_on(supervise(runtime, shutdown)))
}

/// Runs the tasks of the snapshot in force, restarting them when it is replaced.
async fn supervise(runtime: Arc<Runtime>, mut shutdown: watch::Receiver<bool>) {
    let mut generation = runtime.subscribe();
    let rng = Arc::new(SharedRng::new(now().as_nanos() as u64));
    loop {
        generation.borrow_and_update();
        let snapshot = runtime.snapshot();
        let mut tasks = JoinSet::new();
        for pool in &snapshot.pools {
            tasks.spawn(refresh_loop(Arc::clone(pool), Arc::clone(&runtime)));
            if pool.config.health.is_some() {
                for index in 0..pool.backends.len() {
                    tasks.spawn(probe_loop(
                        Arc::clone(pool),
                        index,
                        Arc::clone(&runtime),
                        Arc::clone(&rng),
                    ));
                }
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            changed = generation.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        tasks.abort_all();
    }
}

async fn refresh_loop(pool: Arc<PoolRuntime>, runtime: Arc<Runtime>) {
    loop {
        let next = pool.refresh(now(), &runtime.events);
        let sleep = next.map_or(Duration::from_secs(3600), |at| at.saturating_sub(now()));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = pool.changed.notified() => {}
        }
    }
}

async fn probe_loop(
    pool: Arc<PoolRuntime>,
    index: usize,
    runtime: Arc<Runtime>,
    rng: Arc<SharedRng>,
) {
    let (Some(check), Some(backend)) = (
        pool.config.health.clone(),
        pool.backends.get(index).cloned(),
    ) else {
        return;
    };
    let interval_ns = check.interval.as_nanos() as u64;
    tokio::time::sleep(Duration::from_nanos(rng.below(interval_ns.max(1)))).await;
    let mut counter = ActiveCounter::new(backend.health.verdict());
    loop {
        let result = active::probe(
            &check,
            backend.socket_addr,
            &backend.address,
            backend.tls.as_ref(),
            pool.config.protocol.is_http2(),
        )
        .await;
        let ok = result.is_ok();
        if let Some(verdict) = counter.observe(ok, check.healthy_after, check.unhealthy_after) {
            let first = backend.health.verdict() == Verdict::Unknown;
            backend.health.set_verdict(verdict, now());
            runtime.events.emit(Event::Health {
                pool: pool.name.clone(),
                backend: backend.address.clone(),
                verdict: verdict.name(),
                first,
                cause: result.unwrap_or_else(|e| e),
            });
            pool.changed.notify_one();
        }
        // Jitter: interval × [0.9, 1.1).
        let jitter = interval_ns / 5;
        let next = interval_ns - interval_ns / 10 + rng.below(jitter.max(1));
        tokio::time::sleep(Duration::from_nanos(next)).await;
    }
}
