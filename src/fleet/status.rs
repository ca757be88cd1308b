//! What each node of a fleet reports, and the fleet's status as `evenkeel fleet status`
//! and `GET /fleet` show it.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Fleet, Refusal};
use crate::apply::Applier;
use crate::monitor::Monitor;
use crate::store::etcd::gateway::RangeOptions;
use crate::store::etcd::EtcdStore;
use crate::store::StoreError;

/// One node's report (the value of `PREFIX/nodes/NODE`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's id.
    pub node: String,
    /// Its admin listener, if it has one.
    pub admin: Option<String>,
    /// The fleet version it serves (0: its own file, not yet a fleet version).
    pub version: u64,
    /// A fleet version it could not put in force.
    pub refusal: Option<Refusal>,
    /// The keys of its alarms in force.
    pub alarms: Vec<String>,
    /// When it wrote this report (RFC 3339).
    pub heartbeat: String,
    /// When the node started (RFC 3339).
    pub started: String,
    /// Its process id.
    pub pid: u32,
}

impl NodeReport {
    /// This node's report now.
    pub fn of(fleet: &Fleet, applier: &Applier, monitor: &Monitor) -> NodeReport {
        let mut alarms: Vec<String> = monitor
            .state()
            .alarms
            .iter()
            .map(|a| a.subject.key.clone())
            .collect();
        let store_alarm = crate::monitor::alarms::Kind::StoreUnreachable.name();
        // The monitor raises it a tick later: said at once, and once.
        if fleet.unreachable().is_some() && !alarms.iter().any(|a| a == store_alarm) {
            alarms.push(store_alarm.to_string());
        }
        NodeReport {
            node: fleet.store().node().to_string(),
            admin: fleet.admin().map(|a| a.to_string()),
            version: applier.current(),
            refusal: fleet.refusal(),
            alarms,
            heartbeat: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            started: humantime::format_rfc3339_seconds(fleet.started).to_string(),
            pid: std::process::id(),
        }
    }
}

/// The fleet as etcd has it: the version in force and every node's report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The key prefix.
    pub prefix: String,
    /// The fleet's version in force (0: none yet).
    pub version: u64,
    /// The node that answered.
    pub node: String,
    /// Every node whose lease is alive, by id.
    pub nodes: Vec<NodeReport>,
    /// Nodes not serving the version in force (refused it, or behind, or canaries of
    /// the rollout in progress), by id.
    pub stragglers: Vec<String>,
    /// The rollout in progress, or the last one.
    #[serde(default)]
    pub rollout: Option<super::rollout::Rollout>,
    /// The canaries' verdicts on the rollout's version, by node.
    #[serde(default)]
    pub verdicts: Vec<(String, super::rollout::Verdict)>,
}

/// Reads the fleet's status from etcd (on the caller's runtime).
pub async fn read(store: &EtcdStore) -> Result<FleetStatus, StoreError> {
    let (gateway, keys) = (store.gateway(), store.keys());
    let in_force = EtcdStore::in_force(gateway, keys).await?;
    let prefix = keys.nodes();
    let range = gateway
        .range_prefix(&prefix, RangeOptions::default())
        .await?;
    let mut nodes = Vec::new();
    for kv in &range.kvs {
        match serde_json::from_slice::<NodeReport>(&kv.value) {
            Ok(report) => nodes.push(report),
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(&kv.key), error = %e, "an unreadable node report; skipped")
            }
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let stragglers = nodes
        .iter()
        .filter(|n| n.version != in_force.version)
        .map(|n| n.node.clone())
        .collect();
    let rollout = super::rollout::read(store).await?.map(|(r, _)| r);
    let verdicts = match &rollout {
        Some(r) => super::rollout::verdicts(store)
            .await?
            .into_iter()
            .filter(|(_, v)| v.version == r.version)
            .collect(),
        None => Vec::new(),
    };
    Ok(FleetStatus {
        prefix: keys.prefix().to_string(),
        version: in_force.version,
        node: store.node().to_string(),
        nodes,
        stragglers,
        rollout,
        verdicts,
    })
}

/// [`read`], from a synchronous caller (the admin API).
pub fn read_now(fleet: &Arc<Fleet>) -> Result<FleetStatus, StoreError> {
    let fleet = Arc::clone(fleet);
    fleet
        .store()
        .clone()
        .block(async move { read(fleet.store()).await })
}
