//! contrib/prometheus and contrib/grafana against the real programs: `promtool` checks
//! the rules and the example config and runs the rules' unit tests; then a real
//! Prometheus, started on the example config, scrapes a real `serve` under traffic —
//! one pool with no usable backend, one config change the guard rolls back — and every
//! expression of the rules and of the dashboard is evaluated against it. Each must
//! evaluate, each dashboard expression must return data, and each metric they name
//! must have a series: a renamed metric or label breaks the build, not a dashboard in
//! production.
//!
//! `prometheus` and `promtool` come from Debian's `prometheus` package (.ci/run
//! installs it); without them these tests fail, they do not skip.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use evenkeel::monitor::alarms::Kind;
use http::{Method, Request};
use serde_json::Value;

use crate::util::{
    eventually, full, read_response, Backend, Client, Dir, Load, Proxy, ADMIN_TOKEN,
};
use crate::watch::dead_port;

/// A file of the checkout.
fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

/// Runs `program ARGS`; fails the test if it cannot start (not installed).
fn run_tool(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{program} could not run ({e}): install Debian's prometheus package (.ci/run does)"
            )
        })
}

/// Runs `promtool ARGS`; its exit status and everything it printed.
fn promtool(args: &[&str]) -> (bool, String) {
    let out = run_tool("promtool", args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_checks_the_rules_and_the_example_config_and_runs_the_rules_unit_tests() {
    let alerts = contrib("prometheus/alerts.yml");
    let tests = contrib("prometheus/alerts.test.yml");
    let config = contrib("prometheus/prometheus.yml");
    for args in [
        ["check", "rules", alerts.to_str().expect("path")],
        ["test", "rules", tests.to_str().expect("path")],
        ["check", "config", config.to_str().expect("path")],
    ] {
        let (ok, text) = promtool(&args);
        assert!(ok && text.contains("SUCCESS"), "promtool {args:?}:\n{text}");
    }
    // The unit tests bite: with all_down alerting whether or not a backup took over,
    // they fail.
    let dir = Dir::new();
    let rules = std::fs::read_to_string(&alerts).expect("alerts.yml");
    let broken = rules.replace(
        "unless on (job, instance, pool)",
        "or on (job, instance, pool)",
    );
    assert_ne!(broken, rules, "the all_down rule changed shape");
    dir.write("alerts.yml", &broken);
    let copy = dir.write(
        "alerts.test.yml",
        &std::fs::read_to_string(&tests).expect("alerts.test.yml"),
    );
    let (ok, text) = promtool(&["test", "rules", copy.to_str().expect("path")]);
    assert!(
        !ok && text.contains("EvenkeelPoolAllDown"),
        "a broken rule passed its tests:\n{text}"
    );
}

/// A `prometheus` process on a temporary config and storage folder; killed (by its
/// PID) when dropped, and the folder removed.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: Dir,
}

impl Prometheus {
    /// Starts `prometheus` on `config` (YAML) on a free loopback port, and waits until
    /// it is ready.
    fn start(config: &str) -> Prometheus {
        let mut dir = Dir::new();
        let config_path = dir.write("prometheus.yml", config);
        // Another process may take the free port before Prometheus binds it: try again.
        for _ in 0..3 {
            let addr = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port");
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("prometheus could not start ({e}): install Debian's prometheus package (.ci/run does)")
                });
            let mut prometheus = Prometheus { child, addr, dir };
            let ready = eventually(Duration::from_secs(20), || {
                prometheus.exited() || get(addr, "/-/ready").is_ok_and(|(code, _)| code == 200)
            });
            if ready && !prometheus.exited() {
                return prometheus;
            }
            let log = prometheus.log();
            assert!(
                log.contains("address already in use"),
                "prometheus did not become ready:\n{log}"
            );
            dir = std::mem::replace(&mut prometheus.dir, Dir::new());
        }
        panic!("prometheus found no free port in 3 tries");
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/PATH`: its `data`, or the error Prometheus gave.
    fn api(&self, path: &str) -> Result<Value, String> {
        let (code, body) = get(self.addr, &format!("/api/v1/{path}"))?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("{code}: {e}: {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("{code}: {answer}"));
        }
        Ok(answer["data"].clone())
    }

    /// The instant vector (or scalar) `query` evaluates to now.
    fn query(&self, query: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("query?query={}", percent_encode(query)))?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar") => Ok(vec![data["result"].clone()]),
            other => Err(format!("{query}: a {other:?}, not an instant vector")),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTP/1.0 (so the body ends when the connection closes): the status
/// and the body.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n").map_err(|e| e.to_string())?;
    let reply = read_response(&mut stream);
    let body = reply
        .text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body);
    Ok((reply.status.unwrap_or(0), body.to_string()))
}

/// `text` for a URL's query string: every byte but the unreserved ones as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The metric names `query` mentions: identifiers outside quotes that start with
/// `evenkeel_`, and `up`.
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' {
            // Skip the string, escapes included.
            while let Some(s) = chars.next() {
                if s == '\\' {
                    chars.next();
                } else if s == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut word = c.to_string();
            while let Some(&next) = chars.peek() {
                if !(next.is_ascii_alphanumeric() || next == '_' || next == ':') {
                    break;
                }
                word.push(next);
                chars.next();
            }
            if word.starts_with("evenkeel_") || word == "up" {
                names.insert(word);
            }
        } else if c.is_ascii_digit() {
            // A number or a duration (`5m`, `1e3`): not a name.
            while chars.peek().is_some_and(|n| n.is_ascii_alphanumeric()) {
                chars.next();
            }
        }
    }
    names
}

/// The Grafana variables the dashboard uses, as Grafana would fill them in for a
/// dashboard showing the last minute of every instance and every pool.
const GRAFANA_VARIABLES: [(&str, &str); 5] = [
    ("__rate_interval", "30s"),
    ("__interval", "1m"),
    ("__range", "1m"),
    ("instance", ".+"),
    ("pool", ".+"),
];

/// `expr` with the Grafana variables filled in; fails the test on one it does not know.
fn fill_in(expr: &str) -> String {
    let mut filled = expr.to_string();
    for (name, value) in GRAFANA_VARIABLES {
        filled = filled
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(!filled.contains('$'), "an unknown variable in {expr}");
    filled
}

/// Every string under a key `expr` in `value`, with where it is (panel or annotation
/// title).
fn expressions(value: &Value, place: &str, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            let place = map
                .get("title")
                .or_else(|| map.get("name"))
                .and_then(Value::as_str)
                .unwrap_or(place);
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", Value::String(expr)) => found.push((place.to_string(), expr.clone())),
                    _ => expressions(inner, place, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| expressions(i, place, found)),
        _ => {}
    }
}

/// `POST /config` with the token; the status and the answer.
fn post_config(proxy: &Proxy, text: &str) -> (u16, String) {
    let mut client = Client::connect(proxy.admin.expect("admin listener"));
    let reply = client.send(
        Request::builder()
            .method(Method::POST)
            .uri("/config")
            .header("host", "admin")
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(full(text.to_string()))
            .expect("request"),
    );
    (reply.status.as_u16(), reply.text())
}

/// evenkeel's config: pool `web` on `web`, and pool `down` whose one backend refuses
/// connections, so its active checks find it unhealthy and `all_down/down` holds.
fn config(web: &[String], down: &str) -> String {
    let web: Vec<String> = web
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\npath_prefix = \"/down\"\npool = \"down\"\n\n\
         [[route]]\npool = \"web\"\n\n\
         [guard]\nwatch = \"20s\"\nmin_requests = 50\n\n\
         [pool.web]\nbackends = [{}]\n\n\
         [pool.down]\nbackends = [{{ address = \"{down}\" }}]\n\
         [pool.down.health]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n",
        web.join(", ")
    )
}

#[test]
fn a_real_prometheus_evaluates_every_rule_and_dashboard_expression_against_serve() {
    let started = Instant::now();
    let backends = [Backend::start("web-1"), Backend::start("web-2")];
    let addresses: Vec<String> = backends.iter().map(Backend::address).collect();
    let down = dead_port();
    let proxy = Proxy::start_with_admin(&config(&addresses, &down), 1);
    let admin = proxy.admin.expect("admin listener");
    let web_load = Load::start(proxy.addr(), 2, "/", Duration::from_millis(5));
    let down_load = Load::start(proxy.addr(), 1, "/down/x", Duration::from_millis(20));

    // The example config, scraping this evenkeel every second with the rules beside it.
    let example = std::fs::read_to_string(contrib("prometheus/prometheus.yml")).expect("config");
    let mut scrape_config = example.clone();
    for (from, to) in [
        ("scrape_interval: 10s", "scrape_interval: 1s".to_string()),
        (
            "evaluation_interval: 10s",
            "evaluation_interval: 1s".to_string(),
        ),
        ("\"127.0.0.1:9901\"", format!("\"{admin}\"")),
        (
            "- alerts.yml",
            format!("- {}", contrib("prometheus/alerts.yml").display()),
        ),
    ] {
        assert_eq!(
            example.matches(from).count(),
            1,
            "{from:?} in prometheus.yml"
        );
        scrape_config = scrape_config.replace(from, &to);
    }
    let prometheus = Prometheus::start(&scrape_config);

    // Scraped, and evenkeel's all_down alarm seen.
    let seen = eventually(Duration::from_secs(15), || {
        prometheus
            .query("evenkeel_alarm_active{kind=\"all_down\", pool=\"down\"}")
            .is_ok_and(|r| !r.is_empty())
    });
    assert!(
        seen,
        "Prometheus never saw the all_down alarm: up = {:?}\n{}",
        prometheus.query("up"),
        prometheus.log()
    );

    // A change the guard rolls back (the web pool pointed at a dead port): the config
    // version changes twice, and the rollback counter once.
    let (code, answer) = post_config(&proxy, &config(&[dead_port()], &down));
    assert_eq!(code, 200, "{answer}");
    let rolled_back = eventually(Duration::from_secs(15), || {
        prometheus
            .query("evenkeel_guard_rollbacks_total > 0")
            .is_ok_and(|r| !r.is_empty())
    });
    assert!(
        rolled_back,
        "the guard never rolled back: {}",
        proxy.stderr()
    );

    // The rules: every one loaded, evaluated without error, and covering every kind of
    // alarm evenkeel raises.
    let rules_text = std::fs::read_to_string(contrib("prometheus/alerts.yml")).expect("rules");
    let in_file = rules_text
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let mut rules: Vec<Value> = Vec::new();
    let evaluated = eventually(Duration::from_secs(10), || {
        rules = prometheus
            .api("rules")
            .ok()
            .and_then(|d| d["groups"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules.len() == in_file && rules.iter().all(|r| r["health"] == "ok")
    });
    assert!(
        evaluated,
        "{in_file} rules in alerts.yml; Prometheus has: {rules:#?}"
    );
    let queries: Vec<(String, String)> = rules
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["query"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (name, query) in &queries {
        if let Err(e) = prometheus.query(query) {
            panic!("rule {name}: {query} fails: {e}");
        }
    }
    for kind in Kind::ALL.iter().filter(|k| **k != Kind::Guard) {
        let matcher = format!("kind=\"{}\"", kind.name());
        assert!(
            queries.iter().any(|(_, q)| q.contains(&matcher)),
            "no rule alerts on {matcher}"
        );
    }
    let catch_all = queries
        .iter()
        .find_map(|(_, q)| q.split_once("kind!~\""))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(kinds, _)| kinds.split('|').collect::<BTreeSet<_>>())
        .expect("a catch-all rule on the kinds not named");
    let known: BTreeSet<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(catch_all, known, "the catch-all rule's kinds");

    // What holds fires: the pool with no usable backend, and the rollback.
    let firing = |alert: &str, pool: Option<&str>| {
        prometheus
            .api("alerts")
            .ok()
            .and_then(|d| d["alerts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|a| {
                a["labels"]["alertname"] == alert
                    && a["state"] == "firing"
                    && pool.is_none_or(|p| a["labels"]["pool"] == p)
            })
    };
    for (alert, pool) in [
        ("EvenkeelPoolAllDown", Some("down")),
        ("EvenkeelGuardRollback", None),
    ] {
        assert!(
            eventually(Duration::from_secs(10), || firing(alert, pool)),
            "{alert} {pool:?} does not fire: {:#?}",
            prometheus.api("alerts")
        );
    }
    assert!(!firing("EvenkeelDown", None) && !firing("EvenkeelAbsent", None));

    // The dashboard: every panel and annotation expression returns data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(contrib("grafana/evenkeel.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut panel_queries = Vec::new();
    expressions(&dashboard["panels"], "panel", &mut panel_queries);
    expressions(&dashboard["annotations"], "annotation", &mut panel_queries);
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10 && panel_queries.len() > panels.len());
    // Every panel and query reads the data source the importer picks.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(variables.iter().any(|v| v["name"] == "datasource"
        && v["type"] == "datasource"
        && v["query"] == "prometheus"));
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
    }
    let mut empty = Vec::new();
    let answered = eventually(Duration::from_secs(15), || {
        empty.clear();
        for (place, expr) in &panel_queries {
            match prometheus.query(&fill_in(expr)) {
                Ok(result) if result.is_empty() => empty.push(format!("{place}: {expr}")),
                Ok(_) => {}
                Err(e) => panic!("{place}: {expr} fails: {e}"),
            }
        }
        empty.is_empty()
    });
    assert!(answered, "no data for:\n{}", empty.join("\n"));
    // Its variables: label_values(SELECTOR, LABEL) finds values.
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let query = variable["query"].as_str().expect("a query string");
        let (selector, label) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .unwrap_or_else(|| panic!("not label_values(SELECTOR, LABEL): {query}"));
        let label = label.trim();
        let values: BTreeSet<String> = prometheus
            .query(&fill_in(selector))
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .iter()
            .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
            .collect();
        assert!(!values.is_empty(), "{query} finds no value");
        if label == "pool" {
            assert_eq!(values, BTreeSet::from(["down".into(), "web".into()]));
        }
        panel_queries.push((variable["name"].to_string(), selector.to_string()));
    }

    // Every metric the rules and the dashboard name has a series.
    let names: BTreeSet<String> = queries
        .iter()
        .chain(&panel_queries)
        .flat_map(|(_, q)| metric_names(q))
        .collect();
    assert!(names.len() >= 20, "{names:?}");
    for name in &names {
        let series = prometheus
            .query(&format!("count({name})"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !series.is_empty(),
            "no series of {name}, which the rules or the dashboard use"
        );
    }

    web_load.stop();
    down_load.stop();
    eprintln!(
        "{} rules, {} dashboard queries and {} metric names checked in {:?}",
        queries.len(),
        panel_queries.len(),
        names.len(),
        started.elapsed()
    );
}

#[test]
fn metric_names_are_the_identifiers_outside_strings() {
    let names = metric_names(
        r#"sum by (pool) (rate(evenkeel_requests_total{class="5xx", x="evenkeel_no"}[5m])) / on (pool) up{job="evenkeel"} > 1e3"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["evenkeel_requests_total".into(), "up".into()])
    );
}
