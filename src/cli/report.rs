//! `evenkeel report`: an incident report (Markdown) drafted from a running evenkeel's
//! journal and config history.
//!
//! Fetches `GET /events` (page by page: the API answers at most 10,000 entries at a
//! time) and `GET /config/history`, then hands both to [`crate::report::draft`], which
//! finds the incident and writes the report. Without `--since`/`--until` it reads the
//! last [`DEFAULT_LOOKBACK`] of the journal and reports on the most recent incident in
//! it; with either, on the window given (plus, for the root-cause search only, the
//! [`report::CAUSE_LOOKBACK`] before it).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use http::Method;

use super::client::{Admin, AdminArgs};
use super::{CommandResult, Exit, Failure};
use crate::report::{self, Input, Scope};
use crate::store::{JournalEntry, Version};

/// How far back the journal is read when no window is given: 7 days.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most pages of events read (each up to 10,000 entries).
const MAX_PAGES: usize = 100;

/// Draft an incident report (Markdown) from a running evenkeel's journal.
///
/// Without --since/--until: the most recent incident of the last 7 days — from the
/// first trouble (an alarm, a guard rollback, an unhealthy or ejected backend, panic
/// mode, a failover) after a quiet period until no trouble holds any more, with 2
/// minutes before and 1 minute after in the timeline. With a window: the trouble in it.
/// Sections: Issue Summary, Timeline, Root Cause and Resolution (the probable cause, the
/// config diff when it is a change, what ended it), Corrective and Preventative
/// Measures (lint findings on the config that caused it, suggestions). Inferences are
/// marked. Exit 0 with a report, 1 when the window holds no incident, 3 when the admin
/// API cannot be reached or refuses the token.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  evenkeel report -c evenkeel.toml > incident.md
  evenkeel report -c evenkeel.toml --since 2h
  evenkeel report --admin 127.0.0.1:9901 --token-file admin.token \\
      --since 2026-11-21T10:00:00Z --until 2026-11-21T11:00:00Z")]
pub struct Args {
    /// A config file whose `[admin]` section says where the instance is.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Start of the window: RFC 3339 (`2026-11-21T10:00:00Z`) or a time back from now (`15m`, `2h`).
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// End of the window: RFC 3339 or a time back from now.
    #[arg(long, value_name = "T")]
    until: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

pub fn run(args: &Args) -> CommandResult {
    let now = SystemTime::now();
    let since = time_arg("--since", args.since.as_deref())?;
    let until = time_arg("--until", args.until.as_deref())?;
    let admin = Admin::find(args.config.as_deref(), &args.admin)?;
    let scope = if since.is_some() || until.is_some() {
        Scope::Window { since, until }
    } else {
        Scope::MostRecent
    };
    let read_from = match scope {
        Scope::MostRecent => now.checked_sub(DEFAULT_LOOKBACK),
        Scope::Window { since, .. } => since.and_then(|s| s.checked_sub(report::CAUSE_LOOKBACK)),
    };
    let entries = events(&admin, read_from, until)?;
    let versions = history(&admin)?;
    let instance = admin.addr().to_string();
    let input = Input {
        entries: &entries,
        versions: &versions,
        scope,
        now,
        instance: &instance,
    };
    match report::draft(&input) {
        Ok(report) => {
            out!("{}", report.markdown);
            Ok(Exit::Success)
        }
        Err(none) => {
            outln!("{none}");
            Ok(Exit::Rejected)
        }
    }
}

/// A time argument: RFC 3339 or a duration back from now.
fn time_arg(flag: &str, value: Option<&str>) -> Result<Option<SystemTime>, Failure> {
    let Some(value) = value else { return Ok(None) };
    crate::admin::time_param(value)
        .and_then(|t| report::parse_time(&t))
        .map(Some)
        .ok_or_else(|| {
            Failure::new(
                Exit::Usage,
                anyhow::anyhow!(
                    "{flag} {value:?}: expected an RFC 3339 time (2026-11-21T10:00:00Z) or a time back from now (15m, 2h)"
                ),
            )
        })
}

/// Journal entries from `since` to `until`, oldest first, every page.
fn events(
    admin: &Admin,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
) -> Result<Vec<JournalEntry>, Failure> {
    let stamp = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
    let until = until
        .map(|u| format!("&until={}", stamp(u)))
        .unwrap_or_default();
    let mut from = since.map_or("0".to_string(), stamp);
    let mut entries: Vec<JournalEntry> = Vec::new();
    for _ in 0..MAX_PAGES {
        let answer = admin.call(Method::GET, &format!("/events?since={from}{until}"), None)?;
        if answer.status != 200 {
            return Err(unexpected("/events", answer.status, &answer.json));
        }
        let page: Vec<JournalEntry> = serde_json::from_value(answer.json["events"].clone())
            .map_err(|e| {
                Failure::new(
                    Exit::Runtime,
                    anyhow::anyhow!("unexpected answer from /events: {e}"),
                )
            })?;
        let Some(last) = page.last() else {
            return Ok(entries);
        };
        from = last.id.to_string();
        entries.extend(page);
    }
    Err(Failure::new(
        Exit::Runtime,
        anyhow::anyhow!(
            "the journal holds more than {} pages of events in this window: give a narrower --since",
            MAX_PAGES
        ),
    ))
}

/// Every config version.
fn history(admin: &Admin) -> Result<Vec<Version>, Failure> {
    let answer = admin.call(Method::GET, "/config/history", None)?;
    if answer.status != 200 {
        return Err(unexpected("/config/history", answer.status, &answer.json));
    }
    serde_json::from_value(answer.json["versions"].clone()).map_err(|e| {
        Failure::new(
            Exit::Runtime,
            anyhow::anyhow!("unexpected answer from /config/history: {e}"),
        )
    })
}

fn unexpected(path: &str, status: u16, json: &serde_json::Value) -> Failure {
    Failure::new(
        Exit::Runtime,
        anyhow::anyhow!("unexpected answer {status} from {path}: {json}"),
    )
}
