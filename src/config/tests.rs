use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::balance::Algorithm;

fn check(text: &str) -> Checked {
    check_source(Source {
        path: PathBuf::from("/etc/evenkeel/lb.toml"),
        text: text.to_string(),
    })
}

/// A valid base: one listener, one route, one pool of two backends with a health check.
const BASE: &str = r#"
[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
pool = "web"

[pool.web]
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
[pool.web.health]
path = "/healthz"
"#;

/// `text` validated (lint findings, such as a token file these paths cannot reach,
/// aside).
fn valid(text: &str) -> Config {
    let checked = check(text);
    let invalid: Vec<&Finding> = checked
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error && lint::rule(f.rule).is_none())
        .collect();
    assert!(invalid.is_empty(), "{invalid:#?}");
    checked.config.expect("valid config")
}

/// (rule, 1-based line) of every error in `text`.
fn errors(text: &str) -> Vec<(&'static str, usize)> {
    let checked = check(text);
    checked
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| {
            (
                f.rule,
                checked
                    .source
                    .locate(f.span.clone().unwrap_or(0..0).start)
                    .line,
            )
        })
        .collect()
}

fn warnings(text: &str) -> Vec<&'static str> {
    check(text)
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .map(|f| f.rule)
        .collect()
}

#[test]
fn the_base_config_is_valid_and_takes_every_default() {
    let config = valid(BASE);
    assert_eq!(
        config.state_dir,
        PathBuf::from("/etc/evenkeel/evenkeel-state")
    );
    assert_eq!(config.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    let pool = config.pool("web").unwrap();
    assert_eq!(pool.algorithm, Algorithm::RoundRobin);
    assert_eq!(pool.timeouts, Timeouts::default());
    assert_eq!(pool.outlier, Outlier::default());
    assert_eq!(
        pool.backends[1].socket_addr,
        "127.0.0.1:9002".parse().unwrap()
    );
    assert_eq!(
        config.routes[0].listener, "public",
        "a lone listener is implied"
    );
    assert_eq!(config.routes[0].path_prefix, "/");
    assert!(warnings(BASE).is_empty(), "{:?}", warnings(BASE));
}

/// docs/config.md shows a file with every field at its default; it must load to the
/// same values as a file that omits them, or the docs lie.
#[test]
fn docs_config_example_matches_the_code_defaults() {
    let doc = include_str!("../../docs/config.md");
    let block = doc
        .split("<!-- defaults-example -->")
        .nth(1)
        .and_then(|rest| rest.split("```toml").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("docs/config.md has the defaults example");
    let spelled = valid(block);
    let minimal = valid(
        r#"
[admin]
token_file = "admin.token"
[[listener]]
name = "public"
listen = "127.0.0.1:8080"
[[route]]
pool = "web"
[pool.web]
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
[pool.web.health]
"#,
    );
    assert_eq!(spelled.state_dir, minimal.state_dir);
    assert_eq!(spelled.drain_timeout, minimal.drain_timeout);
    let admin = |config: &Config| {
        config.admin.clone().map(|a| {
            (
                a.listen,
                a.token_file,
                a.max_connections,
                a.header_timeout,
                a.idle_timeout,
                a.metrics_require_token,
            )
        })
    };
    assert_eq!(admin(&spelled), admin(&minimal));
    let listener = |c: &Config| {
        (
            c.listeners[0].header_timeout,
            c.listeners[0].max_connections,
        )
    };
    assert_eq!(listener(&spelled), listener(&minimal));
    assert_eq!(spelled.routes[0].path_prefix, minimal.routes[0].path_prefix);
    let (a, b) = (&spelled.pools[0], &minimal.pools[0]);
    assert_eq!(
        (
            a.algorithm,
            a.panic_threshold,
            a.slow_start,
            a.timeouts,
            a.retries,
            a.limits,
            a.outlier
        ),
        (
            b.algorithm,
            b.panic_threshold,
            b.slow_start,
            b.timeouts,
            b.retries,
            b.limits,
            b.outlier
        )
    );
    let backend = |c: &Config| {
        c.pools[0]
            .backends
            .iter()
            .map(|b| (b.weight, b.capacity))
            .collect::<Vec<_>>()
    };
    assert_eq!(backend(&spelled), backend(&minimal));
    let health = |c: &Config| {
        let h = c.pools[0].health.clone().unwrap();
        (
            h.probe,
            h.interval,
            h.timeout,
            h.healthy_after,
            h.unhealthy_after,
        )
    };
    assert_eq!(health(&spelled), health(&minimal));
    assert_eq!(spelled.guard, minimal.guard);
    assert_eq!(spelled.guard, Guard::default());
}

#[test]
fn every_validation_error_is_reported_at_its_line() {
    // Each case: a config, the rule expected, and the line it must point at.
    let cases: &[(&str, &str, usize)] = &[
        ("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[route]]\npool = \"nope\"\n[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "unknown-pool", 5),
        ("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[route]]\nlistener = \"b\"\npool = \"web\"\n[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "unknown-listener", 5),
        ("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:2\"\n", "duplicate-name", 5),
        ("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[listener]]\nname = \"b\"\nlisten = \"127.0.0.1:1\"\n", "duplicate-listen", 4),
        ("[pool.web]\nbackends = [\n { address = \"127.0.0.1:2\" },\n { address = \"127.0.0.1:2\" },\n]\n", "duplicate-backend", 4),
        ("[pool.web]\nbackends = []\n", "empty-pool", 2),
        ("[pool.web]\nalgorithm = \"random\"\n", "empty-pool", 1),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:2\", weight = 0 }]\n", "zero-total-weight", 2),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:2\", weight = 10001 }]\n", "out-of-range", 2),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:2\", capacity = 0 }]\n", "out-of-range", 2),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1\" }]\n", "invalid-address", 2),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:0\" }]\n", "invalid-address", 2),
        ("[pool.web]\nbackends = [{ weight = 2 }]\n", "missing-field", 2),
        ("drain_timeout = \"30\"\n", "invalid-duration", 1),
        ("", "no-listener", 1),
        ("drain_timeout = \"3 weeks\"\n", "invalid-duration", 1),
        ("[pool.web]\nslow_start = \"5d\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-duration", 2),
        ("[pool.web]\npanic_threshold = 101\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "out-of-range", 2),
        ("[pool.web]\nalgorithm = \"fastest\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-value", 2),
        ("[pool.web]\nalgorithm = \"consistent_hash\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "missing-hash-key", 1),
        ("[pool.web]\nalgorithm = \"consistent_hash\"\nhash_key = \"header\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-hash-key", 3),
        ("[pool.web]\nalgorithm = \"consistent_hash\"\nhash_key = \"query:id\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-hash-key", 3),
        ("[pool.web]\nhash_key = \"client_ip\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "hash-key-unused", 2),
        ("[pool.web]\nbackup = \"standby\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "unknown-backup", 2),
        ("[pool.web]\nbackup = \"web\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "unknown-backup", 2),
        ("[pool.web]\ntimeouts = { per_try = \"31s\" }\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "impossible-timeouts", 2),
        ("[pool.web]\ntimeouts = { connect = \"5s\", per_try = \"2s\" }\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "impossible-timeouts", 2),
        ("[pool.web]\ntimeouts = { idle = \"0s\" }\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "out-of-range", 2),
        ("[pool.web]\nretries = { attempts = -1 }\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "out-of-range", 2),
        ("[pool.web]\nretries = { budget_percent = 150 }\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "out-of-range", 2),
        ("[pool.web]\nlimits = { max_connections = 0 }\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "out-of-range", 2),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n[pool.web.health]\ntype = \"udp\"\n", "invalid-value", 4),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n[pool.web.health]\ntype = \"tcp\"\npath = \"/x\"\n", "invalid-health-check", 5),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n[pool.web.health]\ninterval = \"1s\"\ntimeout = \"2s\"\n", "invalid-health-check", 5),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n[pool.web.health]\nexpect_status = \"2xx\"\n", "invalid-value", 4),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n[pool.web.health]\nunhealthy_after = 0\n", "out-of-range", 4),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n[pool.web.outlier]\nmax_ejected_percent = 101\n", "out-of-range", 4),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n[pool.web.outlier]\nejection = \"10m\"\n", "out-of-range", 4),
        ("[guard]\nmax_error_rate = 1.5\n", "out-of-range", 2),
        ("[guard]\nmax_load_ratio = 1\n", "out-of-range", 2),
        ("[guard]\nlatency_floor = \"25\"\n", "invalid-duration", 2),
        ("[admin]\nlisten = \"127.0.0.1:9901\"\n", "missing-field", 1),
        ("[admin]\ntoken_file = \"t\"\nmax_connections = 0\n", "out-of-range", 3),
        ("[admin]\ntoken_file = \"t\"\nheader_timeout = \"0s\"\n", "out-of-range", 3),
        ("[admin]\ntoken_file = \"t\"\nidle_timeout = \"soon\"\n", "invalid-duration", 3),
        ("[lint.allow]\nsingle-backend = \"legacy\"\n", "unknown-lint-rule", 2),
        ("[lint.allow]\nsingle-backend-pool = \"\"\n", "invalid-value", 2),
        ("[alerts]\nwebhook = \"ftp://x\"\n", "invalid-value", 2),
        ("[[route]]\npool = \"web\"\n[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "missing-field", 1),
        ("[[listener]]\nname = \"a b\"\nlisten = \"127.0.0.1:1\"\n", "invalid-name", 2),
        // TCP listeners and pools.
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"udp\"\n", "invalid-value", 4),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\n", "missing-field", 4),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"db\"\nmax_tunnels = 5\n[pool.db]\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-value", 6),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\npool = \"db\"\n", "invalid-value", 4),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\naccept_proxy_protocol = true\n", "invalid-value", 4),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"nope\"\n[pool.db]\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "unknown-pool", 5),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"db\"\n[[route]]\npool = \"db\"\n[pool.db]\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-value", 6),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"db\"\n[[listener]]\nname = \"h\"\nlisten = \"127.0.0.1:3\"\n[[route]]\nlistener = \"h\"\npool = \"db\"\n[pool.db]\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "mixed-pool", 5),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"db\"\n[[listener]]\nname = \"h\"\nlisten = \"127.0.0.1:3\"\n[[route]]\nlistener = \"h\"\npool = \"web\"\n[pool.db]\nbackup = \"web\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n[pool.web]\nbackends = [{ address = \"127.0.0.1:4\" }]\n", "mixed-pool", 15),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"db\"\n[pool.db]\ntls = {}\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-value", 6),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n[[route]]\npool = \"web\"\n[pool.web]\nproxy_protocol = \"v2\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-value", 6),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"db\"\n[pool.db]\nproxy_protocol = \"v1\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-value", 7),
        // HTTP/2 to backends: h2 needs tls, h2c has none, TCP pools speak no HTTP, a
        // grpc check needs HTTP/2, `service` is for grpc checks.
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n[[route]]\npool = \"web\"\n[pool.web]\nprotocol = \"h3\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-value", 7),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n[[route]]\npool = \"web\"\n[pool.web]\nprotocol = \"h2\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-value", 7),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n[[route]]\npool = \"web\"\n[pool.web]\nprotocol = \"h2c\"\ntls = { verify = false }\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-value", 7),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"db\"\n[pool.db]\nprotocol = \"h2c\"\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "invalid-value", 7),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n[[route]]\npool = \"web\"\n[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n[pool.web.health]\ntype = \"grpc\"\n", "invalid-health-check", 8),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n[[route]]\npool = \"web\"\n[pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n[pool.web.health]\nservice = \"api\"\n", "invalid-health-check", 9),
        ("[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n[[route]]\npool = \"web\"\n[pool.web]\nprotocol = \"h2c\"\nlimits = { max_streams = 0 }\nbackends = [{ address = \"127.0.0.1:2\" }]\n", "out-of-range", 8),
        // Errors from the TOML and serde layers.
        ("[pool.web]\nalgoritm = \"random\"\n", "unknown-field", 2),
        ("[pools.web]\n", "unknown-field", 1),
        ("[pool.web]\nbackends = [{ address = \"127.0.0.1:2\", weight = \"2\" }]\n", "invalid-type", 2),
        ("[pool.web\n", "toml-syntax", 1),
        ("drain_timeout = \"1s\"\ndrain_timeout = \"2s\"\n", "duplicate-name", 2),
    ];
    for (text, rule, line) in cases {
        let found = errors(text);
        assert!(
            found.contains(&(rule, *line)),
            "expected {rule} at line {line} in:\n{text}\nfound {found:?}"
        );
    }
}

#[test]
fn unknown_fields_suggest_the_closest_field() {
    let checked = check("[pool.web]\nalgoritm = \"random\"\n");
    assert_eq!(
        checked.findings[0]
            .help
            .as_deref()
            .map(|h| h.starts_with("did you mean `algorithm`?")),
        Some(true),
        "{:?}",
        checked.findings
    );
    let checked = check("[[listeners]]\n");
    assert!(checked.findings[0]
        .help
        .as_deref()
        .unwrap()
        .contains("did you mean `listener`?"));
}

#[test]
fn unknown_names_suggest_the_closest_defined_name() {
    let text = BASE.replace("pool = \"web\"", "pool = \"wbe\"");
    let checked = check(&text);
    let finding = checked
        .findings
        .iter()
        .find(|f| f.rule == "unknown-pool")
        .unwrap();
    assert!(
        finding
            .help
            .as_deref()
            .unwrap()
            .contains("did you mean \"web\"?"),
        "{finding:?}"
    );
}

#[test]
fn a_route_to_a_pool_with_errors_is_not_also_an_unknown_pool() {
    let text = BASE.replace("backends = [", "panic_threshold = 200\nbackends = [");
    let found = errors(&text);
    assert_eq!(
        found.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        ["out-of-range"]
    );
}

#[test]
fn every_error_of_a_file_is_reported_in_one_run() {
    let text = "drain_timeout = \"x\"\n[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n[pool.a]\nbackends = []\n[pool.b]\npanic_threshold = -1\nbackends = [{ address = \"127.0.0.1:1\" }]\n";
    let rules: Vec<_> = errors(text).into_iter().map(|(r, _)| r).collect();
    assert_eq!(rules, ["invalid-duration", "empty-pool", "out-of-range"]);
}

#[test]
fn values_are_resolved_into_the_model() {
    let config = valid(
        r#"
state_dir = "/var/lib/evenkeel"
[[listener]]
name = "public"
listen = "127.0.0.1:0"
[[route]]
host = "API.example.com"
path_prefix = "/api"
pool = "api"
[pool.api]
algorithm = "consistent_hash"
hash_key = "header:X-User-Id"
slow_start = "1m30s"
timeouts = { connect = "250ms", per_try = "2s", request = "5s" }
backends = [{ address = "localhost:9001", weight = 3, capacity = 2.5 }, { address = "127.0.0.1:9002" }]
[pool.api.health]
type = "tcp"
"#,
    );
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/evenkeel"));
    assert_eq!(config.listeners[0].listen.port(), 0);
    assert_eq!(config.routes[0].host.as_deref(), Some("api.example.com"));
    let pool = &config.pools[0];
    assert_eq!(pool.hash_key, Some(HashKey::Header("x-user-id".into())));
    assert_eq!(pool.slow_start, Duration::from_secs(90));
    assert_eq!(pool.timeouts.connect, Duration::from_millis(250));
    assert_eq!(pool.timeouts.idle, Timeouts::default().idle);
    assert!(pool.backends[0].socket_addr.ip().is_loopback());
    assert_eq!(
        (pool.backends[0].weight, pool.backends[0].capacity),
        (3, 2.5)
    );
    assert_eq!(pool.health.as_ref().map(|h| &h.probe), Some(&Probe::Tcp));
}

#[test]
fn pools_keep_file_order() {
    let config = valid(&format!("{BASE}\n[pool.b]\nbackends = [{{ address = \"127.0.0.1:1\" }}, {{ address = \"127.0.0.1:2\" }}]\n[pool.a]\nbackup = \"b\"\nbackends = [{{ address = \"127.0.0.1:3\" }}]\n"));
    let names: Vec<_> = config.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web", "b", "a"]);
}

#[test]
fn lint_rules_fire_on_risky_configs_and_not_on_the_base() {
    let cases: &[(&str, &str)] = &[
        ("single-backend-pool", "backends = [{ address = \"127.0.0.1:9001\" }]"),
        ("weights-ignored", "backends = [{ address = \"127.0.0.1:9001\", weight = 5 }, { address = \"127.0.0.1:9002\" }]"),
    ];
    for (rule, backends) in cases {
        let text = BASE.replace(
            "backends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\" }]",
            backends,
        );
        assert!(
            warnings(&text).contains(rule),
            "{rule} should fire: {:?}",
            warnings(&text)
        );
    }
    let no_health = BASE.replace("[pool.web.health]\npath = \"/healthz\"\n", "");
    assert_eq!(warnings(&no_health), ["no-health-check"]);
    let slow = BASE.replace(
        "path = \"/healthz\"",
        "interval = \"11s\"\ntimeout = \"1s\"",
    );
    assert_eq!(warnings(&slow), ["slow-failure-detection"]);
    let just_in_time = BASE.replace("path = \"/healthz\"", "interval = \"10s\"");
    assert!(warnings(&just_in_time).is_empty());
    let unused = format!("{BASE}\n[pool.spare]\nbackends = [{{ address = \"127.0.0.1:1\" }}, {{ address = \"127.0.0.1:2\" }}]\n[pool.spare.health]\n");
    assert_eq!(warnings(&unused), ["unused-pool"]);
    let as_backup = unused.replace("[pool.web]\n", "[pool.web]\nbackup = \"spare\"\n");
    assert!(warnings(&as_backup).is_empty());
    let weighted = BASE
        .replace(
            "[pool.web]\n",
            "[pool.web]\nalgorithm = \"weighted_round_robin\"\n",
        )
        .replace("9001\" }", "9001\", weight = 5 }");
    assert!(warnings(&weighted).is_empty());
    let idle = format!("{BASE}\n[[listener]]\nname = \"internal\"\nlisten = \"127.0.0.1:8081\"\n")
        .replace("[[route]]\n", "[[route]]\nlistener = \"public\"\n");
    assert_eq!(warnings(&idle), ["listener-without-routes"]);
    // A readable token, so only the listen address is at stake (admin-token-missing).
    let dir = tempfile::tempdir().expect("temporary folder");
    let token = dir.path().join("t");
    std::fs::write(&token, "0123456789abcdef\n").expect("write the token");
    let token = token.display().to_string();
    let admin = format!("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_file = {token:?}\n{BASE}");
    assert_eq!(warnings(&admin), ["admin-off-loopback"]);
    assert!(warnings(&admin.replace("0.0.0.0", "127.0.0.1")).is_empty());
}

#[test]
fn allowed_rules_still_report_with_the_reason_but_do_not_count() {
    let text = format!(
        "{}\n[lint.allow]\nno-health-check = \"checked by the mesh\"\n",
        BASE.replace("[pool.web.health]\npath = \"/healthz\"\n", "")
    );
    let checked = check(&text);
    let finding = checked
        .findings
        .iter()
        .find(|f| f.rule == "no-health-check")
        .unwrap();
    assert_eq!(finding.allowed.as_deref(), Some("checked by the mesh"));
    assert_eq!(checked.warnings(), 0);
    assert!(!checked.is_rejected(true));
}

#[test]
fn warnings_reject_only_when_denied() {
    let text = BASE.replace("[pool.web.health]\npath = \"/healthz\"\n", "");
    let checked = check(&text);
    assert!(!checked.is_rejected(false));
    assert!(checked.is_rejected(true));
    let by_config = check(&format!("{text}\n[guard]\ndeny_warnings = true\n"));
    assert!(by_config.is_rejected(false));
}

#[test]
fn every_lint_rule_has_an_explanation() {
    for rule in lint::RULES {
        assert!(
            rule.explain.len() > 100,
            "{} needs a real explanation",
            rule.name
        );
        assert!(rule
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-'));
    }
}

/// A pool of `n` backends where every other one has weight 1 among weights of 10,000,
/// so half of them are `near-zero-weight` findings: the config exercises duplicate
/// detection, the intended split, the lints and the rendering of many findings.
fn many_backends(n: usize) -> String {
    let mut text = format!(
        "{BASE}[[route]]\npath_prefix = \"/big\"\npool = \"big\"\n\
         [pool.big]\nalgorithm = \"weighted_round_robin\"\nbackends = [\n"
    );
    for k in 0..n {
        let weight = if k % 2 == 1 { 1 } else { 10_000 };
        text.push_str(&format!(
            "  {{ address = \"10.{}.{}.{}:80\", weight = {weight} }},\n",
            (k >> 16) & 255,
            (k >> 8) & 255,
            k & 255
        ));
    }
    text.push_str("]\n[pool.big.health]\npath = \"/healthz\"\n");
    text
}

/// Checks and renders `text` (both formats) `runs` times; the fastest run.
fn fastest_check(text: &str, runs: usize) -> Duration {
    (0..runs)
        .map(|_| {
            let started = std::time::Instant::now();
            let checked = check(text);
            let shown = diagnostic::render_text(&checked.source, &checked.findings).len()
                + diagnostic::render_json(&checked.source, &checked.findings).len();
            assert!(shown > 0);
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Issue 12, defect 10: `check` time grew quadratically with the number of backends
/// (duplicate detection scanned every earlier backend, the intended split searched
/// for each candidate, every finding was located by scanning the file). Four times
/// the backends must cost well under the sixteen times a quadratic step would; the
/// fastest of a few runs keeps a noisy machine from failing it.
#[test]
fn check_time_grows_linearly_with_the_number_of_backends() {
    let (small, large) = (many_backends(10_000), many_backends(40_000));
    let checked = check(&large);
    assert_eq!(checked.errors(), 0, "{:?}", checked.findings.first());
    assert_eq!(checked.warnings(), 20_000);
    let small_time = fastest_check(&small, 3);
    let large_time = fastest_check(&large, 2);
    let ratio = large_time.as_secs_f64() / small_time.as_secs_f64();
    assert!(
        ratio < 8.0,
        "4x the backends took {ratio:.1}x the time ({small_time:?} → {large_time:?})"
    );
}

#[test]
fn an_https_webhook_is_accepted() {
    let config = valid(&format!(
        "{BASE}\n[alerts]\nwebhook = \"https://alerts.example.com/hook\"\n"
    ));
    assert_eq!(
        config.alerts.webhook.as_deref(),
        Some("https://alerts.example.com/hook")
    );
}

#[test]
fn pool_tls_takes_its_defaults_refuses_bad_values_and_its_ca_counts_in_the_identity() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let at = |text: &str| {
        check_source(Source {
            path: dir.path().join("lb.toml"),
            text: text.to_string(),
        })
    };
    let with_tls = |tls: &str| BASE.replace("backends = [", &format!("tls = {tls}\nbackends = ["));
    let plain = at(BASE).config.expect("valid");
    assert!(plain.pools[0].tls.is_none() && plain.pools[0].backends[0].tls_name.is_none());

    let defaults = at(&with_tls("{}")).config.expect("valid");
    let tls = defaults.pools[0].tls.as_ref().expect("tls");
    assert!(tls.verify && tls.sni.is_none() && tls.ca.is_none());
    let name = defaults.pools[0].backends[0]
        .tls_name
        .as_ref()
        .expect("name");
    assert_eq!(name.to_str(), "127.0.0.1");

    let named = at(&with_tls("{ sni = \"api.internal\" }"))
        .config
        .expect("valid");
    let name = named.pools[0].backends[1].tls_name.as_ref().expect("name");
    assert_eq!(name.to_str(), "api.internal");

    for (tls, rule) in [
        ("{ sni = \"10.0.0.1\" }", "invalid-value"),
        ("{ ca = \"absent.pem\" }", "invalid-ca"),
        ("{ ca = \"lb.toml\" }", "invalid-ca"),
        ("{ cert = \"x\" }", "unknown-field"),
    ] {
        std::fs::write(dir.path().join("lb.toml"), "not a CA").expect("write");
        let checked = at(&with_tls(tls));
        assert!(
            checked.findings.iter().any(|f| f.rule == rule),
            "{tls}: {:#?}",
            checked.findings
        );
    }

    // The CA's bytes are part of the identity: the same text over a new CA is a new
    // version.
    let ca = |name: &str| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("CA").pem();
        std::fs::write(dir.path().join("ca.pem"), pem).expect("write");
    };
    let text = with_tls("{ ca = \"ca.pem\" }");
    ca("first");
    let first = at(&text).config.expect("valid").identity();
    assert_ne!(first, store_sha(&text), "the CA counts in the identity");
    assert_eq!(first, at(&text).config.expect("valid").identity());
    ca("second");
    assert_ne!(first, at(&text).config.expect("valid").identity());
}

fn store_sha(text: &str) -> String {
    crate::store::sha256(text)
}

/// Found by review: a TCP pool's dedicated backup (a pool on no listener) is a TCP
/// pool itself, with TCP-only settings allowed.
#[test]
fn a_tcp_pools_backup_carries_tcp_too() {
    let checked = check(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"db\"\n\
         [pool.db]\nbackup = \"dr\"\nbackends = [{ address = \"127.0.0.1:2\" }, { address = \"127.0.0.1:3\" }]\n\
         [pool.dr]\nproxy_protocol = \"v2\"\nbackends = [{ address = \"127.0.0.1:4\" }, { address = \"127.0.0.1:5\" }]\n",
    );
    let config = checked.config.expect("valid");
    assert!(config.pools.iter().all(|p| p.tcp));
}

/// Found by review: the coverage matrix of a TCP pool judges only what a connection
/// can show (refused, silent), in a TCP pool's words, and a silent backend it cannot
/// see raises no finding no config could quiet.
#[test]
fn a_tcp_pools_coverage_is_of_connections() {
    let checked = check(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"db\"\n\
         [pool.db]\nbackends = [{ address = \"127.0.0.1:2\" }, { address = \"127.0.0.1:3\" }]\n\
         [pool.db.health]\ntype = \"tcp\"\n",
    );
    assert!(
        checked
            .findings
            .iter()
            .all(|f| f.rule != "undetected-failure"),
        "{:?}",
        checked.findings
    );
    let config = checked.config.expect("valid");
    let rows = crate::config::lint::coverage::of(&config.pools[0]);
    let failures: Vec<_> = rows.iter().map(|r| r.failure).collect();
    use crate::config::lint::coverage::Failure;
    assert_eq!(failures, [Failure::Refuses, Failure::NeverAnswers]);
    assert!(rows[0]
        .removed_by
        .iter()
        .any(|r| r.contains("failed connects")));
    assert!(rows[1].removed_by.is_empty());
}

/// An HTTP/2 pool: its protocol, stream limit and gRPC check are in the model, and its
/// in-flight limit is its stream limit.
#[test]
fn an_http2_pool_takes_its_protocol_stream_limit_and_grpc_check() {
    let config = valid(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n[[route]]\npool = \"api\"\n\
         [pool.api]\nprotocol = \"h2c\"\nlimits = { max_streams = 250, max_connections = 4 }\n\
         backends = [{ address = \"127.0.0.1:2\" }, { address = \"127.0.0.1:3\" }]\n\
         [pool.api.health]\ntype = \"grpc\"\nservice = \"api.v1.Users\"\n",
    );
    let pool = &config.pools[0];
    assert_eq!(pool.protocol, Protocol::H2c);
    assert_eq!(pool.limits.max_streams, 250);
    assert_eq!(pool.in_flight_limit(), 250);
    assert_eq!(
        pool.health.as_ref().map(|h| &h.probe),
        Some(&Probe::Grpc {
            service: "api.v1.Users".into()
        })
    );
    let http1 = valid(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:1\"\n[[route]]\npool = \"web\"\n\
         [pool.web]\nbackends = [{ address = \"127.0.0.1:2\" }]\n",
    );
    assert_eq!(http1.pools[0].protocol, Protocol::Http1);
    assert_eq!(http1.pools[0].in_flight_limit(), 1000);
}

#[test]
fn an_etcd_store_is_resolved_with_its_defaults_and_files() {
    let config = valid(&format!(
        "{BASE}[store]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\", \"https://etcd-2:2379\"]\n\
         prefix = \"/evenkeel/prod\"\nuser = \"lb\"\npassword_file = \"etcd.password\"\nca = \"ca.pem\"\n"
    ));
    let store::StoreKind::Etcd(etcd) = &config.store else {
        panic!("an etcd store: {:?}", config.store);
    };
    assert_eq!(etcd.endpoints.len(), 2);
    assert!(etcd.endpoints[1].tls);
    assert_eq!(etcd.prefix, "/evenkeel/prod");
    assert_eq!(etcd.node, store::default_node(), "the host name by default");
    assert_eq!(
        etcd.password_file,
        Some(PathBuf::from("/etc/evenkeel/etcd.password"))
    );
    assert_eq!(etcd.ca, Some(PathBuf::from("/etc/evenkeel/ca.pem")));
    assert_eq!(
        valid(BASE).store,
        store::StoreKind::Sqlite,
        "no [store]: SQLite"
    );
}

#[test]
fn store_errors_are_located() {
    let text = format!(
        "{BASE}[store]\nkind = \"etcd\"\nendpoints = [\"127.0.0.1:2379\"]\nprefix = \"evenkeel/\"\n\
         node = \"a/b\"\nuser = \"lb\"\nca = \"ca.pem\"\n"
    );
    let at = BASE.lines().count();
    assert_eq!(
        errors(&text),
        vec![
            ("invalid-address", at + 3),
            ("invalid-value", at + 4),
            ("invalid-value", at + 5),
            ("missing-field", at + 6),
        ],
        "the TLS file is not judged against endpoints that did not parse"
    );
    let sqlite = format!("{BASE}[store]\nprefix = \"/a\"\n");
    assert_eq!(errors(&sqlite), vec![("invalid-value", at + 2)]);
    let unknown = format!("{BASE}[store]\nkind = \"consul\"\n");
    assert_eq!(errors(&unknown), vec![("invalid-value", at + 2)]);
    let missing = format!("{BASE}[store]\nkind = \"etcd\"\n");
    assert_eq!(
        errors(&missing).len(),
        2,
        "endpoints and prefix are required"
    );
    let plain_tls = format!(
        "{BASE}[store]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/a\"\ncert = \"c.pem\"\nkey = \"c.key\"\n"
    );
    assert_eq!(errors(&plain_tls), vec![("invalid-value", at + 5)]);
}

#[test]
fn a_fleet_version_loads_with_the_nodes_own_sections() {
    let local = NodeLocal::of(&valid(&format!(
        "state_dir = \"/var/lib/node-b\"\n{BASE}[admin]\nlisten = \"127.0.0.1:9902\"\ntoken_file = \"b.token\"\n\
         [store]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/f\"\nnode = \"b\"\n"
    )));
    // Written on node a: its admin listener, token, store and state_dir, which node b
    // ignores (a token file a names that b lacks is no error here).
    let text = format!(
        "state_dir = \"/var/lib/node-a\"\n{BASE}[admin]\nlisten = \"127.0.0.1:9901\"\ntoken_file = \"/nowhere/a.token\"\n\
         [store]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/f\"\nnode = \"a\"\n"
    );
    let checked = check_fleet_source(
        Source {
            path: PathBuf::from("fleet version 2"),
            text,
        },
        Path::new("/etc/evenkeel"),
        &local,
    );
    assert!(!checked.is_rejected(false), "{:?}", checked.findings);
    let config = checked.config.expect("valid");
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/node-b"));
    assert_eq!(config.admin.as_ref().map(|a| a.listen.port()), Some(9902));
    let store::StoreKind::Etcd(etcd) = &config.store else {
        panic!("the node's store");
    };
    assert_eq!(etcd.node, "b");
    assert!(
        checked
            .findings
            .iter()
            .all(|f| f.rule != "admin-token-missing"),
        "{:?}",
        checked.findings
    );
}

#[test]
fn an_etcd_password_over_http_to_another_host_is_a_warning() {
    let store = |endpoint: &str| {
        format!(
            "{BASE}[store]\nkind = \"etcd\"\nendpoints = [\"{endpoint}\"]\nprefix = \"/f\"\nuser = \"lb\"\npassword_file = \"p\"\n"
        )
    };
    assert!(warnings(&store("http://10.0.0.5:2379")).contains(&"etcd-credentials-in-clear"));
    for quiet in [
        "http://127.0.0.1:2379",
        "http://localhost:2379",
        "http://[::1]:2379",
        "https://10.0.0.5:2379",
    ] {
        assert!(
            !warnings(&store(quiet)).contains(&"etcd-credentials-in-clear"),
            "{quiet}"
        );
    }
}
