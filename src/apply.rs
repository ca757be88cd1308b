//! Applying a config: the one path every change takes — the file at start, SIGHUP,
//! `POST /config` (and `evenkeel apply`), and rollbacks (DESIGN "Applying").
//!
//! ```text
//!  text ──check (load, validate, lint)──► refused? ──► history: refused, with findings
//!                                           │ no
//!                                           ▼
//!                    Runtime::replace (new snapshot, one atomic swap)
//!                                           │
//!                                           ▼
//!                               history: applied, version N
//! ```
//!
//! Errors refuse a config; so do warnings when the caller asks (`--deny-warnings`) or
//! the config itself does (`guard.deny_warnings`). A refused config changes nothing,
//! and the refusal is recorded too. Applies are serialised: two at once (a SIGHUP
//! during a `POST /config`) run one after the other.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{self, diagnostic, Config, Finding, Severity, Source};
use crate::health::Event;
use crate::runtime::Runtime;
use crate::store::{
    self, CertificateRecord, NewVersion, Origin, Outcome, Store, StoreError, Version,
};

/// What an apply did.
#[derive(Debug)]
pub enum Applied {
    /// The config is in force as `version`; `warnings` were found and allowed.
    Applied {
        /// The new version.
        version: Version,
        /// Lint warnings it was applied with.
        warnings: Vec<Finding>,
        /// The checked text, for rendering the warnings.
        source: Arc<Source>,
    },
    /// The text is the one in force already: nothing to do, no new version.
    Unchanged {
        /// The version in force.
        version: u64,
    },
    /// The config was refused and nothing changed.
    Refused {
        /// The refused version as recorded (None when the history could not be written).
        version: Option<Version>,
        /// Why: its findings, or `reason` for a config that is valid but cannot be applied live.
        findings: Vec<Finding>,
        /// The checked text, for rendering the findings.
        source: Arc<Source>,
        /// A reason beyond the findings (listeners changed).
        reason: Option<String>,
    },
    /// A fleet's version in force moved since this node checked the config against
    /// it: another apply won the race. Nothing changed.
    Conflict {
        /// The fleet's version in force now.
        in_force: u64,
        /// The version this node had in force.
        seen: u64,
    },
    /// The fleet's store could not record it (etcd unreachable or failing): nothing
    /// changed, and the config was not judged wanting.
    StoreUnavailable {
        /// What failed.
        reason: String,
    },
    /// Staged in a fleet: the canaries serve it first; it becomes the fleet's version
    /// only if every canary's guard holds.
    Staged {
        /// The staged version.
        version: Version,
        /// Its rollout.
        rollout: crate::fleet::rollout::Rollout,
    },
}

/// Why a rollback could not even be attempted.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// No version with that number.
    #[error("there is no version {0}")]
    NoSuchVersion(u64),
    /// The version named was refused; only applied versions can be rolled back to.
    #[error("version {0} was refused when it was submitted; roll back to an applied version")]
    NotApplied(u64),
    /// Nothing to go back to.
    #[error("there is no earlier applied version with a different config to roll back to")]
    NothingToRollBackTo,
    /// The history could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies configs to a runtime and keeps their history.
pub struct Applier {
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    config_path: PathBuf,
    /// The version in force; the lock also serialises applies.
    current: Mutex<u64>,
    /// The same number, for readers that must not wait for an apply.
    in_force: AtomicU64,
    /// In a fleet: the version kept in `state_dir` (0: none yet).
    kept: AtomicU64,
    /// Applies and refusals so far, and the guard's rollbacks.
    counts: ApplyCounts,
    /// In a fleet: this node's own `[admin]`, `[store]` and `state_dir`, which replace
    /// those of every version's text (see [`config::check_fleet_source`]).
    local: Option<config::NodeLocal>,
    /// In a fleet: this node's view of it.
    fleet: std::sync::OnceLock<Arc<crate::fleet::Fleet>>,
    /// In a fleet: the SHA-256 of the node's file as last read (at start, at SIGHUP).
    file_read: Mutex<Option<String>>,
}

/// How many configs were applied and refused, by origin, and how many the guard rolled
/// back, since the process started (for `/metrics`). An apply that finds the config in
/// force already changes nothing and is not counted.
#[derive(Debug, Default)]
pub struct ApplyCounts {
    /// By origin (in the order of [`ApplyCounts::ORIGINS`]), then outcome (applied,
    /// refused).
    applies: [[AtomicU64; 2]; 4],
    guard_rollbacks: AtomicU64,
}

impl ApplyCounts {
    /// Every origin.
    pub const ORIGINS: [Origin; 4] = [Origin::Start, Origin::Sighup, Origin::Api, Origin::Rollback];
    /// Every outcome.
    pub const OUTCOMES: [Outcome; 2] = [Outcome::Applied, Outcome::Refused];

    fn counter(&self, origin: Origin, outcome: Outcome) -> &AtomicU64 {
        let row = match origin {
            Origin::Start => 0,
            Origin::Sighup => 1,
            Origin::Api => 2,
            Origin::Rollback => 3,
        };
        let column = match outcome {
            Outcome::Applied => 0,
            Outcome::Refused => 1,
        };
        &self.applies[row][column]
    }

    fn count(&self, origin: Origin, outcome: Outcome) {
        self.counter(origin, outcome)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Configs from `origin` that ended in `outcome`.
    pub fn applies(&self, origin: Origin, outcome: Outcome) -> u64 {
        self.counter(origin, outcome).load(Ordering::Relaxed)
    }

    /// Versions the guard rolled back (the rollback itself also counts as an apply
    /// from `rollback`).
    pub fn guard_rollbacks(&self) -> u64 {
        self.guard_rollbacks.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("config_path", &self.config_path)
            .finish()
    }
}

impl Applier {
    /// An applier for `runtime`, whose config (read from `config_path`) is recorded
    /// in `store` as the version in force.
    pub fn start(
        runtime: Arc<Runtime>,
        store: Arc<dyn Store>,
        config_path: PathBuf,
    ) -> Result<Applier, StoreError> {
        let version = record_start(&runtime, &*store, None)?;
        Ok(Applier::new(runtime, store, config_path, None, version.id))
    }

    /// An applier for a node of a fleet: `runtime` serves fleet version `version`
    /// (0: the node's own file, not yet a fleet version — the store was unreachable or
    /// empty; [`Applier::seed`] makes it one). Nothing is recorded here.
    pub fn join_fleet(
        runtime: Arc<Runtime>,
        store: Arc<dyn Store>,
        config_path: PathBuf,
        local: config::NodeLocal,
        version: u64,
    ) -> Applier {
        Applier::new(runtime, store, config_path, Some(local), version)
    }

    /// An applier with `version` in force (counted as the start's apply).
    fn new(
        runtime: Arc<Runtime>,
        store: Arc<dyn Store>,
        config_path: PathBuf,
        local: Option<config::NodeLocal>,
        version: u64,
    ) -> Applier {
        let counts = ApplyCounts::default();
        counts.count(Origin::Start, Outcome::Applied);
        Applier {
            runtime,
            store,
            config_path,
            current: Mutex::new(version),
            in_force: AtomicU64::new(version),
            kept: AtomicU64::new(0),
            counts,
            local,
            fleet: Default::default(),
            file_read: Mutex::new(None),
        }
    }

    /// Records the config in force as the fleet's first version, when the fleet has
    /// none yet (the first node to start against an empty prefix). `Ok(None)`: another
    /// node seeded first (or this node serves a fleet version already).
    pub fn seed(&self) -> Result<Option<u64>, StoreError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if *current != 0 {
            return Ok(None);
        }
        let recorded = record_start(&self.runtime, &*self.store, Some(0));
        match recorded {
            Ok(version) => {
                *current = version.id;
                self.in_force.store(version.id, Ordering::Relaxed);
                self.cache(&version);
                tracing::info!(
                    version = version.id,
                    "the fleet had no version: seeded it from this node's file"
                );
                Ok(Some(version.id))
            }
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Puts fleet version `version` in force on this node (another node applied it,
    /// or this node starts or catches up). Checked like any apply, with this node's
    /// own sections; the reason when this node cannot load it (it keeps what it
    /// serves). Nothing is recorded in the fleet's history: the version is there.
    pub fn adopt(&self, version: &Version, how: Adoption) -> Result<(), String> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if *current == version.id {
            return Ok(());
        }
        // Decided under the lock: a canary its guard sent back (while this adoption
        // was on its way) does not take the version again.
        if how == Adoption::Canary
            && self.fleet().and_then(|f| f.returned_from()) == Some(version.id)
        {
            return Ok(());
        }
        let previous = *current;
        let mut checked = self.check(
            version.text.clone(),
            PathBuf::from(format!("fleet version {}", version.id)),
        );
        let running = Arc::clone(&self.runtime.snapshot().config);
        checked.tolerate_expired(
            &running
                .certificates()
                .map(|(l, c)| config::served_key(&l.name, &c.fingerprint))
                .collect(),
        );
        let config = match checked.config.clone() {
            Some(config) if !checked.is_rejected(false) => config,
            _ => {
                let findings = checked
                    .findings
                    .iter()
                    .filter(|f| f.severity == Severity::Error || checked.config.is_some())
                    .cloned()
                    .collect::<Vec<_>>();
                let detail = diagnostic::render_text(&checked.source, &findings);
                let reason = detail
                    .lines()
                    .next()
                    .unwrap_or("the config has errors")
                    .to_string();
                return Err(reason);
            }
        };
        if let Err(e) = self.runtime.can_replace(&config) {
            return Err(e.to_string());
        }
        self.swap(config);
        *current = version.id;
        self.in_force.store(version.id, Ordering::Relaxed);
        // A canary's version is not the fleet's: a restart serves the fleet's.
        if how != Adoption::Canary {
            self.cache(version);
        }
        // Every node's monitor sees the change as the node that applied it did: the
        // guard watches applies (not rollbacks), with the same expect_shift; a canary
        // going back to the version in force is a rollback, and is not watched.
        let (origin, restores, detail) = match how {
            Adoption::Return => (
                Origin::Rollback,
                Some(version.id),
                "the canary rollout ended: back to the fleet's version in force".to_string(),
            ),
            Adoption::Canary => (
                version.origin,
                version.restores,
                format!(
                    "as a canary (written by node {})",
                    version.node.as_deref().unwrap_or("?")
                ),
            ),
            Adoption::InForce => (
                version.origin,
                version.restores,
                format!(
                    "from the fleet (written by node {})",
                    version.node.as_deref().unwrap_or("?")
                ),
            ),
        };
        self.runtime.events.emit(Event::Config {
            version: Some(version.id),
            previous,
            origin: origin.as_str(),
            outcome: Outcome::Applied.as_str(),
            restores,
            expect_shift: version.expect_shift,
            detail,
        });
        tracing::info!(
            version = version.id,
            previous,
            ?how,
            "fleet version put in force"
        );
        Ok(())
    }

    /// Ends the fleet's rollout in progress, if there is one (an operator's rollback to
    /// the version in force), and journals it.
    fn abort_rollout(&self) {
        use crate::fleet::rollout;
        let Some(fleet) = self.fleet() else { return };
        if !fleet
            .rollout()
            .is_some_and(|r| r.state == rollout::State::Canary)
        {
            return;
        }
        let store = Arc::clone(fleet.store());
        let reason = "ended by a rollback to the version in force";
        let ended = fleet
            .store()
            .block(async move { rollout::abort(&store, reason).await });
        match ended {
            Ok(Some(ended)) => self.runtime.events.emit(Event::Rollout {
                version: ended.version,
                verdict: "rolled_back",
                canaries: ended.canaries,
                reason: reason.to_string(),
            }),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot end the rollout in progress"),
        }
    }

    /// Records `new` as a rollout to `size` canaries (this node first, then others by
    /// id), ending `watch` plus a margin from now at the latest.
    fn stage(
        &self,
        size: crate::fleet::rollout::CanarySize,
        watch: std::time::Duration,
        new: NewVersion<'_>,
    ) -> Result<(Version, crate::fleet::rollout::Rollout), StoreError> {
        use crate::fleet::rollout;
        let Some(fleet) = self.fleet() else {
            return Err(StoreError::NotAFleet);
        };
        let store = Arc::clone(fleet.store());
        let live = {
            let store = Arc::clone(&store);
            fleet
                .store()
                .block(async move { rollout::live_nodes(&store).await })?
        };
        let count = size.count(live.len()).map_err(StoreError::Canary)?;
        let canaries = rollout::pick_canaries(store.node(), &live, count);
        let stage = crate::store::etcd::Stage {
            canaries,
            seconds: watch.as_secs() + rollout::MARGIN_SECONDS,
            by: store.node().to_string(),
        };
        store.stage(new, stage)
    }

    /// The guard's breach on a canary: this node goes back to the fleet's version in
    /// force at once (from the store, or the copy kept in `state_dir` when etcd is
    /// away); the verdict goes to the rollout, which rolls back every canary and marks
    /// the version rejected (`crate::fleet::sync`).
    fn canary_rollback(&self, rollout: &crate::fleet::rollout::Rollout, reason: &str) {
        let previous = rollout.previous;
        let kept = || {
            self.local
                .as_ref()
                .and_then(|l| crate::fleet::cache::read(&l.state_dir))
                .filter(|v| v.id == previous)
        };
        let restore = self.store.version(previous).ok().flatten().or_else(kept);
        let restored = match restore.map(|v| self.adopt(&v, Adoption::Return)) {
            Some(Ok(())) => Some(previous),
            Some(Err(why)) => {
                tracing::error!(
                    version = rollout.version,
                    previous,
                    "ALARM: the canary could not go back: {why}"
                );
                None
            }
            None => {
                tracing::error!(
                    version = rollout.version,
                    previous,
                    "ALARM: the canary could not go back: version {previous} cannot be read"
                );
                None
            }
        };
        self.guard_verdict(rollout.version, reason, restored);
    }

    /// Says the guard's rollback of `version`: done (`restored`: the version now in
    /// force) or failed.
    fn guard_verdict(&self, version: u64, reason: &str, restored: Option<u64>) {
        if restored.is_some() {
            self.counts.guard_rollbacks.fetch_add(1, Ordering::Relaxed);
        }
        self.runtime.events.emit(Event::Guard {
            version,
            verdict: if restored.is_some() {
                "rolled_back"
            } else {
                "rollback_failed"
            },
            reason: reason.to_string(),
            restored,
            judged: true,
        });
    }

    /// Journals that fleet version `version` could not be put in force here (this node
    /// serves `previous`), for `reason`.
    pub fn report_refusal(&self, version: &Version, previous: u64, reason: &str) {
        self.runtime.events.emit(Event::Config {
            version: Some(version.id),
            previous,
            origin: version.origin.as_str(),
            outcome: Outcome::Refused.as_str(),
            restores: version.restores,
            expect_shift: version.expect_shift,
            detail: format!("this node cannot put the fleet's version in force: {reason}"),
        });
    }

    /// Checks `text` as this node would load it (a fleet node with its own sections).
    /// Checks `text` as an apply would (in a fleet, with this node's local sections).
    pub(crate) fn check(&self, text: String, label: PathBuf) -> config::Checked {
        let base_dir = config::folder_of(&self.config_path);
        let source = Source { path: label, text };
        match &self.local {
            Some(local) => config::check_fleet_source(source, &base_dir, local),
            None => config::check_source_in(source, &base_dir),
        }
    }

    /// In a fleet: keeps `version` in `state_dir` as the one to serve if this node
    /// restarts while the store is unreachable (fail static).
    fn cache(&self, version: &Version) {
        if let Some(local) = &self.local {
            // Tried once per version, written or not (a state_dir that cannot be
            // written is said once, not at every reconcile).
            self.kept.store(version.id, Ordering::Relaxed);
            match crate::fleet::cache::write(&local.state_dir, version) {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot keep the fleet version in state_dir; a restart while etcd is unreachable would serve the file")
                }
            }
        }
    }

    /// The fleet version this node keeps in `state_dir` for a restart without etcd
    /// (0: none yet).
    pub fn kept(&self) -> u64 {
        self.kept.load(Ordering::Relaxed)
    }

    /// Keeps `version` in `state_dir` as the one to serve after a restart without etcd
    /// (a canary's version, once promoted: it took it before it was the fleet's).
    pub fn keep(&self, version: &Version) {
        self.cache(version);
    }

    /// Whether this node is part of a fleet.
    pub fn in_fleet(&self) -> bool {
        self.local.is_some()
    }

    /// Whether the node's file, read again as `text`, differs from when this node last
    /// read it (and remembers it). Always true for one instance: there, a reload of
    /// the file is the way to apply it.
    pub fn file_changed(&self, text: &str) -> bool {
        if !self.in_fleet() {
            return true;
        }
        let sha = store::sha256(text);
        let mut read = self.file_read.lock().unwrap_or_else(|e| e.into_inner());
        read.replace(sha.clone()).as_deref() != Some(sha.as_str())
    }

    /// Sets this node's view of its fleet (once, at start).
    pub fn set_fleet(&self, fleet: Arc<crate::fleet::Fleet>) {
        let _ = self.fleet.set(fleet);
    }

    /// This node's view of its fleet, when it is part of one.
    pub fn fleet(&self) -> Option<&Arc<crate::fleet::Fleet>> {
        self.fleet.get()
    }

    /// Applies, refusals and guard rollbacks so far.
    pub fn counts(&self) -> &ApplyCounts {
        &self.counts
    }

    /// The version in force.
    pub fn current(&self) -> u64 {
        // Not the lock: an apply holds it while the fleet store answers, and readers
        // (the fleet thread's heartbeat among them) must never wait for that.
        self.in_force.load(Ordering::Relaxed)
    }

    /// Every version, oldest first.
    pub fn history(&self) -> Result<Vec<Version>, StoreError> {
        self.store.versions()
    }

    /// The runtime it applies to.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The config file this instance was started with.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// The history and journal.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Checks `text` and, if it passes, puts it in force. `label` names it in findings
    /// (the file path, or `POST /config`).
    pub fn apply(
        &self,
        text: String,
        label: PathBuf,
        origin: Origin,
        options: ApplyOptions,
    ) -> Applied {
        self.apply_restoring(text, label, origin, options, None, None)
    }

    /// `from`: apply only while that version is in force (the guard's rollback of it:
    /// the fleet may have moved on while it judged, and a late rollback must not undo
    /// a newer version); a conflict otherwise.
    fn apply_restoring(
        &self,
        text: String,
        label: PathBuf,
        origin: Origin,
        options: ApplyOptions,
        restores: Option<u64>,
        from: Option<u64>,
    ) -> Applied {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let previous = *current;
        if let Some(from) = from.filter(|from| *from != previous) {
            return Applied::Conflict {
                in_force: previous,
                seen: from,
            };
        }
        let mut checked = self.check(text, label);
        // The identity covers the certificate files too: the same text over renewed
        // certificates is a new version.
        let sha = checked
            .config
            .as_ref()
            .map_or_else(|| store::sha256(&checked.source.text), Config::identity);
        let running = Arc::clone(&self.runtime.snapshot().config);
        if running.identity() == sha {
            // A straggler (it refused the fleet's newer version) serves this text, but
            // the fleet does not: say so rather than "unchanged".
            if let Some(refusal) = self.fleet().and_then(|f| f.refusal()) {
                return Applied::Conflict {
                    in_force: refusal.version,
                    seen: *current,
                };
            }
            // A rollback to the version in force while canaries try another: the
            // operator calls the rollout off.
            if origin == Origin::Rollback {
                self.abort_rollout();
            }
            return Applied::Unchanged { version: *current };
        }
        // A certificate that expired while in force keeps serving (with an alarm) when
        // a reload does not replace it: a reload must not turn it into an outage.
        checked.tolerate_expired(
            &running
                .certificates()
                .map(|(l, c)| config::served_key(&l.name, &c.fingerprint))
                .collect(),
        );
        let certificates = checked
            .config
            .as_ref()
            .map(CertificateRecord::of)
            .unwrap_or_default();
        let deny_warnings = options.deny_warnings;
        let emit = |version: Option<u64>, outcome: Outcome, detail: &str| {
            self.counts.count(origin, outcome);
            self.runtime.events.emit(Event::Config {
                version,
                previous,
                origin: origin.as_str(),
                outcome: outcome.as_str(),
                restores,
                expect_shift: options.expect_shift,
                detail: detail.lines().next().unwrap_or("").to_string(),
            });
        };
        let write = |outcome, detail: &str| {
            self.store.record(NewVersion {
                origin,
                text: &checked.source.text,
                identity: Some(&sha),
                certificates: &certificates,
                outcome,
                detail,
                restores,
                seen: (outcome == Outcome::Applied).then_some(previous),
                expect_shift: options.expect_shift,
            })
        };
        // A refusal: recorded when the history can be written, and said.
        let record = |outcome, detail: &str| {
            let recorded = write(outcome, detail)
                .map_err(|e| tracing::error!(error = %e, "ALARM: the config history could not be written"))
                .ok();
            emit(recorded.as_ref().map(|v| v.id), outcome, detail);
            recorded
        };
        // A config the guard rolled back is not applied again by accident (a SIGHUP of
        // the same file, a retried deploy): only with force.
        if !options.force && origin != Origin::Rollback {
            if let Some(rejection) = store::rejection_of(&*self.store, &sha, &checked.source.text) {
                let reason = format!(
                    "this config (version {}) was rolled back by the guard at {}: {}; apply it again with --force if you mean it",
                    rejection.version, rejection.time, rejection.reason
                );
                let version = record(Outcome::Refused, &reason);
                return Applied::Refused {
                    version,
                    findings: Vec::new(),
                    source: Arc::clone(&checked.source),
                    reason: Some(reason),
                };
            }
        }
        let refused = |reason: Option<String>, version: Option<Version>| Applied::Refused {
            version,
            findings: checked.findings.clone(),
            source: Arc::clone(&checked.source),
            reason,
        };
        let config = match checked.config.clone() {
            Some(config) if !checked.is_rejected(deny_warnings) => config,
            _ => {
                let detail = diagnostic::render_text(&checked.source, &checked.findings);
                let version = record(Outcome::Refused, &detail);
                tracing::warn!(origin = %origin, version = version.as_ref().map(|v| v.id), "config refused\n{detail}");
                return refused(None, version);
            }
        };
        if let Err(e) = self.runtime.can_replace(&config) {
            let reason = e.to_string();
            let version = record(Outcome::Refused, &reason);
            tracing::warn!(origin = %origin, version = version.as_ref().map(|v| v.id), "config refused: {reason}");
            return refused(Some(reason), version);
        }
        let warnings: Vec<Finding> = checked
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .cloned()
            .collect();
        let detail = diagnostic::render_text(&checked.source, &warnings);
        if let Some(size) = options.canary {
            let new = NewVersion {
                origin,
                text: &checked.source.text,
                identity: Some(&sha),
                certificates: &certificates,
                outcome: Outcome::Applied,
                detail: &detail,
                restores,
                seen: Some(previous),
                expect_shift: options.expect_shift,
            };
            return match self.stage(size, config.guard.watch, new) {
                Ok((version, rollout)) => {
                    tracing::info!(origin = %origin, version = version.id, canaries = ?rollout.canaries, "config staged on canaries");
                    self.runtime.events.emit(Event::Rollout {
                        version: version.id,
                        verdict: "started",
                        canaries: rollout.canaries.clone(),
                        reason: String::new(),
                    });
                    Applied::Staged { version, rollout }
                }
                Err(StoreError::Conflict { in_force, seen }) => {
                    Applied::Conflict { in_force, seen }
                }
                Err(e @ StoreError::Etcd(_)) => Applied::StoreUnavailable {
                    reason: format!("not staged: the fleet store failed ({e}); nothing changed"),
                },
                Err(e) => {
                    let reason = format!("not staged: {e}");
                    tracing::warn!(origin = %origin, "config refused: {reason}");
                    refused(Some(reason), None)
                }
            };
        }
        // Recorded first, then put in force: in a fleet the write is what decides
        // (compare-and-swap on the version this node saw), and a node must not serve
        // a version the fleet does not have.
        match write(Outcome::Applied, &detail) {
            Ok(version) => {
                self.swap(config);
                *current = version.id;
                self.in_force.store(version.id, Ordering::Relaxed);
                self.cache(&version);
                emit(Some(version.id), Outcome::Applied, &detail);
                tracing::info!(origin = %origin, version = version.id, warnings = warnings.len(), "config applied");
                Applied::Applied {
                    version,
                    warnings,
                    source: Arc::clone(&checked.source),
                }
            }
            Err(StoreError::Conflict { in_force, seen }) => {
                tracing::warn!(origin = %origin, in_force, seen, "config not applied: another apply changed the fleet's version first");
                Applied::Conflict { in_force, seen }
            }
            Err(e @ StoreError::RolloutInProgress { .. }) => {
                let reason = format!("not applied: {e}");
                emit(None, Outcome::Refused, &reason);
                tracing::warn!(origin = %origin, "config refused: {reason}");
                refused(Some(reason), None)
            }
            Err(e) if self.in_fleet() => {
                let reason = format!(
                    "the fleet store could not record it ({e}); nothing changed on this node (if etcd took the write before failing, every node follows it: see `evenkeel history`)"
                );
                emit(None, Outcome::Refused, &reason);
                tracing::error!(origin = %origin, "config not applied: {reason}");
                Applied::StoreUnavailable { reason }
            }
            Err(e) => {
                // One node: in force but not recorded — say so loudly; the version
                // number stays.
                self.swap(config);
                emit(None, Outcome::Applied, &detail);
                tracing::error!(origin = %origin, error = %e, "ALARM: config applied but not recorded in the history");
                Applied::Unchanged { version: *current }
            }
        }
    }

    /// Puts a config that passed [`Runtime::can_replace`] in force.
    fn swap(&self, config: Config) {
        if let Err(e) = self.runtime.replace(config) {
            tracing::error!(error = %e, "ALARM: a config that could be applied was not");
        }
    }

    /// Goes back to version `to`, or by default to the previous good version (the last
    /// applied one before the version in force whose text differs), through the same
    /// path as any apply.
    pub fn rollback(&self, to: Option<u64>) -> Result<Applied, RollbackError> {
        self.rollback_from(to, None)
    }

    /// [`Applier::rollback`], only while version `from` is in force when given.
    fn rollback_from(&self, to: Option<u64>, from: Option<u64>) -> Result<Applied, RollbackError> {
        let target = match to {
            // One version read, not the whole history.
            Some(id) => {
                let v = self
                    .store
                    .version(id)?
                    .ok_or(RollbackError::NoSuchVersion(id))?;
                if v.outcome != Outcome::Applied {
                    return Err(RollbackError::NotApplied(id));
                }
                v
            }
            None => store::previous_good(&self.store.versions()?, self.current())
                .cloned()
                .ok_or(RollbackError::NothingToRollBackTo)?,
        };
        let label = PathBuf::from(format!("version {}", target.id));
        Ok(self.apply_restoring(
            target.text,
            label,
            Origin::Rollback,
            ApplyOptions::default(),
            Some(target.id),
            from,
        ))
    }

    /// The guard's verdict on `version`: roll back to `previous`, mark `version`
    /// rejected, and say so. Does nothing when `version` is no longer in force. A
    /// change made only in certificate or key files cannot be rolled back (evenkeel
    /// keeps no keys): that is said loudly, and nothing is marked.
    pub fn guard_rollback(&self, version: u64, previous: u64, reason: &str) {
        if self.current() != version {
            return;
        }
        if let Some(fleet) = self.fleet() {
            if let Some(rollout) = fleet.canary_of(version) {
                fleet.returned(version);
                return self.canary_rollback(&rollout, reason);
            }
        }
        let read = |id| self.store.version(id).ok().flatten();
        let (rejected, restore) = (read(version), read(previous));
        if let (Some(rejected), Some(restore)) = (&rejected, &restore) {
            if rejected.text == restore.text {
                let why = format!(
                    "{reason}; the change was only in certificate or key files, which evenkeel does not keep: put the previous files back and reload"
                );
                tracing::error!(
                    version,
                    previous,
                    "ALARM: the guard cannot roll back: {why}"
                );
                self.runtime.events.emit(Event::Guard {
                    version,
                    verdict: "rollback_failed",
                    reason: why,
                    restored: None,
                    judged: true,
                });
                return;
            }
        }
        // By identity, and by text: the text alone was the breach (a renewal of the
        // certificate files must not let it back in).
        if let Some(rejected) = &rejected {
            let mut keys = vec![rejected.sha256.clone(), store::sha256(&rejected.text)];
            keys.dedup();
            for key in keys {
                if let Err(e) = self.store.reject(&key, version, reason) {
                    tracing::error!(error = %e, "ALARM: cannot mark the rolled-back config as rejected");
                }
            }
        }
        let restored = match self.rollback_from(Some(previous), Some(version)) {
            Ok(Applied::Applied {
                version: restored, ..
            }) => Some(restored.id),
            Ok(Applied::Unchanged { version: now }) if self.in_fleet() => {
                // The node serves the restored text already: another node's guard
                // rolled the same change back first, and this node followed.
                tracing::info!(
                    version,
                    now,
                    "the guard's rollback was not needed: the fleet moved on first"
                );
                return;
            }
            Ok(Applied::Unchanged { version }) => Some(version),
            Ok(Applied::Staged { .. }) => {
                // A rollback is never staged.
                tracing::error!(
                    version,
                    previous,
                    "ALARM: the guard's rollback was staged instead of applied"
                );
                None
            }
            Ok(Applied::Conflict { in_force, .. }) => {
                // Another node of the fleet changed the version first (its own guard
                // rolled back the same change, most often): this node follows it.
                tracing::info!(
                    version,
                    in_force,
                    "the guard's rollback was not needed: the fleet moved on first"
                );
                return;
            }
            Ok(Applied::Refused { reason: why, .. }) => {
                tracing::error!(version, previous, reason = ?why, "ALARM: the guard could not roll back");
                None
            }
            Ok(Applied::StoreUnavailable { reason: why }) => {
                tracing::error!(
                    version,
                    previous,
                    "ALARM: the guard could not roll back: {why}"
                );
                None
            }
            Err(e) => {
                tracing::error!(version, previous, error = %e, "ALARM: the guard could not roll back");
                None
            }
        };
        self.guard_verdict(version, reason, restored);
    }
}

/// Records the config `runtime` serves as a version from the start (`seen`: the
/// version a fleet must be at, 0 for an empty fleet).
fn record_start(
    runtime: &Runtime,
    store: &dyn Store,
    seen: Option<u64>,
) -> Result<Version, StoreError> {
    let config = Arc::clone(&runtime.snapshot().config);
    store.record(NewVersion {
        origin: Origin::Start,
        text: &config.source.text,
        identity: Some(&config.identity()),
        certificates: &CertificateRecord::of(&config),
        outcome: Outcome::Applied,
        detail: "",
        restores: None,
        seen,
        expect_shift: false,
    })
}

/// Why a node puts a fleet version in force ([`Applier::adopt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// It is the fleet's version in force.
    InForce,
    /// This node is a canary of a rollout of it.
    Canary,
    /// A rollout this node was a canary of ended without it: back to the version in
    /// force (a rollback: the guard does not watch it).
    Return,
}

/// How an apply treats findings and the guard.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ApplyOptions {
    /// Refuse lint warnings too.
    pub deny_warnings: bool,
    /// The change moves traffic on purpose: the guard does not judge shift.
    pub expect_shift: bool,
    /// Apply even a config the guard rolled back before.
    pub force: bool,
    /// In a fleet: stage the change on this many canary nodes first
    /// ([`crate::fleet::rollout`]).
    pub canary: Option<crate::fleet::rollout::CanarySize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    /// An HTTPS listener on site.pem/site.key and pool "web" over `backend`.
    fn text(backend: &str) -> String {
        format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\
             tls = {{ certificates = [{{ cert = \"site.pem\", key = \"site.key\" }}] }}\n\
             [[route]]\npool = \"web\"\n\
             [pool.web]\nbackends = [{{ address = \"{backend}\" }}, {{ address = \"127.0.0.1:9002\" }}]\n"
        )
    }

    /// An applier for `text(good)` in `dir` (with the lint certificates written there).
    fn applier(dir: &std::path::Path) -> Applier {
        crate::config::lint::tests::write_certificates(dir);
        let path = dir.join("lb.toml");
        std::fs::write(&path, text("127.0.0.1:9001")).expect("write");
        let checked = config::check_file(&path).expect("read");
        let runtime = Runtime::new(checked.config.expect("valid"));
        let store = SqliteStore::open(&dir.join("state")).expect("store");
        Applier::start(runtime, Arc::new(store), path).expect("applier")
    }

    /// Renews site.pem/site.key with other files (the lint set's `expiring` pair).
    fn renew(dir: &std::path::Path) {
        std::fs::copy(dir.join("expiring.pem"), dir.join("site.pem")).expect("copy");
        std::fs::copy(dir.join("expiring.key"), dir.join("site.key")).expect("copy");
    }

    fn apply(applier: &Applier, text: String) -> Applied {
        applier.apply(
            text,
            "lb.toml".into(),
            Origin::Sighup,
            ApplyOptions::default(),
        )
    }

    /// A config the guard rolled back stays refused after a certificate renewal changed
    /// its identity: its text was the breach.
    #[test]
    fn a_rolled_back_config_stays_refused_after_its_certificates_are_renewed() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let applier = applier(dir.path());
        let bad = text("127.0.0.1:9003");
        let Applied::Applied { version, .. } = apply(&applier, bad.clone()) else {
            panic!("the bad config applies");
        };
        applier.guard_rollback(version.id, 1, "error rate 100%");
        assert_eq!(applier.current(), 3, "rolled back to version 1's text");
        renew(dir.path());
        let again = apply(&applier, bad);
        assert!(
            matches!(&again, Applied::Refused { reason: Some(r), .. } if r.contains("rolled back by the guard")),
            "{again:?}"
        );
    }

    /// A change only in certificate files cannot be rolled back (no keys are kept):
    /// the guard says so, and marks nothing rejected.
    #[test]
    fn a_change_only_in_certificate_files_is_not_rolled_back_in_name_only() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let applier = applier(dir.path());
        let mut events = applier.runtime.events.subscribe();
        renew(dir.path());
        let Applied::Applied { version, .. } = apply(&applier, text("127.0.0.1:9001")) else {
            panic!("the renewal applies");
        };
        applier.guard_rollback(version.id, 1, "error rate 100%");
        assert_eq!(applier.current(), version.id, "nothing changed");
        assert_eq!(applier.counts().guard_rollbacks(), 0);
        let verdict = std::iter::from_fn(|| events.try_recv().ok())
            .find_map(|e| match e {
                Event::Guard {
                    verdict, reason, ..
                } => Some((verdict, reason)),
                _ => None,
            })
            .expect("a guard verdict");
        assert_eq!(verdict.0, "rollback_failed");
        assert!(
            verdict.1.contains("only in certificate or key files"),
            "{}",
            verdict.1
        );
        assert!(matches!(
            applier.store().rejection(&version.sha256),
            Ok(None)
        ));
    }

    /// `guard.deny_warnings` does not refuse a config for a certificate's approaching
    /// end (the calendar's warning, not the change's); the caller's own
    /// `--deny-warnings` still does.
    #[test]
    fn deny_warnings_in_the_config_ignores_a_certificate_close_to_its_end() {
        let dir = tempfile::tempdir().expect("temporary folder");
        crate::config::lint::tests::write_certificates(dir.path());
        renew(dir.path());
        let checked = config::check_source(Source {
            path: dir.path().join("lb.toml"),
            text: format!(
                "{}[pool.web.health]\npath = \"/healthz\"\n[guard]\ndeny_warnings = true\n",
                text("127.0.0.1:9001")
            ),
        });
        assert!(checked
            .findings
            .iter()
            .any(|f| f.rule == "certificate-expiring"));
        assert!(!checked.is_rejected(false), "{:?}", checked.findings);
        assert!(checked.is_rejected(true));
    }
}
