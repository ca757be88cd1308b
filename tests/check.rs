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

/// A reader that goes away (`evenkeel check ... | head -1`) ends the command quietly
/// with status 141, as SIGPIPE ends a C tool — not with a panic (status 101, "failed
/// printing to stdout" on stderr), as `println!` did. The pipe's read end is closed
/// before the command starts, so its first write fails.
#[test]
fn a_reader_that_goes_away_ends_a_command_quietly_with_status_141() {
    let dir = Dir::new();
    let path = dir.write("lb.toml", GOOD);
    let config = path.to_str().unwrap();
    let commands: [&[&str]; 3] = [
        &["check", "-c", config, "--coverage"],
        &["explain"],
        &["completions", "bash"],
    ];
    for args in commands {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let output = crate::util::evenkeel()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .output()
            .expect("run evenkeel");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
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

/// What `serve` did with a config within a few seconds: started (printed every
/// listener) or exited with a code.
#[derive(Debug, PartialEq)]
enum Served {
    Started,
    Exited(Option<i32>),
}

/// Starts `evenkeel serve -c path` and waits until it prints its listeners (then stops
/// it) or exits.
fn serve_outcome(path: &std::path::Path, listeners: usize) -> Served {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = crate::util::evenkeel()
        .args(["serve", "-c"])
        .arg(path)
        .args(["--workers", "1", "--no-access-log"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = 0;
    let outcome = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Served::Exited(status.code());
        }
        while let Ok(line) = lines.try_recv() {
            seen += usize::from(line.starts_with("listening "));
        }
        if seen >= listeners {
            break Served::Started;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve neither started nor exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// `check` (without --deny-warnings) passes exactly the configs `serve` starts with: a
/// CI gate must never let through a config the server refuses. Each row is a refusal
/// that depends only on the config and the files it names.
#[test]
fn check_passes_exactly_what_serve_starts_with() {
    let dir = Dir::new();
    dir.write("good.token", "0123456789abcdef0123456789abcdef\n");
    dir.write("short.token", "0123456789\n");
    std::fs::create_dir_all(dir.path().join("folder.token")).expect("a folder");
    let site = crate::util::TestCertificate::new(&["shop.example"]);
    site.write(dir.path(), "site");
    let other = crate::util::TestCertificate::new(&["shop.example"]);
    std::fs::write(dir.path().join("other.key"), &other.key).expect("write");
    crate::util::TestCertificate::valid(&["shop.example"], -10 * 86_400, -86_400)
        .write(dir.path(), "expired");
    let state = |name: &str| format!("state_dir = \"{}\"\n", dir.path().join(name).display());
    let plain = |listen: &str| {
        format!(
            "[[listener]]\nname = \"public\"\nlisten = \"{listen}\"\n\n[[route]]\npool = \"web\"\n\n\
             [pool.web]\nbackends = [{{ address = \"127.0.0.1:9001\" }}, {{ address = \"127.0.0.1:9002\" }}]\n\
             [pool.web.health]\npath = \"/healthz\"\n"
        )
    };
    let admin =
        |token: &str| format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{token}\"\n");
    let https = |cert: &str, key: &str| {
        plain("127.0.0.1:0").replace(
            "listen = \"127.0.0.1:0\"\n",
            &format!("listen = \"127.0.0.1:0\"\ntls = {{ certificates = [{{ cert = \"{cert}\", key = \"{key}\" }}] }}\n"),
        )
    };
    // The fixed ports below are never bound: validation refuses both configs first.
    let cases: Vec<(&str, String, usize)> = vec![
        ("a sound config", format!("{}{}", plain("127.0.0.1:0"), admin("good.token")), 1),
        ("no token file", format!("{}{}", plain("127.0.0.1:0"), admin("missing.token")), 1),
        ("a short token", format!("{}{}", plain("127.0.0.1:0"), admin("short.token")), 1),
        ("a folder for a token", format!("{}{}", plain("127.0.0.1:0"), admin("folder.token")), 1),
        (
            "two listeners on one address",
            format!(
                "{}[[listener]]\nname = \"second\"\nlisten = \"127.0.0.1:18997\"\n\n[[route]]\nlistener = \"second\"\npool = \"web\"\n",
                plain("127.0.0.1:18997").replace("[[route]]\npool", "[[route]]\nlistener = \"public\"\npool")
            ),
            2,
        ),
        (
            "[admin] on a listener's address",
            format!("{}[admin]\nlisten = \"127.0.0.1:18996\"\ntoken_file = \"good.token\"\n", plain("127.0.0.1:18996")),
            1,
        ),
        ("a sound certificate", https("site.pem", "site.key"), 1),
        ("a missing certificate", https("none.pem", "site.key"), 1),
        ("a key of another certificate", https("site.pem", "other.key"), 1),
        ("an expired certificate", https("expired.pem", "expired.key"), 1),
    ];
    for (i, (case, text, listeners)) in cases.iter().enumerate() {
        let text = format!("{}{text}", state(&format!("state-{i}")));
        let path = dir.write(&format!("case-{i}.toml"), &text);
        let checked = run(&["check", "-c", path.to_str().unwrap()]);
        let served = serve_outcome(&path, *listeners);
        let check_passes = checked.code == Some(0);
        assert_eq!(
            check_passes,
            served == Served::Started,
            "{case}: check exit {:?}, serve {served:?}\n{}",
            checked.code,
            checked.stdout
        );
        let expected_to_pass = matches!(*case, "a sound config" | "a sound certificate");
        assert_eq!(
            check_passes, expected_to_pass,
            "{case}:\n{}",
            checked.stdout
        );
    }
}
