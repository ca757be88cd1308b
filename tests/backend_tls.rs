//! TLS to backends (docs/tls.md, "TLS to backends") on real sockets: TLS backends started here
//! (tokio-rustls + hyper, certificates from a test CA) behind the real `evenkeel serve`.
//! Requests and health checks go over TLS verified against the pool's `ca`; a backend
//! another CA signed is refused (502) and marked down; SNI is what the config says;
//! `verify = false` works and warns; a CA rotated in place is taken by SIGHUP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};

use crate::util::{eventually, run, Client, Dir, Proxy, TestCertificate, TIMEOUT};

/// A TLS backend on `127.0.0.1:0` in its own thread and runtime, serving `cert`: it
/// answers `/healthz` with 200 (counted as a probe) and anything else with its name
/// and the server name the client sent (`x-sni`, `-` for none); it records the server
/// name of every handshake and whether it resumed a session. Stopped when dropped.
struct TlsBackend {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Seen {
    /// The server name of each completed handshake (`None`: no SNI).
    server_names: Mutex<Vec<Option<String>>>,
    /// Handshakes that resumed a session.
    resumed: AtomicU64,
    requests: AtomicU64,
    probes: AtomicU64,
    /// The `Host` of each probe.
    probe_hosts: Mutex<Vec<String>>,
    /// The body of each request that is not a probe.
    bodies: Mutex<Vec<String>>,
}

impl TlsBackend {
    fn start(name: &'static str, cert: &TestCertificate) -> TlsBackend {
        let chain = CertificateDer::pem_slice_iter(cert.pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).expect("key PEM");
        let provider = evenkeel::config::tls::provider();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(Seen::default());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::clone(&seen);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("register");
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => match accepted {
                            Ok(accepted) => accepted,
                            Err(_) => continue,
                        },
                    };
                    let (acceptor, state) = (acceptor.clone(), Arc::clone(&state));
                    tokio::spawn(async move {
                        // A refused certificate fails here (the proxy sends an alert).
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let (_, session) = tls.get_ref();
                        let sni = session.server_name().map(str::to_string);
                        if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                            state.resumed.fetch_add(1, Ordering::SeqCst);
                        }
                        lock(&state.server_names).push(sni.clone());
                        let service = service_fn(move |request: Request<Incoming>| {
                            let state = Arc::clone(&state);
                            let sni = sni.clone();
                            async move {
                                let body = if request.uri().path() == "/healthz" {
                                    state.probes.fetch_add(1, Ordering::SeqCst);
                                    let host = request
                                        .headers()
                                        .get("host")
                                        .and_then(|h| h.to_str().ok())
                                        .unwrap_or("-")
                                        .to_string();
                                    lock(&state.probe_hosts).push(host);
                                    "ok".to_string()
                                } else {
                                    state.requests.fetch_add(1, Ordering::SeqCst);
                                    let body =
                                        http_body_util::BodyExt::collect(request.into_body())
                                            .await
                                            .map(|b| {
                                                String::from_utf8_lossy(&b.to_bytes()).into_owned()
                                            })
                                            .unwrap_or_default();
                                    lock(&state.bodies).push(body);
                                    format!("{name} over TLS")
                                };
                                let response = Response::builder()
                                    .header("x-sni", sni.as_deref().unwrap_or("-"))
                                    .header("x-backend", name)
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response");
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        TlsBackend {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn server_names(&self) -> Vec<Option<String>> {
        lock(&self.seen.server_names).clone()
    }

    fn handshakes(&self) -> usize {
        lock(&self.seen.server_names).len()
    }

    fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }

    fn probes(&self) -> u64 {
        self.seen.probes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A config: one listener, one route to pool "api" with `tls` and `backends` (the
/// addresses as written), probed every 200 ms.
fn config(tls: &str, backends: &[&str]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[[route]]\npool = \"api\"\n\n\
         [pool.api]\ntls = {tls}\nretries = {{ attempts = 0 }}\nbackends = [{}]\n\n\
         [pool.api.health]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\
         healthy_after = 1\nunhealthy_after = 2\n",
        list.join(", ")
    )
}

/// `ca = "PATH"` of `name`.pem in `dir`.
fn ca_at(dir: &Path, name: &str) -> String {
    format!(
        "{:?}",
        dir.join(format!("{name}.pem")).display().to_string()
    )
}

fn health(proxy: &Proxy, address: &str) -> String {
    proxy.backend_status("api", address)["health"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_for_health(proxy: &Proxy, address: &str, want: &str) {
    assert!(
        eventually(TIMEOUT, || health(proxy, address) == want),
        "backend {address} never became {want} (is {}); stderr:\n{}",
        health(proxy, address),
        proxy.stderr()
    );
}

#[test]
fn requests_and_health_checks_go_over_tls_verified_against_the_pools_ca() {
    let dir = Dir::new();
    let ca = TestCertificate::authority("evenkeel test CA");
    dir.write("ca.pem", &ca.pem);
    let backend = TlsBackend::start("b1", &TestCertificate::signed_by(&["api.internal"], &ca));
    let address = backend.addr.to_string();
    let tls = format!(
        "{{ sni = \"api.internal\", ca = {} }}",
        ca_at(dir.path(), "ca")
    );
    let proxy = Proxy::start_with_admin(&config(&tls, &[&address]), 1);
    wait_for_health(&proxy, &address, "healthy");
    assert!(backend.probes() >= 1, "probes go over TLS");

    let mut client = Client::connect(proxy.addr());
    for _ in 0..20 {
        let reply = client.get("/hello");
        assert_eq!(reply.status, 200, "{}", proxy.stderr());
        assert_eq!(reply.text(), "b1 over TLS");
        assert_eq!(reply.headers["x-sni"], "api.internal");
    }
    assert_eq!(backend.requests(), 20);
    // Keep-alive: the 20 requests shared a pooled TLS connection; the rest of the
    // handshakes are probes' (a new connection each).
    let probes = backend.probes() as usize;
    assert!(
        backend.handshakes() <= probes + 2,
        "{} handshakes for 20 requests and {probes} probes",
        backend.handshakes()
    );
    // Probes reconnect every time: their sessions resume.
    assert!(
        eventually(TIMEOUT, || backend.seen.resumed.load(Ordering::SeqCst) >= 1),
        "no session was resumed in {} handshakes",
        backend.handshakes()
    );
    assert!(backend
        .server_names()
        .iter()
        .all(|n| n.as_deref() == Some("api.internal")));
}

/// Uploads of every size reach a TLS backend whole, on one pooled connection: bodies up
/// to 16 KiB with their head go out in one write (one TLS record), larger ones read
/// whole go out behind their head, one beyond `body_buffer` streams.
#[test]
fn uploads_of_every_size_reach_a_tls_backend_whole() {
    let dir = Dir::new();
    let ca = TestCertificate::authority("evenkeel test CA");
    let backend = TlsBackend::start("b1", &TestCertificate::signed_by(&["api.internal"], &ca));
    let address = backend.addr.to_string();
    let tls = format!(
        "{{ sni = \"api.internal\", ca = {} }}",
        ca_at(dir.path(), "ca")
    );
    dir.write("ca.pem", &ca.pem);
    let proxy = Proxy::start_with_admin(&config(&tls, &[&address]), 1);
    wait_for_health(&proxy, &address, "healthy");
    let sizes = [100usize, 6_000, 15_000, 17_000, 40_000, 200_000];
    let bodies: Vec<String> = sizes
        .iter()
        .map(|&len| {
            (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect()
        })
        .collect();
    let mut client = Client::connect(proxy.addr());
    for body in &bodies {
        let request = Request::post("/up")
            .header("host", "test.local")
            .body(crate::util::full(body.clone()))
            .expect("request");
        let reply = client
            .try_send(request)
            .unwrap_or_else(|e| panic!("{} bytes: {e}; stderr:\n{}", body.len(), proxy.stderr()));
        assert_eq!(
            reply.status,
            200,
            "{} bytes: {}",
            body.len(),
            proxy.stderr()
        );
    }
    let seen = lock(&backend.seen.bodies).clone();
    assert_eq!(seen.len(), bodies.len());
    for (seen, sent) in seen.iter().zip(&bodies) {
        assert!(
            seen == sent,
            "{} bytes sent, {} arrived",
            sent.len(),
            seen.len()
        );
    }
    assert!(
        backend.handshakes() <= backend.probes() as usize + 2,
        "the uploads shared a pooled connection: {} handshakes",
        backend.handshakes()
    );
}

/// A backend whose certificate the test CA signed, one whose certificate another CA
/// signed (both for `api.internal`), and the pool `tls` that trusts the test CA (in
/// the returned folder).
fn good_and_rogue() -> (Dir, TlsBackend, TlsBackend, String) {
    let dir = Dir::new();
    let ca = TestCertificate::authority("evenkeel test CA");
    let other = TestCertificate::authority("someone else's CA");
    dir.write("ca.pem", &ca.pem);
    let good = TlsBackend::start("good", &TestCertificate::signed_by(&["api.internal"], &ca));
    let rogue = TlsBackend::start(
        "rogue",
        &TestCertificate::signed_by(&["api.internal"], &other),
    );
    let tls = format!(
        "{{ sni = \"api.internal\", ca = {} }}",
        ca_at(dir.path(), "ca")
    );
    (dir, good, rogue, tls)
}

#[test]
fn a_backend_whose_certificate_another_ca_signed_is_refused_and_marked_down() {
    let (_dir, good, rogue, tls) = good_and_rogue();
    let (good_address, rogue_address) = (good.addr.to_string(), rogue.addr.to_string());
    let text = config(&tls, &[&good_address, &rogue_address]).replace(
        "[pool.api.health]",
        "[pool.api.outlier]\nconsecutive_failures = 0\n\n[pool.api.health]",
    );
    let proxy = Proxy::start_with_admin(&text, 1);
    wait_for_health(&proxy, &good_address, "healthy");
    wait_for_health(&proxy, &rogue_address, "unhealthy");
    assert_eq!(
        rogue.requests() + rogue.probes(),
        0,
        "nothing reached the rogue"
    );
    // The health event names the cause.
    proxy.wait_for_log("invalid peer certificate", 1);

    // Only the rogue in the pool: the client gets 502, and the log says why.
    let only_rogue = config(&tls, &[&rogue_address]);
    let proxy = Proxy::start(
        &only_rogue.replace(
            "[pool.api.health]",
            "[pool.api.outlier]\nconsecutive_failures = 0\n\n[pool.api.health]",
        ),
        1,
    );
    let mut client = Client::connect(proxy.addr());
    for _ in 0..3 {
        assert_eq!(client.get("/hello").status, 502);
    }
    assert_eq!(rogue.requests(), 0);
}

#[test]
fn a_refused_certificate_counts_as_a_connect_failure_for_passive_health() {
    let (_dir, good, rogue, tls) = good_and_rogue();
    let rogue_address = rogue.addr.to_string();
    // No active checks: only the passive ones can take the rogue out.
    let text = config(&tls, &[&good.addr.to_string(), &rogue_address]);
    let text = text[..text.find("[pool.api.health]").expect("health")].to_string()
        + "[pool.api.outlier]\nconsecutive_failures = 2\n";
    let proxy = Proxy::start_with_admin(&text, 1);
    let mut client = Client::connect(proxy.addr());
    let mut bad_gateways = 0;
    for _ in 0..10 {
        if client.get("/hello").status == 502 {
            bad_gateways += 1;
        }
    }
    assert_eq!(bad_gateways, 2, "two failures eject the rogue");
    let status = proxy.backend_status("api", &rogue_address);
    assert_eq!(status["ejected"], true, "the rogue is ejected: {status}");
    assert_eq!(good.requests(), 8);
}

#[test]
fn sni_is_the_setting_else_the_host_as_written_and_none_for_an_ip() {
    let dir = Dir::new();
    let ca = TestCertificate::authority("evenkeel test CA");
    dir.write("ca.pem", &ca.pem);
    let ca_line = ca_at(dir.path(), "ca");
    // Written as localhost:PORT: SNI "localhost", verified against that name.
    let named = TlsBackend::start("named", &TestCertificate::signed_by(&["localhost"], &ca));
    let by_name = format!("localhost:{}", named.addr.port());
    // Written as an IP: no SNI, verified against the IP address.
    let literal = TlsBackend::start("literal", &TestCertificate::signed_by(&["127.0.0.1"], &ca));
    for (backend, address) in [(&named, by_name), (&literal, literal.addr.to_string())] {
        let proxy = Proxy::start(&config(&format!("{{ ca = {ca_line} }}"), &[&address]), 1);
        let reply = Client::connect(proxy.addr()).get("/");
        assert_eq!(reply.status, 200, "{}", proxy.stderr());
        drop(proxy);
        let expected = if backend.addr.to_string() == literal.addr.to_string() {
            None
        } else {
            Some("localhost".to_string())
        };
        assert!(
            backend.server_names().iter().all(|n| *n == expected),
            "{:?}",
            backend.server_names()
        );
    }
    // `sni` wins over both, for every backend of the pool.
    let api = TlsBackend::start("api", &TestCertificate::signed_by(&["api.internal"], &ca));
    let tls = format!("{{ sni = \"api.internal\", ca = {ca_line} }}");
    let proxy = Proxy::start(
        &config(&tls, &[&format!("localhost:{}", api.addr.port())]),
        1,
    );
    let reply = Client::connect(proxy.addr()).get("/");
    assert_eq!(reply.status, 200, "{}", proxy.stderr());
    assert_eq!(reply.headers["x-sni"], "api.internal");
    // Probes ask for the same virtual host the handshake named.
    assert!(crate::util::eventually(
        std::time::Duration::from_secs(5),
        || api.probes() >= 1
    ));
    let hosts = lock(&api.seen.probe_hosts).clone();
    assert!(hosts.iter().all(|h| h == "api.internal"), "{hosts:?}");
}

#[test]
fn verify_false_accepts_any_certificate_and_warns() {
    let backend = TlsBackend::start("lab", &TestCertificate::new(&["lab.invalid"]));
    let text = config("{ verify = false }", &[&backend.addr.to_string()]);
    let dir = Dir::new();
    let path = dir.write("lb.toml", &text);
    let checked = run(&["check", "-c", path.to_str().expect("utf-8")]);
    assert_eq!(checked.code, Some(0), "{}", checked.stdout);
    assert!(
        checked.stdout.contains("warning[backend-tls-unverified]"),
        "{}",
        checked.stdout
    );
    let proxy = Proxy::start(&text, 1);
    assert!(proxy.stderr().contains("backend-tls-unverified"));
    let reply = Client::connect(proxy.addr()).get("/");
    assert_eq!(reply.status, 200, "{}", proxy.stderr());
    assert_eq!(reply.text(), "lab over TLS");

    // The same backend, verified: refused.
    let proxy = Proxy::start(&config("{}", &[&backend.addr.to_string()]), 1);
    assert_eq!(Client::connect(proxy.addr()).get("/").status, 502);
}

#[test]
fn a_ca_rotated_in_place_is_a_new_version_taken_by_sighup() {
    let dir = Dir::new();
    let old_ca = TestCertificate::authority("old CA");
    let new_ca = TestCertificate::authority("new CA");
    dir.write("ca.pem", &old_ca.pem);
    let backend = TlsBackend::start(
        "renewed",
        &TestCertificate::signed_by(&["api.internal"], &new_ca),
    );
    let tls = format!(
        "{{ sni = \"api.internal\", ca = {} }}",
        ca_at(dir.path(), "ca")
    );
    let text = config(&tls, &[&backend.addr.to_string()]);
    let text = text[..text.find("[pool.api.health]").expect("health")].to_string();
    let proxy = Proxy::start_with_admin(&text, 1);
    assert_eq!(Client::connect(proxy.addr()).get("/").status, 502);
    // Same TOML, new CA bundle.
    dir.write("ca.pem", &new_ca.pem);
    proxy.signal("HUP");
    assert!(
        eventually(TIMEOUT, || Client::connect(proxy.addr()).get("/").status
            == 200),
        "the new CA was never taken; stderr:\n{}",
        proxy.stderr()
    );
    let (code, history) = proxy.admin_request("GET", "/config/history");
    assert_eq!(code, 200);
    let versions = history["versions"].as_array().expect("versions");
    let (first, last) = (&versions[0], &versions[versions.len() - 1]);
    assert_eq!(last["origin"], "sighup", "{history}");
    assert_eq!(first["text"], last["text"], "the TOML did not change");
    assert_ne!(
        first["sha256"], last["sha256"],
        "but the version did: {history}"
    );
}

/// `alerts.webhook` over https: alarms reach a receiver whose certificate a private CA
/// signed, trusted through the system's store (here `SSL_CERT_FILE`, as curl and
/// OpenSSL read it).
#[test]
fn an_https_webhook_gets_alarms_verified_against_the_system_roots() {
    let ca = TestCertificate::authority("webhook test CA");
    let receiver = TlsBackend::start("hooks", &TestCertificate::signed_by(&["localhost"], &ca));
    let dir = Dir::new();
    let ca_file = dir.write("ca.pem", &ca.pem);
    let dead = crate::watch::dead_port();
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[[route]]\npool = \"web\"\n\n\
         [pool.web]\nbackends = [{{ address = \"{dead}\" }}]\n\
         [pool.web.health]\ntype = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nunhealthy_after = 1\n\
         [alerts]\nwebhook = \"https://localhost:{}/hook\"\n",
        receiver.addr.port()
    );
    let ca_path = ca_file.to_str().expect("utf-8");
    let proxy = Proxy::start_with_admin_env(&config, 1, &[("SSL_CERT_FILE", ca_path)]);
    let delivered = eventually(TIMEOUT, || {
        lock(&receiver.seen.bodies)
            .iter()
            .any(|b| b.contains("all_down/web"))
    });
    assert!(
        delivered,
        "no alarm over https; bodies {:?}; stderr:\n{}",
        lock(&receiver.seen.bodies),
        proxy.stderr()
    );
    assert_eq!(
        receiver.server_names().first(),
        Some(&Some("localhost".to_string()))
    );
}
