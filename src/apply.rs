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
use std::sync::{Arc, Mutex};

use crate::config::{self, diagnostic, Finding, Severity, Source};
use crate::runtime::Runtime;
use crate::store::{self, NewVersion, Origin, Outcome, Store, StoreError, Version};

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
        let text = runtime.snapshot().config.source.text.clone();
        let version = store.record(NewVersion {
            origin: Origin::Start,
            text: &text,
            outcome: Outcome::Applied,
            detail: "",
            restores: None,
        })?;
        Ok(Applier {
            runtime,
            store,
            config_path,
            current: Mutex::new(version.id),
        })
    }

    /// The version in force.
    pub fn current(&self) -> u64 {
        *self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every version, oldest first.
    pub fn history(&self) -> Result<Vec<Version>, StoreError> {
        self.store.versions()
    }

    /// The config file this instance was started with.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// Checks `text` and, if it passes, puts it in force. `label` names it in findings
    /// (the file path, or `POST /config`).
    pub fn apply(
        &self,
        text: String,
        label: PathBuf,
        origin: Origin,
        deny_warnings: bool,
    ) -> Applied {
        self.apply_restoring(text, label, origin, deny_warnings, None)
    }

    fn apply_restoring(
        &self,
        text: String,
        label: PathBuf,
        origin: Origin,
        deny_warnings: bool,
        restores: Option<u64>,
    ) -> Applied {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if self.runtime.snapshot().config.source.text == text {
            return Applied::Unchanged { version: *current };
        }
        let base_dir = config::folder_of(&self.config_path);
        let checked = config::check_source_in(Source { path: label, text }, &base_dir);
        let record = |outcome, detail: &str| {
            let recorded = self.store.record(NewVersion {
                origin,
                text: &checked.source.text,
                outcome,
                detail,
                restores,
            });
            recorded
                .map_err(|e| tracing::error!(error = %e, "ALARM: the config history could not be written"))
                .ok()
        };
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
        if let Err(e) = self.runtime.replace(config) {
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
        match record(Outcome::Applied, &detail) {
            Some(version) => {
                *current = version.id;
                tracing::info!(origin = %origin, version = version.id, warnings = warnings.len(), "config applied");
                Applied::Applied {
                    version,
                    warnings,
                    source: Arc::clone(&checked.source),
                }
            }
            None => {
                // In force but not recorded: say so loudly; the version number stays.
                tracing::error!(origin = %origin, "ALARM: config applied but not recorded in the history");
                Applied::Unchanged { version: *current }
            }
        }
    }

    /// Goes back to version `to`, or by default to the previous good version (the last
    /// applied one before the version in force whose text differs), through the same
    /// path as any apply.
    pub fn rollback(&self, to: Option<u64>) -> Result<Applied, RollbackError> {
        let versions = self.store.versions()?;
        let target = match to {
            Some(id) => {
                let v = versions
                    .iter()
                    .find(|v| v.id == id)
                    .ok_or(RollbackError::NoSuchVersion(id))?;
                if v.outcome != Outcome::Applied {
                    return Err(RollbackError::NotApplied(id));
                }
                v
            }
            None => store::previous_good(&versions, self.current())
                .ok_or(RollbackError::NothingToRollBackTo)?,
        };
        let label = PathBuf::from(format!("version {}", target.id));
        Ok(self.apply_restoring(
            target.text.clone(),
            label,
            Origin::Rollback,
            false,
            Some(target.id),
        ))
    }
}
