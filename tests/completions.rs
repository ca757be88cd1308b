//! `evenkeel completions` and `evenkeel manpage`, as a package would install them.

use std::process::Command;

use crate::util::{evenkeel, run, Dir};

/// The bash script is valid bash, and once sourced it completes evenkeel's commands.
#[test]
fn bash_completion_loads_and_completes_the_commands() {
    let out = run(&["completions", "bash"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let dir = Dir::new();
    let script = dir.write("evenkeel.bash", &out.stdout);
    // Load it, then ask it what `evenkeel pl<TAB>` and `evenkeel check --de<TAB>` offer.
    let probe = format!(
        "source {}\n\
         COMP_WORDS=(evenkeel pl); COMP_CWORD=1; _evenkeel evenkeel pl evenkeel; echo \"${{COMPREPLY[@]}}\"\n\
         COMP_WORDS=(evenkeel check --de); COMP_CWORD=2; _evenkeel evenkeel --de check; echo \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let shell = Command::new("bash")
        .args(["-c", &probe])
        .output()
        .expect("bash");
    let said = String::from_utf8_lossy(&shell.stdout);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"plan"),
        "{said}{}",
        String::from_utf8_lossy(&shell.stderr)
    );
    assert_eq!(lines.get(1), Some(&"--deny-warnings"), "{said}");
    for shell in ["zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.code, Some(0), "{shell}: {}", out.stderr);
        assert!(out.stdout.contains("evenkeel"), "{shell}");
    }
}

/// The man page names every command; `--dir` writes one page per command.
#[test]
fn the_man_page_lists_every_command_and_dir_writes_a_page_each() {
    let out = run(&["manpage"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains(".TH evenkeel 1"), "{}", out.stdout);
    let help = run(&["--help"]).stdout;
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 15, "{help}");
    for command in &commands {
        assert!(
            out.stdout.contains(&format!("evenkeel\\-{command}")),
            "{command} missing"
        );
    }
    let dir = Dir::new();
    let status = evenkeel()
        .args(["manpage", "--dir"])
        .arg(dir.path())
        .status()
        .expect("manpage --dir");
    assert!(status.success());
    for command in &commands {
        let page = dir.path().join(format!("evenkeel-{command}.1"));
        assert!(page.is_file(), "{} missing", page.display());
    }
}
