//! `evenkeel apply`: push a config to a running instance through the same checks and
//! the same atomic swap as any reload.

use std::path::PathBuf;

use anyhow::Context as _;
use http::Method;

use super::client::{print_findings, Admin, AdminArgs};
use super::{CommandResult, Exit, Failure};

/// Push a config to a running evenkeel.
///
/// The instance checks it exactly like `evenkeel check` (errors refuse it; warnings too
/// with --deny-warnings or guard.deny_warnings), and applies it in one atomic swap:
/// requests in flight finish on the old config. A refused config changes nothing and
/// is recorded in the history. Exit 0 applied (or already in force), 1 refused,
/// 3 admin API unreachable or token refused.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel apply -c evenkeel.toml\n  evenkeel apply -c new.toml --admin 127.0.0.1:9901 --token-file admin.token --deny-warnings"
)]
pub struct Args {
    /// The config to apply (its [admin] section also says where to send it, unless
    /// --admin is given).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Refuse the config if it has lint warnings.
    #[arg(long)]
    deny_warnings: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

pub fn run(args: &Args) -> CommandResult {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))
        .map_err(|e| Failure::new(Exit::Usage, e))?;
    let admin = Admin::find(Some(&args.config), &args.admin)?;
    let path = if args.deny_warnings {
        "/config?deny_warnings=true"
    } else {
        "/config"
    };
    let answer = admin.call(Method::POST, path, Some(text))?;
    let file = args.config.display();
    match (answer.status, answer.json["result"].as_str()) {
        (200, Some("applied")) => {
            print_findings(&answer.json["warnings"], &args.config);
            println!("applied {file} as version {}", answer.json["version"]);
            Ok(Exit::Success)
        }
        (200, Some("unchanged")) => {
            println!(
                "{file} is the config in force already (version {})",
                answer.json["version"]
            );
            Ok(Exit::Success)
        }
        (422, _) => {
            print_findings(&answer.json["findings"], &args.config);
            if let Some(reason) = answer.json["reason"].as_str() {
                println!("reason: {reason}");
            }
            let version = answer.json["version"]
                .as_u64()
                .map_or(String::new(), |v| format!(" (recorded as version {v})"));
            println!("refused {file}{version}: the running config is unchanged");
            Ok(Exit::Rejected)
        }
        (status, _) => Err(Failure::new(
            Exit::Runtime,
            anyhow::anyhow!("unexpected answer {status}: {}", answer.json),
        )),
    }
}
