//! Watching the traffic: windows, alarms, the guard, the journal and the webhook.
//!
//! One thread of its own runs one loop that does two things, never on the request
//! path:
//! - **every second** it samples the proxy's counters ([`window::Sample`]), computes
//!   the last [`ALARM_WINDOW`] of traffic per pool and backend ([`window::view`]:
//!   observed vs intended vs capacity share, load ratio, skew, error rate, latency),
//!   raises and clears alarms ([`alarms`]), and judges a change under watch
//!   ([`guard`]), rolling it back through the one apply path when it breaches;
//! - **for every event** (health, ejection, panic, failover, drain, config, guard,
//!   alarm) it appends to the journal in the store, forwards alarms and guard verdicts
//!   to the webhook ([`webhook`]), counts health changes for flapping, and starts a
//!   watch when a change is applied.
//!
//! What it last computed is published in a [`MonitorState`] for `/status` and
//! `/metrics`.

pub mod alarms;
pub mod guard;
pub mod latency;
pub mod webhook;
pub mod window;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::apply::Applier;
use crate::health::{self, Event};
use crate::runtime::{Runtime, Snapshot};

use self::alarms::{ActiveAlarm, Alarms, FLAP_CHANGES, FLAP_WINDOW};
use self::guard::Watch;
use self::webhook::{Webhook, WebhookStats};
use self::window::{LatencyBase, PoolView, Sample};

/// The window alarms and `/status` look at.
pub const ALARM_WINDOW: Duration = Duration::from_secs(10);
/// How often counters are sampled.
pub const TICK: Duration = Duration::from_secs(1);

/// What the monitor last computed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MonitorState {
    /// Seconds of traffic the pools' figures cover.
    pub window_seconds: f64,
    /// Every pool over the window.
    pub pools: Vec<PoolView>,
    /// Alarms in force.
    pub alarms: Vec<ActiveAlarm>,
    /// The version under the guard's watch, if any.
    pub watching: Option<u64>,
}

/// The monitor's published state and counters.
#[derive(Debug, Default)]
pub struct Monitor {
    state: ArcSwap<MonitorState>,
    /// Webhook delivery counters.
    pub webhook: Arc<WebhookStats>,
}

impl Monitor {
    /// What it last computed.
    pub fn state(&self) -> Arc<MonitorState> {
        self.state.load_full()
    }
}

/// Starts the monitor thread; it stops when `shutdown` turns true.
pub fn start(
    runtime: Arc<Runtime>,
    applier: Arc<Applier>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Arc<Monitor>> {
    let monitor = Arc::new(Monitor::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let events = runtime.events.subscribe();
    let published = Arc::clone(&monitor);
    std::thread::Builder::new()
        .name("evenkeel-monitor".into())
        .spawn(move || rt.block_on(run(runtime, applier, published, events, shutdown)))?;
    Ok(monitor)
}

struct Loop {
    runtime: Arc<Runtime>,
    applier: Arc<Applier>,
    monitor: Arc<Monitor>,
    samples: VecDeque<Sample>,
    alarms: Alarms,
    watch: Option<Watch>,
    health_changes: VecDeque<(Duration, String, String)>,
    webhook: Option<Webhook>,
    webhook_url: Option<String>,
    /// When the config last changed.
    last_change: Duration,
    /// Every backend's latency counts at the last sample.
    latency_base: LatencyBase,
}

async fn run(
    runtime: Arc<Runtime>,
    applier: Arc<Applier>,
    monitor: Arc<Monitor>,
    mut events: broadcast::Receiver<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state = Loop {
        runtime,
        applier,
        monitor,
        samples: VecDeque::new(),
        alarms: Alarms::default(),
        watch: None,
        health_changes: VecDeque::new(),
        webhook: None,
        webhook_url: None,
        last_change: Duration::ZERO,
        latency_base: LatencyBase::default(),
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tick.tick() => state.tick(),
            event = events.recv() => match event {
                Ok(event) => state.event(event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "ALARM: the monitor fell behind the event stream; some events are not in the journal");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

impl Loop {
    fn tick(&mut self) {
        let snapshot = self.runtime.snapshot();
        let now = health::now();
        self.samples.push_back(Sample::take_tracking(
            &snapshot,
            now,
            Some(&mut self.latency_base),
        ));
        // Keep what the guard's before-window and the alarm window need.
        let keep = (snapshot.config.guard.watch * 2).max(ALARM_WINDOW * 6) + TICK * 2;
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_sub(s.at) > keep)
        {
            self.samples.pop_front();
        }
        self.update_webhook(&snapshot.config.alerts.webhook);
        // The window starts at the last config change if that is more recent: alarms
        // judge the config in force, not a mix of two.
        let window_start = now.saturating_sub(ALARM_WINDOW).max(self.last_change);
        let (Some(newest), Some(oldest)) = (self.samples.back(), self.sample_since(window_start))
        else {
            return;
        };
        let window_seconds = newest.at.saturating_sub(oldest.at).as_secs_f64();
        let pools = self.view(oldest, newest, &snapshot, now);
        while self
            .health_changes
            .front()
            .is_some_and(|(at, _, _)| now.saturating_sub(*at) > FLAP_WINDOW)
        {
            self.health_changes.pop_front();
        }
        let flapping = self.flapping();
        let mut holding = alarms::conditions(&pools, &snapshot.config.guard, &flapping);
        let unix_now = crate::config::tls::unix_now();
        holding.extend(alarms::certificate_conditions(&snapshot.config, unix_now));
        holding.extend(alarms::store_conditions(self.applier.fleet().map(|f| &**f)));
        self.alarms.update(holding, now, &self.runtime.events);
        self.judge(now);
        self.monitor.state.store(Arc::new(MonitorState {
            window_seconds,
            pools,
            alarms: self.alarms.active(),
            watching: self.watch.as_ref().map(|w| w.version),
        }));
    }

    /// The window from `older` to `newer` ([`window::view`]) with each backend's
    /// latency over it.
    fn view(
        &self,
        older: &Sample,
        newer: &Sample,
        snapshot: &Snapshot,
        now: Duration,
    ) -> Vec<PoolView> {
        let mut views = window::view(older, newer, snapshot, now);
        let within = self
            .samples
            .iter()
            .filter(|s| s.at > older.at && s.at <= newer.at);
        window::add_backend_latency(&mut views, within);
        views
    }

    /// The oldest sample taken at or after `at`.
    fn sample_since(&self, at: Duration) -> Option<&Sample> {
        self.samples.iter().find(|s| s.at >= at)
    }

    fn flapping(&self) -> Vec<(String, String, usize)> {
        let mut counts: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
        for (_, pool, backend) in &self.health_changes {
            *counts.entry((pool, backend)).or_default() += 1;
        }
        counts
            .into_iter()
            .filter(|(_, n)| *n >= FLAP_CHANGES)
            .map(|((p, b), n)| (p.to_string(), b.to_string(), n))
            .collect()
    }

    fn judge(&mut self, now: Duration) {
        let Some(w) = &self.watch else { return };
        let snapshot = self.runtime.snapshot();
        let guard = snapshot.config.guard;
        let (Some(start), Some(newest)) = (self.sample_since(w.applied_at), self.samples.back())
        else {
            return;
        };
        let after = self.view(start, newest, &snapshot, now);
        if let Some(reason) = guard::judge(&w.before, &after, &guard, w.expect_shift) {
            let (version, previous) = (w.version, w.previous);
            self.watch = None;
            self.alarms.raise_once(
                alarms::Subject::guard(version),
                format!("config version {version} breached the guard and is rolled back to version {previous}: {reason}"),
                now,
                &self.runtime.events,
            );
            self.applier.guard_rollback(version, previous, &reason);
        } else if now >= w.applied_at + guard.watch {
            let version = w.version;
            self.watch = None;
            let total: u64 = after
                .iter()
                .map(|p| p.client_requests.max(p.requests))
                .sum();
            let judged = total >= guard.min_requests;
            let reason = if !judged {
                format!(
                    "too little traffic to judge ({total} requests < min_requests {})",
                    guard.min_requests
                )
            } else {
                "within every threshold".to_string()
            };
            self.runtime.events.emit(Event::Guard {
                version,
                verdict: "passed",
                reason,
                restored: None,
                judged,
            });
        }
    }

    fn event(&mut self, event: Event) {
        if let Err(e) = self
            .applier
            .store()
            .journal(Some(self.applier.current()), &event)
        {
            tracing::error!(error = %e, "ALARM: the journal could not be written");
        }
        match &event {
            Event::Alarm { .. } | Event::Guard { .. } => {
                if let Some(webhook) = &self.webhook {
                    webhook.send(event.clone());
                }
            }
            Event::Health { pool, backend, .. } => {
                self.health_changes
                    .push_back((health::now(), pool.clone(), backend.clone()));
            }
            Event::Config {
                outcome: "applied",
                origin,
                ..
            } if *origin == "rollback" || *origin == "start" => {
                self.last_change = health::now();
            }
            Event::Config {
                version: Some(version),
                previous,
                origin,
                outcome: "applied",
                expect_shift,
                ..
            } if *origin == "sighup" || *origin == "api" => {
                let now = health::now();
                self.last_change = now;
                let snapshot = self.runtime.snapshot();
                let before_start = now.saturating_sub(snapshot.config.guard.watch);
                let before = match (self.sample_since(before_start), self.samples.back()) {
                    (Some(old), Some(new)) => self.view(old, new, &snapshot, now),
                    _ => Vec::new(),
                };
                self.watch = Some(Watch {
                    version: *version,
                    previous: *previous,
                    applied_at: now,
                    expect_shift: *expect_shift,
                    before,
                });
            }
            _ => {}
        }
    }

    fn update_webhook(&mut self, url: &Option<String>) {
        if *url == self.webhook_url {
            return;
        }
        self.webhook_url.clone_from(url);
        self.webhook = url.as_deref().and_then(|url| {
            match Webhook::start(url, Arc::clone(&self.monitor.webhook)) {
                Ok(webhook) => Some(webhook),
                Err(e) => {
                    tracing::error!(error = %e, "ALARM: alerts cannot be sent");
                    None
                }
            }
        });
    }
}
