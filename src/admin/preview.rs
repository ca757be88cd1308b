//! What a config would change, without changing anything: `POST /config?dry_run=true`
//! (a config against the one in force) and `GET /config/diff?from=A&to=B` (two
//! versions of the history). Both answer with the findings and the plan as `evenkeel
//! plan` prints them — the changes, every pool's expected shares before and after, the
//! flags — as JSON, so a client (the dashboard) never re-derives what the server knows.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::apply::Applier;
use crate::config::{diagnostic, diff, Config};
use crate::sim::plan::{compare, ExpectedShare};
use crate::store;

/// The plan of going from `old` (none: nothing to compare with) to `new`.
pub fn plan(old: Option<&Config>, new: &Config) -> Value {
    let changes: Vec<String> = old
        .map(|old| diff::diff(old, new))
        .unwrap_or_default()
        .iter()
        .map(|c| format!("{} {c}", c.sign()))
        .collect();
    let share = |s: &Option<ExpectedShare>| {
        s.as_ref().map(|s| {
            json!({
                "weight": s.weight,
                "capacity": s.capacity,
                "share": s.share,
                "capacity_share": s.capacity_share,
                "load_ratio": s.load_ratio,
            })
        })
    };
    let pools = compare(old, new);
    let flags: usize = pools.iter().map(|p| p.flags()).sum();
    let pools: Vec<Value> = pools
        .iter()
        .map(|p| {
            json!({
                "pool": p.pool,
                "before": p.before.map(|a| a.to_string()),
                "after": p.after.map(|a| a.to_string()),
                "keys_moved": p.keys_moved,
                "backends": p.backends.iter().map(|b| json!({
                    "address": b.address,
                    "before": share(&b.before),
                    "after": share(&b.after),
                    "flags": b.flags.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "changes": changes, "pools": pools, "flags": flags })
}

/// `POST /config?dry_run=true`: `text` judged as an apply would judge it — its
/// findings, a config the guard rolled back (unless `force`), listeners that cannot
/// change without a restart — and its plan against the config in force; nothing
/// applied, nothing recorded.
pub fn dry_run(applier: &Applier, text: String, deny_warnings: bool, force: bool) -> Value {
    let mut checked = applier.check(text, "POST /config?dry_run=true".into());
    let running = applier.runtime().snapshot();
    // As an apply does: a certificate that expired while in force keeps serving.
    checked.tolerate_expired(
        &running
            .config
            .certificates()
            .map(|(l, c)| crate::config::served_key(&l.name, &c.fingerprint))
            .collect(),
    );
    let findings = diagnostic::json_findings(&checked.source, &checked.findings);
    let plan = checked
        .config
        .as_ref()
        .map(|new| plan(Some(&running.config), new));
    let mut reason = None;
    if let Some(config) = checked.config.as_ref() {
        if !force {
            if let Some(rejection) =
                store::rejection_of(&**applier.store(), &config.identity(), &checked.source.text)
            {
                reason = Some(format!(
                    "this config (version {}) was rolled back by the guard at {}: {}; apply it again with force if you mean it",
                    rejection.version, rejection.time, rejection.reason
                ));
            }
        }
        if let Err(e) = applier.runtime().can_replace(config) {
            reason.get_or_insert(e.to_string());
        }
    }
    json!({
        "dry_run": true,
        "would_apply": checked.config.is_some() && !checked.is_rejected(deny_warnings) && reason.is_none(),
        "reason": reason,
        "in_force": applier.current(),
        "findings": findings,
        "plan": plan,
    })
}

/// `GET /config/diff?from=A&to=B`: the plan of going from version A to version B of
/// the history (both checked again as they would be applied now).
pub fn versions(applier: &Applier, from: u64, to: u64) -> (StatusCode, Value) {
    let history = match applier.history() {
        Ok(history) => history,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string() }),
            )
        }
    };
    let find = |id: u64| history.iter().find(|v| v.id == id);
    let (Some(old), Some(new)) = (find(from), find(to)) else {
        return (
            StatusCode::NOT_FOUND,
            json!({ "error": format!("no version {} in the history", if find(from).is_none() { from } else { to }) }),
        );
    };
    let check = |v: &crate::store::Version| {
        applier.check(v.text.clone(), format!("version {}", v.id).into())
    };
    let (old_checked, new_checked) = (check(old), check(new));
    let Some(new_config) = new_checked.config.as_ref() else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({
                "error": format!("version {to} does not pass check now"),
                "findings": diagnostic::json_findings(&new_checked.source, &new_checked.findings),
            }),
        );
    };
    (
        StatusCode::OK,
        json!({
            "from": from,
            "to": to,
            "from_passes": old_checked.config.is_some(),
            "plan": plan(old_checked.config.as_ref(), new_config),
        }),
    )
}

/// The version numbers of `from=A&to=B`.
pub fn versions_asked(query: &str) -> Result<(u64, u64), String> {
    let number = |name: &str| {
        super::param(query, name)
            .ok_or_else(|| format!("`{name}` is required"))?
            .parse::<u64>()
            .map_err(|_| format!("`{name}` must be a version number"))
    };
    Ok((number("from")?, number("to")?))
}
