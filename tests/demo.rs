//! `evenkeel demo` as a process, and the admin API it starts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{evenkeel, run};

/// A blocking HTTP/1.1 GET with `Connection: close`: (status, head, body).
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn field<'a>(intro: &'a str, label: &str) -> &'a str {
    intro
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{intro}"))
}

#[test]
fn demo_serves_traffic_shows_status_and_stops_by_itself() {
    let mut child = evenkeel()
        .args([
            "demo",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--https-port",
            "0",
            "--duration",
            "4s",
            "--rate",
            "50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut intro = String::new();
    while !intro.contains("Ctrl-C to stop.") {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            panic!("the demo ended before printing its intro:\n{intro}");
        }
        intro.push_str(&line);
    }
    let listen: SocketAddr = field(&intro, "load balancer")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let admin: SocketAddr = field(&intro, "admin API")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let config = field(&intro, "config").to_string();
    let token_path = std::path::Path::new(&config).with_file_name("admin.token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_string();

    let (status, head, body) = get(listen, "/", &[]);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("x-backend:"), "{head}");
    assert!(body.starts_with("hello from "), "{body}");

    // The HTTPS line it prints works as printed.
    let https = intro
        .lines()
        .find_map(|l| l.trim().strip_prefix("curl -i --cacert "))
        .unwrap_or_else(|| panic!("no curl --cacert line in:\n{intro}"));
    let (cacert, url) = https.split_once(' ').expect("cacert and URL");
    let curl = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["--cacert", cacert, url])
        .output()
        .expect("run curl");
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );

    assert_eq!(get(admin, "/healthz", &[]).0, 200);
    assert_eq!(get(admin, "/status", &[]).0, 401, "status needs the token");
    assert_eq!(
        get(
            admin,
            "/status",
            &[("Authorization", "Bearer wrong-token-000000")]
        )
        .0,
        401
    );
    std::thread::sleep(Duration::from_millis(500));
    let bearer = format!("Bearer {token}");
    let (status, _, body) = get(admin, "/status", &[("Authorization", &bearer)]);
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    let pool = &json["pools"][0];
    assert_eq!(pool["name"], "web");
    assert_eq!(pool["backends"].as_array().unwrap().len(), 3);
    assert!(
        pool["requests"].as_u64().unwrap() >= 10,
        "background traffic flows: {pool}"
    );
    assert_eq!(pool["backends"][0]["intended_share"], 0.5);
    let (status, _, text) = get(admin, "/config", &[("Authorization", &bearer)]);
    assert_eq!(status, 200);
    assert!(text.contains("[pool.web]"));

    let checked = run(&["check", "-c", &config, "--deny-warnings"]);
    assert_eq!(
        checked.code,
        Some(0),
        "the demo's own config passes check: {}",
        checked.stdout
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not stop by itself");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        !std::path::Path::new(&config).exists(),
        "the demo removes its folder"
    );
}
