//! WebSocket through evenkeel, against a real WebSocket server and client (the Python
//! `websockets` library, `tests/peers/websocket.py`): the session itself, balancing,
//! reloads, limits, timeouts, drains and shutdown with sessions open, and the
//! upgrades evenkeel must not tunnel.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{
    eventually, peer_client, raw_exchange, Backend, Dir, PeerServer, Proxy, TestCertificate,
};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/websocket.py");

/// A `websockets` echo server (`websocket.py server NAME`), stopped when dropped.
type WsBackend = PeerServer;

fn ws_backend(name: &str) -> WsBackend {
    PeerServer::start("websocket.py", &[name], "websockets")
}

/// Runs a client mode of the peer to its end; its last line as JSON.
fn client(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    peer_client("websocket.py", args, env)
}

/// A session kept open (`websocket.py until_closed`): each [`Held::echo`] sends a line
/// and reads what came back; [`Held::finish`] ends it and returns its last report.
struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The backend that answered "who".
    who: String,
}

impl Held {
    fn open(url: &str) -> Held {
        let mut child = Command::new("python3")
            .args([PEER, "until_closed", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the websockets client");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let first = read_json(&mut stdout);
        let who = first["who"].as_str().unwrap_or_default().to_string();
        assert!(!who.is_empty(), "the session did not open: {first}");
        Held {
            child,
            stdin,
            stdout,
            who,
        }
    }

    /// Sends `message`; the client's report: `{"echo": ...}` or, once the session
    /// has ended, `{"ended": ...}`.
    fn echo(&mut self, message: &str) -> serde_json::Value {
        let Some(stdin) = self.stdin.as_mut() else {
            return serde_json::json!({"ended": "finished"});
        };
        if writeln!(stdin, "{message}").is_err() {
            return serde_json::json!({"ended": "client gone"});
        }
        read_json(&mut self.stdout)
    }

    fn finish(mut self) {
        self.stdin = None;
        let _ = self.child.wait();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_json(stdout: &mut BufReader<ChildStdout>) -> serde_json::Value {
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    serde_json::from_str(line.trim()).unwrap_or(serde_json::Value::Null)
}

fn config(backends: &[&WsBackend], listener: &str, pool: &str, top: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.address()))
        .collect();
    format!(
        "{top}\n[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n{listener}\n\
         [[route]]\npool = \"chat\"\n\n\
         [pool.chat]\nbackends = [{}]\n{pool}\n",
        list.join(", ")
    )
}

fn url(proxy: &Proxy, path: &str) -> String {
    format!("ws://{}{path}", proxy.addr())
}

const UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// Sends a WebSocket upgrade for `path` and reads the answer's head; the status and
/// the open connection.
fn upgrade(addr: SocketAddr, path: &str) -> (u16, String, TcpStream) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: chat\r\n{UPGRADE}\r\n").expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, stream)
}

/// Text, a 1 MiB binary message, ping/pong and the close handshake, end to end; the
/// backend sees the upgrade with `X-Forwarded-*` and the client's own WebSocket fields.
#[test]
fn a_websocket_session_carries_messages_pings_and_the_close_handshake() {
    let backend = ws_backend("a");
    let proxy = Proxy::start(&config(&[&backend], "", "", ""), 2);
    let session = client(&["echo", &url(&proxy, "/chat?room=1")], &[]);
    assert_eq!(session["text"], "hello", "{session}");
    assert_eq!(session["binary_intact"], true, "{session}");
    assert_eq!(session["binary_len"], 1 << 20, "{session}");
    assert!(session["pong_ms"].as_f64().is_some(), "{session}");
    assert_eq!(session["path"], "/chat?room=1", "{session}");
    assert_eq!(session["close_code"], 1000, "{session}");
    assert_eq!(session["close_reason"], "done", "{session}");
    let headers = &session["headers"];
    assert_eq!(headers["upgrade"], "websocket", "{headers}");
    assert_eq!(headers["connection"], "upgrade", "{headers}");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{headers}");
    assert_eq!(headers["x-forwarded-proto"], "http", "{headers}");
    assert!(headers["sec-websocket-key"].is_string(), "{headers}");
    assert!(headers["sec-websocket-extensions"].is_string(), "{headers}");
}

/// Sessions are balanced like requests: round robin over two backends alternates.
/// Once they closed, nothing is left in flight.
#[test]
fn sessions_are_spread_over_the_pool_and_leave_nothing_in_flight() {
    let (a, b) = (ws_backend("a"), ws_backend("b"));
    let proxy = Proxy::start_with_admin(&config(&[&a, &b], "", "", ""), 2);
    let names = client(&["who", &url(&proxy, "/"), "8"], &[]);
    let names: Vec<&str> = names
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert_eq!(names.iter().filter(|n| **n == "a").count(), 4, "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "b").count(), 4, "{names:?}");
    let settled = eventually(Duration::from_secs(5), || {
        [&a, &b]
            .iter()
            .all(|b| proxy.backend_status("chat", &b.address())["in_flight"] == 0)
    });
    assert!(settled, "{}", proxy.pool_status("chat"));
}

/// Six sessions stay open and keep echoing through a SIGHUP that adds a backend; new
/// sessions then reach the new backend too.
#[test]
fn open_sessions_survive_a_reload_that_adds_a_backend() {
    let (a, b, c) = (ws_backend("a"), ws_backend("b"), ws_backend("c"));
    let proxy = Proxy::start(&config(&[&a, &b], "", "", ""), 2);
    let mut hold = Command::new("python3")
        .args([PEER, "hold", &url(&proxy, "/"), "6", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the websockets client");
    let mut stdout = BufReader::new(hold.stdout.take().expect("stdout"));
    let opened = read_json(&mut stdout);
    assert_eq!(opened["opened"], 6, "{opened}");
    proxy.rewrite_config(&config(&[&a, &b, &c], "", "", ""));
    proxy.signal("HUP");
    proxy.wait_for_log("reloaded file=", 1);
    let report = read_json(&mut stdout);
    let _ = hold.wait();
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["echoes"].as_u64().unwrap_or(0) >= 6 * 10, "{report}");
    let names = client(&["who", &url(&proxy, "/"), "6"], &[]);
    assert!(
        names.as_array().is_some_and(|n| n.iter().any(|n| n == "c")),
        "{names}"
    );
}

/// `Upgrade: h2c` is not an upgrade evenkeel tunnels: the request is served as the
/// HTTP/1.1 request it also is, without its `Upgrade`. An upgrade the backend answers
/// otherwise than with 101 is an ordinary response, and the client's connection
/// closes after it.
#[test]
fn h2c_is_served_as_http11_and_a_refused_upgrade_closes_the_connection() {
    let plain = Backend::start("plain");
    let proxy = Proxy::start(
        &format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\
             [[route]]\npool = \"web\"\n[pool.web]\nbackends = [{{ address = \"{}\" }}]\n",
            plain.address()
        ),
        1,
    );
    let reply = raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!(reply.status, Some(200), "{}", reply.text);
    assert!(
        !reply.text.to_ascii_lowercase().contains("\"upgrade\""),
        "{}",
        reply.text
    );
    assert!(
        !reply.text.to_ascii_lowercase().contains("http2-settings"),
        "{}",
        reply.text
    );
    assert!(
        reply
            .text
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{}",
        reply.text
    );

    let ws = ws_backend("a");
    let proxy = Proxy::start(&config(&[&ws], "", "", ""), 1);
    let (status, head, mut stream) = upgrade(proxy.addr(), "/forbidden");
    assert_eq!(status, 403, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert_eq!(String::from_utf8_lossy(&rest), "forbidden\n");
}

/// A backend's 101 to a protocol the client did not offer would open a tunnel nobody
/// asked for (the opening for smuggling requests past evenkeel's routing): it is a
/// 502, and no byte the backend sent after it reaches the client.
#[test]
fn a_101_to_a_protocol_not_offered_is_a_502_and_opens_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let backend = listener.local_addr().expect("address");
    let answering = std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\
                  Connection: Upgrade\r\n\r\nSMUGGLED",
            );
        }
    });
    let proxy = Proxy::start(
        &format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\
             [[route]]\npool = \"raw\"\n[pool.raw]\nbackends = [{{ address = \"{backend}\" }}]\n\
             retries = {{ attempts = 0 }}\n"
        ),
        1,
    );
    for path in ["/ws", "/plain"] {
        let request = if path == "/ws" {
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n")
        } else {
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        };
        let reply = raw_exchange(proxy.addr(), request.as_bytes());
        assert_eq!(reply.status, Some(502), "{path}: {}", reply.text);
        assert!(!reply.text.contains("SMUGGLED"), "{path}: {}", reply.text);
    }
    drop(proxy);
    let _ = TcpStream::connect(backend);
    let _ = answering.join();
}

/// `max_tunnels` caps the sessions open on a listener: one more upgrade gets 503, and
/// once a session closes there is room again.
#[test]
fn max_tunnels_caps_the_sessions_open_on_a_listener() {
    let backend = ws_backend("a");
    let proxy = Proxy::start(&config(&[&backend], "max_tunnels = 2", "", ""), 2);
    let first = Held::open(&url(&proxy, "/"));
    let second = Held::open(&url(&proxy, "/"));
    let (status, head, _) = upgrade(proxy.addr(), "/");
    assert_eq!(status, 503, "{head}");
    first.finish();
    let room = eventually(Duration::from_secs(5), || {
        upgrade(proxy.addr(), "/").0 == 101
    });
    assert!(room, "no room after a session closed");
    second.finish();
}

/// A session in which nothing moves for `timeouts.tunnel_idle` is closed.
#[test]
fn a_silent_session_is_closed_after_tunnel_idle() {
    let backend = ws_backend("a");
    let proxy = Proxy::start(
        &config(&[&backend], "", "timeouts = { tunnel_idle = \"1s\" }", ""),
        1,
    );
    let report = client(&["idle", &url(&proxy, "/")], &[]);
    assert_eq!(report["closed"], "closed", "{report}");
    let after = report["after_ms"].as_u64().unwrap_or(0);
    assert!((900..5000).contains(&after), "{report}");
}

/// Draining a backend (admin API) lets its sessions go on for `drain_timeout`, then
/// closes them; sessions on other backends are untouched.
#[test]
fn draining_a_backend_ends_its_sessions_after_drain_timeout() {
    let (a, b) = (ws_backend("a"), ws_backend("b"));
    let proxy =
        Proxy::start_with_admin(&config(&[&a, &b], "", "", "drain_timeout = \"1500ms\""), 2);
    let mut first = Held::open(&url(&proxy, "/"));
    let mut second = Held::open(&url(&proxy, "/"));
    assert_ne!(first.who, second.who);
    let (on_a, on_b) = if first.who == "a" {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    let (code, body) =
        proxy.admin_request("POST", &format!("/backends/chat/{}/drain", a.address()));
    assert_eq!(code, 200, "{body}");
    let drained = Instant::now();
    // Still carried during the drain...
    assert!(on_a.echo("during").get("echo").is_some());
    // ...and closed once drain_timeout has passed.
    let mut ended = None;
    while drained.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(200));
        let report = on_a.echo("again");
        if report.get("ended").is_some() {
            ended = Some(drained.elapsed());
            break;
        }
    }
    let ended = ended.expect("the drained backend's session was never closed");
    assert!(
        ended >= Duration::from_millis(1300),
        "closed after {ended:?}"
    );
    assert!(on_b.echo("still here").get("echo").is_some());
}

/// SIGTERM lets open sessions go on until `drain_timeout`, then closes them and exits.
#[test]
fn sigterm_lets_sessions_run_until_drain_timeout() {
    let backend = ws_backend("a");
    let mut proxy = Proxy::start(&config(&[&backend], "", "", "drain_timeout = \"2s\""), 1);
    let mut session = Held::open(&url(&proxy, "/"));
    proxy.signal("TERM");
    let asked = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let report = session.echo("after SIGTERM");
    assert_eq!(report["echo"], "after SIGTERM", "{report}");
    let exited = proxy.wait_exit(Duration::from_secs(10));
    assert!(exited.is_some(), "evenkeel did not exit");
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert!(session.echo("gone").get("ended").is_some());
}

/// An open session is in flight on its backend: `least_connections` sends the next
/// sessions to the other backend, and `/status` shows it.
#[test]
fn an_open_session_counts_in_flight_for_least_connections() {
    let (a, b) = (ws_backend("a"), ws_backend("b"));
    let proxy = Proxy::start_with_admin(
        &config(&[&a, &b], "", "algorithm = \"least_connections\"", ""),
        1,
    );
    let held = Held::open(&url(&proxy, "/"));
    let (busy, other) = if held.who == "a" {
        (&a, "b")
    } else {
        (&b, "a")
    };
    assert_eq!(
        proxy.backend_status("chat", &busy.address())["in_flight"],
        1
    );
    let metrics = raw_exchange(
        proxy.admin.expect("admin"),
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics
            .text
            .contains("\nevenkeel_tunnels{listener=\"public\"} 1\n"),
        "{}",
        metrics.text
    );
    let names = client(&["who", &url(&proxy, "/"), "4"], &[]);
    let names: Vec<&str> = names
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert_eq!(names, [other; 4]);
    held.finish();
}

/// WebSocket over an HTTPS listener (`wss://`), with a real TLS client.
#[test]
fn a_secure_websocket_session_goes_through_an_https_listener() {
    let backend = ws_backend("a");
    let dir = Dir::new();
    let certificate = TestCertificate::new(&["localhost"]);
    let (cert, key) = certificate.write(dir.path(), "site");
    let cafile = dir.write("ca.pem", &certificate.pem);
    let listener = format!(
        "tls = {{ certificates = [{{ cert = \"{}\", key = \"{}\" }}] }}",
        cert.display(),
        key.display()
    );
    let proxy = Proxy::start(&config(&[&backend], &listener, "", ""), 1);
    let url = format!("wss://localhost:{}/secure", proxy.addr().port());
    let session = client(
        &["echo", &url],
        &[("WS_CAFILE", cafile.to_str().expect("path"))],
    );
    assert_eq!(session["binary_intact"], true, "{session}");
    assert_eq!(session["close_code"], 1000, "{session}");
    assert_eq!(
        session["headers"]["x-forwarded-proto"], "https",
        "{session}"
    );
}
