//! The configuration pipeline. Every step is a pure function of its input; nothing here
//! binds a socket, opens the store or touches the running proxy (DESIGN.md: checking a
//! config touches no state).
//!
//! ```text
//!  file text ──toml+serde──► raw::RawConfig ──validate──► model::Config ──lint──► findings
//!  (Source)     (spans kept,     (strings, spans)   (defaults filled,     (warnings, with
//!               unknown fields                       addresses resolved,    [lint.allow]
//!               refused)                             names cross-checked)   applied)
//! ```
//!
//! [`check_source`] runs the whole pipeline and returns a [`Checked`]: the config when
//! it is valid, and every finding. Syntax and type errors stop the pipeline at the
//! first one (serde stops there); validation reports every error it finds; lints run
//! only on a valid config.

pub mod backend_tls;
pub mod diagnostic;
pub mod diff;
pub mod files;
pub mod foreign;
pub mod lint;
pub mod model;
pub mod raw;
pub mod store;
pub mod tls;
mod validate;
pub mod values;

use std::path::Path;
use std::sync::Arc;

pub use diagnostic::{Finding, Severity, Source};
pub use model::*;

/// The outcome of running the pipeline on one file.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The file.
    pub source: Arc<Source>,
    /// The validated config, when there were no errors.
    pub config: Option<Config>,
    /// Every finding, errors first, then in file order.
    pub findings: Vec<Finding>,
}

impl Checked {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Number of warnings not silenced by `[lint.allow]`.
    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity && f.allowed.is_none())
            .count()
    }

    /// Turns `certificate-expired` errors into warnings for the certificates in
    /// `in_force` ([`served_key`]s: served by that listener now, or when the process
    /// last ran): a
    /// reload or restart that keeps an expired certificate must not stop serving it —
    /// the alarm says to renew it. A new expired certificate stays an error.
    pub fn tolerate_expired(&mut self, in_force: &std::collections::HashSet<String>) {
        let Some(config) = &self.config else { return };
        let tolerated: Vec<Span> = config
            .certificates()
            .filter(|(l, c)| in_force.contains(&served_key(&l.name, &c.fingerprint)))
            .map(|(_, c)| c.span.clone())
            .collect();
        for finding in &mut self.findings {
            if finding.rule == lint::CERTIFICATE_EXPIRED
                && finding.span.as_ref().is_some_and(|s| tolerated.contains(s))
            {
                finding.severity = Severity::Warning;
                finding.message.push_str(
                    " (still served: it is the certificate in force, and a reload or restart must not take it away; renew it)",
                );
            }
        }
    }

    /// Whether the config must be refused: any error, or any warning when
    /// `deny_warnings` (the caller's) is set, or any warning but the clock's when the
    /// config's own `guard.deny_warnings` is: a certificate's approaching (or, still
    /// served, passed) end is a warning the calendar raises, not the change, and a
    /// config must not stop starting or reloading because of it (the alarm says it).
    pub fn is_rejected(&self, deny_warnings: bool) -> bool {
        let Some(config) = &self.config else {
            return true;
        };
        if self.errors() > 0 {
            return true;
        }
        if deny_warnings {
            return self.warnings() > 0;
        }
        config.guard.deny_warnings
            && self.findings.iter().any(|f| {
                f.severity == Severity::Warning
                    && f.allowed.is_none()
                    && !lint::CLOCK_RULES.contains(&f.rule)
            })
    }
}

/// How a certificate served by a listener is named in [`Checked::tolerate_expired`]'s
/// set: `LISTENER/FINGERPRINT`.
pub fn served_key(listener: &str, fingerprint: &str) -> String {
    format!("{listener}/{fingerprint}")
}

/// Reads and checks the file at `path`. Fails only when the file cannot be read (see
/// [`files::read_config`]: regular files of at most 16 MiB).
pub fn check_file(path: &Path) -> Result<Checked, files::FileError> {
    Ok(check_source(Source::read(path)?))
}

/// [`check_file`], with the rules that rest on the split between pools judging
/// `traffic` (observed) instead of equal traffic per route.
pub fn check_file_with(
    path: &Path,
    traffic: Option<&crate::sim::traffic::Observed>,
) -> Result<Checked, files::FileError> {
    let source = Source::read(path)?;
    let base_dir = folder_of(&source.path);
    Ok(check_pipeline(source, &base_dir, traffic))
}

/// Runs the whole pipeline on `source`. Relative paths in the config (state_dir,
/// token_file) resolve against the folder of `source.path`.
pub fn check_source(source: Source) -> Checked {
    let base_dir = folder_of(&source.path);
    check_source_in(source, &base_dir)
}

/// The folder relative paths in a config file resolve against.
pub fn folder_of(path: &Path) -> std::path::PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Runs the whole pipeline on `source`, resolving relative paths against `base_dir`
/// (for a config that did not come from a file, such as `POST /config`).
pub fn check_source_in(source: Source, base_dir: &Path) -> Checked {
    check_pipeline(source, base_dir, None)
}

/// The sections of a config that belong to one node of a fleet — `[admin]`, `[store]`
/// and `state_dir` — as that node's own file gives them (DESIGN "Fleet").
#[derive(Clone, Debug)]
pub struct NodeLocal {
    /// `state_dir`, resolved.
    pub state_dir: std::path::PathBuf,
    /// Whether the node's file writes `state_dir`.
    pub state_dir_written: bool,
    /// `[admin]`.
    pub admin: Option<Admin>,
    /// `[store]`.
    pub store: store::StoreKind,
}

impl NodeLocal {
    /// The node-local sections of `config` (the node's own file).
    pub fn of(config: &Config) -> NodeLocal {
        NodeLocal {
            state_dir: config.state_dir.clone(),
            state_dir_written: config.state_dir_written,
            admin: config.admin.clone(),
            store: config.store.clone(),
        }
    }
}

/// Checks a fleet version's text for this node: the text's own `[admin]`, `[store]`
/// and `state_dir` (the writing node's) are ignored — not validated, not linted — and
/// `local`'s are put in their place, so a version written on one node loads on every
/// other with that node's own admin listener, token and store.
pub fn check_fleet_source(source: Source, base_dir: &Path, local: &NodeLocal) -> Checked {
    let mut checked = check_stages(source, base_dir, None, |raw| {
        raw.admin = None;
        raw.store = None;
        raw.state_dir = None;
    });
    if let Some(config) = &mut checked.config {
        config.admin = local.admin.clone();
        config.store = local.store.clone();
        config.state_dir = local.state_dir.clone();
        config.state_dir_written = local.state_dir_written;
    }
    checked
}

fn check_pipeline(
    source: Source,
    base_dir: &Path,
    traffic: Option<&crate::sim::traffic::Observed>,
) -> Checked {
    check_stages(source, base_dir, traffic, |_| {})
}

/// The pipeline, with `adjust` run on the raw model before validation.
fn check_stages(
    source: Source,
    base_dir: &Path,
    traffic: Option<&crate::sim::traffic::Observed>,
    adjust: impl FnOnce(&mut raw::RawConfig),
) -> Checked {
    let source = Arc::new(source);
    let mut raw = match toml::from_str::<raw::RawConfig>(&source.text) {
        Ok(raw) => raw,
        Err(e) => {
            return Checked {
                findings: vec![toml_finding(&e)],
                config: None,
                source,
            }
        }
    };
    adjust(&mut raw);
    let (config, mut findings) = validate::validate(raw, Arc::clone(&source), base_dir);
    if let Some(config) = &config {
        findings.extend(lint::run_with(&lint::Input::new(config, traffic)));
    }
    findings.sort_by_key(|f| {
        (
            std::cmp::Reverse(f.severity),
            f.span.as_ref().map(|s| s.start),
        )
    });
    Checked {
        source,
        config,
        findings,
    }
}

/// Turns a TOML syntax or serde data error into a finding, with a "did you mean"
/// suggestion for an unknown field.
fn toml_finding(error: &toml::de::Error) -> Finding {
    // serde names Rust types; say what to write instead.
    let message = error
        .message()
        .trim()
        .replace("expected i64", "expected a whole number")
        .replace("expected f64", "expected a number")
        .replace("expected a boolean", "expected true or false");
    let span = error.span();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        // serde lists the expected fields in backticks after "expected".
        let expected: Vec<&str> = rest
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let help = match suggest(field, &expected) {
            Some(s) => format!("did you mean `{s}`? fields here: {}", expected.join(", ")),
            None if expected.is_empty() => "remove it".to_string(),
            None => format!("remove it; fields here: {}", expected.join(", ")),
        };
        return Finding::error("unknown-field", span, format!("unknown field `{field}`"))
            .with_help(help);
    }
    let (rule, help) = if message.starts_with("missing field") {
        ("missing-field", "add the field (see docs/config.md)")
    } else if message.starts_with("invalid type") {
        ("invalid-type", "write the value with the type docs/config.md gives (durations and addresses are quoted strings)")
    } else if message.contains("duplicate key") {
        ("duplicate-name", "each key and table may appear only once")
    } else {
        (
            "toml-syntax",
            "fix the TOML syntax at this point (see https://toml.io)",
        )
    };
    Finding::error(rule, span, message).with_help(help)
}

/// The known word closest to `word`, when one is close enough to be a likely typo:
/// within a few edits (a transposition counts as one) or sharing a long prefix.
pub fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let max_edits = (word.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| {
            (
                strsim::osa_distance(word, k),
                strsim::jaro_winkler(word, k),
                *k,
            )
        })
        .filter(|(edits, similarity, _)| *edits <= max_edits || *similarity >= 0.85)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, k)| k)
}

#[cfg(test)]
mod tests;
