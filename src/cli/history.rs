//! `evenkeel history`: every config version applied or refused.

use std::path::PathBuf;

use http::Method;

use super::client::{Admin, AdminArgs};
use super::{CommandResult, Exit, Failure};
use crate::store::Version;

/// List the config versions of a running evenkeel, oldest first; `*` marks the one in
/// force.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel history -c evenkeel.toml\n  evenkeel history -c evenkeel.toml --format json | jq '.versions[-1].text'"
)]
pub struct Args {
    /// A config file whose `[admin]` section says where the instance is.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format (json includes each version's full text).
    #[arg(long, value_enum, default_value_t = super::check::Format::Text)]
    format: super::check::Format,
    #[command(flatten)]
    admin: AdminArgs,
}

pub fn run(args: &Args) -> CommandResult {
    let admin = Admin::find(args.config.as_deref(), &args.admin)?;
    let answer = admin.call(Method::GET, "/config/history", None)?;
    if answer.status != 200 {
        return Err(Failure::new(
            Exit::Runtime,
            anyhow::anyhow!("unexpected answer {}: {}", answer.status, answer.json),
        ));
    }
    if matches!(args.format, super::check::Format::Json) {
        outln!(
            "{}",
            serde_json::to_string_pretty(&answer.json).unwrap_or_default()
        );
        return Ok(Exit::Success);
    }
    let current = answer.json["current"].as_u64();
    let versions: Vec<Version> = serde_json::from_value(answer.json["versions"].clone())
        .map_err(|e| Failure::new(Exit::Runtime, anyhow::anyhow!("unexpected history: {e}")))?;
    // In a fleet, which node wrote each version.
    let fleet = versions.iter().any(|v| v.node.is_some());
    let width = versions
        .iter()
        .filter_map(|v| v.node.as_deref().map(str::len))
        .max()
        .unwrap_or(0)
        .max(4);
    let node_of = |v: &Version| match fleet {
        true => format!("{:<width$}  ", v.node.as_deref().unwrap_or("-")),
        false => String::new(),
    };
    let node_header = if fleet {
        format!("{:<width$}  ", "node")
    } else {
        String::new()
    };
    outln!(
        "  {:>7}  {:<24}  {:<8}  {:<7}  {:<12}  {node_header}note",
        "version",
        "time",
        "origin",
        "result",
        "sha256"
    );
    for v in &versions {
        let mark = if Some(v.id) == current { "*" } else { " " };
        let note = match v.restores {
            Some(r) => format!("restores version {r}"),
            None => v.detail.lines().next().unwrap_or("").to_string(),
        };
        outln!(
            "{mark} {:>7}  {:<24}  {:<8}  {:<7}  {:<12}  {}{note}",
            v.id,
            v.time,
            v.origin.as_str(),
            v.outcome.as_str(),
            &v.sha256[..12.min(v.sha256.len())],
            node_of(v)
        );
    }
    Ok(Exit::Success)
}
