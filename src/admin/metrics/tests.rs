//! Unit tests of `/metrics`: the latency regrouping and the exposition of a runtime
//! whose counters the tests set.

use super::*;
use crate::monitor::alarms::{Alarms, Kind, Subject};
use crate::monitor::latency::LatencyHistogram;
use proptest::prelude::*;

fn cumulative(buckets: &[(f64, u64)], le: f64) -> u64 {
    buckets
        .iter()
        .filter(|(bound, _)| *bound <= le)
        .map(|(_, c)| c)
        .sum()
}

#[test]
fn fine_buckets_go_under_the_smallest_bound_at_or_above_their_upper_edge() {
    let h = LatencyHistogram::default();
    // 999 µs sits in the fine bucket [896, 1024) µs: above 1 ms at its edge, so
    // it counts under 2.5 ms; 640 µs ([640, 768)) fits under 1 ms.
    for micros in [640, 999, 2_000, 40_000_000] {
        h.record(Duration::from_micros(micros));
    }
    let buckets = le_buckets(&h.snapshot());
    assert_eq!(buckets.len(), LE_MICROS.len() + 1);
    assert_eq!(buckets[0], (0.001, 1));
    assert_eq!(buckets[1], (0.0025, 2));
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    assert_eq!(buckets.iter().map(|(_, c)| c).sum::<u64>(), 4);
    assert!(le_buckets(&[]).iter().all(|(_, c)| *c == 0));
}

proptest! {
    /// Every latency is counted once; a `le` count never includes a slower
    /// latency, and includes every latency at least 25% below the bound.
    #[test]
    fn le_buckets_are_exact_in_total_and_never_count_a_slower_latency(
        micros in proptest::collection::vec(1u64..60_000_000, 0..200)
    ) {
        let h = LatencyHistogram::default();
        for m in &micros {
            h.record(Duration::from_micros(*m));
        }
        let buckets = le_buckets(&h.snapshot());
        prop_assert_eq!(buckets.iter().map(|(_, c)| c).sum::<u64>(), micros.len() as u64);
        for le in LE_MICROS {
            let counted = cumulative(&buckets, le as f64 / 1e6);
            let at_most = micros.iter().filter(|m| **m <= le).count() as u64;
            let surely = micros.iter().filter(|m| **m as f64 * 1.25 <= le as f64).count() as u64;
            prop_assert!(counted <= at_most, "le {le}: {counted} > {at_most}");
            prop_assert!(counted >= surely, "le {le}: {counted} < {surely}");
        }
    }
}

fn runtime() -> Arc<Runtime> {
    let checked = crate::config::check_source(crate::config::Source {
        path: "t.toml".into(),
        text: "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
               [[route]]\npool = \"web\"\n\
               [pool.web]\nbackends = [{ address = \"127.0.0.1:1\" }, \
               { address = \"127.0.0.1:2\" }]\n\
               [guard]\nmax_load_ratio = 3.5\nmax_skew = 0.5\n"
            .into(),
    });
    Runtime::new(checked.config.expect("valid"))
}

fn scrape(runtime: &Runtime, monitor: MonitorState) -> String {
    Scrape {
        snapshot: runtime.snapshot(),
        monitor: Arc::new(monitor),
        version: 3,
        applies: vec![("start", "applied", 1), ("api", "refused", 2)],
        guard_rollbacks: 1,
        upstream_connections: 4,
        tunnels: vec![2],
        alerts: [5, 6, 7],
        access_log_dropped: 9,
        tls_handshakes: 8,
        tls_failures: [1, 0, 2, 0, 0, 0, 0, 0],
        now: crate::health::now(),
    }
    .render()
    .expect("rendered")
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

#[test]
fn the_exposition_reports_the_backend_counters_under_prometheus_names() {
    let runtime = runtime();
    let snapshot = runtime.snapshot();
    let first = &snapshot.pools[0].backends[0];
    first.stats.record_status(200);
    first.stats.record_status(204);
    first.stats.record_status(503);
    first.stats.failures.fetch_add(2, Ordering::Relaxed);
    first.stats.latency.record(Duration::from_millis(3));
    first.stats.latency.record(Duration::from_millis(40));
    snapshot.pools[0]
        .stats
        .retries
        .fetch_add(9, Ordering::Relaxed);
    let text = scrape(&runtime, MonitorState::default());

    let web = r#"pool="web",backend="127.0.0.1:1""#;
    has(
        &text,
        &format!(r#"evenkeel_requests_total{{{web},class="2xx"}} 2"#),
    );
    has(
        &text,
        &format!(r#"evenkeel_requests_total{{{web},class="5xx"}} 1"#),
    );
    has(
        &text,
        &format!(r#"evenkeel_requests_total{{{web},class="1xx"}} 0"#),
    );
    has(
        &text,
        &format!("evenkeel_request_failures_total{{{web}}} 2"),
    );
    has(&text, "# TYPE evenkeel_request_duration_seconds histogram");
    has(
        &text,
        &format!("evenkeel_request_duration_seconds_count{{{web}}} 2"),
    );
    has(
        &text,
        &format!("evenkeel_request_duration_seconds_sum{{{web}}} 0.043"),
    );
    has(
        &text,
        &format!(r#"evenkeel_request_duration_seconds_bucket{{le="0.0025",{web}}} 0"#),
    );
    has(
        &text,
        &format!(r#"evenkeel_request_duration_seconds_bucket{{le="0.005",{web}}} 1"#),
    );
    has(
        &text,
        &format!(r#"evenkeel_request_duration_seconds_bucket{{le="+Inf",{web}}} 2"#),
    );
    has(&text, &format!("evenkeel_in_flight_requests{{{web}}} 0"));
    has(&text, &format!("evenkeel_backend_healthy{{{web}}} 1"));
    has(
        &text,
        &format!(r#"evenkeel_backend_health_state{{{web},state="unknown"}} 1"#),
    );
    has(
        &text,
        &format!(r#"evenkeel_backend_health_state{{{web},state="healthy"}} 0"#),
    );
    has(
        &text,
        &format!("evenkeel_backend_ejections_total{{{web}}} 0"),
    );
    has(&text, r#"evenkeel_retries_total{pool="web"} 9"#);
    has(&text, r#"evenkeel_pool_panic{pool="web"} 0"#);
    has(&text, "evenkeel_upstream_connections 4");
    has(&text, "evenkeel_tunnels{listener=\"l\"} 2");
    has(&text, "evenkeel_tls_handshakes_total 8");
    has(&text, "evenkeel_access_log_dropped_total 9");
    has(
        &text,
        "evenkeel_tls_handshake_failures_total{reason=\"timeout\"} 1",
    );
    has(
        &text,
        "evenkeel_tls_handshake_failures_total{reason=\"not_tls\"} 2",
    );
    has(&text, "evenkeel_config_version 3");
    has(
        &text,
        r#"evenkeel_config_applies_total{origin="api",outcome="refused"} 2"#,
    );
    has(&text, "evenkeel_guard_rollbacks_total 1");
    // The guard's lines, from the config in force (max_error_rate by default).
    has(&text, "evenkeel_guard_max_load_ratio 3.5");
    has(&text, "evenkeel_guard_max_skew 0.5");
    has(&text, "evenkeel_guard_max_error_rate 0.02");
    has(&text, "evenkeel_alerts_failed_total 7");
    assert_eq!(text.lines().last(), Some("# EOF"));
}

#[test]
fn the_monitor_window_and_alarms_become_gauges() {
    let runtime = runtime();
    let snapshot = runtime.snapshot();
    let now = crate::health::now();
    let (older, newer) = (crate::monitor::window::Sample::take(&snapshot, now), {
        for _ in 0..3 {
            snapshot.pools[0].backends[0]
                .stats
                .requests
                .fetch_add(1, Ordering::Relaxed);
        }
        snapshot.pools[0].backends[1]
            .stats
            .requests
            .fetch_add(1, Ordering::Relaxed);
        crate::monitor::window::Sample::take(&snapshot, now + Duration::from_secs(10))
    });
    let pools = crate::monitor::window::view(&older, &newer, &snapshot, now);
    let mut alarms = Alarms::default();
    for subject in [
        Subject::backend(Kind::LoadRatio, "web", "127.0.0.1:1"),
        Subject::guard(4),
        Subject::certificate("https", "0123456789ABCDEF", "/etc/evenkeel/site.pem"),
    ] {
        alarms.raise_once(subject, "x".into(), now, &runtime.events);
    }
    let text = scrape(
        &runtime,
        MonitorState {
            window_seconds: 10.0,
            pools,
            alarms: alarms.active(),
            watching: Some(3),
        },
    );
    let web = r#"pool="web",backend="127.0.0.1:1""#;
    has(
        &text,
        &format!("evenkeel_backend_observed_share{{{web}}} 0.75"),
    );
    has(
        &text,
        &format!("evenkeel_backend_intended_share{{{web}}} 0.5"),
    );
    has(
        &text,
        &format!("evenkeel_backend_capacity_share{{{web}}} 0.5"),
    );
    has(&text, &format!("evenkeel_backend_load_ratio{{{web}}} 1.5"));
    has(&text, r#"evenkeel_pool_skew{pool="web"} 0.0"#);
    has(&text, r#"evenkeel_pool_error_ratio{pool="web"} 0.0"#);
    has(&text, "evenkeel_monitor_window_seconds 10.0");
    has(&text, "evenkeel_alarms_active 3");
    // The key, and what it names as labels of their own (empty where none applies).
    has(
        &text,
        r#"evenkeel_alarm_active{key="load_ratio/web/127.0.0.1:1",kind="load_ratio",pool="web",backend="127.0.0.1:1",listener="",certificate=""} 1"#,
    );
    has(
        &text,
        r#"evenkeel_alarm_active{key="guard/4",kind="guard",pool="",backend="",listener="",certificate=""} 1"#,
    );
    has(
        &text,
        r#"evenkeel_alarm_active{key="certificate_expiry/https/0123456789AB",kind="certificate_expiry",pool="",backend="",listener="https",certificate="/etc/evenkeel/site.pem"} 1"#,
    );
    has(&text, "evenkeel_guard_watching 1");
}
