//! `evenkeel check`: parse, validate and lint a config; print the findings.

use std::path::PathBuf;

use super::{CommandResult, Exit, Failure};
use crate::config::{self, diagnostic};

/// Parse, validate and lint a config file, and print what is wrong with it.
///
/// Exit code 0 when the config can be served, 1 when it has errors (or warnings under
/// --deny-warnings), 2 when the file cannot be read.
///
/// With `--from nginx` or `--from haproxy`, the file is that product's config (NGINX's
/// includes read too): it is translated into evenkeel's model and judged by the same
/// rules, each finding at the file and line it came from, with help in that product's
/// terms; what could not be translated is a note at its line.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel check -c evenkeel.toml --deny-warnings\n  evenkeel check --from nginx /etc/nginx/nginx.conf\n  evenkeel check --from haproxy /etc/haproxy/haproxy.cfg\n  evenkeel check -c evenkeel.toml --format json | jq '.[].rule'\n  evenkeel check -c evenkeel.toml --coverage\n  evenkeel check -c evenkeel.toml --traffic status.json   # the split saved from `evenkeel status --format json`"
)]
pub struct Args {
    /// The config file.
    #[arg(short, long, value_name = "FILE", required_unless_present = "file")]
    config: Option<PathBuf>,
    /// The config file (instead of -c).
    #[arg(value_name = "FILE", conflicts_with = "config")]
    file: Option<PathBuf>,
    /// Read another load balancer's config: `nginx` (open source; its `include`s are
    /// read too, relative to the file's folder as NGINX's prefix) or `haproxy` (a
    /// file, or a folder of `*.cfg` files as `haproxy -f DIR` reads).
    #[arg(long, value_enum, value_name = "PRODUCT", conflicts_with_all = ["coverage", "traffic"])]
    from: Option<Foreign>,
    /// With --from: silence a rule, with the reason shown in its findings (what
    /// `[lint.allow]` does in evenkeel's own configs), e.g.
    /// --allow load-ratio="the big server has 18 cores". Repeatable.
    #[arg(long, value_name = "RULE=REASON", requires = "from", value_parser = parse_allow)]
    allow: Vec<(String, String)>,
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

/// A product whose configs `check --from`, `plan --from` and `import --from` read.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Foreign {
    /// NGINX (open source).
    Nginx,
    /// HAProxy.
    Haproxy,
}

impl From<Foreign> for config::foreign::Product {
    fn from(product: Foreign) -> Self {
        match product {
            Foreign::Nginx => config::foreign::Product::Nginx,
            Foreign::Haproxy => config::foreign::Product::Haproxy,
        }
    }
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
    let Some(path) = args.config.as_ref().or(args.file.as_ref()) else {
        return Err(Failure::new(
            Exit::Usage,
            anyhow::anyhow!("name the config: -c FILE"),
        ));
    };
    if let Some(product) = args.from {
        return run_foreign(args, product, path);
    }
    let traffic = args.traffic.observed(false, path)?;
    let checked = config::check_file_with(path, traffic.as_ref())
        .map_err(|e| Failure::new(Exit::Usage, e))?;
    if let Some(config) = &checked.config {
        super::traffic::matching(traffic.as_ref(), config)?;
    }
    print_findings(&checked, args.format);
    if let (true, Format::Text, Some(config)) = (args.coverage, args.format, &checked.config) {
        outln!("\nfailure-detection coverage:");
        out!("{}", config::lint::coverage::render(config));
    }
    Ok(if checked.is_rejected(args.deny_warnings) {
        Exit::Rejected
    } else {
        Exit::Success
    })
}

/// `--allow RULE=REASON`: a rule `explain` knows, and a reason.
fn parse_allow(text: &str) -> Result<(String, String), String> {
    let (rule, reason) = text
        .split_once('=')
        .filter(|(_, reason)| !reason.trim().is_empty())
        .ok_or("expected RULE=REASON, such as load-ratio=\"the big server has 18 cores\"")?;
    if config::lint::rule(rule).is_none() {
        return Err(format!(
            "{rule:?} is not a rule (evenkeel explain lists them)"
        ));
    }
    Ok((rule.to_string(), reason.to_string()))
}

/// `check --from PRODUCT`.
fn run_foreign(args: &Args, product: Foreign, path: &std::path::Path) -> CommandResult {
    let (_, mut report) = audit(product, path)?;
    for (_, finding) in &mut report.findings {
        if let Some((_, reason)) = args.allow.iter().find(|(rule, _)| rule == finding.rule) {
            finding.allowed = Some(reason.clone());
        }
    }
    print_report(&report, args.format, path, product);
    let errors = report.count(diagnostic::Severity::Error);
    let warnings = report.count(diagnostic::Severity::Warning);
    Ok(if errors > 0 || (args.deny_warnings && warnings > 0) {
        Exit::Rejected
    } else {
        Exit::Success
    })
}

/// Reads, translates and checks another product's config; a file that cannot be read
/// is a usage error (exit 2), one the product itself would refuse exit 1.
pub(super) fn audit(
    product: Foreign,
    path: &std::path::Path,
) -> Result<(config::foreign::Translated, config::foreign::Report), Failure> {
    use config::foreign::{self, ParseError};
    foreign::audit(product.into(), path).map_err(|e| match e {
        ParseError::File(e) => Failure::new(Exit::Usage, e),
        syntax => Failure::new(Exit::Rejected, anyhow::anyhow!("{syntax}")),
    })
}

/// Prints the findings of a translated config on its own files: rustc-style text with
/// a summary line, or the JSON array.
pub(super) fn print_report(
    report: &config::foreign::Report,
    format: Format,
    path: &std::path::Path,
    product: Foreign,
) {
    let on_file = |i: usize| -> Vec<diagnostic::Finding> {
        report
            .findings
            .iter()
            .filter(|(file, _)| *file == i)
            .map(|(_, f)| f.clone())
            .collect()
    };
    match format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = report
                .sources
                .iter()
                .enumerate()
                .flat_map(|(i, source)| {
                    diagnostic::json_findings(source, &on_file(i))
                        .into_iter()
                        .filter_map(|row| serde_json::to_value(row).ok())
                        .collect::<Vec<_>>()
                })
                .collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        }
        Format::Text => {
            for (i, source) in report.sources.iter().enumerate() {
                out!("{}", diagnostic::render_text(source, &on_file(i)));
            }
            let (errors, warnings, notes) = (
                report.count(diagnostic::Severity::Error),
                report.count(diagnostic::Severity::Warning),
                report.count(diagnostic::Severity::Note),
            );
            outln!(
                "{}: read as {} ({} file(s)): {errors} error(s), {warnings} warning(s), {notes} note(s) on what is not translated or only approximately",
                path.display(),
                config::foreign::Product::from(product).name(),
                report.sources.len()
            );
        }
    }
}

/// Prints a checked config's findings as `check` does: rustc-style text with a summary
/// line, or the JSON array. `simulate` and `plan` print refused configs with it too.
pub(super) fn print_findings(checked: &config::Checked, format: Format) {
    match format {
        Format::Json => outln!(
            "{}",
            diagnostic::render_json(&checked.source, &checked.findings)
        ),
        Format::Text => {
            out!(
                "{}",
                diagnostic::render_text(&checked.source, &checked.findings)
            );
            outln!("{}", summary(checked));
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
