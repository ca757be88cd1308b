//! `evenkeel apply`: push a config to a running instance through the same checks and
//! the same atomic swap as any reload.

use std::path::PathBuf;

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
///
/// In a fleet (`[store] kind = "etcd"`), the change reaches every node; with
/// `--canary N` or `--canary P%` it goes to N nodes (or P percent, rounded up) first
/// and to the rest only if every canary's guard holds for `guard.watch` (a canary with
/// fewer than `guard.min_requests` requests fails the rollout). Exit 1 also on a
/// conflict (another apply changed the fleet's version first).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel apply -c evenkeel.toml\n  evenkeel apply -c new.toml --admin 127.0.0.1:9901 --token-file admin.token --deny-warnings\n  evenkeel apply -c new.toml --canary 10% --wait    # a fleet: canaries first"
)]
pub struct Args {
    /// The config to apply (its `[admin]` section also says where to send it, unless
    /// --admin is given).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Refuse the config if it has lint warnings.
    #[arg(long)]
    deny_warnings: bool,
    /// The change moves traffic between backends on purpose: the guard does not roll it
    /// back for shift (it still does for errors, latency, skew and load ratio).
    #[arg(long)]
    expect_shift: bool,
    /// Apply even a config that the guard rolled back before.
    #[arg(long)]
    force: bool,
    /// Wait until the guard has judged the change (guard.watch); exit 1 if it rolled
    /// it back. With --canary: until the rollout is promoted (exit 0) or rolled back
    /// (exit 1).
    #[arg(long)]
    wait: bool,
    /// In a fleet: stage the change on N nodes (or P percent of them, rounded up; at
    /// least 1, at most all but one) and promote it to every node only if their guards
    /// hold.
    #[arg(long, value_name = "N|P%", value_parser = parse_canary)]
    canary: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

pub fn run(args: &Args) -> CommandResult {
    let text = crate::config::files::read_config(&args.config)
        .map_err(|e| Failure::new(Exit::Usage, e))?;
    let admin = Admin::find(Some(&args.config), &args.admin)?;
    let flags: Vec<&str> = [
        ("deny_warnings", args.deny_warnings),
        ("expect_shift", args.expect_shift),
        ("force", args.force),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| name)
    .collect();
    let mut query: Vec<String> = flags.iter().map(|f| format!("{f}=true")).collect();
    if let Some(canary) = &args.canary {
        query.push(format!("canary={}", canary.replace('%', "%25")));
    }
    let path = if query.is_empty() {
        "/config".to_string()
    } else {
        format!("/config?{}", query.join("&"))
    };
    let started = std::time::SystemTime::now();
    let answer = admin.call(Method::POST, &path, Some(text))?;
    let file = args.config.display();
    match (answer.status, answer.json["result"].as_str()) {
        (200, Some("applied")) => {
            print_findings(&answer.json["warnings"], &args.config);
            outln!("applied {file} as version {}", answer.json["version"]);
            match (args.wait, answer.json["version"].as_u64()) {
                (true, Some(version)) => {
                    wait_for_guard(&admin, version, started, answer.json["node"].as_str())
                }
                _ => Ok(Exit::Success),
            }
        }
        (200, Some("staged")) => {
            let rollout = &answer.json["rollout"];
            let canaries: Vec<&str> = rollout["canaries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str())
                .collect();
            outln!(
                "staged {file} as version {} on canaries {}; every node gets it if their guards hold",
                answer.json["version"],
                canaries.join(", ")
            );
            match (args.wait, answer.json["version"].as_u64()) {
                (true, Some(version)) => wait_for_rollout(&admin, version),
                _ => Ok(Exit::Success),
            }
        }
        (200, Some("unchanged")) => {
            outln!(
                "{file} is the config in force already (version {})",
                answer.json["version"]
            );
            Ok(Exit::Success)
        }
        (503, _) => Err(Failure::new(
            Exit::Runtime,
            anyhow::anyhow!(
                "not applied {file}: {}",
                answer.json["error"]
                    .as_str()
                    .unwrap_or("the fleet store is unavailable")
            ),
        )),
        (409, _) => {
            outln!(
                "not applied {file}: {}",
                answer.json["error"].as_str().unwrap_or("conflict")
            );
            Ok(Exit::Rejected)
        }
        (422, _) => {
            print_findings(&answer.json["findings"], &args.config);
            if let Some(reason) = answer.json["reason"].as_str() {
                outln!("reason: {reason}");
            }
            let version = answer.json["version"]
                .as_u64()
                .map_or(String::new(), |v| format!(" (recorded as version {v})"));
            outln!("refused {file}{version}: the running config is unchanged");
            Ok(Exit::Rejected)
        }
        (status, _) => Err(Failure::new(
            Exit::Runtime,
            anyhow::anyhow!("unexpected answer {status}: {}", answer.json),
        )),
    }
}

/// `--canary`: a number of nodes or a percentage.
fn parse_canary(text: &str) -> Result<String, String> {
    crate::fleet::rollout::CanarySize::parse(text).map(|_| text.to_string())
}

/// Polls the fleet until the rollout of `version` ends: exit 0 promoted, 1 rolled back;
/// gives up after 15 minutes.
fn wait_for_rollout(admin: &Admin, version: u64) -> CommandResult {
    outln!("waiting for the canaries' guards to judge version {version}...");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    while std::time::Instant::now() < deadline {
        let answer = admin.call(Method::GET, "/fleet", None)?;
        let rollout = &answer.json["rollout"];
        if answer.status == 200 && rollout["version"].as_u64() == Some(version) {
            let reason = rollout["reason"].as_str().unwrap_or("");
            match rollout["state"].as_str() {
                Some("promoted") => {
                    outln!("version {version} promoted to every node: {reason}");
                    return Ok(Exit::Success);
                }
                Some("rolled_back") => {
                    outln!("version {version} rolled back on the canaries: {reason}");
                    return Ok(Exit::Rejected);
                }
                _ => {}
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Err(Failure::new(
        Exit::Runtime,
        anyhow::anyhow!("the rollout of version {version} did not end within 15 minutes"),
    ))
}

/// Polls the journal until the guard judges `version`: exit 0 when it held, 1 when it
/// was rolled back; gives up after 15 minutes. In a fleet (`node`: the node that
/// applied it) every node's guard judges: a rollback by any of them is the verdict,
/// and a pass counts when it is the applying node's.
fn wait_for_guard(
    admin: &Admin,
    version: u64,
    started: std::time::SystemTime,
    node: Option<&str>,
) -> CommandResult {
    outln!("waiting for the guard to judge version {version}...");
    let since =
        humantime::format_rfc3339_millis(started - std::time::Duration::from_secs(1)).to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    while std::time::Instant::now() < deadline {
        let answer = admin.call(Method::GET, &format!("/events?since={since}"), None)?;
        let verdicts: Vec<&serde_json::Value> = answer.json["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == "guard" && e["data"]["version"].as_u64() == Some(version))
            .collect();
        let verdict = verdicts
            .iter()
            .find(|e| e["data"]["verdict"] != "passed")
            .or_else(|| verdicts.iter().find(|e| e["node"].as_str() == node));
        if let Some(event) = verdict {
            outln!("{}", event["message"].as_str().unwrap_or(""));
            return Ok(if event["data"]["verdict"] == "passed" {
                Exit::Success
            } else {
                Exit::Rejected
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Err(Failure::new(
        Exit::Runtime,
        anyhow::anyhow!("the guard did not judge version {version} within 15 minutes"),
    ))
}
