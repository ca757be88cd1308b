//! `GET /metrics` on the real `serve` process: real backends, a known number of
//! requests, the exposition parsed as Prometheus would and its counts checked against
//! what the client and the backends saw.

use std::collections::HashMap;

use http::{Method, Request, StatusCode};
use prometheus_parse::{Sample, Scrape, Value};

use std::time::Duration;

use crate::util::{empty, eventually, full, Answer, Backend, Client, Proxy, ADMIN_TOKEN};

/// One scrape of `/metrics`, parsed.
struct Metrics {
    samples: Vec<Sample>,
    text: String,
}

impl Metrics {
    /// `GET /metrics` without a token: 200, OpenMetrics text, parsed; every sample line
    /// must have been understood by the parser.
    fn scrape(proxy: &Proxy) -> Metrics {
        let mut client = Client::connect(proxy.admin.expect("admin listener"));
        let reply = client.send(
            Request::get("/metrics")
                .header("host", "admin")
                .body(empty())
                .expect("request"),
        );
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let content_type = reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = reply.text();
        assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("the exposition does not parse: {e}\n{text}"));
        // The parser skips lines it does not understand; so every sample line must be
        // in a parsed sample (a histogram's buckets are one sample).
        let sample_lines = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        let parsed: usize = scrape
            .samples
            .iter()
            .map(|s| match &s.value {
                Value::Histogram(buckets) => buckets.len(),
                _ => 1,
            })
            .sum();
        assert_eq!(parsed, sample_lines, "some lines did not parse:\n{text}");
        Metrics {
            samples: scrape.samples,
            text,
        }
    }

    /// The samples named `name` whose labels include every pair of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.metric == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
        })
    }

    /// The sum of the values of the matching samples (0 when none match).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => panic!("{name} is a histogram"),
            })
            .sum()
    }

    /// The value of the one matching sample.
    fn one(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.matching(name, labels).count();
        assert_eq!(
            found, 1,
            "{name} {labels:?}: {found} samples in\n{}",
            self.text
        );
        self.sum(name, labels)
    }

    /// The cumulative `(le, count)` buckets of histogram `name` for `labels`.
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let mut found = self.matching(name, labels);
        match found.next().map(|s| &s.value) {
            Some(Value::Histogram(buckets)) => {
                buckets.iter().map(|b| (b.less_than, b.count)).collect()
            }
            other => panic!("{name} {labels:?} is not one histogram: {other:?}"),
        }
    }
}

/// `METHOD path` on the admin API with the token and `body`.
fn admin(proxy: &Proxy, method: Method, path: &str, body: &str) -> (StatusCode, String) {
    let mut client = Client::connect(proxy.admin.expect("admin listener"));
    let reply = client.send(
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(full(body.to_string()))
            .expect("request"),
    );
    (reply.status, reply.text())
}

/// Sends `GET path` `n` times on one connection; the statuses seen, counted.
fn send(client: &mut Client, path: &str, n: usize) -> HashMap<u16, u64> {
    let mut statuses = HashMap::new();
    for _ in 0..n {
        *statuses
            .entry(client.get(path).status.as_u16())
            .or_insert(0) += 1;
    }
    statuses
}

#[test]
fn metrics_count_every_try_as_the_client_and_the_backends_saw_it_and_need_no_token() {
    let ok = Backend::start("ok");
    let unavailable = Backend::start("unavailable");
    unavailable.set_answer(Answer::Status(503));
    let mut dead = Backend::start("dead");
    dead.stop();
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\npath_prefix = \"/dead\"\npool = \"dead\"\n\n\
         [[route]]\npool = \"web\"\n\n\
         [pool.web]\nretries = {{ attempts = 0 }}\n\
         backends = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n\n\
         [pool.dead]\nretries = {{ attempts = 0 }}\nbackends = [{{ address = \"{}\" }}]\n",
        ok.address(),
        unavailable.address(),
        dead.address()
    );
    let proxy = Proxy::start_with_admin(&config, 2);
    let mut client = Client::connect(proxy.addr());
    let web = send(&mut client, "/", 20);
    let failed = send(&mut client, "/dead/x", 6);
    let status = |seen: &HashMap<u16, u64>, code| seen.get(&code).copied().unwrap_or(0) as f64;
    assert_eq!(status(&web, 200) + status(&web, 503), 20.0, "{web:?}");
    assert_eq!(status(&failed, 502), 6.0, "{failed:?}");

    let m = Metrics::scrape(&proxy);
    let pool = |name| [("pool", name)];
    // Every client request was exactly one try (no retries): a response or a failure.
    let tries =
        m.sum("evenkeel_requests_total", &[]) + m.sum("evenkeel_request_failures_total", &[]);
    assert_eq!(tries, 26.0);
    assert_eq!(m.sum("evenkeel_requests_total", &pool("web")), 20.0);
    assert_eq!(m.sum("evenkeel_request_failures_total", &pool("dead")), 6.0);
    assert_eq!(
        m.sum("evenkeel_requests_total", &[("class", "2xx")]),
        status(&web, 200)
    );
    assert_eq!(
        m.sum("evenkeel_requests_total", &[("class", "5xx")]),
        status(&web, 503)
    );
    assert_eq!(m.sum("evenkeel_retries_total", &[]), 0.0);
    assert_eq!(m.sum("evenkeel_retry_budget_exhausted_total", &[]), 0.0);

    for backend in [&ok, &unavailable, &dead] {
        let address = backend.address();
        let this = [("backend", address.as_str())];
        // What the proxy counted is what the backend itself received.
        let responses = m.sum("evenkeel_requests_total", &this);
        assert_eq!(responses, backend.requests() as f64, "{address}");
        // The histogram holds one latency per response, cumulative and consistent.
        let buckets = m.histogram("evenkeel_request_duration_seconds", &this);
        let count = m.one("evenkeel_request_duration_seconds_count", &this);
        assert_eq!(count, responses, "{address}");
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, count)), "{address}");
        assert!(buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let sum = m.one("evenkeel_request_duration_seconds_sum", &this);
        assert!(
            sum >= 0.0 && (count > 0.0 || sum == 0.0),
            "{address}: {sum}"
        );
        assert_eq!(m.one("evenkeel_in_flight_requests", &this), 0.0);
        // No active checks: the verdict is unknown, one-hot.
        assert_eq!(m.sum("evenkeel_backend_health_state", &this), 1.0);
        assert_eq!(
            m.one(
                "evenkeel_backend_health_state",
                &[("backend", address.as_str()), ("state", "unknown")]
            ),
            1.0
        );
    }
    let unavailable_address = unavailable.address();
    let b = [("backend", unavailable_address.as_str())];
    assert!(unavailable.requests() > 0);
    assert_eq!(
        m.sum("evenkeel_requests_total", &[b[0], ("class", "5xx")]),
        unavailable.requests() as f64
    );
    // Five 503s in a row eject it (outlier defaults), and it stays out for 30 s.
    assert_eq!(m.one("evenkeel_backend_ejections_total", &b), 1.0);
    assert_eq!(m.one("evenkeel_backend_ejected", &b), 1.0);
    assert_eq!(m.one("evenkeel_backend_healthy", &b), 0.0);
    let ok_address = ok.address();
    assert_eq!(
        m.one(
            "evenkeel_backend_healthy",
            &[("backend", ok_address.as_str())]
        ),
        1.0
    );
    let dead_address = dead.address();
    assert_eq!(dead.requests(), 0);
    assert_eq!(
        m.one(
            "evenkeel_request_failures_total",
            &[("backend", dead_address.as_str())]
        ),
        status(&failed, 502)
    );
    // The keep-alive connections to the two live backends stay open.
    assert!(m.one("evenkeel_upstream_connections", &[]) >= 1.0);

    // Version 1 from the file at start; a POST /config (with the token) makes it 2.
    assert_eq!(m.one("evenkeel_config_version", &[]), 1.0);
    let applied = |m: &Metrics, origin| {
        m.one(
            "evenkeel_config_applies_total",
            &[("origin", origin), ("outcome", "applied")],
        )
    };
    assert_eq!(applied(&m, "start"), 1.0);
    assert_eq!(applied(&m, "api"), 0.0);
    let text = std::fs::read_to_string(proxy.dir().join("evenkeel.toml")).expect("config");
    let (code, body) = admin(
        &proxy,
        Method::POST,
        "/config",
        &format!("{text}\n# version two\n"),
    );
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = admin(&proxy, Method::POST, "/config", "[pool.web]\nbroken = 1\n");
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let after = Metrics::scrape(&proxy);
    assert_eq!(after.one("evenkeel_config_version", &[]), 2.0);
    assert_eq!(applied(&after, "api"), 1.0);
    assert_eq!(applied(&after, "start"), 1.0);
    assert_eq!(
        after.one(
            "evenkeel_config_applies_total",
            &[("origin", "api"), ("outcome", "refused")]
        ),
        1.0
    );
    assert_eq!(after.sum("evenkeel_guard_rollbacks_total", &[]), 0.0);
    // The counters survived the reload.
    assert_eq!(
        after.sum(
            "evenkeel_requests_total",
            &[("backend", ok_address.as_str())]
        ),
        ok.requests() as f64
    );

    // /metrics is open; the rest of the admin API still wants the token.
    let mut anonymous = Client::connect(proxy.admin.expect("admin listener"));
    let status = anonymous.send(
        Request::get("/status")
            .header("host", "admin")
            .body(empty())
            .expect("request"),
    );
    assert_eq!(status.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn retries_and_budget_refusals_are_counted_per_pool() {
    let ok = Backend::start("ok");
    let mut dead = Backend::start("dead");
    dead.stop();
    // A budget of 1% allows the minimum of 3 retries in ten seconds; ejection is off,
    // so the dead backend keeps getting its share.
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\npool = \"web\"\n\n\
         [pool.web]\nretries = {{ attempts = 1, budget_percent = 1 }}\n\
         backends = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n\
         [pool.web.outlier]\nmax_ejected_percent = 0\n",
        dead.address(),
        ok.address()
    );
    let proxy = Proxy::start_with_admin(&config, 1);
    let mut client = Client::connect(proxy.addr());
    let seen = send(&mut client, "/", 30);
    let m = Metrics::scrape(&proxy);
    let web = [("pool", "web")];
    let retries = m.one("evenkeel_retries_total", &web);
    let refused = m.one("evenkeel_retry_budget_exhausted_total", &web);
    let dead_address = dead.address();
    let failures = m.one(
        "evenkeel_request_failures_total",
        &[("backend", dead_address.as_str())],
    );
    // Every failed try was either retried or refused by the budget; each refusal is a
    // 502 to the client, each retry a try on the live backend.
    assert!(retries >= 1.0 && refused >= 1.0, "{retries} {refused}");
    assert_eq!(retries + refused, failures);
    assert_eq!(
        seen.get(&502).copied().unwrap_or(0) as f64,
        refused,
        "{seen:?}"
    );
    assert_eq!(seen.get(&200).copied().unwrap_or(0), ok.requests());
    assert_eq!(
        m.sum("evenkeel_requests_total", &[]) + failures,
        30.0 + retries
    );
}

#[test]
fn share_and_load_ratio_gauges_show_the_monitor_window() {
    let heavy = Backend::start("heavy");
    let light = Backend::start("light");
    // Weights 3:1 over equal capacities: the heavy backend is meant to take three
    // quarters, which is one and a half times what its capacity says.
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\npool = \"web\"\n\n\
         [pool.web]\nalgorithm = \"weighted_round_robin\"\n\
         backends = [{{ address = \"{}\", weight = 3 }}, {{ address = \"{}\", weight = 1 }}]\n",
        heavy.address(),
        light.address()
    );
    let proxy = Proxy::start_with_admin(&config, 1);
    // Traffic after the monitor's first samples, so its window holds all of it.
    let sampled = eventually(Duration::from_secs(10), || {
        Metrics::scrape(&proxy).one("evenkeel_monitor_window_seconds", &[]) > 0.0
    });
    assert!(sampled, "the monitor took no samples");
    let mut client = Client::connect(proxy.addr());
    assert_eq!(send(&mut client, "/", 40).get(&200), Some(&40));
    assert_eq!((heavy.requests(), light.requests()), (30, 10));

    let (heavy_address, light_address) = (heavy.address(), light.address());
    let gauge =
        |m: &Metrics, name, address: &str| m.one(name, &[("pool", "web"), ("backend", address)]);
    let mut last = String::new();
    let seen = eventually(Duration::from_secs(8), || {
        let m = Metrics::scrape(&proxy);
        let observed = gauge(&m, "evenkeel_backend_observed_share", &heavy_address);
        last = m.text;
        observed == 0.75
    });
    assert!(seen, "the window never showed the traffic:\n{last}");
    let m = Metrics::scrape(&proxy);
    for (address, intended, load_ratio) in
        [(&heavy_address, 0.75, 1.5), (&light_address, 0.25, 0.5)]
    {
        assert_eq!(
            gauge(&m, "evenkeel_backend_intended_share", address),
            intended
        );
        assert_eq!(
            gauge(&m, "evenkeel_backend_observed_share", address),
            intended
        );
        assert_eq!(gauge(&m, "evenkeel_backend_capacity_share", address), 0.5);
        assert_eq!(
            gauge(&m, "evenkeel_backend_load_ratio", address),
            load_ratio
        );
    }
    // On target: no skew, no errors.
    assert_eq!(m.one("evenkeel_pool_skew", &[("pool", "web")]), 0.0);
    assert_eq!(m.one("evenkeel_pool_error_ratio", &[("pool", "web")]), 0.0);
}
