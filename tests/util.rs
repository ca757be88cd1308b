//! Helpers shared by the integration tests: temporary config files, running the
//! `evenkeel` binary, test backends and clients.
//!
//! - [`Dir`], [`run`], [`run_bounded`]: files and one-shot commands.
//! - [`Backend`]: an HTTP/1.1 server on `127.0.0.1:0` in its own thread and runtime that
//!   counts requests and uploaded bytes, can answer late, echoes what it received as
//!   JSON and streams large bodies (`/download/N`).
//! - [`Proxy`]: `evenkeel serve` on a temporary config, killed when dropped.
//! - [`Client`]: a blocking HTTP/1.1 keep-alive client; [`raw_exchange`] for bytes that
//!   no well-behaved client would send.
//!
//! Everything that waits is bounded by a timeout, so a hang fails a test instead of
//! blocking the suite.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A temporary folder that holds config files; removed when dropped.
pub struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().expect("temporary folder"),
        }
    }

    /// Writes `text` to `name` in the folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// What a finished `evenkeel` process printed and how it exited.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// The `evenkeel` binary built for these tests.
pub fn evenkeel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_evenkeel"))
}

/// Runs `evenkeel ARGS` to completion.
pub fn run(args: &[&str]) -> Run {
    evenkeel().args(args).output().expect("run evenkeel").into()
}

/// Runs `evenkeel ARGS`, killing it (and failing) if it is still running after `limit`:
/// for commands that would serve forever if they wrongly accepted their input.
pub fn run_bounded(args: &[&str], limit: Duration) -> Run {
    let dir = Dir::new();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = evenkeel()
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("start evenkeel");
    let status = wait_child(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "evenkeel {args:?} still running after {limit:?}; stderr:\n{}",
        run.stderr
    );
    run
}

/// Waits up to `limit` for `child` to exit.
fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; whether it held.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------
// Bodies

const CHUNK: usize = 64 * 1024;
static ZERO_CHUNK: [u8; CHUNK] = [0; CHUNK];

/// A body of `remaining` zero bytes produced 64 KiB at a time, never held whole.
pub struct Zeros {
    remaining: u64,
}

impl Zeros {
    pub fn new(len: u64) -> Zeros {
        Zeros { remaining: len }
    }
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZERO_CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The body type test clients send.
pub type ClientBody = BoxBody<Bytes, Infallible>;

pub fn empty() -> ClientBody {
    Empty::new().boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> ClientBody {
    Full::new(bytes.into()).boxed()
}

pub fn zeros(len: u64) -> ClientBody {
    Zeros::new(len).boxed()
}

/// Reads `body` to its end, counting its bytes without keeping them.
async fn count_body<B>(mut body: B) -> Result<u64, B::Error>
where
    B: Body + Unpin,
{
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            total += bytes::Buf::remaining(data) as u64;
        }
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------
// Backend

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    uploaded: AtomicU64,
}

struct BackendState {
    name: String,
    delay: Duration,
    counters: Arc<Counters>,
}

/// A test backend: an HTTP/1.1 server on `127.0.0.1:0` running in its own thread with
/// its own tokio runtime; stopped (connections and all) when dropped.
///
/// Every request is counted on arrival, then (after the optional delay) its body is read
/// and counted, and the answer is:
/// - `GET /download/N`: `N` bytes streamed 64 KiB at a time;
/// - anything else: JSON `{"backend", "method", "path", "version", "headers": [[name,
///   value], ...], "body_bytes"}` describing the request as received.
///
/// Every response carries `x-backend: NAME`. A request with `x-want-hop-by-hop` gets a
/// response with hop-by-hop headers (`Connection: x-hop-secret`, `X-Hop-Secret`,
/// `Keep-Alive`, `Proxy-Connection`, `Upgrade`) plus an end-to-end `X-End-To-End: kept`;
/// one with `x-close-connection` gets `Connection: close`, and the connection closes.
pub struct Backend {
    pub addr: SocketAddr,
    name: String,
    counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// A backend that answers at once.
    pub fn start(name: &str) -> Backend {
        Backend::with_delay(name, Duration::ZERO)
    }

    /// A backend that waits `delay` before answering each request.
    pub fn with_delay(name: &str, delay: Duration) -> Backend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a backend");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("backend address");
        let counters = Arc::new(Counters::default());
        let state = Arc::new(BackendState {
            name: name.to_string(),
            delay,
            counters: Arc::clone(&counters),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || {
                let rt = current_thread_runtime();
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("register backend");
                    tokio::pin!(stopped);
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let state = Arc::clone(&state);
                                tokio::spawn(async move {
                                    let service = service_fn(move |request| {
                                        answer(Arc::clone(&state), request)
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
                // Dropping the runtime here cancels every connection task.
            })
            .expect("backend thread");
        Backend {
            addr,
            name: name.to_string(),
            counters,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address as a config file writes it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Request body bytes received so far.
    pub fn uploaded(&self) -> u64 {
        self.counters.uploaded.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type BackendBody = Either<Full<Bytes>, Zeros>;

async fn answer(
    state: Arc<BackendState>,
    request: Request<Incoming>,
) -> Result<Response<BackendBody>, Infallible> {
    state.counters.requests.fetch_add(1, Ordering::SeqCst);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let (parts, mut body) = request.into_parts();
    let mut body_bytes = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            body_bytes += data.len() as u64;
            state
                .counters
                .uploaded
                .fetch_add(data.len() as u64, Ordering::SeqCst);
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut response = match path.strip_prefix("/download/") {
        Some(len) => Response::new(Either::Right(Zeros::new(len.parse().unwrap_or(0)))),
        None => {
            let headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let echo = serde_json::json!({
                "backend": state.name,
                "method": parts.method.as_str(),
                "path": path,
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "body_bytes": body_bytes,
            });
            Response::new(Either::Left(Full::new(Bytes::from(echo.to_string()))))
        }
    };
    let headers = response.headers_mut();
    if let Ok(name) = HeaderValue::from_str(&state.name) {
        headers.insert("x-backend", name);
    }
    if parts.headers.contains_key("x-close-connection") {
        headers.insert("connection", HeaderValue::from_static("close"));
    }
    if parts.headers.contains_key("x-want-hop-by-hop") {
        for (name, value) in [
            ("connection", "x-hop-secret"),
            ("x-hop-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("x-end-to-end", "kept"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// Proxy

/// `evenkeel serve` running on a temporary config; killed (SIGKILL) when dropped if it
/// is still running. Its stderr goes to a file that [`Proxy::stderr`] reads.
pub struct Proxy {
    child: Child,
    dir: Dir,
    config: PathBuf,
    stderr_path: PathBuf,
    /// Each listener's name and bound address, as printed on stdout.
    pub listeners: Vec<(String, SocketAddr)>,
    /// The admin API's address, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
}

impl Proxy {
    /// Starts `evenkeel serve` with `workers` worker threads on `config`, and waits until
    /// it has printed the address of every `[[listener]]`.
    pub fn start(config: &str, workers: usize) -> Proxy {
        let dir = Dir::new();
        let config_path = dir.write("evenkeel.toml", config);
        let stderr_path = dir.path().join("stderr.log");
        let mut child = evenkeel()
            .args(["serve", "-c"])
            .arg(&config_path)
            .args(["--workers", &workers.to_string(), "--no-access-log"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("start evenkeel serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines) = std::sync::mpsc::channel();
        // Reads stdout to its end (the process's exit), so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut proxy = Proxy {
            child,
            dir,
            config: config_path,
            stderr_path,
            listeners: Vec::new(),
            admin: None,
        };
        let expected = config.matches("[[listener]]").count();
        let wants_admin = config.contains("[admin]");
        let deadline = Instant::now() + TIMEOUT;
        while proxy.listeners.len() < expected || (wants_admin && proxy.admin.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "evenkeel serve did not print its listeners; exit {:?}; stderr:\n{}",
                    proxy.child.try_wait().ok().flatten(),
                    proxy.stderr()
                ),
            };
            if let Some(url) = line.strip_prefix("admin http://") {
                proxy.admin = Some(url.parse().expect("admin address"));
                continue;
            }
            let Some(rest) = line.strip_prefix("listening ") else {
                continue;
            };
            let (name, url) = rest.split_once(' ').expect("listening NAME URL");
            let addr = url
                .strip_prefix("http://")
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("bad listening line: {line}"));
            proxy.listeners.push((name.to_string(), addr));
        }
        proxy
    }

    /// The address of the first listener.
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0].1
    }

    /// The address of listener `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"HUP"`, ...) to the process, by PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, limit)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until stderr holds `needle` at least `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize) {
        let found = eventually(TIMEOUT, || self.stderr().matches(needle).count() >= count);
        assert!(
            found,
            "stderr never showed {needle:?} {count} time(s):\n{}",
            self.stderr()
        );
    }

    /// Replaces the config file's contents (for SIGHUP).
    pub fn rewrite_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("rewrite the config");
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A field of `/proc/PID/status` in KiB (`"VmRSS"`, `"VmHWM"`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Clients

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The name of the test backend that answered (its `x-backend` header), or `""`.
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (a test backend's echo).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Every value of header `name` that the backend received, from its echo, in order.
    pub fn echoed(&self, name: &str) -> Vec<String> {
        let echo = self.json();
        echo["headers"]
            .as_array()
            .expect("headers array")
            .iter()
            .filter(|pair| pair[0].as_str() == Some(name))
            .map(|pair| pair[1].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// A blocking HTTP/1.1 client on one keep-alive connection (hyper's, on its own
/// current-thread runtime). Every call fails the test after [`TIMEOUT`].
pub struct Client {
    rt: tokio::runtime::Runtime,
    sender: hyper::client::conn::http1::SendRequest<ClientBody>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let rt = current_thread_runtime();
        let sender = rt.block_on(async {
            let connect = async {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                Ok::<_, Box<dyn std::error::Error>>(sender)
            };
            tokio::time::timeout(TIMEOUT, connect)
                .await
                .expect("connect in time")
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
        });
        Client { rt, sender }
    }

    /// `GET path` with `Host: test.local`.
    pub fn get(&mut self, path: &str) -> Reply {
        self.send(get(path).body(empty()).expect("request"))
    }

    /// Sends `request` and reads the whole response.
    pub fn send(&mut self, request: Request<ClientBody>) -> Reply {
        self.try_send(request).expect("request failed")
    }

    /// Sends `request` and reads the whole response, or says why it failed.
    pub fn try_send(&mut self, request: Request<ClientBody>) -> Result<Reply, String> {
        let sender = &mut self.sender;
        self.rt.block_on(async {
            let exchange = async {
                sender.ready().await.map_err(|e| e.to_string())?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| e.to_string())?;
                let (parts, body) = response.into_parts();
                let body = body.collect().await.map_err(|e| e.to_string())?;
                Ok(Reply {
                    status: parts.status,
                    version: parts.version,
                    headers: parts.headers,
                    body: body.to_bytes(),
                })
            };
            tokio::time::timeout(TIMEOUT, exchange)
                .await
                .unwrap_or_else(|_| Err("timed out".to_string()))
        })
    }

    /// Sends `request` and reads the response body to its end, counting its bytes
    /// without keeping them.
    pub fn send_counting(&mut self, request: Request<ClientBody>) -> (StatusCode, u64) {
        let sender = &mut self.sender;
        self.rt.block_on(async {
            let exchange = async {
                sender.ready().await.expect("connection ready");
                let response = sender.send_request(request).await.expect("response");
                let status = response.status();
                let len = count_body(response.into_body()).await.expect("body");
                (status, len)
            };
            tokio::time::timeout(TIMEOUT, exchange)
                .await
                .expect("exchange in time")
        })
    }
}

/// A `GET path` request builder with `Host: test.local`.
pub fn get(path: &str) -> http::request::Builder {
    Request::get(path).header("host", "test.local")
}

/// A response read from raw bytes.
#[derive(Debug)]
pub struct RawReply {
    /// The status code, if a status line came back.
    pub status: Option<u16>,
    /// Everything read (head and body), lossily decoded.
    pub text: String,
}

/// Sends `request` as raw bytes on a new connection and reads one response: its head,
/// then `Content-Length` bytes of body (or until the connection closes). Write errors
/// are ignored (a server may refuse before reading everything); reads stop after 5 s.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawReply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    let _ = stream.write_all(request);
    read_response(&mut stream)
}

/// Reads one HTTP/1 response from `stream` (see [`raw_exchange`]).
pub fn read_response(stream: &mut TcpStream) -> RawReply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut expected_len: Option<usize> = None;
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            if expected_len.is_none() {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok());
                expected_len = Some(len.map_or(usize::MAX, |l: usize| end + 4 + l));
            }
            if expected_len.is_some_and(|want| buf.len() >= want) {
                break;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok());
    RawReply { status, text }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Counts how many replies each backend name gave.
pub fn tally(names: impl IntoIterator<Item = String>) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}
