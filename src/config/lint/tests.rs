//! Every lint rule on a config that triggers it (and only it, at the offending value)
//! and on a close config that does not; the examples of docs/lints.md; the split the
//! share rules judge.

use std::path::Path;

use super::shares::{split, BackendSplit};
use super::RULES;
use crate::config::{check_source, Checked, Severity, Source};

/// Listener and catch-all route to pool "web"; a case appends its pools.
const FRONT: &str = r#"[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
pool = "web"
"#;

/// A health check for pool "web", so only the rule under test fires.
const WEB_HEALTH: &str = "[pool.web.health]\npath = \"/healthz\"\n";
const TWO: &str = r#"backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]"#;
const GOOD_TOKEN: &str = "0123456789abcdef0123456789abcdef\n";

/// A rule, a config that triggers it where `at` says, and a close one that does not.
struct Case {
    rule: &'static str,
    /// Files beside the config (name, contents), such as the admin token.
    files: &'static [(&'static str, &'static str)],
    triggers: String,
    /// A unique piece of `triggers`; the finding must start at its `|`.
    at: &'static str,
    clean: String,
}

/// `[pool.web]` with `lines` (algorithm, retries…) and `backends`, then its health check.
fn web(lines: &str, backends: &str) -> String {
    format!("{FRONT}\n[pool.web]\n{lines}{backends}\n{WEB_HEALTH}")
}

/// A TCP listener and its pool, with `lines` in the pool and `health` its check.
fn tcp(lines: &str, health: &str) -> String {
    format!(
        "[[listener]]\nname = \"db\"\nlisten = \"127.0.0.1:6400\"\nmode = \"tcp\"\npool = \"cache\"\n\n\
         [pool.cache]\n{lines}{TWO}\n[pool.cache.health]\n{health}"
    )
}

fn cases() -> Vec<Case> {
    // Backup pools on servers of their own, so only the rule under test fires.
    let other = |n: u16| {
        format!(
            "backends = [{{ address = \"127.0.0.1:{}\" }}, {{ address = \"127.0.0.1:{}\" }}]",
            9001 + 2 * n,
            9002 + 2 * n
        )
    };
    let spare = format!("[pool.spare]\n{}\n[pool.spare.health]\n", other(1));
    let wrr = "algorithm = \"weighted_round_robin\"\n";
    let three = |weights: [&str; 3]| {
        format!(
            "backends = [\n  {{ address = \"127.0.0.1:9001\"{} }},\n  {{ address = \"127.0.0.1:9002\"{} }},\n  {{ address = \"127.0.0.1:9003\"{} }},\n]",
            weights[0], weights[1], weights[2]
        )
    };
    let case = |rule, triggers: String, at, clean: String| Case {
        rule,
        files: &[],
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
            web("", "backends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\", weight = 2 }]"),
            "weight = |2",
            web(wrr, "backends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\", weight = 2 }]"),
        ),
        case(
            "no-health-check",
            format!("{FRONT}\n[pool.web]\n{TWO}\n"),
            "[pool.|web]",
            web("", TWO),
        ),
        case(
            "slow-failure-detection",
            format!("{FRONT}\n[pool.web]\n{TWO}\n[pool.web.health]\ninterval = \"11s\"\n"),
            "|[pool.web.health]",
            format!("{FRONT}\n[pool.web]\n{TWO}\n[pool.web.health]\ninterval = \"10s\"\n"),
        ),
        // A tcp check sees neither a hung application nor errors, and passive
        // ejection is off: two kinds of failure stay in traffic.
        case(
            "undetected-failure",
            format!("{FRONT}\n[pool.web]\n{TWO}\n[pool.web.health]\ntype = \"tcp\"\n[pool.web.outlier]\nconsecutive_failures = 0\n"),
            "|[pool.web.health]",
            format!("{FRONT}\n[pool.web]\n{TWO}\n[pool.web.health]\ntype = \"tcp\"\n"),
        ),
        case(
            "unused-pool",
            format!("{}{spare}", web("", TWO)),
            "[pool.|spare]",
            format!("{}{spare}", web("backup = \"spare\"\n", TWO)),
        ),
        case(
            "listener-without-routes",
            format!("[[listener]]\nname = \"internal\"\nlisten = \"127.0.0.1:8081\"\n\n{}", web("", TWO))
                .replace("[[route]]\n", "[[route]]\nlistener = \"public\"\n"),
            "|[[listener]]\nname = \"internal\"",
            format!("[[listener]]\nname = \"internal\"\nlisten = \"127.0.0.1:8081\"\n\n[[route]]\nlistener = \"internal\"\npool = \"web\"\n\n{}", web("", TWO))
                .replace("[[route]]\npool", "[[route]]\nlistener = \"public\"\npool"),
        ),
        case(
            "load-ratio",
            web(wrr, &three(["", "", ", weight = 5"])),
            "weight = |5",
            web(wrr, &three(["", "", ", weight = 5, capacity = 3"])),
        ),
        // round_robin ignores weights: capacities alone make the ratio.
        case(
            "load-ratio",
            web("", &three(["", "", ", capacity = 5"])),
            "|{ address = \"127.0.0.1:9001\"",
            web("", &three(["", "", ", capacity = 3"])),
        ),
        case(
            "near-zero-weight",
            web(wrr, &three([", weight = 1", ", weight = 100", ", weight = 100"])),
            "weight = |1 }",
            web(wrr, &three([", weight = 10", ", weight = 100", ", weight = 100"])),
        ),
        case(
            "hash-key-may-be-missing",
            web("algorithm = \"consistent_hash\"\nhash_key = \"header:x-user-id\"\n", TWO),
            "hash_key = |\"header",
            web("algorithm = \"consistent_hash\"\nhash_key = \"client_ip\"\n", TWO),
        ),
        case(
            "hash-key-may-be-missing",
            web("algorithm = \"consistent_hash\"\nhash_key = \"cookie:session\"\n", TWO),
            "hash_key = |\"cookie",
            web("algorithm = \"consistent_hash\"\nhash_key = \"path\"\n", TWO),
        ),
        case(
            "retries-without-budget",
            web("retries = { attempts = 2, budget_percent = 100 }\n", TWO),
            "budget_percent = |100",
            web("retries = { attempts = 0, budget_percent = 100 }\n", TWO),
        ),
        case(
            "retries-never-allowed",
            web("retries = { budget_percent = 0 }\n", TWO),
            "budget_percent = |0",
            web("retries = { attempts = 0, budget_percent = 0 }\n", TWO),
        ),
        case(
            "eject-all-allowed",
            format!("{}[pool.web.outlier]\nmax_ejected_percent = 100\n", web("", TWO)),
            "max_ejected_percent = |100",
            format!("{}[pool.web.outlier]\nconsecutive_failures = 0\nmax_ejected_percent = 100\n", web("", TWO)),
        ),
        case(
            "backup-cycle",
            format!("{}{}", web("backup = \"spare\"\n", TWO), spare.replace("backends", "backup = \"web\"\nbackends")),
            "backup = |\"spare\"",
            format!("{}{spare}", web("backup = \"spare\"\n", TWO)),
        ),
        case(
            "backup-cycle",
            // a → b → c → a, reported once, at the first pool of the loop in the file.
            format!(
                "{}[pool.b]\nbackup = \"c\"\n{}\n[pool.b.health]\n[pool.c]\nbackup = \"web\"\n{}\n[pool.c.health]\n",
                web("backup = \"b\"\n", TWO),
                other(1),
                other(2)
            ),
            "backup = |\"b\"",
            format!(
                "{}[pool.b]\nbackup = \"c\"\n{}\n[pool.b.health]\n[pool.c]\n{}\n[pool.c.health]\n",
                web("backup = \"b\"\n", TWO),
                other(1),
                other(2)
            ),
        ),
        case(
            "server-load-ratio",
            // Each pool alone gives 9002 three quarters at half the capacity (1.5);
            // across both it gets three quarters of all traffic for a third (2.25).
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
            // 9002 and 9003 carry a third each for a sixth of the capacity (2.0, not
            // above); when one fails the other carries half for a fifth (2.5).
            web("", &three([", capacity = 4", "", ""])),
            "|{ address = \"127.0.0.1:9002\" }",
            web("", &three([", capacity = 3", "", ""])),
        ),
        case(
            "shared-failure-domain",
            format!("{}[pool.spare]\nbackends = [{{ address = \"127.0.0.1:9002\" }}, {{ address = \"127.0.0.1:9003\" }}]\n[pool.spare.health]\n", web("backup = \"spare\"\n", TWO)),
            "backup = |\"spare\"",
            format!("{}{spare}", web("backup = \"spare\"\n", TWO)),
        ),
        case(
            "timeout-order",
            format!("drain_timeout = \"5s\"\n{}", web("", TWO)),
            "drain_timeout = |\"5s\"",
            format!("drain_timeout = \"5s\"\n{}", web("timeouts = { request = \"5s\", per_try = \"5s\" }\n", TWO)),
        ),
        case(
            "timeout-order",
            web("timeouts = { request = \"60s\" }\n", TWO),
            "request = |\"60s\"",
            format!("drain_timeout = \"60s\"\n{}", web("timeouts = { request = \"60s\" }\n", TWO)),
        ),
        case(
            "tunnel-idle-long",
            web("timeouts = { tunnel_idle = \"2h\" }\n", TWO),
            "tunnel_idle = |\"2h\"",
            web("timeouts = { tunnel_idle = \"1h\" }\n", TWO),
        ),
        case(
            "tcp-pool-http-health",
            tcp("", "path = \"/healthz\"\n"),
            "|[pool.cache.health]",
            tcp("", "type = \"tcp\"\n"),
        ),
        case(
            "tcp-pool-hash-key",
            tcp("algorithm = \"consistent_hash\"\nhash_key = \"header:x-user\"\n", "type = \"tcp\"\n"),
            "hash_key = |\"header:x-user\"",
            tcp("algorithm = \"consistent_hash\"\nhash_key = \"client_ip\"\n", "type = \"tcp\"\n"),
        ),
        case(
            "shadowed-route",
            format!("{}{spare}", web("", TWO)).replace(
                "[[route]]\npool = \"web\"\n",
                "[[route]]\npath_prefix = \"/api\"\npool = \"spare\"\n\n[[route]]\npath_prefix = \"/api\"\npool = \"web\"\n",
            ),
            "|[[route]]\npath_prefix = \"/api\"\npool = \"web\"",
            format!("{}{spare}", web("", TWO)).replace(
                "[[route]]\npool = \"web\"\n",
                "[[route]]\npath_prefix = \"/api\"\npool = \"spare\"\n\n[[route]]\nhost = \"api.example.com\"\npath_prefix = \"/api\"\npool = \"web\"\n",
            ),
        ),
        Case {
            rule: "admin-off-loopback",
            files: &[("admin.token", GOOD_TOKEN)],
            triggers: format!("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_file = \"admin.token\"\n\n{}", web("", TWO)),
            at: "|[admin]",
            clean: format!("[admin]\nlisten = \"127.0.0.1:9901\"\ntoken_file = \"admin.token\"\n\n{}", web("", TWO)),
        },
        Case {
            rule: "admin-token-missing",
            files: &[("admin.token", GOOD_TOKEN), ("short.token", "0123456789abcde\n")],
            triggers: format!("[admin]\ntoken_file = \"short.token\"\n\n{}", web("", TWO)),
            at: "token_file = |\"short",
            clean: format!("[admin]\ntoken_file = \"admin.token\"\n\n{}", web("", TWO)),
        },
        Case {
            rule: "admin-token-missing",
            files: &[("admin.token", GOOD_TOKEN)],
            triggers: format!("[admin]\ntoken_file = \"missing.token\"\n\n{}", web("", TWO)),
            at: "token_file = |\"missing",
            clean: format!("[admin]\ntoken_file = \"admin.token\"\n\n{}", web("", TWO)),
        },
        case(
            "etcd-credentials-in-clear",
            format!("{}[store]\nkind = \"etcd\"\nendpoints = [\"http://10.0.0.5:2379\"]\nprefix = \"/f\"\nuser = \"lb\"\npassword_file = \"etcd.password\"\n", web("", TWO)),
            "|[store]",
            format!("{}[store]\nkind = \"etcd\"\nendpoints = [\"https://10.0.0.5:2379\"]\nprefix = \"/f\"\nuser = \"lb\"\npassword_file = \"etcd.password\"\n", web("", TWO)),
        ),
        case(
            "certificate-expired",
            https("", "cert = \"expired.pem\", key = \"expired.key\""),
            "[|{ cert = \"expired",
            https("", "cert = \"site.pem\", key = \"site.key\""),
        ),
        case(
            "certificate-key-mismatch",
            https("", "cert = \"site.pem\", key = \"other.key\""),
            "[|{ cert = \"site.pem\", key = \"other",
            https("", "cert = \"site.pem\", key = \"site.key\""),
        ),
        case(
            "certificate-expiring",
            https("", "cert = \"expiring.pem\", key = \"expiring.key\""),
            "[|{ cert = \"expiring",
            https("", "cert = \"site.pem\", key = \"site.key\""),
        ),
        case(
            "certificate-host-uncovered",
            https("host = \"shop.example.org\"\n", "cert = \"site.pem\", key = \"site.key\""),
            "|[[route]]",
            https("host = \"www.shop.example\"\n", "cert = \"site.pem\", key = \"site.key\""),
        ),
        case(
            "tls-min-version",
            https_with("min_version = \"1.1\"", ""),
            "min_version = |\"1.1",
            https_with("min_version = \"1.3\"", ""),
        ),
        case(
            "backend-tls-unverified",
            web("tls = { sni = \"api.internal\", verify = false }\n", TWO),
            "verify = |false",
            web("tls = { sni = \"api.internal\", verify = true }\n", TWO),
        ),
        case(
            "backend-tls-unverified",
            web("tls = { verify = false, ca = \"ca.pem\" }\n", TWO),
            "verify = |false",
            web("tls = { ca = \"ca.pem\" }\n", TWO),
        ),
    ]
}

/// An HTTPS listener serving the certificate `pair`, its route (with `route`
/// lines) and pool "web".
fn https(route: &str, pair: &str) -> String {
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8443\"\ntls = {{ certificates = [{{ {pair} }}] }}\n\n[[route]]\n{route}pool = \"web\"\n\n[pool.web]\n{TWO}\n{WEB_HEALTH}"
    )
}

/// An HTTPS listener serving `site.pem` with `setting` beside `certificates`.
fn https_with(setting: &str, _route: &str) -> String {
    https("", "cert = \"site.pem\", key = \"site.key\"").replace(
        "tls = { certificates",
        &format!("tls = {{ {setting}, certificates"),
    )
}

/// Writes the certificates the TLS cases and the docs examples name, for the names
/// `shop.example` and `*.shop.example`: `site.pem` (valid for 90 more days) with
/// `site.key`, `expired.pem`/`.key` (ended yesterday), `expiring.pem`/`.key` (10 days
/// left), `other.key` (a key of no certificate), and `ca.pem` (a CA bundle for
/// backend TLS).
pub(crate) fn write_certificates(dir: &Path) {
    let day = time::Duration::days(1);
    let now = time::OffsetDateTime::now_utc();
    for (name, from, to) in [
        ("site", now - day, now + 90 * day),
        ("expired", now - 90 * day, now - day),
        ("expiring", now - 80 * day, now + 10 * day),
    ] {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["shop.example".into(), "*.shop.example".into()])
                .expect("params");
        params.not_before = from;
        params.not_after = to;
        let cert = params.self_signed(&key).expect("certificate");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    }
    let other = rcgen::KeyPair::generate().expect("key");
    std::fs::write(dir.join("other.key"), other.serialize_pem()).expect("write");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&other).expect("CA certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
}

/// Checks `text` as `lb.toml` in `dir`, with `files` beside it (and the certificates
/// of [`write_certificates`] when it names any).
fn check_in(dir: &Path, files: &[(&str, &str)], text: &str) -> Checked {
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents).expect("write a test file");
    }
    if text.contains(".pem\"") && !dir.join("site.pem").exists() {
        write_certificates(dir);
    }
    check_source(Source {
        path: dir.join("lb.toml"),
        text: text.to_string(),
    })
}

/// (rule, line, column) of every lint finding (warnings, and the lint rules that are
/// errors); the config must have passed validation.
fn warnings(checked: &Checked) -> Vec<(&'static str, usize, usize)> {
    assert!(checked.config.is_some(), "{:#?}", checked.findings);
    checked
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning || super::rule(f.rule).is_some())
        .map(|f| {
            let at = checked.source.locate(f.span.clone().unwrap_or(0..0).start);
            (f.rule, at.line, at.column)
        })
        .collect()
}

/// Line and column where the `|` of `at` falls in `text`.
fn position(text: &str, at: &str) -> (usize, usize) {
    let (before, after) = at.split_once('|').expect("`at` marks the spot with |");
    let needle = format!("{before}{after}");
    assert_eq!(
        text.matches(&needle).count(),
        1,
        "{needle:?} must occur once in:\n{text}"
    );
    let offset = text.find(&needle).unwrap_or(0) + before.len();
    let source = Source {
        path: "x".into(),
        text: text.to_string(),
    };
    let at = source.locate(offset);
    (at.line, at.column)
}

#[test]
fn every_rule_fires_alone_at_the_offending_value_and_not_on_a_close_config() {
    for case in cases() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let found = warnings(&check_in(dir.path(), case.files, &case.triggers));
        let (line, column) = position(&case.triggers, case.at);
        assert!(
            found.contains(&(case.rule, line, column)),
            "{} should fire at {line}:{column} in:\n{}\nfound {found:?}",
            case.rule,
            case.triggers
        );
        assert!(
            found.iter().all(|(rule, _, _)| *rule == case.rule),
            "only {} should fire in:\n{}\nfound {found:?}",
            case.rule,
            case.triggers
        );
        let found = warnings(&check_in(dir.path(), case.files, &case.clean));
        assert!(
            found.is_empty(),
            "nothing should fire in this close config for {}:\n{}\nfound {found:?}",
            case.rule,
            case.clean
        );
    }
}

#[test]
fn every_rule_has_a_case() {
    let cases = cases();
    for rule in RULES {
        assert!(
            cases.iter().any(|c| c.rule == rule.name),
            "{} has no case",
            rule.name
        );
    }
}

#[test]
fn load_ratio_and_near_zero_weight_follow_guard_and_capacity() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let skewed = web(
        "algorithm = \"weighted_round_robin\"\n",
        "backends = [{ address = \"127.0.0.1:9001\", weight = 5 }, { address = \"127.0.0.1:9002\" }, { address = \"127.0.0.1:9003\" }]",
    );
    let rules = |text: &str| -> Vec<&'static str> {
        warnings(&check_in(dir.path(), &[], text))
            .into_iter()
            .map(|(r, _, _)| r)
            .collect()
    };
    assert_eq!(rules(&skewed), ["load-ratio"]);
    // 5/7 of the traffic on a third of the capacity is a load ratio of 2.14.
    assert!(rules(&format!("{skewed}[guard]\nmax_load_ratio = 2.2\n")).is_empty());
    // least_connections follows the weights too.
    let least = skewed.replace("weighted_round_robin", "least_connections");
    assert_eq!(rules(&least), ["load-ratio"]);
    // A weight of zero is out on purpose: neither rule counts it.
    let zero = skewed.replace("9003\" }", "9003\", weight = 0 }");
    assert!(rules(&zero).is_empty(), "{:?}", rules(&zero));
    // A small canary with a small declared capacity is fine.
    let canary = web(
        "algorithm = \"weighted_round_robin\"\n",
        "backends = [{ address = \"127.0.0.1:9001\", weight = 1, capacity = 0.01 }, { address = \"127.0.0.1:9002\", weight = 100 }]",
    );
    assert!(rules(&canary).is_empty(), "{:?}", rules(&canary));
    // round_robin ignores weights, so a tiny weight does not leave a backend out.
    let rr = canary
        .replace("algorithm = \"weighted_round_robin\"\n", "")
        .replace(", capacity = 0.01", "");
    assert_eq!(rules(&rr), ["weights-ignored"]);
}

#[test]
fn the_split_comes_from_the_balancer_with_every_backend_usable() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let text = web(
        "algorithm = \"weighted_round_robin\"\n",
        "backends = [{ address = \"127.0.0.1:9001\", weight = 2, capacity = 2 }, { address = \"127.0.0.1:9002\" }, { address = \"127.0.0.1:9003\", weight = 0 }]",
    );
    let config = check_in(dir.path(), &[], &text).config.expect("valid");
    let split = split(&config.pools[0]);
    let expect = [(2.0 / 3.0, 2.0 / 3.0), (1.0 / 3.0, 1.0 / 3.0), (0.0, 0.0)];
    for (got, (intended, capacity)) in split.iter().zip(expect) {
        assert!((got.intended_share - intended).abs() < 1e-9, "{split:?}");
        assert!((got.capacity_share - capacity).abs() < 1e-9, "{split:?}");
    }
    assert!((split[0].load_ratio() - 1.0).abs() < 1e-9);
    let out = BackendSplit {
        intended_share: 0.0,
        capacity_share: 0.0,
    };
    assert_eq!(out.load_ratio(), 0.0);
}

#[test]
fn a_token_the_lint_accepts_is_one_the_admin_api_accepts() {
    let dir = tempfile::tempdir().expect("temporary folder");
    for token in [
        "0123456789abcde",
        "0123456789abcdef",
        "  0123456789abcdef \n",
    ] {
        let config = format!("[admin]\ntoken_file = \"t\"\n\n{}", web("", TWO));
        let checked = check_in(dir.path(), &[("t", token)], &config);
        let lint_ok = warnings(&checked).is_empty();
        let admin_ok = crate::admin::read_token(&dir.path().join("t")).is_ok();
        assert_eq!(lint_ok, admin_ok, "token {token:?}");
    }
}

/// docs/lints.md shows, for every rule, a config that triggers it (its first `toml`
/// block): each must trigger that rule and nothing else, or the docs lie.
#[test]
fn every_docs_example_triggers_its_rule() {
    let doc = include_str!("../../../docs/lints.md");
    let mut seen = Vec::new();
    for section in doc.split("\n## `").skip(1) {
        let rule = section.split('`').next().unwrap_or_default();
        let example = section
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_else(|| panic!("docs/lints.md: {rule} has no example"));
        let dir = tempfile::tempdir().expect("temporary folder");
        // The admin-off-loopback example assumes a good token beside it.
        let found = warnings(&check_in(
            dir.path(),
            &[("admin.token", GOOD_TOKEN)],
            example,
        ));
        assert!(
            !found.is_empty() && found.iter().all(|(r, _, _)| *r == rule),
            "docs/lints.md: the example of {rule} should trigger it alone, found {found:?}"
        );
        seen.push(rule.to_string());
    }
    let names: Vec<String> = RULES.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(
        seen, names,
        "docs/lints.md lists every rule, in `explain` order"
    );
}
