//! Finding the incident in a journal: which events start and end trouble, and where
//! the quiet periods are (the definition is in the module doc of [`super`]).

use std::collections::BTreeSet;
use std::time::SystemTime;

use super::{NoIncident, Timed, LEAD_IN, LEAD_OUT, QUIET};
use crate::health::Event;

/// What an event does to the trouble that holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Trouble starts and holds under this key until an [`Effect::Ends`] of the same key.
    Starts(String),
    /// The trouble under this key ends.
    Ends(String),
    /// Trouble for a moment (a guard rollback): it starts an incident but holds nothing.
    Moment,
    /// Not trouble (a config applied, a guard that passed, a drain).
    Nothing,
}

/// What `event` does to the trouble that holds.
pub(crate) fn effect(event: &Timed<'_>) -> Effect {
    let node = event.node_key();
    let subject = |pool: &str, backend: &str| format!("{node}{pool}/{backend}");
    let starts_or_ends = |starts: bool, key: String| {
        if starts {
            Effect::Starts(key)
        } else {
            Effect::Ends(key)
        }
    };
    match event.event {
        Event::Alarm { key, raised, .. } => starts_or_ends(*raised, format!("alarm {node}{key}")),
        Event::Health {
            pool,
            backend,
            verdict,
            first,
            ..
        } => match *verdict {
            "unhealthy" => Effect::Starts(format!("unhealthy {}", subject(pool, backend))),
            // A backend's first verdict after start is no recovery.
            "healthy" if *first => Effect::Nothing,
            _ => Effect::Ends(format!("unhealthy {}", subject(pool, backend))),
        },
        Event::Ejected { pool, backend, .. } => {
            Effect::Starts(format!("ejected {}", subject(pool, backend)))
        }
        Event::Returned { pool, backend } => {
            Effect::Ends(format!("ejected {}", subject(pool, backend)))
        }
        Event::Panic { pool, panic, .. } => starts_or_ends(*panic, format!("panic {node}{pool}")),
        Event::Failover { pool, active, .. } => {
            starts_or_ends(*active, format!("failover {node}{pool}"))
        }
        Event::Guard { verdict, .. } if *verdict != "passed" => Effect::Moment,
        Event::Rollout {
            verdict: "rolled_back",
            ..
        } => Effect::Moment,
        _ => Effect::Nothing,
    }
}

/// A stretch of trouble: indices of its first event and of the event that ended it.
#[derive(Clone, Debug)]
struct Episode {
    start: usize,
    end: Option<usize>,
}

/// The stretches of trouble in `events`, merged when less than [`QUIET`] apart, and
/// the trouble still holding after the last event.
fn episodes(events: &[Timed<'_>]) -> (Vec<Episode>, BTreeSet<String>) {
    let mut holding = BTreeSet::new();
    let mut found: Vec<Episode> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        match effect(event) {
            effect @ (Effect::Starts(_) | Effect::Moment) => {
                let open = found.last().is_some_and(|e| e.end.is_none());
                if !open {
                    let recent = found.last_mut().filter(|e| {
                        e.end.is_some_and(|end| {
                            event.at.duration_since(events[end].at).unwrap_or_default() < QUIET
                        })
                    });
                    match recent {
                        Some(episode) => episode.end = None,
                        None => found.push(Episode {
                            start: i,
                            end: None,
                        }),
                    }
                }
                if let Effect::Starts(key) = effect {
                    holding.insert(key);
                }
                if holding.is_empty() {
                    if let Some(episode) = found.last_mut() {
                        episode.end = Some(i);
                    }
                }
            }
            Effect::Ends(key) => {
                if holding.remove(&key) && holding.is_empty() {
                    if let Some(episode) = found.last_mut().filter(|e| e.end.is_none()) {
                        episode.end = Some(i);
                    }
                }
            }
            Effect::Nothing => {}
        }
    }
    (found, holding)
}

/// The incident a report is about, and the stretch of journal its timeline shows.
#[derive(Clone, Debug)]
pub(crate) struct Found<'a> {
    /// The first trouble.
    pub(crate) onset: Timed<'a>,
    /// The event after which no trouble held; `None` while ongoing.
    pub(crate) end: Option<Timed<'a>>,
    /// Trouble still holding at the end of the window (empty unless ongoing).
    pub(crate) holding: Vec<String>,
    /// Start of the timeline.
    pub(crate) from: SystemTime,
    /// End of the timeline.
    pub(crate) to: SystemTime,
}

impl Found<'_> {
    /// Whether the entry with `id` is part of the incident (onset to end).
    pub(crate) fn covers(&self, id: u64) -> bool {
        id >= self.onset.entry.id && self.end.is_none_or(|end| id <= end.entry.id)
    }
}

/// Why `events`, with no trouble starting among them, hold no incident.
fn nothing_in(events: &[Timed<'_>]) -> NoIncident {
    let ends = events.iter().any(|e| matches!(effect(e), Effect::Ends(_)));
    if ends {
        NoIncident::BeganBefore {
            events: events.len(),
        }
    } else {
        NoIncident::Quiet {
            events: events.len(),
        }
    }
}

/// The most recent incident in `events` (see [`super::Scope::MostRecent`]).
pub(crate) fn most_recent<'a>(
    events: &[Timed<'a>],
    now: SystemTime,
) -> Result<Found<'a>, NoIncident> {
    if events.is_empty() {
        return Err(NoIncident::NoEvents);
    }
    let (found, holding) = episodes(events);
    let last = found.last().ok_or_else(|| nothing_in(events))?;
    let onset = events[last.start];
    let end = last.end.map(|i| events[i]);
    let to = match end {
        Some(end) => (end.at + LEAD_OUT).min(now).max(end.at),
        None => now.max(events[events.len() - 1].at),
    };
    Ok(Found {
        onset,
        end,
        holding: if end.is_none() {
            holding.into_iter().collect()
        } else {
            Vec::new()
        },
        from: onset.at.checked_sub(LEAD_IN).unwrap_or(onset.at),
        to,
    })
}

/// The incident in the window from `since` to `until` (see [`super::Scope::Window`]).
pub(crate) fn within<'a>(
    events: &[Timed<'a>],
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    now: SystemTime,
) -> Result<Found<'a>, NoIncident> {
    let inside: Vec<Timed<'a>> = events
        .iter()
        .filter(|e| since.is_none_or(|s| e.at >= s) && until.is_none_or(|u| e.at <= u))
        .copied()
        .collect();
    let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
        return Err(NoIncident::NoEvents);
    };
    let (found, holding) = episodes(&inside);
    let (Some(opening), Some(closing)) = (found.first(), found.last()) else {
        return Err(nothing_in(&inside));
    };
    let end = closing.end.map(|i| inside[i]);
    Ok(Found {
        onset: inside[opening.start],
        end,
        holding: if end.is_none() {
            holding.into_iter().collect()
        } else {
            Vec::new()
        },
        from: since.unwrap_or(first.at),
        to: until.unwrap_or(now).max(last.at),
    })
}
