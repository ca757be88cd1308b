//! Unit tests of the config diff.

use super::*;
use crate::config::{check_source, Source};

fn config(text: &str) -> Config {
    let checked = check_source(Source {
        path: "t.toml".into(),
        text: text.to_string(),
    });
    checked
        .config
        .unwrap_or_else(|| panic!("invalid test config: {:?}", checked.findings))
}

const BASE: &str = r#"
[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
pool = "web"

[pool.web]
algorithm = "weighted_round_robin"
backends = [
  { address = "127.0.0.1:9001" },
  { address = "127.0.0.1:9002", weight = 2 },
  { address = "127.0.0.1:9003", weight = 3, capacity = 2 },
]
"#;

fn changed(from: &str, to: &str) -> Vec<Change> {
    diff(&config(BASE), &config(&BASE.replacen(from, to, 1)))
}

#[test]
fn identical_configs_have_no_changes() {
    assert_eq!(diff(&config(BASE), &config(BASE)), vec![]);
    // Comments, spacing and spans do not count.
    let reformatted = BASE.replace("[pool.web]", "# the web tier\n\n[pool.web]");
    assert_eq!(diff(&config(BASE), &config(&reformatted)), vec![]);
}

#[test]
fn weight_and_capacity_changes_name_the_backend_and_both_values() {
    let changes = changed(
        "{ address = \"127.0.0.1:9002\", weight = 2 }",
        "{ address = \"127.0.0.1:9002\", weight = 5, capacity = 3 }",
    );
    assert_eq!(
        changes,
        vec![
            Change::WeightChanged {
                pool: "web".into(),
                address: "127.0.0.1:9002".into(),
                before: 2,
                after: 5
            },
            Change::CapacityChanged {
                pool: "web".into(),
                address: "127.0.0.1:9002".into(),
                before: 1.0,
                after: 3.0
            },
        ]
    );
    assert_eq!(
        changes[0].to_string(),
        "pool \"web\": backend 127.0.0.1:9002: weight 2 → 5"
    );
    assert_eq!(changes[0].sign(), '~');
}

#[test]
fn backends_added_and_removed_are_matched_by_address_as_written() {
    let changes = changed(
        "{ address = \"127.0.0.1:9001\" },",
        "{ address = \"localhost:9001\" },",
    );
    assert_eq!(
        changes,
        vec![
            Change::BackendAdded {
                pool: "web".into(),
                address: "localhost:9001".into(),
                weight: 1,
                capacity: 1.0
            },
            Change::BackendRemoved {
                pool: "web".into(),
                address: "127.0.0.1:9001".into(),
                weight: 1,
                capacity: 1.0
            },
        ]
    );
    assert_eq!(changes[0].sign(), '+');
    assert_eq!(changes[1].sign(), '-');
    assert_eq!(changes[1].pool(), Some("web"));
}

#[test]
fn pool_settings_are_reported_with_their_config_names_and_formats() {
    let changes = changed(
        "algorithm = \"weighted_round_robin\"",
        "algorithm = \"consistent_hash\"\nhash_key = \"header:x-user\"\n\
         slow_start = \"30s\"\npanic_threshold = 20\n\
         timeouts = { connect = \"250ms\" }\nretries = { attempts = 2 }\n\
         limits = { max_pending = 10 }",
    );
    let shown: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        shown,
        [
            "pool \"web\": algorithm: weighted_round_robin → consistent_hash",
            "pool \"web\": hash_key: none → header:x-user",
            "pool \"web\": panic_threshold: 50 → 20",
            "pool \"web\": slow_start: 0s → 30s",
            "pool \"web\": timeouts.connect: 1s → 250ms",
            "pool \"web\": retries.attempts: 1 → 2",
            "pool \"web\": limits.max_pending: 100 → 10",
        ]
    );
}

#[test]
fn health_and_outlier_sections_are_compared_field_by_field() {
    let with_health = format!(
        "{BASE}[pool.web.health]\npath = \"/healthz\"\ninterval = \"2s\"\n\
         [pool.web.outlier]\nconsecutive_failures = 5\n"
    );
    let added = diff(&config(BASE), &config(&with_health));
    assert_eq!(
        added,
        vec![Change::PoolChanged {
            pool: "web".into(),
            setting: Setting {
                field: "health".into(),
                before: "none".into(),
                after: "http GET /healthz every 2s, timeout 1s".into()
            }
        }]
    );
    let tuned = with_health
        .replace(
            "path = \"/healthz\"",
            "path = \"/ready\"\nhealthy_after = 3",
        )
        .replace("consecutive_failures = 5", "consecutive_failures = 3");
    let shown: Vec<String> = diff(&config(&with_health), &config(&tuned))
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        shown,
        [
            "pool \"web\": health.path: /healthz → /ready",
            "pool \"web\": health.healthy_after: 2 → 3",
            "pool \"web\": outlier.consecutive_failures: 5 → 3",
        ]
    );
    // Another kind of probe is one change, not one per field it no longer has.
    let tcp = with_health.replace("path = \"/healthz\"", "type = \"tcp\"");
    let shown: Vec<String> = diff(&config(&with_health), &config(&tcp))
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        shown,
        ["pool \"web\": health.type: http GET /healthz → tcp"]
    );
}

#[test]
fn pools_listeners_and_routes_added_removed_and_retargeted() {
    let listeners = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n";
    let web = "[pool.web]\nbackends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\" }]\n";
    let old = config(&format!(
        "{listeners}[[route]]\npool = \"web\"\n\
         [[route]]\npath_prefix = \"/api\"\npool = \"web\"\n{web}\
         [pool.old]\nbackup = \"web\"\nbackends = [{{ address = \"127.0.0.1:9100\" }}]\n"
    ));
    let new = config(&format!(
        "{listeners}[[listener]]\nname = \"internal\"\nlisten = \"127.0.0.1:8081\"\n\
         [[route]]\nlistener = \"public\"\npool = \"web\"\n\
         [[route]]\nlistener = \"public\"\npath_prefix = \"/api\"\npool = \"api\"\n\
         [[route]]\nlistener = \"internal\"\npool = \"api\"\n{web}\
         [pool.api]\nalgorithm = \"least_request\"\n\
         backends = [{{ address = \"127.0.0.1:9200\" }}, {{ address = \"127.0.0.1:9201\" }}]\n"
    ));
    let shown: Vec<String> = diff(&old, &new)
        .iter()
        .map(|c| format!("{} {c}", c.sign()))
        .collect();
    assert_eq!(
        shown,
        [
            "+ listener \"internal\" on 127.0.0.1:8081",
            "+ route listener \"internal\" path / → pool \"api\"",
            "~ route listener \"public\" path /api: pool \"web\" → \"api\"",
            "+ pool \"api\" (least_request, 2 backends)",
            "- pool \"old\" (1 backend)",
        ]
    );
}

#[test]
fn top_level_settings_guard_and_lint_allow() {
    let new = config(&format!(
        "drain_timeout = \"5s\"\n{BASE}\n[guard]\nmax_load_ratio = 1.5\nlatency_floor = \"50ms\"\n\
         [lint.allow]\nsingle-backend-pool = \"legacy\"\n"
    ));
    let shown: Vec<String> = diff(&config(BASE), &new)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        shown,
        [
            "drain_timeout: 30s → 5s",
            "guard.latency_floor: 25ms → 50ms",
            "guard.max_load_ratio: 2 → 1.5",
            "lint.allow.single-backend-pool: none → \"legacy\"",
        ]
    );
}

#[test]
fn admin_limits_are_compared_when_both_have_an_admin_listener() {
    let admin = "[admin]\nlisten = \"127.0.0.1:9901\"\ntoken_file = \"t\"\n";
    let old = config(&format!("{admin}{BASE}"));
    let new = config(&format!(
        "{admin}max_connections = 8\nidle_timeout = \"5s\"\nmetrics_require_token = true\n{BASE}"
    ));
    let shown: Vec<String> = diff(&old, &new).iter().map(|c| c.to_string()).collect();
    assert_eq!(
        shown,
        [
            "admin.max_connections: 64 → 8",
            "admin.idle_timeout: 1m → 5s",
            "admin.metrics_require_token: false → true",
        ]
    );
    // An admin listener appearing is one change, not one per field.
    let shown: Vec<String> = diff(&config(BASE), &new)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
}

#[test]
fn a_certificate_renewed_over_the_same_files_is_a_listener_change() {
    let dir = tempfile::tempdir().expect("temporary folder");
    crate::config::lint::tests::write_certificates(dir.path());
    let text = BASE.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\ntls = { certificates = [{ cert = \"site.pem\", key = \"site.key\" }] }",
    );
    let load = || {
        let checked = crate::config::check_source(Source {
            path: dir.path().join("t.toml"),
            text: text.clone(),
        });
        checked.config.expect("valid")
    };
    let before = load();
    assert_eq!(diff(&before, &load()), vec![]);
    std::fs::copy(dir.path().join("expiring.pem"), dir.path().join("site.pem")).expect("copy");
    std::fs::copy(dir.path().join("expiring.key"), dir.path().join("site.key")).expect("copy");
    let after = load();
    assert_ne!(before.identity(), after.identity());
    let changes = diff(&before, &after);
    assert_eq!(changes.len(), 1, "{changes:?}");
    let Change::ListenerChanged { name, setting } = &changes[0] else {
        panic!("{changes:?}");
    };
    assert_eq!(
        (name.as_str(), setting.field.as_str()),
        ("public", "tls.certificates")
    );
}
