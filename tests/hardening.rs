//! Regression tests for what an adversarial probe of the release binary found (issue
//! 12): each is named after the defect and says in one line what broke. Backends here
//! are mostly raw sockets, so they can misbehave exactly as the probe's did.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, StatusCode};

use crate::util::{self, raw_exchange, Backend, Client, Proxy};

/// One listener (`listener_extra` lines in it), one route to pool `p` over `backend`
/// with `pool_extra` lines, no health checks.
fn config(backend: &str, listener_extra: &str, pool_extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n{listener_extra}\n\
         [[route]]\npool = \"p\"\n\n\
         [pool.p]\nbackends = [{{ address = \"{backend}\" }}]\n{pool_extra}\n"
    )
}

/// A backend on 127.0.0.1 that runs `serve` on each connection in a thread of its own.
fn raw_backend(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let serve = Arc::clone(&serve);
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Reads one request head from `stream` (lowercased), byte by byte so nothing after
/// it is taken; `None` when the connection ends first.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let _ = stream.set_read_timeout(Some(util::TIMEOUT));
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&seen).to_ascii_lowercase())
}

/// Reads one request head and its `Content-Length` body from `stream`; `None` when the
/// connection ends first.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let head = read_head(stream)?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(head)
}

/// Connects to `addr` and sends `bytes`.
fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(bytes).expect("write");
    stream
}

/// Waits up to `limit` for the server to close `stream`; how long that took, or `None`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut sink) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// The HTTP/2 connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Defect 2: HTTP/2 connections that sent the preface (or the preface and SETTINGS)
/// and went silent were never closed, and held `max_connections` slots for good.
#[test]
fn silent_http2_connections_are_closed_after_header_timeout() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(
        &config(
            &backend.address(),
            "header_timeout = \"1s\"\nmax_connections = 20",
            "",
        ),
        1,
    );
    let mut silent: Vec<TcpStream> = (0..10).map(|_| send(proxy.addr(), PREFACE)).collect();
    silent.extend((0..10).map(|_| send(proxy.addr(), &[PREFACE, SETTINGS].concat())));
    for (i, stream) in silent.iter_mut().enumerate() {
        let took = closed_within(stream, Duration::from_secs(5));
        assert!(
            took.is_some(),
            "silent HTTP/2 connection {i} still open after 5 s"
        );
    }
    // The slots are free again: an ordinary request is served.
    let mut client = Client::connect(proxy.addr());
    assert_eq!(client.get("/after").status, StatusCode::OK);
}

/// Defect 2: a client that opens HTTP/2 streams and resets them at once (rapid reset,
/// CVE-2023-44487) is cut off with GOAWAY instead of costing a backend request each.
#[test]
fn http2_rapid_reset_gets_goaway_not_a_flood_of_backend_requests() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(&config(&backend.address(), "", ""), 1);
    let mut stream = send(proxy.addr(), &[PREFACE, SETTINGS].concat());
    let mut frames = Vec::new();
    for i in 0..1000u32 {
        let id = 2 * i + 1;
        // HEADERS (END_STREAM | END_HEADERS): :method GET, :scheme http, :path /,
        // :authority "a" (HPACK literal with indexing, name index 1).
        let block = [0x82, 0x86, 0x84, 0x41, 0x01, b'a'];
        frames.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05]);
        frames.extend_from_slice(&id.to_be_bytes());
        frames.extend_from_slice(&block);
        // RST_STREAM, CANCEL (8).
        frames.extend_from_slice(&[0, 0, 4, 3, 0]);
        frames.extend_from_slice(&id.to_be_bytes());
        frames.extend_from_slice(&8u32.to_be_bytes());
    }
    let _ = stream.write_all(&frames);
    // Read frames until GOAWAY (type 7) or the close.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut goaway = false;
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        got.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while at + 9 <= got.len() {
            let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
            goaway |= got[at + 3] == 7;
            at += 9 + len;
        }
        if goaway {
            break;
        }
    }
    assert!(goaway, "no GOAWAY after 1000 reset streams");
    assert!(
        backend.requests() < 200,
        "{} reset streams reached the backend",
        backend.requests()
    );
}

/// Defect 3: slow clients held backend connection slots — a body sent slowly (the
/// head went to the backend before the body arrived) and a response read slowly (here
/// 8 MiB: beyond the 64 KiB read-ahead, the rest waits in a temporary file). With
/// `limits.max_connections = 4`, normal clients must still be served.
#[test]
fn slow_body_and_slow_reading_clients_hold_no_backend_connection() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(
        &config(
            &backend.address(),
            "header_timeout = \"30s\"",
            "limits = { max_connections = 4, max_pending = 100 }\n\
             timeouts = { request = \"2s\", per_try = \"2s\" }",
        ),
        1,
    );
    // 20 clients that send half of a 2,000-byte body, then nothing.
    let slow_bodies: Vec<TcpStream> = (0..20)
        .map(|_| {
            send(
                proxy.addr(),
                &[
                    &b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"[..],
                    &[b'x'; 1000],
                ]
                .concat(),
            )
        })
        .collect();
    // 6 clients that ask for 8 MiB (more than the kernel's socket buffers take) and
    // read none of it, with a small receive window.
    let slow_readers: Vec<TcpStream> = (0..6)
        .map(|_| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            socket.set_recv_buffer_size(4096).expect("rcvbuf");
            socket.connect(&proxy.addr().into()).expect("connect");
            let mut stream: TcpStream = socket.into();
            stream
                .write_all(b"GET /download/8388608 HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut client = Client::connect(proxy.addr());
    let served = (0..20)
        .filter(|i| client.get(&format!("/normal/{i}")).status == StatusCode::OK)
        .count();
    assert_eq!(served, 20, "normal requests served while slow clients wait");
    // The slow readers' responses (8 MiB each, 64 KiB in memory, the rest in a
    // temporary file) arrive whole when they do read.
    let mut reader = slow_readers.into_iter().next().expect("a slow reader");
    let _ = reader.set_read_timeout(Some(Duration::from_secs(10)));
    let reply = util::read_response(&mut reader);
    let body_at = reply.text.find("\r\n\r\n").map_or(0, |at| at + 4);
    assert_eq!(reply.status, Some(200));
    assert_eq!(reply.text.len() - body_at, 8_388_608);
    drop(slow_bodies);
}

/// Defect 4: bytes a backend sent after a complete response were read as the next
/// request's response: a body after a `HEAD` response, 30 ms late, while the next
/// request was already on its way on the same connection; and bytes past a response's
/// `Content-Length` that arrived while the connection sat in the pool.
#[test]
fn stray_bytes_after_a_response_never_reach_the_next_request() {
    let backend = raw_backend(|mut stream| {
        while let Some(head) = read_request(&mut stream) {
            if head.starts_with("head ") {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n");
                std::thread::sleep(Duration::from_millis(30));
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nPOISON");
            } else if head.starts_with("get /late") {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal");
                std::thread::sleep(Duration::from_millis(30));
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nPOISON");
            } else {
                std::thread::sleep(Duration::from_millis(100));
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal");
            }
        }
    });
    let proxy = Proxy::start(&config(&backend.to_string(), "", ""), 1);
    let mut client = Client::connect(proxy.addr());
    for i in 0..3 {
        let head = client.send(
            Request::head(format!("/h/{i}"))
                .header("host", "x")
                .body(util::empty())
                .expect("request"),
        );
        assert_eq!(head.status, StatusCode::OK);
        // At once: the HEAD response's stray body is still to come.
        let reply = client.get(&format!("/g/{i}"));
        assert_eq!(
            reply.text(),
            "real",
            "request {i} after HEAD got another's bytes"
        );
    }
    for i in 0..3 {
        assert_eq!(client.get(&format!("/late/{i}")).text(), "real");
        // The stray bytes arrive while the connection is idle in the pool.
        std::thread::sleep(Duration::from_millis(80));
        let reply = client.get(&format!("/after-late/{i}"));
        assert_eq!(
            reply.text(),
            "real",
            "request {i} got bytes past a Content-Length"
        );
    }
}

/// Defect 5: a backend response that broke right after its head reached the client as
/// an empty 200 (and the access log said 200).
#[test]
fn a_response_that_breaks_after_its_head_is_a_502_not_an_empty_200() {
    let backend = raw_backend(|mut stream| {
        if read_request(&mut stream).is_some() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n");
        }
    });
    let proxy = Proxy::start(&config(&backend.to_string(), "", ""), 1);
    let reply = raw_exchange(proxy.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reply.status, Some(502), "{}", reply.text);
}

/// Defect 5: a body that broke off mid-way reached an HTTP/1.0 client (which has no
/// chunked framing, so its response ends with the close) as what looked complete. It
/// must end with a reset, and the access log must say aborted.
#[test]
fn a_body_that_breaks_reaches_an_http10_client_as_a_reset() {
    let backend = raw_backend(|mut stream| {
        if read_request(&mut stream).is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let dir = util::Dir::new();
    let stderr = dir.path().join("stderr.log");
    let (mut child, addr) = serve(
        &dir,
        &config(&backend.to_string(), "", ""),
        &[],
        std::fs::File::create(&stderr).expect("stderr").into(),
    );
    let mut stream = send(addr, b"GET /broken HTTP/1.0\r\n\r\n");
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break "a clean close",
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(_) => break "another error",
        }
    };
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello"), "{text}");
    assert_eq!(
        end, "reset",
        "a truncated close-delimited body must not end cleanly"
    );
    let logged = util::eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("path=/broken") && l.contains("aborted=true"))
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        logged,
        "{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
}

/// `evenkeel serve` (1 worker, access log on) on `config` written into `dir`, with
/// `env` set and stderr to `stderr` (the tests that need what `Proxy` hides: the
/// access log, the environment); the process and its first listener's address.
fn serve(
    dir: &util::Dir,
    config: &str,
    env: &[(&str, &std::path::Path)],
    stderr: std::process::Stdio,
) -> (std::process::Child, SocketAddr) {
    let path = dir.write("evenkeel.toml", config);
    let mut command = util::evenkeel();
    command
        .args(["serve", "-c"])
        .arg(&path)
        .args(["--workers", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(stderr);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("serve");
    let addr = listening_address(&mut child);
    (child, addr)
}

/// The address `evenkeel serve` prints for its first listener.
fn listening_address(child: &mut std::process::Child) -> SocketAddr {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("listening public http://")
                .and_then(|a| a.parse().ok())
        })
        .expect("a listening line");
    // Keep reading stdout so the pipe never fills.
    std::thread::spawn(move || lines.for_each(drop));
    addr
}

/// Defect 6: response heads over 64 KiB were forwarded (70 KB and 100 KB got through).
#[test]
fn response_heads_over_64_kib_are_refused_with_502() {
    let backend = raw_backend(|mut stream| {
        if read_request(&mut stream).is_some() {
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..70 {
                head.extend_from_slice(
                    format!("x-filler-{i}: {}\r\n", "f".repeat(1000)).as_bytes(),
                );
            }
            head.extend_from_slice(b"content-length: 2\r\n\r\nok");
            // Most of it first, then the rest: the whole head then arrives in one read
            // that takes the buffer past 64 KiB (how the probe got 70 KB through).
            let _ = stream.write_all(&head[..64_600]);
            std::thread::sleep(Duration::from_millis(100));
            let _ = stream.write_all(&head[64_600..]);
        }
    });
    let proxy = Proxy::start(&config(&backend.to_string(), "", ""), 1);
    let reply = raw_exchange(proxy.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reply.status, Some(502), "{:.200}", reply.text);
}

/// Defect 8: an upload sent as one-byte chunks cost three writes per chunk; it must
/// arrive whole (re-chunked in batches, see src/proxy/outbox.rs for the write count).
#[test]
fn an_upload_of_one_byte_chunks_arrives_whole() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(
        &config(&backend.address(), "", "limits = { body_buffer = 0 }"),
        1,
    );
    let mut body = Vec::new();
    for _ in 0..20_000 {
        body.extend_from_slice(b"1\r\nx\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let reply = raw_exchange(
        proxy.addr(),
        &[
            &b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            &body,
        ]
        .concat(),
    );
    assert_eq!(reply.status, Some(200), "{}", reply.text);
    assert!(
        reply.text.contains("\"body_bytes\":20000"),
        "{}",
        reply.text
    );
}

/// Defect 9: an upload longer than `per_try` failed with 504 while the backend was
/// still receiving it; a body that flows is bounded by progress (`body_idle`) only.
#[test]
fn an_upload_longer_than_per_try_is_not_cut_while_it_flows() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(
        &config(
            &backend.address(),
            "",
            "timeouts = { connect = \"1s\", per_try = \"1s\", request = \"1s\", body_idle = \"1s\" }\n\
             limits = { body_buffer = 0 }",
        ),
        1,
    );
    let mut stream = send(
        proxy.addr(),
        b"POST /slow-upload HTTP/1.1\r\nHost: x\r\nContent-Length: 25000\r\n\r\n",
    );
    // 25 pieces of 1,000 bytes, 100 ms apart: 2.5 s in all, never a 1 s pause.
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(100));
        stream.write_all(&[b'u'; 1000]).expect("write");
    }
    let reply = util::read_response(&mut stream);
    assert_eq!(reply.status, Some(200), "{}", reply.text);
    assert!(
        reply.text.contains("\"body_bytes\":25000"),
        "{}",
        reply.text
    );
}

/// Defect 9: an upload that stops is cut after `body_idle` with 408, and the backend
/// is not blamed for it.
#[test]
fn an_upload_that_stops_is_cut_after_body_idle_with_408() {
    let backend = Backend::start("a");
    let proxy = Proxy::start_with_admin(
        &config(
            &backend.address(),
            "",
            "timeouts = { body_idle = \"1s\" }\nlimits = { body_buffer = 0 }",
        ),
        1,
    );
    let started = Instant::now();
    let mut stream = send(
        proxy.addr(),
        &[
            &b"POST /stops HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"[..],
            &[b's'; 70_000],
        ]
        .concat(),
    );
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let reply = util::read_response(&mut stream);
    let took = started.elapsed();
    assert_eq!(reply.status, Some(408), "{}", reply.text);
    assert!(took < Duration::from_secs(4), "cut after {took:?}");
    let status = proxy.backend_status("p", &backend.address());
    assert_eq!(status["failures"], 0, "{status}");
}

/// Defect 12: a client that disconnected did not cancel its in-flight upstream
/// request; only `per_try` ended it.
#[test]
fn a_client_that_disconnects_cancels_its_upstream_request() {
    let (backend, upstream_closed) = silent_backend();
    let proxy = Proxy::start(&config(&backend.to_string(), "", ""), 1);
    let stream = send(proxy.addr(), b"GET /abandoned HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let left = Instant::now();
    drop(stream);
    assert_closed_soon_after(&upstream_closed, left);
}

/// When a backend connection was closed by evenkeel (set by [`silent_backend`]).
pub(crate) type ClosedAt = Arc<Mutex<Option<Instant>>>;

/// A backend that reads a request, never answers, and notes when evenkeel closes the
/// connection.
pub(crate) fn silent_backend() -> (SocketAddr, ClosedAt) {
    let upstream_closed: ClosedAt = Arc::default();
    let seen = Arc::clone(&upstream_closed);
    let backend = raw_backend(move |mut stream| {
        if read_request(&mut stream).is_none() {
            return;
        }
        if closed_within(&mut stream, Duration::from_secs(15)).is_some() {
            *seen.lock().expect("lock") = Some(Instant::now());
        }
    });
    (backend, upstream_closed)
}

/// Asserts the [`silent_backend`]'s connection was closed within 2 s of `left`.
pub(crate) fn assert_closed_soon_after(closed: &ClosedAt, left: Instant) {
    let cancelled = util::eventually(Duration::from_secs(5), || {
        closed.lock().expect("lock").is_some()
    });
    assert!(
        cancelled,
        "the backend's connection was still open 5 s after the client left"
    );
    let after = closed.lock().expect("lock").map(|at| at - left);
    assert!(after < Some(Duration::from_secs(2)), "{after:?}");
}

/// The lenient cases the probe listed are refused: `_` framing fields, bare LF line
/// ends, HTTP/1.1 without `Host`, userinfo in an absolute-form target (400), an
/// unknown `Expect` (417); a response with a transfer coding evenkeel does not decode
/// is a 502. None of the refused requests reaches the backend.
#[test]
fn lenient_request_and_response_shapes_are_refused() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(&config(&backend.address(), "", ""), 1);
    for (request, status) in [
        (
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent_Length: 5\r\n\r\nhello"[..],
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTRANSFER_encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-No-Host: 1\r\n\r\n", 400),
        (b"GET http://user:pw@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417),
    ] {
        let reply = raw_exchange(proxy.addr(), request);
        assert_eq!(
            reply.status,
            Some(status),
            "{:?}: {}",
            String::from_utf8_lossy(request),
            reply.text
        );
    }
    assert_eq!(
        backend.requests(),
        0,
        "a refused request reached the backend"
    );
    // HTTP/1.0 without Host is fine, and goes out (as HTTP/1.1, which needs a Host)
    // with the backend's address as its Host: NGINX and Django refuse an empty one.
    let reply = raw_exchange(proxy.addr(), b"GET /ok HTTP/1.0\r\n\r\n");
    assert_eq!(reply.status, Some(200), "{}", reply.text);
    assert!(
        reply
            .text
            .contains(&format!("[\"host\",\"{}\"]", backend.address())),
        "{}",
        reply.text
    );

    let gzip_backend = raw_backend(|mut stream| {
        if read_request(&mut stream).is_some() {
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n",
            );
        }
    });
    let proxy = Proxy::start(&config(&gzip_backend.to_string(), "", ""), 1);
    let reply = raw_exchange(proxy.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reply.status, Some(502), "{}", reply.text);
}

/// Defect 5's fix must not hold back a response whose body begins late (a long poll,
/// an event stream): its head reaches the client at once, the body when it comes, and
/// the backend is neither blamed nor asked twice.
#[test]
fn a_body_that_begins_late_is_passed_on_not_failed() {
    let asked = Arc::new(Mutex::new(0u32));
    let count = Arc::clone(&asked);
    let backend = raw_backend(move |mut stream| {
        while read_request(&mut stream).is_some() {
            *count.lock().expect("lock") += 1;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
            std::thread::sleep(Duration::from_millis(1500));
            let _ = stream.write_all(b"5\r\nhello\r\n0\r\n\r\n");
        }
    });
    let proxy = Proxy::start(
        &config(
            &backend.to_string(),
            "",
            "timeouts = { body_idle = \"5s\" }",
        ),
        1,
    );
    let started = Instant::now();
    let mut stream = send(proxy.addr(), b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).expect("a head");
    let head_after = started.elapsed();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        head_after < Duration::from_millis(1000),
        "head after {head_after:?}"
    );
    let mut rest = Vec::new();
    let mut chunk = [0u8; 1024];
    while !rest.ends_with(b"0\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(n @ 1..) => rest.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    assert!(String::from_utf8_lossy(&rest).contains("hello"));
    assert_eq!(*asked.lock().expect("lock"), 1);
}

/// Found by bench/slow_clients.sh: a backend that answers before it has the whole
/// request body (a 413, or a handler that does not read it) and closes got its
/// answer replaced by a 502, and was counted as failing, because evenkeel went on
/// sending the body. Its answer is the response; the rest of the body is not sent.
#[test]
fn an_early_answer_from_the_backend_is_the_response_not_a_502() {
    let backend = raw_backend(|mut stream| {
        if read_head(&mut stream).is_none() {
            return;
        }
        let _ = stream.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!",
        );
        // Close with the body unread: the kernel answers what still comes with a reset.
    });
    let proxy = Proxy::start_with_admin(
        &config(&backend.to_string(), "", "limits = { body_buffer = 0 }"),
        1,
    );
    let mut stream = send(
        proxy.addr(),
        b"POST /too-big HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n",
    );
    // The body keeps coming while the answer is on its way.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    for _ in 0..20 {
        if stream.write_all(&[b'b'; 16 * 1024]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let reply = util::read_response(&mut stream);
    assert_eq!(reply.status, Some(413), "{}", reply.text);
    assert!(reply.text.ends_with("big!"), "{}", reply.text);
    let status = proxy.backend_status("p", &backend.to_string());
    assert_eq!(status["failures"], 0, "{status}");
}

/// The same with a small body read whole, which goes out in one write with its head:
/// the backend reads the head only, answers 413 and closes with the body unread (a
/// reset); its answer is still the response, and it is not counted as failing. The
/// backend sees the chunked body announced by its length.
#[test]
fn an_early_answer_to_a_body_sent_with_its_head_is_the_response() {
    let seen = Arc::new(Mutex::new(String::new()));
    let head_seen = Arc::clone(&seen);
    let backend = raw_backend(move |mut stream| {
        let Some(head) = read_head(&mut stream) else {
            return;
        };
        *head_seen.lock().expect("lock") = head;
        let _ = stream.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!",
        );
    });
    let proxy = Proxy::start_with_admin(&config(&backend.to_string(), "", ""), 1);
    for _ in 0..3 {
        let mut stream = send(
            proxy.addr(),
            b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        stream
            .write_all(format!("1000\r\n{}\r\n0\r\n\r\n", "s".repeat(4096)).as_bytes())
            .expect("body");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let reply = util::read_response(&mut stream);
        assert_eq!(reply.status, Some(413), "{}", reply.text);
        assert!(reply.text.ends_with("big!"), "{}", reply.text);
    }
    let head = seen.lock().expect("lock").to_ascii_lowercase();
    assert!(head.contains("content-length: 4096\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    let status = proxy.backend_status("p", &backend.to_string());
    assert_eq!(status["failures"], 0, "{status}");
    assert_eq!(status["responses"][3], 3, "{status}");
}

/// From a review of the early-answer change: a backend that answers 200 at once and
/// then reads the body (a streaming handler) must still get the whole body.
#[test]
fn an_early_200_does_not_cut_the_upload() {
    let received = Arc::new(Mutex::new(0usize));
    let count = Arc::clone(&received);
    let backend = raw_backend(move |mut stream| {
        if read_head(&mut stream).is_none() {
            return;
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        let mut body = vec![0u8; 300_000];
        if stream.read_exact(&mut body).is_ok() {
            *count.lock().expect("lock") = body.len();
        }
    });
    let proxy = Proxy::start(
        &config(&backend.to_string(), "", "limits = { body_buffer = 0 }"),
        1,
    );
    let mut stream = send(
        proxy.addr(),
        b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n",
    );
    for _ in 0..30 {
        stream.write_all(&[b's'; 10_000]).expect("write");
        std::thread::sleep(Duration::from_millis(10));
    }
    let reply = util::read_response(&mut stream);
    assert_eq!(reply.status, Some(200), "{}", reply.text);
    let got = util::eventually(Duration::from_secs(5), || {
        *received.lock().expect("lock") == 300_000
    });
    assert!(
        got,
        "the backend got {} bytes",
        *received.lock().expect("lock")
    );
}

/// From a review of the spill: with no usable temporary directory, responses larger
/// than the in-memory read-ahead are still served whole, fast and slow clients alike
/// (the backend then waits for a slow client, as without a spill).
#[test]
fn responses_are_whole_when_the_temporary_directory_is_unusable() {
    let backend = Backend::start("a");
    let dir = util::Dir::new();
    let missing = dir.path().join("no-such-dir");
    let (mut child, addr) = serve(
        &dir,
        &config(&backend.address(), "", ""),
        &[("TMPDIR", &missing)],
        std::process::Stdio::null(),
    );
    // A slow reader: small window, reads in small bites with pauses.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket.connect(&addr.into()).expect("connect");
    let mut slow: TcpStream = socket.into();
    slow.write_all(b"GET /download/8388608 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(300));
    // A fast client meanwhile.
    let fast = raw_exchange(addr, b"GET /download/1048576 HTTP/1.1\r\nHost: x\r\n\r\n");
    let slow_reply = util::read_response(&mut slow);
    let _ = child.kill();
    let _ = child.wait();
    for (reply, len) in [(fast, 1_048_576), (slow_reply, 8_388_608)] {
        let body_at = reply.text.find("\r\n\r\n").map_or(0, |at| at + 4);
        assert_eq!(reply.status, Some(200));
        assert_eq!(reply.text.len() - body_at, len);
    }
}
