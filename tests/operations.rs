//! What an operator installs and runs beside the binary: shell completions, the man
//! page, `serve` under systemd (`Type=notify`), its logs and their rotation.

use std::process::Command;
use std::time::Duration;

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

/// `serve` under systemd (`Type=notify`): READY=1 with the version once listening,
/// RELOADING=1 then READY=1 around a SIGHUP (a refused reload says so in STATUS),
/// WATCHDOG=1 while it runs, STOPPING=1 at SIGTERM — read from a NOTIFY_SOCKET the
/// test binds, as systemd would.
#[test]
fn serve_tells_systemd_ready_reloading_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Instant;
    let dir = Dir::new();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let config = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[[route]]\npool = \"web\"\n\n\
                  [pool.web]\nbackends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\" }]\n\
                  [pool.web.health]\npath = \"/healthz\"\n";
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state folder");
    let notify = socket_path.to_str().expect("utf-8");
    let state_dir = state.to_str().expect("utf-8");
    let proxy = crate::util::Proxy::start_with_env(
        config,
        1,
        &[
            ("NOTIFY_SOCKET", notify),
            ("WATCHDOG_USEC", "400000"),
            ("STATE_DIRECTORY", state_dir),
        ],
    );
    let mut seen = String::new();
    let mut wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in {seen:?}");
            let mut buf = [0u8; 4096];
            if let Ok(n) = socket.recv(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        std::mem::take(&mut seen)
    };
    let ready = wait_for("READY=1");
    assert!(ready.contains("STATUS=serving config version 1"), "{ready}");
    wait_for("WATCHDOG=1");
    assert!(
        state.join("evenkeel.db").is_file(),
        "the state goes to $STATE_DIRECTORY"
    );

    proxy.rewrite_config(&config.replace("pool = \"web\"", "pool = \"nope\""));
    proxy.signal("HUP");
    let reload = wait_for("STATUS=serving config version 1; the last reload was refused");
    assert!(reload.contains("RELOADING=1"), "{reload}");
    assert!(reload.contains("READY=1"), "{reload}");

    proxy.signal("TERM");
    wait_for("STOPPING=1");
}

/// `--version` names the commit the binary was built from (the tests run in a checkout).
#[test]
fn version_names_the_commit() {
    let out = run(&["--version"]);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.starts_with("evenkeel 0.1.0 (commit "),
        "{}",
        out.stdout
    );
}

/// `--log-format json`: every line evenkeel writes on stderr, its own events and the
/// access log alike, is one JSON object, so a collector never meets a stray text line.
#[test]
fn json_logs_are_one_object_per_line_access_log_included() {
    use std::process::Stdio;
    let dir = Dir::new();
    let config = dir.write(
        "lb.toml",
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[[route]]\npath_prefix = \"/api\"\npool = \"web\"\n\n\
         [pool.web]\nbackends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\" }]\n",
    );
    let stderr_path = dir.path().join("stderr.log");
    let mut child = evenkeel()
        .args(["serve", "-c"])
        .arg(&config)
        .args(["--workers", "1", "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start serve");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("listening line");
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("bad listening line {line:?}"));
    let reply = crate::util::raw_exchange(
        addr,
        b"GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(reply.status, Some(404));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(100));
    let log = std::fs::read_to_string(&stderr_path).expect("stderr");
    let lines = json_lines(&stderr_path);
    assert!(
        lines.iter().any(|l| l["target"] == "evenkeel::access"
            && l["fields"]["status"] == 404
            && l["fields"]["path"] == "/nowhere"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["message"].is_string()),
        "{log}"
    );
}

/// Reads `path`'s lines as JSON objects (a missing file has none).
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `serve` on one pool over `backend`, writing a JSON access log to `access.log` in a
/// folder of its own: the proxy, the folder, the log's path.
fn serve_with_json_access_log(
    backend: &crate::util::Backend,
) -> (crate::util::Proxy, Dir, std::path::PathBuf) {
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n[[route]]\npool = \"web\"\n\
         [pool.web]\nbackends = [{{ address = \"{}\" }}]\n[pool.web.health]\n",
        backend.address()
    );
    let logs = Dir::new();
    let access = logs.path().join("access.log");
    let access_arg = access.to_str().expect("utf-8 path").to_string();
    let proxy = crate::util::Proxy::start_with_args(
        &config,
        1,
        &["--access-log", &access_arg, "--access-log-format", "json"],
    );
    (proxy, logs, access)
}

/// The access log goes to a file; the real logrotate, configured by the shipped
/// contrib/logrotate/evenkeel (its path and signal command pointed at this test's
/// instance), moves it away and SIGUSR1 makes evenkeel write to a new file: no line is
/// lost, none lands in the wrong file, and the process lives on.
#[test]
fn logrotate_moves_the_access_log_and_sigusr1_reopens_it() {
    let backend = crate::util::Backend::start("a");
    let (proxy, logs, access) = serve_with_json_access_log(&backend);
    let access_arg = access.to_str().expect("utf-8 path").to_string();
    let get = |path: &str, extra: &str| {
        let reply = crate::util::raw_exchange(
            proxy.addr(),
            format!("GET {path} HTTP/1.1\r\nhost: t\r\n{extra}connection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(reply.status, Some(200), "{}", reply.text);
    };
    get("/before/1", "x-request-id: abc-123\r\n");
    get("/before/2", "");
    get("/download/3000", "");
    assert!(
        crate::util::eventually(Duration::from_secs(5), || json_lines(&access).len() == 3),
        "{:?}",
        json_lines(&access)
    );
    let first = json_lines(&access);
    let fields = &first[0]["fields"];
    assert_eq!(fields["id"], "abc-123", "{fields}");
    assert_eq!(fields["route"], "/");
    assert_eq!(fields["pool"], "web");
    assert_eq!(fields["backend"], backend.address().as_str());
    assert_eq!(fields["tries"], 1);
    assert!(fields["upstream_ms"].is_number(), "{fields}");
    assert!(fields.get("tls").is_none(), "plain HTTP: {fields}");
    let made = first[1]["fields"]["id"].as_str().expect("an id");
    assert!(made.len() == 20 && made != "abc-123", "{made}");
    assert_eq!(first[2]["fields"]["bytes_out"], 3000);
    // The own log stays text on stderr: --access-log-format is the access log's alone.
    assert!(!proxy.stderr().contains("evenkeel::access"));

    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/logrotate/evenkeel"),
    )
    .expect("contrib/logrotate/evenkeel");
    assert!(shipped.contains("/var/log/evenkeel/access.log {"));
    // The shipped command finds the PID through systemd; here it is this test's.
    let finds_pid = "pid=$(systemctl show --property MainPID --value evenkeel.service 2>/dev/null)";
    assert!(shipped.contains(finds_pid), "{shipped}");
    let rotate_config = logs.write(
        "logrotate.conf",
        &shipped
            .replace("/var/log/evenkeel/access.log", &access_arg)
            .replace(finds_pid, &format!("pid={}", proxy.pid())),
    );
    // Debian puts it in /usr/sbin, which a user's PATH may lack.
    let logrotate = ["/usr/sbin/logrotate", "/usr/bin/logrotate"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("logrotate");
    let rotated = Command::new(logrotate)
        .arg("--force")
        .arg("--state")
        .arg(logs.path().join("logrotate.state"))
        .arg(&rotate_config)
        .output()
        .expect("run logrotate (Debian package logrotate)");
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let old = logs.path().join("access.log.1");
    assert_eq!(json_lines(&old).len(), 3, "delaycompress keeps it plain");

    get("/after/1", "");
    get("/after/2", "");
    assert!(
        crate::util::eventually(Duration::from_secs(5), || json_lines(&access).len() == 2),
        "new file: {:?}",
        json_lines(&access)
    );
    let after = json_lines(&access);
    assert!(after.iter().all(|l| l["fields"]["path"]
        .as_str()
        .is_some_and(|p| p.starts_with("/after/"))));
    assert_eq!(json_lines(&old).len(), 3, "nothing more in the moved file");
    let mut proxy = proxy;
    assert!(proxy.is_running(), "SIGUSR1 must not end the process");
}

/// A text access line names the TLS version, a retry's tries and final backend; a
/// file that cannot be opened stops `serve` before it binds anything (exit 2).
#[test]
fn access_lines_show_tries_and_tls_version_and_an_unopenable_log_is_refused() {
    let backend = crate::util::Backend::start("a");
    let dead = crate::watch::dead_port();
    let dir = Dir::new();
    let files = crate::util::TestCertificate::new(&["shop.example"]).write(dir.path(), "shop");
    let config = format!(
        "[[listener]]\nname = \"https\"\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ certificates = [{{ cert = \"{}\", key = \"{}\" }}] }}\n\
         [[route]]\nhost = \"shop.example\"\npath_prefix = \"/shop\"\npool = \"web\"\n\
         [pool.web]\nalgorithm = \"round_robin\"\nretries = {{ attempts = 1 }}\n\
         backends = [{{ address = \"{dead}\" }}, {{ address = \"{}\" }}]\n[pool.web.health]\n",
        files.0.display(),
        files.1.display(),
        backend.address()
    );
    let access = dir.path().join("access.log");
    let access_arg = access.to_str().expect("utf-8 path").to_string();
    let proxy = crate::util::Proxy::start_with_args(&config, 1, &["--access-log", &access_arg]);
    let port = proxy.addr().port();
    for _ in 0..2 {
        let out = Command::new("curl")
            .args(["-sSk", "--max-time", "10", "--tlsv1.3", "-o", "/dev/null"])
            .args(["-w", "%{http_code}"])
            .arg("--resolve")
            .arg(format!("shop.example:{port}:127.0.0.1"))
            .arg(format!("https://shop.example:{port}/shop/x"))
            .output()
            .expect("run curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    let text = || std::fs::read_to_string(&access).unwrap_or_default();
    assert!(
        crate::util::eventually(Duration::from_secs(5), || text().lines().count() == 2),
        "{}",
        text()
    );
    let log = text();
    for line in log.lines() {
        assert!(
            line.contains(" INFO evenkeel::access: id=")
                && line.contains(" route=shop.example/shop pool=web ")
                && line.contains(&format!(" backend={} ", backend.address()))
                && line.contains(" tls=1.3"),
            "{line}"
        );
    }
    assert!(
        log.lines().any(|l| l.contains(" tries=2 ")),
        "the try on the dead backend was retried: {log}"
    );

    let refused = evenkeel()
        .args(["serve", "-c"])
        .arg(dir.write("again.toml", &config))
        .args(["--access-log", "/nonexistent-dir/access.log"])
        .output()
        .expect("run serve");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("cannot open the access log /nonexistent-dir/access.log"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("listening"));
}

/// The shipped unit passes `systemd-analyze verify` without a single complaint (an
/// unknown or misspelt key is only a warning there, so any output fails the test),
/// with its binary pointed at the one under test.
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(manifest.join("contrib/systemd/evenkeel.service"))
        .expect("contrib/systemd/evenkeel.service");
    assert!(shipped.contains("Type=notify") && shipped.contains("WatchdogSec="));
    let dir = Dir::new();
    let unit = dir.write(
        "evenkeel.service",
        &shipped.replace("/usr/local/bin/evenkeel", env!("CARGO_BIN_EXE_evenkeel")),
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze (Debian package systemd)");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

/// A client that leaves in the middle of a large download: its line says `aborted`
/// and counts what was written to it, not what was read from the backend.
#[test]
fn a_download_the_client_abandons_is_logged_aborted_with_what_it_got() {
    use std::io::{Read, Write};
    let backend = crate::util::Backend::start("a");
    let (proxy, _logs, access) = serve_with_json_access_log(&backend);
    let total = 200 * 1024 * 1024;
    let mut stream = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    stream
        .write_all(format!("GET /download/{total} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .expect("send");
    let mut got = vec![0u8; 256 * 1024];
    let mut read = 0;
    while read < got.len() {
        match stream.read(&mut got[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    drop(stream);
    assert!(
        crate::util::eventually(Duration::from_secs(10), || !json_lines(&access).is_empty()),
        "no line"
    );
    let line = &json_lines(&access)[0]["fields"];
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["aborted"], true, "{line}");
    let out = line["bytes_out"].as_u64().expect("bytes_out");
    assert!(
        out > 0 && out < total / 2,
        "what the client got, not {total}: {line}"
    );
}
