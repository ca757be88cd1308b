//! `evenkeel serve` as a process: real backends on loopback, real clients, real signals.
//!
//! Each test starts its own backends ([`Backend`]) and its own `evenkeel serve`
//! ([`Proxy`]) on `127.0.0.1:0`, and both are stopped when the test ends, pass or fail.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::util::{
    self, empty, full, get, raw_exchange, run_bounded, tally, zeros, Backend, Client, Proxy,
    TIMEOUT,
};

// ---------------------------------------------------------------------------------------
// Config text

/// A config with one listener on port 0 and `rest` (routes and pools) after it.
fn config_with(header_timeout: &str, drain_timeout: &str, rest: &str) -> String {
    format!(
        "drain_timeout = \"{drain_timeout}\"\n\n\
         [[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\
         header_timeout = \"{header_timeout}\"\n\n{rest}"
    )
}

/// A `[pool.NAME]` table over `backends` (with their weights) and `extra` lines.
fn pool(name: &str, algorithm: &str, backends: &[(&Backend, u32)], extra: &str) -> String {
    let list: String = backends
        .iter()
        .map(|(b, w)| format!("  {{ address = \"{}\", weight = {w} }},\n", b.address()))
        .collect();
    format!("[pool.{name}]\nalgorithm = \"{algorithm}\"\n{extra}backends = [\n{list}]\n\n")
}

/// One listener, one catch-all route to pool `web`.
fn one_pool(algorithm: &str, backends: &[(&Backend, u32)], extra: &str) -> String {
    config_with(
        "10s",
        "10s",
        &format!(
            "[[route]]\npool = \"web\"\n\n{}",
            pool("web", algorithm, backends, extra)
        ),
    )
}

fn counts(backends: &[&Backend]) -> Vec<u64> {
    backends.iter().map(|b| b.requests()).collect()
}

// ---------------------------------------------------------------------------------------
// 1. Shares

/// Keep-alive connections the two-worker tests spread their requests over. The kernel
/// hands each to a worker by a hash of its address (SO_REUSEPORT): with 8, both workers
/// serve some with probability 1 − 2⁻⁷. The counts asserted hold either way; the spread
/// is what makes them prove that the workers share one balancer.
const CONNECTIONS: usize = 8;

/// Sends `cycles` full cycles of sequential requests over [`CONNECTIONS`] keep-alive
/// connections used in turn, and checks after every cycle that each backend got exactly
/// its weight's worth so far.
fn assert_exact_per_cycle(proxy: &Proxy, backends: &[&Backend], weights: &[u64], cycles: u64) {
    let mut clients: Vec<Client> = (0..CONNECTIONS)
        .map(|_| Client::connect(proxy.addr()))
        .collect();
    let cycle: u64 = weights.iter().sum();
    let mut sent = 0usize;
    for k in 1..=cycles {
        for _ in 0..cycle {
            let client = &mut clients[sent % CONNECTIONS];
            sent += 1;
            assert_eq!(client.get("/").status, StatusCode::OK);
        }
        let want: Vec<u64> = weights.iter().map(|w| w * k).collect();
        assert_eq!(counts(backends), want, "after cycle {k}");
    }
}

/// `threads` clients at once, each on its own connection, `per_thread` requests each.
fn concurrent_gets(proxy: &Proxy, threads: usize, per_thread: usize) {
    let addr = proxy.addr();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                for _ in 0..per_thread {
                    assert_eq!(client.get("/").status, StatusCode::OK);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("client thread");
    }
}

#[test]
fn round_robin_gives_each_backend_exactly_a_third_with_one_worker() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let proxy = Proxy::start(
        &one_pool("round_robin", &[(&a, 1), (&b, 1), (&c, 1)], ""),
        1,
    );
    let mut client = Client::connect(proxy.addr());
    for _ in 0..300 {
        assert_eq!(client.get("/").status, StatusCode::OK);
    }
    assert_eq!(counts(&[&a, &b, &c]), [100, 100, 100]);
}

/// Both workers share one round-robin counter per pool, so sequential requests over
/// several connections (whichever worker each landed on) are exact after every cycle,
/// and concurrent ones are exact over any whole number of cycles.
#[test]
fn round_robin_is_exact_across_two_workers_sequential_and_concurrent() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let proxy = Proxy::start(
        &one_pool("round_robin", &[(&a, 1), (&b, 1), (&c, 1)], ""),
        2,
    );
    assert_exact_per_cycle(&proxy, &[&a, &b, &c], &[1, 1, 1], 100);
    concurrent_gets(&proxy, 4, 75);
    assert_eq!(counts(&[&a, &b, &c]), [200, 200, 200]);
}

#[test]
fn weighted_round_robin_is_exact_per_cycle_with_one_worker() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let config = one_pool("weighted_round_robin", &[(&a, 1), (&b, 2), (&c, 3)], "");
    let proxy = Proxy::start(&config, 1);
    let mut client = Client::connect(proxy.addr());
    // Smooth WRR with weights 1, 2, 3 gives c b a c b c: check the interleaving too.
    let first: Vec<String> = (0..6)
        .map(|_| client.get("/").backend().to_string())
        .collect();
    assert_eq!(first, ["c", "b", "a", "c", "b", "c"]);
    for k in 2..=100 {
        for _ in 0..6 {
            assert_eq!(client.get("/").status, StatusCode::OK);
        }
        assert_eq!(counts(&[&a, &b, &c]), [k, 2 * k, 3 * k], "after cycle {k}");
    }
}

/// The weighted balancer's state is one per pool, shared by the workers: exact 1:2:3
/// after every cycle of sequential requests, and over whole cycles of concurrent ones.
#[test]
fn weighted_round_robin_is_exact_across_two_workers_sequential_and_concurrent() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let config = one_pool("weighted_round_robin", &[(&a, 1), (&b, 2), (&c, 3)], "");
    let proxy = Proxy::start(&config, 2);
    assert_exact_per_cycle(&proxy, &[&a, &b, &c], &[1, 2, 3], 50);
    concurrent_gets(&proxy, 4, 75);
    assert_eq!(counts(&[&a, &b, &c]), [100, 200, 300]);
}

// ---------------------------------------------------------------------------------------
// 2. Headers

#[test]
fn forwarded_headers_are_set_and_hop_by_hop_headers_dropped_both_ways() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);
    let mut client = Client::connect(proxy.addr());
    let request = Request::get("/headers")
        .header("host", "shop.example:8080")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-for", "198.51.100.1")
        .header("x-forwarded-proto", "https")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "must not pass")
        .header("keep-alive", "timeout=30")
        .header("te", "trailers")
        .header("proxy-connection", "keep-alive")
        .header("x-end-to-end", "yes")
        .header("x-want-hop-by-hop", "1")
        .body(empty())
        .unwrap();
    let reply = client.send(request);
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // What the backend received.
    assert_eq!(
        reply.echoed("x-forwarded-for"),
        ["203.0.113.7, 198.51.100.1, 127.0.0.1"]
    );
    assert_eq!(reply.echoed("x-forwarded-proto"), ["http"]);
    assert_eq!(reply.echoed("x-forwarded-host"), ["shop.example:8080"]);
    assert_eq!(reply.echoed("host"), ["shop.example:8080"]);
    assert_eq!(reply.echoed("x-end-to-end"), ["yes"]);
    for hop in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            reply.echoed(hop).is_empty(),
            "backend saw hop-by-hop {hop}: {}",
            reply.text()
        );
    }

    // What the client received from the backend's response.
    assert_eq!(reply.headers["x-end-to-end"], "kept");
    assert_eq!(reply.backend(), "a");
    for hop in [
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "connection",
    ] {
        assert!(
            !reply.headers.contains_key(hop),
            "client saw hop-by-hop {hop}: {:?}",
            reply.headers
        );
    }

    // The connection stays usable, and without a client X-Forwarded-For the client
    // address is the whole value.
    let again = client.get("/second");
    assert_eq!(again.echoed("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(again.echoed("x-forwarded-host"), ["test.local"]);
    assert_eq!(backend.requests(), 2);
}

/// The upstream keep-alive pool must not hand out a connection the backend closed: a
/// backend that closes after every response costs no request an error.
#[test]
fn a_backend_closing_every_connection_after_its_response_fails_no_request() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);
    let mut client = Client::connect(proxy.addr());
    for i in 0..50 {
        let request = get(&format!("/close/{i}"))
            .header("x-close-connection", "1")
            .body(empty())
            .unwrap();
        let reply = client.send(request);
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {i}: {}",
            reply.text()
        );
        // The backend's `Connection: close` is about its own connection, not ours.
        assert!(
            !reply.headers.contains_key("connection"),
            "{:?}",
            reply.headers
        );
    }
    assert_eq!(backend.requests(), 50);
}

/// A backend on 127.0.0.1 that reads one request per connection (head and
/// `Content-Length` body), writes `answer` as it is (no `Connection: close`), waits
/// `linger`, then closes the connection without a word. Returns its address and the
/// count of requests to paths under `/race`.
fn one_answer_backend(
    answer: &'static [u8],
    linger: Duration,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let raced = std::sync::Arc::new(AtomicU64::new(0));
    let count = std::sync::Arc::clone(&raced);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let count = std::sync::Arc::clone(&count);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let _ = stream.set_read_timeout(Some(TIMEOUT));
                let head_end = loop {
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&seen[..head_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while seen.len() < head_end + length {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if head.contains(" /race") {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                let _ = stream.write_all(answer);
                std::thread::sleep(linger);
            });
        }
    });
    (addr, raced)
}

/// Backends close idle keep-alive connections whenever they like. A pooled connection
/// the backend closed must cost no request: found closed before use (POST with a body,
/// which must not go out twice), or — for a GET sent just as the close happens — sent
/// again on a new connection.
#[test]
fn backends_closing_idle_connections_silently_fail_no_request() {
    use std::sync::atomic::Ordering;
    let (addr, raced) = one_answer_backend(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Duration::from_millis(5),
    );
    let config = config_with(
        "5s",
        "5s",
        &format!(
            "[[route]]\npool = \"p\"\n[pool.p]\nbackends = [{{ address = \"{addr}\" }}]\n\
             [pool.p.health]\ninterval = \"1h\"\n"
        ),
    );
    let proxy = Proxy::start(&config, 1);
    let mut client = Client::connect(proxy.addr());
    // Back to back: every GET finds the connection of the one before it closing.
    for i in 0..40 {
        let reply = client.send(get(&format!("/race/get/{i}")).body(empty()).unwrap());
        assert_eq!(reply.status, StatusCode::OK, "GET {i}: {}", reply.text());
    }
    // Spaced: the close has arrived; a POST must find out before it sends anything.
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(30));
        let request = Request::post(format!("http://evenkeel.test/race/post/{i}"))
            .header("host", "evenkeel.test")
            .body(full("hello"))
            .unwrap();
        let reply = client.send(request);
        assert_eq!(reply.status, StatusCode::OK, "POST {i}: {}", reply.text());
    }
    assert_eq!(
        raced.load(Ordering::SeqCst),
        50,
        "each request reached the backend once"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Large bodies

/// Bodies of every size around the proxy's thresholds arrive whole, both ways, on one
/// keep-alive connection, with the default limits and with reading ahead turned off
/// or made small. Uploads are sent with their head (up to 16 KiB in all), read whole
/// before the pick and sent behind their head (up to `body_buffer`, 64 KiB by
/// default), or streamed beyond it; then the same sizes chunked. Downloads are read
/// ahead of the client up to `body_buffer`, then streamed (or spilled).
/// (Between 16 and 64 KiB an upload's body was once taken for the single write, found
/// too big for it, and dropped: the backend got a head announcing a body that never
/// came.)
#[test]
fn bodies_of_every_size_around_the_thresholds_arrive_whole_both_ways() {
    for limits in [
        "",
        "limits = { body_buffer = 0 }\n",
        "limits = { body_buffer = 1000, body_spill = 5000 }\n",
    ] {
        let backend = Backend::start("a");
        let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], limits), 1);
        let uploaded = bodies_around_the_thresholds(&proxy, limits);
        assert_eq!(backend.uploaded(), uploaded, "{limits}");
    }
}

/// Sizes around 4 KiB, 16 KiB (one write, one TLS record) and 64 KiB (the default
/// `body_buffer`).
const THRESHOLD_SIZES: [u64; 13] = [
    0, 1, 100, 4_096, 6_000, 15_000, 16_384, 17_000, 40_000, 65_535, 65_536, 70_000, 300_000,
];

/// Sends every [`THRESHOLD_SIZES`] up and down through `proxy` (to a [`Backend`]),
/// asserting each arrives whole; the body bytes uploaded.
fn bodies_around_the_thresholds(proxy: &Proxy, limits: &str) -> u64 {
    let mut client = Client::connect(proxy.addr());
    for size in THRESHOLD_SIZES {
        let upload = Request::post("/upload")
            .header("host", "test.local")
            .body(zeros(size))
            .unwrap();
        let reply = client
            .try_send(upload)
            .unwrap_or_else(|e| panic!("{limits}: {size} bytes: {e}; stderr:\n{}", proxy.stderr()));
        assert_eq!(reply.status, StatusCode::OK, "{limits}: {size} bytes");
        assert_eq!(reply.json()["body_bytes"], size, "{limits}: {size} bytes");
        let download = get(&format!("/download/{size}")).body(empty()).unwrap();
        assert_eq!(
            client.send_counting(download),
            (StatusCode::OK, size),
            "{limits}: download of {size} bytes"
        );
    }
    // The same uploads chunked (1,000-byte chunks): no length to judge by up front.
    for size in THRESHOLD_SIZES {
        let mut request =
            b"POST /upload HTTP/1.1\r\nhost: test.local\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec();
        let mut left = size;
        while left > 0 {
            let chunk = left.min(1_000);
            request.extend_from_slice(format!("{chunk:x}\r\n").as_bytes());
            request.extend(std::iter::repeat_n(b'x', chunk as usize));
            request.extend_from_slice(b"\r\n");
            left -= chunk;
        }
        request.extend_from_slice(b"0\r\n\r\n");
        let reply = raw_exchange(proxy.addr(), &request);
        let text = &reply.text;
        assert_eq!(
            reply.status,
            Some(200),
            "{limits}: chunked {size} bytes: {text}"
        );
        assert!(
            text.contains(&format!("\"body_bytes\":{size}")),
            "{limits}: chunked {size} bytes: {text}"
        );
    }
    2 * THRESHOLD_SIZES.iter().sum::<u64>()
}

#[test]
fn fifty_megabytes_stream_both_ways_without_growing_the_proxy() {
    const SIZE: u64 = 50 * 1024 * 1024;
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);
    let mut client = Client::connect(proxy.addr());
    assert_eq!(client.get("/warm-up").status, StatusCode::OK);
    let hwm_before = proxy.memory_kib("VmHWM");
    let rss_before = proxy.memory_kib("VmRSS");

    let upload = Request::post("/upload")
        .header("host", "test.local")
        .body(zeros(SIZE))
        .unwrap();
    let reply = client.send(upload);
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["body_bytes"], SIZE);
    assert_eq!(backend.uploaded(), SIZE);

    let download = get(&format!("/download/{SIZE}")).body(empty()).unwrap();
    let (status, received) = client.send_counting(download);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(received, SIZE);

    let hwm_after = proxy.memory_kib("VmHWM");
    let rss_after = proxy.memory_kib("VmRSS");
    eprintln!(
        "proxy memory: VmHWM {hwm_before} -> {hwm_after} KiB, VmRSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        hwm_after.saturating_sub(hwm_before) < 20 * 1024,
        "peak resident memory grew from {hwm_before} KiB to {hwm_after} KiB"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Errors evenkeel answers itself

/// The error body names the pool and gives away no backend address.
fn assert_error_body(body: &str, backend_addr: &str) {
    assert!(body.contains("pool \"web\""), "{body}");
    assert!(!body.contains(backend_addr), "{body}");
    assert!(!body.contains("127.0.0.1"), "{body}");
}

#[test]
fn a_refused_backend_gives_502_naming_the_pool_not_the_address() {
    // A port with nothing listening: bind one, note it, close it.
    let refused: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let config = config_with(
        "10s",
        "10s",
        &format!(
            "[[route]]\npool = \"web\"\n\n[pool.web]\nbackends = [{{ address = \"{refused}\" }}]\n"
        ),
    );
    let proxy = Proxy::start(&config, 1);
    let reply = Client::connect(proxy.addr()).get("/");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_error_body(&reply.text(), &refused.to_string());
}

#[test]
fn a_backend_slower_than_per_try_gives_504_in_time() {
    let slow = Backend::with_delay("slow", Duration::from_secs(3));
    let timeouts = "timeouts = { connect = \"100ms\", per_try = \"300ms\", request = \"300ms\" }\n";
    let proxy = Proxy::start(&one_pool("round_robin", &[(&slow, 1)], timeouts), 1);
    let mut client = Client::connect(proxy.addr());
    let start = Instant::now();
    let reply = client.get("/");
    let took = start.elapsed();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "504 after {took:?}"
    );
    assert_error_body(&reply.text(), &slow.address());
    assert_eq!(slow.requests(), 1);
}

// 503 (no usable backend) needs health checks, ejection or draining to make every
// backend unusable: see tests/survive.rs.

// ---------------------------------------------------------------------------------------
// 5. HTTP/2

/// Runs `exchanges` on an HTTP/2 connection (prior knowledge) to `addr`, within
/// [`TIMEOUT`].
fn over_http2<T>(
    addr: SocketAddr,
    exchanges: impl AsyncFnOnce(&mut hyper::client::conn::http2::SendRequest<util::ClientBody>) -> T,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .expect("h2 handshake");
            tokio::spawn(connection);
            exchanges(&mut sender).await
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .expect("h2 exchanges in time")
    })
}

#[test]
fn an_http2_prior_knowledge_client_is_served() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);
    let addr = proxy.addr();
    let (get_echo, post_echo) = over_http2(addr, async |sender| {
        let mut results = Vec::new();
        let requests = [
            Request::get(format!("http://{addr}/h2?x=1"))
                .body(empty())
                .unwrap(),
            Request::post(format!("http://{addr}/h2/upload"))
                .body(full(vec![7u8; 100_000]))
                .unwrap(),
        ];
        for request in requests {
            let response = sender.send_request(request).await.expect("h2 response");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.version(), Version::HTTP_2);
            assert_eq!(response.headers()["x-backend"], "a");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            results.push(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
        }
        (results.remove(0), results.remove(0))
    });
    assert_eq!(get_echo["method"], "GET");
    assert_eq!(get_echo["path"], "/h2?x=1");
    assert_eq!(get_echo["version"], "HTTP/1.1");
    let host: Vec<&str> = get_echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == "host")
        .filter_map(|p| p[1].as_str())
        .collect();
    assert_eq!(host, [addr.to_string()]);
    assert_eq!(post_echo["method"], "POST");
    assert_eq!(post_echo["body_bytes"], 100_000);
    assert_eq!(backend.requests(), 2);
}

/// An HTTP/2 client's bodies around the thresholds ([`THRESHOLD_SIZES`]) arrive
/// whole both ways, on one connection, to an HTTP/1 backend: the same forwarding path
/// as HTTP/1 clients, with bodies read from HTTP/2 DATA frames.
#[test]
fn an_http2_clients_bodies_of_every_size_arrive_whole_both_ways() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);
    let addr = proxy.addr();
    over_http2(addr, async |sender| {
        for size in THRESHOLD_SIZES {
            let upload = Request::post(format!("http://{addr}/upload"))
                .body(zeros(size))
                .unwrap();
            let response = sender.send_request(upload).await.expect("h2 response");
            assert_eq!(response.status(), StatusCode::OK, "{size} bytes");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(echo["body_bytes"], size, "{size} bytes up");
            let download = Request::get(format!("http://{addr}/download/{size}"))
                .body(empty())
                .unwrap();
            let response = sender.send_request(download).await.expect("h2 response");
            assert_eq!(response.status(), StatusCode::OK, "{size} bytes");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len() as u64, size, "{size} bytes down");
        }
    });
    assert_eq!(backend.uploaded(), THRESHOLD_SIZES.iter().sum::<u64>());
}

// ---------------------------------------------------------------------------------------
// 6. Malformed requests

#[test]
fn malformed_requests_get_4xx_and_never_reach_a_backend() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);
    let oversized = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let cases: [(&str, &[u8]); 8] = [
        ("bad request line", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("garbage request line", b"\x01\x02\x03 nonsense\r\n\r\n"),
        ("head over 64 KiB", oversized.as_bytes()),
        (
            "Content-Length: abc",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nhello",
        ),
        (
            "two different Content-Length values",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "Transfer-Encoding other than chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        ),
        (
            "two Host fields",
            b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let reply = raw_exchange(proxy.addr(), bytes);
        assert!(
            reply.status.is_some_and(|s| (400..500).contains(&s)),
            "{what}: expected a 4xx, got {:?}",
            reply.text
        );
    }
    assert_eq!(backend.requests(), 0);
}

/// A request with both `Content-Length` and `Transfer-Encoding: chunked` is the classic
/// request-smuggling vector. hyper frames it by the chunked encoding alone, drops the
/// `Content-Length` and closes the connection after the response (RFC 9112 §6.3 allows
/// this instead of a 400), so bytes after the chunked body are never read as a second
/// request, and the backend never sees the conflicting `Content-Length`.
#[test]
fn content_length_with_chunked_cannot_smuggle_a_second_request() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);
    let smuggle = b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\
        Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
        GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    std::io::Write::write_all(&mut stream, smuggle).unwrap();
    let first = util::read_response(&mut stream);
    let status = first.status.expect("a status line");
    if (400..500).contains(&status) {
        // Refused outright: fine too, as long as nothing reached the backend.
        assert_eq!(backend.requests(), 0);
        return;
    }
    assert_eq!(status, 200, "{}", first.text);
    let echo: serde_json::Value =
        serde_json::from_str(first.text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(echo["path"], "/first");
    assert_eq!(echo["body_bytes"], 5);
    let lengths: Vec<_> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == "content-length" && p[1] == "40")
        .collect();
    assert!(lengths.is_empty(), "{echo}");
    // The connection is closed: no second response.
    let second = util::read_response(&mut stream);
    assert_eq!(second.status, None, "{}", second.text);
    assert_eq!(backend.requests(), 1);
}

/// Reads from `stream` until `done` says the text so far is complete (5 s at most).
fn read_until(stream: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut text = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while !done(&String::from_utf8_lossy(&text)) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// evenkeel's HTTP/1 server loop: pipelined requests are answered in order on one
/// connection; `Expect: 100-continue` is answered before the body is read (and not
/// forwarded); HTTP/1.0 keeps a connection only when asked; a chunked upload reaches
/// the backend whole.
#[test]
fn http1_pipelining_continue_http10_and_chunked_uploads() {
    use std::io::Write;
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);

    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let text = read_until(&mut stream, |t| t.matches("}").count() == 2);
    let first = text.find("\"path\":\"/first\"").expect(&text);
    let second = text.find("\"path\":\"/second\"").expect(&text);
    assert!(first < second, "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");

    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let interim = read_until(&mut stream, |t| t.contains("\r\n\r\n"));
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n\r\n"),
        "{interim:?}"
    );
    stream.write_all(b"hello").unwrap();
    let reply = util::read_response(&mut stream);
    assert_eq!(reply.status, Some(200), "{}", reply.text);
    assert!(reply.text.contains("\"body_bytes\":5"), "{}", reply.text);
    assert!(!reply.text.contains("\"expect\""), "{}", reply.text);

    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .write_all(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let text = read_until(&mut stream, |_| false);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("connection: close"), "{text}");

    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    for i in 0..2 {
        stream
            .write_all(
                format!("GET /kept/{i} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
        let reply = util::read_response(&mut stream);
        assert_eq!(reply.status, Some(200), "request {i}: {}", reply.text);
        assert!(
            reply.text.contains("connection: keep-alive"),
            "{}",
            reply.text
        );
    }

    let reply = raw_exchange(
        proxy.addr(),
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
    );
    assert_eq!(reply.status, Some(200), "{}", reply.text);
    assert!(reply.text.contains("\"body_bytes\":11"), "{}", reply.text);
    assert_eq!(backend.requests(), 7);
}

/// Framing toward the backend is evenkeel's own: a client that lists `Content-Length`
/// in `Connection` (hop-by-hop, so a proxy copying heads would strip it) cannot make
/// its body a request prefix on a pooled backend connection; a chunked body whose end
/// two parsers could see differently (a bare LF in the trailers, a size line without
/// digits) is refused, not forwarded whole.
#[test]
fn clients_cannot_smuggle_through_framing_fields() {
    use std::io::Write;
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);

    let prefix = "GET /smuggled HTTP/1.1\r\nX: ";
    let attack = format!(
        "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: content-length\r\n\r\n{prefix}",
        prefix.len()
    );
    let reply = raw_exchange(proxy.addr(), attack.as_bytes());
    assert_eq!(reply.status, Some(200), "{}", reply.text);
    assert!(
        reply
            .text
            .contains(&format!("\"body_bytes\":{}", prefix.len())),
        "{}",
        reply.text
    );
    // The next request over the same pooled backend connection is itself.
    let reply = raw_exchange(proxy.addr(), b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        reply.text.contains("\"path\":\"/second\""),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains("smuggled"), "{}", reply.text);

    for body in [
        &b"0\r\n\nGET /after-bare-lf HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b";ext\r\n\r\nGET /after-empty-size HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(proxy.addr()).unwrap();
        let mut request =
            b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        stream.write_all(&request).unwrap();
        let text = read_until(&mut stream, |_| false);
        assert!(!text.contains("HTTP/1.1 200"), "{text}");
        assert!(!text.contains("/after-"), "{text}");
    }
    // The refused requests' heads may reach the backend before their bodies turn out
    // broken (bodies stream) and are cut there; a smuggled request would be a fifth.
    let seen = backend.requests();
    assert!(
        (2..=4).contains(&seen),
        "{seen} requests reached the backend"
    );
}

/// A backend that sends its head and part of its body, then goes quiet, cannot hold
/// the client: the pause is bounded by the pool's `body_idle`, then the client's
/// connection is cut (its response is short of its Content-Length, so it knows).
#[test]
fn a_response_body_that_stalls_is_cut_after_body_idle() {
    use std::io::Write;
    let (addr, _) = one_answer_backend(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
        Duration::from_secs(6),
    );
    let config = config_with(
        "5s",
        "5s",
        &format!(
            "[[route]]\npool = \"p\"\n[pool.p]\nbackends = [{{ address = \"{addr}\" }}]\n\
             timeouts = {{ connect = \"1s\", per_try = \"1s\", request = \"2s\", body_idle = \"1s\" }}\n\
             [pool.p.health]\ninterval = \"1h\"\n"
        ),
    );
    let proxy = Proxy::start(&config, 1);
    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .write_all(b"GET /slow-body HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let text = read_until(&mut stream, |_| false);
    let took = started.elapsed();
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("hello"),
        "{text:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut after {took:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 7. Slow clients

/// Reads until the server closes the connection (or answers); how long that took and
/// what came back. Fails the test after 5 s.
fn wait_until_cut(stream: &mut TcpStream, started: Instant) -> (Duration, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let reply = util::read_response(stream);
    (started.elapsed(), reply.text)
}

/// A keep-alive connection across its idle phase (after a second without a request
/// a plain connection drops its buffer and busy state): the next request is served;
/// a head begun before the idle second and finished after it is served (a partial
/// head keeps the connection busy); two requests sent together after an idle second
/// are both served, in order.
#[test]
fn a_connection_serves_across_its_idle_phase() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: test.local\r\n\r\n");
    let served = |stream: &mut TcpStream, path: &str| {
        let reply = util::read_response(stream);
        assert!(
            reply.text.starts_with("HTTP/1.1 200"),
            "{path}: {}",
            reply.text
        );
        assert!(
            reply.text.contains(&format!("\"path\":\"{path}\"")),
            "{path}: {}",
            reply.text
        );
    };
    std::io::Write::write_all(&mut stream, request("/first").as_bytes()).unwrap();
    served(&mut stream, "/first");
    std::thread::sleep(Duration::from_millis(1500));
    std::io::Write::write_all(&mut stream, request("/after-idle").as_bytes()).unwrap();
    served(&mut stream, "/after-idle");
    let split = request("/split");
    std::io::Write::write_all(&mut stream, &split.as_bytes()[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::io::Write::write_all(&mut stream, &split.as_bytes()[10..]).unwrap();
    served(&mut stream, "/split");
    std::thread::sleep(Duration::from_millis(1500));
    let pipelined = request("/one") + &request("/two");
    std::io::Write::write_all(&mut stream, pipelined.as_bytes()).unwrap();
    // Both answers, however the reads split them.
    let mut both = String::new();
    let mut piece = [0u8; 16 * 1024];
    while !(both.contains("\"path\":\"/one\"") && both.contains("\"path\":\"/two\"")) {
        match std::io::Read::read(&mut stream, &mut piece) {
            Ok(0) | Err(_) => panic!("pipelined answers: {both}"),
            Ok(n) => both.push_str(&String::from_utf8_lossy(&piece[..n])),
        }
    }
    assert_eq!(both.matches("HTTP/1.1 200").count(), 2, "{both}");
    assert!(
        both.find("/one").unwrap() < both.find("/two").unwrap(),
        "{both}"
    );
    assert_eq!(backend.requests(), 5);
}

/// How long `stream` took to be closed by the other side, counted from `since`; `None`
/// when it was still open `limit` after `since` (or sent bytes).
fn closed_after(stream: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let left = limit.checked_sub(since.elapsed())?;
    stream.set_read_timeout(Some(left)).unwrap();
    match std::io::Read::read(stream, &mut [0u8; 64]) {
        Ok(0) => Some(since.elapsed()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(since.elapsed()),
        _ => None,
    }
}

/// Idle plain keep-alive connections wait parked by their worker, not in a task each
/// (src/proxy/parking.rs): 40 connections over 2 workers, idle past the busy second,
/// all asking again at once are all served, twice over; a silent one is closed at its
/// `header_timeout`, counted from its last response; and SIGTERM closes the parked
/// ones at once, so the process exits without waiting for `drain_timeout`.
#[test]
fn parked_connections_are_served_again_closed_at_header_timeout_and_at_shutdown() {
    let backend = Backend::start("a");
    let config = config_with(
        "3s",
        "20s",
        &format!(
            "[[route]]\npool = \"web\"\n\n{}",
            pool("web", "round_robin", &[(&backend, 1)], "")
        ),
    );
    let mut proxy = Proxy::start(&config, 2);
    let connect = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let stream = TcpStream::connect(proxy.addr()).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                stream
            })
            .collect()
    };
    let ask_all = |streams: &mut [TcpStream], round: usize| {
        let request = format!("GET /round/{round} HTTP/1.1\r\nhost: test.local\r\n\r\n");
        for stream in streams.iter_mut() {
            std::io::Write::write_all(stream, request.as_bytes()).unwrap();
        }
        for (i, stream) in streams.iter_mut().enumerate() {
            let reply = util::read_response(stream);
            assert!(
                reply.text.starts_with("HTTP/1.1 200")
                    && reply.text.contains(&format!("\"path\":\"/round/{round}\"")),
                "round {round}, connection {i}: {:?}",
                reply.text
            );
        }
    };
    let mut streams = connect(40);
    for round in 0..3 {
        if round > 0 {
            std::thread::sleep(Duration::from_millis(1300));
        }
        ask_all(&mut streams, round);
    }
    let last_answer = Instant::now();
    assert_eq!(backend.requests(), 120);
    // Parked since about a second after their last answer; closed at 3 s.
    for (i, stream) in streams.iter_mut().enumerate() {
        let closed = closed_after(stream, last_answer, Duration::from_secs(6));
        assert!(
            closed.is_some_and(|after| after >= Duration::from_millis(2500)),
            "connection {i}: closed after {closed:?}, header_timeout is 3 s"
        );
    }
    let closed_by = last_answer.elapsed();
    assert!(closed_by < Duration::from_millis(4500), "{closed_by:?}");

    let mut parked = connect(10);
    ask_all(&mut parked, 3);
    std::thread::sleep(Duration::from_millis(1300));
    let term_sent = Instant::now();
    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(5)).expect("exit");
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert!(
        term_sent.elapsed() < Duration::from_secs(3),
        "took {:?} to stop with only idle connections (drain_timeout 20 s)",
        term_sent.elapsed()
    );
    for (i, stream) in parked.iter_mut().enumerate() {
        let closed = closed_after(stream, term_sent, Duration::from_secs(3));
        assert!(
            closed.is_some(),
            "parked connection {i} still open after SIGTERM"
        );
    }
    assert!(!proxy.stderr().contains("panicked"), "{}", proxy.stderr());
}

#[test]
fn a_client_slower_than_header_timeout_is_cut_off() {
    let backend = Backend::start("a");
    let config = config_with(
        "500ms",
        "10s",
        &format!(
            "[[route]]\npool = \"web\"\n\n{}",
            pool("web", "round_robin", &[(&backend, 1)], "")
        ),
    );
    let proxy = Proxy::start(&config, 1);

    // Half a request head, then nothing.
    let started = Instant::now();
    let mut partial = TcpStream::connect(proxy.addr()).unwrap();
    std::io::Write::write_all(&mut partial, b"GET / HTTP/1.1\r\n").unwrap();
    let (took, text) = wait_until_cut(&mut partial, started);
    assert!(
        took < Duration::from_secs(3) && (text.is_empty() || text.starts_with("HTTP/1.1 408")),
        "partial head: cut after {took:?} with {text:?}"
    );

    // Nothing at all: the head never arrives either.
    let started = Instant::now();
    let mut silent = TcpStream::connect(proxy.addr()).unwrap();
    let (took, text) = wait_until_cut(&mut silent, started);
    assert!(
        took < Duration::from_secs(3) && (text.is_empty() || text.starts_with("HTTP/1.1 408")),
        "silent client: cut after {took:?} with {text:?}"
    );

    // The start of an HTTP/2 preface, then nothing.
    let started = Instant::now();
    let mut preface = TcpStream::connect(proxy.addr()).unwrap();
    std::io::Write::write_all(&mut preface, b"PRI * HTTP/2").unwrap();
    let (took, _) = wait_until_cut(&mut preface, started);
    assert!(
        took < Duration::from_secs(3),
        "partial HTTP/2 preface: cut after {took:?}"
    );

    // A client that keeps to the limit is served.
    let reply = Client::connect(proxy.addr()).get("/");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(backend.requests(), 1);
}

// ---------------------------------------------------------------------------------------
// 8. Shutdown

#[test]
fn sigterm_lets_requests_in_flight_finish_refuses_new_connections_and_exits_0() {
    let slow = Backend::with_delay("slow", Duration::from_millis(1500));
    let mut proxy = Proxy::start(&one_pool("round_robin", &[(&slow, 1)], ""), 2);
    let addr = proxy.addr();
    let in_flight: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                Client::connect(addr)
                    .try_send(get(&format!("/slow/{i}")).body(empty()).unwrap())
                    .map(|r| r.status)
            })
        })
        .collect();
    assert!(
        util::eventually(TIMEOUT, || slow.requests() == 4),
        "requests never reached the backend"
    );
    let term_sent = Instant::now();
    proxy.signal("TERM");

    // New connections are refused while the old ones drain.
    let refused = util::eventually(Duration::from_secs(1), || TcpStream::connect(addr).is_err());
    assert!(refused, "still accepting connections after SIGTERM");
    assert!(
        proxy.is_running(),
        "exited before the requests in flight finished"
    );

    for handle in in_flight {
        let status = handle.join().expect("client thread");
        assert_eq!(status, Ok(StatusCode::OK));
    }
    let status = proxy.wait_exit(Duration::from_secs(5)).expect("exit");
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert!(
        term_sent.elapsed() < Duration::from_secs(4),
        "took {:?} to drain 1.5 s requests",
        term_sent.elapsed()
    );
}

#[test]
fn sigterm_cuts_requests_still_running_after_drain_timeout() {
    let stuck = Backend::with_delay("stuck", Duration::from_secs(30));
    let config = config_with(
        "10s",
        "500ms",
        &format!(
            "[[route]]\npool = \"web\"\n\n{}",
            pool("web", "round_robin", &[(&stuck, 1)], "")
        ),
    );
    let mut proxy = Proxy::start(&config, 1);
    let addr = proxy.addr();
    let client = std::thread::spawn(move || {
        Client::connect(addr)
            .try_send(get("/").body(empty()).unwrap())
            .map(|r| r.status)
    });
    assert!(util::eventually(TIMEOUT, || stuck.requests() == 1));
    let term_sent = Instant::now();
    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(5)).expect("exit");
    let took = term_sent.elapsed();
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "exited {took:?} after SIGTERM with drain_timeout 500ms"
    );
    assert!(client.join().unwrap().is_err(), "the cut request succeeded");
}

// ---------------------------------------------------------------------------------------
// 9. A config with errors

#[test]
fn serve_refuses_a_config_with_errors_with_exit_1_and_the_findings() {
    let backend = Backend::start("a");
    let dir = util::Dir::new();
    let broken = one_pool("round_robin", &[(&backend, 1)], "")
        .replace("[[route]]\npool = \"web\"", "[[route]]\npool = \"wbe\"");
    let path = dir.write("lb.toml", &broken);
    let out = run_bounded(
        &["serve", "-c", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("error[unknown-pool]"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was started"), "{}", out.stderr);
    assert!(!out.stdout.contains("listening"), "{}", out.stdout);
    assert_eq!(backend.requests(), 0);
}

// ---------------------------------------------------------------------------------------
// 10. Upgrades

#[test]
fn connect_and_upgrades_with_a_body_get_501_and_never_reach_a_backend() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);
    let cases: [(&str, &[u8]); 3] = [
        (
            "websocket with a body",
            b"POST /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Content-Length: 5\r\n\r\nhello",
        ),
        (
            "chunked upgrade",
            b"POST /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "CONNECT",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let reply = raw_exchange(proxy.addr(), bytes);
        assert_eq!(reply.status, Some(501), "{what}: {}", reply.text);
        assert!(!reply.text.contains(&backend.address()), "{}", reply.text);
    }
    assert_eq!(backend.requests(), 0);
}

// ---------------------------------------------------------------------------------------
// 11. SIGHUP

#[test]
fn sighup_applies_a_changed_file_and_keeps_the_old_config_when_the_new_one_is_broken() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let wrr = "weighted_round_robin";
    let proxy = Proxy::start(&one_pool(wrr, &[(&a, 1), (&b, 1)], ""), 2);
    let mut client = Client::connect(proxy.addr());
    let mut send = |n: usize| tally((0..n).map(|_| client.get("/").backend().to_string()));
    let first = send(8);
    assert_eq!((first["a"], first["b"]), (4, 4));

    // a out, c in with weight 3.
    proxy.rewrite_config(&one_pool(wrr, &[(&b, 1), (&c, 3)], ""));
    proxy.signal("HUP");
    proxy.wait_for_log("reloaded file=", 1);
    let second = send(8);
    assert_eq!(second.get("a"), None, "{second:?}");
    assert_eq!((second["b"], second["c"]), (2, 6));

    // A broken file changes nothing.
    let broken = one_pool(wrr, &[(&a, 1)], "").replace("pool = \"web\"", "pool = \"nope\"");
    proxy.rewrite_config(&broken);
    proxy.signal("HUP");
    proxy.wait_for_log("reload refused", 1);
    assert!(
        proxy.stderr().contains("error[unknown-pool]"),
        "{}",
        proxy.stderr()
    );
    let third = send(8);
    assert_eq!(third.get("a"), None, "{third:?}");
    assert_eq!((third["b"], third["c"]), (2, 6));
    assert_eq!(counts(&[&a, &b, &c]), [4, 8, 12]);
}

// ---------------------------------------------------------------------------------------
// 12. Routing

#[test]
fn routes_match_the_exact_host_first_then_the_longest_prefix_else_404() {
    let (api, v2, shop) = (
        Backend::start("api"),
        Backend::start("v2"),
        Backend::start("shop"),
    );
    let rest = format!(
        "[[route]]\npath_prefix = \"/api\"\npool = \"api\"\n\n\
         [[route]]\npath_prefix = \"/api/v2\"\npool = \"v2\"\n\n\
         [[route]]\nhost = \"shop.example\"\npool = \"shop\"\n\n{}{}{}",
        pool("api", "round_robin", &[(&api, 1)], ""),
        pool("v2", "round_robin", &[(&v2, 1)], ""),
        pool("shop", "round_robin", &[(&shop, 1)], ""),
    );
    let proxy = Proxy::start(&config_with("10s", "10s", &rest), 1);
    let mut client = Client::connect(proxy.addr());
    let mut route = |host: &str, path: &str| {
        let reply = client.send(
            Request::get(path)
                .header("host", host)
                .body(empty())
                .unwrap(),
        );
        match reply.status {
            StatusCode::OK => reply.backend().to_string(),
            status => status.as_str().to_string(),
        }
    };
    let cases = [
        ("other.example", "/api", "api"),
        ("other.example", "/api/users", "api"),
        ("other.example", "/api/v2", "v2"),
        ("other.example", "/api/v2/orders?id=1", "v2"),
        ("other.example", "/api/v20", "api"),
        ("other.example", "/apis", "404"),
        ("other.example", "/", "404"),
        ("shop.example", "/api/v2/orders", "shop"),
        ("SHOP.example:8080", "/anything", "shop"),
    ];
    for (host, path, want) in cases {
        assert_eq!(route(host, path), want, "Host: {host}, path {path}");
    }
    assert_eq!((api.requests(), v2.requests(), shop.requests()), (3, 2, 2));
}

#[test]
fn an_unmatched_request_gets_404_naming_no_backend() {
    let backend = Backend::start("a");
    let rest = format!(
        "[[route]]\npath_prefix = \"/api\"\npool = \"web\"\n\n{}",
        pool("web", "round_robin", &[(&backend, 1)], "")
    );
    let proxy = Proxy::start(&config_with("10s", "10s", &rest), 1);
    let reply = Client::connect(proxy.addr()).get("/web");
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.text().contains("no route"), "{}", reply.text());
    assert!(!reply.text().contains(&backend.address()));
    assert_eq!(backend.requests(), 0);
}

/// hyper accepts `Transfer-Encoding: gzip, chunked` (chunked is last) and decodes only
/// the chunking; forwarding the gzip-coded bytes with the header removed as hop-by-hop
/// would hand the backend a body it cannot know is compressed. evenkeel does not
/// decode transfer codings, so it refuses them with 501 (RFC 9112 §6.1).
#[test]
fn a_transfer_coding_other_than_chunked_is_refused_not_forwarded() {
    let backend = Backend::start("a");
    let proxy = Proxy::start(&one_pool("round_robin", &[(&backend, 1)], ""), 1);
    let reply = raw_exchange(
        proxy.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(reply.status, Some(501), "{}", reply.text);
    assert_eq!(backend.requests(), 0);
}

/// Regression: serve announced its listeners before installing its signal handlers, so a
/// SIGHUP sent at once (as a test or an init script does) met the default action and
/// killed the process.
#[test]
fn a_sighup_sent_as_soon_as_serve_is_listening_reloads_instead_of_killing_it() {
    let backend = crate::util::Backend::start("a");
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n[[route]]\npool = \"web\"\n\
         [pool.web]\nbackends = [{{ address = \"{}\" }}]\n",
        backend.address()
    );
    for _ in 0..5 {
        let mut proxy = crate::util::Proxy::start(&config, 1);
        proxy.signal("HUP");
        proxy.wait_for_log("reload", 1);
        assert!(
            proxy.is_running(),
            "SIGHUP killed serve:\n{}",
            proxy.stderr()
        );
    }
}

/// Runs `evenkeel serve` on `config` with `extra` arguments, sends `paths` through it
/// one by one, stops it with SIGTERM and returns its stderr.
fn serve_and_collect_stderr(config: &str, extra: &[&str], paths: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    let dir = crate::util::Dir::new();
    let path = dir.write("evenkeel.toml", config);
    let stderr_path = dir.path().join("stderr.log");
    let mut child = crate::util::evenkeel()
        .args(["serve", "-c", path.to_str().unwrap(), "--workers", "1"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for p in paths {
        let reply = crate::util::raw_exchange(
            addr,
            format!("GET {p} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").as_bytes(),
        );
        assert!(reply.status.is_some(), "{}", reply.text);
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    std::fs::read_to_string(&stderr_path).unwrap()
}

#[test]
fn the_access_log_has_one_line_per_request_and_can_be_switched_off() {
    let (backend, other) = (
        crate::util::Backend::start("a"),
        crate::util::Backend::start("b"),
    );
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n[[route]]\npath_prefix = \"/app\"\npool = \"web\"\n\
         [pool.web]\nbackends = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n[pool.web.health]\n",
        backend.address(),
        other.address()
    );
    let logged =
        serve_and_collect_stderr(&config, &[], &["/app/one", "/app/two?x=1", "/elsewhere"]);
    let lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("evenkeel::access"))
        .collect();
    assert_eq!(lines.len(), 3, "{logged}");
    assert!(
        lines[0].contains("method=GET")
            && lines[0].contains("path=/app/one")
            && lines[0].contains("status=200"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("pool=web")
            && lines[0].contains(&format!("backend={}", backend.address())),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(&format!("backend={}", other.address())),
        "round robin: {}",
        lines[1]
    );
    assert!(lines[0].contains("duration_ms="), "{}", lines[0]);
    assert!(
        lines[1].contains("path=/app/two") && !lines[1].contains("x=1"),
        "the query stays out of the log: {}",
        lines[1]
    );
    assert!(
        lines[2].contains("path=/elsewhere")
            && lines[2].contains("status=404")
            && lines[2].contains("pool=-"),
        "{}",
        lines[2]
    );
    let quiet = serve_and_collect_stderr(&config, &["--no-access-log"], &["/app/one"]);
    assert!(!quiet.contains("evenkeel::access"), "{quiet}");
}

/// `--no-monitor` (for measuring what watching costs) still proxies, and says loudly
/// that alarms, the guard and the journal are off.
#[test]
fn serve_without_the_monitor_still_proxies_and_says_so() {
    let backend = crate::util::Backend::start("a");
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n[[route]]\npool = \"web\"\n\
         [pool.web]\nbackends = [{{ address = \"{}\" }}]\n",
        backend.address()
    );
    let logged = serve_and_collect_stderr(&config, &["--no-monitor"], &["/a", "/b"]);
    assert!(logged.contains("the monitor is off"), "{logged}");
    assert_eq!(backend.requests(), 2);
}
