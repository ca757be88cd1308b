//! `evenkeel preflight -c FILE`: load-test a config against stand-in backends before it
//! ships.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{CommandResult, Exit, Failure};
use crate::config::{self, diagnostic, values};
use crate::loadgen::preflight::{self, Options, Report};

/// Load-test a config before it ships.
///
/// Runs the config in-process on ephemeral loopback ports with a stand-in server for
/// every backend, drives load through every route, then stops one backend per pool
/// and drives again. Fails (exit 1) on skew, load ratio or errors under load, or on
/// errors with one backend down; thresholds default to the config's `[guard]`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  evenkeel preflight -c evenkeel.toml\n  evenkeel preflight -c evenkeel.toml --format json --max-load-ratio 1.5\n  evenkeel preflight -c evenkeel.toml --latency 127.0.0.1:9002=20ms --key-missing 60"
)]
pub struct Args {
    /// The config file.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Requests per route in each phase.
    #[arg(long, default_value_t = 2000)]
    requests: u64,
    /// Client connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Latency of a stand-in backend of capacity 1 (others answer in this / capacity).
    #[arg(long, default_value = "1ms", value_parser = values::parse_duration)]
    base_latency: Duration,
    /// A backend's latency, ADDRESS=DURATION (repeatable).
    #[arg(long = "latency", value_name = "ADDR=DURATION")]
    latencies: Vec<String>,
    /// Largest acceptable skew (default: guard.max_skew).
    #[arg(long)]
    max_skew: Option<f64>,
    /// Largest acceptable load ratio (default: guard.max_load_ratio).
    #[arg(long)]
    max_load_ratio: Option<f64>,
    /// Largest acceptable error rate (default: guard.max_error_rate).
    #[arg(long)]
    max_error_rate: Option<f64>,
    /// Percent of synthetic requests to consistent-hash pools that lack the hash key.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    key_missing: u8,
    /// Output format.
    #[arg(long, value_enum, default_value_t = super::check::Format::Text)]
    format: super::check::Format,
}

pub fn run(args: &Args) -> CommandResult {
    let usage = |e: anyhow::Error| Failure::new(Exit::Usage, e);
    let checked = config::check_file(&args.config).map_err(|e| usage(e.into()))?;
    let json = matches!(args.format, super::check::Format::Json);
    let Some(config) = checked.config.clone().filter(|_| checked.errors() == 0) else {
        if json {
            outln!(
                "{}",
                diagnostic::render_json(&checked.source, &checked.findings)
            );
        } else {
            out!(
                "{}",
                diagnostic::render_text(&checked.source, &checked.findings)
            );
            outln!(
                "{}: has errors; nothing was load-tested",
                args.config.display()
            );
        }
        return Ok(Exit::Rejected);
    };
    let mut latency_of = HashMap::new();
    for item in &args.latencies {
        let (addr, latency) = item.rsplit_once('=').ok_or_else(|| {
            usage(anyhow::anyhow!(
                "--latency {item:?}: expected ADDRESS=DURATION"
            ))
        })?;
        let latency = values::parse_duration(latency)
            .map_err(|e| usage(anyhow::anyhow!("--latency {item:?}: expected {e}")))?;
        latency_of.insert(addr.to_string(), latency);
    }
    let guard = config.guard;
    let options = Options {
        requests: args.requests.max(1),
        connections: args.connections.max(1),
        latency: args.base_latency,
        latency_of,
        max_skew: args.max_skew.unwrap_or(guard.max_skew),
        max_load_ratio: args.max_load_ratio.unwrap_or(guard.max_load_ratio),
        max_error_rate: args.max_error_rate.unwrap_or(guard.max_error_rate),
        key_missing: args.key_missing,
    };
    let report = preflight::run(config, &options).map_err(|e| Failure::new(Exit::Runtime, e))?;
    // The lint about missing hash keys, shown beside a hash pool whose synthetic
    // requests mostly lacked the key.
    let key_lint: Vec<String> = checked
        .findings
        .iter()
        .filter(|f| f.rule == "hash-key-may-be-missing")
        .map(|f| format!("warning[{}]: {}", f.rule, f.message))
        .collect();
    if json {
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        value["passed"] = report.passed().into();
        value["hash_key_findings"] = serde_json::to_value(&key_lint).unwrap_or_default();
        outln!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        out!(
            "{}",
            render(
                &report,
                &options,
                &key_lint,
                &args.config.display().to_string()
            )
        );
    }
    Ok(if report.passed() {
        Exit::Success
    } else {
        Exit::Rejected
    })
}

fn render(report: &Report, options: &Options, key_lint: &[String], file: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "preflight {file}: {} requests per route, then again with one backend down per pool\n",
        options.requests
    );
    for pool in &report.pools {
        let skew = pool.skew.map_or("-".to_string(), |s| format!("{s:.2}"));
        let _ = writeln!(
            out,
            "pool {:?} ({}): {} requests, {} errors, p50 {:.2} ms, p99 {:.2} ms, skew {skew}",
            pool.name, pool.algorithm, pool.requests, pool.errors, pool.p50_ms, pool.p99_ms
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>9} {:>9} {:>9} {:>10}",
            "backend", "intended", "observed", "capacity", "load ratio"
        );
        for b in &pool.backends {
            let flag = if b.load_ratio > options.max_load_ratio {
                "  <- overloaded"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:<24} {:>8.1}% {:>8.1}% {:>8.1}% {:>10.2}{flag}",
                b.address,
                b.intended_share * 100.0,
                b.observed_share * 100.0,
                b.capacity_share * 100.0,
                b.load_ratio
            );
        }
        if let Some(key) = &pool.key {
            let _ = writeln!(
                out,
                "  hash key {}: carried by {:.0}% of the synthetic requests",
                key.hash_key, key.carried_percent
            );
            if key.carried_percent < 50.0 {
                for lint in key_lint {
                    let _ = writeln!(out, "  {lint}");
                }
            }
        }
        if let Some(f) = &pool.failover {
            let _ = writeln!(
                out,
                "  with {} down: {} requests, {} errors ({:.1}%), {} tries to the failed backend",
                f.failed_backend,
                f.requests,
                f.errors,
                f.error_rate * 100.0,
                f.tries_to_failed_backend
            );
        }
        out.push('\n');
    }
    for name in &report.not_driven {
        let _ = writeln!(
            out,
            "pool {name:?}: no route sends traffic to it directly (not driven)"
        );
    }
    if report.passed() {
        let _ = writeln!(out, "preflight passed");
    } else {
        for failure in &report.failures {
            let _ = writeln!(out, "FAIL: {failure}");
        }
        let _ = writeln!(
            out,
            "preflight failed: {} problem(s)",
            report.failures.len()
        );
    }
    out
}
