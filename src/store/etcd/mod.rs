//! The config history, rejections and journal of a fleet, in etcd under one prefix.
//!
//! ```text
//!  PREFIX/head                 {"id": N}        the last version number handed out
//!  PREFIX/current              {"version": N}   the fleet's version in force
//!  PREFIX/versions/0000…N      a Version (JSON) applied or refused, with its text
//!  PREFIX/rejected/SHA256      a Rejection       configs the guard rolled back
//!  PREFIX/journal/NANOS-NODE   a journal entry   its id is the key's create revision
//!  PREFIX/nodes/NODE           a node's report   under the node's lease (crate::fleet)
//! ```
//!
//! **One version for the fleet.** A version is recorded by a transaction that
//! compares the `mod_revision` of `head` (so two writers never take one number) and,
//! for an applied version, of `current` (so the version in force is the one the writer
//! saw): a node that lost a race, or whose view is stale, gets
//! [`StoreError::Conflict`] and writes nothing.
//!
//! **Bounded.** etcd refuses writes once its space quota (2 GiB by default) is full.
//! Versions beyond the last [`KEEP_VERSIONS`] and journal entries beyond the last
//! [`KEEP_JOURNAL`] are deleted as new ones are written. Deleted keys free their
//! space only when etcd compacts its history: run etcd with auto-compaction
//! (docs/fleet.md). evenkeel does not compact etcd itself — the keyspace may be shared.
//!
//! **Off the request path.** The [`Store`] methods are synchronous (callers are the
//! admin API, the monitor's journal writer and the applier); they hand the call to the
//! fleet thread's runtime and wait at most [`WAIT`].

pub mod gateway;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use self::gateway::{Compare, Gateway, GatewayError, Operation, RangeOptions};
use super::{JournalEntry, NewVersion, Outcome, Rejection, Store, StoreError, Version};
use crate::fleet::rollout::{Rollout, State as RolloutState};

/// Versions kept (older ones are deleted, never the one in force).
pub const KEEP_VERSIONS: u64 = 1000;
/// Journal entries kept.
pub const KEEP_JOURNAL: i64 = 20_000;
/// Journal writes between two checks of the journal's size.
const PRUNE_EVERY: u64 = 256;
/// Longest a synchronous call waits for etcd (each endpoint gets
/// [`gateway::CALL_TIMEOUT`]).
pub const WAIT: Duration = Duration::from_secs(10);
/// Transactions tried before a write that keeps losing races gives up.
const TRIES: usize = 16;

/// The keys of one fleet.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix` (no trailing `/`).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// `PREFIX/head`.
    pub fn head(&self) -> Vec<u8> {
        format!("{}/head", self.prefix).into_bytes()
    }

    /// `PREFIX/current`.
    pub fn current(&self) -> Vec<u8> {
        format!("{}/current", self.prefix).into_bytes()
    }

    /// `PREFIX/current.rollout`: the staged rollout in progress or last ended
    /// (`crate::fleet::rollout`).
    pub fn rollout(&self) -> Vec<u8> {
        format!("{}/current.rollout", self.prefix).into_bytes()
    }

    /// `PREFIX/current.deadline`: there while the rollout's deadline holds (bound to a
    /// lease of that length).
    pub fn deadline(&self) -> Vec<u8> {
        format!("{}/current.deadline", self.prefix).into_bytes()
    }

    /// `PREFIX/current.verdict/`: canaries' verdicts.
    pub fn verdicts(&self) -> Vec<u8> {
        format!("{}/current.verdict/", self.prefix).into_bytes()
    }

    /// The verdict key of canary `node`.
    pub fn verdict(&self, node: &str) -> Vec<u8> {
        format!("{}/current.verdict/{node}", self.prefix).into_bytes()
    }

    /// What a node watches: every key starting with `PREFIX/current` — the version in
    /// force, the rollout and the verdicts — and nothing else (not the journal, not
    /// the reports).
    pub fn watched(&self) -> (Vec<u8>, Vec<u8>) {
        let start = self.current();
        let end = gateway::prefix_end(&start);
        (start, end)
    }

    /// `PREFIX/versions/` and a version's key.
    pub fn versions(&self) -> Vec<u8> {
        format!("{}/versions/", self.prefix).into_bytes()
    }

    /// The key of version `id`.
    pub fn version(&self, id: u64) -> Vec<u8> {
        format!("{}/versions/{id:020}", self.prefix).into_bytes()
    }

    /// The key of a rejection.
    pub fn rejected(&self, sha256: &str) -> Vec<u8> {
        format!("{}/rejected/{sha256}", self.prefix).into_bytes()
    }

    /// `PREFIX/journal/`.
    pub fn journal(&self) -> Vec<u8> {
        format!("{}/journal/", self.prefix).into_bytes()
    }

    /// The journal key of an entry written at `nanos` (since the epoch) by `node`.
    pub fn journal_entry(&self, nanos: u128, node: &str) -> Vec<u8> {
        format!("{}/journal/{nanos:020}-{node}", self.prefix).into_bytes()
    }

    /// `PREFIX/nodes/`.
    pub fn nodes(&self) -> Vec<u8> {
        format!("{}/nodes/", self.prefix).into_bytes()
    }

    /// The report key of `node`.
    pub fn node(&self, node: &str) -> Vec<u8> {
        format!("{}/nodes/{node}", self.prefix).into_bytes()
    }

    /// The prefix, as configured.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The fleet's store: the client, the keys, this node's id, and the runtime its calls
/// run on.
pub struct EtcdStore {
    gateway: Arc<Gateway>,
    keys: Keys,
    node: String,
    runtime: tokio::runtime::Handle,
    journal_writes: AtomicU64,
    /// Journal entries (key, value) not yet written: etcd was away. Written in order
    /// when it answers again; the oldest are dropped beyond [`KEEP_PENDING`].
    pending: Arc<Pending>,
    /// Whether a task is writing `pending` (one at a time, in order).
    flushing: Arc<std::sync::atomic::AtomicBool>,
    /// The journal's size is to be checked after the next flush.
    prune_due: Arc<std::sync::atomic::AtomicBool>,
}

/// Journal entries (key, value) waiting for etcd.
type Pending = std::sync::Mutex<std::collections::VecDeque<(Vec<u8>, Vec<u8>)>>;

/// Journal entries kept while etcd is away.
pub const KEEP_PENDING: usize = 10_000;

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.keys.prefix)
            .field("node", &self.node)
            .finish()
    }
}

/// The fleet's version in force, as read from etcd.
#[derive(Clone, Debug, PartialEq)]
pub struct InForce {
    /// Its number (0: no version yet; the fleet is empty).
    pub version: u64,
    /// The `mod_revision` of `current`.
    pub mod_revision: i64,
    /// The store's revision when it was read (a watch goes on from after it).
    pub revision: i64,
}

impl EtcdStore {
    /// A store over `gateway` under `prefix`, for node `node`; its calls run on
    /// `runtime` (the fleet thread's).
    pub fn new(
        gateway: Gateway,
        prefix: &str,
        node: &str,
        runtime: tokio::runtime::Handle,
    ) -> EtcdStore {
        EtcdStore {
            gateway: Arc::new(gateway),
            keys: Keys::new(prefix),
            node: node.to_string(),
            runtime,
            journal_writes: AtomicU64::new(0),
            pending: Default::default(),
            flushing: Default::default(),
            prune_due: Default::default(),
        }
    }

    /// The client.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The runtime the calls run on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Runs `call` on the fleet thread and waits for it (at most [`WAIT`]). Never call
    /// from the fleet thread itself.
    pub fn block<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.block_within(WAIT, call)
    }

    /// [`EtcdStore::block`], waiting at most `wait`.
    pub fn block_within<T, F>(&self, wait: Duration, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = sender.send(call.await);
        });
        receiver.recv_timeout(wait).unwrap_or_else(|_| {
            Err(StoreError::Etcd(GatewayError::Unreachable(format!(
                "no answer within {wait:?}"
            ))))
        })
    }

    /// The fleet's version in force.
    pub async fn in_force(gateway: &Gateway, keys: &Keys) -> Result<InForce, StoreError> {
        let range = gateway
            .range(&keys.current(), None, RangeOptions::default())
            .await?;
        let (version, mod_revision) = match range.kvs.first() {
            None => (0, 0),
            Some(kv) => (
                number(&kv.value, "version", &keys.current())?,
                kv.mod_revision,
            ),
        };
        Ok(InForce {
            version,
            mod_revision,
            revision: range.revision,
        })
    }

    /// Version `id`, read on the caller's runtime.
    pub async fn read_version(
        gateway: &Gateway,
        keys: &Keys,
        id: u64,
    ) -> Result<Option<Version>, StoreError> {
        let key = keys.version(id);
        let range = gateway.range(&key, None, RangeOptions::default()).await?;
        range
            .kvs
            .first()
            .map(|kv| parse(&kv.value, &key))
            .transpose()
    }

    /// The fleet's version in force, from a synchronous caller.
    pub fn in_force_now(&self) -> Result<InForce, StoreError> {
        let (gateway, keys) = (Arc::clone(&self.gateway), self.keys.clone());
        self.block(async move { EtcdStore::in_force(&gateway, &keys).await })
    }
}

/// Records `version` (see the module doc: compare-and-swap on `head` and `current`).
async fn record(
    gateway: Arc<Gateway>,
    keys: Keys,
    new: OwnedVersion,
    stage: Option<(Stage, i64)>,
) -> Result<(Version, Option<Rollout>), StoreError> {
    let applied = new.version.outcome == Outcome::Applied;
    for _ in 0..TRIES {
        let mut preempted = None;
        let read = gateway
            .txn(
                &[],
                &[
                    Operation::Get(keys.head()),
                    Operation::Get(keys.current()),
                    Operation::Get(keys.rollout()),
                ],
                &[],
            )
            .await?;
        let rollout_mod = match read.ranges.get(2).and_then(|r| r.kvs.first()) {
            None => 0,
            Some(kv) => {
                let rollout: Rollout = parse(&kv.value, &kv.key)?;
                let in_progress = rollout.state == RolloutState::Canary;
                if applied && in_progress && new.version.origin == super::Origin::Rollback {
                    // A rollback of the version in force (the guard's, an operator's)
                    // never waits for a rollout: it ends it.
                    let mut ended = rollout.clone();
                    ended.state = RolloutState::RolledBack;
                    ended.reason = "ended by a rollback of the version in force".into();
                    preempted = Some(ended);
                } else if applied && in_progress {
                    return Err(StoreError::RolloutInProgress {
                        version: rollout.version,
                        canaries: rollout.canaries.join(", "),
                    });
                }
                kv.mod_revision
            }
        };
        let (head, head_mod) = match read.ranges.first().and_then(|r| r.kvs.first()) {
            None => (0, 0),
            Some(kv) => (number(&kv.value, "id", &keys.head())?, kv.mod_revision),
        };
        let (in_force, current_mod) = match read.ranges.get(1).and_then(|r| r.kvs.first()) {
            None => (0, 0),
            Some(kv) => (
                number(&kv.value, "version", &keys.current())?,
                kv.mod_revision,
            ),
        };
        if let (true, Some(seen)) = (applied, new.seen) {
            // A canary's rollback ends its rollout: it saw the rollout's version.
            let canary = preempted.as_ref().is_some_and(|r| r.version == seen);
            if in_force != seen && !canary {
                return Err(StoreError::Conflict { in_force, seen });
            }
        }
        let mut version = new.version.clone();
        version.id = head + 1;
        let value = serde_json::to_vec(&version).unwrap_or_default();
        let mut compare = vec![Compare::ModRevision(keys.head(), head_mod)];
        let mut operations = vec![
            Operation::Put(keys.version(version.id), value),
            Operation::Put(
                keys.head(),
                json!({ "id": version.id }).to_string().into_bytes(),
            ),
        ];
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let rollout = stage.as_ref().map(|(stage, _)| Rollout {
            version: version.id,
            previous: in_force,
            canaries: stage.canaries.clone(),
            state: RolloutState::Canary,
            reason: String::new(),
            by: stage.by.clone(),
            started: version.time.clone(),
            deadline: now + stage.seconds,
        });
        if applied {
            compare.push(Compare::ModRevision(keys.current(), current_mod));
            compare.push(Compare::ModRevision(keys.rollout(), rollout_mod));
            // Staged: the canaries take it from the rollout; the version in force
            // stays until the rollout is promoted.
            operations.push(match &rollout {
                None => Operation::Put(
                    keys.current(),
                    json!({ "version": version.id }).to_string().into_bytes(),
                ),
                Some(rollout) => Operation::Put(
                    keys.rollout(),
                    serde_json::to_vec(rollout).unwrap_or_default(),
                ),
            });
            if let Some((_, lease)) = &stage {
                operations.push(Operation::PutLeased(
                    keys.deadline(),
                    json!({ "version": version.id }).to_string().into_bytes(),
                    *lease,
                ));
            }
        }
        if let Some(ended) = &preempted {
            operations.push(Operation::Put(
                keys.rollout(),
                serde_json::to_vec(ended).unwrap_or_default(),
            ));
        }
        if gateway.txn(&compare, &operations, &[]).await?.succeeded {
            let keep_from = version.id.saturating_sub(KEEP_VERSIONS - 1);
            let in_force = if applied && rollout.is_none() {
                version.id
            } else {
                in_force
            };
            if keep_from > 1 {
                // The version in force is never deleted, however old.
                let end = keep_from.min(in_force.max(1));
                if let Err(e) = gateway
                    .delete_range(&keys.version(0), &keys.version(end))
                    .await
                {
                    tracing::warn!(error = %e, "cannot prune old versions from the fleet store");
                }
            }
            return Ok((version, rollout));
        }
    }
    Err(StoreError::Etcd(GatewayError::Unreachable(format!(
        "the version counter kept changing over {TRIES} tries"
    ))))
}

/// A version recorded for a staged rollout instead of put in force.
#[derive(Clone, Debug)]
pub struct Stage {
    /// The canary nodes.
    pub canaries: Vec<String>,
    /// How long the rollout may wait for every canary's verdict, in seconds: the
    /// lifetime of the lease its deadline key is bound to.
    pub seconds: u64,
    /// The node starting it.
    pub by: String,
}

/// A [`NewVersion`] made owned (it crosses to the fleet thread).
#[derive(Clone, Debug)]
struct OwnedVersion {
    version: Version,
    seen: Option<u64>,
}

impl Store for EtcdStore {
    fn record(&self, new: NewVersion<'_>) -> Result<Version, StoreError> {
        let new = self.owned(new);
        let (gateway, keys) = (Arc::clone(&self.gateway), self.keys.clone());
        self.block(async move { Ok(record(gateway, keys, new, None).await?.0) })
    }

    fn versions(&self) -> Result<Vec<Version>, StoreError> {
        let (gateway, keys) = (Arc::clone(&self.gateway), self.keys.clone());
        self.block(async move {
            let prefix = keys.versions();
            let range = gateway
                .range_prefix(&prefix, RangeOptions::default())
                .await?;
            range
                .kvs
                .iter()
                .map(|kv| parse(&kv.value, &kv.key))
                .collect()
        })
    }

    fn version(&self, id: u64) -> Result<Option<Version>, StoreError> {
        let (gateway, keys) = (Arc::clone(&self.gateway), self.keys.clone());
        self.block(async move { EtcdStore::read_version(&gateway, &keys, id).await })
    }

    fn journal(
        &self,
        version: Option<u64>,
        event: &crate::health::Event,
    ) -> Result<u64, StoreError> {
        let now = SystemTime::now();
        let nanos = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let data = serde_json::to_value(event).unwrap_or_default();
        let entry = JournalEntry {
            id: 0,
            time: humantime::format_rfc3339_millis(now).to_string(),
            version,
            kind: data["kind"].as_str().unwrap_or("event").to_string(),
            message: event.to_string(),
            data,
            node: Some(self.node.clone()),
        };
        let key = self.keys.journal_entry(nanos, &self.node);
        let value = serde_json::to_vec(&entry).unwrap_or_default();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.len() >= KEEP_PENDING {
                pending.pop_front();
                tracing::warn!("etcd has been away for {KEEP_PENDING} journal entries: the oldest kept one is dropped");
            }
            pending.push_back((key, value));
        }
        if self.journal_writes.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == 0 {
            self.prune_due.store(true, Ordering::Relaxed);
        }
        // Written by the fleet thread, never waited for: the monitor must not stall
        // on etcd (its alarms and guard run on the same thread). What etcd does not
        // take now is kept and written when it answers again.
        self.flush_soon();
        Ok(0)
    }

    fn journal_entries(
        &self,
        after: u64,
        since: Option<&str>,
        until: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let prefix = self.keys.journal();
        let at = |time: Option<&str>| {
            time.and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
        };
        let start = at(since).map_or_else(|| prefix.clone(), |n| self.keys.journal_entry(n, ""));
        // Until is inclusive (to the millisecond the journal shows).
        let end = at(until).map_or_else(
            || gateway::prefix_end(&prefix),
            |n| self.keys.journal_entry(n + 1_000_000, ""),
        );
        let (gateway, limit) = (
            Arc::clone(&self.gateway),
            limit.min(i64::MAX as usize) as i64,
        );
        self.block(async move {
            let options = RangeOptions {
                limit,
                min_create_revision: after as i64 + 1,
                by_creation: true,
                ..RangeOptions::default()
            };
            let range = gateway.range(&start, Some(&end), options).await?;
            range
                .kvs
                .iter()
                .map(|kv| {
                    let mut entry: JournalEntry = parse(&kv.value, &kv.key)?;
                    entry.id = kv.create_revision as u64;
                    Ok(entry)
                })
                .collect()
        })
    }

    fn reject(&self, sha256: &str, version: u64, reason: &str) -> Result<(), StoreError> {
        let rejection = Rejection {
            version,
            reason: reason.to_string(),
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        };
        let key = self.keys.rejected(sha256);
        let value = serde_json::to_vec(&rejection).unwrap_or_default();
        let gateway = Arc::clone(&self.gateway);
        self.block(async move { Ok(gateway.put(&key, &value, 0).await.map(drop)?) })
    }

    fn rejection(&self, sha256: &str) -> Result<Option<Rejection>, StoreError> {
        let key = self.keys.rejected(sha256);
        let gateway = Arc::clone(&self.gateway);
        self.block(async move {
            let range = gateway.range(&key, None, RangeOptions::default()).await?;
            range
                .kvs
                .first()
                .map(|kv| parse(&kv.value, &key))
                .transpose()
        })
    }

    fn fleet(&self) -> Option<&EtcdStore> {
        Some(self)
    }
}

/// Journal entries written in one transaction.
const FLUSH_BATCH: usize = 64;

/// Writes the journal entries waiting in `pending`, oldest first, [`FLUSH_BATCH`] to a
/// transaction; stops at the first failure (they wait for the next attempt).
async fn flush(gateway: &Gateway, pending: &Pending) -> Result<(), GatewayError> {
    loop {
        let batch: Vec<(Vec<u8>, Vec<u8>)> = pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .take(FLUSH_BATCH)
            .cloned()
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let operations: Vec<Operation> = batch
            .iter()
            .map(|(key, value)| Operation::Put(key.clone(), value.clone()))
            .collect();
        gateway.txn(&[], &operations, &[]).await?;
        let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
        // What is still at the front of what was written (another flush, at shutdown,
        // may have taken some already): never an entry that was not.
        for (key, _) in &batch {
            if pending.front().is_some_and(|(k, _)| k == key) {
                pending.pop_front();
            }
        }
    }
}

/// Clears the flusher's flag when the flusher ends, however it ends.
struct Flushing(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Flushing {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl EtcdStore {
    /// `new`, owned, as this node writes it.
    fn owned(&self, new: NewVersion<'_>) -> OwnedVersion {
        OwnedVersion {
            version: Version {
                id: 0,
                time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                origin: new.origin,
                sha256: new
                    .identity
                    .map_or_else(|| super::sha256(new.text), str::to_string),
                text: new.text.to_string(),
                certificates: new.certificates.to_vec(),
                outcome: new.outcome,
                detail: new.detail.to_string(),
                restores: new.restores,
                node: Some(self.node.clone()),
                expect_shift: new.expect_shift,
            },
            seen: new.seen,
        }
    }

    /// Records `new` (an applied version) as a staged rollout to `stage`'s canaries,
    /// leaving the version in force as it is: the same compare-and-swap as an apply,
    /// and refused while another rollout is in progress.
    pub fn stage(
        &self,
        new: NewVersion<'_>,
        stage: Stage,
    ) -> Result<(Version, Rollout), StoreError> {
        let new = self.owned(new);
        let (gateway, keys) = (Arc::clone(&self.gateway), self.keys.clone());
        self.block(async move {
            let lease = gateway.lease_grant(stage.seconds).await?;
            match record(gateway, keys, new, Some((stage, lease))).await? {
                (version, Some(rollout)) => Ok((version, rollout)),
                (version, None) => Err(StoreError::Corrupt {
                    key: format!("versions/{}", version.id),
                    detail: "recorded without its rollout".into(),
                }),
            }
        })
    }

    /// Writes the journal entries waiting for etcd, waiting at most `wait` (at
    /// shutdown: the last events of a node must not be lost).
    pub fn flush_within(&self, wait: Duration) -> Result<(), StoreError> {
        let (gateway, pending) = (Arc::clone(&self.gateway), Arc::clone(&self.pending));
        self.block_within(wait, async move { Ok(flush(&gateway, &pending).await?) })
    }

    /// Starts writing the journal entries waiting for etcd, on the fleet thread,
    /// unless a flusher is at it already (one at a time, so entries stay in order); it
    /// prunes the journal after, when that is due.
    pub fn flush_soon(&self) {
        if self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut guard = Flushing(Arc::clone(&self.flushing));
        let (gateway, keys, pending, prune_due) = (
            Arc::clone(&self.gateway),
            self.keys.clone(),
            Arc::clone(&self.pending),
            Arc::clone(&self.prune_due),
        );
        self.runtime.spawn(async move {
            loop {
                if let Err(e) = flush(&gateway, &pending).await {
                    tracing::debug!(error = %e, "journal entries wait for etcd");
                    return;
                }
                if prune_due.swap(false, Ordering::Relaxed) {
                    if let Err(e) = prune_journal(&gateway, &keys).await {
                        prune_due.store(true, Ordering::Relaxed);
                        tracing::warn!(error = %e, "cannot prune the fleet journal");
                    }
                }
                let flushing = Arc::clone(&guard.0);
                drop(guard);
                // An entry queued after the last batch, while the flag was still up,
                // would wait for the next one: look again.
                let more = !pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
                if !more || flushing.swap(true, Ordering::AcqRel) {
                    return;
                }
                guard = Flushing(flushing);
            }
        });
    }
}

/// Deletes the oldest journal entries beyond [`KEEP_JOURNAL`].
async fn prune_journal(gateway: &Gateway, keys: &Keys) -> Result<(), GatewayError> {
    let prefix = keys.journal();
    let end = gateway::prefix_end(&prefix);
    let count = gateway
        .range(
            &prefix,
            Some(&end),
            RangeOptions {
                count_only: true,
                ..RangeOptions::default()
            },
        )
        .await?
        .count;
    let excess = count - KEEP_JOURNAL;
    if excess <= 0 {
        return Ok(());
    }
    let oldest = gateway
        .range(
            &prefix,
            Some(&end),
            RangeOptions {
                limit: excess,
                keys_only: true,
                ..RangeOptions::default()
            },
        )
        .await?;
    if let Some(last) = oldest.kvs.last() {
        let mut through = last.key.clone();
        through.push(0);
        gateway.delete_range(&prefix, &through).await?;
    }
    Ok(())
}

/// Reads a JSON value evenkeel wrote at `key`.
pub fn parse<T: serde::de::DeserializeOwned>(value: &[u8], key: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

/// Reads `{"FIELD": N}` at `key`.
pub fn number(value: &[u8], field: &str, key: &[u8]) -> Result<u64, StoreError> {
    let value: serde_json::Value = parse(value, key)?;
    value[field].as_u64().ok_or_else(|| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: format!("no number {field:?}"),
    })
}
