//! The two loops a fleet node runs on its fleet thread: following the fleet's version
//! in force, and reporting itself under a lease.

use std::sync::Arc;
use std::time::Duration;

use super::rollout::{self, Decision, Judgement, State, Verdict};
use super::status::NodeReport;
use super::{Fleet, BACKOFF_MAX, HEARTBEAT, LEASE_TTL};
use crate::apply::{Adoption, Applier};
use crate::health::Event;
use crate::monitor::Monitor;
use crate::store::etcd::gateway::{Compare, GatewayError, Operation, WatchMessage};
use crate::store::etcd::EtcdStore;
use crate::store::StoreError;

/// How often a node reads the fleet even though its watch said nothing.
const RECHECK: Duration = Duration::from_secs(5);
/// How long a node waits before trying again a version it could not load.
const RETRY_REFUSED: Duration = Duration::from_secs(30);
/// How often a node judges a rollout in progress (deadlines, canaries that left).
const COORDINATE_EVERY: Duration = Duration::from_secs(1);
/// How often the report loop looks for a change worth reporting at once.
const CHANGE_POLL: Duration = Duration::from_millis(100);
/// First wait after a failure to reach etcd; doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Starts following the fleet and reporting this node, on the fleet thread. Both run
/// as long as the process.
pub fn start(fleet: Arc<Fleet>, applier: Arc<Applier>, monitor: Arc<Monitor>) {
    let runtime = fleet.store().runtime().clone();
    runtime.spawn(follow_forever(Arc::clone(&fleet), Arc::clone(&applier)));
    runtime.spawn(judge_as_canary(Arc::clone(&fleet), Arc::clone(&applier)));
    runtime.spawn(report_forever(fleet, applier, monitor));
}

/// Follows the fleet's version in force; after a failure, waits (with backoff) and
/// reads everything again.
async fn follow_forever(fleet: Arc<Fleet>, applier: Arc<Applier>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match follow(&fleet, &applier, &mut backoff).await {
            // A compaction cut the watch, or it missed a change: again at once.
            Ok(()) => {}
            Err(e) => {
                fleet.failed(&e.to_string());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Reads the version in force (seeding an empty fleet), puts in force what this node
/// should serve, then watches `PREFIX/current*` (the version in force, the rollout, the
/// verdicts) from the revision read. While a rollout is in progress it judges it every
/// [`COORDINATE_EVERY`]; every [`RECHECK`] it reads the fleet anyway, and starts the
/// watch again if that found a change the watch did not deliver (a connection that
/// died without a word). Returns `Ok` when a compaction ended the watch, an error when
/// etcd failed.
async fn follow(
    fleet: &Arc<Fleet>,
    applier: &Arc<Applier>,
    backoff: &mut Duration,
) -> Result<(), StoreError> {
    let store = fleet.store();
    let (gateway, keys) = (store.gateway(), store.keys());
    let mut in_force = EtcdStore::in_force(gateway, keys).await?;
    fleet.reached();
    if in_force.version == 0 {
        let seeding = Arc::clone(applier);
        blocking(move || seeding.seed()).await??;
        in_force = EtcdStore::in_force(gateway, keys).await?;
    }
    reconcile(fleet, applier).await?;
    // Catching up comes first; the journal kept meanwhile after, in the background.
    store.flush_soon();
    let (start, end) = keys.watched();
    let mut watch = gateway.watch(&start, &end, in_force.revision + 1).await?;
    *backoff = BACKOFF_MIN;
    // The store's revision up to which the watch has told everything.
    let mut delivered = in_force.revision;
    let mut tick = tokio::time::interval(COORDINATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = watch.next() => match message? {
                None => return Err(GatewayError::Unreachable("etcd ended the watch".into()).into()),
                Some(WatchMessage::Compacted { compact_revision }) => {
                    tracing::info!(compact_revision, "the fleet watch was compacted away; reading the fleet again");
                    return Ok(());
                }
                Some(WatchMessage::Progress { revision }) => {
                    fleet.reached();
                    delivered = delivered.max(revision);
                }
                Some(WatchMessage::Events { revision, .. }) => {
                    fleet.reached();
                    delivered = delivered.max(revision);
                    reconcile(fleet, applier).await?;
                }
            },
            _ = tick.tick() => {
                if fleet.rollout().is_some_and(|r| r.state == State::Canary)
                    && coordinate(fleet, applier).await?
                {
                    reconcile(fleet, applier).await?;
                }
            }
            _ = recheck.tick() => {
                let changed = reconcile(fleet, applier).await?;
                if changed > delivered {
                    // Not etcd's failure: no alarm, no backoff.
                    tracing::warn!(changed, delivered, "the fleet watch missed a change (a connection gone silent?); watching again");
                    return Ok(());
                }
            }
            () = fleet.wake.notified() => {
                return Err(GatewayError::Unreachable("a heartbeat failed; watching again".into()).into())
            }
        }
    }
}

/// Puts in force what this node should serve: the rollout's version while it is one
/// of its canaries (and its guard has not sent it back), else the fleet's version in
/// force (a canary whose rollout ended without promotion goes back to it as a
/// rollback). A rollout that is over is ended first, so no canary takes again what
/// its rollout decided against. The revision of the last change it read (of the
/// version in force or the rollout).
async fn reconcile(fleet: &Arc<Fleet>, applier: &Arc<Applier>) -> Result<i64, StoreError> {
    let store = fleet.store();
    let (mut in_force, mut rollout) = rollout::read_state(store).await?;
    if rollout
        .as_ref()
        .is_some_and(|(r, _)| r.state == State::Canary)
        && coordinate(fleet, applier).await?
    {
        (in_force, rollout) = rollout::read_state(store).await?;
    }
    let rollout_revision = rollout.as_ref().map(|(_, revision)| *revision);
    let rollout = rollout.map(|(r, _)| r);
    let node = store.node();
    let returned = fleet.returned_from();
    let (desired, how) = match &rollout {
        Some(r)
            if r.state == State::Canary
                && r.canaries.iter().any(|c| c == node)
                && returned != Some(r.version) =>
        {
            (r.version, Adoption::Canary)
        }
        // Back from a rollout that did not promote: to the version it started from (a
        // rollback, not watched); a version applied since is taken as any other.
        Some(r) if r.state != State::Promoted && applier.current() == r.version => {
            let how = if in_force.version == r.previous {
                Adoption::Return
            } else {
                Adoption::InForce
            };
            (in_force.version, how)
        }
        _ => (in_force.version, Adoption::InForce),
    };
    let changed = in_force
        .mod_revision
        .max(rollout_revision.unwrap_or_default());
    fleet.set_rollout(rollout);
    if let Some(reason) = catch_up(fleet, applier, desired, how).await? {
        if fleet.canary_of(desired).is_some() {
            let verdict = Verdict {
                version: desired,
                verdict: Judgement::Refused,
                reason,
            };
            rollout::put_verdict(store, &verdict).await?;
        }
    }
    Ok(changed)
}

/// Ends the rollout in progress when [`rollout::decide`] says so (every node does
/// this; the first transaction wins), and journals it on the node that ended it.
/// Whether the rollout is over now.
async fn coordinate(fleet: &Arc<Fleet>, applier: &Arc<Applier>) -> Result<bool, StoreError> {
    let store = fleet.store();
    let Some((rollout, revision)) = rollout::read(store).await? else {
        return Ok(false);
    };
    if rollout.state != State::Canary {
        return Ok(true);
    }
    let verdicts = rollout::verdicts(store).await?;
    let live = rollout::live_nodes(store).await?;
    let expired = !rollout::deadline_holds(store, rollout.version).await?;
    let Some(decision) = rollout::decide(&rollout, &verdicts, &live, expired) else {
        return Ok(false);
    };
    if rollout::finish(store, &rollout, revision, &decision).await? {
        let (verdict, reason) = match &decision {
            Decision::Promote => (
                "promoted",
                format!("every canary ({}) held", rollout.canaries.join(", ")),
            ),
            Decision::RollBack(reason) => ("rolled_back", reason.clone()),
        };
        applier.runtime().events.emit(Event::Rollout {
            version: rollout.version,
            verdict,
            canaries: rollout.canaries.clone(),
            reason,
        });
    }
    Ok(true)
}

/// Puts fleet version `id` in force here (as `how` says), unless it is already, or
/// this node refused it already; the reason when it refuses it now.
async fn catch_up(
    fleet: &Arc<Fleet>,
    applier: &Arc<Applier>,
    id: u64,
    how: Adoption,
) -> Result<Option<String>, StoreError> {
    if id == 0 || id == applier.current() {
        fleet.clear_refusal();
        // A canary's version that became the fleet's is the one to keep for a
        // restart without etcd.
        if id != 0 && how == Adoption::InForce && applier.kept() != id {
            if let Some(version) =
                EtcdStore::read_version(fleet.store().gateway(), fleet.store().keys(), id).await?
            {
                let keeping = Arc::clone(applier);
                blocking(move || keeping.keep(&version)).await?;
            }
        }
        return Ok(None);
    }
    // A version refused here is tried again now and then: the file it lacked may
    // have been deployed since.
    if fleet.refused_recently(id, RETRY_REFUSED) {
        return Ok(None);
    }
    let store = fleet.store();
    let version = EtcdStore::read_version(store.gateway(), store.keys(), id)
        .await?
        .ok_or_else(|| StoreError::Corrupt {
            key: String::from_utf8_lossy(&store.keys().version(id)).into_owned(),
            detail: "the version to serve is missing".into(),
        })?;
    let version_for_report = version.clone();
    let adopting = Arc::clone(applier);
    match blocking(move || adopting.adopt(&version, how)).await? {
        Ok(()) => {
            fleet.clear_refusal();
            Ok(None)
        }
        Err(reason) => {
            // Said (log, journal) when it is news; a retry that fails the same way is
            // quiet.
            let news = fleet
                .refusal()
                .is_none_or(|r| r.version != id || r.reason != reason);
            if news {
                tracing::error!(version = id, "ALARM: this node cannot put the fleet's version in force and keeps serving version {}: {reason}", applier.current());
                applier.report_refusal(&version_for_report, applier.current(), &reason);
            }
            fleet.refused(id, &reason);
            Ok(Some(reason))
        }
    }
}

/// Turns this node's guard verdicts on a version it is a canary of into its verdict
/// in the rollout (`passed` on too little traffic is `unjudged`: no evidence).
async fn judge_as_canary(fleet: Arc<Fleet>, applier: Arc<Applier>) {
    let mut events = applier.runtime().events.subscribe();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Event::Guard {
            version,
            verdict,
            reason,
            judged,
            ..
        } = event
        else {
            continue;
        };
        if fleet.canary_of(version).is_none() {
            continue;
        }
        let verdict = Verdict {
            version,
            verdict: match (verdict, judged) {
                ("passed", true) => Judgement::Held,
                ("passed", false) => Judgement::Unjudged,
                _ => Judgement::Breached,
            },
            reason,
        };
        // Until it is written, or the rollout ended without it.
        let mut backoff = BACKOFF_MIN;
        while fleet.canary_of(version).is_some() {
            match rollout::put_verdict(fleet.store(), &verdict).await {
                Ok(()) => break,
                Err(e) => {
                    fleet.failed(&e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
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
            Ok(()) => {
                fleet.reached();
                // Journal entries a failed write left behind, written in the
                // background: the heartbeat must not wait for a backlog.
                fleet.store().flush_soon();
            }
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
    let key = store.keys().node(store.node());
    // Written only over this node's own report; what else held the key says whether
    // another process reports under this node id.
    let answer = gateway
        .txn(
            &[Compare::Lease(key.clone(), *lease)],
            &[Operation::PutLeased(key.clone(), value.clone(), *lease)],
            &[Operation::Get(key.clone())],
        )
        .await?;
    if answer.succeeded {
        fleet.set_duplicate(None);
        return Ok(());
    }
    let holder = answer.ranges.first().and_then(|r| r.kvs.first());
    if let Some(kv) = holder.filter(|kv| kv.lease != 0 && kv.lease != *lease) {
        let other = serde_json::from_slice::<NodeReport>(&kv.value)
            .map(|o| {
                format!(
                    "pid {} on admin {}",
                    o.pid,
                    o.admin.as_deref().unwrap_or("-")
                )
            })
            .unwrap_or_else(|_| "an unreadable report".into());
        fleet.set_duplicate(Some(other));
    }
    gateway.put(&key, &value, *lease).await?;
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
