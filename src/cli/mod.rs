//! The command line: one file per subcommand. Commands return an [`Exit`] code; errors
//! that reach here are printed with their whole cause chain.
//!
//! Exit codes (DESIGN.md contract): 0 success; 1 the input was read and rejected;
//! 2 usage error or a file that cannot be read at all; 3 runtime failure.

// First: its macros (`out!`, `outln!`) serve the modules below.
#[macro_use]
mod out;
mod apply;
mod check;
mod client;
mod completions;
mod demo;
mod descriptors;
mod explain;
mod failures;
mod fleet;
mod history;
mod import;
mod loadtest;
mod plan;
mod preflight;
mod report;
mod rollback;
mod serve;
mod simulate;
mod status;
mod systemd;
mod table;
mod traffic;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Success = 0,
    /// 1: the input was read and rejected.
    Rejected = 1,
    /// 2: usage error, or a file that cannot be read.
    Usage = 2,
    /// 3: runtime failure (cannot bind, admin unreachable, 401).
    Runtime = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// evenkeel: an HTTP load balancer that makes a bad configuration hard to ship, quick
/// to see and cheap to undo.
#[derive(Debug, Parser)]
#[command(name = "evenkeel", version = env!("EVENKEEL_VERSION"), about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Apply(apply::Args),
    Check(check::Args),
    Demo(demo::Args),
    Explain(explain::Args),
    Fleet(fleet::Args),
    History(history::Args),
    Import(import::Args),
    Rollback(rollback::Args),
    Loadtest(loadtest::Args),
    Plan(plan::Args),
    Preflight(preflight::Args),
    Serve(serve::Args),
    Simulate(simulate::Args),
    Status(status::Args),
    Report(report::Args),
    Completions(completions::CompletionsArgs),
    Manpage(completions::ManpageArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let exit = match cli.command {
        Command::Apply(args) => apply::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Fleet(args) => fleet::run(&args),
        Command::History(args) => history::run(&args),
        Command::Import(args) => import::run(&args),
        Command::Rollback(args) => rollback::run(&args),
        Command::Loadtest(args) => loadtest::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Preflight(args) => preflight::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Simulate(args) => simulate::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Completions(args) => completions::completions(&args),
        Command::Manpage(args) => completions::manpage(&args),
    };
    match exit {
        Ok(exit) => exit.into(),
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            failure.exit.into()
        }
    }
}

/// An error that ends a command, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong, with its causes.
    pub error: anyhow::Error,
    /// The exit code.
    pub exit: Exit,
}

impl Failure {
    /// A failure that exits with `exit`.
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            error: error.into(),
            exit,
        }
    }
}

/// What a command returns.
pub type CommandResult = Result<Exit, Failure>;

/// Sends logs to stderr through a background writer, so a slow terminal or pipe never
/// slows the request path (lines are dropped rather than waited for when it falls far
/// behind). RUST_LOG filters (default `info`); `access_log = false` silences the
/// per-request lines (target `evenkeel::access`). Keep the guard until exit.
/// How evenkeel's own log lines (not the access log) are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event: time, level, target, message, fields.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields.message` and
    /// the event's other fields), for a log collector.
    Json,
}

pub fn init_logging(
    access_log: bool,
    format: LogFormat,
) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if !access_log {
        if let Ok(off) = "evenkeel::access=off".parse() {
            filter = filter.add_directive(off);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}

/// SIGTERM, SIGINT, SIGHUP and SIGUSR1, caught from the moment this is created. Create it before
/// announcing anything (`listening ...`): a signal sent between the announcement and the
/// handler's installation would otherwise meet the default action and kill the process.
pub struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (term, int, hup, usr1) = {
            let _entered = rt.enter();
            (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
                signal(SignalKind::hangup())?,
                signal(SignalKind::user_defined1())?,
            )
        };
        Ok(Signals {
            rt,
            term,
            int,
            hup,
            usr1,
        })
    }

    /// Blocks until SIGTERM or SIGINT (or `limit`, when given), calling `on_hangup` for
    /// each SIGHUP and reopening the access log for each SIGUSR1.
    pub fn wait(mut self, limit: Option<std::time::Duration>, mut on_hangup: impl FnMut()) {
        let Signals {
            rt,
            term,
            int,
            hup,
            usr1,
        } = &mut self;
        rt.block_on(async {
            let deadline = async {
                match limit {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = term.recv() => return,
                    _ = int.recv() => return,
                    _ = &mut deadline => return,
                    _ = hup.recv() => on_hangup(),
                    // logrotate moved the access log away: write to a new file.
                    _ = usr1.recv() => crate::proxy::access::reopen(),
                }
            }
        });
    }
}
