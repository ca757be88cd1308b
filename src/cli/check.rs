//! `evenkeel check`: parse, validate and lint a config; print the findings.

use std::path::PathBuf;

use super::{CommandResult, Exit, Failure};
use crate::config::{self, diagnostic};

/// Parse, validate and lint a config file, and print what is wrong with it.
///
/// Exit code 0 when the config can be served, 1 when it has errors (or warnings under
/// --deny-warnings), 2 when the file cannot be read.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel check -c evenkeel.toml --deny-warnings\n  evenkeel check -c evenkeel.toml --format json | jq '.[].rule'\n  evenkeel check -c evenkeel.toml --coverage\n  evenkeel check -c evenkeel.toml --traffic status.json   # the split saved from `evenkeel status --format json`"
)]
pub struct Args {
    /// The config file.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Treat warnings as errors (exit 1 when there is any).
    #[arg(long)]
    deny_warnings: bool,
    /// Also print, per pool, which mechanism takes a failing backend out of traffic
    /// for each kind of failure, and how soon (text output only).
    #[arg(long)]
    coverage: bool,
    #[command(flatten)]
    traffic: super::traffic::TrafficArgs,
}

/// How findings are printed.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// rustc-style diagnostics and a summary line.
    Text,
    /// A JSON array of findings.
    Json,
}

pub fn run(args: &Args) -> CommandResult {
    let traffic = args.traffic.observed(false, &args.config)?;
    let checked = config::check_file_with(&args.config, traffic.as_ref())
        .map_err(|e| Failure::new(Exit::Usage, e))?;
    if let Some(config) = &checked.config {
        super::traffic::matching(traffic.as_ref(), config)?;
    }
    print_findings(&checked, args.format);
    if let (true, Format::Text, Some(config)) = (args.coverage, args.format, &checked.config) {
        println!("\nfailure-detection coverage:");
        print!("{}", config::lint::coverage::render(config));
    }
    Ok(if checked.is_rejected(args.deny_warnings) {
        Exit::Rejected
    } else {
        Exit::Success
    })
}

/// Prints a checked config's findings as `check` does: rustc-style text with a summary
/// line, or the JSON array. `simulate` and `plan` print refused configs with it too.
pub(super) fn print_findings(checked: &config::Checked, format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            diagnostic::render_json(&checked.source, &checked.findings)
        ),
        Format::Text => {
            print!(
                "{}",
                diagnostic::render_text(&checked.source, &checked.findings)
            );
            println!("{}", summary(checked));
        }
    }
}

pub(super) fn summary(checked: &config::Checked) -> String {
    let file = checked.source.path.display();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let (errors, warnings) = (checked.errors(), checked.warnings());
    match &checked.config {
        Some(c) if errors == 0 => {
            let backends: usize = c.pools.iter().map(|p| p.backends.len()).sum();
            // A TCP listener's pool is its route in the model, not one the file writes.
            let tcp = c
                .listeners
                .iter()
                .filter(|l| l.mode == crate::config::ListenerMode::Tcp)
                .count();
            let listeners = match tcp {
                0 => plural(c.listeners.len(), "listener"),
                n => format!("{} ({n} TCP)", plural(c.listeners.len(), "listener")),
            };
            format!(
                "{file}: ok: {}, {}, {}, {}; {}",
                listeners,
                plural(c.routes.len() - tcp, "route"),
                plural(c.pools.len(), "pool"),
                plural(backends, "backend"),
                plural(warnings, "warning"),
            )
        }
        _ => format!(
            "{file}: rejected: {}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        ),
    }
}
