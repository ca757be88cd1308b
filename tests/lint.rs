//! Every lint rule through the real `evenkeel check` and `evenkeel explain`: a config
//! that triggers the rule warns (exit 0), fails under --deny-warnings (exit 1), names the
//! rule at the offending `file:line:col` in text and JSON; a close config does not.

use evenkeel::config::lint::RULES;

use evenkeel::config::Severity;

use crate::util::{run, write_lint_certificates, Dir};

const FRONT: &str = r#"[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
pool = "web"
"#;
const TWO: &str = r#"backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]"#;
const GOOD_TOKEN: &str = "0123456789abcdef0123456789abcdef\n";

/// One rule: a config that triggers it, with `|` in `at` marking where the finding must
/// point, and a close config that must pass `check --deny-warnings`.
struct Case {
    rule: &'static str,
    triggers: String,
    at: &'static str,
    clean: String,
}

/// `[pool.web]` with `lines` and `backends`, and a health check.
fn web(lines: &str, backends: &str) -> String {
    format!("{FRONT}\n[pool.web]\n{lines}{backends}\n[pool.web.health]\npath = \"/healthz\"\n")
}

/// A TCP listener and its pool, with `lines` in the pool and `health` its check.
fn tcp(lines: &str, health: &str) -> String {
    format!(
        "[[listener]]\nname = \"db\"\nlisten = \"127.0.0.1:6400\"\nmode = \"tcp\"\npool = \"cache\"\n\n\
         [pool.cache]\n{lines}{TWO}\n[pool.cache.health]\n{health}"
    )
}

fn cases() -> Vec<Case> {
    // The backup pool on servers of its own: sharing them is `shared-failure-domain`.
    let spare_backends =
        r#"backends = [{ address = "127.0.0.1:9003" }, { address = "127.0.0.1:9004" }]"#;
    let spare = format!("[pool.spare]\n{spare_backends}\n[pool.spare.health]\n");
    let wrr = "algorithm = \"weighted_round_robin\"\n";
    let three = |a: &str, b: &str, c: &str| {
        format!("backends = [\n  {{ address = \"127.0.0.1:9001\"{a} }},\n  {{ address = \"127.0.0.1:9002\"{b} }},\n  {{ address = \"127.0.0.1:9003\"{c} }},\n]")
    };
    let admin = |listen: &str, token_file: &str| {
        format!(
            "[admin]\nlisten = \"{listen}\"\ntoken_file = \"{token_file}\"\n\n{}",
            web("", TWO)
        )
    };
    let routes = |second: &str| {
        format!("{}{spare}", web("", TWO)).replace(
            "[[route]]\npool = \"web\"\n",
            &format!("[[route]]\npath_prefix = \"/api\"\npool = \"spare\"\n\n[[route]]\n{second}path_prefix = \"/api\"\npool = \"web\"\n"),
        )
    };
    let case = |rule, triggers, at, clean| Case {
        rule,
        triggers,
        at,
        clean,
    };
    vec![
        case(
            "single-backend-pool",
            web("", "backends = [{ address = \"127.0.0.1:9001\" }]"),
            "[pool.|web]",
            web("", TWO),
        ),
        case(
            "weights-ignored",
            web("", &three("", ", weight = 3", "")),
            "weight = |3",
            web(wrr, &three("", ", weight = 3", "")),
        ),
        case(
            "no-health-check",
            format!("{FRONT}\n[pool.web]\n{TWO}\n"),
            "[pool.|web]",
            web("", TWO),
        ),
        case(
            "slow-failure-detection",
            web("", TWO).replace("path = \"/healthz\"", "interval = \"20s\""),
            "|[pool.web.health]",
            web("", TWO).replace("path = \"/healthz\"", "interval = \"10s\""),
        ),
        case(
            "undetected-failure",
            web("", TWO).replace(
                "path = \"/healthz\"",
                "type = \"tcp\"\n[pool.web.outlier]\nconsecutive_failures = 0",
            ),
            "|[pool.web.health]",
            web("", TWO).replace(
                "path = \"/healthz\"",
                "path = \"/healthz\"\n[pool.web.outlier]\nconsecutive_failures = 0",
            ),
        ),
        case(
            "unused-pool",
            format!("{}{spare}", web("", TWO)),
            "[pool.|spare]",
            format!("{}{spare}", web("backup = \"spare\"\n", TWO)),
        ),
        case(
            "listener-without-routes",
            format!("{}[[listener]]\nname = \"internal\"\nlisten = \"127.0.0.1:8081\"\n", web("", TWO))
                .replace("[[route]]\n", "[[route]]\nlistener = \"public\"\n"),
            "|[[listener]]\nname = \"internal\"",
            format!("{}[[listener]]\nname = \"internal\"\nlisten = \"127.0.0.1:8081\"\n[[route]]\nlistener = \"internal\"\npool = \"web\"\n", web("", TWO))
                .replace("[[route]]\npool", "[[route]]\nlistener = \"public\"\npool"),
        ),
        case(
            "load-ratio",
            web(wrr, &three(", weight = 6", "", "")),
            "weight = |6",
            web(wrr, &three(", weight = 6, capacity = 4", "", "")),
        ),
        case(
            "near-zero-weight",
            web(wrr, &three(", weight = 100", ", weight = 2", ", weight = 100")),
            "weight = |2 ",
            web(wrr, &three(", weight = 100", ", weight = 20", ", weight = 100")),
        ),
        case(
            "hash-key-may-be-missing",
            web("algorithm = \"consistent_hash\"\nhash_key = \"header:X-User-Id\"\n", TWO),
            "hash_key = |\"header",
            web("algorithm = \"consistent_hash\"\nhash_key = \"client_ip\"\n", TWO),
        ),
        case(
            "retries-without-budget",
            web("retries = { attempts = 1, budget_percent = 100 }\n", TWO),
            "budget_percent = |100",
            web("retries = { attempts = 1, budget_percent = 50 }\n", TWO),
        ),
        case(
            "retries-never-allowed",
            web("retries = { attempts = 3, budget_percent = 0 }\n", TWO),
            "budget_percent = |0",
            web("retries = { attempts = 0, budget_percent = 0 }\n", TWO),
        ),
        case(
            "eject-all-allowed",
            format!("{}[pool.web.outlier]\nmax_ejected_percent = 100\n", web("", TWO)),
            "max_ejected_percent = |100",
            format!("{}[pool.web.outlier]\nmax_ejected_percent = 99\n", web("", TWO)),
        ),
        case(
            "backup-cycle",
            format!(
                "{}{}",
                web("backup = \"spare\"\n", TWO),
                spare.replace("backends", "backup = \"web\"\nbackends")
            ),
            "backup = |\"spare\"",
            format!("{}{spare}", web("backup = \"spare\"\n", TWO)),
        ),
        case(
            "server-load-ratio",
            format!(
                "{}[[route]]\npath_prefix = \"/api\"\npool = \"api\"\n[pool.api]\n{wrr}backends = [{{ weight = 3, address = \"127.0.0.1:9002\" }}, {{ address = \"127.0.0.1:9003\" }}]\n[pool.api.health]\n",
                web(wrr, "backends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\", weight = 3 }]")
            ),
            "|{ address = \"127.0.0.1:9002\", weight = 3 }",
            format!(
                "{}[[route]]\npath_prefix = \"/api\"\npool = \"api\"\n[pool.api]\n{wrr}backends = [{{ weight = 2, address = \"127.0.0.1:9002\" }}, {{ address = \"127.0.0.1:9003\" }}]\n[pool.api.health]\n",
                web(wrr, "backends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\", weight = 2 }]")
            ),
        ),
        case(
            "single-failure-outage",
            web(wrr, "backends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\", weight = 0 }]"),
            "|{ address = \"127.0.0.1:9001\" }",
            web(wrr, "backends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\", weight = 1 }]"),
        ),
        case(
            "single-failure-overload",
            web("", &three(", capacity = 4", "", "")),
            "|{ address = \"127.0.0.1:9002\" }",
            web("", &three(", capacity = 3", "", "")),
        ),
        case(
            "shared-failure-domain",
            format!(
                "{}[pool.spare]\nbackends = [{{ address = \"127.0.0.1:9002\" }}, {{ address = \"127.0.0.1:9003\" }}]\n[pool.spare.health]\n",
                web("backup = \"spare\"\n", TWO)
            ),
            "backup = |\"spare\"",
            format!("{}{spare}", web("backup = \"spare\"\n", TWO)),
        ),
        case(
            "timeout-order",
            format!("drain_timeout = \"20s\"\n\n{}", web("", TWO)),
            "drain_timeout = |\"20s\"",
            format!("drain_timeout = \"30s\"\n\n{}", web("", TWO)),
        ),
        case(
            "tunnel-idle-long",
            web("timeouts = { tunnel_idle = \"90m\" }\n", TWO),
            "tunnel_idle = |\"90m\"",
            web("timeouts = { tunnel_idle = \"60m\" }\n", TWO),
        ),
        case(
            "tcp-pool-http-health",
            tcp("", "path = \"/ping\"\n"),
            "|[pool.cache.health]",
            tcp("", "type = \"tcp\"\n"),
        ),
        case(
            "tcp-pool-hash-key",
            tcp("algorithm = \"consistent_hash\"\nhash_key = \"path\"\n", "type = \"tcp\"\n"),
            "hash_key = |\"path\"",
            tcp("algorithm = \"consistent_hash\"\nhash_key = \"client_ip\"\n", "type = \"tcp\"\n"),
        ),
        case(
            "shadowed-route",
            routes(""),
            "|[[route]]\npath_prefix = \"/api\"\npool = \"web\"",
            routes("host = \"api.example.com\"\n"),
        ),
        case(
            "admin-off-loopback",
            admin("0.0.0.0:9901", "admin.token"),
            "|[admin]",
            admin("127.0.0.1:9901", "admin.token"),
        ),
        case(
            "admin-token-missing",
            admin("127.0.0.1:9901", "short.token"),
            "token_file = |\"short.token\"",
            admin("127.0.0.1:9901", "admin.token"),
        ),
        case(
            "etcd-credentials-in-clear",
            format!("{}[store]\nkind = \"etcd\"\nendpoints = [\"http://10.0.0.5:2379\"]\nprefix = \"/f\"\nuser = \"lb\"\npassword_file = \"etcd.password\"\n", web("", TWO)),
            "|[store]",
            format!("{}[store]\nkind = \"etcd\"\nendpoints = [\"https://10.0.0.5:2379\"]\nprefix = \"/f\"\nuser = \"lb\"\npassword_file = \"etcd.password\"\n", web("", TWO)),
        ),
        case(
            "certificate-expired",
            https("", "expired.pem", "expired.key"),
            "[|{ cert = \"expired.pem\"",
            https("", "site.pem", "site.key"),
        ),
        case(
            "certificate-key-mismatch",
            https("", "site.pem", "other.key"),
            "[|{ cert = \"site.pem\", key = \"other.key\"",
            https("", "site.pem", "site.key"),
        ),
        case(
            "certificate-expiring",
            https("", "expiring.pem", "expiring.key"),
            "[|{ cert = \"expiring.pem\"",
            https("", "site.pem", "site.key"),
        ),
        case(
            "certificate-host-uncovered",
            https("host = \"shop.example.org\"\n", "site.pem", "site.key"),
            "|[[route]]",
            https("host = \"api.shop.example\"\n", "site.pem", "site.key"),
        ),
        case(
            "tls-min-version",
            https("", "site.pem", "site.key").replace("tls = {", "tls = { min_version = \"1.0\","),
            "min_version = |\"1.0\"",
            https("", "site.pem", "site.key").replace("tls = {", "tls = { min_version = \"1.2\","),
        ),
        case(
            "backend-tls-unverified",
            web("tls = { verify = false }\n", TWO),
            "verify = |false",
            web("tls = { ca = \"ca.pem\", verify = true }\n", TWO),
        ),
    ]
}

/// An HTTPS listener serving `cert` and `key` (files of [`write_lint_certificates`]),
/// a route with `route` lines, and pool "web".
fn https(route: &str, cert: &str, key: &str) -> String {
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8443\"\ntls = {{ certificates = [{{ cert = \"{cert}\", key = \"{key}\" }}] }}\n\n[[route]]\n{route}pool = \"web\"\n\n[pool.web]\n{TWO}\n[pool.web.health]\npath = \"/healthz\"\n"
    )
}

/// 1-based line and column (in characters) where the `|` of `at` falls in `text`.
fn position(text: &str, at: &str) -> (usize, usize) {
    let (before, after) = at.split_once('|').expect("`at` marks the spot with |");
    let needle = format!("{before}{after}");
    assert_eq!(
        text.matches(&needle).count(),
        1,
        "{needle:?} once in:\n{text}"
    );
    let offset = text.find(&needle).unwrap() + before.len();
    let head = &text[..offset];
    let line = head.matches('\n').count() + 1;
    let column = head.rsplit('\n').next().unwrap().chars().count() + 1;
    (line, column)
}

#[test]
fn every_rule_warns_at_its_value_in_text_and_json_and_not_on_a_close_config() {
    let cases = cases();
    for rule in RULES {
        assert!(
            cases.iter().any(|c| c.rule == rule.name),
            "{} has no process-level case",
            rule.name
        );
    }
    for case in cases {
        let dir = Dir::new();
        dir.write("admin.token", GOOD_TOKEN);
        dir.write("short.token", "too-short\n");
        write_lint_certificates(dir.path());
        // A load finding resting on the split between pools warns only once the split
        // is observed (under the equal-per-route assumption it is a note).
        let status = dir.write(
            "status.json",
            r#"{"pools":[{"name":"web","requests":500},{"name":"api","requests":500}]}"#,
        );
        let status = status.to_str().unwrap().to_string();
        let needs_traffic = case.rule == "server-load-ratio";
        let run = |args: &[&str]| {
            let mut all = args.to_vec();
            if needs_traffic {
                all.extend(["--traffic", status.as_str()]);
            }
            run(&all)
        };
        let path = dir.write("lb.toml", &case.triggers);
        let file = path.to_str().unwrap();
        let (line, column) = position(&case.triggers, case.at);
        let context = format!("{} in:\n{}", case.rule, case.triggers);
        // The two certificate rules that are errors fail `check` outright.
        let severity = evenkeel::config::lint::rule(case.rule)
            .expect("a rule")
            .severity;
        let (code, word) = match severity {
            Severity::Error => (Some(1), "error"),
            _ => (Some(0), "warning"),
        };

        let out = run(&["check", "-c", file]);
        assert_eq!(out.code, code, "{context}\n{}{}", out.stdout, out.stderr);
        let header = format!("{word}[{}]: ", case.rule);
        let location = format!("--> {file}:{line}:{column}\n");
        let located = out.stdout.split(&header).skip(1).any(|finding| {
            finding
                .lines()
                .nth(1)
                .is_some_and(|l| format!("{}\n", l.trim()) == location)
        });
        assert!(
            located,
            "{context}\nexpected {header}at {location}\n{}",
            out.stdout
        );
        assert!(out.stdout.contains("= help: "), "{}", out.stdout);

        let denied = run(&["check", "-c", file, "--deny-warnings"]);
        assert_eq!(denied.code, Some(1), "{context}\n{}", denied.stdout);

        let json = run(&["check", "-c", file, "--format", "json"]);
        assert_eq!(json.code, code, "{context}");
        let findings: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
        let found = findings.as_array().unwrap().iter().any(|f| {
            f["rule"] == case.rule
                && f["severity"] == word
                && f["file"] == file
                && f["line"] == line
                && f["column"] == column
                && f["help"].is_string()
        });
        assert!(found, "{context}\n{}", json.stdout);

        let path = dir.write("lb.toml", &case.clean);
        let clean = run(&["check", "-c", path.to_str().unwrap(), "--deny-warnings"]);
        assert_eq!(
            clean.code,
            Some(0),
            "close config for {}:\n{}\n{}",
            case.rule,
            case.clean,
            clean.stdout
        );
        assert!(clean.stdout.contains("0 warnings"), "{}", clean.stdout);
    }
}

#[test]
fn explain_works_for_every_rule() {
    let list = run(&["explain"]);
    assert_eq!(list.code, Some(0));
    for rule in RULES {
        let out = run(&["explain", rule.name]);
        assert_eq!(out.code, Some(0), "{}: {}", rule.name, out.stderr);
        assert!(
            out.stdout.starts_with(&format!(
                "{} ({} by default): {}",
                rule.name,
                rule.severity.as_str(),
                rule.summary
            )),
            "{}",
            out.stdout
        );
        // The explanation is wrapped; its first words come through whole.
        let opening: Vec<&str> = rule.explain.split_whitespace().take(4).collect();
        let shown: Vec<&str> = out.stdout.split_whitespace().collect();
        assert!(
            shown.windows(4).any(|w| w == opening.as_slice()),
            "{}: {}",
            rule.name,
            out.stdout
        );
        assert!(
            list.stdout.lines().any(|l| l.starts_with(rule.name)),
            "{} missing from `explain`:\n{}",
            rule.name,
            list.stdout
        );
    }
}
