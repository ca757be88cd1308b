//! The two loops a fleet node runs on its fleet thread: following the fleet's version
//! in force, and reporting itself under a lease.

use std::sync::Arc;
use std::time::Duration;

use super::status::NodeReport;
use super::{Fleet, BACKOFF_MAX, HEARTBEAT, LEASE_TTL};
use crate::apply::Applier;
use crate::monitor::Monitor;
use crate::store::etcd::gateway::{GatewayError, WatchMessage};
use crate::store::etcd::EtcdStore;
use crate::store::StoreError;

/// How often the report loop looks for a change worth reporting at once.
const CHANGE_POLL: Duration = Duration::from_millis(100);
/// First wait after a failure to reach etcd; doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Starts following the fleet and reporting this node, on the fleet thread. Both run
/// as long as the process.
pub fn start(fleet: Arc<Fleet>, applier: Arc<Applier>, monitor: Arc<Monitor>) {
    let runtime = fleet.store().runtime().clone();
    runtime.spawn(follow_forever(Arc::clone(&fleet), Arc::clone(&applier)));
    runtime.spawn(report_forever(fleet, applier, monitor));
}

/// Follows the fleet's version in force; after a failure, waits (with backoff) and
/// reads everything again.
async fn follow_forever(fleet: Arc<Fleet>, applier: Arc<Applier>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match follow(&fleet, &applier).await {
            // A compaction cut the watch: read everything again at once.
            Ok(()) => backoff = BACKOFF_MIN,
            Err(e) => {
                fleet.failed(&e.to_string());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Reads the version in force (seeding an empty fleet), puts it in force, then
/// watches `current` from the revision read. Returns `Ok` when a compaction ended the
/// watch, an error when etcd failed.
async fn follow(fleet: &Arc<Fleet>, applier: &Arc<Applier>) -> Result<(), StoreError> {
    let store = fleet.store();
    let (gateway, keys) = (store.gateway(), store.keys());
    let mut in_force = EtcdStore::in_force(gateway, keys).await?;
    fleet.reached();
    store.flush_journal().await?;
    if in_force.version == 0 {
        let seeding = Arc::clone(applier);
        blocking(move || seeding.seed()).await??;
        in_force = EtcdStore::in_force(gateway, keys).await?;
    }
    catch_up(fleet, applier, in_force.version).await?;
    let key = keys.current();
    let mut end = key.clone();
    end.push(0);
    let mut watch = gateway.watch(&key, &end, in_force.revision + 1).await?;
    loop {
        let message = tokio::select! {
            message = watch.next() => message?,
            () = fleet.wake.notified() => {
                return Err(GatewayError::Unreachable("a heartbeat failed; watching again".into()).into())
            }
        };
        match message {
            None => return Err(GatewayError::Unreachable("etcd ended the watch".into()).into()),
            Some(WatchMessage::Compacted { compact_revision }) => {
                tracing::info!(
                    compact_revision,
                    "the fleet watch was compacted away; reading the fleet again"
                );
                return Ok(());
            }
            Some(WatchMessage::Progress { .. }) => fleet.reached(),
            Some(WatchMessage::Events { events, .. }) => {
                fleet.reached();
                if let Some(last) = events.iter().rev().find(|e| !e.deleted) {
                    let id = crate::store::etcd::number(&last.kv.value, "version", &last.kv.key)?;
                    catch_up(fleet, applier, id).await?;
                }
            }
        }
    }
}

/// Puts fleet version `id` in force here, unless it is already, or this node refused
/// it already.
async fn catch_up(fleet: &Arc<Fleet>, applier: &Arc<Applier>, id: u64) -> Result<(), StoreError> {
    if id == 0 || id == applier.current() {
        fleet.clear_refusal();
        return Ok(());
    }
    if fleet.refusal().is_some_and(|r| r.version == id) {
        return Ok(());
    }
    let store = fleet.store();
    let version = EtcdStore::read_version(store.gateway(), store.keys(), id)
        .await?
        .ok_or_else(|| StoreError::Corrupt {
            key: String::from_utf8_lossy(&store.keys().version(id)).into_owned(),
            detail: "the version in force is missing".into(),
        })?;
    let adopting = Arc::clone(applier);
    match blocking(move || adopting.adopt(&version)).await? {
        Ok(()) => fleet.clear_refusal(),
        Err(reason) => {
            tracing::error!(version = id, "ALARM: this node cannot put the fleet's version in force and keeps serving version {}: {reason}", applier.current());
            fleet.refused(id, &reason);
        }
    }
    Ok(())
}

/// Rewrites this node's report every [`HEARTBEAT`], under a lease of [`LEASE_TTL`],
/// and at once when the version it serves or its refusal changes (so `fleet status`
/// shows an apply's progress as it happens).
async fn report_forever(fleet: Arc<Fleet>, applier: Arc<Applier>, monitor: Arc<Monitor>) {
    let mut lease = 0;
    let mut tick = tokio::time::interval(CHANGE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(tokio::time::Instant, u64, Option<super::Refusal>)> = None;
    loop {
        tick.tick().await;
        let (version, refusal) = (applier.current(), fleet.refusal());
        let due = last
            .as_ref()
            .is_none_or(|(at, v, r)| at.elapsed() >= HEARTBEAT || *v != version || *r != refusal);
        if !due {
            continue;
        }
        let report = NodeReport::of(&fleet, &applier, &monitor);
        match report_once(&fleet, &report, &mut lease).await {
            Ok(()) => fleet.reached(),
            Err(e) => {
                if fleet.unreachable().is_none() {
                    // The watch may hang on a connection that died silently.
                    fleet.wake.notify_one();
                }
                fleet.failed(&e.to_string());
            }
        }
        last = Some((tokio::time::Instant::now(), report.version, report.refusal));
    }
}

async fn report_once(
    fleet: &Fleet,
    report: &NodeReport,
    lease: &mut i64,
) -> Result<(), GatewayError> {
    let store = fleet.store();
    let gateway = store.gateway();
    if *lease != 0 && gateway.lease_keepalive(*lease).await? <= 0 {
        // It expired while etcd was away: the report went with it.
        *lease = 0;
    }
    if *lease == 0 {
        *lease = gateway.lease_grant(LEASE_TTL).await?;
        fleet.set_lease(*lease);
    }
    let value = serde_json::to_vec(report).unwrap_or_default();
    gateway
        .put(&store.keys().node(store.node()), &value, *lease)
        .await?;
    Ok(())
}

/// Runs `work` (which may wait on the store) off the fleet thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Etcd(GatewayError::Unreachable(format!("fleet task failed: {e}"))))
}
