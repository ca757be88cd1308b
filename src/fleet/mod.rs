//! A fleet: many evenkeel nodes serving one config version kept in etcd (DESIGN
//! "Growing past one machine").
//!
//! ```text
//!   node A ── apply ──► check ──► record (CAS on the version A saw) ──► swap ─┐
//!                                        │                                    │
//!                              etcd PREFIX/current ── watch ──► node B, C: read the version,
//!                                        ▲                      check it with their own
//!                                        │                      [admin]/[store]/state_dir,
//!   every node ── heartbeat (lease) ──► PREFIX/nodes/NODE       swap it in (or report a refusal)
//! ```
//!
//! - **Start.** A node reads the fleet's version in force and serves it (its own file
//!   only seeds an empty fleet). When etcd cannot be reached it serves the version it
//!   kept in `state_dir` ([`cache`]), or else its file, and catches up later.
//! - **Follow** ([`sync`]): a watch on `PREFIX/current` from the revision read; each new
//!   version is read and put in force through [`crate::apply::Applier::adopt`]. A watch
//!   cut by a compaction starts over from a full read.
//! - **Report**: a key per node under a lease of [`LEASE_TTL`], rewritten every
//!   [`HEARTBEAT`]: what it serves, a refusal, its alarms. A node that vanishes drops
//!   out when its lease ends.
//! - **Fail static.** etcd is never on the request path. While it cannot be reached a
//!   node keeps serving, raises `store_unreachable`, and retries with backoff
//!   ([`BACKOFF_MAX`]); applies are refused (they could not reach the other nodes).

pub mod cache;
pub mod rollout;
pub mod status;
pub mod sync;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::store::EtcdStore as EtcdConfig;
use crate::store::etcd::gateway::Gateway;
use crate::store::etcd::EtcdStore;

/// How often a node rewrites its report.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a report outlives its node's last heartbeat.
pub const LEASE_TTL: u64 = 10;
/// Longest wait between two attempts to reach etcd.
pub const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// This node's view of the fleet: whether etcd answers, and a version it refused.
#[derive(Debug)]
pub struct Fleet {
    store: Arc<EtcdStore>,
    state: Mutex<State>,
    /// Rung when a heartbeat fails, so a watch that hangs on a dead connection starts
    /// over.
    wake: tokio::sync::Notify,
    started: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    unreachable: Option<Unreachable>,
    refusal: Option<Refusal>,
    admin: Option<std::net::SocketAddr>,
    /// The lease of this node's report (0: none yet).
    lease: i64,
    /// The fleet's rollout, as last read.
    rollout: Option<rollout::Rollout>,
    /// A rollout's version this node's guard sent it back from.
    returned_from: Option<u64>,
    /// When the refusal was last tried.
    refused_at: Option<std::time::Instant>,
    /// Another process reporting under this node's id, in words.
    duplicate: Option<String>,
}

/// etcd could not be reached.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Unreachable {
    /// Since when (RFC 3339).
    pub since: String,
    /// The last error.
    pub error: String,
}

/// A fleet version this node could not put in force.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    /// The version.
    pub version: u64,
    /// Why (the first finding, or the reason).
    pub reason: String,
}

impl Fleet {
    /// This node's fleet, over `store`.
    pub fn new(store: Arc<EtcdStore>) -> Arc<Fleet> {
        Arc::new(Fleet {
            store,
            state: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            started: SystemTime::now(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<EtcdStore> {
        &self.store
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// etcd failed with `error`: raise `store_unreachable` (once; the first failure's
    /// time stays).
    pub fn failed(&self, error: &str) {
        let mut state = self.state();
        match &mut state.unreachable {
            Some(u) => u.error = error.to_string(),
            None => {
                tracing::error!(error, "ALARM: the fleet store (etcd) is unreachable; serving the version in force until it returns");
                state.unreachable = Some(Unreachable {
                    since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                    error: error.to_string(),
                });
            }
        }
    }

    /// etcd answered.
    pub fn reached(&self) {
        if let Some(was) = self.state().unreachable.take() {
            tracing::info!(since = %was.since, "the fleet store (etcd) is reachable again");
        }
    }

    /// Since when, and why, etcd cannot be reached; `None` while it answers.
    pub fn unreachable(&self) -> Option<Unreachable> {
        self.state().unreachable.clone()
    }

    /// Records that this node could not put `version` in force.
    pub fn refused(&self, version: u64, reason: &str) {
        let mut state = self.state();
        state.refusal = Some(Refusal {
            version,
            reason: reason.to_string(),
        });
        state.refused_at = Some(std::time::Instant::now());
    }

    /// Whether this node refused `version` less than `within` ago (it tries it again
    /// after that: a missing file may have been deployed since).
    pub fn refused_recently(&self, version: u64, within: Duration) -> bool {
        let state = self.state();
        state.refusal.as_ref().is_some_and(|r| r.version == version)
            && state.refused_at.is_some_and(|at| at.elapsed() < within)
    }

    /// This node's guard sent it back from canary version `version`: it does not take
    /// that version again, whatever the rollout says until it ends.
    pub fn returned(&self, version: u64) {
        self.state().returned_from = Some(version);
    }

    /// See [`Fleet::returned`].
    pub fn returned_from(&self) -> Option<u64> {
        self.state().returned_from
    }

    /// A fleet version this node refused, while it is still the fleet's.
    pub fn refusal(&self) -> Option<Refusal> {
        self.state().refusal.clone()
    }

    /// Forgets a refusal (the fleet moved on, or the node took the version after all).
    pub fn clear_refusal(&self) {
        self.state().refusal = None;
    }

    /// The admin address this node reports.
    pub fn set_admin(&self, admin: Option<std::net::SocketAddr>) {
        self.state().admin = admin;
    }

    fn admin(&self) -> Option<std::net::SocketAddr> {
        self.state().admin
    }

    /// Keeps the fleet's rollout as last read.
    pub fn set_rollout(&self, rollout: Option<rollout::Rollout>) {
        self.state().rollout = rollout;
    }

    /// The fleet's rollout as last read.
    pub fn rollout(&self) -> Option<rollout::Rollout> {
        self.state().rollout.clone()
    }

    /// The rollout in progress in which this node is a canary for `version`, if any.
    pub fn canary_of(&self, version: u64) -> Option<rollout::Rollout> {
        self.rollout().filter(|r| {
            r.state == rollout::State::Canary
                && r.version == version
                && r.canaries.iter().any(|c| c == self.store.node())
        })
    }

    /// Another process reports under this node's id (`Some`: who), or no longer.
    /// Said once per episode: two nodes sharing an id overwrite each other's report.
    pub fn set_duplicate(&self, other: Option<String>) {
        let mut state = self.state();
        if let (Some(other), None) = (&other, &state.duplicate) {
            tracing::error!(node = self.store.node(), other = %other, "ALARM: another process reports under this node's id: give each node its own [store] node (or, after a crash, this node's previous process: its report goes within 10 s)");
        }
        state.duplicate = other;
    }

    fn set_lease(&self, lease: i64) {
        self.state().lease = lease;
    }

    /// Leaves the fleet at shutdown: ends this node's lease, so its report goes at
    /// once rather than when the lease would end (best effort, a few seconds at most).
    pub fn leave(&self) {
        if let Err(e) = self.store.flush_within(Duration::from_secs(2)) {
            tracing::warn!(error = %e, "journal entries of this node's last moments were not written");
        }
        let lease = self.state().lease;
        if lease == 0 {
            return;
        }
        let gateway = Arc::clone(self.store.gateway());
        if let Err(e) = self
            .store
            .block(async move { Ok(gateway.lease_revoke(lease).await?) })
        {
            tracing::warn!(error = %e, "cannot end this node's lease; its report goes when the lease ends");
        }
    }
}

/// Why a node could not join its fleet.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// A file `[store]` names could not be read or used.
    #[error("[store] {field} {path}: {reason}")]
    File {
        /// The field.
        field: &'static str,
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The fleet thread could not start.
    #[error("cannot start the fleet thread: {0}")]
    Thread(std::io::Error),
}

/// Connects to the fleet's etcd as `[store]` says: reads the password and TLS files,
/// and starts the fleet thread whose runtime every etcd call runs on (it lives as long
/// as the process). Nothing is sent to etcd yet.
pub fn connect(config: &EtcdConfig) -> Result<Arc<EtcdStore>, JoinError> {
    let credentials = match (&config.user, &config.password_file) {
        (Some(user), Some(file)) => {
            let password =
                crate::config::files::read_config(file).map_err(|e| JoinError::File {
                    field: "password_file",
                    path: file.display().to_string(),
                    reason: e.to_string(),
                })?;
            Some((
                user.clone(),
                password.trim_end_matches(['\r', '\n']).to_string(),
            ))
        }
        _ => None,
    };
    let tls = if config.endpoints.iter().any(|e| e.tls) {
        Some(tls_config(config)?)
    } else {
        None
    };
    let gateway = Gateway::new(config.endpoints.clone(), tls, credentials);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(JoinError::Thread)?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("evenkeel-fleet".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(JoinError::Thread)?;
    Ok(Arc::new(EtcdStore::new(
        gateway,
        &config.prefix,
        &config.node,
        handle,
    )))
}

/// The rustls client config for `https://` endpoints: `ca` (or the system's roots),
/// and the client certificate when `cert` and `key` are given.
fn tls_config(config: &EtcdConfig) -> Result<Arc<rustls::ClientConfig>, JoinError> {
    use pki_types::pem::PemObject;
    use pki_types::{CertificateDer, PrivateKeyDer};
    let file_error =
        |field: &'static str, path: &std::path::Path, reason: String| JoinError::File {
            field,
            path: path.display().to_string(),
            reason,
        };
    let roots = match &config.ca {
        Some(ca) => {
            let bundle = crate::config::backend_tls::load_ca(ca, config.span.clone())
                .map_err(|e| file_error("ca", ca, e.to_string()))?;
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(bundle.certificates.iter().cloned());
            Arc::new(roots)
        }
        None => Arc::clone(crate::config::backend_tls::system_roots()),
    };
    let builder = rustls::ClientConfig::builder_with_provider(crate::config::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| file_error("ca", std::path::Path::new("-"), e.to_string()))?
        .with_root_certificates(roots);
    let tls = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| file_error("cert", cert, e.to_string()))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| file_error("key", key, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| file_error("cert", cert, e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(tls))
}
