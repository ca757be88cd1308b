//! HTTP/2 to backends and gRPC through evenkeel, against real peers: a gRPC server and
//! client on Python's `grpcio` (`tests/peers/grpc_peer.py`), NGINX as an h2c backend,
//! an h2 backend over TLS with a test CA, and backends on the `h2` crate for what no
//! library server does on demand (refusing a stream unprocessed, a small stream limit).

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::util::{eventually, peer_client, Dir, PeerServer, Proxy, TestCertificate, TIMEOUT};

/// A `grpcio` server (`grpc_peer.py server NAME [CERT KEY]`), stopped when dropped.
fn grpc_backend(args: &[&str]) -> PeerServer {
    PeerServer::start("grpc_peer.py", args, "grpcio")
}

/// Runs a client mode of the peer to its end; its last line as JSON.
fn client(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    peer_client("grpc_peer.py", args, env)
}

/// A config with one listener and an HTTP/2 pool `echo` of `backends`, with `extra`
/// lines in the pool.
fn config(protocol: &str, backends: &[String], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{b}\" }}"))
        .collect();
    format!(
        "[[listener]]\nname = \"grpc\"\nlisten = \"127.0.0.1:0\"\n\
         [[route]]\npool = \"echo\"\n\
         [pool.echo]\nprotocol = \"{protocol}\"\nbackends = [{}]\n{extra}\n",
        list.join(", ")
    )
}

fn health(proxy: &Proxy, address: &str) -> String {
    proxy.backend_status("echo", address)["health"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn grpc_calls_of_every_kind_pass_through_with_their_trailers_and_statuses() {
    let b1 = grpc_backend(&["b1"]);
    // With the access log on.
    let proxy = Proxy::start_with_args(&config("h2c", &[b1.address()], ""), 1, &[]);
    let out = client(&["suite", &proxy.addr().to_string()], &[]);
    assert_eq!(out["unary"]["ok"], "b1:hello", "{out}");
    // Trailing metadata of a successful call and of a failed one.
    assert_eq!(out["unary"]["trailers"]["x-backend"], "b1", "{out}");
    assert_eq!(out["fail"]["code"], "FAILED_PRECONDITION", "{out}");
    assert_eq!(out["fail"]["details"], "failed on purpose", "{out}");
    assert_eq!(out["fail"]["trailers"]["x-backend"], "b1", "{out}");
    assert_eq!(out["deadline"]["code"], "DEADLINE_EXCEEDED", "{out}");
    let streamed: Vec<String> = (0..5).map(|i| format!("b1:{i}")).collect();
    assert_eq!(out["server_stream"], serde_json::json!(streamed), "{out}");
    assert_eq!(out["client_stream"], "b1:a+b+c", "{out}");
    // Each message was sent after the answer to the one before: both ways at once.
    assert_eq!(
        out["bidi"],
        serde_json::json!(["b1:m0", "b1:m1", "b1:m2", "b1:m3"]),
        "{out}"
    );
    // Each call's line carries its grpc-status: 0 for the four that succeeded, 9
    // (FAILED_PRECONDITION) and 4 (DEADLINE_EXCEEDED) for the others.
    proxy.wait_for_log("status=200 route=/ pool=echo", 6);
    let log = proxy.stderr();
    assert_eq!(log.matches(" grpc_status=0\n").count(), 4, "{log}");
    assert_eq!(log.matches(" grpc_status=9\n").count(), 1, "{log}");
    assert_eq!(log.matches(" grpc_status=4").count(), 1, "{log}");
}

#[test]
fn grpc_calls_spread_by_request_and_a_not_serving_backend_is_taken_out() {
    let backends: Vec<PeerServer> = ["b1", "b2", "b3"]
        .iter()
        .map(|n| grpc_backend(&[n]))
        .collect();
    let addresses: Vec<String> = backends.iter().map(PeerServer::address).collect();
    let health_check = "[pool.echo.health]\ntype = \"grpc\"\nservice = \"echo\"\n\
                        interval = \"200ms\"\ntimeout = \"200ms\"\n\
                        healthy_after = 1\nunhealthy_after = 1\n";
    let proxy = Proxy::start_with_admin(&config("h2c", &addresses, health_check), 1);
    for address in &addresses {
        assert!(
            eventually(TIMEOUT, || health(&proxy, address) == "healthy"),
            "{address} never became healthy: {}",
            proxy.stderr()
        );
    }
    // 300 calls on one channel, so one HTTP/2 connection: spread call by call.
    let shares = client(&["shares", &proxy.addr().to_string(), "300"], &[]);
    for name in ["b1", "b2", "b3"] {
        assert_eq!(shares[name], 100, "round robin by call: {shares}");
    }
    // b1 reports NOT_SERVING for "echo": its probes fail, and it gets no calls.
    let said = client(&["call", &addresses[0], "health:NOT_SERVING"], &[]);
    assert_eq!(said["ok"], "b1:health:NOT_SERVING", "{said}");
    assert!(
        eventually(TIMEOUT, || health(&proxy, &addresses[0]) == "unhealthy"),
        "b1 stayed {}",
        health(&proxy, &addresses[0])
    );
    let shares = client(&["shares", &proxy.addr().to_string(), "100"], &[]);
    assert_eq!(shares.get("b1"), None, "{shares}");
    assert_eq!(shares["b2"], 50, "{shares}");
    assert_eq!(shares["b3"], 50, "{shares}");
    let status = proxy.pool_status("echo");
    assert_eq!(status["protocol"], "h2c", "{status}");
}

#[test]
fn evenkeels_own_errors_reach_grpc_clients_as_grpc_statuses() {
    // Nothing listens on the backend's port.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let proxy = Proxy::start_with_args(
        &config("h2c", &[dead], "retries = { attempts = 0 }"),
        1,
        &[],
    );
    let out = client(&["call", &proxy.addr().to_string(), "hello"], &[]);
    assert_eq!(out["code"], "UNAVAILABLE", "{out}");
    let details = out["details"].as_str().unwrap_or_default();
    assert!(details.starts_with("evenkeel: pool \"echo\""), "{out}");
    // Its access-log line tells it from a success (both are HTTP 200).
    proxy.wait_for_log(" status=200 ", 1);
    proxy.wait_for_log(" grpc_status=14\n", 1);

    // A backend slower than the call's grpc-timeout: evenkeel's own deadline answers
    // (curl sets no deadline of its own).
    let slow = grpc_backend(&["slow"]);
    let proxy = Proxy::start(&config("h2c", &[slow.address()], ""), 1);
    let started = Instant::now();
    let (head, _) = grpc_by_curl(proxy.addr(), "sleep:3", "300m");
    let took = started.elapsed();
    // evenkeel's timer or grpcio's (it keeps the forwarded deadline too), whichever
    // fires first.
    assert!(head.contains("grpc-status: 4"), "{head}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");

    // Every backend at limits.max_streams, and no waiting allowed.
    let proxy = Proxy::start(
        &config(
            "h2c",
            &[slow.address()],
            "limits = { max_streams = 1, max_pending = 0 }",
        ),
        1,
    );
    let target = proxy.addr().to_string();
    let holder = std::thread::spawn(move || client(&["call", &target, "sleep:2"], &[]));
    std::thread::sleep(Duration::from_millis(700));
    let out = client(&["call", &proxy.addr().to_string(), "hello"], &[]);
    assert_eq!(out["code"], "RESOURCE_EXHAUSTED", "{out}");
    let held = holder.join().expect("the held call");
    assert_eq!(held["ok"], "slow:sleep:2", "{held}");
}

/// A unary call to `Unary` with `message` made with curl (HTTP/2 by prior knowledge),
/// with `grpc-timeout: timeout`: the response head (with Trailers-Only fields) and
/// body.
fn grpc_by_curl(addr: SocketAddr, message: &str, timeout: &str) -> (String, Vec<u8>) {
    let dir = Dir::new();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message.as_bytes());
    let body = dir.path().join("body");
    std::fs::write(&body, framed).expect("write the body");
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "--http2-prior-knowledge",
            "--max-time",
            "20",
        ])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", &format!("grpc-timeout: {timeout}")])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("http://{addr}/evenkeel.test.Echo/Unary"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), rest.as_bytes().to_vec())
}

/// NGINX serving HTTP/2 in clear text (`listen ... http2`: prior knowledge), stopped
/// when dropped.
struct Nginx {
    child: Child,
    port: u16,
    _dir: Dir,
}

impl Nginx {
    fn start_h2c() -> Nginx {
        let dir = Dir::new();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{}}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{\n  listen 127.0.0.1:{port} http2;\n\
             location /healthz {{ return 200 \"ok\\n\"; }}\n\
             location / {{ return 200 \"nginx saw $server_protocol for $host\\n\"; }}\n }}\n}}\n"
        );
        let path = dir.write("nginx.conf", &conf);
        let child = Command::new("nginx")
            .args(["-e", &format!("{d}/error.log"), "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx {
            child,
            port,
            _dir: dir,
        };
        assert!(
            eventually(TIMEOUT, || std::net::TcpStream::connect(nginx.address())
                .is_ok()),
            "nginx did not start"
        );
        nginx
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_nginx_h2c_backend_gets_http2_requests_and_answers_probes() {
    let nginx = Nginx::start_h2c();
    let health_check = "[pool.echo.health]\npath = \"/healthz\"\ninterval = \"200ms\"\n\
                        timeout = \"200ms\"\nhealthy_after = 1\n";
    let proxy = Proxy::start_with_admin(&config("h2c", &[nginx.address()], health_check), 1);
    assert!(
        eventually(TIMEOUT, || health(&proxy, &nginx.address()) == "healthy"),
        "the HTTP/2 probe never passed: {}",
        proxy.stderr()
    );
    // An HTTP/1.1 client; NGINX sees HTTP/2 with the client's host as :authority.
    let mut client = crate::util::Client::connect(proxy.addr());
    for _ in 0..5 {
        let reply = client.get("/hello");
        assert_eq!(reply.status, StatusCode::OK, "{}", proxy.stderr());
        assert!(
            reply.text().starts_with("nginx saw HTTP/2.0 for "),
            "{}",
            reply.text()
        );
    }
}

#[test]
fn an_h2_backend_over_tls_is_reached_with_alpn_and_verified_against_the_test_ca() {
    let dir = Dir::new();
    let ca = TestCertificate::authority("evenkeel test CA");
    dir.write("ca.pem", &ca.pem);
    let certificate = TestCertificate::signed_by(&["backend.test"], &ca);
    let cert = dir.write("backend.pem", &certificate.pem);
    let key = dir.write("backend.key", &certificate.key);
    let backend = grpc_backend(&[
        "tls1",
        cert.to_str().expect("path"),
        key.to_str().expect("path"),
    ]);
    let ca_path = dir.path().join("ca.pem");
    let extra = format!(
        "tls = {{ sni = \"backend.test\", ca = \"{}\" }}\n\
         [pool.echo.health]\ntype = \"grpc\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\
         healthy_after = 1\n",
        ca_path.display()
    );
    let proxy = Proxy::start_with_admin(&config("h2", &[backend.address()], &extra), 1);
    assert!(
        eventually(TIMEOUT, || health(&proxy, &backend.address()) == "healthy"),
        "the gRPC probe over TLS never passed: {}",
        proxy.stderr()
    );
    let out = client(&["suite", &proxy.addr().to_string()], &[]);
    assert_eq!(out["unary"]["ok"], "tls1:hello", "{out}");
    assert_eq!(out["bidi"][3], "tls1:m3", "{out}");
    assert_eq!(out["fail"]["code"], "FAILED_PRECONDITION", "{out}");
}

/// What an [`H2Backend`] does.
#[derive(Clone, Copy)]
struct Behaviour {
    /// Streams allowed per connection.
    max_streams: u32,
    /// How long it waits before answering.
    delay: Duration,
    /// The first this many streams are reset with `REFUSED_STREAM` (unprocessed).
    refuse: usize,
    /// On its first connection, streams after this many are never answered (a
    /// connection that stopped responding).
    hang_first_connection_after: Option<usize>,
    /// Answers every request as gRPC `UNAVAILABLE` (Trailers-Only), after reading it.
    unavailable: bool,
    /// Sends the response head at once, and its body after reading the request's.
    head_first: bool,
    /// Answers with this many bytes (0: a line naming its connection).
    answer_bytes: usize,
    /// Never reads the request body, nor answers.
    no_read: bool,
    /// Answers with an empty `content-length` and nothing after the head.
    empty_length: bool,
    /// Its flow-control window per stream (0: the h2 crate's 64 KiB); with one, the
    /// streams it refuses are refused once their whole body is in.
    window: u32,
}

const ANSWERS: Behaviour = Behaviour {
    max_streams: 100,
    delay: Duration::ZERO,
    refuse: 0,
    hang_first_connection_after: None,
    unavailable: false,
    head_first: false,
    answer_bytes: 0,
    no_read: false,
    empty_length: false,
    window: 0,
};

/// An HTTP/2 backend on the `h2` crate, doing what [`Behaviour`] says; it answers
/// each request with its connection's number and the bytes it received.
struct H2Backend {
    addr: SocketAddr,
    /// Requests answered.
    answered: Arc<AtomicUsize>,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
    /// Most streams open at once on one connection.
    most_open: Arc<AtomicUsize>,
}

impl H2Backend {
    fn start(behaviour: Behaviour) -> H2Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let answered = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let most_open = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let big = Bytes::from(vec![b'x'; behaviour.answer_bytes]);
        let (a, c, m) = (
            Arc::clone(&answered),
            Arc::clone(&connections),
            Arc::clone(&most_open),
        );
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        return;
                    };
                    let _ = socket.set_nodelay(true);
                    let number = c.fetch_add(1, Ordering::SeqCst) + 1;
                    let (a, m, refused) = (Arc::clone(&a), Arc::clone(&m), Arc::clone(&refused));
                    let big = big.clone();
                    tokio::spawn(async move {
                        let mut builder = h2::server::Builder::new();
                        builder.max_concurrent_streams(behaviour.max_streams);
                        if behaviour.window > 0 {
                            builder.initial_window_size(behaviour.window);
                        }
                        let Ok(mut connection) = builder.handshake::<_, Bytes>(socket).await else {
                            return;
                        };
                        let open = Arc::new(AtomicUsize::new(0));
                        let mut streams = 0;
                        while let Some(Ok((request, mut respond))) = connection.accept().await {
                            streams += 1;
                            if refused.fetch_add(1, Ordering::SeqCst) < behaviour.refuse {
                                if behaviour.window > 0 {
                                    // Refused once the whole body is in.
                                    tokio::spawn(async move {
                                        let mut body = request.into_body();
                                        while let Some(Ok(data)) = body.data().await {
                                            let _ =
                                                body.flow_control().release_capacity(data.len());
                                        }
                                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                                    });
                                } else {
                                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                                }
                                continue;
                            }
                            let hang = number == 1
                                && behaviour
                                    .hang_first_connection_after
                                    .is_some_and(|n| streams > n);
                            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                            m.fetch_max(now, Ordering::SeqCst);
                            let (a, open, big) = (Arc::clone(&a), Arc::clone(&open), big.clone());
                            tokio::spawn(async move {
                                let mut early = None;
                                if behaviour.head_first {
                                    let response =
                                        Response::builder().status(200).body(()).expect("response");
                                    early = respond.send_response(response, false).ok();
                                }
                                let mut body = request.into_body();
                                if behaviour.no_read {
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                }
                                let mut received = 0;
                                while let Some(Ok(data)) = body.data().await {
                                    received += data.len();
                                    let _ = body.flow_control().release_capacity(data.len());
                                }
                                if hang {
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                }
                                tokio::time::sleep(behaviour.delay).await;
                                if behaviour.empty_length {
                                    let response = Response::builder()
                                        .status(200)
                                        .header("content-length", "")
                                        .body(())
                                        .expect("response");
                                    let _ = respond.send_response(response, true);
                                } else if let Some(mut send) = early {
                                    let text =
                                        format!("connection {number} got {received} bytes\n");
                                    let _ = send.send_data(Bytes::from(text), true);
                                } else if behaviour.unavailable {
                                    let response = Response::builder()
                                        .status(200)
                                        .header("content-type", "application/grpc")
                                        .header("grpc-status", "14")
                                        .body(())
                                        .expect("response");
                                    let _ = respond.send_response(response, true);
                                } else {
                                    let response =
                                        Response::builder().status(200).body(()).expect("response");
                                    if let Ok(mut send) = respond.send_response(response, false) {
                                        let answer = if behaviour.answer_bytes > 0 {
                                            big.clone()
                                        } else {
                                            Bytes::from(format!(
                                                "connection {number} got {received} bytes\n"
                                            ))
                                        };
                                        let _ = send.send_data(answer, true);
                                    }
                                }
                                a.fetch_add(1, Ordering::SeqCst);
                                open.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                    });
                }
            });
        });
        H2Backend {
            addr,
            answered,
            connections,
            most_open,
        }
    }
}

#[test]
fn a_stream_refused_unprocessed_goes_again_even_a_post_with_a_body() {
    let backend = H2Backend::start(Behaviour {
        refuse: 1,
        ..ANSWERS
    });
    let proxy = Proxy::start(&config("h2c", &[backend.addr.to_string()], ""), 1);
    let mut client = crate::util::Client::connect(proxy.addr());
    let request = http::Request::post("/upload")
        .header("host", "upload.test")
        .body(crate::util::full("twelve bytes"))
        .expect("request");
    let reply = client.send(request);
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}{}",
        reply.text(),
        proxy.stderr()
    );
    assert!(reply.text().ends_with("got 12 bytes\n"), "{}", reply.text());
    assert_eq!(backend.answered.load(Ordering::SeqCst), 1);
    // Sent again on a new connection.
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn the_backends_stream_limit_is_kept_by_opening_more_connections() {
    let backend = H2Backend::start(Behaviour {
        max_streams: 2,
        delay: Duration::from_millis(500),
        ..ANSWERS
    });
    let proxy = Proxy::start(&config("h2c", &[backend.addr.to_string()], ""), 1);
    let addr = proxy.addr();
    let clients: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || crate::util::Client::connect(addr).get("/slow").status))
        .collect();
    for client in clients {
        assert_eq!(client.join().expect("client"), StatusCode::OK);
    }
    assert_eq!(backend.answered.load(Ordering::SeqCst), 6);
    assert!(backend.most_open.load(Ordering::SeqCst) <= 2);
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        3,
        "6 streams, 2 per connection"
    );
}

/// Found by review: a connection that stopped answering kept every later request to
/// its backend timing out. Now a try that times out retires its connection.
#[test]
fn a_connection_that_stops_answering_takes_no_more_streams() {
    let backend = H2Backend::start(Behaviour {
        hang_first_connection_after: Some(2),
        ..ANSWERS
    });
    let extra = "timeouts = { connect = \"200ms\", per_try = \"500ms\", request = \"500ms\" }\nretries = { attempts = 0 }";
    let proxy = Proxy::start(&config("h2c", &[backend.addr.to_string()], extra), 1);
    let mut client = crate::util::Client::connect(proxy.addr());
    let statuses: Vec<u16> = (0..6).map(|_| client.get("/").status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 504, 200, 200, 200]);
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
}

/// Found by review: the time a client took to send its body counted against
/// `per_try`, so a slow upload was a backend's failure. As with HTTP/1, `per_try`
/// starts once the body is sent; each pause of it is bounded by `body_idle`.
#[test]
fn a_slow_upload_is_not_the_backends_slowness() {
    let backend = H2Backend::start(ANSWERS);
    let extra = "timeouts = { per_try = \"1s\", request = \"1s\", body_idle = \"2s\" }";
    let proxy = Proxy::start_with_admin(&config("h2c", &[backend.addr.to_string()], extra), 1);
    let answer = slow_post(proxy.addr(), 4);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("got 20 bytes"), "{answer}");
    let status = proxy.backend_status("echo", &backend.addr.to_string());
    assert_eq!(status["failures"], 0, "{status}");
}

/// Found by review: a gRPC call answered UNAVAILABLE went to a second backend after
/// the first had read (and maybe run) it. A sent call is never sent again.
#[test]
fn a_grpc_call_answered_unavailable_is_not_sent_again() {
    let b1 = H2Backend::start(Behaviour {
        unavailable: true,
        ..ANSWERS
    });
    let b2 = H2Backend::start(Behaviour {
        unavailable: true,
        ..ANSWERS
    });
    let backends = [b1.addr.to_string(), b2.addr.to_string()];
    let proxy = Proxy::start(&config("h2c", &backends, "retries = { attempts = 2 }"), 1);
    let (head, _) = grpc_by_curl(proxy.addr(), "charge", "10S");
    assert!(head.contains("grpc-status: 14"), "{head}");
    let answered = b1.answered.load(Ordering::SeqCst) + b2.answered.load(Ordering::SeqCst);
    assert_eq!(answered, 1, "the call reached {answered} backends");
}

/// Found by review: a deadline the client set with grpc-timeout counted as the
/// backend's failure, so clients with tiny deadlines got healthy backends ejected.
#[test]
fn a_clients_own_grpc_deadline_is_no_backends_failure() {
    let backend = H2Backend::start(Behaviour {
        delay: Duration::from_millis(300),
        ..ANSWERS
    });
    let extra = "[pool.echo.outlier]\nconsecutive_failures = 2";
    let proxy = Proxy::start_with_admin_and_access_log(
        &config("h2c", &[backend.addr.to_string()], extra),
        1,
    );
    for _ in 0..3 {
        let (head, _) = grpc_by_curl(proxy.addr(), "hello", "100m");
        assert!(head.contains("grpc-status: 4"), "{head}");
    }
    // A deadline passed on arrival: answered at once, nothing sent to a backend. (The
    // answer may come before curl has sent the body, and curl may then report the
    // stream's reset instead: the access log says what evenkeel answered.)
    let _ = grpc_by_curl(proxy.addr(), "hello", "1n");
    proxy.wait_for_log(" tries=0 ", 1);
    proxy.wait_for_log(" grpc_status=4", 4);
    let status = proxy.backend_status("echo", &backend.addr.to_string());
    assert_eq!(status["failures"], 0, "{status}");
    assert_eq!(status["ejected"], false, "{status}");
    // A real gRPC server keeps the forwarded deadline itself and answers
    // DEADLINE_EXCEEDED, racing evenkeel's timer: the client's choice all the same.
    let grpcio = grpc_backend(&["slow"]);
    let proxy = Proxy::start_with_admin(&config("h2c", &[grpcio.address()], extra), 1);
    for _ in 0..4 {
        let (head, _) = grpc_by_curl(proxy.addr(), "sleep:1", "200m");
        assert!(head.contains("grpc-status: 4"), "{head}");
    }
    let status = proxy.backend_status("echo", &grpcio.address());
    assert_eq!(status["failures"], 0, "{status}");
    assert_eq!(status["responses"][4], 0, "no 5xx counted: {status}");
}

/// Found by review: `body_idle` watched the response alone, so a stream whose backend
/// answered its head at once and waited for the client's messages was cut while the
/// client was still sending. A stream is idle only when neither way moves.
#[test]
fn a_stream_is_idle_only_when_neither_way_moves() {
    let backend = H2Backend::start(Behaviour {
        head_first: true,
        ..ANSWERS
    });
    let extra = "timeouts = { body_idle = \"1s\" }\nlimits = { body_buffer = 0 }";
    let proxy = Proxy::start(&config("h2c", &[backend.addr.to_string()], extra), 1);
    let answer = slow_post(proxy.addr(), 6);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("got 30 bytes"), "{answer}");
}

/// An upgrade (WebSocket) cannot be carried to a pool that speaks HTTP/2: 501, never
/// a plain request with the upgrade dropped.
#[test]
fn an_upgrade_to_an_http2_pool_is_refused() {
    let backend = H2Backend::start(ANSWERS);
    let proxy = Proxy::start(&config("h2c", &[backend.addr.to_string()], ""), 1);
    let answer = crate::util::raw_exchange(
        proxy.addr(),
        b"GET /chat HTTP/1.1\r\nHost: chat.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(answer.status, Some(501), "{}", answer.text);
    assert_eq!(backend.answered.load(Ordering::SeqCst), 0);
}

/// Found by review: clients that read slowly (or not at all) used up the backend
/// connection's flow-control window, and every other stream on that connection
/// stalled. The connection's window is now the largest HTTP/2 allows; each stream has
/// its own.
#[test]
fn clients_that_do_not_read_stall_no_other_stream() {
    let backend = H2Backend::start(Behaviour {
        answer_bytes: 32 << 20,
        ..ANSWERS
    });
    let proxy = Proxy::start(&config("h2c", &[backend.addr.to_string()], ""), 1);
    use std::io::Write;
    // 20 clients ask for 32 MiB each (more than their sockets buffer) and read none.
    let stalled: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(proxy.addr()).expect("connect");
            stream
                .write_all(b"GET /big HTTP/1.1\r\nHost: big.test\r\n\r\n")
                .expect("request");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut client = crate::util::Client::connect(proxy.addr());
    let started = Instant::now();
    let reply = client.get("/big");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 32 << 20, "after {:?}", started.elapsed());
    drop(stalled);
}

/// Found by review: a backend that took no more of a request body was taken for a
/// client that stopped sending (408, no failure counted). It is the backend's stall.
#[test]
fn a_backend_that_stops_reading_the_body_is_the_backends_failure() {
    let backend = H2Backend::start(Behaviour {
        no_read: true,
        ..ANSWERS
    });
    let extra = "timeouts = { body_idle = \"1s\" }\nlimits = { body_buffer = 0 }\nretries = { attempts = 0 }";
    let proxy = Proxy::start_with_admin(&config("h2c", &[backend.addr.to_string()], extra), 1);
    let mut client = crate::util::Client::connect(proxy.addr());
    let request = http::Request::post("/upload")
        .header("host", "upload.test")
        .body(crate::util::zeros(4 << 20))
        .expect("request");
    let reply = client.send(request);
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    let status = proxy.backend_status("echo", &backend.addr.to_string());
    assert_eq!(status["failures"], 1, "{status}");
}

/// An HTTP/1.1 POST whose chunked body is `chunks` pieces of 5 bytes, one every 400 ms;
/// everything read back until the connection closes.
fn slow_post(addr: SocketAddr, chunks: usize) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: upload.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .expect("head");
    for _ in 0..chunks {
        std::thread::sleep(Duration::from_millis(400));
        stream.write_all(b"5\r\nhello\r\n").expect("chunk");
    }
    stream.write_all(b"0\r\n\r\n").expect("end");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// An HTTP/2 connection with no stream for `timeouts.idle` is closed: the keepalive
/// PINGs do not keep it open.
#[test]
fn idle_http2_connections_are_closed() {
    let backend = H2Backend::start(ANSWERS);
    let proxy = Proxy::start_with_admin(
        &config(
            "h2c",
            &[backend.addr.to_string()],
            "timeouts = { idle = \"1s\" }",
        ),
        1,
    );
    let mut client = crate::util::Client::connect(proxy.addr());
    assert_eq!(client.get("/").status, StatusCode::OK);
    let open = || {
        let mut admin = crate::util::Client::connect(proxy.admin.expect("admin listener"));
        let reply = admin.get("/metrics");
        reply
            .text()
            .lines()
            .find_map(|l| l.strip_prefix("evenkeel_upstream_connections "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert_eq!(open(), Some(1));
    assert!(
        eventually(TIMEOUT, || open() == Some(0)),
        "the idle connection stayed open"
    );
}

/// Found by review: a replayed body whose backend answered before taking all of it
/// lost the rest (the kept copy was freed at the answer): the backend got a truncated
/// body. The try reading it now hands out every kept piece first.
#[test]
fn a_replayed_body_goes_out_whole_even_when_answered_early() {
    let backend = H2Backend::start(Behaviour {
        refuse: 1,
        head_first: true,
        window: 16 * 1024,
        ..ANSWERS
    });
    let proxy = Proxy::start(&config("h2c", &[backend.addr.to_string()], ""), 1);
    // Four chunks, kept as four pieces for the replay.
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    let mut request = b"POST /upload HTTP/1.1\r\nHost: upload.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"3a98\r\n");
        request.extend_from_slice(&[b'y'; 15_000]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).expect("request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("got 60000 bytes"), "{answer}");
}

/// Found by review: a host with user information (`x@secret.example`) was routed as
/// written, then sent to an HTTP/2 backend as an `:authority` it reads as
/// `secret.example`. It is refused, whatever the pool speaks.
#[test]
fn a_host_with_userinfo_is_refused() {
    let backend = H2Backend::start(ANSWERS);
    let proxy = Proxy::start(&config("h2c", &[backend.addr.to_string()], ""), 1);
    let answer = crate::util::raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nHost: x@secret.example\r\n\r\n",
    );
    assert_eq!(answer.status, Some(400), "{}", answer.text);
    assert_eq!(backend.answered.load(Ordering::SeqCst), 0);
}

/// Found by review: an HTTP/2 backend's empty `content-length` (the h2 crate reads it
/// as 0) reached HTTP/1 clients as it was, a length their framing cannot trust. It is
/// a malformed answer (502), as from an HTTP/1 backend.
#[test]
fn an_http2_answer_with_an_invalid_length_is_a_bad_gateway() {
    let backend = H2Backend::start(Behaviour {
        empty_length: true,
        ..ANSWERS
    });
    let proxy = Proxy::start(&config("h2c", &[backend.addr.to_string()], ""), 1);
    let answer =
        crate::util::raw_exchange(proxy.addr(), b"GET / HTTP/1.1\r\nHost: length.test\r\n\r\n");
    assert_eq!(answer.status, Some(502), "{}", answer.text);
}
