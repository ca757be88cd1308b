//! Staged rollouts: a new version goes to a few canary nodes first, and to the whole
//! fleet only if every canary's guard held (`apply --canary N|P%`).
//!
//! ```text
//!  apply --canary 1 ──► PREFIX/current.rollout {version N, previous M, canaries, state: canary}
//!                         │  (PREFIX/current stays M: the other nodes keep serving M)
//!                         ▼
//!   canary nodes serve N; their guards watch it ──► PREFIX/current.verdict/NODE
//!                         │                           held | breached | unjudged | refused
//!                         ▼
//!   any node ([`decide`]): every canary held ──► promoted: PREFIX/current = N (everyone)
//!                          one did not, a canary left,
//!                          or the deadline passed ──► rolled back: canaries return to M,
//!                                                     N is marked rejected
//! ```
//!
//! The rollout lives in etcd, not in the node that started it: every node runs
//! [`decide`] on what it reads, and the transaction that ends the rollout compares the
//! rollout key's revision, so exactly one node ends it, whichever nodes are alive. A
//! canary whose guard saw fewer than `guard.min_requests` requests gives `unjudged`,
//! which fails the rollout: a change is never promoted on no evidence.

use serde::{Deserialize, Serialize};

use crate::store::etcd::gateway::{Compare, Operation, RangeOptions};
use crate::store::etcd::{self as etcd, EtcdStore};
use crate::store::{Rejection, StoreError};

/// Added to the guard's `watch` for a rollout's deadline: time for the canaries to
/// take the version and for their verdicts to arrive.
pub const MARGIN_SECONDS: u64 = 30;

/// How many canaries: a number of nodes, or a percentage of the live nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CanarySize {
    /// This many nodes.
    Nodes(usize),
    /// This percentage of the live nodes, rounded up.
    Percent(f64),
}

impl CanarySize {
    /// Parses `N` or `P%` (as `apply --canary` and `POST /config?canary=` take it).
    pub fn parse(text: &str) -> Result<CanarySize, String> {
        let bad =
            || format!("canary {text:?}: expected a number of nodes (2) or a percentage (10%)");
        match text.strip_suffix('%') {
            Some(percent) => {
                let p: f64 = percent.trim().parse().map_err(|_| bad())?;
                if p.is_finite() && p > 0.0 && p < 100.0 {
                    Ok(CanarySize::Percent(p))
                } else {
                    Err(format!(
                        "canary {text:?}: a percentage above 0 and below 100"
                    ))
                }
            }
            None => match text.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(CanarySize::Nodes(n)),
                _ => Err(bad()),
            },
        }
    }

    /// How many of `live` nodes are canaries: at least 1 and at most all but one.
    pub fn count(self, live: usize) -> Result<usize, String> {
        if live < 2 {
            return Err(format!(
                "a canary rollout needs at least two live nodes (one to try the change, one to keep the version in force); the fleet has {live}"
            ));
        }
        let wanted = match self {
            CanarySize::Nodes(n) => n,
            CanarySize::Percent(p) => ((p / 100.0) * live as f64).ceil() as usize,
        };
        if wanted >= live {
            return Err(format!(
                "{wanted} canaries of {live} live nodes would leave none on the version in force; ask for at most {}",
                live - 1
            ));
        }
        Ok(wanted.max(1))
    }
}

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The canaries serve the new version; the rest the previous one.
    Canary,
    /// Every canary held: the version is the fleet's.
    Promoted,
    /// A canary did not hold (or could not be judged): the canaries went back.
    RolledBack,
}

/// A rollout (the value of `PREFIX/current.rollout`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The version being rolled out.
    pub version: u64,
    /// The fleet's version in force when it started (what canaries return to).
    pub previous: u64,
    /// The canary nodes.
    pub canaries: Vec<String>,
    /// Where it stands.
    pub state: State,
    /// Why it ended as it did (empty while in progress).
    #[serde(default)]
    pub reason: String,
    /// The node that started it.
    pub by: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// About when it fails if the canaries have not all held (seconds since the Unix
    /// epoch, by the starting node's clock, for people: the deadline itself is a lease
    /// in etcd of the guard's watch and [`MARGIN_SECONDS`]).
    pub deadline: u64,
}

/// A canary's verdict on a rollout's version (the value of
/// `PREFIX/current.verdict/NODE`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The version judged.
    pub version: u64,
    /// What the canary's guard found.
    pub verdict: Judgement,
    /// In words, with the numbers.
    pub reason: String,
}

/// What a canary's guard found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Judgement {
    /// Within every threshold for the whole watch, with enough traffic.
    Held,
    /// A threshold was breached.
    Breached,
    /// Too little traffic to judge (fewer than `guard.min_requests`).
    Unjudged,
    /// The canary could not load the version.
    Refused,
}

/// How a rollout ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Every canary held.
    Promote,
    /// Roll back, because of this.
    RollBack(String),
}

/// What to do with `rollout` now, given the canaries' `verdicts`, the nodes alive
/// (`live`, their ids) and whether its deadline passed (`expired`: judged by etcd, by
/// a lease, never by one node's clock); `None`: wait.
pub fn decide(
    rollout: &Rollout,
    verdicts: &[(String, Verdict)],
    live: &[String],
    expired: bool,
) -> Option<Decision> {
    if rollout.state != State::Canary {
        return None;
    }
    let verdict_of = |node: &str| {
        verdicts
            .iter()
            .find(|(n, v)| n == node && v.version == rollout.version)
            .map(|(_, v)| v)
    };
    for canary in &rollout.canaries {
        if let Some(v) = verdict_of(canary) {
            let what = match v.verdict {
                Judgement::Held => continue,
                Judgement::Breached => "its guard found a breach",
                Judgement::Unjudged => "its guard saw too little traffic to judge",
                Judgement::Refused => "it could not load the version",
            };
            return Some(Decision::RollBack(format!(
                "canary {canary}: {what}: {}",
                v.reason
            )));
        }
        if !live.contains(canary) {
            return Some(Decision::RollBack(format!(
                "canary {canary} left the fleet before its guard judged the version"
            )));
        }
    }
    if rollout.canaries.iter().all(|c| verdict_of(c).is_some()) {
        return Some(Decision::Promote);
    }
    if expired {
        let waiting: Vec<&str> = rollout
            .canaries
            .iter()
            .filter(|c| verdict_of(c).is_none())
            .map(String::as_str)
            .collect();
        return Some(Decision::RollBack(format!(
            "no verdict from canary {} by the deadline",
            waiting.join(", ")
        )));
    }
    None
}

/// The canaries among `live` nodes: `first` (the node starting the rollout, when it is
/// live), then the others in id order, `count` in all.
pub fn pick_canaries(first: &str, live: &[String], count: usize) -> Vec<String> {
    let mut order: Vec<String> = live
        .iter()
        .filter(|n| n.as_str() != first)
        .cloned()
        .collect();
    order.sort();
    if live.iter().any(|n| n == first) {
        order.insert(0, first.to_string());
    }
    order.truncate(count);
    order
}

/// The rollout in etcd, with its key's revision; `None`: there never was one.
pub async fn read(store: &EtcdStore) -> Result<Option<(Rollout, i64)>, StoreError> {
    let key = store.keys().rollout();
    let range = store
        .gateway()
        .range(&key, None, RangeOptions::default())
        .await?;
    range
        .kvs
        .first()
        .map(|kv| Ok((etcd::parse(&kv.value, &key)?, kv.mod_revision)))
        .transpose()
}

/// Ends the rollout in progress without a verdict (an operator's rollback to the
/// version in force): the canaries return, nothing is marked rejected. Whether this
/// call ended it.
pub async fn abort(store: &EtcdStore, reason: &str) -> Result<Option<Rollout>, StoreError> {
    let Some((rollout, revision)) = read(store).await? else {
        return Ok(None);
    };
    if rollout.state != State::Canary {
        return Ok(None);
    }
    let mut ended = rollout.clone();
    ended.state = State::RolledBack;
    ended.reason = reason.to_string();
    let keys = store.keys();
    let answer = store
        .gateway()
        .txn(
            &[Compare::ModRevision(keys.rollout(), revision)],
            &[Operation::Put(
                keys.rollout(),
                serde_json::to_vec(&ended).unwrap_or_default(),
            )],
            &[],
        )
        .await?;
    Ok(answer.succeeded.then_some(ended))
}

/// The fleet's version in force and its rollout, read together (one transaction).
pub async fn read_state(
    store: &EtcdStore,
) -> Result<(etcd::InForce, Option<(Rollout, i64)>), StoreError> {
    let keys = store.keys();
    let answer = store
        .gateway()
        .txn(
            &[],
            &[
                Operation::Get(keys.current()),
                Operation::Get(keys.rollout()),
            ],
            &[],
        )
        .await?;
    let (version, mod_revision) = match answer.ranges.first().and_then(|r| r.kvs.first()) {
        None => (0, 0),
        Some(kv) => (
            etcd::number(&kv.value, "version", &kv.key)?,
            kv.mod_revision,
        ),
    };
    let rollout = answer
        .ranges
        .get(1)
        .and_then(|r| r.kvs.first())
        .map(|kv| Ok::<_, StoreError>((etcd::parse(&kv.value, &kv.key)?, kv.mod_revision)))
        .transpose()?;
    let in_force = etcd::InForce {
        version,
        mod_revision,
        revision: answer.revision,
    };
    Ok((in_force, rollout))
}

/// Whether the deadline of the rollout of `version` still holds (its lease-bound key
/// is there, and is that rollout's).
pub async fn deadline_holds(store: &EtcdStore, version: u64) -> Result<bool, StoreError> {
    let key = store.keys().deadline();
    let range = store
        .gateway()
        .range(&key, None, RangeOptions::default())
        .await?;
    match range.kvs.first() {
        None => Ok(false),
        Some(kv) => Ok(etcd::number(&kv.value, "version", &key)? == version),
    }
}

/// Every canary's last verdict, by node.
pub async fn verdicts(store: &EtcdStore) -> Result<Vec<(String, Verdict)>, StoreError> {
    let prefix = store.keys().verdicts();
    let range = store
        .gateway()
        .range_prefix(&prefix, RangeOptions::default())
        .await?;
    range
        .kvs
        .iter()
        .map(|kv| {
            let node = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
            Ok((node, etcd::parse(&kv.value, &kv.key)?))
        })
        .collect()
}

/// Writes this node's verdict on a version, unless it gave one on that version
/// already: the first verdict stands (a `breached` is never overwritten by a later
/// `passed`).
pub async fn put_verdict(store: &EtcdStore, verdict: &Verdict) -> Result<(), StoreError> {
    let key = store.keys().verdict(store.node());
    let range = store
        .gateway()
        .range(&key, None, RangeOptions::default())
        .await?;
    let revision = match range.kvs.first() {
        None => 0,
        Some(kv) => {
            let given: Verdict = etcd::parse(&kv.value, &key)?;
            if given.version == verdict.version {
                return Ok(());
            }
            kv.mod_revision
        }
    };
    let value = serde_json::to_vec(verdict).unwrap_or_default();
    // Lost to another write of this node's key: that one stands.
    store
        .gateway()
        .txn(
            &[Compare::ModRevision(key.clone(), revision)],
            &[Operation::Put(key, value)],
            &[],
        )
        .await?;
    Ok(())
}

/// The ids of the nodes whose reports are alive.
pub async fn live_nodes(store: &EtcdStore) -> Result<Vec<String>, StoreError> {
    let prefix = store.keys().nodes();
    let options = RangeOptions {
        keys_only: true,
        ..RangeOptions::default()
    };
    let range = store.gateway().range_prefix(&prefix, options).await?;
    Ok(range
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned())
        .collect())
}

/// Ends `rollout` (read at revision `rollout_mod`) as `decision` says, unless another
/// node ended it first; whether this call ended it. Promoted: the version becomes the
/// fleet's in force. Rolled back: the version's config is marked rejected (by its
/// identity and by its text, as the guard marks a rollback).
pub async fn finish(
    store: &EtcdStore,
    rollout: &Rollout,
    rollout_mod: i64,
    decision: &Decision,
) -> Result<bool, StoreError> {
    let keys = store.keys();
    let mut ended = rollout.clone();
    let mut operations = Vec::new();
    match decision {
        Decision::Promote => {
            ended.state = State::Promoted;
            ended.reason = format!("every canary ({}) held", rollout.canaries.join(", "));
            operations.push(Operation::Put(
                keys.current(),
                serde_json::json!({ "version": rollout.version })
                    .to_string()
                    .into_bytes(),
            ));
        }
        Decision::RollBack(reason) => {
            ended.state = State::RolledBack;
            ended.reason = reason.clone();
            let staged = EtcdStore::read_version(store.gateway(), keys, rollout.version).await?;
            if let Some(staged) = staged {
                let rejection = Rejection {
                    version: rollout.version,
                    reason: format!("canary rollout: {reason}"),
                    time: humantime::format_rfc3339_millis(std::time::SystemTime::now())
                        .to_string(),
                };
                let value = serde_json::to_vec(&rejection).unwrap_or_default();
                let mut shas = vec![staged.sha256.clone(), crate::store::sha256(&staged.text)];
                shas.dedup();
                for sha in shas {
                    operations.push(Operation::Put(keys.rejected(&sha), value.clone()));
                }
            }
        }
    }
    operations.push(Operation::Put(
        keys.rollout(),
        serde_json::to_vec(&ended).unwrap_or_default(),
    ));
    let answer = store
        .gateway()
        .txn(
            &[Compare::ModRevision(keys.rollout(), rollout_mod)],
            &operations,
            &[],
        )
        .await?;
    Ok(answer.succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(canaries: &[&str]) -> Rollout {
        Rollout {
            version: 5,
            previous: 4,
            canaries: canaries.iter().map(|c| c.to_string()).collect(),
            state: State::Canary,
            reason: String::new(),
            by: "a".into(),
            started: "2026-12-01T00:00:00Z".into(),
            deadline: 1000,
        }
    }

    fn verdict(node: &str, version: u64, verdict: Judgement) -> (String, Verdict) {
        (
            node.into(),
            Verdict {
                version,
                verdict,
                reason: "numbers".into(),
            },
        )
    }

    fn live(nodes: &[&str]) -> Vec<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn canary_sizes_parse_and_stay_between_one_and_all_but_one() {
        assert_eq!(CanarySize::parse("2"), Ok(CanarySize::Nodes(2)));
        assert_eq!(CanarySize::parse("10%"), Ok(CanarySize::Percent(10.0)));
        for bad in ["0", "-1", "x", "0%", "100%", "150%", "%"] {
            assert!(CanarySize::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            CanarySize::Percent(10.0).count(3),
            Ok(1),
            "ceil(0.3), at least 1"
        );
        assert_eq!(CanarySize::Percent(50.0).count(3), Ok(2), "ceil(1.5)");
        assert_eq!(CanarySize::Percent(10.0).count(25), Ok(3), "ceil(2.5)");
        assert!(
            CanarySize::Percent(90.0).count(3).is_err(),
            "ceil(2.7) = 3 of 3"
        );
        assert!(CanarySize::Nodes(3).count(3).is_err());
        assert!(
            CanarySize::Nodes(1).count(1).is_err(),
            "one node: no canary"
        );
    }

    #[test]
    fn promoted_only_when_every_canary_held() {
        let r = rollout(&["a", "b"]);
        let all = live(&["a", "b", "c"]);
        assert_eq!(decide(&r, &[], &all, false), None, "waiting");
        let one = [verdict("a", 5, Judgement::Held)];
        assert_eq!(decide(&r, &one, &all, false), None, "one of two");
        let stale = [
            verdict("a", 5, Judgement::Held),
            verdict("b", 3, Judgement::Held),
        ];
        assert_eq!(
            decide(&r, &stale, &all, false),
            None,
            "a verdict on another version does not count"
        );
        let both = [
            verdict("a", 5, Judgement::Held),
            verdict("b", 5, Judgement::Held),
        ];
        assert_eq!(decide(&r, &both, &all, false), Some(Decision::Promote));
    }

    #[test]
    fn any_breach_no_evidence_refusal_departure_or_deadline_rolls_back() {
        let r = rollout(&["a", "b"]);
        let all = live(&["a", "b", "c"]);
        for (judgement, words) in [
            (Judgement::Breached, "breach"),
            (Judgement::Unjudged, "too little traffic"),
            (Judgement::Refused, "could not load"),
        ] {
            let verdicts = [verdict("a", 5, Judgement::Held), verdict("b", 5, judgement)];
            let Some(Decision::RollBack(why)) = decide(&r, &verdicts, &all, false) else {
                panic!("{judgement:?} rolls back");
            };
            assert!(why.contains("canary b") && why.contains(words), "{why}");
        }
        let Some(Decision::RollBack(why)) = decide(
            &r,
            &[verdict("a", 5, Judgement::Held)],
            &live(&["a", "c"]),
            false,
        ) else {
            panic!("a canary that left rolls back");
        };
        assert!(why.contains("canary b left the fleet"), "{why}");
        let Some(Decision::RollBack(why)) =
            decide(&r, &[verdict("a", 5, Judgement::Held)], &all, true)
        else {
            panic!("the deadline rolls back");
        };
        assert!(why.contains("no verdict from canary b"), "{why}");
        let mut done = r.clone();
        done.state = State::Promoted;
        assert_eq!(
            decide(&done, &[], &all, true),
            None,
            "an ended rollout stays ended"
        );
    }

    #[test]
    fn the_starting_node_is_the_first_canary() {
        let nodes = live(&["c", "a", "b", "d"]);
        assert_eq!(pick_canaries("c", &nodes, 2), ["c", "a"]);
        assert_eq!(
            pick_canaries("x", &nodes, 2),
            ["a", "b"],
            "a node not live is skipped"
        );
    }
}
