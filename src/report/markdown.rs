//! The report as Markdown, in the sections of a post-incident write-up: Issue Summary,
//! Timeline, Root Cause and Resolution, Corrective and Preventative Measures.
//!
//! Every time is UTC. Inferences are marked *inferred* with their reasoning, so a reader
//! can tell the journal's facts from the report's guesses.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::analysis::{duration_words, onset_words, version, AlarmSpan, Analysis, Cause};
use super::incident::Found;
use super::{Input, Timed, MAX_TIMELINE};
use crate::config::Severity;

/// `2026-11-21 10:00:01 UTC`.
pub(crate) fn utc(t: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(t).to_string();
    match (text.get(..10), text.get(11..19)) {
        (Some(day), Some(clock)) => format!("{day} {clock} UTC"),
        _ => text,
    }
}

/// `2026-11-21`.
fn day(t: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.get(..10).unwrap_or(&text).to_string()
}

/// `10:00:01`.
fn clock(t: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.get(11..19).unwrap_or(&text).to_string()
}

/// The whole report.
pub(crate) fn render(
    input: &Input<'_>,
    events: &[Timed<'_>],
    found: &Found<'_>,
    analysis: &Analysis,
) -> String {
    let mut out = String::new();
    let subject = if analysis.pools.is_empty() {
        "config".to_string()
    } else {
        analysis
            .pools
            .iter()
            .map(|p| format!("pool {p:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "# Incident report: {subject}, {}\n",
        utc(found.onset.at)
    );
    let _ = writeln!(
        out,
        "_Draft by `evenkeel report` from the journal and the config history of the instance at \
         {}, written {}. Events are facts from the journal; statements marked *inferred* are the \
         report's reasoning: check them before you publish. The journal records events, not \
         request counts: figures are those the monitor's alarms quoted._\n",
        input.instance,
        utc(input.now)
    );
    summary(&mut out, events, found, analysis);
    timeline(&mut out, events, found, analysis);
    root_cause(&mut out, input, found, analysis);
    measures(&mut out, found, analysis);
    out
}

fn summary(out: &mut String, events: &[Timed<'_>], found: &Found<'_>, analysis: &Analysis) {
    let onset = found.onset;
    out.push_str("## Issue Summary\n\n");
    let _ = writeln!(
        out,
        "- **Start:** {} — {}.",
        utc(onset.at),
        onset_words(&onset)
    );
    if let Cause::Config { version, at, .. } = &analysis.cause {
        if *at < onset.at {
            let _ = writeln!(
                out,
                "  The probable cause, config version {version}, was applied at {}, {} earlier: \
                 the impact probably began then *(inferred)*.",
                clock(*at),
                duration_words(onset.at.duration_since(*at).unwrap_or_default())
            );
        }
    }
    match found.end {
        Some(end) => {
            let _ = writeln!(
                out,
                "- **End:** {} — no trouble holds any more.",
                utc(end.at)
            );
            let _ = writeln!(
                out,
                "- **Duration:** {}.",
                duration_words(end.at.duration_since(onset.at).unwrap_or_default())
            );
        }
        None => {
            let _ = writeln!(
                out,
                "- **End:** not over at {}: still holding: {}.",
                utc(found.to),
                found.holding.join(", ")
            );
            let _ = writeln!(
                out,
                "- **Duration:** {} so far (ongoing).",
                duration_words(found.to.duration_since(onset.at).unwrap_or_default())
            );
        }
    }
    let version_at = |id: u64| {
        events
            .iter()
            .rev()
            .find(|e| e.entry.id <= id)
            .and_then(|e| e.entry.version)
    };
    let at_onset = onset.entry.version;
    let at_end = match found.end {
        Some(end) => version_at(end.entry.id),
        None => version_at(u64::MAX),
    };
    let show = |v: Option<u64>| v.map_or("unknown".to_string(), |v| v.to_string());
    let _ = writeln!(
        out,
        "- **Config version in force:** {} at the start, {} at the end.",
        show(at_onset),
        show(at_end)
    );
    out.push_str("- **Impact:**\n");
    impact(out, analysis);
    let _ = writeln!(
        out,
        "- **Root cause:** {} *(probable; inferred, see below)*.",
        cause_words(&analysis.cause)
    );
    match (analysis.resolution.iter().find(|s| s.action), found.end) {
        (Some(step), _) => {
            let _ = writeln!(
                out,
                "- **Resolution:** at {}, {}.",
                clock(step.at),
                step.words
            );
        }
        (None, Some(_)) => {
            out.push_str("- **Resolution:** no rollback, drain or recovery recorded: the trouble ended without an action evenkeel saw *(inferred)*.\n");
        }
        (None, None) => out.push_str("- **Resolution:** none yet.\n"),
    }
    out.push('\n');
}

/// One line per pool in trouble: its alarms with the figures they quoted, its failures,
/// and its failed requests as far as known.
fn impact(out: &mut String, analysis: &Analysis) {
    for pool in &analysis.pools {
        let _ = writeln!(out, "  - pool {pool:?}:");
        let alarms: Vec<&AlarmSpan> = analysis
            .alarms
            .iter()
            .filter(|a| a.pool() == Some(pool.as_str()))
            .collect();
        for alarm in alarms.iter().filter(|a| a.kind() != "error_rate") {
            let _ = writeln!(out, "    - {}", alarm_words(alarm));
        }
        for (_, failure) in analysis.failures.iter().filter(|(p, _)| p == pool) {
            let _ = writeln!(out, "    - {failure}");
        }
        // One error_rate alarm per node that raised it (one, for one instance).
        let error_rates: Vec<&&AlarmSpan> =
            alarms.iter().filter(|a| a.kind() == "error_rate").collect();
        for alarm in &error_rates {
            let _ = writeln!(
                out,
                "    - failed requests (answered with a 5xx): {}",
                alarm_words(alarm)
            );
        }
        if error_rates.is_empty() {
            let line = analysis
                .max_error_rate
                .map_or("guard.max_error_rate".to_string(), |r| {
                    format!("{:.1}% (guard.max_error_rate)", r * 100.0)
                });
            let _ = writeln!(
                out,
                "    - failed requests (answered with a 5xx): at most {line} of requests in \
                 every 10-second window with at least 20 requests *(inferred: no `error_rate` \
                 alarm was raised for this pool)*"
            );
        }
    }
    for alarm in analysis.alarms.iter().filter(|a| a.pool().is_none()) {
        let _ = writeln!(out, "  - {}", alarm_words(alarm));
    }
    if analysis.pools.is_empty() && analysis.alarms.is_empty() {
        out.push_str("  - no pool alarm: see the timeline\n");
    }
}

/// An alarm with what it quoted, when raised and cleared.
fn alarm_words(alarm: &AlarmSpan) -> String {
    let on = alarm
        .node
        .as_deref()
        .map_or(String::new(), |n| format!(" on node {n}"));
    let mut words = format!("alarm `{}`{on}: {}", alarm.key, alarm.first_message);
    let mut when = format!("raised {}", clock(alarm.raised));
    if alarm.times > 1 {
        when.push_str(&format!(", {} times in all", alarm.times));
    }
    match alarm.cleared {
        Some(t) => when.push_str(&format!(", cleared {}", clock(t))),
        None => when.push_str(", not cleared"),
    }
    words.push_str(&format!(" ({when})"));
    if alarm.last_message != alarm.first_message {
        words.push_str(&format!("; last reading: {}", alarm.last_message));
    }
    words
}

/// The cause in a few words.
fn cause_words(cause: &Cause) -> String {
    match cause {
        Cause::Config {
            version,
            previous,
            origin,
            at,
            ..
        } => {
            let over = previous.map_or(String::new(), |p| format!(" over version {p}"));
            format!(
                "config version {version}, applied from {origin} at {}{over}",
                clock(*at)
            )
        }
        Cause::Backend {
            pool,
            backend,
            what,
            at,
            ..
        } => format!(
            "backend {backend} of pool {pool:?} {what} at {}",
            clock(*at)
        ),
        Cause::Unknown { .. } => "not found".to_string(),
    }
}

fn timeline(out: &mut String, events: &[Timed<'_>], found: &Found<'_>, analysis: &Analysis) {
    let mut lines: Vec<(SystemTime, u64, String)> = events
        .iter()
        .filter(|e| {
            (e.at >= found.from && e.at <= found.to) || Some(e.entry.id) == analysis.cause_entry
        })
        .map(|e| {
            // Told from the event itself; in a fleet, prefixed with the node.
            let mut line = match &e.entry.node {
                Some(node) => format!("[{node}] {}", e.event),
                None => e.event.to_string(),
            };
            let mut marks = Vec::new();
            if Some(e.entry.id) == analysis.cause_entry {
                marks.push("probable root cause");
            }
            if e.entry.id == found.onset.entry.id {
                marks.push("start");
            }
            if found.end.is_some_and(|end| end.entry.id == e.entry.id) {
                marks.push("end");
            }
            if !marks.is_empty() {
                line.push_str(&format!(" — **{}**", marks.join(", ")));
            }
            (e.at, e.entry.id, line)
        })
        .collect();
    // A start is not journaled; the history knows it.
    for change in analysis
        .config_changes
        .iter()
        .filter(|c| c.entry.is_none() && c.at >= found.from && c.at <= found.to)
    {
        let mut line = format!(
            "config version {} in force at start (`serve` with a config file)",
            change.version
        );
        if let Cause::Config { version, .. } = analysis.cause {
            if version == change.version {
                line.push_str(" — **probable root cause**");
            }
        }
        lines.push((change.at, 0, line));
    }
    lines.sort_by_key(|l| (l.0, l.1));
    let one_day = day(found.from) == day(found.to);
    out.push_str("## Timeline\n\n");
    if one_day {
        let _ = writeln!(out, "All times UTC, {}.\n", day(found.from));
    } else {
        out.push_str("All times UTC.\n\n");
    }
    let total = lines.len();
    for (at, _, line) in lines.into_iter().take(MAX_TIMELINE) {
        let when = if one_day { clock(at) } else { utc(at) };
        let _ = writeln!(out, "- {when} — {line}");
    }
    if total > MAX_TIMELINE {
        let _ = writeln!(
            out,
            "- … {} more events (`GET /events` has them all)",
            total - MAX_TIMELINE
        );
    }
    out.push('\n');
}

fn root_cause(out: &mut String, input: &Input<'_>, found: &Found<'_>, analysis: &Analysis) {
    out.push_str("## Root Cause and Resolution\n\n### Root cause\n\n");
    match &analysis.cause {
        Cause::Config {
            version,
            previous,
            basis,
            ..
        } => {
            let _ = writeln!(
                out,
                "**Probable root cause:** {} *(inferred: {basis})*.\n",
                cause_words(&analysis.cause)
            );
            match (&analysis.changes, previous) {
                (Some(Ok(changes)), Some(previous)) => {
                    let _ = writeln!(
                        out,
                        "What version {version} changed from version {previous} (as `evenkeel plan` lists it):\n\n```text"
                    );
                    if changes.is_empty() {
                        out.push_str("  nothing but formatting or comments\n");
                    }
                    for change in changes {
                        let _ = writeln!(out, "  {} {change}", change.sign());
                    }
                    out.push_str("```\n\n");
                }
                (Some(Err(why)), _) => {
                    let _ = writeln!(out, "What version {version} changed is not known: {why}.\n");
                }
                _ => {}
            }
            if let Some(v) = version_of(input, *version) {
                if !v.detail.trim().is_empty() {
                    let _ = writeln!(
                        out,
                        "It was applied with lint warnings (listed under the measures below).\n"
                    );
                }
            }
        }
        Cause::Backend { basis, .. } => {
            let _ = writeln!(
                out,
                "**Probable root cause:** {} *(inferred: {basis})*. Why the backend failed is \
                 outside what evenkeel sees: its own logs around {} tell.\n",
                cause_words(&analysis.cause),
                clock(found.onset.at)
            );
        }
        Cause::Unknown { basis } => {
            let _ = writeln!(
                out,
                "**Root cause not found** *(inferred: {basis})*. Look at the backends' own logs \
                 and metrics around {}, and widen the window (`evenkeel report --since 1h`).\n",
                clock(found.onset.at)
            );
        }
    }
    out.push_str("### Resolution\n\n");
    if analysis.resolution.is_empty() && found.end.is_none() {
        out.push_str("- nothing yet\n");
    }
    for step in &analysis.resolution {
        let _ = writeln!(out, "- {} — {}", clock(step.at), step.words);
    }
    if found.end.is_none() {
        let _ = writeln!(
            out,
            "- not resolved at {}: still holding: {}",
            clock(found.to),
            found.holding.join(", ")
        );
    }
    out.push('\n');
}

fn version_of<'a>(input: &Input<'a>, id: u64) -> Option<&'a crate::store::Version> {
    version(input.versions, id)
}

fn measures(out: &mut String, found: &Found<'_>, analysis: &Analysis) {
    out.push_str("## Corrective and Preventative Measures\n\n");
    let mut warnings = 0;
    let mut deny_warnings = false;
    if let Some(lints) = &analysis.lints {
        let _ = writeln!(out, "### Lint findings on version {}\n", lints.version);
        deny_warnings = lints
            .checked
            .config
            .as_ref()
            .is_some_and(|c| c.guard.deny_warnings);
        if lints.findings.is_empty() {
            let _ = writeln!(
                out,
                "`evenkeel check` finds nothing on version {}: no lint rule catches this.\n",
                lints.version
            );
        } else {
            let _ = writeln!(
                out,
                "`evenkeel check` on the text of version {} finds:\n",
                lints.version
            );
        }
        for finding in &lints.findings {
            if finding.severity == Severity::Warning && finding.allowed.is_none() {
                warnings += 1;
            }
            let at = finding.span.as_ref().map_or(String::new(), |span| {
                format!(" (line {})", lints.checked.source.locate(span.start).line)
            });
            let _ = write!(
                out,
                "- `{}[{}]`{at}: {}",
                finding.severity.as_str(),
                finding.rule,
                finding.message
            );
            if let Some(reason) = &finding.allowed {
                let _ = write!(out, " (allowed: {reason})");
            }
            if let Some(help) = &finding.help {
                let _ = write!(out, ". Help: {help}");
            }
            out.push('\n');
        }
        if !lints.findings.is_empty() {
            out.push('\n');
        }
    }
    out.push_str("### Suggestions\n\n");
    let mut steps: Vec<String> = Vec::new();
    match &analysis.cause {
        Cause::Config { version, .. } => {
            if warnings > 0 {
                steps.push(
                    "Fix what the findings above point at before the change ships again: `evenkeel explain RULE` says why each matters."
                        .to_string(),
                );
                if !deny_warnings {
                    steps.push(format!(
                        "Set `deny_warnings = true` under `[guard]` (or apply with `--deny-warnings`): version {version} was applied despite {warnings} lint warning{} and would have been refused.",
                        if warnings == 1 { "" } else { "s" }
                    ));
                }
            }
            steps.push(
                "Run `evenkeel plan CURRENT.toml NEW.toml` before applying: it lists every change and each backend's expected share and load ratio before and after, and flags a load ratio above `guard.max_load_ratio` (`--deny-flags` makes it a CI gate); `evenkeel preflight -c NEW.toml` load-tests the new config against stand-in backends."
                    .to_string(),
            );
            if analysis.cause_rolled_back {
                steps.push(format!(
                    "The guard rolled version {version} back and marked its text rejected: a SIGHUP or restart with the same file keeps the last good version. Correct the file in the deploy pipeline before the next deploy, or it will be refused (`apply --force` overrides)."
                ));
            } else if let Some(reason) = &analysis.cause_passed {
                steps.push(format!(
                    "The guard passed version {version} ({reason}): compare its thresholds (`evenkeel status` shows them) with what the alarms quoted, and consider a longer `guard.watch`, a lower `guard.min_requests` or tighter limits."
                ));
            } else {
                steps.push(format!(
                    "The guard gave no verdict on version {version} while it was in force: it judges a change once `guard.min_requests` requests went through after it (within `guard.watch`). On an instance with little traffic, lower `min_requests`; compare the thresholds (`evenkeel status` shows them) with what the alarms quoted."
                ));
            }
        }
        Cause::Backend { pool, backend, .. } => {
            steps.push(format!(
                "Find out why backend {backend} failed: its own logs and metrics around {}.",
                clock(found.onset.at)
            ));
            match analysis
                .lints
                .as_ref()
                .and_then(|l| Some((l.version, l.checked.config.as_ref()?)))
                .and_then(|(version, config)| failure_prediction(config, backend, version))
            {
                Some(prediction) => steps.push(prediction),
                None => steps.push(format!(
                    "Check that pool {pool:?} survives losing it: `evenkeel simulate -c FILE --down {backend} --failures` shows where its traffic goes and whether the other backends are overloaded."
                )),
            }
            if analysis
                .failures
                .iter()
                .any(|(p, f)| p == pool && (f.contains("panic") || f.contains("failed over")))
            {
                steps.push(format!(
                    "Pool {pool:?} ran short of usable backends: add backends or capacity, or a `backup` pool."
                ));
            }
        }
        Cause::Unknown { .. } => {
            steps.push(
                "Widen the window (`evenkeel report --since 1h`) and look at the backends' own logs and metrics."
                    .to_string(),
            );
        }
    }
    for (i, step) in steps.iter().enumerate() {
        let _ = writeln!(out, "{}. {step}", i + 1);
    }
}

/// What the failure analysis of the config in force (`version`) says about losing
/// `backend` everywhere it is listed (`evenkeel simulate --failures`), as a suggestion.
fn failure_prediction(
    config: &crate::config::Config,
    backend: &str,
    version: u64,
) -> Option<String> {
    use crate::sim::failures::Analysis;
    use crate::sim::traffic::Traffic;
    let a = Analysis::new(config, Traffic::assumed(config));
    let s = a.servers.find(config, backend)?;
    let row = a.row(&[s]);
    let reactions: Vec<String> = a
        .reactions(&row)
        .into_iter()
        .map(|(p, r)| format!("pool {:?}: {r}", config.pools[p].name))
        .collect();
    let mut text = format!(
        "The failure analysis of version {version} (`evenkeel simulate -c FILE --failures`, traffic assumed equal per route) says what losing {backend} does: {}.",
        reactions.join("; ")
    );
    if row.down.is_empty() {
        text.push_str(" Every route keeps a usable backend");
    } else {
        let down: Vec<String> = row
            .down
            .iter()
            .map(|&p| {
                format!(
                    "{} (pool {:?})",
                    crate::config::lint::route_labels(config, p),
                    config.pools[p].name
                )
            })
            .collect();
        text.push_str(&format!(" Routes left with nowhere to go: {}: give them a second server or a backup pool on other servers", down.join(", ")));
    }
    match row.overloaded.iter().max_by(|x, y| x.2.total_cmp(&y.2)) {
        Some(&(worst, _, after)) => text.push_str(&format!(
            "; {} is pushed to a load ratio of {after:.2}, above guard.max_load_ratio {}: make weights follow capacity or add servers.",
            a.servers.list[worst].name, config.guard.max_load_ratio
        )),
        None => text.push_str(&format!(
            "; no server is pushed above guard.max_load_ratio {}.",
            config.guard.max_load_ratio
        )),
    }
    Some(text)
}
