//! The failure analysis as processes (issue 14): `check` refusing each risk at its line,
//! the split between pools from `--traffic` (a file, or a running instance for
//! `simulate`), `simulate --failures`, `plan`'s shared servers, `capacity-conflict`,
//! and the configs of docs/ and tests/ staying clean.

use std::path::Path;

use crate::util::{run, Backend, Client, Dir, Proxy};

/// Two pools share server 9002; `web` has a standby on other servers.
const SHOP: &str = r#"[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
pool = "web"

[[route]]
path_prefix = "/api"
pool = "api"

[pool.web]
backup = "standby"
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
[pool.web.health]
path = "/healthz"

[pool.api]
backends = [{ address = "127.0.0.1:9002" }, { address = "127.0.0.1:9003" }]
[pool.api.health]
path = "/healthz"

[pool.standby]
backends = [{ address = "127.0.0.1:9101" }, { address = "127.0.0.1:9102" }]
[pool.standby.health]
path = "/healthz"
"#;

/// `web` sends 9002 three quarters of its requests, `api` a quarter: fine at equal
/// traffic (1.5), above the line when `web` gets nine requests in ten (2.1).
const SKEWED_WHEN_BUSY: &str = r#"[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
pool = "web"

[[route]]
path_prefix = "/api"
pool = "api"

[pool.web]
algorithm = "weighted_round_robin"
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002", weight = 3 }]
[pool.web.health]
path = "/healthz"

[pool.api]
algorithm = "weighted_round_robin"
backends = [{ address = "127.0.0.1:9002" }, { address = "127.0.0.1:9003", weight = 3 }]
[pool.api.health]
path = "/healthz"
"#;

const NEW_RULES: [&str; 4] = [
    "server-load-ratio",
    "single-failure-outage",
    "single-failure-overload",
    "shared-failure-domain",
];

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn check_deny_warnings_refuses_each_failure_risk_with_its_rule_and_line() {
    let doc = include_str!("../docs/lints.md");
    let dir = Dir::new();
    for rule in NEW_RULES {
        let section = doc
            .split(&format!("\n## `{rule}`\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("docs/lints.md has no {rule}"));
        let example = section
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("an example");
        let path = dir.write(&format!("{rule}.toml"), example);
        let path = path.to_str().expect("a UTF-8 path");
        // A load finding that rests on the split between pools is a note under the
        // equal-per-route assumption, a warning once the split is observed.
        let status = dir.write(
            "status.json",
            r#"{"pools":[{"name":"web","requests":500},{"name":"api","requests":500}]}"#,
        );
        let traffic = ["--traffic", status.to_str().expect("utf-8")];
        let traffic: &[&str] = if rule == "server-load-ratio" {
            &traffic
        } else {
            &[]
        };
        let with = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend_from_slice(traffic);
            run(&all)
        };
        let refused = with(&["check", "-c", path, "--deny-warnings"]);
        assert_eq!(refused.code, Some(1), "{rule}: {}", refused.stdout);
        assert!(
            refused.stdout.contains(&format!("warning[{rule}]")),
            "{rule}: {}",
            refused.stdout
        );
        let findings = json(&with(&["check", "-c", path, "--format", "json"]).stdout);
        let finding = findings
            .as_array()
            .expect("an array")
            .iter()
            .find(|f| f["rule"] == rule)
            .unwrap_or_else(|| panic!("{rule} in {findings}"));
        let line = finding["line"].as_u64().expect("a line") as usize;
        assert!(
            refused.stdout.contains(&format!("{path}:{line}:")),
            "{rule}: the text names line {line}: {}",
            refused.stdout
        );
        // The escape: allowed with a reason, the config passes.
        let allowed = dir.write(
            &format!("{rule}-allowed.toml"),
            &format!("{example}\n[lint.allow]\n{rule} = \"reviewed: see the runbook\"\n"),
        );
        let passed = with(&[
            "check",
            "-c",
            allowed.to_str().expect("utf-8"),
            "--deny-warnings",
        ]);
        assert_eq!(passed.code, Some(0), "{rule}: {}", passed.stdout);
        assert!(
            passed.stdout.contains("reviewed: see the runbook"),
            "{}",
            passed.stdout
        );
    }
}

#[test]
fn the_split_from_a_status_file_can_make_a_shared_server_too_busy() {
    let dir = Dir::new();
    let config = dir.write("lb.toml", SKEWED_WHEN_BUSY);
    let config = config.to_str().expect("utf-8");
    // Equal traffic per route: 9002 is at 1.5.
    let assumed = run(&["check", "-c", config, "--deny-warnings"]);
    assert_eq!(assumed.code, Some(0), "{}", assumed.stdout);
    let assumed = run(&["simulate", "-c", config, "--requests", "1000"]);
    assert!(
        assumed
            .stdout
            .contains("127.0.0.1:9002  web, api         1   50.0%        1.50"),
        "{}",
        assumed.stdout
    );
    // Nine requests in ten to web: 2.1, refused, and the finding says where the split
    // came from.
    let status = dir.write(
        "status.json",
        r#"{"pools":[{"name":"web","requests":9000},{"name":"api","requests":1000}]}"#,
    );
    let status = status.to_str().expect("utf-8");
    let observed = run(&[
        "check",
        "-c",
        config,
        "--traffic",
        status,
        "--deny-warnings",
    ]);
    assert_eq!(observed.code, Some(1), "{}", observed.stdout);
    assert!(
        observed.stdout.contains("warning[server-load-ratio]: server 127.0.0.1:9002 is listed by pools web, api and gets 70.0% of all traffic: its load ratio across them is 2.10")
            && observed.stdout.contains(&format!("traffic as observed in {status}")),
        "{}",
        observed.stdout
    );
    // check stays offline; a file that is no status document is a usage error.
    let online = run(&["check", "-c", config, "--traffic", "127.0.0.1:9901"]);
    assert_eq!(online.code, Some(2));
    assert!(
        online.stderr.contains("never contacts a running instance"),
        "{}",
        online.stderr
    );
    let not_status = dir.write("other.json", "[1, 2]");
    let wrong = run(&[
        "check",
        "-c",
        config,
        "--traffic",
        not_status.to_str().expect("utf-8"),
    ]);
    assert_eq!(wrong.code, Some(2));
    assert!(
        wrong.stderr.contains("not a status document"),
        "{}",
        wrong.stderr
    );
}

#[test]
fn simulate_failures_prints_every_failure_and_every_pair() {
    let dir = Dir::new();
    let path = dir.write("shop.toml", SHOP);
    let path = path.to_str().expect("utf-8");
    let clean = run(&["check", "-c", path, "--deny-warnings"]);
    assert_eq!(clean.code, Some(0), "{}", clean.stdout);
    let single = run(&["simulate", "-c", path, "--requests", "1000", "--failures"]);
    assert_eq!(single.code, Some(0), "{}", single.stderr);
    assert!(
        single.stdout.contains("  127.0.0.1:9002  -            127.0.0.1:9003 1.00       127.0.0.1:9003 ×2.00  web: taken out by the active check within about 6s; api: taken out by the active check within about 6s\n"),
        "{}",
        single.stdout
    );
    assert!(
        single.stdout.contains("5 failures: 0 leave a route with nowhere to go, 0 push a server above guard.max_load_ratio 2"),
        "{}",
        single.stdout
    );
    let pairs = run(&[
        "simulate",
        "-c",
        path,
        "--requests",
        "1000",
        "--failures",
        "2",
        "--format",
        "json",
    ]);
    let pairs = json(&pairs.stdout);
    let rows = pairs["failures"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 10, "5 servers, 10 pairs");
    let down: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| !r["routes_down"].as_array().expect("a list").is_empty())
        .collect();
    assert_eq!(down.len(), 1);
    assert_eq!(
        down[0]["failed"],
        serde_json::json!(["127.0.0.1:9002", "127.0.0.1:9003"])
    );
    assert_eq!(down[0]["routes_down"][0]["pool"], "api");
    // web failing over to its standby is a reaction, not an outage.
    let failover = rows
        .iter()
        .find(|r| r["failed"] == serde_json::json!(["127.0.0.1:9001", "127.0.0.1:9002"]))
        .expect("the pair");
    assert!(
        failover["pools"]
            .as_array()
            .expect("pools")
            .iter()
            .any(|p| p["pool"] == "web"
                && p["reaction"] == "no usable backend: fails over to standby")
    );
    // The servers' figures come with every simulation.
    assert_eq!(pairs["servers"].as_array().expect("servers").len(), 5);
}

#[test]
fn simulate_takes_the_split_from_a_running_instance() {
    let web = [Backend::start("w1"), Backend::start("w2")];
    let api = [Backend::start("a1"), Backend::start("a2")];
    // web's second backend is api's first: one server in two pools.
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\
         [[route]]\npool = \"web\"\n[[route]]\npath_prefix = \"/api\"\npool = \"api\"\n\
         [pool.web]\nbackends = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n\
         [pool.api]\nbackends = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n",
        web[0].address(),
        api[0].address(),
        api[0].address(),
        api[1].address(),
    );
    let proxy = Proxy::start_with_admin(&config, 1);
    let mut client = Client::connect(proxy.addr());
    for _ in 0..90 {
        assert_eq!(client.get("/").status, 200);
    }
    for _ in 0..10 {
        assert_eq!(client.get("/api/x").status, 200);
    }
    let admin = proxy.admin.expect("an admin address").to_string();
    let config_path = proxy.dir().join("evenkeel.toml");
    let config_path = config_path.to_str().expect("utf-8");
    let token = proxy.dir().join("admin.token");
    let out = run(&[
        "simulate",
        "-c",
        config_path,
        "--requests",
        "1000",
        "--traffic",
        &admin,
        "--traffic-token-file",
        token.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let out = json(&out.stdout);
    let shared = out["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["server"] == api[0].address())
        .expect("the shared server")
        .clone();
    // Half of web's 90% and half of api's 10%.
    let load = shared["load"].as_f64().expect("a load");
    assert!((load - 0.5).abs() < 0.02, "{shared}");
    let ratio = shared["load_ratio"].as_f64().expect("a ratio");
    assert!((ratio - 1.5).abs() < 0.05, "{shared}");
    let web_only = out["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["server"] == web[0].address())
        .expect("web's own server")
        .clone();
    assert!(
        (web_only["load"].as_f64().expect("load") - 0.45).abs() < 0.02,
        "{web_only}"
    );
}

#[test]
fn plan_shows_the_servers_shared_by_pools_and_flags_one_pushed_over_the_line() {
    let dir = Dir::new();
    let old = dir.write("old.toml", SKEWED_WHEN_BUSY);
    // api now sends 9002 three quarters too: 9002 carries 75% for a third (2.25).
    let new = dir.write(
        "new.toml",
        &SKEWED_WHEN_BUSY.replace(
            "{ address = \"127.0.0.1:9002\" }, { address = \"127.0.0.1:9003\", weight = 3 }",
            "{ address = \"127.0.0.1:9002\", weight = 3 }, { address = \"127.0.0.1:9003\" }",
        ),
    );
    let out = run(&[
        "plan",
        old.to_str().expect("utf-8"),
        new.to_str().expect("utf-8"),
        "--deny-flags",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("  127.0.0.1:9002  web, api        50.0%       75.0%               1.50              2.25  ! load ratio above 2\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_server_listed_with_two_capacities_is_an_error_naming_both_places() {
    let dir = Dir::new();
    let path = dir.write(
        "lb.toml",
        &SHOP.replace(
            "backends = [{ address = \"127.0.0.1:9002\" }, { address = \"127.0.0.1:9003\" }]",
            "backends = [{ address = \"localhost:9002\", capacity = 2 }, { address = \"127.0.0.1:9003\" }]",
        ),
    );
    let out = run(&["check", "-c", path.to_str().expect("utf-8")]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("error[capacity-conflict]: server localhost:9002 (127.0.0.1:9002) has capacity 2 here but 1 in pool \"web\" (line 14, as \"127.0.0.1:9002\")"),
        "{}",
        out.stdout
    );
}

/// The ```toml blocks of docs/ (but the lint examples, which are risky on purpose) and
/// the complete configs written in tests/: none of them is a failure risk.
#[test]
fn the_configs_in_docs_and_tests_raise_no_failure_finding() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut configs: Vec<(String, String)> = Vec::new();
    let docs = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("an entry").path())
        .chain([root.join("README.md")]);
    for path in docs {
        if path.extension().is_none_or(|x| x != "md") || path.ends_with("lints.md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a doc");
        for (i, block) in text.split("```toml\n").skip(1).enumerate() {
            let block = block.split("```").next().unwrap_or_default();
            configs.push((
                format!("{} block {}", path.display(), i + 1),
                completed(block),
            ));
        }
    }
    for entry in std::fs::read_dir(root.join("tests")).expect("tests/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|x| x != "rs")
            || path.ends_with("lint.rs")
            || path.ends_with("failures.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a test");
        for (i, raw) in text.split("r#\"").skip(1).enumerate() {
            let raw = raw.split("\"#").next().unwrap_or_default();
            if raw.contains("[[listener]]") {
                configs.push((
                    format!("{} raw string {}", path.display(), i + 1),
                    raw.to_string(),
                ));
            }
        }
    }
    let dir = Dir::new();
    // The token file the docs' [admin] sections name.
    dir.write("admin.token", "0123456789abcdef0123456789abcdef\n");
    let mut checked = 0;
    for (name, text) in &configs {
        let path = dir.write("c.toml", text);
        let out = run(&[
            "check",
            "-c",
            path.to_str().expect("utf-8"),
            "--format",
            "json",
        ]);
        let Ok(serde_json::Value::Array(findings)) =
            serde_json::from_str::<serde_json::Value>(&out.stdout)
        else {
            continue;
        };
        if findings.iter().any(|f| f["severity"] == "error") {
            continue; // a fragment, or a config that is wrong on purpose
        }
        checked += 1;
        for f in &findings {
            assert!(
                !NEW_RULES.contains(&f["rule"].as_str().unwrap_or_default()),
                "{name}: {f}\n{text}"
            );
        }
    }
    // Most docs blocks are fragments; the close configs of the lint tests (src/config/lint/tests.rs,
    // tests/lint.rs) are checked for no finding at all besides.
    assert!(checked >= 4, "only {checked} complete configs found");
}

/// A docs fragment made a whole config: a listener, and a route to its first pool.
fn completed(block: &str) -> String {
    if block.contains("[[listener]]") {
        return block.to_string();
    }
    let pool = block
        .split("[pool.")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .filter(|name| !name.contains('.'));
    let route = match pool {
        Some(pool) if !block.contains("[[route]]") => {
            format!("[[route]]\npath_prefix = \"/\"\npool = \"{pool}\"\n")
        }
        _ => String::new(),
    };
    format!("[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n{route}{block}")
}
