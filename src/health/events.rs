//! Health and traffic events: one place every decision about a backend or pool goes
//! through (DESIGN principle 3). Each event is logged here; the monitor, the journal
//! and the admin API subscribe to the same stream as they arrive.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

/// Something that changed a backend's or a pool's state.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Active checks found a backend healthy or unhealthy.
    Health {
        /// Pool name.
        pool: String,
        /// Backend address.
        backend: String,
        /// `healthy` or `unhealthy`.
        verdict: &'static str,
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
            Event::Health { pool, backend, verdict, cause } => {
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
            Event::Failover { pool, backup, active: true } => {
                write!(f, "pool {pool:?} has no usable backend: failing over to pool {backup:?}")
            }
            Event::Failover { pool, backup, active: false } => {
                write!(f, "pool {pool:?} recovered: traffic returns from pool {backup:?}")
            }
        }
    }
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
            | Event::Failover { active: false, .. } => {
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
