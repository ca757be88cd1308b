//! `evenkeel fleet status`: the nodes of a fleet, the version each serves, and the
//! stragglers — asked of any node's admin API (`GET /fleet`), which reads etcd.

use std::path::PathBuf;

use http::Method;

use super::client::{Admin, AdminArgs};
use super::{CommandResult, Exit, Failure};
use crate::fleet::status::FleetStatus;

/// Commands about the fleet this instance belongs to (`[store] kind = "etcd"`).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(Debug, clap::Subcommand)]
enum FleetCommand {
    Status(StatusArgs),
}

/// List the nodes of the fleet: the version each serves, refusals, alarms and last
/// heartbeat; `*` marks the node that answered. A straggler is a node not serving the
/// fleet's version in force (behind, or it refused it). Exit 0 when the fleet could be
/// read; 3 when the node or its etcd cannot be reached.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel fleet status -c evenkeel.toml\n  evenkeel fleet status -c evenkeel.toml --format json | jq '.stragglers'"
)]
struct StatusArgs {
    /// A config file whose `[admin]` section says where a node is.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = super::check::Format::Text)]
    format: super::check::Format,
    #[command(flatten)]
    admin: AdminArgs,
}

pub fn run(args: &Args) -> CommandResult {
    match &args.command {
        FleetCommand::Status(args) => status(args),
    }
}

fn status(args: &StatusArgs) -> CommandResult {
    let admin = Admin::find(args.config.as_deref(), &args.admin)?;
    let answer = admin.call(Method::GET, "/fleet", None)?;
    if answer.status != 200 {
        let error = answer.json["error"].as_str().unwrap_or("unexpected answer");
        return Err(Failure::new(
            Exit::Runtime,
            anyhow::anyhow!("{} answered {}: {error}", admin.addr(), answer.status),
        ));
    }
    if matches!(args.format, super::check::Format::Json) {
        outln!(
            "{}",
            serde_json::to_string_pretty(&answer.json).unwrap_or_default()
        );
        return Ok(Exit::Success);
    }
    let fleet: FleetStatus = serde_json::from_value(answer.json)
        .map_err(|e| Failure::new(Exit::Runtime, anyhow::anyhow!("unexpected answer: {e}")))?;
    out!("{}", render(&fleet));
    Ok(Exit::Success)
}

/// The text form of `fleet`.
fn render(fleet: &FleetStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let stragglers = match fleet.stragglers.len() {
        0 => "no straggler".to_string(),
        1 => format!("1 straggler ({})", fleet.stragglers[0]),
        n => format!("{n} stragglers ({})", fleet.stragglers.join(", ")),
    };
    let _ = writeln!(
        out,
        "fleet {}: version {} in force; {} node(s), {stragglers}",
        fleet.prefix,
        fleet.version,
        fleet.nodes.len()
    );
    if let Some(rollout) = &fleet.rollout {
        let state = match rollout.state {
            crate::fleet::rollout::State::Canary => "in progress".to_string(),
            crate::fleet::rollout::State::Promoted => format!("promoted: {}", rollout.reason),
            crate::fleet::rollout::State::RolledBack => format!("rolled back: {}", rollout.reason),
        };
        let verdicts: Vec<String> = fleet
            .verdicts
            .iter()
            .map(|(node, v)| format!("{node} {:?}", v.verdict).to_lowercase())
            .collect();
        let verdicts = if verdicts.is_empty() {
            String::new()
        } else {
            format!(" [verdicts: {}]", verdicts.join(", "))
        };
        let _ = writeln!(
            out,
            "rollout of version {} (from {}) to canaries {}: {state}{verdicts}",
            rollout.version,
            rollout.previous,
            rollout.canaries.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  {:<20} {:>7}  {:<21}  {:<24}  note",
        "node", "version", "admin", "heartbeat"
    );
    for node in &fleet.nodes {
        let mark = if node.node == fleet.node { "*" } else { " " };
        let mut notes = Vec::new();
        if let Some(refusal) = &node.refusal {
            notes.push(format!(
                "refused version {}: {}",
                refusal.version, refusal.reason
            ));
        } else if node.version != fleet.version {
            notes.push("behind".to_string());
        }
        if !node.alarms.is_empty() {
            notes.push(format!("alarms: {}", node.alarms.join(", ")));
        }
        let _ = writeln!(
            out,
            "{mark} {:<20} {:>7}  {:<21}  {:<24}  {}",
            node.node,
            node.version,
            node.admin.as_deref().unwrap_or("-"),
            node.heartbeat,
            notes.join("; ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::status::NodeReport;
    use crate::fleet::Refusal;

    fn node(id: &str, version: u64) -> NodeReport {
        NodeReport {
            node: id.into(),
            admin: Some("127.0.0.1:9901".into()),
            version,
            refusal: None,
            alarms: Vec::new(),
            heartbeat: "2026-12-01T00:00:00.000Z".into(),
            started: "2026-12-01T00:00:00Z".into(),
            pid: 1,
        }
    }

    #[test]
    fn stragglers_are_named_with_why() {
        let mut c = node("c", 6);
        c.refusal = Some(Refusal {
            version: 7,
            reason: "error[invalid-file]: site.pem missing".into(),
        });
        let mut b = node("b", 6);
        b.alarms = vec!["store_unreachable".into()];
        let fleet = FleetStatus {
            prefix: "/evenkeel/prod".into(),
            version: 7,
            node: "a".into(),
            nodes: vec![node("a", 7), b, c],
            stragglers: vec!["b".into(), "c".into()],
            rollout: None,
            verdicts: Vec::new(),
        };
        let text = render(&fleet);
        assert!(
            text.starts_with(
                "fleet /evenkeel/prod: version 7 in force; 3 node(s), 2 stragglers (b, c)"
            ),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with("* a "), "{text}");
        assert!(
            lines[3].contains("behind; alarms: store_unreachable"),
            "{text}"
        );
        assert!(
            lines[4].contains("refused version 7: error[invalid-file]: site.pem missing"),
            "{text}"
        );
    }
}
