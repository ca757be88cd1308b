//! The command line: one file per subcommand. Commands return an [`Exit`] code; errors
//! that reach here are printed with their whole cause chain.
//!
//! Exit codes (DESIGN.md contract): 0 success; 1 the input was read and rejected;
//! 2 usage error or a file that cannot be read at all; 3 runtime failure.

mod check;
mod explain;

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
#[command(name = "evenkeel", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Check(check::Args),
    Explain(explain::Args),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let exit = match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Explain(args) => explain::run(&args),
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
