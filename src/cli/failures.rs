//! The failure analysis as `simulate` prints it ([`crate::sim::failures`]): the servers
//! listed by several pools with their cross-pool load ratio, and one row per failure.

use std::fmt::Write as _;

use serde_json::json;

use super::table::{percent, ratio, render};
use crate::sim::failures::{Analysis, FailureRow, State};

/// The servers listed by more than one pool, in `state` (text). Empty when none is.
pub(super) fn servers_text(a: &Analysis, state: &State) -> String {
    let shared: Vec<usize> = (0..a.servers.list.len())
        .filter(|&s| a.servers.pools_of(a.config, s).len() > 1)
        .collect();
    if shared.is_empty() {
        return String::new();
    }
    let limit = a.config.guard.max_load_ratio;
    let mut out = format!(
        "\nservers listed by several pools ({}):\n",
        a.traffic.basis()
    );
    let mut rows = vec![["server", "pools", "capacity", "load %", "load ratio", ""]
        .map(String::from)
        .to_vec()];
    for s in shared {
        let server = &a.servers.list[s];
        let r = state.ratio[s];
        let flag = if r.is_some_and(|r| crate::sim::above(r, limit)) {
            format!("! above guard.max_load_ratio {limit}")
        } else {
            String::new()
        };
        rows.push(vec![
            server.name.clone(),
            a.servers.pools_of(a.config, s).join(", "),
            server.capacity.to_string(),
            percent(state.load(s)),
            ratio(r),
            flag,
        ]);
    }
    out.push_str(&render(&rows, &[false, false, true, true, true, false]));
    out.push_str("  load % is of all traffic; load ratio is across the pools (docs/failures.md)\n");
    out
}

/// Every server's figures in `state` (JSON).
pub(super) fn servers_json(a: &Analysis, state: &State) -> serde_json::Value {
    json!(a
        .servers
        .list
        .iter()
        .enumerate()
        .map(|(s, server)| json!({
            "server": server.name,
            "address": server.address.to_string(),
            "pools": a.servers.pools_of(a.config, s),
            "capacity": server.capacity,
            "load": state.load(s),
            "load_ratio": state.ratio[s],
        }))
        .collect::<Vec<_>>())
}

fn failed_names(a: &Analysis, row: &FailureRow) -> Vec<String> {
    row.failed
        .iter()
        .map(|&s| a.servers.list[s].name.clone())
        .collect()
}

/// The pools that list a failed server, by name, each with how it reacts.
fn reactions(a: &Analysis, row: &FailureRow) -> Vec<(String, String)> {
    a.reactions(row)
        .into_iter()
        .map(|(p, r)| (a.config.pools[p].name.clone(), r))
        .collect()
}

fn routes_down(a: &Analysis, row: &FailureRow) -> Vec<String> {
    row.down
        .iter()
        .map(|&p| {
            format!(
                "{} (pool {})",
                crate::config::lint::route_labels(a.config, p),
                a.config.pools[p].name
            )
        })
        .collect()
}

/// The failure table (text): one row per failure.
pub(super) fn failures_text(a: &Analysis, rows: &[FailureRow], together: usize) -> String {
    let limit = a.config.guard.max_load_ratio;
    let mut out = format!(
        "\n{} ({}):\n",
        if together == 1 {
            "every server failing alone".to_string()
        } else {
            format!("every {together} servers failing together")
        },
        a.traffic.basis()
    );
    let mut table = vec![[
        "failed",
        "routes down",
        "highest load ratio after",
        "largest rise",
        "what the pools do",
    ]
    .map(String::from)
    .to_vec()];
    let (mut outages, mut overloads) = (0, 0);
    for row in rows {
        outages += usize::from(!row.down.is_empty());
        overloads += usize::from(!row.overloaded.is_empty());
        let highest = row.highest.map_or("-".to_string(), |(s, r)| {
            let flag = if crate::sim::above(r, limit) {
                " !"
            } else {
                ""
            };
            format!("{} {r:.2}{flag}", a.servers.list[s].name)
        });
        let rise = a.largest_rise(row).map_or("-".to_string(), |(s, x)| {
            format!("{} ×{x:.2}", a.servers.list[s].name)
        });
        let down = routes_down(a, row);
        let what: Vec<String> = reactions(a, row)
            .into_iter()
            .map(|(pool, r)| format!("{pool}: {r}"))
            .collect();
        table.push(vec![
            failed_names(a, row).join(" + "),
            if down.is_empty() {
                "-".to_string()
            } else {
                format!("! {}", down.join(", "))
            },
            highest,
            rise,
            what.join("; "),
        ]);
    }
    out.push_str(&render(&table, &[false, false, false, false, false]));
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let _ = writeln!(
        out,
        "{} failure{}: {outages} leave{} a route with nowhere to go, {overloads} push{} a server above guard.max_load_ratio {limit} (! marks them)",
        rows.len(),
        plural(rows.len()),
        if outages == 1 { "s" } else { "" },
        if overloads == 1 { "es" } else { "" },
    );
    out
}

/// The failure table (JSON).
pub(super) fn failures_json(
    a: &Analysis,
    rows: &[FailureRow],
    together: usize,
) -> serde_json::Value {
    json!({
        "failed_together": together,
        "traffic": a.traffic.basis(),
        "traffic_assumed": a.traffic.assumed_equal(),
        "max_load_ratio": a.config.guard.max_load_ratio,
        "rows": rows.iter().map(|row| json!({
            "failed": failed_names(a, row),
            "pools": reactions(a, row).into_iter().map(|(pool, reaction)| json!({
                "pool": pool,
                "reaction": reaction,
            })).collect::<Vec<_>>(),
            "routes_down": row.down.iter().map(|&p| json!({
                "pool": a.config.pools[p].name,
                "routes": crate::config::lint::route_labels(a.config, p),
            })).collect::<Vec<_>>(),
            "overloaded": row.overloaded.iter().map(|&(s, before, after)| json!({
                "server": a.servers.list[s].name,
                "load_ratio_before": before,
                "load_ratio_after": after,
            })).collect::<Vec<_>>(),
            "highest": row.highest.map(|(s, r)| json!({
                "server": a.servers.list[s].name,
                "load_ratio": r,
            })),
            "largest_rise": a.largest_rise(row).map(|(s, x)| json!({
                "server": a.servers.list[s].name,
                "load_after_over_before": x,
            })),
            "servers": row.servers.iter().map(|c| json!({
                "server": a.servers.list[c.server].name,
                "load": c.load,
                "load_ratio": c.ratio,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// `plan`'s table of the servers listed by several pools (in OLD or NEW): load and
/// cross-pool load ratio before and after. Returns the text (empty when no server is
/// shared) and the number of servers the change pushes above `guard.max_load_ratio`.
pub(super) fn servers_plan(old: Option<&Analysis>, new: &Analysis) -> (String, usize) {
    let limit = new.config.guard.max_load_ratio;
    let before_of = |s: usize| {
        let address = new.servers.list[s].address;
        old.and_then(|a| {
            let o = a.servers.list.iter().position(|x| x.address == address)?;
            Some((a, o))
        })
    };
    let shared: Vec<usize> = (0..new.servers.list.len())
        .filter(|&s| {
            new.servers.pools_of(new.config, s).len() > 1
                || before_of(s).is_some_and(|(a, o)| a.servers.pools_of(a.config, o).len() > 1)
        })
        .collect();
    if shared.is_empty() {
        return (String::new(), 0);
    }
    let mut out = format!(
        "\nServers listed by several pools (load = share of all traffic; load ratio across the pools; {}):\n",
        new.traffic.basis()
    );
    let mut rows = vec![[
        "server",
        "pools",
        "load before",
        "load after",
        "load ratio before",
        "load ratio after",
        "",
    ]
    .map(String::from)
    .to_vec()];
    let mut flags = 0;
    for s in shared {
        let before = before_of(s);
        let ratio_before = before.and_then(|(a, o)| a.baseline.ratio[o]);
        let ratio_after = new.baseline.ratio[s];
        let over = |r: Option<f64>| r.is_some_and(|r| crate::sim::above(r, limit));
        let note = if over(ratio_after) && !over(ratio_before) {
            flags += 1;
            format!("! load ratio above {limit}")
        } else if over(ratio_after) {
            format!("load ratio above {limit} already before")
        } else {
            String::new()
        };
        rows.push(vec![
            new.servers.list[s].name.clone(),
            new.servers.pools_of(new.config, s).join(", "),
            before.map_or("-".to_string(), |(a, o)| percent(a.baseline.load(o))),
            percent(new.baseline.load(s)),
            ratio(ratio_before),
            ratio(ratio_after),
            note,
        ]);
    }
    out.push_str(&render(
        &rows,
        &[false, false, true, true, true, true, false],
    ));
    (out, flags)
}
