//! HTTPS on a listener, through real clients: curl (SNI with `--resolve`, ALPN with
//! `--http2`), `openssl s_client`, and Python's `ssl` for a rotation under load.
//! Certificates are made by the tests (rcgen); each test writes its own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{eventually, raw_exchange, Backend, Dir, Proxy, TestCertificate};

/// A config with an HTTPS listener `https` serving `certificates` (`{ cert, key }`
/// entries) with `listener_extra` lines, a plain listener `plain` with `plain_extra`,
/// and routes from both to pool `web` over `backend`.
fn config(certificates: &str, listener_extra: &str, backend: &str, plain_extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"https\"\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ certificates = [{certificates}] }}\n{listener_extra}\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\n{plain_extra}\n\
         [[route]]\nlistener = \"https\"\npool = \"web\"\n\n\
         [[route]]\nlistener = \"plain\"\npool = \"web\"\n\n\
         [pool.web]\nbackends = [{{ address = \"{backend}\" }}]\n"
    )
}

/// `{ cert = "...", key = "..." }` for the files `write` made.
fn entry(files: &(std::path::PathBuf, std::path::PathBuf)) -> String {
    format!(
        "{{ cert = \"{}\", key = \"{}\" }}",
        files.0.display(),
        files.1.display()
    )
}

/// Runs curl with `args`; (exit code, stdout).
fn curl(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `https://NAME:PORT/` for curl, with `--resolve` sending NAME as SNI to `addr`.
fn resolve(name: &str, addr: SocketAddr) -> [String; 3] {
    [
        "--resolve".to_string(),
        format!("{name}:{}:127.0.0.1", addr.port()),
        format!("https://{name}:{}/", addr.port()),
    ]
}

/// The SHA-256 fingerprint (lower-case hex) of the certificate `openssl s_client`
/// is served at `addr` with `server_name` as SNI (`None`: no SNI).
fn served_fingerprint(addr: SocketAddr, server_name: Option<&str>) -> String {
    let sni = match server_name {
        Some(name) => format!("-servername {name}"),
        None => "-noservername".to_string(),
    };
    let script = format!(
        "openssl s_client -connect {addr} {sni} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_ascii_lowercase()
}

/// Three certificates — two names and a wildcard — over one listener: SNI picks the
/// one that covers the name, and the first serves any other name or no SNI at all.
#[test]
fn sni_picks_the_certificate_that_covers_the_name_wildcards_included_else_the_first() {
    let backend = Backend::start("b1");
    let dir = Dir::new();
    let shop = TestCertificate::new(&["shop.example"]);
    let api = TestCertificate::new(&["api.example"]);
    let wild = TestCertificate::new(&["*.cdn.example"]);
    let entries = [
        entry(&shop.write(dir.path(), "shop")),
        entry(&api.write(dir.path(), "api")),
        entry(&wild.write(dir.path(), "wild")),
    ]
    .join(", ");
    let proxy = Proxy::start(&config(&entries, "", &backend.address(), ""), 1);
    let addr = proxy.listener("https");

    for (name, file) in [
        ("shop.example", "shop.pem"),
        ("api.example", "api.pem"),
        ("img.cdn.example", "wild.pem"),
    ] {
        // Verified against that certificate alone: any other one fails the handshake.
        let cacert = dir.path().join(file);
        let url = resolve(name, addr);
        let (code, out) = curl(&[
            "--cacert",
            cacert.to_str().unwrap(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url[0],
            &url[1],
            &url[2],
        ]);
        assert_eq!((code, out.as_str()), (Some(0), "200"), "{name}: {out}");
    }
    assert_eq!(
        served_fingerprint(addr, Some("api.example")),
        api.fingerprint
    );
    assert_eq!(
        served_fingerprint(addr, Some("a.b.cdn.example")),
        shop.fingerprint,
        "a wildcard stands for one label only: the first certificate"
    );
    assert_eq!(
        served_fingerprint(addr, Some("other.example")),
        shop.fingerprint
    );
    assert_eq!(served_fingerprint(addr, None), shop.fingerprint);
}

/// ALPN: `h2` is served HTTP/2, `http/1.1` (and no ALPN) HTTP/1.1; the backend is told
/// the client came over HTTPS.
#[test]
fn alpn_h2_is_served_http2_and_http11_http1_with_forwarded_proto_https() {
    let backend = Backend::start("b1");
    let dir = Dir::new();
    let cert = TestCertificate::new(&["shop.example"]);
    let files = cert.write(dir.path(), "shop");
    let proxy = Proxy::start(&config(&entry(&files), "", &backend.address(), ""), 1);
    let url = resolve("shop.example", proxy.listener("https"));
    let cacert = files.0.to_str().unwrap();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (code, out) = curl(&[
            flag,
            "--cacert",
            cacert,
            "-w",
            "\n%{http_version}",
            &url[0],
            &url[1],
            &url[2],
        ]);
        assert_eq!(code, Some(0), "{out}");
        let (body, got) = out.rsplit_once('\n').expect("body and version");
        assert_eq!(got, version, "{flag}: {out}");
        let echo: serde_json::Value = serde_json::from_str(body).expect("the backend's echo");
        let proto: Vec<&str> = echo["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .filter(|h| h[0] == "x-forwarded-proto")
            .filter_map(|h| h[1].as_str())
            .collect();
        assert_eq!(proto, ["https"], "{flag}: {body}");
    }
    // openssl's view of the negotiation.
    let script = format!(
        "openssl s_client -connect {} -servername shop.example -alpn h2,http/1.1 </dev/null 2>/dev/null",
        proxy.listener("https")
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("openssl");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    // The plain listener still says http.
    let plain = raw_exchange(
        proxy.listener("plain"),
        b"GET / HTTP/1.1\r\nhost: shop.example\r\nconnection: close\r\n\r\n",
    );
    assert!(
        plain.text.contains(r#"["x-forwarded-proto","http"]"#),
        "{}",
        plain.text
    );
}

/// A request for a host the connection's certificate does not cover gets 421 when
/// the client sent SNI, and is served when it did not (clients that connect by IP).
#[test]
fn a_host_the_certificate_does_not_cover_gets_421_with_sni_and_is_served_without() {
    let backend = Backend::start("b1");
    let dir = Dir::new();
    let shop = TestCertificate::new(&["shop.example"]);
    let api = TestCertificate::new(&["api.example"]);
    let entries = [
        entry(&shop.write(dir.path(), "shop")),
        entry(&api.write(dir.path(), "api")),
    ]
    .join(", ");
    let proxy = Proxy::start(&config(&entries, "", &backend.address(), ""), 1);
    let addr = proxy.listener("https");
    let url = resolve("shop.example", addr);
    let status = |extra: &[&str], url: &[&str]| {
        let mut args = vec!["-k", "-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        args.extend_from_slice(url);
        curl(&args).1
    };
    let with_sni = [url[0].as_str(), url[1].as_str(), url[2].as_str()];
    assert_eq!(status(&[], &with_sni), "200");
    for protocol in ["--http1.1", "--http2"] {
        assert_eq!(
            status(&[protocol, "-H", "Host: api.example"], &with_sni),
            "421",
            "{protocol}"
        );
    }
    let by_ip = format!("https://127.0.0.1:{}/", addr.port());
    assert_eq!(status(&["-H", "Host: api.example"], &[&by_ip]), "200");
    assert_eq!(backend.requests(), 2, "a 421 never reaches the backend");
}

/// `redirect_https = true` on the plain listener: 308 to the same host, path and query
/// on the TLS listener's port; nothing reaches a backend.
#[test]
fn a_redirect_listener_answers_308_to_the_https_listener_with_host_path_and_query() {
    let backend = Backend::start("b1");
    let dir = Dir::new();
    let files = TestCertificate::new(&["shop.example"]).write(dir.path(), "shop");
    let proxy = Proxy::start(
        &config(
            &entry(&files),
            "",
            &backend.address(),
            "redirect_https = true",
        ),
        1,
    );
    let reply = raw_exchange(
        proxy.listener("plain"),
        b"GET /cart?item=7&x=%20 HTTP/1.1\r\nhost: shop.example:8080\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(reply.status, Some(308), "{}", reply.text);
    let location = format!(
        "location: https://shop.example:{}/cart?item=7&x=%20\r\n",
        proxy.listener("https").port()
    );
    assert!(reply.text.contains(&location), "{}", reply.text);
    // curl follows it to the HTTPS listener and gets the backend's answer.
    let (code, out) = curl(&[
        "-L",
        "--cacert",
        files.0.to_str().unwrap(),
        "--resolve",
        &format!("shop.example:{}:127.0.0.1", proxy.listener("https").port()),
        "--resolve",
        &format!("shop.example:{}:127.0.0.1", proxy.listener("plain").port()),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{num_redirects}",
        &format!("http://shop.example:{}/", proxy.listener("plain").port()),
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "200 1"), "{out}");
    assert_eq!(backend.requests(), 1);
}

/// A client that stops inside the handshake is cut after `header_timeout`, like one
/// that stops inside a request head, and the failure is counted by reason.
#[test]
fn a_client_that_stalls_in_the_handshake_is_cut_after_header_timeout() {
    let backend = Backend::start("b1");
    let dir = Dir::new();
    let files = TestCertificate::new(&["shop.example"]).write(dir.path(), "shop");
    let proxy = Proxy::start_with_admin(
        &config(
            &entry(&files),
            "header_timeout = \"1s\"",
            &backend.address(),
            "",
        ),
        1,
    );
    let mut stalled = TcpStream::connect(proxy.listener("https")).expect("connect");
    // The first bytes of a ClientHello record, then nothing.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("write");
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let read = stalled.read(&mut buf);
    let waited = start.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the connection should be closed, read {read:?}"
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    // Plain HTTP to the HTTPS port: not TLS.
    let reply = raw_exchange(
        proxy.listener("https"),
        b"GET / HTTP/1.1\r\nhost: shop.example\r\n\r\n",
    );
    assert_eq!(reply.status, None, "{}", reply.text);
    let metrics = || {
        let admin = proxy.admin.expect("admin");
        raw_exchange(
            admin,
            b"GET /metrics HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        )
        .text
    };
    let counted = eventually(Duration::from_secs(5), || {
        let text = metrics();
        text.contains("evenkeel_tls_handshake_failures_total{reason=\"timeout\"} 1")
            && text.contains("evenkeel_tls_handshake_failures_total{reason=\"not_tls\"} 1")
    });
    assert!(counted, "{}", metrics());
    let (code, _) = curl(&[
        "-k",
        "-o",
        "/dev/null",
        &format!("https://{}/", proxy.listener("https")),
    ]);
    assert_eq!(code, Some(0));
    assert!(
        metrics().contains("evenkeel_tls_handshakes_total 1"),
        "{}",
        metrics()
    );
    assert!(
        metrics().contains("evenkeel_tls_certificate_expiry_timestamp_seconds{"),
        "{}",
        metrics()
    );
}

/// Python: new connections in a loop for `seconds`, each verified against `cafile`
/// with SNI `name`; prints `ok FINGERPRINT` or `fail REASON` per connection.
const LOOP: &str = r#"
import hashlib, socket, ssl, sys, time
host, port, name, cafile, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
context = ssl.create_default_context(cafile=cafile)
end = time.time() + seconds
while time.time() < end:
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: " + name.encode() + b"\r\nConnection: close\r\n\r\n")
                answer = b""
                while True:
                    piece = tls.recv(65536)
                    if not piece:
                        break
                    answer += piece
                status = answer.split(b"\r\n", 1)[0]
                fingerprint = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
                print(("ok " if b" 200 " in status else "fail ") + fingerprint, flush=True)
    except Exception as e:
        print("fail " + type(e).__name__ + " " + str(e), flush=True)
"#;

/// Certificate files rewritten in place under an unchanged TOML, then SIGHUP: a new
/// version; connections opened after it get the new certificate, and no request of
/// a client opening connection after connection fails.
#[test]
fn certificates_rotated_in_place_by_sighup_under_load_fail_no_request() {
    let backend = Backend::start("b1");
    let dir = Dir::new();
    let old = TestCertificate::new(&["shop.example"]);
    let new = TestCertificate::new(&["shop.example"]);
    let files = old.write(dir.path(), "shop");
    let cafile = dir.write("both.pem", &format!("{}{}", old.pem, new.pem));
    let proxy = Proxy::start_with_admin(&config(&entry(&files), "", &backend.address(), ""), 2);
    let port = proxy.listener("https").port().to_string();
    let client = Command::new("python3")
        .args(["-c", LOOP, "127.0.0.1", &port, "shop.example"])
        .arg(&cafile)
        .arg("4")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the Python client");
    std::thread::sleep(Duration::from_millis(1500));
    new.write(dir.path(), "shop");
    proxy.signal("HUP");
    let out = client.wait_with_output().expect("the Python client");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let failed: Vec<&String> = lines.iter().filter(|l| !l.starts_with("ok ")).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed, the first: {:?}",
        failed.len(),
        lines.len(),
        &failed[..failed.len().min(3)]
    );
    let first = lines.first().expect("some connections");
    let last = lines.last().expect("some connections");
    assert_eq!(first, &format!("ok {}", old.fingerprint));
    assert_eq!(
        last,
        &format!("ok {}", new.fingerprint),
        "{} connections",
        lines.len()
    );
    assert!(lines.len() > 20, "only {} connections", lines.len());

    // Two versions of one text, told apart by their certificates.
    let (code, history) = proxy.admin_request("GET", "/config/history");
    assert_eq!(code, 200);
    let versions = history["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2, "{history}");
    assert_eq!(versions[0]["text"], versions[1]["text"]);
    assert_ne!(versions[0]["sha256"], versions[1]["sha256"]);
    assert_eq!(versions[1]["outcome"], "applied");
    assert_eq!(
        versions[1]["certificates"][0]["fingerprint"],
        new.fingerprint.as_str()
    );
    assert_eq!(
        versions[0]["certificates"][0]["fingerprint"],
        old.fingerprint.as_str()
    );
    assert!(!history.to_string().contains("PRIVATE KEY"));
    // A SIGHUP with nothing changed is no new version.
    proxy.signal("HUP");
    proxy.wait_for_log("the file is the config in force already", 1);
    assert_eq!(
        proxy.admin_request("GET", "/config/history").1["versions"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

/// Makes the certificate files in a folder unusable in one way.
type Spoil<'a> = Box<dyn Fn(&Path) + 'a>;

/// A reload that brings an unusable certificate is refused, and the one in force
/// keeps serving: expired, a key of another certificate, not PEM, missing.
#[test]
fn a_reload_with_a_bad_certificate_is_refused_and_the_old_one_keeps_serving() {
    let backend = Backend::start("b1");
    let dir = Dir::new();
    let good = TestCertificate::new(&["shop.example"]);
    let files = good.write(dir.path(), "shop");
    let proxy = Proxy::start(&config(&entry(&files), "", &backend.address(), ""), 1);
    let addr = proxy.listener("https");
    assert_eq!(
        served_fingerprint(addr, Some("shop.example")),
        good.fingerprint
    );
    let expired = TestCertificate::valid(&["shop.example"], -10 * 86_400, -86_400);
    let other = TestCertificate::new(&["shop.example"]);
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "expired",
            Box::new(|d: &Path| drop(expired.write(d, "shop"))),
        ),
        (
            "key of another certificate",
            Box::new(|d: &Path| std::fs::write(d.join("shop.key"), &other.key).expect("write")),
        ),
        (
            "not PEM",
            Box::new(|d: &Path| std::fs::write(d.join("shop.pem"), "hello\n").expect("write")),
        ),
        (
            "missing",
            Box::new(|d: &Path| std::fs::remove_file(d.join("shop.pem")).expect("remove")),
        ),
    ];
    for (refusals, (case, spoil)) in cases.iter().enumerate() {
        good.write(dir.path(), "shop");
        spoil(dir.path());
        proxy.signal("HUP");
        proxy.wait_for_log("config refused", refusals + 1);
        assert_eq!(
            served_fingerprint(addr, Some("shop.example")),
            good.fingerprint,
            "{case}: the old certificate must keep serving"
        );
    }
    let stderr = proxy.stderr();
    for rule in [
        "certificate-expired",
        "certificate-key-mismatch",
        "invalid-certificate",
    ] {
        assert!(stderr.contains(rule), "{rule} missing from:\n{stderr}");
    }
}

/// A certificate that expired while in force still serves after a restart (refusing
/// would only add an outage), with the expiry alarm; `check` fails on it, and a
/// first start with it is refused.
#[test]
fn a_certificate_that_expired_in_force_still_serves_after_a_restart_with_an_alarm() {
    let backend = Backend::start("b1");
    let dir = Dir::new();
    let state = dir.path().join("state");
    let short = TestCertificate::valid(&["shop.example"], -86_400, 3);
    let files = short.write(dir.path(), "shop");
    let text = format!(
        "state_dir = \"{}\"\n{}",
        state.display(),
        config(&entry(&files), "", &backend.address(), "")
    );
    let mut first = Proxy::start_with_admin(&text, 1);
    let alarm = |proxy: &Proxy| {
        proxy.status()["monitor"]["alarms"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| {
                a["key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("certificate_expiry/https/"))
            })
    };
    assert!(
        eventually(Duration::from_secs(5), || alarm(&first)),
        "a certificate with seconds left is alarmed: {}",
        first.status()
    );
    first.signal("TERM");
    first.wait_exit(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(4));

    let path = dir.write("lb.toml", &text);
    let checked = crate::util::run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert!(
        checked.stdout.contains("error[certificate-expired]"),
        "{}",
        checked.stdout
    );

    let second = Proxy::start_with_admin(&text, 1);
    assert_eq!(
        served_fingerprint(second.listener("https"), Some("shop.example")),
        short.fingerprint
    );
    assert!(
        second.stderr().contains("still served"),
        "{}",
        second.stderr()
    );
    assert!(
        eventually(Duration::from_secs(5), || alarm(&second)),
        "{}",
        second.status()
    );

    // Another instance, without that history: refused.
    let fresh = text.replace(
        &state.display().to_string(),
        &dir.path().join("fresh").display().to_string(),
    );
    let path = dir.write("fresh.toml", &fresh);
    let refused = crate::util::run_bounded(
        &["serve", "-c", path.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("certificate-expired"),
        "{}",
        refused.stderr
    );
}

/// A blocking rustls client to `addr` for `name`, trusting `cert` alone; its socket's
/// receive buffer is `receive_buffer` bytes when given.
fn tls_client(
    addr: SocketAddr,
    name: &str,
    cert: &TestCertificate,
    receive_buffer: Option<usize>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki_types::CertificateDer::from_pem_slice(cert.pem.as_bytes()).expect("PEM"))
        .expect("a root");
    let config = rustls::ClientConfig::builder_with_provider(evenkeel::config::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    }
    socket.connect(&addr.into()).expect("connect");
    let tcp: TcpStream = socket.into();
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let server_name = pki_types::ServerName::try_from(name.to_string()).expect("a name");
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), server_name).expect("client");
    rustls::StreamOwned::new(connection, tcp)
}

/// A response's last bytes over TLS went out only at the connection's next write or
/// its close (`header_timeout` later): tokio-rustls keeps what the socket would not
/// take until it is flushed. A client that reads late still gets all of it at once.
#[test]
fn the_end_of_a_response_over_tls_is_not_held_back_until_the_next_write() {
    let backend = Backend::start("b1");
    let dir = Dir::new();
    let cert = TestCertificate::new(&["shop.example"]);
    let files = cert.write(dir.path(), "shop");
    let proxy = Proxy::start(&config(&entry(&files), "", &backend.address(), ""), 1);
    let mut client = tls_client(
        proxy.listener("https"),
        "shop.example",
        &cert,
        Some(128 * 1024),
    );
    let length = 4_000_000;
    client
        .write_all(
            format!("GET /download/{length} HTTP/1.1\r\nhost: shop.example\r\n\r\n").as_bytes(),
        )
        .expect("send");
    // Let the socket fill while nobody reads.
    std::thread::sleep(Duration::from_secs(1));
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = loop {
        let n = client.read(&mut buf).expect("read");
        assert!(n > 0, "closed early after {} bytes", received.len());
        received.extend_from_slice(&buf[..n]);
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    while received.len() - head_end < length {
        let n = client.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "closed early after {} bytes",
            received.len() - head_end
        );
        received.extend_from_slice(&buf[..n]);
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the body took {took:?} (header_timeout is 10 s)"
    );
}

/// A client that closes properly over TLS (close_notify, then FIN) cancels its request
/// like one that just closes; a peek saw the alert's bytes and took them for a
/// pipelined request.
#[test]
fn a_tls_client_that_closes_with_close_notify_cancels_its_request() {
    let (backend, upstream_closed) = crate::hardening::silent_backend();
    let dir = Dir::new();
    let cert = TestCertificate::new(&["shop.example"]);
    let files = cert.write(dir.path(), "shop");
    let proxy = Proxy::start(&config(&entry(&files), "", &backend.to_string(), ""), 1);
    let mut client = tls_client(proxy.listener("https"), "shop.example", &cert, None);
    client
        .write_all(b"GET /abandoned HTTP/1.1\r\nhost: shop.example\r\n\r\n")
        .expect("send");
    client.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(300));
    client.conn.send_close_notify();
    client.flush().expect("send close_notify");
    let left = Instant::now();
    drop(client);
    crate::hardening::assert_closed_soon_after(&upstream_closed, left);
}

/// An HTTPS keep-alive connection is parked after an idle second (its task and state
/// freed, its session kept): the next request is served, a head split across the idle
/// second too, two pipelined after it both, in order; a silent one is closed at its
/// `header_timeout` with a close_notify (the client reads a clean end, not a cut), and
/// SIGTERM closes a parked one at once.
#[test]
fn a_tls_connection_is_served_across_its_parked_phase_and_closed_cleanly() {
    let backend = Backend::start("b1");
    let dir = Dir::new();
    let cert = TestCertificate::new(&["shop.example"]);
    let files = cert.write(dir.path(), "shop");
    let mut proxy = Proxy::start(
        &config(
            &entry(&files),
            "header_timeout = \"3s\"",
            &backend.address(),
            "",
        ),
        1,
    );
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: shop.example\r\n\r\n");
    let mut client = tls_client(proxy.listener("https"), "shop.example", &cert, None);
    // Reads responses until `paths` have all been answered, in order.
    let answered = |client: &mut rustls::StreamOwned<_, TcpStream>, paths: &[&str]| {
        let mut text = String::new();
        let mut buf = [0u8; 16 * 1024];
        while !paths
            .iter()
            .all(|p| text.contains(&format!("\"path\":\"{p}\"")))
        {
            let n = client.read(&mut buf).expect("read");
            assert!(n > 0, "closed; got {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert_eq!(text.matches("HTTP/1.1 200").count(), paths.len(), "{text}");
        let at: Vec<usize> = paths.iter().map(|p| text.find(p).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    };
    client.write_all(request("/first").as_bytes()).unwrap();
    answered(&mut client, &["/first"]);
    std::thread::sleep(Duration::from_millis(1500));
    client.write_all(request("/after-idle").as_bytes()).unwrap();
    answered(&mut client, &["/after-idle"]);
    let split = request("/split");
    client.write_all(&split.as_bytes()[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    client.write_all(&split.as_bytes()[10..]).unwrap();
    answered(&mut client, &["/split"]);
    std::thread::sleep(Duration::from_millis(1500));
    let pipelined = request("/one") + &request("/two");
    client.write_all(pipelined.as_bytes()).unwrap();
    answered(&mut client, &["/one", "/two"]);
    let last_answer = Instant::now();
    assert_eq!(backend.requests(), 5);

    // Silent: closed at 3 s, with a close_notify (rustls reports a cut as an error).
    let mut buf = [0u8; 64];
    let ended = client.read(&mut buf);
    let after = last_answer.elapsed();
    assert!(matches!(ended, Ok(0)), "{ended:?} after {after:?}");
    assert!(
        after >= Duration::from_millis(2500) && after < Duration::from_millis(4500),
        "closed after {after:?}, header_timeout is 3 s"
    );

    // Parked at SIGTERM: closed at once, cleanly.
    let mut parked = tls_client(proxy.listener("https"), "shop.example", &cert, None);
    parked.write_all(request("/last").as_bytes()).unwrap();
    answered(&mut parked, &["/last"]);
    std::thread::sleep(Duration::from_millis(1300));
    let term_sent = Instant::now();
    proxy.signal("TERM");
    let ended = parked.read(&mut buf);
    assert!(matches!(ended, Ok(0)), "{ended:?}");
    let status = proxy.wait_exit(Duration::from_secs(5)).expect("exit");
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert!(
        term_sent.elapsed() < Duration::from_secs(3),
        "took {:?} to stop",
        term_sent.elapsed()
    );
}
