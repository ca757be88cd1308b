//! `evenkeel import --from nginx|haproxy FILE`: another load balancer's config written
//! as an evenkeel config.

use std::io::Write as _;
use std::path::PathBuf;

use super::check::{audit, print_report, Foreign, Format};
use super::{CommandResult, Exit, Failure};
use crate::config::diagnostic::Severity;
use crate::config::foreign::{self, nginx::APPROXIMATE, nginx::NOT_TRANSLATED};

/// Write the evenkeel config equivalent to an NGINX or HAProxy config.
///
/// Each part of the output is preceded by a comment naming the source line it came
/// from; the top lists what was not translated and what was translated only
/// approximately. Nothing is written, and the exit code is 1, when something was not
/// translated (unless --allow-partial) or when the translation does not pass `check`;
/// 2 when the file cannot be read.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  evenkeel import --from haproxy /etc/haproxy/haproxy.cfg -o evenkeel.toml\n  evenkeel import --from nginx /etc/nginx/nginx.conf --allow-partial > evenkeel.toml"
)]
pub struct Args {
    /// The product the file is written for.
    #[arg(long, value_enum, value_name = "PRODUCT")]
    from: Foreign,
    /// The file to translate (NGINX: its includes are read too; HAProxy: a file or a
    /// folder of `*.cfg` files).
    #[arg(short, long, value_name = "FILE", required_unless_present = "file")]
    config: Option<PathBuf>,
    /// The file to translate (instead of -c).
    #[arg(value_name = "FILE", conflicts_with = "config")]
    file: Option<PathBuf>,
    /// Where to write the evenkeel config (replaced whole); standard output without it.
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Write the config even when some statements were not translated (they are
    /// listed at its top).
    #[arg(long)]
    allow_partial: bool,
}

pub fn run(args: &Args) -> CommandResult {
    let Some(path) = args.config.as_ref().or(args.file.as_ref()) else {
        return Err(Failure::new(
            Exit::Usage,
            anyhow::anyhow!("name the file: -c FILE"),
        ));
    };
    let (translated, report) = audit(args.from, path)?;
    let product = foreign::Product::from(args.from).name();
    if report.count(Severity::Error) > 0 {
        print_report(&report, Format::Text, path, args.from);
        eprintln!("error: the translation does not pass evenkeel check (above): nothing written");
        return Ok(Exit::Rejected);
    }
    let count = |rule: &str| {
        translated
            .notes
            .iter()
            .filter(|(_, f)| f.rule == rule)
            .count()
    };
    let (missing, approximate) = (count(NOT_TRANSLATED), count(APPROXIMATE));
    let text = foreign::annotated(&translated);
    if missing > 0 && !args.allow_partial {
        // The list, as the output would have begun.
        for line in text.lines().skip(1).take_while(|l| l.starts_with('#')) {
            eprintln!("{}", line.trim_start_matches('#').trim_start_matches(' '));
        }
        eprintln!("error: {missing} statement(s) of {} were not translated (listed above): nothing written; --allow-partial writes the config without them", path.display());
        return Ok(Exit::Rejected);
    }
    match &args.output {
        Some(out) => write_whole(out, &text).map_err(|e| {
            Failure::new(
                Exit::Usage,
                anyhow::anyhow!("cannot write {}: {e}", out.display()),
            )
        })?,
        None => super::out::write_bytes(text.as_bytes()),
    }
    let config = report.checked.config.as_ref();
    let warnings = report.count(Severity::Warning);
    eprintln!(
        "imported {} from {} ({product}): {} listener(s), {} pool(s); {missing} statement(s) not translated, {approximate} approximately; {warnings} warning(s) (evenkeel check -c {} shows them)",
        args.output.as_ref().map_or("to standard output".to_string(), |o| format!("to {}", o.display())),
        path.display(),
        config.map_or(0, |c| c.listeners.len()),
        config.map_or(0, |c| c.pools.len()),
        args.output.as_ref().map_or("FILE".to_string(), |o| o.display().to_string()),
    );
    Ok(Exit::Success)
}

/// Writes `text` to `path` through a temporary file beside it, renamed over it: a
/// reader never sees half a file.
fn write_whole(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let folder = crate::config::folder_of(path);
    let mut temporary = tempfile::NamedTempFile::new_in(&folder)?;
    temporary.write_all(text.as_bytes())?;
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|e| e.error)?;
    Ok(())
}
