//! `evenkeel status` and `evenkeel report` against the real `serve` process: the seed
//! incident (one backend weighted to take 90% of the traffic) applied under load, rolled
//! back by the guard, then reported.

use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode};

use crate::util::{full, run_bounded, Backend, Client, Load, Proxy, ADMIN_TOKEN};

/// How long the guard may take to roll the change back, and the alarms to clear.
const SETTLE: Duration = Duration::from_secs(40);
/// How long one `status` or `report` run may take.
const COMMAND: Duration = Duration::from_secs(30);

/// Three equal backends behind weighted round robin, health-checked, watched 20 s
/// after every change.
fn config(backends: &[&Backend]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("  {{ address = \"{}\", weight = 1 }},", b.address()))
        .collect();
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\npool = \"web\"\n\n\
         [pool.web]\nalgorithm = \"weighted_round_robin\"\nbackends = [\n{}\n]\n\
         [pool.web.health]\npath = \"/healthz\"\ninterval = \"1s\"\n\n\
         [guard]\nwatch = \"20s\"\n",
        list.join("\n")
    )
}

/// `METHOD path` with `body` on the admin API: the status and the body as text.
fn admin(proxy: &Proxy, method: Method, path: &str, body: &str) -> (StatusCode, String) {
    let mut client = Client::connect(proxy.admin.expect("an admin listener"));
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(full(body.to_string()))
        .expect("request");
    let reply = client.send(request);
    (reply.status, reply.text())
}

/// Polls `condition` every 200 ms for up to `limit`.
fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn the_guard_rolls_back_a_90_percent_weight_and_report_names_the_change_the_diff_and_the_rollback()
{
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let proxy = Proxy::start_with_admin(&config(&[&a, &b, &c]), 1);
    let admin_addr = proxy.admin.expect("admin address").to_string();
    let token = proxy.dir().join("admin.token");
    let token = token.to_str().expect("a UTF-8 path");
    let remote = ["--admin", admin_addr.as_str(), "--token-file", token];
    let report_args: Vec<&str> = ["report", "--since", "5m"]
        .iter()
        .chain(&remote)
        .copied()
        .collect();
    let status_args: Vec<&str> = ["status"].iter().chain(&remote).copied().collect();

    // Nothing has gone wrong yet: no incident (exit 1).
    let quiet = run_bounded(&report_args, COMMAND);
    assert_eq!(quiet.code, Some(1), "{}{}", quiet.stdout, quiet.stderr);
    assert!(
        quiet.stdout.contains("no incident in this window"),
        "{}",
        quiet.stdout
    );

    // Traffic, a window of it before the change, then the 18:1:1 typo.
    let load = Load::start(proxy.addr(), 2, "/", Duration::from_millis(2));
    std::thread::sleep(Duration::from_secs(3));
    let (code, in_force) = admin(&proxy, Method::GET, "/config", "");
    assert_eq!(code, StatusCode::OK);
    let line = format!("{{ address = \"{}\", weight = 1 }}", a.address());
    let overloading = in_force.replacen(
        &line,
        &format!("{{ address = \"{}\", weight = 18 }}", a.address()),
        1,
    );
    assert_ne!(overloading, in_force);
    let (code, answer) = admin(&proxy, Method::POST, "/config", &overloading);
    assert_eq!(code, StatusCode::OK, "{answer}");
    assert!(
        answer.contains("load-ratio"),
        "applied with its warning: {answer}"
    );

    // The guard rolls it back; then the alarms clear.
    let rolled_back = wait_for(SETTLE, || {
        let (_, history) = admin(&proxy, Method::GET, "/config/history", "");
        history.contains("\"origin\": \"rollback\"")
    });
    let sent = load.stop();
    assert!(
        rolled_back,
        "no guard rollback after {SETTLE:?} ({} requests sent); stderr:\n{}",
        sent.len(),
        proxy.stderr()
    );
    let quiet_again = wait_for(SETTLE, || {
        let status = proxy.status();
        status["monitor"]["alarms"]
            .as_array()
            .is_some_and(|alarms| alarms.is_empty())
    });
    assert!(
        quiet_again,
        "alarms still raised: {}",
        proxy.status()["monitor"]
    );

    let report = run_bounded(&report_args, COMMAND);
    assert_eq!(report.code, Some(0), "{}{}", report.stdout, report.stderr);
    let md = &report.stdout;
    for section in [
        "## Issue Summary",
        "## Timeline",
        "## Root Cause and Resolution",
        "## Corrective and Preventative Measures",
    ] {
        assert!(md.contains(section), "no {section}:\n{md}");
    }
    assert!(
        md.contains("**Probable root cause:** config version 2, applied from api"),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "~ pool \"web\": backend {}: weight 1 → 18",
            a.address()
        )),
        "{md}"
    );
    assert!(
        md.contains("the guard rolled config version 2 back (version 3 restores version 1)"),
        "{md}"
    );
    assert!(md.contains("`warning[load-ratio]`"), "{md}");
    assert!(md.contains("- **End:** "), "{md}");
    assert!(md.contains("3 at the end"), "{md}");

    let status = run_bounded(&status_args, COMMAND);
    assert_eq!(status.code, Some(0), "{}{}", status.stdout, status.stderr);
    assert!(
        status.stdout.starts_with("config version 3\n"),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .contains("pool \"web\" (weighted_round_robin)"),
        "{}",
        status.stdout
    );
    for backend in [&a, &b, &c] {
        let row = status
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&backend.address()))
            .unwrap_or_else(|| panic!("no row for {}:\n{}", backend.address(), status.stdout));
        assert!(row.contains("usable"), "{row}");
        assert!(
            row.contains("33.3%"),
            "intended share back to a third: {row}"
        );
    }
    assert!(status.stdout.contains("alarms: none"), "{}", status.stdout);

    // A wrong token is a runtime failure (exit 3).
    let wrong = proxy.dir().join("wrong.token");
    std::fs::write(&wrong, "not-the-token-0123456789").expect("write a token");
    let refused = run_bounded(
        &[
            "status",
            "--admin",
            admin_addr.as_str(),
            "--token-file",
            wrong.to_str().expect("path"),
        ],
        COMMAND,
    );
    assert_eq!(
        refused.code,
        Some(3),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);
}
