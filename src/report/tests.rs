//! The report builder on synthetic journals and histories: the 90%-weight incident the
//! guard rolls back, a backend failure, an error-rate alarm, an incident still going on,
//! and windows with nothing to report.

use std::time::{Duration, SystemTime};

use super::*;
use crate::health::Event;
use crate::store::{sha256, Origin, Outcome};

/// Three equal backends, weighted round robin, with health checks.
const EVEN: &str = r#"[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
pool = "web"

[pool.web]
algorithm = "weighted_round_robin"
backends = [
  { address = "127.0.0.1:9001", weight = 1 },
  { address = "127.0.0.1:9002", weight = 1 },
  { address = "127.0.0.1:9003", weight = 1 },
]
[pool.web.health]
path = "/healthz"
"#;

/// The seed incident's typo: 18:1:1 sends 90% of the traffic to one of three equal
/// backends (load ratio 2.70, a `load-ratio` warning).
fn overloading() -> String {
    EVEN.replacen(
        "{ address = \"127.0.0.1:9001\", weight = 1 }",
        "{ address = \"127.0.0.1:9001\", weight = 18 }",
        1,
    )
}

const OVERLOAD: &str = "backend 127.0.0.1:9001 of pool \"web\" is overloaded: it gets 90.1% of requests for 33.3% of the capacity (load ratio 2.70 > 2)";
const BREACH: &str = "backend 127.0.0.1:9001 of pool \"web\" load ratio 2.70 > 2 (90.1% of requests for 33.3% of capacity)";

fn base() -> SystemTime {
    parse_time("2026-11-21T10:00:00Z").expect("a time")
}

fn at(seconds: u64) -> SystemTime {
    base() + Duration::from_secs(seconds)
}

fn entry(id: u64, seconds: u64, version: u64, event: Event) -> JournalEntry {
    let data = serde_json::to_value(&event).expect("event JSON");
    JournalEntry {
        id,
        time: humantime::format_rfc3339_millis(at(seconds)).to_string(),
        version: Some(version),
        kind: data["kind"].as_str().unwrap_or_default().to_string(),
        message: event.to_string(),
        data,
        node: None,
    }
}

fn version(id: u64, seconds: u64, origin: Origin, text: &str, restores: Option<u64>) -> Version {
    Version {
        id,
        time: humantime::format_rfc3339_millis(at(seconds)).to_string(),
        origin,
        sha256: sha256(text),
        text: text.to_string(),
        outcome: Outcome::Applied,
        detail: String::new(),
        restores,
        certificates: Vec::new(),
        node: None,
        expect_shift: false,
    }
}

fn alarm(key: &str, raised: bool, message: &str) -> Event {
    Event::Alarm {
        key: key.to_string(),
        raised,
        message: message.to_string(),
    }
}

fn applied(version: u64, previous: u64, origin: &'static str, restores: Option<u64>) -> Event {
    Event::Config {
        version: Some(version),
        previous,
        origin,
        outcome: "applied",
        restores,
        expect_shift: false,
        detail: String::new(),
    }
}

/// History: 1 at start (even), 2 from the API (18:1:1, with its warning), 3 the guard's
/// rollback restoring 1.
fn history() -> Vec<Version> {
    let mut v2 = version(2, 3600, Origin::Api, &overloading(), None);
    v2.detail = "warning[load-ratio]: backend 127.0.0.1:9001 of pool \"web\" is meant to get 90.0% of the traffic".into();
    vec![
        version(1, 0, Origin::Start, EVEN, None),
        v2,
        version(3, 3603, Origin::Rollback, EVEN, Some(1)),
    ]
}

/// An old, unrelated alarm at 10:05, then at 11:00 the seed incident: version 2 applied,
/// the load-ratio alarm, the guard's rollback to version 3 (restoring 1), alarms cleared.
fn journal() -> Vec<JournalEntry> {
    vec![
        entry(1, 300, 1, alarm("skew/web", true, "pool \"web\" is skewed")),
        entry(
            2,
            320,
            1,
            alarm("skew/web", false, "pool \"web\" is skewed"),
        ),
        entry(3, 3600, 2, applied(2, 1, "api", None)),
        entry(
            4,
            3602,
            2,
            alarm("load_ratio/web/127.0.0.1:9001", true, OVERLOAD),
        ),
        entry(
            5,
            3603,
            2,
            alarm(
                "guard/2",
                true,
                &format!(
                    "config version 2 breached the guard and is rolled back to version 1: {BREACH}"
                ),
            ),
        ),
        entry(6, 3603, 3, applied(3, 2, "rollback", Some(1))),
        entry(
            7,
            3603,
            3,
            Event::Guard {
                version: 2,
                verdict: "rolled_back",
                reason: BREACH.to_string(),
                restored: Some(3),
                judged: true,
            },
        ),
        entry(
            8,
            3608,
            3,
            alarm("guard/2", false, "config version 2 breached the guard"),
        ),
        entry(
            9,
            3609,
            3,
            alarm("load_ratio/web/127.0.0.1:9001", false, OVERLOAD),
        ),
    ]
}

fn draft_of(
    entries: &[JournalEntry],
    versions: &[Version],
    scope: Scope,
    now: SystemTime,
) -> Result<Report, NoIncident> {
    draft(&Input {
        entries,
        versions,
        scope,
        now,
        instance: "127.0.0.1:9901",
    })
}

/// The section of `markdown` under `heading`, up to the next heading of the same level.
fn section<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let start = markdown
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in:\n{markdown}"));
    let rest = &markdown[start + heading.len()..];
    let end = rest.find("\n## ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

#[test]
fn the_90_percent_weight_incident_names_version_2_its_diff_the_rollback_and_the_lint() {
    let (journal, history) = (journal(), history());
    let report = draft_of(&journal, &history, Scope::MostRecent, at(3700)).expect("an incident");
    let md = &report.markdown;
    if std::env::var_os("EVENKEEL_SHOW_REPORT").is_some() {
        println!("{md}");
    }
    assert_eq!(report.start, at(3602), "the first alarm");
    assert_eq!(report.end, Some(at(3609)), "the last alarm cleared");
    assert!(
        matches!(&report.cause, Cause::Config { version: 2, previous: Some(1), origin, .. } if origin == "api"),
        "{:?}",
        report.cause
    );

    let summary = section(md, "## Issue Summary");
    assert!(summary.contains("- **Start:** 2026-11-21 11:00:02 UTC — the first alarm (`load_ratio/web/127.0.0.1:9001`)"), "{summary}");
    assert!(
        summary.contains("- **End:** 2026-11-21 11:00:09 UTC"),
        "{summary}"
    );
    assert!(summary.contains("- **Duration:** 7 s."), "{summary}");
    assert!(
        summary.contains(
            "was applied at 11:00:00, 2 s earlier: the impact probably began then *(inferred)*"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("2 at the start, 3 at the end"),
        "{summary}"
    );
    assert!(
        summary.contains(OVERLOAD),
        "the overload as the alarm quoted it:\n{summary}"
    );
    assert!(
        summary
            .contains("failed requests (answered with a 5xx): at most 2.0% (guard.max_error_rate)")
            && summary.contains("*(inferred: no `error_rate` alarm was raised for this pool)*"),
        "{summary}"
    );
    assert!(summary.contains("- **Root cause:** config version 2, applied from api at 11:00:00 over version 1 *(probable; inferred"), "{summary}");
    assert!(summary.contains("- **Resolution:** at 11:00:03, the guard rolled config version 2 back (version 3 restores version 1)"), "{summary}");

    let timeline = section(md, "## Timeline");
    assert!(
        timeline.contains("All times UTC, 2026-11-21."),
        "{timeline}"
    );
    assert!(
        !timeline.contains("skewed"),
        "the old incident is not this one:\n{timeline}"
    );
    let lines: Vec<&str> = timeline.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(lines.len(), 7, "{timeline}");
    assert!(
        lines[0].starts_with("- 11:00:00 — config version 2 from api applied")
            && lines[0].ends_with("— **probable root cause**"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("- 11:00:02 — ALARM raised [load_ratio/web/127.0.0.1:9001]")
            && lines[1].ends_with("**start**"),
        "{}",
        lines[1]
    );
    assert!(
        lines[4].contains("guard: version 2 rolled_back to version 3"),
        "{}",
        lines[4]
    );
    assert!(
        lines[6].starts_with("- 11:00:09 — alarm cleared") && lines[6].ends_with("**end**"),
        "{}",
        lines[6]
    );

    let cause = section(md, "## Root Cause and Resolution");
    assert!(cause.contains("**Probable root cause:** config version 2, applied from api at 11:00:00 over version 1 *(inferred: it is the last config change before the first alarm (`load_ratio/web/127.0.0.1:9001`), 2 s earlier, and the guard"), "{cause}");
    assert!(
        cause.contains("```text\n  ~ pool \"web\": backend 127.0.0.1:9001: weight 1 → 18\n```"),
        "{cause}"
    );
    assert!(
        cause.contains("It was applied with lint warnings"),
        "{cause}"
    );
    assert!(cause.contains(&format!("- 11:00:03 — the guard rolled config version 2 back (version 3 restores version 1): {BREACH}")), "{cause}");
    assert!(cause.contains("- 11:00:09 — the last alarm cleared (`load_ratio/web/127.0.0.1:9001`): no trouble holds any more"), "{cause}");

    let measures = section(md, "## Corrective and Preventative Measures");
    assert!(
        measures.contains("### Lint findings on version 2"),
        "{measures}"
    );
    assert!(measures.contains("- `warning[load-ratio]` (line 11): backend 127.0.0.1:9001 of pool \"web\" is meant to get 90.0% of the traffic but has 33.3% of the capacity"), "{measures}");
    assert!(
        measures.contains("Set `deny_warnings = true` under `[guard]`"),
        "{measures}"
    );
    assert!(
        measures.contains("`evenkeel plan CURRENT.toml NEW.toml`"),
        "{measures}"
    );
    assert!(
        measures.contains("The guard rolled version 2 back and marked its text rejected"),
        "{measures}"
    );
}

#[test]
fn a_window_covers_every_event_in_it_and_finds_the_same_cause() {
    let (journal, history) = (journal(), history());
    let scope = Scope::Window {
        since: Some(at(3590)),
        until: None,
    };
    let report = draft_of(&journal, &history, scope, at(3700)).expect("an incident");
    assert!(matches!(report.cause, Cause::Config { version: 2, .. }));
    assert_eq!((report.start, report.end), (at(3602), Some(at(3609))));
    // The whole window (to now), not the 1-minute lead-out.
    let timeline = section(&report.markdown, "## Timeline");
    assert_eq!(timeline.lines().filter(|l| l.starts_with("- ")).count(), 7);

    // A window before the incident holds the old skew alarm only: that is the incident.
    let early = Scope::Window {
        since: Some(at(0)),
        until: Some(at(1000)),
    };
    let old = draft_of(&journal, &history, early, at(3700)).expect("the old alarm");
    assert_eq!(old.start, at(300));
    assert!(
        matches!(old.cause, Cause::Unknown { .. }),
        "{:?}",
        old.cause
    );
    assert!(
        old.markdown.contains("**Root cause not found**"),
        "{}",
        old.markdown
    );
}

#[test]
fn no_incident_when_the_window_is_empty_or_quiet() {
    let (journal, history) = (journal(), history());
    let empty = Scope::Window {
        since: Some(at(1000)),
        until: Some(at(2000)),
    };
    assert_eq!(
        draft_of(&journal, &history, empty, at(3700)).err(),
        Some(NoIncident::NoEvents)
    );
    let only_the_change = Scope::Window {
        since: Some(at(3590)),
        until: Some(at(3601)),
    };
    assert_eq!(
        draft_of(&journal, &history, only_the_change, at(3700)).err(),
        Some(NoIncident::Quiet { events: 1 })
    );
    let only_the_end = Scope::Window {
        since: Some(at(3605)),
        until: None,
    };
    let none = draft_of(&journal, &history, only_the_end, at(3700)).err();
    assert_eq!(none, Some(NoIncident::BeganBefore { events: 2 }));
    assert!(none
        .map(|n| n.to_string())
        .unwrap_or_default()
        .contains("give an earlier --since"));
    assert_eq!(
        draft_of(&[], &history, Scope::MostRecent, at(3700)).err(),
        Some(NoIncident::NoEvents)
    );
}

#[test]
fn a_backend_failure_without_a_change_is_the_cause_and_its_recovery_the_resolution() {
    let history = vec![version(1, 0, Origin::Start, EVEN, None)];
    let health = |verdict: &'static str, cause: &str| Event::Health {
        pool: "web".into(),
        backend: "127.0.0.1:9002".into(),
        verdict,
        first: false,
        cause: cause.into(),
    };
    let errors = "pool \"web\" fails 31.0% of requests (5xx and connection errors; threshold 2.0%)";
    let journal = vec![
        entry(1, 1000, 1, health("unhealthy", "connection refused")),
        entry(2, 1001, 1, alarm("error_rate/web", true, errors)),
        entry(
            3,
            1030,
            1,
            alarm(
                "error_rate/web",
                false,
                "pool \"web\" fails 4.0% of requests (5xx and connection errors; threshold 2.0%)",
            ),
        ),
        entry(4, 1060, 1, health("healthy", "status 200")),
    ];
    let report = draft_of(&journal, &history, Scope::MostRecent, at(2000)).expect("an incident");
    assert!(
        matches!(&report.cause, Cause::Backend { backend, .. } if backend == "127.0.0.1:9002"),
        "{:?}",
        report.cause
    );
    assert_eq!((report.start, report.end), (at(1000), Some(at(1060))));
    let md = &report.markdown;
    assert!(md.contains("**Probable root cause:** backend 127.0.0.1:9002 of pool \"web\" turned unhealthy (connection refused) at 10:16:40 *(inferred: the incident starts with this failure, with no config change in the 10 min before it)*"), "{md}");
    assert!(md.contains(&format!("failed requests (answered with a 5xx): alarm `error_rate/web`: {errors} (raised 10:16:41, cleared 10:17:10); last reading: pool \"web\" fails 4.0%")), "{md}");
    assert!(md.contains("- 10:17:40 — backend 127.0.0.1:9002 of pool \"web\" is healthy again (status 200); no trouble holds any more"), "{md}");
    assert!(md.contains("- **Resolution:** at 10:17:40, backend 127.0.0.1:9002 of pool \"web\" is healthy again (status 200); no trouble holds any more."), "{md}");
    // The suggestion is the failure analysis of the config in force.
    assert!(
        md.contains("The failure analysis of version 1 (`evenkeel simulate -c FILE --failures`, traffic assumed equal per route) says what losing 127.0.0.1:9002 does: pool \"web\": taken out by the active check within about 6s. Every route keeps a usable backend; no server is pushed above guard.max_load_ratio 2."),
        "{md}"
    );
    assert!(
        md.contains("### Lint findings on version 1"),
        "the config in force: {md}"
    );
}

#[test]
fn a_change_to_the_failing_backends_pool_is_the_probable_cause_of_its_failure() {
    let added = EVEN.replace(
        "  { address = \"127.0.0.1:9003\", weight = 1 },\n",
        "  { address = \"127.0.0.1:9003\", weight = 1 },\n  { address = \"127.0.0.1:9004\", weight = 1 },\n",
    );
    let history = vec![
        version(1, 0, Origin::Start, EVEN, None),
        version(2, 100, Origin::Sighup, &added, None),
    ];
    let journal = vec![
        entry(1, 100, 2, applied(2, 1, "sighup", None)),
        entry(
            2,
            106,
            2,
            Event::Health {
                pool: "web".into(),
                backend: "127.0.0.1:9004".into(),
                verdict: "unhealthy",
                first: false,
                cause: "connection refused".into(),
            },
        ),
    ];
    let report = draft_of(&journal, &history, Scope::MostRecent, at(200)).expect("an incident");
    assert!(
        matches!(report.cause, Cause::Config { version: 2, .. }),
        "{:?}",
        report.cause
    );
    assert_eq!(report.end, None, "still unhealthy");
    let md = &report.markdown;
    assert!(md.contains("and it changed pool \"web\""), "{md}");
    assert!(
        md.contains("+ pool \"web\": backend 127.0.0.1:9004 (weight 1, capacity 1)"),
        "{md}"
    );
    assert!(md.contains("- **End:** not over at 2026-11-21 10:03:20 UTC: still holding: unhealthy web/127.0.0.1:9004."), "{md}");
    assert!(
        md.contains("- **Duration:** 1 min 34 s so far (ongoing)."),
        "{md}"
    );
    assert!(
        md.contains("- **Root cause:** config version 2, applied from sighup"),
        "{md}"
    );
}

#[test]
fn trouble_within_the_quiet_period_is_one_incident_and_after_it_a_new_one() {
    let history = vec![version(1, 0, Origin::Start, EVEN, None)];
    let skew = |id, seconds, raised| {
        entry(
            id,
            seconds,
            1,
            alarm("skew/web", raised, "pool \"web\" is skewed"),
        )
    };
    let close = vec![
        skew(1, 100, true),
        skew(2, 110, false),
        skew(3, 200, true),
        skew(4, 210, false),
    ];
    let report = draft_of(&close, &history, Scope::MostRecent, at(1000)).expect("an incident");
    assert_eq!(
        (report.start, report.end),
        (at(100), Some(at(210))),
        "90 s apart: one incident"
    );
    let apart = vec![
        skew(1, 100, true),
        skew(2, 110, false),
        skew(3, 500, true),
        skew(4, 510, false),
    ];
    let report = draft_of(&apart, &history, Scope::MostRecent, at(1000)).expect("an incident");
    assert_eq!(
        (report.start, report.end),
        (at(500), Some(at(510))),
        "390 s apart: the last one"
    );
    assert!(
        report.markdown.contains(
            "alarm `skew/web`: pool \"web\" is skewed (raised 10:08:20, cleared 10:08:30)"
        ),
        "{}",
        report.markdown
    );
}

#[test]
fn the_same_bad_text_applied_again_within_the_quiet_period_is_named_in_the_resolution() {
    let mut history = history();
    history.push(version(4, 3650, Origin::Api, &overloading(), None));
    history.push(version(5, 3652, Origin::Rollback, EVEN, Some(3)));
    let mut journal = journal();
    journal.extend([
        entry(10, 3650, 4, applied(4, 3, "api", None)),
        entry(
            11,
            3652,
            4,
            alarm("guard/4", true, "config version 4 breached the guard"),
        ),
        entry(12, 3652, 5, applied(5, 4, "rollback", Some(3))),
        entry(
            13,
            3652,
            5,
            Event::Guard {
                version: 4,
                verdict: "rolled_back",
                reason: BREACH.to_string(),
                restored: Some(5),
                judged: true,
            },
        ),
        entry(
            14,
            3657,
            5,
            alarm("guard/4", false, "config version 4 breached the guard"),
        ),
    ]);
    let report = draft_of(&journal, &history, Scope::MostRecent, at(3700)).expect("an incident");
    assert!(
        matches!(report.cause, Cause::Config { version: 2, .. }),
        "{:?}",
        report.cause
    );
    assert_eq!(
        report.end,
        Some(at(3657)),
        "one incident: 41 s of quiet in between"
    );
    let resolution = section(&report.markdown, "### Resolution");
    assert!(resolution.contains("- 11:00:50 — config version 4 was applied (from api): the same text as version 2, the probable cause, again"), "{resolution}");
    assert!(
        resolution.contains(
            "- 11:00:52 — the guard rolled config version 4 back (version 5 restores version 3)"
        ),
        "{resolution}"
    );
}

#[test]
fn an_operator_rollback_resolves_it_and_a_change_the_guard_never_judged_is_said_so() {
    let history = vec![
        version(1, 0, Origin::Start, EVEN, None),
        version(2, 100, Origin::Api, &overloading(), None),
        version(3, 130, Origin::Rollback, EVEN, Some(1)),
    ];
    let journal = vec![
        entry(1, 100, 2, applied(2, 1, "api", None)),
        entry(
            2,
            102,
            2,
            alarm("load_ratio/web/127.0.0.1:9001", true, OVERLOAD),
        ),
        entry(3, 130, 3, applied(3, 2, "rollback", Some(1))),
        entry(
            4,
            135,
            3,
            alarm("load_ratio/web/127.0.0.1:9001", false, OVERLOAD),
        ),
    ];
    let report = draft_of(&journal, &history, Scope::MostRecent, at(300)).expect("an incident");
    let md = &report.markdown;
    assert!(
        matches!(report.cause, Cause::Config { version: 2, .. }),
        "{:?}",
        report.cause
    );
    assert!(md.contains("*(inferred: it is the last config change before the first alarm (`load_ratio/web/127.0.0.1:9001`), 2 s earlier)*"), "{md}");
    assert!(
        md.contains(
            "- **Resolution:** at 10:02:10, an operator rolled back to version 1 (now version 3)."
        ),
        "{md}"
    );
    assert!(
        md.contains("The guard gave no verdict on version 2 while it was in force"),
        "{md}"
    );
    assert!(!md.contains("marked its text rejected"), "{md}");
}

/// Seen in a CI run: `report` right after a start said "the trouble began before this
/// window", taking each backend's first `healthy` verdict for a recovery.
#[test]
fn a_backends_first_healthy_verdict_is_no_recovery() {
    let history = vec![version(1, 0, Origin::Start, EVEN, None)];
    let first = |backend: &str| Event::Health {
        pool: "web".into(),
        backend: backend.into(),
        verdict: "healthy",
        first: true,
        cause: "status 200".into(),
    };
    let journal = vec![
        entry(1, 101, 1, first("127.0.0.1:9001")),
        entry(2, 101, 1, first("127.0.0.1:9002")),
    ];
    let since_start = Scope::Window {
        since: Some(at(100)),
        until: None,
    };
    let none = draft_of(&journal, &history, since_start, at(200)).err();
    assert_eq!(none, Some(NoIncident::Quiet { events: 2 }));
}

/// In a fleet the journal is shared: each node's alarms start and end trouble for that
/// node only (node b clearing its own alarm does not end node a's), the timeline says
/// which node wrote what, and a version every node put in force is one change.
#[test]
fn a_fleet_journal_is_read_per_node() {
    let on = |node: &str, mut entry: JournalEntry| {
        entry.node = Some(node.to_string());
        entry
    };
    let error_rate = "pool \"web\" fails 40.0% of requests";
    let journal = vec![
        on("a", entry(1, 3600, 2, applied(2, 1, "api", None))),
        on("b", entry(2, 3600, 2, applied(2, 1, "api", None))),
        on(
            "a",
            entry(3, 3602, 2, alarm("error_rate/web", true, error_rate)),
        ),
        on(
            "b",
            entry(4, 3603, 2, alarm("error_rate/web", true, error_rate)),
        ),
        on(
            "b",
            entry(5, 3610, 2, alarm("error_rate/web", false, error_rate)),
        ),
        on(
            "a",
            entry(6, 3640, 2, alarm("error_rate/web", false, error_rate)),
        ),
    ];
    let history = history();
    let report = draft_of(&journal, &history, Scope::MostRecent, at(3700)).expect("an incident");
    assert_eq!(
        report.end,
        Some(at(3640)),
        "ends when node a's alarm clears, not b's"
    );
    let md = &report.markdown;
    assert!(md.contains("[a] ALARM raised [error_rate/web]"), "{md}");
    assert!(md.contains("alarm `error_rate/web` on node a"), "{md}");
    assert!(md.contains("alarm `error_rate/web` on node b"), "{md}");
    let applied_twice = md.matches("config version 2 was applied").count();
    assert!(
        applied_twice <= 1,
        "one change, however many nodes took it:\n{md}"
    );
}
