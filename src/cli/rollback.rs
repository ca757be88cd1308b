//! `evenkeel rollback`: go back to an earlier config version.

use std::path::PathBuf;

use http::Method;

use super::client::{print_findings, Admin, AdminArgs};
use super::{CommandResult, Exit, Failure};

/// Roll a running evenkeel back to an earlier config.
///
/// Without --to, goes back to the previous good version: the last applied version
/// before the one in force whose config differs. The old text goes through the same
/// checks and swap as any apply, and becomes a new version in the history. Exit 0 rolled
/// back, 1 refused or nothing to roll back to, 3 admin API unreachable.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel rollback -c evenkeel.toml\n  evenkeel rollback -c evenkeel.toml --to 3"
)]
pub struct Args {
    /// A config file whose `[admin]` section says where the instance is.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The version to go back to (see `evenkeel history`).
    #[arg(long, value_name = "VERSION")]
    to: Option<u64>,
    #[command(flatten)]
    admin: AdminArgs,
}

pub fn run(args: &Args) -> CommandResult {
    let admin = Admin::find(args.config.as_deref(), &args.admin)?;
    let path = match args.to {
        Some(v) => format!("/config/rollback?to={v}"),
        None => "/config/rollback".to_string(),
    };
    let answer = admin.call(Method::POST, &path, None)?;
    match (answer.status, answer.json["result"].as_str()) {
        (200, Some("applied")) => {
            outln!(
                "rolled back: the config in force is now version {}",
                answer.json["version"]
            );
            Ok(Exit::Success)
        }
        (200, Some("unchanged")) => {
            outln!(
                "that config is in force already (version {})",
                answer.json["version"]
            );
            Ok(Exit::Success)
        }
        (422, _) => {
            print_findings(&answer.json["findings"], &PathBuf::from("rollback"));
            if let Some(reason) = answer.json["reason"].as_str() {
                outln!("reason: {reason}");
            }
            outln!("rollback refused: the running config is unchanged");
            Ok(Exit::Rejected)
        }
        (404 | 409, _) => {
            eprintln!(
                "error: {}",
                answer.json["error"].as_str().unwrap_or("rollback refused")
            );
            Ok(Exit::Rejected)
        }
        (status, _) => Err(Failure::new(
            Exit::Runtime,
            anyhow::anyhow!("unexpected answer {status}: {}", answer.json),
        )),
    }
}
