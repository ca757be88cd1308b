//! `evenkeel check` as a process: exit codes, located messages, JSON output.

use crate::util::{run, run_bounded, Dir};

const GOOD: &str = r#"[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
pool = "web"

[pool.web]
algorithm = "weighted_round_robin"
backends = [
  { address = "127.0.0.1:9001" },
  { address = "127.0.0.1:9002", weight = 2, capacity = 2 },
]
[pool.web.health]
path = "/healthz"
"#;

#[test]
fn a_good_config_passes_with_exit_0_and_a_summary() {
    let dir = Dir::new();
    let path = dir.write("lb.toml", GOOD);
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("ok: 1 listener, 1 route, 1 pool, 2 backends; 0 warnings"),
        "{}",
        out.stdout
    );
}

/// `--coverage` prints, per pool and kind of failure, what takes a failing backend out
/// of traffic and how soon; a sensible config has a remover for every failure that
/// stops service.
#[test]
fn coverage_prints_what_removes_each_kind_of_failure() {
    let dir = Dir::new();
    let path = dir.write("lb.toml", GOOD);
    let out = run(&["check", "-c", path.to_str().unwrap(), "--coverage"]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("failure-detection coverage:\npool \"web\"\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("  a backend that accepts connections but never answers\n    removed by: active http check, within about 6s"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("NOTHING"), "{}", out.stdout);
    // A tcp check and passive ejection off: a hung or erroring backend stays in.
    let blind = GOOD.replace(
        "path = \"/healthz\"",
        "type = \"tcp\"\n[pool.web.outlier]\nconsecutive_failures = 0",
    );
    let path = dir.write("blind.toml", &blind);
    let out = run(&[
        "check",
        "-c",
        path.to_str().unwrap(),
        "--coverage",
        "--deny-warnings",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert_eq!(
        out.stdout.matches("warning[undetected-failure]").count(),
        2,
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stdout
            .matches("removed by: NOTHING (undetected-failure)")
            .count(),
        2,
        "{}",
        out.stdout
    );
}

#[test]
fn an_unknown_pool_is_located_with_a_caret_and_help_and_exits_1() {
    let dir = Dir::new();
    let path = dir.write("lb.toml", &GOOD.replace("pool = \"web\"", "pool = \"wbe\""));
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let file = path.display();
    assert!(
        out.stdout.contains(
            "error[unknown-pool]: route sends traffic to pool \"wbe\", which is not defined"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("--> {file}:6:8")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("6 | pool = \"wbe\"\n  |        ^^^^^\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("= help: did you mean \"web\"?"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("rejected: 1 error"), "{}", out.stdout);
}

#[test]
fn a_toml_syntax_error_exits_1_with_its_location() {
    let dir = Dir::new();
    let path = dir.write(
        "lb.toml",
        "[[listener]]\nname = \"public\nlisten = \"127.0.0.1:8080\"\n",
    );
    let out = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.contains("error[toml-syntax]"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("{}:2:", path.display())),
        "{}",
        out.stdout
    );
}

#[test]
fn json_output_has_the_stable_fields() {
    let dir = Dir::new();
    let broken = GOOD
        .replace("weight = 2", "weight = -2")
        .replace("\"1s\"", "\"1\"");
    let path = dir.write("lb.toml", &broken);
    let out = run(&["check", "-c", path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.code, Some(1));
    let findings: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    let first = &findings[0];
    assert_eq!(first["rule"], "out-of-range");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["file"], path.display().to_string());
    assert_eq!(first["line"], 12);
    assert_eq!(first["column"], 42);
    assert!(first["message"]
        .as_str()
        .unwrap()
        .contains("pool.web.backends[2].weight"));
    assert!(first["help"].as_str().unwrap().contains("from 0 to 10000"));
}

#[test]
fn json_output_of_a_clean_config_is_an_empty_array() {
    let dir = Dir::new();
    let path = dir.write("lb.toml", GOOD);
    let out = run(&["check", "-c", path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.code, Some(0));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
}

#[test]
fn warnings_fail_only_under_deny_warnings() {
    let dir = Dir::new();
    let risky = GOOD.replace("[pool.web.health]\npath = \"/healthz\"\n", "");
    let path = dir.write("lb.toml", &risky);
    let path = path.to_str().unwrap();
    let out = run(&["check", "-c", path]);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.contains("warning[no-health-check]"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("1 warning"), "{}", out.stdout);
    let out = run(&["check", "-c", path, "--deny-warnings"]);
    assert_eq!(out.code, Some(1));
}

#[test]
fn an_unreadable_file_exits_2() {
    let dir = Dir::new();
    let missing = dir.path().join("missing.toml");
    let out = run(&["check", "-c", missing.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);
}

/// Makes a FIFO (named pipe) at `path` with mkfifo(1).
fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// How long `check` may take on a file it must refuse without reading: opening a FIFO
/// would block forever, reading /dev/zero would never end.
const QUICKLY: std::time::Duration = std::time::Duration::from_secs(5);

/// Issue 12, defect 7: a token_file that is a FIFO hung `check` (and SIGHUP and the
/// admin API); /dev/zero grew it to 1 GB. Both are refused from their metadata, never
/// opened, with an error located at the field.
#[test]
fn config_named_fifo_or_device_is_refused_not_read() {
    let dir = Dir::new();
    let fifo = dir.path().join("admin.token");
    mkfifo(&fifo);
    for (token_file, kind) in [
        ("admin.token", "a FIFO (named pipe)"),
        ("/dev/zero", "a character device"),
        (".", "a directory"),
    ] {
        let text =
            format!("{GOOD}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{token_file}\"\n");
        let path = dir.write("lb.toml", &text);
        let started = std::time::Instant::now();
        let out = run_bounded(&["check", "-c", path.to_str().unwrap()], QUICKLY);
        assert!(started.elapsed() < QUICKLY);
        assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
        assert!(
            out.stdout
                .contains("error[invalid-file]: `admin.token_file`")
                && out.stdout.contains(&format!("{kind}, not a regular file")),
            "{}",
            out.stdout
        );
        let line = text.lines().count();
        assert!(
            out.stdout
                .contains(&format!("--> {}:{line}:14", path.display())),
            "{}",
            out.stdout
        );
    }
}

/// Issue 12, defect 7, for the config file itself: a device, a FIFO or a file over
/// 16 MiB named on the command line cannot be read at all: exit 2, at once.
#[test]
fn a_config_file_that_is_a_device_fifo_or_over_16_mib_exits_2_quickly() {
    let dir = Dir::new();
    let fifo = dir.path().join("lb.fifo");
    mkfifo(&fifo);
    let big = dir.write(
        "big.toml",
        &format!("{GOOD}# {}\n", "x".repeat(16 * 1024 * 1024)),
    );
    for (path, reason) in [
        (
            "/dev/zero".as_ref(),
            "it is a character device, not a regular file",
        ),
        (
            fifo.as_path(),
            "it is a FIFO (named pipe), not a regular file",
        ),
        (big.as_path(), "it is larger than 16 MiB"),
    ] {
        let path: &std::path::Path = path;
        for command in ["check", "simulate", "preflight"] {
            let out = run_bounded(&[command, "-c", path.to_str().unwrap()], QUICKLY);
            assert_eq!(out.code, Some(2), "{command}: {}{}", out.stdout, out.stderr);
            assert!(
                out.stderr
                    .contains(&format!("cannot read {}: {reason}", path.display())),
                "{command}: {}",
                out.stderr
            );
        }
    }
    let plan = run_bounded(&["plan", big.to_str().unwrap(), "/dev/zero"], QUICKLY);
    assert_eq!(plan.code, Some(2), "{}", plan.stderr);
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["check"]).code, Some(2));
    assert_eq!(
        run(&["check", "-c", "x.toml", "--format", "yaml"]).code,
        Some(2)
    );
    assert_eq!(run(&["no-such-command"]).code, Some(2));
}

#[test]
fn explain_describes_a_rule_and_lists_them_all() {
    let out = run(&["explain", "single-backend-pool"]);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.contains("nowhere to send traffic"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("[lint.allow]"));
    let list = run(&["explain"]);
    assert!(list.stdout.contains("no-health-check") && list.stdout.contains("admin-off-loopback"));
    let unknown = run(&["explain", "single-backend"]);
    assert_eq!(unknown.code, Some(2));
    assert!(
        unknown.stderr.contains("did you mean single-backend-pool?"),
        "{}",
        unknown.stderr
    );
}
