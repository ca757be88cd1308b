//! Live reloads, the config history and rollback, through the real `serve` process,
//! its admin API and the `apply`, `history` and `rollback` commands.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode};

use crate::util::{full, get, run, Backend, Client, Dir, Proxy};

const TOKEN: &str = "history-test-token-0123456789";

/// A config with an admin API (token in `dir`) and one weighted pool over `backends`
/// given as (address, weight).
fn config(dir: &Dir, admin: Option<SocketAddr>, backends: &[(String, u32)]) -> String {
    let token = dir.write("admin.token", TOKEN);
    let listen = admin.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
    let list: Vec<String> = backends
        .iter()
        .map(|(address, weight)| format!("{{ address = \"{address}\", weight = {weight} }}"))
        .collect();
    format!(
        "[admin]\nlisten = \"{listen}\"\ntoken_file = \"{}\"\n\n\
         [[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\npool = \"web\"\n\n\
         [pool.web]\nalgorithm = \"weighted_round_robin\"\nbackends = [{}]\n",
        token.display(),
        list.join(", ")
    )
}

/// Calls the admin API with the token; returns status and JSON (or text as a JSON string).
fn admin(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut client = Client::connect(addr);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(full(body.to_string()))
        .expect("request");
    let reply = client.send(request);
    let text = reply.text();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (reply.status, json)
}

fn config_in_force(proxy: &Proxy) -> String {
    match admin(proxy.admin.expect("admin"), Method::GET, "/config", "").1 {
        serde_json::Value::String(text) => text,
        other => panic!("GET /config gave {other}"),
    }
}

/// How many of `n` sequential requests each backend answered.
fn shares(proxy: &Proxy, n: usize) -> std::collections::HashMap<String, u64> {
    let mut client = Client::connect(proxy.addr());
    crate::util::tally((0..n).map(|_| {
        let reply = client.get("/");
        assert_eq!(reply.status, StatusCode::OK);
        reply.backend().to_string()
    }))
}

fn history(proxy: &Proxy) -> Vec<serde_json::Value> {
    let (status, json) = admin(
        proxy.admin.expect("admin"),
        Method::GET,
        "/config/history",
        "",
    );
    assert_eq!(status, StatusCode::OK);
    json["versions"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_refused_config_changes_nothing_whether_it_comes_by_sighup_post_or_apply() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dir = Dir::new();
    let good = config(&dir, None, &[(a.address(), 1), (b.address(), 1)]);
    let proxy = Proxy::start(&good, 1);
    let admin_addr = proxy.admin.expect("admin address");
    let broken = good.replace("pool = \"web\"", "pool = \"nope\"");

    // SIGHUP with a broken file.
    proxy.rewrite_config(&broken);
    proxy.signal("HUP");
    proxy.wait_for_log("reload refused", 1);

    // POST /config with the broken text: 422 with located findings.
    let (status, answer) = admin(admin_addr, Method::POST, "/config", &broken);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["result"], "refused");
    assert_eq!(answer["findings"][0]["rule"], "unknown-pool");
    assert!(answer["findings"][0]["line"].as_u64().is_some());

    // `evenkeel apply` with a broken file: exit 1 and the finding.
    let file = dir.write(
        "broken.toml",
        &broken.replace("127.0.0.1:0\"\ntoken", &format!("{admin_addr}\"\ntoken")),
    );
    let applied = run(&["apply", "-c", file.to_str().unwrap()]);
    assert_eq!(
        applied.code,
        Some(1),
        "{}{}",
        applied.stdout,
        applied.stderr
    );
    assert!(
        applied.stdout.contains("error[unknown-pool]"),
        "{}",
        applied.stdout
    );
    assert!(
        applied.stdout.contains("the running config is unchanged"),
        "{}",
        applied.stdout
    );

    // Nothing changed: same text in force, both backends still serve 1:1.
    assert_eq!(config_in_force(&proxy), good);
    let tally = shares(&proxy, 40);
    assert_eq!((tally["a"], tally["b"]), (20, 20));
    // Every refusal is in the history, after the version in force.
    let versions = history(&proxy);
    let rows: Vec<(&str, &str)> = versions
        .iter()
        .map(|v| {
            (
                v["origin"].as_str().unwrap(),
                v["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("start", "applied"),
            ("sighup", "refused"),
            ("api", "refused"),
            ("api", "refused")
        ]
    );
    assert!(versions[1]["detail"]
        .as_str()
        .unwrap()
        .contains("error[unknown-pool]"));
    let (_, status) = admin(admin_addr, Method::GET, "/status", "");
    assert_eq!(status["version"], 1);
}

#[test]
fn rollback_restores_the_previous_version_byte_for_byte_and_history_shows_the_chain() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dir = Dir::new();
    let first = config(&dir, None, &[(a.address(), 1), (b.address(), 1)]);
    let proxy = Proxy::start(&first, 1);
    let admin_addr = proxy.admin.expect("admin address");
    // A file that both carries the new config and says where the admin API is.
    let second = config(
        &dir,
        Some(admin_addr),
        &[(a.address(), 3), (b.address(), 1)],
    );
    let file = dir.write("second.toml", &second);
    let file = file.to_str().unwrap();

    let applied = run(&["apply", "-c", file]);
    assert_eq!(
        applied.code,
        Some(0),
        "{}{}",
        applied.stdout,
        applied.stderr
    );
    assert!(
        applied.stdout.contains("as version 2"),
        "{}",
        applied.stdout
    );
    let tally = shares(&proxy, 40);
    assert_eq!((tally["a"], tally["b"]), (30, 10));

    let rolled = run(&["rollback", "-c", file]);
    assert_eq!(rolled.code, Some(0), "{}{}", rolled.stdout, rolled.stderr);
    assert_eq!(config_in_force(&proxy), first, "byte for byte");
    let tally = shares(&proxy, 40);
    assert_eq!((tally["a"], tally["b"]), (20, 20));

    let again = run(&["rollback", "-c", file, "--to", "2"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(config_in_force(&proxy), second);

    let listed = run(&["history", "-c", file]);
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    let lines: Vec<&str> = listed.stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "{}", listed.stdout);
    assert!(
        lines[2].contains("rollback") && lines[2].contains("restores version 1"),
        "{}",
        listed.stdout
    );
    assert!(
        lines[3].starts_with('*') && lines[3].contains("restores version 2"),
        "{}",
        listed.stdout
    );
    let versions = history(&proxy);
    assert_eq!(versions[2]["text"], versions[0]["text"]);
    assert_eq!(versions[2]["sha256"], versions[0]["sha256"]);

    // Nothing to roll back to that is not there.
    let missing = run(&["rollback", "-c", file, "--to", "99"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("no version 99"),
        "{}",
        missing.stderr
    );
    // A wrong token is refused with exit 3.
    let bad_token = dir.write("bad.token", "not-the-token-at-all");
    let refused = run(&[
        "history",
        "--admin",
        &admin_addr.to_string(),
        "--token-file",
        bad_token.to_str().unwrap(),
    ]);
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
}

#[test]
fn twenty_reloads_under_load_fail_no_request_and_shares_follow_each_config() {
    let backends = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let dir = Dir::new();
    let address = |i: usize| backends[i].address();
    // Alternate weights, and add or remove the third backend.
    let configs: Vec<Vec<(String, u32)>> = (0..20)
        .map(|i| match i % 4 {
            0 => vec![(address(0), 1), (address(1), 1)],
            1 => vec![(address(0), 3), (address(1), 1)],
            2 => vec![(address(0), 1), (address(1), 1), (address(2), 2)],
            _ => vec![(address(0), 1), (address(1), 3)],
        })
        .collect();
    let proxy = Proxy::start(&config(&dir, None, &configs[19]), 2);
    let admin_addr = proxy.admin.expect("admin");
    let (stop, failures, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failures, served, addr) = (
                Arc::clone(&stop),
                Arc::clone(&failures),
                Arc::clone(&served),
                proxy.addr(),
            );
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    match client.try_send(get("/").body(crate::util::empty()).expect("request")) {
                        Ok(reply) if reply.status == StatusCode::OK => {
                            served.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failures.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for (i, weights) in configs.iter().enumerate() {
        let text = config(&dir, None, weights);
        if i % 2 == 0 {
            proxy.rewrite_config(&text);
            proxy.signal("HUP");
            proxy.wait_for_log("reloaded", i / 2 + 1);
        } else {
            let (status, answer) = admin(admin_addr, Method::POST, "/config", &text);
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
        // Shares over the next window follow this config (counted at the backends).
        let before: Vec<u64> = backends.iter().map(Backend::requests).collect();
        let start = served.load(Ordering::Relaxed);
        assert!(crate::util::eventually(Duration::from_secs(10), || served
            .load(Ordering::Relaxed)
            >= start + 400));
        let delta: Vec<u64> = backends
            .iter()
            .zip(&before)
            .map(|(b, x)| b.requests() - x)
            .collect();
        let total: u64 = delta.iter().sum();
        let weight_total: u32 = weights.iter().map(|(_, w)| w).sum();
        for (k, backend) in backends.iter().enumerate() {
            let expected = weights
                .iter()
                .find(|(a, _)| *a == backend.address())
                .map_or(0.0, |(_, w)| f64::from(*w) / f64::from(weight_total));
            let observed = delta[k] as f64 / total as f64;
            // The window starts a moment after the swap: allow for requests still on the
            // previous config and partial cycles.
            assert!(
                (observed - expected).abs() < 0.08,
                "reload {i}: backend {} got {observed:.3}, expected {expected:.3} ({delta:?})",
                backend.name()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(served.load(Ordering::Relaxed) > 8000);
    let applied = history(&proxy)
        .iter()
        .filter(|v| v["outcome"] == "applied")
        .count();
    assert_eq!(applied, 21, "the start and 20 reloads");
}

/// Issue 12, defect 7: a config file swapped for a FIFO, or a config whose token_file
/// is one, hung SIGHUP (the signal loop blocked opening it) and with it the admin API.
/// Both reloads are refused at once; the instance keeps serving and answering.
#[test]
fn sighup_with_a_fifo_config_or_token_file_is_refused_and_admin_keeps_answering() {
    let a = Backend::start("a");
    let text = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[[route]]\npool = \"web\"\n\n\
         [pool.web]\nbackends = [{{ address = \"{}\" }}]\n",
        a.address()
    );
    let proxy = Proxy::start_with_admin(&text, 1);
    let mkfifo = |path: &std::path::Path| {
        let _ = std::fs::remove_file(path);
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
    };

    // A token_file that is a FIFO: a located validation error, the reload refused.
    mkfifo(&proxy.dir().join("fifo.token"));
    let with_fifo_token =
        format!("{text}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"fifo.token\"\n");
    proxy.rewrite_config(&with_fifo_token);
    proxy.signal("HUP");
    proxy.wait_for_log("reload refused", 1);
    assert!(
        proxy.stderr().contains("error[invalid-file]"),
        "{}",
        proxy.stderr()
    );
    assert_eq!(proxy.admin_request("GET", "/status").0, 200);

    // The config file itself replaced by a FIFO: refused without opening it.
    mkfifo(&proxy.dir().join("evenkeel.toml"));
    proxy.signal("HUP");
    proxy.wait_for_log("reload refused", 2);
    assert!(
        proxy
            .stderr()
            .contains("it is a FIFO (named pipe), not a regular file"),
        "{}",
        proxy.stderr()
    );
    assert_eq!(proxy.admin_request("GET", "/status").0, 200);
    assert_eq!(
        Client::connect(proxy.addr()).get("/").status,
        StatusCode::OK
    );
}

/// `POST /config?dry_run=true` answers with the findings and the plan (the dashboard's
/// preview) and changes nothing: no version, the same split; a broken config gets its
/// findings and no plan. `GET /config/diff?from=1&to=2` shows what version 2 changed.
#[test]
fn a_dry_run_changes_nothing_and_a_diff_shows_what_a_version_changed() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dir = Dir::new();
    let proxy = Proxy::start(
        &config(&dir, None, &[(a.address(), 1), (b.address(), 1)]),
        1,
    );
    let admin_addr = proxy.admin.expect("admin address");
    let skewed = config(
        &dir,
        Some(admin_addr),
        &[(a.address(), 3), (b.address(), 1)],
    );

    let (status, preview) = admin(admin_addr, Method::POST, "/config?dry_run=true", &skewed);
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["would_apply"], true, "{preview}");
    let changes = preview["plan"]["changes"].to_string();
    assert!(changes.contains("weight 1 → 3"), "{changes}");
    let backend = &preview["plan"]["pools"][0]["backends"][0];
    assert_eq!(backend["before"]["share"].as_f64(), Some(0.5), "{preview}");
    assert_eq!(backend["after"]["share"].as_f64(), Some(0.75), "{preview}");
    assert_eq!(history(&proxy).len(), 1, "nothing recorded");
    let tally = shares(&proxy, 40);
    assert_eq!((tally["a"], tally["b"]), (20, 20), "nothing applied");

    let broken = skewed.replace("weighted_round_robin", "weighted_round_robbin");
    let (status, refused) = admin(admin_addr, Method::POST, "/config?dry_run=true", &broken);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(refused["would_apply"], false, "{refused}");
    assert!(refused["plan"].is_null());
    assert!(
        refused["findings"][0]["line"].as_u64().is_some(),
        "{refused}"
    );

    // Found in review: any other spelling of dry_run applied for real. A bare
    // `dry_run` is one; a parameter or value POST /config does not know is refused.
    let (status, answer) = admin(admin_addr, Method::POST, "/config?dry_run", &skewed);
    assert_eq!(
        (status, &answer["dry_run"]),
        (StatusCode::OK, &serde_json::json!(true))
    );
    for query in [
        "dry_run=yes",
        "dry_run=True",
        "dry-run=true",
        "dry%5Frun=true",
        "force=yes",
    ] {
        let (status, answer) = admin(
            admin_addr,
            Method::POST,
            &format!("/config?{query}"),
            &skewed,
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
    }
    assert_eq!(history(&proxy).len(), 1, "nothing recorded");
    // Found in review: the preview said yes where the apply says no (listeners).
    let moved = skewed.replacen(
        "listen = \"127.0.0.1:0\"\n\n[[route]]",
        "listen = \"127.0.0.1:1\"\n\n[[route]]",
        1,
    );
    assert_ne!(moved, skewed);
    let (_, answer) = admin(admin_addr, Method::POST, "/config?dry_run=true", &moved);
    assert_eq!(answer["would_apply"], false, "{answer}");
    assert!(answer["reason"].as_str().is_some(), "{answer}");

    let (status, _) = admin(admin_addr, Method::POST, "/config", &skewed);
    assert_eq!(status, StatusCode::OK);
    let (status, diff) = admin(admin_addr, Method::GET, "/config/diff?from=1&to=2", "");
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert_eq!(
        diff["plan"]["pools"][0]["backends"][0]["after"]["share"].as_f64(),
        Some(0.75)
    );
    assert!(
        diff["plan"]["changes"].to_string().contains("weight 1 → 3"),
        "{diff}"
    );
    let (status, _) = admin(admin_addr, Method::GET, "/config/diff?from=1&to=9", "");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin(admin_addr, Method::GET, "/config/diff?from=x", "");
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
