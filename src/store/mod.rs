//! The config history: every version evenkeel was asked to apply — applied or refused —
//! with its number, time, source, sha256, full text and result.
//!
//! [`Store`] is the interface the rest of evenkeel uses; [`SqliteStore`] keeps it in
//! one SQLite file under `state_dir` (the embedded default; a fleet would implement the
//! same interface over etcd, see DESIGN "Growing past one machine"). Versions are
//! integers increasing from 1. The store is written off the request path only (at an
//! apply), and a write that fails is reported to the caller, never a panic.

pub mod etcd;
mod sqlite;

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use sqlite::SqliteStore;

/// Where a version came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The config file, read at start.
    Start,
    /// The config file, re-read on SIGHUP.
    Sighup,
    /// `POST /config` (or `evenkeel apply`).
    Api,
    /// `POST /config/rollback` (or `evenkeel rollback`).
    Rollback,
}

impl Origin {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Start => "start",
            Origin::Sighup => "sighup",
            Origin::Api => "api",
            Origin::Rollback => "rollback",
        }
    }

    fn parse(s: &str) -> Origin {
        match s {
            "start" => Origin::Start,
            "sighup" => Origin::Sighup,
            "rollback" => Origin::Rollback,
            _ => Origin::Api,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was put in force.
    Applied,
    /// It was refused (errors, denied warnings, or a change that needs a restart) and
    /// changed nothing.
    Refused,
}

impl Outcome {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Refused => "refused",
        }
    }

    fn parse(s: &str) -> Outcome {
        if s == "applied" {
            Outcome::Applied
        } else {
            Outcome::Refused
        }
    }
}

/// One version of the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// Its number, from 1.
    pub id: u64,
    /// When it was applied or refused (RFC 3339, UTC).
    pub time: String,
    /// Where it came from.
    pub origin: Origin,
    /// The config's identity, hex: SHA-256 of the text, and of the certificate and key
    /// files it names when it names any ([`crate::config::Config::identity`]).
    pub sha256: String,
    /// The whole config text.
    pub text: String,
    /// The certificates it served (never their keys); empty when it serves none or
    /// was refused before they could be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateRecord>,
    /// Applied or refused.
    pub outcome: Outcome,
    /// Why it was refused, or the warnings it was applied with (text, as `check` prints).
    pub detail: String,
    /// For a rollback: the version whose text it restored.
    pub restores: Option<u64>,
    /// In a fleet: the node that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Applied with `--expect-shift`: every node's guard leaves shift unjudged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expect_shift: bool,
}

/// A certificate a version served, as the history keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// The listener serving it.
    pub listener: String,
    /// The certificate file.
    pub cert: String,
    /// SHA-256 of the leaf certificate (DER), hex.
    pub fingerprint: String,
    /// The names it covers.
    pub names: Vec<String>,
    /// End of its validity (RFC 3339, UTC).
    pub not_after: String,
}

impl CertificateRecord {
    /// The records of every certificate `config` serves.
    pub fn of(config: &crate::config::Config) -> Vec<CertificateRecord> {
        config
            .certificates()
            .map(|(listener, c)| CertificateRecord {
                listener: listener.name.clone(),
                cert: c.cert_path.display().to_string(),
                fingerprint: c.fingerprint.clone(),
                names: c.names.clone(),
                not_after: rfc3339(c.not_after),
            })
            .collect()
    }
}

/// Seconds since the Unix epoch as RFC 3339 (UTC); the epoch itself for a time
/// before it.
pub fn rfc3339(seconds: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A version about to be recorded.
#[derive(Clone, Debug)]
pub struct NewVersion<'a> {
    /// Where it came from.
    pub origin: Origin,
    /// The config text.
    pub text: &'a str,
    /// The config's identity; `None`: the SHA-256 of `text` (a config that could not
    /// be read far enough to know its files).
    pub identity: Option<&'a str>,
    /// The certificates it serves.
    pub certificates: &'a [CertificateRecord],
    /// Applied or refused.
    pub outcome: Outcome,
    /// Findings or reason, as text.
    pub detail: &'a str,
    /// For a rollback: the version restored.
    pub restores: Option<u64>,
    /// For an applied version: the version this node had in force when it checked it.
    /// A shared store refuses the write ([`StoreError::Conflict`]) when the fleet's
    /// version in force is another by then, so a node with a stale view cannot revert
    /// what another applied. `None`: no such check (one node's own history).
    pub seen: Option<u64>,
    /// Applied with `--expect-shift`.
    pub expect_shift: bool,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state folder could not be created.
    #[error("cannot create the state folder {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("config history ({path}): {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The fleet's version in force changed since this node last saw it: another apply
    /// won. Nothing was written.
    #[error("conflict: the fleet moved to version {in_force} since this node saw version {seen}; look at the history, then apply again")]
    Conflict {
        /// The fleet's version in force now.
        in_force: u64,
        /// The version the apply was checked against.
        seen: u64,
    },
    /// A staged rollout is in progress: no other version can be applied until it ends.
    #[error("a canary rollout of version {version} (canaries {canaries}) is in progress; wait for it to end (evenkeel fleet status)")]
    RolloutInProgress {
        /// The version being rolled out.
        version: u64,
        /// Its canaries.
        canaries: String,
    },
    /// A staged rollout asked of an instance that is not part of a fleet.
    #[error("a canary rollout needs a fleet ([store] kind = \"etcd\")")]
    NotAFleet,
    /// The canaries asked for cannot be had.
    #[error("{0}")]
    Canary(String),
    /// etcd failed or could not be reached.
    #[error("fleet store: {0}")]
    Etcd(#[from] etcd::gateway::GatewayError),
    /// A value in etcd that evenkeel cannot read.
    #[error("fleet store: the value at {key} is not what evenkeel writes: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

/// One entry of the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Its number, increasing.
    pub id: u64,
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The config version in force then.
    pub version: Option<u64>,
    /// The event kind (`health`, `ejected`, `config`, `guard`, `alarm`, ...).
    pub kind: String,
    /// The event in words.
    pub message: String,
    /// The event's fields.
    pub data: serde_json::Value,
    /// The node that wrote it, in a fleet (`[store] node`); `None` for one instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl JournalEntry {
    /// The event, read back from its fields; `None` for an entry this version of
    /// evenkeel cannot read (a kind from a newer one).
    pub fn event(&self) -> Option<crate::health::Event> {
        // An owned `Value` deserializes for any lifetime, the event's words included.
        <crate::health::Event as Deserialize>::deserialize(self.data.clone()).ok()
    }
}

/// A config the guard rolled back: applying the same text again needs `force`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// The version that was rolled back.
    pub version: u64,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub time: String,
}

/// Keeps the config history and the journal.
pub trait Store: Send + Sync {
    /// Records a version and returns it with its number and time.
    fn record(&self, version: NewVersion<'_>) -> Result<Version, StoreError>;
    /// Every version, oldest first.
    fn versions(&self) -> Result<Vec<Version>, StoreError>;
    /// Version `id`.
    fn version(&self, id: u64) -> Result<Option<Version>, StoreError>;
    /// Appends an event to the journal, with the version in force; its id (0 when the
    /// store writes it later: etcd's journal is written off the caller's thread).
    fn journal(
        &self,
        version: Option<u64>,
        event: &crate::health::Event,
    ) -> Result<u64, StoreError>;
    /// Journal entries after id `after`, at or after `since` (RFC 3339) when given, and
    /// at or before `until`, oldest first, at most `limit`.
    fn journal_entries(
        &self,
        after: u64,
        since: Option<&str>,
        until: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;
    /// Marks a config text (by sha256) as rolled back by the guard.
    fn reject(&self, sha256: &str, version: u64, reason: &str) -> Result<(), StoreError>;
    /// The guard's rejection of a config text, if any.
    fn rejection(&self, sha256: &str) -> Result<Option<Rejection>, StoreError>;
    /// The fleet store, when this is one (several nodes share its versions).
    fn fleet(&self) -> Option<&etcd::EtcdStore> {
        None
    }
}

/// Hex SHA-256 of a config text.
pub fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The guard's rejection of a config: by its identity, or by its text alone — a config
/// the guard rolled back stays refused when only its certificate files changed since
/// (a renewal). Every check of a rejection (applies, and the config a start picks)
/// goes through here.
pub fn rejection_of(store: &dyn Store, identity: &str, text: &str) -> Option<Rejection> {
    let by_identity = store.rejection(identity).ok().flatten();
    by_identity.or_else(|| store.rejection(&sha256(text)).ok().flatten())
}

/// The version a rollback goes back to when none is named: the last applied version
/// before `current` whose text differs from it.
pub fn previous_good(versions: &[Version], current: u64) -> Option<&Version> {
    let current_sha = versions
        .iter()
        .find(|v| v.id == current)
        .map(|v| v.sha256.as_str());
    versions
        .iter()
        .rev()
        .filter(|v| v.id < current && v.outcome == Outcome::Applied)
        .find(|v| Some(v.sha256.as_str()) != current_sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: u64, text: &str, outcome: Outcome) -> Version {
        Version {
            id,
            time: String::new(),
            origin: Origin::Api,
            sha256: sha256(text),
            text: text.into(),
            outcome,
            detail: String::new(),
            restores: None,
            certificates: Vec::new(),
            node: None,
            expect_shift: false,
        }
    }

    #[test]
    fn sha256_of_a_known_text() {
        assert_eq!(
            sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn previous_good_skips_refused_versions_and_the_same_text() {
        let versions = [
            version(1, "a", Outcome::Applied),
            version(2, "b", Outcome::Applied),
            version(3, "bad", Outcome::Refused),
            version(4, "b", Outcome::Applied),
            version(5, "c", Outcome::Applied),
        ];
        assert_eq!(previous_good(&versions, 5).map(|v| v.id), Some(4));
        assert_eq!(
            previous_good(&versions, 4).map(|v| v.id),
            Some(1),
            "2 has the same text as 4"
        );
        assert_eq!(previous_good(&versions, 1), None);
    }
}
