//! Incident reports: a first draft of the write-up an engineer does after an outage,
//! from the journal (every decision evenkeel made, DESIGN principle 3) and the config
//! history (every version's full text).
//!
//! [`draft`] is a pure function of plain data — journal entries, history versions, the
//! window asked for and the time now — so it is tested without a network;
//! `evenkeel report` fetches the two from the admin API and prints the Markdown.
//!
//! ```text
//!  journal entries ──► incident (onset, end) ──► timeline
//!                                   │
//!  history versions ──► cause (config change ─► diff, lints │ backend failure)
//!                       resolution (guard / operator rollback, recovery, drain)
//!                       impact (what the alarms quoted) ──► Markdown
//! ```
//!
//! ## What an incident is
//!
//! *Trouble* is an alarm raised, a backend found unhealthy or ejected, a pool in panic
//! mode or failed over to its backup, or a guard rollback. Trouble *holds* from the event
//! that starts it until the event that ends it (the alarm cleared, the backend healthy
//! again or returned, panic or failover over); a guard rollback is a moment, not a state.
//! An **incident** starts at the first trouble after a quiet period — a time when no
//! trouble holds — and ends at the event after which none holds any more; trouble that
//! starts again within [`QUIET`] of that end belongs to the same incident. An incident
//! still holding at the end of the window is *ongoing*.
//!
//! - Without `--since`/`--until` ([`Scope::MostRecent`]) the report is about the **most
//!   recent incident**: its timeline runs from [`LEAD_IN`] before its onset to
//!   [`LEAD_OUT`] after its end (or to now while it is ongoing).
//! - With a window ([`Scope::Window`]) the incident runs from the first trouble in the
//!   window to the end of the last, and the timeline shows every event of the window.
//!
//! Either way the probable root cause is looked for up to [`CAUSE_LOOKBACK`] before the
//! onset: entries before the window are passed in for that purpose only.
//!
//! ## What is known and what is inferred
//!
//! Events are facts; the root cause is an inference (the last change before the onset,
//! or the failure the incident started with), and the report says so each time. The
//! journal holds no request counts, so the impact quotes what the monitor's alarms said
//! (they carry the percentages) and, for a pool without an error-rate alarm, states the
//! bound that absence implies, marked as inferred. Nothing is invented.

mod analysis;
mod incident;
mod markdown;

use std::time::{Duration, SystemTime};

use crate::store::{JournalEntry, Version};

pub use analysis::Cause;

/// Timeline lead-in before the onset of the most recent incident: 2 minutes.
pub const LEAD_IN: Duration = Duration::from_secs(120);
/// Timeline lead-out after the end of the most recent incident: 1 minute.
pub const LEAD_OUT: Duration = Duration::from_secs(60);
/// Trouble that starts again within this of an incident's end belongs to it: 5 minutes.
pub const QUIET: Duration = Duration::from_secs(300);
/// How far before the onset a config change or backend failure is still a candidate
/// root cause: 10 minutes.
pub const CAUSE_LOOKBACK: Duration = Duration::from_secs(600);
/// Most timeline lines written; the rest are counted.
pub const MAX_TIMELINE: usize = 500;

/// Which part of the journal the report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The most recent incident in the entries given.
    MostRecent,
    /// Everything between `since` and `until` (open ends: the entries' ends).
    Window {
        /// Start of the window.
        since: Option<SystemTime>,
        /// End of the window.
        until: Option<SystemTime>,
    },
}

/// What a report is drafted from.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Journal entries, oldest first (by id); they may start before the window, for the
    /// root-cause search.
    pub entries: &'a [JournalEntry],
    /// The config history, oldest first.
    pub versions: &'a [Version],
    /// Which part of the journal.
    pub scope: Scope,
    /// The time now (the end of an ongoing incident).
    pub now: SystemTime,
    /// Where the data came from, for the report's preamble (`127.0.0.1:9901`).
    pub instance: &'a str,
}

/// A drafted report.
#[derive(Clone, Debug)]
pub struct Report {
    /// The whole report, Markdown.
    pub markdown: String,
    /// Onset of the incident.
    pub start: SystemTime,
    /// Its end, or `None` while it is ongoing.
    pub end: Option<SystemTime>,
    /// The probable root cause.
    pub cause: Cause,
}

/// Why there is nothing to report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoIncident {
    /// The window holds no event at all.
    #[error("no incident in this window: the journal holds no event in it")]
    NoEvents,
    /// Trouble ends in the window, but none starts: it began before the window.
    #[error("no incident starts in this window: {events} event(s), and the trouble among them (an alarm cleared, a backend back) began before it: give an earlier --since")]
    BeganBefore {
        /// How many events the window holds.
        events: usize,
    },
    /// Events, but no trouble among them.
    #[error("no incident in this window: {events} event(s), none of them trouble (an alarm, a guard rollback, an unhealthy or ejected backend, panic mode or a failover)")]
    Quiet {
        /// How many events the window holds.
        events: usize,
    },
}

/// A journal entry with its time and its event read back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timed<'a> {
    pub(crate) entry: &'a JournalEntry,
    pub(crate) at: SystemTime,
    pub(crate) event: &'a crate::health::Event,
}

impl Timed<'_> {
    /// `"N/"` for an entry fleet node N wrote, else `""`: what is about one node (its
    /// alarms, its view of a backend) is paired per node.
    pub(crate) fn node_key(&self) -> String {
        self.entry
            .node
            .as_deref()
            .map_or(String::new(), |n| format!("{n}/"))
    }

    /// `" on node N"` for an entry fleet node N wrote, else `""`.
    pub(crate) fn on_node(&self) -> String {
        self.entry
            .node
            .as_deref()
            .map_or(String::new(), |n| format!(" on node {n}"))
    }
}

/// Drafts the report on the incident `input.scope` selects.
pub fn draft(input: &Input<'_>) -> Result<Report, NoIncident> {
    // An entry of a kind a newer evenkeel wrote is left out.
    let read: Vec<(&JournalEntry, SystemTime, crate::health::Event)> = input
        .entries
        .iter()
        .filter_map(|entry| Some((entry, parse_time(&entry.time)?, entry.event()?)))
        .collect();
    let timed: Vec<Timed<'_>> = read
        .iter()
        .map(|(entry, at, event)| Timed {
            entry,
            at: *at,
            event,
        })
        .collect();
    let found = match input.scope {
        Scope::MostRecent => incident::most_recent(&timed, input.now)?,
        Scope::Window { since, until } => incident::within(&timed, since, until, input.now)?,
    };
    let analysis = analysis::analyse(&timed, input.versions, &found);
    let markdown = markdown::render(input, &timed, &found, &analysis);
    Ok(Report {
        markdown,
        start: found.onset.at,
        end: found.end.map(|e| e.at),
        cause: analysis.cause.clone(),
    })
}

/// An RFC 3339 time as the journal writes it.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

#[cfg(test)]
mod tests;
