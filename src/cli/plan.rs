//! `evenkeel plan OLD NEW`: what a config change changes, and what it does to each
//! backend's traffic.
//!
//! Prints, in order: the list of changes ([`crate::config::diff`]); one table per pool
//! with every backend's expected share and load ratio before and after
//! ([`crate::sim::plan`]), flagging shares that more than double (`guard.max_shift`) or
//! drop to zero and load ratios above `guard.max_load_ratio` (NEW's guard); then NEW's
//! findings as `check` prints them.
//!
//! Exit codes: 2 when either file cannot be read; 1 when NEW has errors (or, under
//! `--deny-flags`, when anything is flagged); 0 otherwise. OLD is only the baseline:
//! when it does not pass `check` there is nothing valid to compare with, so `plan` says
//! so, skips the list of changes, shows NEW's shares alone, and still exits by NEW.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::check::print_findings;
use super::check::Format;
use super::table::{percent, ratio, render};
use super::{CommandResult, Exit, Failure};
use crate::balance::Algorithm;
use crate::config::{self, diagnostic, diff};
use crate::sim;
use crate::sim::failures::Analysis;
use crate::sim::plan::{compare, ExpectedShare, Flag, PoolComparison};

/// Show what changes between two configs, and each backend's expected share before and after.
///
/// Lists every change (listeners, routes, pools, their settings, backends added and
/// removed, weights and capacities), then per pool each backend's expected share —
/// intended share, or for consistent_hash its share of the hash table's key space — and
/// load ratio (share over capacity share) before and after. Flags a share that more
/// than doubles (guard.max_shift) or drops to zero, and a load ratio above
/// guard.max_load_ratio (NEW's `[guard]`). Ends with NEW's findings, as `check` prints them.
///
/// Exit code 0 when NEW can be served (flags are advice unless --deny-flags), 1 when NEW
/// has errors or, with --deny-flags, anything is flagged; 2 when a file cannot be read.
/// When OLD does not pass `check`, plan says so and shows NEW alone.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  evenkeel plan evenkeel.toml evenkeel.new.toml
  evenkeel plan live.toml proposed.toml --deny-flags   # a CI gate: exit 1 on any flag
  evenkeel plan live.toml proposed.toml --traffic status.json   # servers shared by pools, at the real split
  evenkeel plan --from haproxy haproxy.cfg haproxy.new.cfg   # a change to an HAProxy config, before it ships")]
pub struct Args {
    /// The config in force (the baseline).
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The proposed config.
    #[arg(value_name = "NEW")]
    new: PathBuf,
    /// Exit 1 when any backend is flagged.
    #[arg(long)]
    deny_flags: bool,
    /// OLD and NEW are another load balancer's configs: `nginx` or `haproxy` (as
    /// `check --from` reads them); the plan is that of the change between them.
    #[arg(long, value_enum, value_name = "PRODUCT", conflicts_with = "traffic")]
    from: Option<super::check::Foreign>,
    #[command(flatten)]
    traffic: super::traffic::TrafficArgs,
}

pub fn run(args: &Args) -> CommandResult {
    let read = |path: &PathBuf| config::check_file(path).map_err(|e| Failure::new(Exit::Usage, e));
    // With --from, the findings in NEW are shown on its own files.
    let (old, new, new_report) = match args.from {
        None => (read(&args.old)?, read(&args.new)?, None),
        Some(product) => {
            let (_, old) = super::check::audit(product, &args.old)?;
            let (_, new) = super::check::audit(product, &args.new)?;
            (old.checked, new.checked.clone(), Some((product, new)))
        }
    };
    let valid = |c: &config::Checked| c.config.clone().filter(|_| c.errors() == 0);
    let (old_config, new_config) = (valid(&old), valid(&new));
    let mut out = String::new();
    let _ = writeln!(out, "plan {} → {}", args.old.display(), args.new.display());
    let Some(new_config) = new_config else {
        out!("{out}\nNEW does not pass check, so it cannot be applied:\n\n");
        match &new_report {
            Some((product, report)) => {
                super::check::print_report(report, Format::Text, &args.new, *product)
            }
            None => print_findings(&new, Format::Text),
        }
        return Ok(Exit::Rejected);
    };

    let mut changed = None;
    match &old_config {
        Some(old_config) => {
            let changes = diff::diff(old_config, &new_config);
            changed = Some(changes.len());
            let _ = writeln!(out, "\nChanges ({}):", changes.len());
            if changes.is_empty() {
                out.push_str("  none\n");
            }
            for change in &changes {
                let _ = writeln!(out, "  {} {change}", change.sign());
            }
        }
        None => {
            let _ = writeln!(
                out,
                "\nOLD does not pass check ({} error{}), so there is nothing valid to compare \
                 with: showing NEW alone (evenkeel check {}{} shows OLD's findings).",
                old.errors(),
                if old.errors() == 1 { "" } else { "s" },
                match args.from {
                    Some(product) => format!(
                        "--from {} ",
                        config::foreign::Product::from(product)
                            .name()
                            .to_lowercase()
                    ),
                    None => "-c ".to_string(),
                },
                args.old.display()
            );
        }
    }

    let pools = compare(old_config.as_ref(), &new_config);
    let _ = writeln!(
        out,
        "\nExpected shares (share of the pool's requests with every backend usable; \
         load ratio = share / capacity share):"
    );
    for pool in &pools {
        pool_text(
            &mut out,
            pool,
            old_config.is_some(),
            new_config.guard.max_load_ratio,
        );
    }

    let observed = args.traffic.observed(true, &args.new)?;
    super::traffic::matching(observed.as_ref(), &new_config)?;
    let old_analysis = old_config
        .as_ref()
        .map(|c| Analysis::with_observed(c, observed.as_ref()));
    let new_analysis = Analysis::with_observed(&new_config, observed.as_ref());
    let (servers, server_flags) =
        super::failures::servers_plan(old_analysis.as_ref(), &new_analysis);
    out.push_str(&servers);
    let flags: usize = pools.iter().map(PoolComparison::flags).sum::<usize>() + server_flags;
    out!("{out}");
    match &new_report {
        Some((product, report)) => {
            outln!("\nFindings in NEW:\n");
            super::check::print_report(report, Format::Text, &args.new, *product);
        }
        None => {
            if !new.findings.is_empty() {
                outln!("\nFindings in NEW:\n");
                out!("{}", diagnostic::render_text(&new.source, &new.findings));
            } else {
                outln!();
            }
            outln!("{}", super::check::summary(&new));
        }
    }
    let verdict = if flags > 0 && args.deny_flags {
        "refused under --deny-flags"
    } else {
        "NEW can be applied"
    };
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let changes = changed.map_or("no baseline".to_string(), |n| plural(n, "change"));
    outln!("plan: {changes}, {}; {verdict}", plural(flags, "flag"));
    Ok(if flags > 0 && args.deny_flags {
        Exit::Rejected
    } else {
        Exit::Success
    })
}

fn algorithm_text(pool: &PoolComparison, baseline: bool) -> String {
    let name = |a: Algorithm| {
        if a == Algorithm::ConsistentHash {
            "consistent_hash, key-space share".to_string()
        } else {
            a.to_string()
        }
    };
    match (pool.before, pool.after) {
        (Some(b), Some(a)) if b == a => name(a),
        (Some(b), Some(a)) => format!("{} → {}", b, name(a)),
        (None, Some(a)) if baseline => format!("new pool, {}", name(a)),
        (None, Some(a)) => name(a),
        (Some(b), None) => format!("removed, was {b}"),
        (None, None) => String::new(),
    }
}

/// One pool's table; `baseline`: whether there is a valid OLD to compare with;
/// `max_load_ratio`: NEW's `guard.max_load_ratio`.
fn pool_text(out: &mut String, pool: &PoolComparison, baseline: bool, max_load_ratio: f64) {
    let _ = writeln!(
        out,
        "\npool {:?} ({})",
        pool.pool,
        algorithm_text(pool, baseline)
    );
    let mut rows = vec![[
        "backend",
        "weight",
        "share before",
        "share after",
        "load ratio before",
        "load ratio after",
        "",
    ]
    .map(String::from)
    .to_vec()];
    let share =
        |s: &Option<ExpectedShare>| s.as_ref().map_or("-".to_string(), |s| percent(s.share));
    let load =
        |s: &Option<ExpectedShare>| s.as_ref().map_or("-".to_string(), |s| ratio(s.load_ratio));
    for b in &pool.backends {
        let weight = match (&b.before, &b.after) {
            (Some(x), Some(y)) if x.weight != y.weight => format!("{} → {}", x.weight, y.weight),
            (_, Some(y)) => y.weight.to_string(),
            (Some(x), None) => x.weight.to_string(),
            (None, None) => String::new(),
        };
        let mut notes: Vec<String> = Vec::new();
        match (&b.before, &b.after) {
            (None, Some(_)) if pool.before.is_some() => notes.push("added".into()),
            (Some(_), None) if pool.after.is_some() => notes.push("removed".into()),
            _ => {}
        }
        notes.extend(b.flags.iter().map(|f| format!("! {f}")));
        let over = |s: &Option<ExpectedShare>| {
            s.as_ref()
                .and_then(|s| s.load_ratio)
                .is_some_and(|r| sim::above(r, max_load_ratio))
        };
        let flagged = b.flags.iter().any(|f| matches!(f, Flag::Overloaded { .. }));
        if over(&b.after) && over(&b.before) && !flagged {
            notes.push(format!("load ratio above {max_load_ratio} already before"));
        }
        rows.push(vec![
            b.address.clone(),
            weight,
            share(&b.before),
            share(&b.after),
            load(&b.before),
            load(&b.after),
            notes.join("; "),
        ]);
    }
    out.push_str(&render(
        &rows,
        &[false, true, true, true, true, true, false],
    ));
    if let Some(moved) = pool.keys_moved {
        let _ = writeln!(
            out,
            "  keys moving to another backend: {} (of {} keys looked up in both tables)",
            percent(moved),
            sim::plan::KEY_SAMPLE
        );
    }
}
