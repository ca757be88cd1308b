//! `evenkeel simulate`: the predicted split of every pool, with failures injected.
//!
//! Checks the config as `check` does (errors: print the findings, exit 1), runs
//! [`crate::sim::simulate`] and prints one table per pool, or the whole prediction as
//! JSON. Flags (a load ratio above `guard.max_load_ratio`, a skew above
//! `guard.max_skew`) are printed, never turned into an exit code: `simulate` answers
//! "what if", `plan --deny-flags` and `preflight` are the gates.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::json;

use super::check::{print_findings, Format};
use super::table::{percent, ratio, render};
use super::{failures, CommandResult, Exit, Failure};
use crate::balance::Algorithm;
use crate::config;
use crate::sim::failures::{Analysis, MAX_PAIR_SERVERS};
use crate::sim::traffic::Traffic;
use crate::sim::{
    self, Down, KeyDistribution, PoolPrediction, Prediction, SimOptions, DEFAULT_CONCURRENCY,
    DEFAULT_REQUESTS, DEFAULT_SEED,
};

/// Predict how each pool spreads its requests, with backends marked down.
///
/// Runs the balancing code `serve` runs over virtual requests (no network, no backends
/// needed) and prints, per pool, each backend's weight, capacity, intended share,
/// predicted share, capacity share and load ratio (flagged above guard.max_load_ratio),
/// and the pool's skew (flagged above guard.max_skew for weight-driven algorithms).
///
/// Exit code 0 when the config can be served (flags do not change it), 1 when it has
/// errors (printed as `check` prints them), 2 when the file cannot be read or an option
/// names no backend.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  evenkeel simulate -c evenkeel.toml
  evenkeel simulate -c evenkeel.toml --down 127.0.0.1:9002 --down web/127.0.0.1:9003
  evenkeel simulate -c evenkeel.toml --keys zipf:1.1:10000 --key-missing 5 --format json
  evenkeel simulate -c evenkeel.toml --failures --traffic status.json
  evenkeel simulate -c evenkeel.toml --failures 2 --traffic 127.0.0.1:9901

Consistent-hash keys are the strings key-0 .. key-{K-1}: send those exact values through
the proxy to compare it with the prediction. docs/simulate.md describes the model.")]
pub struct Args {
    /// The config file.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Virtual requests per pool.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_REQUESTS,
          value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
    /// A backend to treat as down: its address as the config writes it (in every pool
    /// that lists it), or POOL/ADDRESS. Repeat for several.
    #[arg(long, value_name = "ADDR")]
    down: Vec<Down>,
    /// Keys of requests to consistent_hash pools: uniform:K (K keys, equally likely) or
    /// zipf:S:K (K keys, Zipf exponent S).
    #[arg(long, value_name = "DIST", default_value = "uniform:10000")]
    keys: KeyDistribution,
    /// Percent of requests to consistent_hash pools that lack the key.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = percent_arg)]
    key_missing: f64,
    /// Seed of every random choice: the same seed repeats the same prediction.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Requests in flight at once in least_connections and least_request pools.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Also take every server down in turn (or, with 2, every pair of servers) and
    /// print what each failure does: routes left with nowhere to go, load ratios,
    /// how each pool reacts (docs/failures.md).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1",
          value_parser = clap::value_parser!(u8).range(1..=2))]
    failures: Option<u8>,
    #[command(flatten)]
    traffic: super::traffic::TrafficArgs,
}

/// Parses a percentage from 0 to 100.
fn percent_arg(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a percentage from 0 to 100")),
    }
}

pub fn run(args: &Args) -> CommandResult {
    let checked = config::check_file(&args.config).map_err(|e| Failure::new(Exit::Usage, e))?;
    let Some(config) = checked.config.as_ref().filter(|_| checked.errors() == 0) else {
        print_findings(&checked, args.format);
        return Ok(Exit::Rejected);
    };
    let options = SimOptions {
        requests: args.requests,
        down: args.down.clone(),
        keys: args.keys,
        key_missing: args.key_missing / 100.0,
        seed: args.seed,
        concurrency: args.concurrency,
    };
    let prediction = sim::simulate(config, &options).map_err(|e| Failure::new(Exit::Usage, e))?;
    let observed = args.traffic.observed(true, &args.config)?;
    super::traffic::matching(observed.as_ref(), config)?;
    let analysis = Analysis::new(config, Traffic::of(config, observed.as_ref()));
    // The servers' figures with the --down servers down everywhere (POOL/ADDR ones,
    // down in one pool only, are not server failures).
    let down: Vec<usize> = options
        .down
        .iter()
        .filter(|d| d.pool.is_none())
        .filter_map(|d| analysis.servers.find(config, &d.address))
        .collect();
    let servers = analysis.state(&down);
    let table = match args.failures {
        Some(2) => Some((2, analysis.pairs().ok_or_else(|| {
            Failure::new(
                Exit::Usage,
                anyhow::anyhow!(
                    "--failures 2: the config has {} servers; the two-failure table is computed for at most {MAX_PAIR_SERVERS}",
                    analysis.servers.list.len()
                ),
            )
        })?)),
        Some(_) => Some((1, analysis.single())),
        None => None,
    };
    match args.format {
        Format::Json => {
            let mut value = to_json(&prediction);
            value["servers"] = failures::servers_json(&analysis, &servers);
            if let Some((together, rows)) = &table {
                value["failures"] = failures::failures_json(&analysis, rows, *together);
            }
            outln!("{value:#}");
        }
        Format::Text => {
            out!("{}", text(&prediction, &checked));
            out!("{}", failures::servers_text(&analysis, &servers));
            if let Some((together, rows)) = &table {
                out!("{}", failures::failures_text(&analysis, rows, *together));
            }
        }
    }
    Ok(Exit::Success)
}

fn text(prediction: &Prediction, checked: &config::Checked) -> String {
    let options = &prediction.options;
    let mut out = String::new();
    let _ = write!(
        out,
        "simulate {}: {} requests per pool, seed {}",
        checked.source.path.display(),
        options.requests,
        options.seed
    );
    if !options.down.is_empty() {
        let down: Vec<String> = options.down.iter().map(Down::to_string).collect();
        let _ = write!(out, ", down: {}", down.join(", "));
    }
    out.push('\n');
    for pool in &prediction.pools {
        out.push('\n');
        pool_text(&mut out, pool, options);
    }
    let overloaded: usize = prediction
        .pools
        .iter()
        .map(|p| p.backends.iter().filter(|b| b.overloaded).count())
        .sum();
    let skewed = prediction.pools.iter().filter(|p| p.skew_flagged()).count();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        out,
        "\n{}: {} with load ratio above guard.max_load_ratio, {} with skew above guard.max_skew",
        plural(prediction.pools.len(), "pool"),
        plural(overloaded, "backend"),
        plural(skewed, "pool"),
    );
    if checked.warnings() > 0 {
        let _ = writeln!(
            out,
            "the config has {}: evenkeel check -c {} shows them",
            plural(checked.warnings(), "warning"),
            checked.source.path.display()
        );
    }
    out
}

fn pool_text(out: &mut String, pool: &PoolPrediction, options: &SimOptions) {
    let _ = writeln!(
        out,
        "pool {:?}: {}, {} of {} backends usable",
        pool.name, pool.algorithm, pool.usable, pool.weighted
    );
    let mut rows = vec![[
        "backend",
        "weight",
        "capacity",
        "intended %",
        "predicted %",
        "capacity %",
        "load ratio",
        "",
    ]
    .map(String::from)
    .to_vec()];
    for b in &pool.backends {
        let mut notes = Vec::new();
        if b.down {
            notes.push("down".to_string());
        }
        if b.overloaded {
            notes.push(format!("! load ratio above {}", pool.max_load_ratio));
        }
        rows.push(vec![
            b.address.clone(),
            b.weight.to_string(),
            b.capacity.to_string(),
            percent(b.intended_share),
            percent(b.predicted_share),
            percent(b.capacity_share),
            ratio(b.load_ratio),
            notes.join("; "),
        ]);
    }
    out.push_str(&render(
        &rows,
        &[false, true, true, true, true, true, true, false],
    ));
    let skew_at = pool
        .skew
        .backend
        .and_then(|i| pool.backends.get(i))
        .map_or(String::new(), |b| format!(" (at {})", b.address));
    if pool.skew_alarmed {
        let verdict = if pool.skew_flagged() {
            format!("! above guard.max_skew {}", pool.max_skew)
        } else {
            format!("within guard.max_skew {}", pool.max_skew)
        };
        let _ = writeln!(out, "  skew {:.2}{skew_at}: {verdict}", pool.skew.value);
    } else {
        let _ = writeln!(
            out,
            "  skew {:.2}{skew_at}: not alarmed, {} follows load rather than weights \
             (virtual time, {} requests in flight, service time 1/capacity)",
            pool.skew.value, pool.algorithm, options.concurrency
        );
    }
    if pool.algorithm == Algorithm::ConsistentHash {
        let _ = writeln!(
            out,
            "  keys {} (key-0 ..), {} of requests without the key",
            options.keys,
            percent(options.key_missing)
        );
    }
    if pool.panic {
        let _ = writeln!(
            out,
            "  ! panic mode: {} of {} backends usable, below panic_threshold: spreading over all of them, down ones included",
            pool.usable, pool.weighted
        );
    }
    if pool.unserved > 0 {
        let whereto = match &pool.backup {
            Some(backup) => format!("go to backup pool {backup:?}"),
            None => "get 503".to_string(),
        };
        let _ = writeln!(
            out,
            "  ! no usable backend: {} requests {whereto}",
            pool.unserved
        );
    }
}

fn to_json(prediction: &Prediction) -> serde_json::Value {
    let options = &prediction.options;
    let keys = |k: &KeyDistribution| k.to_string();
    json!({
        "requests": options.requests,
        "seed": options.seed,
        "down": options.down.iter().map(Down::to_string).collect::<Vec<_>>(),
        "keys": keys(&options.keys),
        "key_missing_percent": options.key_missing * 100.0,
        "concurrency": options.concurrency,
        "pools": prediction.pools.iter().map(|p| json!({
            "pool": p.name,
            "algorithm": p.algorithm.name(),
            "requests": p.requests,
            "unserved": p.unserved,
            "backup": p.backup,
            "panic": p.panic,
            "usable": p.usable,
            "backends_with_weight": p.weighted,
            "skew": p.skew.value,
            "skew_backend": p.skew.backend.and_then(|i| p.backends.get(i)).map(|b| &b.address),
            "skew_alarmed": p.skew_alarmed,
            "skew_flagged": p.skew_flagged(),
            "max_skew": p.max_skew,
            "max_load_ratio": p.max_load_ratio,
            "backends": p.backends.iter().map(|b| json!({
                "address": b.address,
                "weight": b.weight,
                "capacity": b.capacity,
                "down": b.down,
                "requests": b.picks,
                "intended_share": b.intended_share,
                "predicted_share": b.predicted_share,
                "capacity_share": b.capacity_share,
                "load_ratio": b.load_ratio,
                "overloaded": b.overloaded,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
