//! Helpers shared by the integration tests: temporary config files, running the
//! `evenkeel` binary, test backends and clients.
//!
//! - [`Dir`], [`run`], [`run_bounded`]: files and one-shot commands.
//! - [`Backend`]: an HTTP/1.1 server on `127.0.0.1:0` in its own thread and runtime that
//!   counts requests (with their arrival times), probes and uploaded bytes, can answer
//!   late, echoes what it received as JSON and streams large bodies (`/download/N`);
//!   for failure tests it can answer a fixed status, reset or hang ([`Answer`]), fail
//!   or flap its health path ([`Health`]), and be stopped and restarted on its port.
//! - [`Proxy`]: `evenkeel serve` on a temporary config, killed when dropped; with
//!   [`Proxy::start_with_admin`], its admin API (`/status`, drain, enable) too.
//! - [`Client`]: a blocking HTTP/1.1 keep-alive client; [`raw_exchange`] for bytes that
//!   no well-behaved client would send; [`Load`]: steady load from several clients,
//!   recording every request.
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// The path test backends treat as their health check: requests to it are counted as
/// probes (not traffic) and answered as [`Backend::set_health`] says.
pub const HEALTH_PATH: &str = "/healthz";

/// How a [`Backend`] answers; changeable while it runs ([`Backend::set_answer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The normal answer (see [`Backend`]); the health path as [`Health`] says.
    Serve,
    /// This status with a short body, to every request (health probes included).
    Status(u16),
    /// Read the request to its end, then reset the connection (RST) without answering.
    Reset,
    /// Read the request to its end, then close the connection (FIN) without answering.
    Close,
    /// Read the request, then never answer (a hung process); health probes too.
    Hang,
}

/// How a [`Backend`] answering [`Answer::Serve`] answers its [`HEALTH_PATH`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// 200.
    Pass,
    /// 500.
    Fail,
    /// 200 and 500 on successive probes, starting with 200 (a flapping backend).
    Alternate,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    uploaded: AtomicU64,
    probes: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// When each traffic request (not probe) arrived.
    arrivals: Mutex<Vec<Instant>>,
    /// When each probe arrived.
    probe_arrivals: Mutex<Vec<Instant>>,
}

/// What can be changed while a backend runs.
struct Control {
    answer: Mutex<Answer>,
    health: Mutex<Health>,
    delay_ms: AtomicU64,
}

struct BackendState {
    name: String,
    control: Arc<Control>,
    counters: Arc<Counters>,
}

/// A running server thread of a [`Backend`].
struct Server {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Server {
    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// A test backend: an HTTP/1.1 server on `127.0.0.1:0` running in its own thread with
/// its own tokio runtime; stopped (connections and all) when dropped.
///
/// Every traffic request (any path but [`HEALTH_PATH`]) is counted and timed on
/// arrival, then (after the optional delay) its body is read and counted, and the
/// answer is (under [`Answer::Serve`], the default):
/// - `GET /download/N`: `N` bytes streamed 64 KiB at a time;
/// - anything else: JSON `{"backend", "method", "path", "version", "headers": [[name,
///   value], ...], "body_bytes"}` describing the request as received.
///
/// Every response carries `x-backend: NAME`. A request with `x-want-hop-by-hop` gets a
/// response with hop-by-hop headers (`Connection: x-hop-secret`, `X-Hop-Secret`,
/// `Keep-Alive`, `Proxy-Connection`, `Upgrade`) plus an end-to-end `X-End-To-End: kept`;
/// one with `x-close-connection` gets `Connection: close`, and the connection closes.
///
/// For failure tests it can be made to answer otherwise ([`Answer`], [`Health`]), to
/// answer late ([`Backend::set_delay`]), and be stopped and restarted on the same port
/// ([`Backend::stop`], [`Backend::restart`]): while stopped its port stays bound but
/// does not listen, so connections to it are refused and no other socket takes it.
pub struct Backend {
    pub addr: SocketAddr,
    name: String,
    state: Arc<BackendState>,
    server: Option<Server>,
    /// While stopped: the port, bound, not listening.
    reserved: Option<socket2::Socket>,
}

/// A TCP socket bound to `addr` with `SO_REUSEADDR` (so that connections of a previous
/// listener on the port, in TIME_WAIT, do not stop the bind), not yet listening.
fn bind_port(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

impl Backend {
    /// A backend that answers at once.
    pub fn start(name: &str) -> Backend {
        Backend::with_delay(name, Duration::ZERO)
    }

    /// A backend that waits `delay` before answering each traffic request.
    pub fn with_delay(name: &str, delay: Duration) -> Backend {
        let socket = bind_port("127.0.0.1:0".parse().expect("address")).expect("bind a backend");
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("backend address");
        let state = Arc::new(BackendState {
            name: name.to_string(),
            control: Arc::new(Control {
                answer: Mutex::new(Answer::Serve),
                health: Mutex::new(Health::Pass),
                delay_ms: AtomicU64::new(delay.as_millis() as u64),
            }),
            counters: Arc::new(Counters::default()),
        });
        let mut backend = Backend {
            addr,
            name: name.to_string(),
            state,
            server: None,
            reserved: Some(socket),
        };
        backend.restart();
        backend
    }

    /// Stops serving: every connection is closed and new ones are refused, until
    /// [`Backend::restart`]. Counters are kept.
    pub fn stop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        server.stop();
        let addr = self.addr;
        let mut last_error = None;
        let bound = eventually(Duration::from_secs(2), || match bind_port(addr) {
            Ok(socket) => {
                self.reserved = Some(socket);
                true
            }
            Err(e) => {
                last_error = Some(e);
                false
            }
        });
        assert!(
            bound,
            "cannot hold the port of stopped backend {addr}: {last_error:?}"
        );
    }

    /// Serves again on the same port.
    pub fn restart(&mut self) {
        if self.server.is_some() {
            return;
        }
        let socket = self
            .reserved
            .take()
            .expect("a stopped backend holds its port");
        socket.listen(1024).expect("listen");
        let listener = std::net::TcpListener::from(socket);
        listener.set_nonblocking(true).expect("non-blocking");
        self.server = Some(serve_backend(listener, Arc::clone(&self.state)));
    }

    /// Whether it is serving (not stopped).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// How it answers from now on.
    pub fn set_answer(&self, answer: Answer) {
        *lock(&self.state.control.answer) = answer;
    }

    /// How it answers its health path from now on.
    pub fn set_health(&self, health: Health) {
        *lock(&self.state.control.health) = health;
    }

    /// How long it waits before answering each traffic request from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .control
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address as a config file writes it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Traffic requests (any path but [`HEALTH_PATH`]) received so far.
    pub fn requests(&self) -> u64 {
        self.state.counters.requests.load(Ordering::SeqCst)
    }

    /// Request body bytes received so far.
    pub fn uploaded(&self) -> u64 {
        self.state.counters.uploaded.load(Ordering::SeqCst)
    }

    /// Health probes ([`HEALTH_PATH`]) received so far.
    pub fn probes(&self) -> u64 {
        self.state.counters.probes.load(Ordering::SeqCst)
    }

    /// Traffic requests received and not answered yet.
    pub fn in_flight(&self) -> u64 {
        self.state.counters.in_flight.load(Ordering::SeqCst)
    }

    /// The most traffic requests it ever had in flight at once.
    pub fn max_in_flight(&self) -> u64 {
        self.state.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// When each traffic request arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        lock(&self.state.counters.arrivals).clone()
    }

    /// When each health probe arrived, in order.
    pub fn probe_arrivals(&self) -> Vec<Instant> {
        lock(&self.state.counters.probe_arrivals).clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves `listener` on a thread of its own until the returned server is stopped;
/// stopping drops the runtime, which closes the listener and every connection.
fn serve_backend(listener: std::net::TcpListener, state: Arc<BackendState>) -> Server {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("backend-{}", state.name))
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
                            // A second handle on the socket, to reset it (SO_LINGER 0)
                            // or close it from a request (Answer::Reset, Answer::Close).
                            let handle = Arc::new(Mutex::new(
                                socket2::SockRef::from(&stream).try_clone().ok(),
                            ));
                            let state = Arc::clone(&state);
                            tokio::spawn(async move {
                                let service = service_fn(move |request| {
                                    answer(Arc::clone(&state), Arc::clone(&handle), request)
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
    Server { stop, thread }
}

type BackendBody = Either<Full<Bytes>, Zeros>;

/// Counts a traffic request in flight while it lasts.
struct InFlightGuard(Arc<Counters>);

impl InFlightGuard {
    fn new(counters: &Arc<Counters>) -> InFlightGuard {
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(Arc::clone(counters))
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads `body` to its end; how many bytes it had.
async fn drain_body(body: &mut Incoming, counters: &Counters) -> u64 {
    let mut body_bytes = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            body_bytes += data.len() as u64;
            counters
                .uploaded
                .fetch_add(data.len() as u64, Ordering::SeqCst);
        }
    }
    body_bytes
}

fn status_response(state: &BackendState, status: u16) -> Response<BackendBody> {
    let body = format!("backend {} answers {status}\n", state.name);
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *response.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    if let Ok(name) = HeaderValue::from_str(&state.name) {
        response.headers_mut().insert("x-backend", name);
    }
    response
}

async fn answer(
    state: Arc<BackendState>,
    handle: Arc<Mutex<Option<socket2::Socket>>>,
    request: Request<Incoming>,
) -> Result<Response<BackendBody>, std::io::Error> {
    let counters = &state.counters;
    let mode = *lock(&state.control.answer);
    let probe = request.uri().path() == HEALTH_PATH;
    let _in_flight = if probe {
        let n = counters.probes.fetch_add(1, Ordering::SeqCst);
        lock(&counters.probe_arrivals).push(Instant::now());
        if mode == Answer::Serve {
            let pass = match *lock(&state.control.health) {
                Health::Pass => true,
                Health::Fail => false,
                Health::Alternate => n % 2 == 0,
            };
            return Ok(status_response(&state, if pass { 200 } else { 500 }));
        }
        None
    } else {
        counters.requests.fetch_add(1, Ordering::SeqCst);
        lock(&counters.arrivals).push(Instant::now());
        Some(InFlightGuard::new(counters))
    };
    let (parts, mut body) = request.into_parts();
    match mode {
        Answer::Serve => {}
        Answer::Status(status) => {
            drain_body(&mut body, counters).await;
            return Ok(status_response(&state, status));
        }
        Answer::Reset | Answer::Close => {
            drain_body(&mut body, counters).await;
            // Without this handle, the connection's socket closes when hyper drops it
            // after the error below: with SO_LINGER 0 that close is a reset.
            if let Some(socket) = lock(&handle).take() {
                if mode == Answer::Reset {
                    let _ = socket.set_linger(Some(Duration::ZERO));
                }
            }
            return Err(std::io::Error::other("closing without an answer"));
        }
        Answer::Hang => {
            drain_body(&mut body, counters).await;
            std::future::pending::<()>().await;
        }
    }
    let delay = Duration::from_millis(state.control.delay_ms.load(Ordering::SeqCst));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let body_bytes = drain_body(&mut body, counters).await;
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
    /// The admin API's address, as printed on stdout, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
}

/// The admin token [`Proxy::start_with_admin`] configures.
pub const ADMIN_TOKEN: &str = "evenkeel-test-admin-token";

impl Proxy {
    /// Starts `evenkeel serve` with `workers` worker threads on `config`, and waits until
    /// it has printed the address of every `[[listener]]`.
    pub fn start(config: &str, workers: usize) -> Proxy {
        Proxy::launch(config, workers, false, None)
    }

    /// Like [`Proxy::start`], with an `[admin]` section added to `config` (on
    /// `127.0.0.1:0`, token [`ADMIN_TOKEN`]); also waits for the admin address.
    pub fn start_with_admin(config: &str, workers: usize) -> Proxy {
        Proxy::start_with_admin_settings(config, workers, "")
    }

    /// Like [`Proxy::start_with_admin`], with `settings` (TOML lines such as
    /// `max_connections = 8`) added to the `[admin]` section.
    pub fn start_with_admin_settings(config: &str, workers: usize, settings: &str) -> Proxy {
        Proxy::launch(&with_admin(config, settings), workers, true, None)
    }

    /// Like [`Proxy::start_with_admin_settings`], in a process whose open-files limit
    /// (soft and hard) is `open_files`.
    pub fn start_with_admin_under_open_files_limit(
        config: &str,
        workers: usize,
        settings: &str,
        open_files: u64,
    ) -> Proxy {
        Proxy::launch(
            &with_admin(config, settings),
            workers,
            true,
            Some(open_files),
        )
    }

    /// Like [`Proxy::start`], with `env` set in the process's environment.
    pub fn start_with_env(config: &str, workers: usize, env: &[(&str, &str)]) -> Proxy {
        Proxy::launch_with(config, workers, false, None, env, &["--no-access-log"])
    }

    /// Like [`Proxy::start_with_admin`], with `env` set in the process's environment
    /// (such as `SSL_CERT_FILE`, for the system's trust store).
    pub fn start_with_admin_env(config: &str, workers: usize, env: &[(&str, &str)]) -> Proxy {
        Proxy::launch_with(
            &with_admin(config, ""),
            workers,
            true,
            None,
            env,
            &["--no-access-log"],
        )
    }

    /// Like [`Proxy::start_with_admin`], with the access log on (on stderr).
    pub fn start_with_admin_and_access_log(config: &str, workers: usize) -> Proxy {
        Proxy::launch_with(&with_admin(config, ""), workers, true, None, &[], &[])
    }

    /// Like [`Proxy::start`], with `args` added to `serve`'s command line in place of
    /// `--no-access-log` (which every other constructor passes).
    pub fn start_with_args(config: &str, workers: usize, args: &[&str]) -> Proxy {
        Proxy::launch_with(config, workers, false, None, &[], args)
    }

    fn launch(config: &str, workers: usize, admin: bool, open_files: Option<u64>) -> Proxy {
        Proxy::launch_with(
            config,
            workers,
            admin,
            open_files,
            &[],
            &["--no-access-log"],
        )
    }

    fn launch_with(
        config: &str,
        workers: usize,
        admin: bool,
        open_files: Option<u64>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Proxy {
        let dir = Dir::new();
        if admin {
            dir.write("admin.token", ADMIN_TOKEN);
        }
        let config_path = dir.write("evenkeel.toml", config);
        let stderr_path = dir.path().join("stderr.log");
        let mut command = match open_files {
            None => evenkeel(),
            // `ulimit -n` sets the soft and the hard limit; `exec` keeps the PID.
            Some(limit) => {
                let mut bash = Command::new("bash");
                bash.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    env!("CARGO_BIN_EXE_evenkeel"),
                ]);
                bash
            }
        };
        command.envs(env.iter().copied());
        let mut child = command
            .args(["serve", "-c"])
            .arg(&config_path)
            .args(["--workers", &workers.to_string()])
            .args(args)
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
                .or_else(|| url.strip_prefix("https://"))
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

    /// `METHOD path` on the admin API with the token; the status and the body as JSON
    /// (`null` when it is not JSON).
    pub fn admin_request(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
        let addr = self.admin.expect("started with an admin listener");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
             content-length: 0\r\nconnection: close\r\n\r\n"
        );
        let reply = raw_exchange(addr, request.as_bytes());
        let body = reply
            .text
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body);
        (
            reply.status.unwrap_or(0),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// `GET /status`.
    pub fn status(&self) -> serde_json::Value {
        let (code, status) = self.admin_request("GET", "/status");
        assert_eq!(code, 200, "GET /status: {status}");
        status
    }

    /// The `/status` entry of pool `pool`.
    pub fn pool_status(&self, pool: &str) -> serde_json::Value {
        let status = self.status();
        status["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["name"] == pool))
            .cloned()
            .unwrap_or_else(|| panic!("no pool {pool} in /status: {status}"))
    }

    /// The `/status` entry of the backend at `address` in pool `pool`.
    pub fn backend_status(&self, pool: &str, address: &str) -> serde_json::Value {
        let pool_status = self.pool_status(pool);
        pool_status["backends"]
            .as_array()
            .and_then(|backends| backends.iter().find(|b| b["address"] == address))
            .cloned()
            .unwrap_or_else(|| panic!("no backend {address} in pool {pool}: {pool_status}"))
    }

    /// CPU time (user + system) the process has used so far, from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/PID/stat");
        // Fields after the command name (which may hold spaces) in parentheses; utime and
        // stime are fields 14 and 15 of the line, 12th and 13th after it.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11..13]
            .iter()
            .map(|f| f.parse::<u64>().expect("a tick count"))
            .sum();
        let per_second: u64 = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100);
        Duration::from_secs_f64(ticks as f64 / per_second as f64)
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

/// `config` with an `[admin]` section on `127.0.0.1:0`, token [`ADMIN_TOKEN`], and
/// `settings` in it.
fn with_admin(config: &str, settings: &str) -> String {
    format!(
        "{config}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n{settings}\n"
    )
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

// ---------------------------------------------------------------------------------------
// Steady load

/// One request of a [`Load`]: when it started and ended, and how it went.
#[derive(Clone, Debug)]
pub struct Sent {
    pub start: Instant,
    pub end: Instant,
    /// The response status, if a response head came back.
    pub status: Option<StatusCode>,
    /// The test backend that answered (`x-backend`), or `""`.
    pub backend: String,
    /// What went wrong on the connection (before or after the response head), if
    /// anything.
    pub error: Option<String>,
}

impl Sent {
    /// A 200 read to its end.
    pub fn ok(&self) -> bool {
        self.status == Some(StatusCode::OK) && self.error.is_none()
    }

    /// Failed after its response had begun (head received, body cut).
    pub fn failed_after_head(&self) -> bool {
        self.status.is_some() && self.error.is_some()
    }
}

/// Steady load: `clients` threads, each sending `GET path` one request after another
/// on its own keep-alive connection (a new one after a connection error), pausing
/// between requests, until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Sent>>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize, path: &str, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|i| {
                let stop = Arc::clone(&stop);
                let path = path.to_string();
                std::thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn(move || load_thread(addr, &path, pause, &stop))
                    .expect("load thread")
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients (each finishes the request it is on) and returns every
    /// request sent, ordered by start.
    pub fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        let mut sent: Vec<Sent> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("load thread"))
            .collect();
        sent.sort_by_key(|s| s.start);
        sent
    }
}

fn load_thread(addr: SocketAddr, path: &str, pause: Duration, stop: &AtomicBool) -> Vec<Sent> {
    let rt = current_thread_runtime();
    let mut sent = Vec::new();
    rt.block_on(async {
        let mut sender: Option<hyper::client::conn::http1::SendRequest<ClientBody>> = None;
        while !stop.load(Ordering::SeqCst) {
            let start = Instant::now();
            let mut record = Sent {
                start,
                end: start,
                status: None,
                backend: String::new(),
                error: None,
            };
            let exchange = async {
                if sender.as_ref().is_none_or(|s| s.is_closed()) {
                    let stream = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|e| format!("connect: {e}"))?;
                    let (s, connection) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .map_err(|e| format!("handshake: {e}"))?;
                    tokio::spawn(connection);
                    sender = Some(s);
                }
                let s = sender.as_mut().ok_or("no connection")?;
                s.ready().await.map_err(|e| format!("ready: {e}"))?;
                let request = get(path).body(empty()).expect("request");
                let response = s
                    .send_request(request)
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                record.status = Some(response.status());
                record.backend = response
                    .headers()
                    .get("x-backend")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("body: {e}"))?;
                Ok::<_, String>(())
            };
            let result = tokio::time::timeout(TIMEOUT, exchange)
                .await
                .unwrap_or_else(|_| Err("timed out".to_string()));
            if let Err(e) = result {
                record.error = Some(e);
                sender = None;
            }
            record.end = Instant::now();
            sent.push(record);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    });
    sent
}

/// A certificate and key made for a test (rcgen, ECDSA P-256 unless `rsa`), valid from
/// `from` to `to` (seconds from now; negative: in the past), covering `names`.
pub struct TestCertificate {
    /// The certificate, PEM.
    pub pem: String,
    /// The private key, PEM.
    pub key: String,
    /// SHA-256 of the certificate (DER), lower-case hex.
    pub fingerprint: String,
}

impl TestCertificate {
    /// Self-signed, valid from yesterday for 90 days.
    pub fn new(names: &[&str]) -> TestCertificate {
        TestCertificate::valid(names, -86_400, 90 * 86_400)
    }

    /// Self-signed, valid from `from` to `to` seconds from now.
    pub fn valid(names: &[&str], from: i64, to: i64) -> TestCertificate {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = TestCertificate::params(names, from, to);
        let cert = params.self_signed(&key).expect("certificate");
        TestCertificate::made(&cert, &key)
    }

    /// Signed by `ca` (made by [`TestCertificate::authority`]).
    pub fn signed_by(names: &[&str], ca: &TestAuthority) -> TestCertificate {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = TestCertificate::params(names, -86_400, 90 * 86_400);
        let cert = params.signed_by(&key, &ca.issuer).expect("certificate");
        TestCertificate::made(&cert, &key)
    }

    /// A certificate authority for [`TestCertificate::signed_by`].
    pub fn authority(name: &str) -> TestAuthority {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = TestCertificate::params(&[], -86_400, 90 * 86_400);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        TestAuthority {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn params(names: &[&str], from: i64, to: i64) -> rcgen::CertificateParams {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        // A subject of its own: clients look issuers up by subject, and two
        // self-signed certificates with one subject would stand for each other.
        static MADE: AtomicU64 = AtomicU64::new(0);
        let serial = MADE.fetch_add(1, Ordering::Relaxed);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("evenkeel test {} {serial}", std::process::id()),
        );
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::seconds(from);
        params.not_after = now + time::Duration::seconds(to);
        params
    }

    fn made(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> TestCertificate {
        use sha2::Digest;
        TestCertificate {
            pem: cert.pem(),
            key: key.serialize_pem(),
            fingerprint: sha2::Sha256::digest(cert.der())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    /// Writes `NAME.pem` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, &self.pem).expect("write certificate");
        std::fs::write(&key, &self.key).expect("write key");
        (cert, key)
    }
}

/// A test certificate authority.
pub struct TestAuthority {
    /// Its certificate, PEM.
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// The certificates the lint examples name (see docs/lints.md): `site`, `expired`,
/// `expiring` (10 days left) for `shop.example` and `*.shop.example`, `other.key`, and
/// `ca.pem` (a CA bundle for backend TLS).
pub fn write_lint_certificates(dir: &Path) {
    let names = ["shop.example", "*.shop.example"];
    TestCertificate::valid(&names, -86_400, 90 * 86_400).write(dir, "site");
    TestCertificate::valid(&names, -90 * 86_400, -86_400).write(dir, "expired");
    TestCertificate::valid(&names, -80 * 86_400, 10 * 86_400).write(dir, "expiring");
    let other = TestCertificate::new(&names);
    std::fs::write(dir.join("other.key"), other.key).expect("write key");
    std::fs::write(
        dir.join("ca.pem"),
        TestCertificate::authority("lint CA").pem,
    )
    .expect("write CA");
}

// ---------------------------------------------------------------------------------------
// Python test peers (tests/peers/*.py)

/// The server of a Python test peer (`python3 tests/peers/SCRIPT server ARGS...`), which
/// prints the port it listens on; stopped when dropped.
pub struct PeerServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PeerServer {
    /// Starts `script`'s server with `args`; `library` names what it needs installed,
    /// for the message when it does not start.
    pub fn start(script: &str, args: &[&str], library: &str) -> PeerServer {
        let mut child = Command::new("python3")
            .arg(peer_path(script))
            .arg("server")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no port from {script}: {line:?} (is `{library}` installed?)")
        });
        PeerServer { child, port }
    }

    /// Its address, `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of the Python test peer `script`.
pub fn peer_path(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script)
}

/// Runs a client mode of the Python test peer `script` to its end (at most 60 s), with
/// `env`; its last line of output as JSON.
pub fn peer_client(script: &str, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut command = Command::new("timeout");
    command
        .arg("60")
        .arg("python3")
        .arg(peer_path(script))
        .args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("run the peer's client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|_| {
        panic!(
            "{script} {args:?} printed no JSON: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
