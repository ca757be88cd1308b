//! `evenkeel preflight` as a process: stand-in backends, real load, real failures.

use std::time::Duration;

use crate::util::{run_bounded, Dir};

const LIMIT: Duration = Duration::from_secs(90);

fn preflight(config: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let dir = Dir::new();
    let path = dir.write("evenkeel.toml", config);
    let mut args = vec![
        "preflight",
        "-c",
        path.to_str().unwrap(),
        "--requests",
        "600",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = run_bounded(&args, LIMIT);
    let json = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr));
    (out.code, json, out.stderr)
}

const LISTENER: &str = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n";
const HEALTH: &str = "path = \"/healthz\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\n";

fn failures(report: &serde_json::Value) -> Vec<String> {
    report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_even_config_passes_and_reports_every_backend() {
    let config = format!(
        "{LISTENER}[[route]]\npool = \"web\"\n[pool.web]\nalgorithm = \"weighted_round_robin\"\n\
         backends = [{{ address = \"192.0.2.1:80\" }}, {{ address = \"192.0.2.2:80\" }}, {{ address = \"192.0.2.3:80\", weight = 2, capacity = 2 }}]\n\
         [pool.web.health]\n{HEALTH}"
    );
    let (code, report, stderr) = preflight(&config, &[]);
    assert_eq!(code, Some(0), "{report:#}{stderr}");
    assert_eq!(report["passed"], true);
    let pool = &report["pools"][0];
    assert_eq!(pool["errors"], 0);
    let shares: Vec<f64> = pool["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["observed_share"].as_f64().unwrap())
        .collect();
    assert!((shares[2] - 0.5).abs() < 0.02, "{shares:?}");
    assert_eq!(
        pool["failover"]["failed_backend"], "192.0.2.3:80",
        "the largest intended share is failed"
    );
    assert_eq!(pool["failover"]["errors"], 0);
}

#[test]
fn weights_that_pile_traffic_on_one_backend_fail_on_its_load_ratio() {
    let config = format!(
        "{LISTENER}[[route]]\npool = \"web\"\n[pool.web]\nalgorithm = \"weighted_round_robin\"\n\
         backends = [{{ address = \"192.0.2.1:80\", weight = 10 }}, {{ address = \"192.0.2.2:80\" }}, {{ address = \"192.0.2.3:80\" }}]\n\
         [pool.web.health]\n{HEALTH}"
    );
    let (code, report, _) = preflight(&config, &[]);
    assert_eq!(code, Some(1));
    let found = failures(&report);
    assert!(
        found
            .iter()
            .any(|f| f.contains("backend 192.0.2.1:80 of pool \"web\" is overloaded")),
        "{found:?}"
    );
}

#[test]
fn a_single_backend_pool_fails_the_failure_step() {
    let config = format!("{LISTENER}[[route]]\npool = \"api\"\n[pool.api]\nbackends = [{{ address = \"192.0.2.9:80\" }}]\n[pool.api.health]\n{HEALTH}");
    let (code, report, _) = preflight(&config, &[]);
    assert_eq!(code, Some(1));
    let found = failures(&report);
    assert!(
        found
            .iter()
            .any(|f| f.contains("pool \"api\" has a single backend and no backup pool")),
        "{found:?}"
    );
}

#[test]
fn a_pool_that_keeps_sending_to_its_failed_backend_fails() {
    let config = format!(
        "{LISTENER}[[route]]\npool = \"web\"\n[pool.web]\nretries = {{ attempts = 0 }}\n\
         backends = [{{ address = \"192.0.2.1:80\" }}, {{ address = \"192.0.2.2:80\" }}]\n[pool.web.outlier]\nconsecutive_failures = 0\n"
    );
    let (code, report, _) = preflight(&config, &[]);
    assert_eq!(code, Some(1));
    let found = failures(&report);
    assert!(
        found
            .iter()
            .any(|f| f
                .contains("pool \"web\" kept sending traffic to its failed backend 192.0.2.1:80")),
        "{found:?}"
    );
    assert!(
        report["pools"][0]["failover"]["tries_to_failed_backend"]
            .as_u64()
            .unwrap()
            > 100
    );
}

#[test]
fn a_hashed_pool_reports_the_share_carrying_its_key_and_the_lint_when_most_lack_it() {
    let config = format!(
        "{LISTENER}[[route]]\npool = \"cache\"\n[pool.cache]\nalgorithm = \"consistent_hash\"\nhash_key = \"header:x-user\"\n\
         backends = [{{ address = \"192.0.2.1:80\" }}, {{ address = \"192.0.2.2:80\" }}, {{ address = \"192.0.2.3:80\" }}]\n\
         [pool.cache.health]\n{HEALTH}"
    );
    let (code, report, _) = preflight(&config, &["--key-missing", "80"]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["pools"][0]["key"]["hash_key"], "header:x-user");
    assert_eq!(report["pools"][0]["key"]["carried_percent"], 20.0);
    let lint = report["hash_key_findings"].as_array().unwrap();
    assert!(
        lint.iter()
            .any(|l| l.as_str().unwrap().contains("hash-key-may-be-missing")),
        "{report:#}"
    );
}

#[test]
fn a_config_with_errors_is_not_load_tested() {
    let dir = Dir::new();
    let path = dir.write(
        "evenkeel.toml",
        &format!("{LISTENER}[[route]]\npool = \"nope\"\n"),
    );
    let out = run_bounded(&["preflight", "-c", path.to_str().unwrap()], LIMIT);
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.contains("error[unknown-pool]"), "{}", out.stdout);
}

/// A pool that speaks HTTP/2 to its backends (here h2 over TLS, with a CA file that
/// is not needed): the stand-ins speak HTTP/2 in clear text, the pool's `tls` left
/// out, and the preflight measures its balance like any other's.
#[test]
fn an_http2_pool_is_preflighted_against_http2_stand_ins() {
    let config = format!(
        "{LISTENER}[[route]]\npool = \"api\"\n[pool.api]\nprotocol = \"h2\"\n\
         tls = {{ sni = \"api.internal\", verify = false }}\n\
         backends = [{{ address = \"192.0.2.1:443\" }}, {{ address = \"192.0.2.2:443\" }}]\n\
         [pool.api.health]\n{HEALTH}"
    );
    let (code, report, stderr) = preflight(&config, &[]);
    assert_eq!(code, Some(0), "{report:#}{stderr}");
    let pool = &report["pools"][0];
    assert_eq!(pool["errors"], 0, "{report:#}");
    let shares: Vec<f64> = pool["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["observed_share"].as_f64().unwrap())
        .collect();
    assert!((shares[0] - 0.5).abs() < 0.02, "{shares:?}");
}
