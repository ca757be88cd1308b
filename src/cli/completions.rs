//! `evenkeel completions SHELL` and `evenkeel manpage`: what a package installs beside
//! the binary, made from the command line's own definition (clap_complete,
//! clap_mangen), so they never disagree with it.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::{Cli, CommandResult, Exit, Failure};

/// Print a shell completion script.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel completions bash > /etc/bash_completion.d/evenkeel\n  evenkeel completions zsh > \"${fpath[1]}/_evenkeel\"\n  evenkeel completions fish > ~/.config/fish/completions/evenkeel.fish"
)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Print the man page (roff), or write one page per command into a folder.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel manpage | man -l -\n  evenkeel manpage --dir /usr/local/share/man/man1"
)]
pub struct ManpageArgs {
    /// Write evenkeel.1 and evenkeel-COMMAND.1 for every command into this folder
    /// instead of printing evenkeel.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn completions(args: &CompletionsArgs) -> CommandResult {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "evenkeel", &mut script);
    super::out::write_bytes(&script);
    Ok(Exit::Success)
}

pub fn manpage(args: &ManpageArgs) -> CommandResult {
    let command = Cli::command();
    let runtime = |e: anyhow::Error| Failure::new(Exit::Runtime, e);
    match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .context("cannot render the man page")
                .map_err(runtime)?;
            super::out::write_bytes(&page);
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))
                .map_err(runtime)?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))
                .map_err(runtime)?;
        }
    }
    Ok(Exit::Success)
}
