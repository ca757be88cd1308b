//! `evenkeel explain RULE`: what a lint rule catches, why it matters, how to fix it.

use super::{CommandResult, Exit, Failure};
use crate::config::{lint, suggest};

/// Explain a lint rule; without a rule, list them all.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel explain single-backend-pool\n  evenkeel explain          # list every rule"
)]
pub struct Args {
    /// The rule's name, as printed in `check` findings.
    rule: Option<String>,
}

pub fn run(args: &Args) -> CommandResult {
    let Some(name) = &args.rule else {
        for rule in lint::RULES {
            outln!(
                "{:<24} {:<8} {}",
                rule.name,
                rule.severity.as_str(),
                rule.summary
            );
        }
        return Ok(Exit::Success);
    };
    match lint::rule(name) {
        Some(rule) => {
            outln!(
                "{} ({} by default): {}\n",
                rule.name,
                rule.severity.as_str(),
                rule.summary
            );
            outln!("{}", textwrap(rule.explain, 88));
            outln!(
                "\nSilence it with a reason:\n  [lint.allow]\n  {} = \"why this is fine here\"",
                rule.name
            );
            Ok(Exit::Success)
        }
        None => {
            let names: Vec<&str> = lint::RULES.iter().map(|r| r.name).collect();
            let hint =
                suggest(name, &names).map_or(String::new(), |s| format!(" (did you mean {s}?)"));
            Err(Failure::new(
                Exit::Usage,
                anyhow::anyhow!(
                    "no lint rule is called {name:?}{hint}; `evenkeel explain` lists them"
                ),
            ))
        }
    }
}

fn textwrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}
