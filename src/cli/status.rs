//! `evenkeel status`: what a running evenkeel is doing now, in one screen.
//!
//! Reads `GET /status` once and prints the config version in force (and the version
//! under the guard's watch) and the `[guard]` thresholds, then per pool its algorithm, panic and failover flags and
//! the monitor's last window (requests, error rate, p50/p99 latency, skew), a table of
//! its backends (health, weight, intended share, observed share in the window, capacity
//! share, load ratio, requests in flight), and last the alarms in force. The window's
//! error rate is the share of client requests answered with a 5xx, by a backend or by
//! evenkeel itself (no usable backend, backend unreachable, timeout).
//!
//! A load ratio is marked `!` when it is above `guard.max_load_ratio` (from the
//! `guard` thresholds in `/status`; 2, the default, from an instance that does not send
//! them) and the window is busy enough for it to mean something — the backend's
//! capacity share of the window's requests is at least 30, the rule the monitor's
//! alarms use — so a quiet pool never shows alarming noise.

use std::path::PathBuf;

use http::Method;
use serde::Deserialize;

use super::check::Format;
use super::client::{Admin, AdminArgs};
use super::table::{percent, ratio, render};
use super::{CommandResult, Exit, Failure};
use crate::admin::{BackendStatus, CertificateStatus, GuardThresholds, PoolStatus};
use crate::monitor::window::MIN_EXPECTED;

/// Show a running evenkeel's backends, health, shares, skew and alarms.
///
/// One table per pool: each backend's health (usable, unhealthy, ejected, draining),
/// weight, intended share, observed share over the monitor's window (the last 10 s),
/// capacity share, load ratio (observed / capacity share; `!` above
/// guard.max_load_ratio) and requests in flight; above it the pool's window: requests,
/// share answered 5xx, p50/p99 latency and skew. Then the alarms in force. Exit 0, or 3 when the
/// admin API cannot be reached or refuses the token.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  evenkeel status -c evenkeel.toml
  evenkeel status --admin 127.0.0.1:9901 --token-file admin.token --format json | jq .monitor.alarms")]
pub struct Args {
    /// A config file whose `[admin]` section says where the instance is.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format: text tables, or the whole /status document as JSON.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    admin: AdminArgs,
}

/// The parts of `GET /status` this command reads. Fields an older instance does not
/// send take their defaults.
#[derive(Debug, Deserialize)]
struct StatusDocument {
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    pools: Vec<PoolStatus>,
    #[serde(default)]
    guard: Option<GuardThresholds>,
    #[serde(default)]
    monitor: Option<MonitorDocument>,
    #[serde(default)]
    certificates: Vec<CertificateStatus>,
}

/// The monitor's part of `/status` (`crate::monitor::MonitorState`).
#[derive(Debug, Default, Deserialize)]
struct MonitorDocument {
    #[serde(default)]
    window_seconds: f64,
    #[serde(default)]
    pools: Vec<PoolWindow>,
    #[serde(default)]
    alarms: Vec<Alarm>,
    #[serde(default)]
    watching: Option<u64>,
}

/// One pool over the monitor's window (`crate::monitor::window::PoolView`).
#[derive(Debug, Deserialize)]
struct PoolWindow {
    name: String,
    #[serde(default)]
    weight_driven: bool,
    #[serde(default)]
    requests: u64,
    #[serde(default)]
    client_requests: Option<u64>,
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    p50_ms: Option<f64>,
    #[serde(default)]
    p99_ms: Option<f64>,
    #[serde(default)]
    skew: Option<f64>,
    #[serde(default)]
    skew_backend: Option<String>,
    #[serde(default)]
    backends: Vec<BackendWindow>,
}

/// One backend over the window (`crate::monitor::window::BackendView`).
#[derive(Debug, Deserialize)]
struct BackendWindow {
    address: String,
    #[serde(default)]
    observed_share: f64,
    #[serde(default)]
    capacity_share: f64,
    #[serde(default)]
    load_ratio: f64,
    #[serde(default)]
    p50_ms: Option<f64>,
    #[serde(default)]
    p99_ms: Option<f64>,
}

/// An alarm in force (`crate::monitor::alarms::ActiveAlarm`).
#[derive(Debug, Deserialize)]
struct Alarm {
    key: String,
    message: String,
    #[serde(default)]
    seconds: f64,
}

pub fn run(args: &Args) -> CommandResult {
    let admin = Admin::find(args.config.as_deref(), &args.admin)?;
    let answer = admin.call(Method::GET, "/status", None)?;
    if answer.status != 200 {
        return Err(Failure::new(
            Exit::Runtime,
            anyhow::anyhow!("unexpected answer {}: {}", answer.status, answer.json),
        ));
    }
    if matches!(args.format, Format::Json) {
        outln!(
            "{}",
            serde_json::to_string_pretty(&answer.json).unwrap_or_default()
        );
        return Ok(Exit::Success);
    }
    let document: StatusDocument = serde_json::from_value(answer.json).map_err(|e| {
        Failure::new(
            Exit::Runtime,
            anyhow::anyhow!("the admin API answered an unexpected /status: {e}"),
        )
    })?;
    out!("{}", render_status(&document));
    Ok(Exit::Success)
}

/// The whole text `status` prints.
fn render_status(status: &StatusDocument) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let monitor = status.monitor.as_ref();
    let version = status
        .version
        .map_or("unknown".to_string(), |v| v.to_string());
    let _ = write!(out, "config version {version}");
    if let Some(watching) = monitor.and_then(|m| m.watching) {
        let _ = write!(out, "; guard watching version {watching}");
    }
    out.push('\n');
    if let Some(g) = &status.guard {
        let _ = writeln!(
            out,
            "guard: watch {} s after a change, min_requests {}, max_error_rate {}, max_latency_ratio {}, latency_floor {} ms, max_skew {}, max_load_ratio {}, max_shift {}{}",
            g.watch_seconds,
            g.min_requests,
            percent(g.max_error_rate),
            g.max_latency_ratio,
            g.latency_floor_ms,
            g.max_skew,
            g.max_load_ratio,
            g.max_shift,
            if g.deny_warnings { ", deny_warnings" } else { "" }
        );
    }
    let max_load_ratio = status
        .guard
        .as_ref()
        .map_or(DEFAULT_MAX_LOAD_RATIO, |g| g.max_load_ratio);
    let window_seconds = monitor.map_or(0.0, |m| m.window_seconds);
    for pool in &status.pools {
        let window = monitor.and_then(|m| m.pools.iter().find(|p| p.name == pool.name));
        out.push('\n');
        out.push_str(&pool_text(pool, window, window_seconds, max_load_ratio));
    }
    if !status.certificates.is_empty() {
        out.push_str("\ncertificates:\n");
        for c in &status.certificates {
            let left = if c.days_left < 0.0 {
                format!("EXPIRED {:.0} days ago", -c.days_left)
            } else {
                format!("{:.0} days left", c.days_left.floor())
            };
            let _ = writeln!(
                out,
                "  {} {} ({}): until {}, {left}; sha256 {}",
                c.listener,
                c.cert,
                c.names.join(", "),
                c.not_after,
                &c.fingerprint[..16.min(c.fingerprint.len())]
            );
        }
    }
    let alarms = monitor.map_or(&[][..], |m| &m.alarms[..]);
    if alarms.is_empty() {
        out.push_str("\nalarms: none\n");
    } else {
        let _ = writeln!(out, "\nalarms ({}):", alarms.len());
        for alarm in alarms {
            let _ = writeln!(
                out,
                "  [{}] for {:.0} s: {}",
                alarm.key, alarm.seconds, alarm.message
            );
        }
    }
    out
}

/// `guard.max_load_ratio` when the instance does not say.
const DEFAULT_MAX_LOAD_RATIO: f64 = 2.0;

/// One pool: a heading with its flags and window, then its backends' table.
fn pool_text(
    pool: &PoolStatus,
    window: Option<&PoolWindow>,
    window_seconds: f64,
    max_load_ratio: f64,
) -> String {
    let mut heading = format!("pool {:?} ({})", pool.name, pool.algorithm);
    if pool.tcp {
        heading.push_str(" TCP: counts are connections");
    }
    if pool.panic {
        heading.push_str(" PANIC MODE");
    }
    if pool.failed_over {
        heading.push_str(" FAILED OVER to its backup");
    }
    let mut out = format!("{heading}\n");
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    match window {
        Some(w) => {
            let skew = match (w.skew, &w.skew_backend) {
                (Some(s), Some(b)) => format!("{s:.2} (at {b})"),
                (Some(s), None) => format!("{s:.2}"),
                (None, _) => "none significant".to_string(),
            };
            let alarmed = if w.weight_driven {
                ""
            } else {
                " (not alarmed: load-aware algorithm)"
            };
            // Client requests, and tries to backends when retries make them differ.
            let requests = match w.client_requests {
                Some(clients) if clients != w.requests => {
                    format!("{clients} requests ({} tries to backends)", w.requests)
                }
                Some(clients) => format!("{clients} requests"),
                None => format!("{} requests", w.requests),
            };
            out.push_str(&format!(
                "  last {window_seconds:.0} s: {requests}, 5xx {}, p50 {}, p99 {}, skew {skew}{alarmed}\n",
                percent(w.error_rate),
                ms(w.p50_ms),
                ms(w.p99_ms),
            ));
        }
        None => out.push_str("  no window yet (the monitor samples every second)\n"),
    }
    let mut rows = vec![[
        "backend",
        "health",
        "weight",
        "intended",
        "observed",
        "capacity",
        "load ratio",
        "p50",
        "p99",
        "in flight",
    ]
    .map(String::from)
    .to_vec()];
    if pool.tcp {
        rows[0].push("bytes".into());
    }
    for backend in &pool.backends {
        let seen = window.and_then(|w| w.backends.iter().find(|b| b.address == backend.address));
        let load = match seen {
            Some(b) if b.capacity_share > 0.0 => {
                let requests = window.map_or(0, |w| w.requests) as f64;
                let significant = b.capacity_share * requests >= MIN_EXPECTED;
                let mark = if significant && b.load_ratio > max_load_ratio {
                    " !"
                } else {
                    ""
                };
                format!("{}{mark}", ratio(Some(b.load_ratio)))
            }
            _ => "-".to_string(),
        };
        rows.push(vec![
            backend.address.clone(),
            health(backend).to_string(),
            backend.weight.to_string(),
            percent(backend.intended_share),
            seen.map_or("-".to_string(), |b| percent(b.observed_share)),
            seen.map_or("-".to_string(), |b| percent(b.capacity_share)),
            load,
            ms(seen.and_then(|b| b.p50_ms)),
            ms(seen.and_then(|b| b.p99_ms)),
            backend.in_flight.to_string(),
        ]);
        if pool.tcp {
            if let Some(row) = rows.last_mut() {
                row.push(backend.bytes.to_string());
            }
        }
    }
    let right = [
        false, false, true, true, true, true, true, true, true, true, true,
    ];
    out.push_str(&render(&rows, &right[..rows[0].len()]));
    if rows.iter().skip(1).any(|r| r[6].ends_with('!')) {
        out.push_str(&format!(
            "  ! load ratio above guard.max_load_ratio {max_load_ratio}\n"
        ));
    }
    out
}

/// One word for a backend's state: draining, ejected, unhealthy, usable — the first
/// that holds — or `not usable` (weight 0, or at its connection limits).
fn health(backend: &BackendStatus) -> &'static str {
    if backend.draining {
        "draining"
    } else if backend.ejected {
        "ejected"
    } else if backend.health == "unhealthy" {
        "unhealthy"
    } else if backend.usable {
        "usable"
    } else {
        "not usable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> StatusDocument {
        serde_json::from_value(serde_json::json!({
            "config_file": "evenkeel.toml",
            "version": 2,
            "guard": { "watch_seconds": 60.0, "min_requests": 200, "max_error_rate": 0.02,
                       "max_latency_ratio": 2.0, "max_skew": 0.25, "max_load_ratio": 2.0,
                       "max_shift": 2.0, "deny_warnings": false },
            "pools": [{
                "name": "web", "algorithm": "weighted_round_robin", "panic": false,
                "failed_over": false, "requests": 1000,
                "backends": [
                    { "address": "127.0.0.1:9001", "weight": 18, "capacity": 1.0,
                      "intended_share": 0.9, "observed_share": 0.9, "capacity_share": 0.333,
                      "requests": 900, "in_flight": 3, "responses": [0, 900, 0, 0, 0],
                      "failures": 0, "health": "healthy", "ejected": false,
                      "draining": false, "usable": true },
                    { "address": "127.0.0.1:9002", "weight": 1, "capacity": 1.0,
                      "intended_share": 0.05, "observed_share": 0.05, "capacity_share": 0.333,
                      "requests": 50, "in_flight": 0, "responses": [0, 50, 0, 0, 0],
                      "failures": 0, "health": "healthy", "ejected": false,
                      "draining": true, "usable": false }
                ]
            }],
            "monitor": {
                "window_seconds": 10.0, "watching": 2,
                "pools": [{
                    "name": "web", "algorithm": "weighted_round_robin", "weight_driven": true,
                    "requests": 1000, "client_requests": 990, "error_rate": 0.001, "p50_ms": 1.25, "p99_ms": 9.5,
                    "skew": null, "skew_backend": null, "panic": false, "failed_over": false,
                    "usable": 1, "total": 2,
                    "backends": [
                        { "address": "127.0.0.1:9001", "requests": 900, "errors": 1,
                          "observed_share": 0.9, "intended_share": 0.9,
                          "capacity_share": 0.3333, "load_ratio": 2.7, "expected": 900.0,
                          "p50_ms": 1.1, "p99_ms": 4.2 },
                        { "address": "127.0.0.1:9002", "requests": 100, "errors": 0,
                          "observed_share": 0.1, "intended_share": 0.1,
                          "capacity_share": 0.3333, "load_ratio": 0.3, "expected": 100.0 }
                    ]
                }],
                "alarms": [{ "key": "load_ratio/web/127.0.0.1:9001", "seconds": 4.2,
                             "message": "backend 127.0.0.1:9001 of pool \"web\" is overloaded" }]
            }
        }))
        .expect("a /status document")
    }

    #[test]
    fn status_shows_the_version_the_window_marks_and_alarms() {
        let text = render_status(&document());
        assert!(
            text.starts_with("config version 2; guard watching version 2\nguard: watch 60 s after a change, min_requests 200, max_error_rate 2.0%, max_latency_ratio 2, latency_floor 25 ms, max_skew 0.25, max_load_ratio 2, max_shift 2\n"),
            "{text}"
        );
        assert!(
            text.contains("pool \"web\" (weighted_round_robin)"),
            "{text}"
        );
        assert!(
            text.contains("last 10 s: 990 requests (1000 tries to backends), 5xx 0.1%, p50 1.2 ms, p99 9.5 ms, skew none significant"),
            "{text}"
        );
        let row = |address: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(address))
                .unwrap_or_default()
                .to_string()
        };
        let overloaded = row("127.0.0.1:9001");
        assert!(overloaded.contains("usable"), "{overloaded}");
        assert!(overloaded.contains("90.0%"), "{overloaded}");
        assert!(overloaded.contains("2.70 !"), "{overloaded}");
        assert!(
            overloaded.contains("1.1 ms") && overloaded.contains("4.2 ms"),
            "{overloaded}"
        );
        let drained = row("127.0.0.1:9002");
        assert!(drained.contains("draining"), "{drained}");
        assert!(!drained.contains('!'), "{drained}");
        assert!(text.contains("! load ratio above guard.max_load_ratio 2"));
        assert!(text.contains("alarms (1):\n  [load_ratio/web/127.0.0.1:9001] for 4 s: backend"));
    }

    #[test]
    fn certificates_show_their_names_end_and_days_left() {
        let mut status = document();
        status.certificates = serde_json::from_value(serde_json::json!([
            { "listener": "https", "cert": "/etc/evenkeel/shop.pem",
              "fingerprint": "5a5059e309a0767d47bb2be442968a2b", "names": ["shop.example", "*.shop.example"],
              "not_after": "2027-01-05T00:00:00Z", "days_left": 35.6 },
            { "listener": "https", "cert": "/etc/evenkeel/old.pem",
              "fingerprint": "2a7f50678becb2a108f51549edd01f40", "names": ["old.example"],
              "not_after": "2026-11-28T00:00:00Z", "days_left": -2.4 }
        ]))
        .expect("certificates");
        let text = render_status(&status);
        assert!(
            text.contains("certificates:\n  https /etc/evenkeel/shop.pem (shop.example, *.shop.example): until 2027-01-05T00:00:00Z, 35 days left; sha256 5a5059e309a0767d\n"),
            "{text}"
        );
        assert!(
            text.contains("until 2026-11-28T00:00:00Z, EXPIRED 2 days ago"),
            "{text}"
        );
    }

    #[test]
    fn a_quiet_window_is_never_marked() {
        let mut status = document();
        if let Some(monitor) = status.monitor.as_mut() {
            monitor.pools[0].requests = 20;
            monitor.alarms.clear();
        }
        let text = render_status(&status);
        assert!(text.contains("2.70\n") || text.contains("2.70 "), "{text}");
        assert!(!text.contains("2.70 !"), "{text}");
        assert!(text.contains("alarms: none"), "{text}");
    }
}
