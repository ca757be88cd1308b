//! The validated, resolved configuration: immutable values with every default filled
//! in, addresses resolved, durations parsed, names cross-checked.
//!
//! The `Default` impls here are the single home of the defaults in DESIGN.md's config
//! contract; validation fills omitted fields from them and docs/config.md is checked
//! against them by a test.

use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::balance::Algorithm;

pub use super::backend_tls::{BackendTls, CaBundle, TlsTarget};
use super::diagnostic::Source;
pub use super::tls::{Certificate, ListenerTls, TlsVersion};

/// Byte range in the config file, for locating lint findings.
pub type Span = Range<usize>;

/// A whole validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from.
    pub source: Arc<Source>,
    /// Where history and the journal live (resolved against the config file's folder).
    /// Default: `evenkeel-state`.
    pub state_dir: PathBuf,
    /// Whether `state_dir` is written in the file (else it is the default, which
    /// `serve` replaces with systemd's `$STATE_DIRECTORY` when that is set).
    pub state_dir_written: bool,
    /// How long in-flight requests may finish after SIGTERM. Default: 30 s.
    pub drain_timeout: Duration,
    /// Where `drain_timeout` is written; `None`: omitted.
    pub drain_timeout_span: Option<Span>,
    /// The admin listener; `None`: no admin listener.
    pub admin: Option<Admin>,
    /// Client-facing listeners, in file order.
    pub listeners: Vec<Listener>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
    /// Pools, in file order.
    pub pools: Vec<Pool>,
    /// Thresholds for the guarded reload and the alarms.
    pub guard: Guard,
    /// Silenced lint rules with the operator's reason.
    pub lint_allow: Vec<LintAllow>,
    /// Alert delivery.
    pub alerts: Alerts,
    /// Where the history and journal live (node-local). Default: SQLite in `state_dir`.
    pub store: super::store::StoreKind,
}

impl Config {
    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Every certificate the config serves, with the listener serving it.
    pub fn certificates(&self) -> impl Iterator<Item = (&Listener, &Arc<Certificate>)> {
        self.listeners.iter().flat_map(|listener| {
            listener
                .tls
                .iter()
                .flat_map(move |tls| tls.certificates.iter().map(move |c| (listener, c)))
        })
    }

    /// Every CA bundle the config's pools verify backends against, with its pool.
    pub fn backend_cas(&self) -> impl Iterator<Item = (&Pool, &CaBundle)> {
        self.pools.iter().filter_map(|pool| {
            let ca = pool.tls.as_ref()?.ca.as_ref()?;
            Some((pool, ca))
        })
    }

    /// What makes this config the version it is: the SHA-256 of its text, and — when it
    /// names certificate, key or CA files — of their bytes too, so new files under an
    /// unchanged TOML are a new version (hex; equal to the text's SHA-256 when the
    /// config names no such files, so histories from before TLS keep their values).
    pub fn identity(&self) -> String {
        // In a fleet, what a version is does not depend on which node's file (with its
        // own [admin], [store] and state_dir) it came through.
        let text = match self.store {
            super::store::StoreKind::Etcd(_) => super::store::shared_part(&self.source.text),
            super::store::StoreKind::Sqlite => {
                std::borrow::Cow::Borrowed(self.source.text.as_str())
            }
        };
        identity(
            &text,
            self.certificates()
                .map(|(_, c)| c.files_sha256.as_str())
                .chain(self.backend_cas().map(|(_, ca)| ca.sha256.as_str())),
        )
    }
}

/// A config's identity from its text and its files' digests (see [`Config::identity`]).
pub fn identity<'a>(text: &str, files: impl Iterator<Item = &'a str>) -> String {
    use sha2::{Digest, Sha256};
    let mut files = files.peekable();
    let mut hash = Sha256::new();
    hash.update(text.as_bytes());
    if files.peek().is_some() {
        hash.update(b"\0files");
        for digest in files {
            hash.update(b"\0");
            hash.update(digest.as_bytes());
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Default for [`Config::state_dir`].
pub const DEFAULT_STATE_DIR: &str = "evenkeel-state";
/// Default for [`Config::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `[admin]`
#[derive(Clone, Debug, PartialEq)]
pub struct Admin {
    /// Address to bind. Default: 127.0.0.1:9901.
    pub listen: SocketAddr,
    /// File holding the bearer token (resolved against the config file's folder).
    pub token_file: PathBuf,
    /// Where `token_file` is written.
    pub token_file_span: Span,
    /// Admin connections served at once; more wait in the kernel backlog. Default: 64.
    pub max_connections: u32,
    /// A request head must arrive within this, counted from the accept for a
    /// connection's first request (so a silent connection is closed after it) and from
    /// the first byte for later ones. Default: 10 s.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in progress is closed after this.
    /// Default: 60 s.
    pub idle_timeout: Duration,
    /// Whether `GET /metrics` needs the bearer token too. Default: false (open, as the
    /// admin API contract says).
    pub metrics_require_token: bool,
    /// Where `[admin]` is written.
    pub span: Span,
}

/// Default for [`Admin::listen`].
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Default for [`Admin::max_connections`].
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: u32 = 64;
/// Default for [`Admin::header_timeout`].
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Admin::idle_timeout`].
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Fewest characters an admin token may have (after trimming); the admin API refuses
/// to start with a shorter one.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// `[[listener]]`
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    /// Unique name routes refer to.
    pub name: String,
    /// Address to bind (port 0: any free port).
    pub listen: SocketAddr,
    /// The whole request head must arrive within this. Default: 10 s.
    pub header_timeout: Duration,
    /// Client connections served at once; more wait in the kernel backlog. Default: 10,000.
    pub max_connections: u32,
    /// HTTPS: the certificates and protocol floor. None: plain HTTP.
    pub tls: Option<Arc<ListenerTls>>,
    /// Answer every request with a 308 to the same URL over `https://`. Default: false.
    pub redirect_https: bool,
    /// Upgraded connections (WebSocket tunnels) open at once over all workers; an
    /// upgrade beyond it gets 503. Default: 10,000. Can change by reload.
    pub max_tunnels: u32,
    /// HTTP (the default), or TCP: each connection balanced to `pool` (L4).
    pub mode: ListenerMode,
    /// A TCP listener's pool (its one route, in [`Config::routes`], says the same).
    pub pool: Option<String>,
    /// A TCP listener reads a PROXY protocol header (v1 or v2) first, from an L4
    /// balancer in front, and takes the client's address from it; a connection
    /// without a valid one is closed. Default: false.
    pub accept_proxy_protocol: bool,
    /// Where the listener is written.
    pub span: Span,
}

/// What a listener carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ListenerMode {
    /// HTTP requests, routed by `[[route]]`.
    #[default]
    Http,
    /// TCP connections, each balanced to the listener's pool and carried unread.
    Tcp,
}

impl ListenerMode {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerMode::Http => "http",
            ListenerMode::Tcp => "tcp",
        }
    }
}

/// The HTTP version a pool speaks to its backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1, over keep-alive connections (one request at a time on each).
    #[default]
    Http1,
    /// HTTP/2 in clear text with prior knowledge (RFC 9113 §3.3): streams multiplexed
    /// over a few connections per backend.
    H2c,
    /// HTTP/2 over the pool's `tls`, agreed by ALPN.
    H2,
}

impl Protocol {
    /// Every protocol, as the config writes them.
    pub const NAMES: [&'static str; 3] = ["http1", "h2c", "h2"];

    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::H2 => "h2",
        }
    }

    /// The protocol written `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "http1" => Some(Protocol::Http1),
            "h2c" => Some(Protocol::H2c),
            "h2" => Some(Protocol::H2),
            _ => None,
        }
    }

    /// HTTP/2, in clear text or over TLS.
    pub fn is_http2(self) -> bool {
        self != Protocol::Http1
    }
}

/// Default for [`Listener::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Listener::max_connections`].
pub const DEFAULT_LISTENER_MAX_CONNECTIONS: u32 = 10_000;
/// Default for [`Listener::max_tunnels`].
pub const DEFAULT_MAX_TUNNELS: u32 = 10_000;

/// `[[route]]`: requests on `listener` whose host and path match go to `pool`.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Listener name.
    pub listener: String,
    /// Exact host to match (lower case, no port); `None` matches any host.
    pub host: Option<String>,
    /// Path prefix, matched on `/` boundaries. Default: `/`.
    pub path_prefix: String,
    /// Pool name.
    pub pool: String,
    /// Where the route is written.
    pub span: Span,
}

/// `[pool.NAME]`
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// The pool's name.
    pub name: String,
    /// Where `[pool.NAME]` is written (its name).
    pub span: Span,
    /// Balancing algorithm. Default: round robin.
    pub algorithm: Algorithm,
    /// Where the request key comes from (consistent hashing only).
    pub hash_key: Option<HashKey>,
    /// Pool that takes over when this one has no usable backend.
    pub backup: Option<String>,
    /// Percent of usable backends below which the pool is in panic mode. Default: 50.
    pub panic_threshold: u8,
    /// Ramp-up time of a backend's weight after it becomes usable. Default: 0 (off).
    pub slow_start: Duration,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Retry policy.
    pub retries: Retries,
    /// Per-backend limits.
    pub limits: Limits,
    /// Backends, in file order.
    pub backends: Vec<Backend>,
    /// Active health check; `None`: none configured.
    pub health: Option<HealthCheck>,
    /// Passive health checks (always present, with defaults).
    pub outlier: Outlier,
    /// TLS to the backends; `None`: plain TCP.
    pub tls: Option<Arc<BackendTls>>,
    /// A TCP pool: the pool of a `mode = "tcp"` listener, whose unit is the
    /// connection. Such a pool serves no HTTP route.
    pub tcp: bool,
    /// A TCP pool sends its backends a PROXY protocol v2 header first, with the
    /// client's address. Default: false.
    pub proxy_protocol: bool,
    /// The HTTP version spoken to the backends. Default: HTTP/1.1.
    pub protocol: Protocol,
    /// Where some optional values are written, for lint findings.
    pub spans: PoolSpans,
}

/// Where a pool's optional values are written, so lint findings can point at them;
/// `None`: the value was omitted and its default is in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSpans {
    /// `hash_key`.
    pub hash_key: Option<Span>,
    /// `backup`.
    pub backup: Option<Span>,
    /// `timeouts.request`.
    pub request_timeout: Option<Span>,
    /// `timeouts.tunnel_idle`.
    pub tunnel_idle: Option<Span>,
    /// `protocol`.
    pub protocol: Option<Span>,
    /// `retries.budget_percent`.
    pub budget_percent: Option<Span>,
    /// `outlier.max_ejected_percent`.
    pub max_ejected_percent: Option<Span>,
}

impl Pool {
    /// Requests in flight to one backend beyond which it takes no more (it is "full"):
    /// `limits.max_streams` in an HTTP/2 pool, else `limits.max_connections` (one
    /// request per connection).
    pub fn in_flight_limit(&self) -> u32 {
        if self.protocol.is_http2() {
            self.limits.max_streams
        } else {
            self.limits.max_connections
        }
    }

    /// Sum of the backends' weights.
    pub fn total_weight(&self) -> u64 {
        self.backends.iter().map(|b| u64::from(b.weight)).sum()
    }
}

/// Default for [`Pool::panic_threshold`].
pub const DEFAULT_PANIC_THRESHOLD: u8 = 50;

/// Where a consistent-hash pool reads the request key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// A request header (name in lower case).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The client's IP address.
    ClientIp,
    /// The request path (without the query).
    Path,
}

impl std::fmt::Display for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
            HashKey::ClientIp => f.write_str("client_ip"),
            HashKey::Path => f.write_str("path"),
        }
    }
}

/// `timeouts = { ... }`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a TCP connection to a backend. Default: 1 s.
    pub connect: Duration,
    /// The whole request, all tries included, until the response head. Default: 30 s.
    pub request: Duration,
    /// An idle upstream keep-alive connection is closed after this. Default: 60 s.
    pub idle: Duration,
    /// One try, connect included, until the response head; counted from when the
    /// request body has been sent. Default: 30 s.
    pub per_try: Duration,
    /// The longest a request or response body may make no progress (no byte moved)
    /// while it flows, in either direction. Default: 30 s.
    pub body_idle: Duration,
    /// An upgraded connection (a WebSocket tunnel) in which no byte moves either way
    /// for this long is closed. Default: 1 h.
    pub tunnel_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            per_try: Duration::from_secs(30),
            body_idle: Duration::from_secs(30),
            tunnel_idle: Duration::from_secs(3600),
        }
    }
}

/// `retries = { ... }`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retries {
    /// Retries after the first try (0: never retry). Default: 1.
    pub attempts: u32,
    /// Retries may be at most this percent of requests over a window. Default: 20.
    pub budget_percent: u8,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 1,
            budget_percent: 20,
        }
    }
}

/// `limits = { ... }`, per backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections to one backend at once. Default: 1,000. In an HTTP/1 pool every
    /// request in flight holds one, so this is also the backend's request limit; in
    /// an HTTP/2 pool it bounds the connections the streams share.
    pub max_connections: u32,
    /// HTTP/2 pools: streams (requests) in flight to one backend at once, over all its
    /// connections. Default: 1,000, the same concurrency an HTTP/1 pool's
    /// `max_connections` allows.
    pub max_streams: u32,
    /// Requests waiting for a connection to one backend. Default: 100.
    pub max_pending: u32,
    /// Bytes of a request body read before a backend is picked, and of a response
    /// body read ahead of the client, so a slow client holds no backend connection
    /// (0: stream both as they come). Default: 65,536.
    pub body_buffer: u32,
    /// Bytes of a response body kept in a temporary file, beyond `body_buffer`, while
    /// a client reads slower than the backend sends (NGINX's
    /// `proxy_max_temp_file_size`; 0: none). Default: 1 GiB.
    pub body_spill: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1000,
            max_streams: 1000,
            max_pending: 100,
            body_buffer: 64 * 1024,
            body_spill: 1024 * 1024 * 1024,
        }
    }
}

/// One backend of a pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    /// The address as written (`host:port`): the backend's identity in status, metrics
    /// and the admin API.
    pub address: String,
    /// The address resolved when the config was loaded.
    pub socket_addr: SocketAddr,
    /// Share of traffic relative to the pool's other backends (0: none). Default: 1.
    pub weight: u32,
    /// Relative capacity, the operator's statement of how much it can take. Default: 1.
    pub capacity: f64,
    /// Where the backend is written.
    pub span: Span,
    /// Where its weight is written (the backend's span when omitted).
    pub weight_span: Span,
    /// In a pool with `tls`: the name its certificate is verified against, sent as SNI
    /// unless it is an IP address — the pool's `tls.sni`, else the host as written in
    /// `address`. `None`: the pool has no `tls`.
    pub tls_name: Option<pki_types::ServerName<'static>>,
}

/// Default for [`Backend::weight`].
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest weight accepted.
pub const MAX_WEIGHT: u32 = 10_000;
/// Default for [`Backend::capacity`].
pub const DEFAULT_CAPACITY: f64 = 1.0;

/// `[pool.NAME.health]`: the active health check.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    /// What a probe does.
    pub probe: Probe,
    /// Time between probes of one backend, each jittered by up to 10%. Default: 2 s.
    pub interval: Duration,
    /// A probe that takes longer has failed. Default: 1 s.
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy backend healthy. Default: 2.
    pub healthy_after: u32,
    /// Consecutive failures that make a healthy backend unhealthy. Default: 3.
    pub unhealthy_after: u32,
    /// Where the section is written.
    pub span: Span,
}

/// What a health probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP request whose status must fall in `expect_status`.
    Http {
        /// Request method. Default: GET.
        method: String,
        /// Request path. Default: `/healthz`.
        path: String,
        /// Host header; default: the backend's address.
        host: Option<String>,
        /// Accepted statuses. Default: 200-399.
        expect_status: RangeInclusive<u16>,
    },
    /// A TCP connect.
    Tcp,
    /// A gRPC health check (`grpc.health.v1.Health/Check`) over HTTP/2, which passes
    /// when the backend answers `SERVING`.
    Grpc {
        /// The service asked about; empty: the server as a whole. Default: empty.
        service: String,
    },
}

/// Defaults of the health check.
pub mod health_defaults {
    use std::time::Duration;
    /// Default probe path.
    pub const PATH: &str = "/healthz";
    /// Default probe method.
    pub const METHOD: &str = "GET";
    /// Default accepted statuses.
    pub const EXPECT_STATUS: std::ops::RangeInclusive<u16> = 200..=399;
    /// Default probe interval.
    pub const INTERVAL: Duration = Duration::from_secs(2);
    /// Default probe timeout.
    pub const TIMEOUT: Duration = Duration::from_secs(1);
    /// Default `healthy_after`.
    pub const HEALTHY_AFTER: u32 = 2;
    /// Default `unhealthy_after`.
    pub const UNHEALTHY_AFTER: u32 = 3;
}

/// `[pool.NAME.outlier]`: passive health checks from live traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outlier {
    /// Consecutive failures (connect errors, resets, 5xx) that eject a backend
    /// (0: passive checks off). Default: 5.
    pub consecutive_failures: u32,
    /// Base ejection time, multiplied by the number of ejections so far. Default: 30 s.
    pub ejection: Duration,
    /// Cap on one ejection's time. Default: 300 s.
    pub max_ejection: Duration,
    /// At most this percent of a pool's backends ejected at once. Default: 50.
    pub max_ejected_percent: u8,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// `[guard]`: what the watch after an apply, and the alarms, hold the traffic to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guard {
    /// How long to watch after every applied change. Default: 60 s.
    pub watch: Duration,
    /// Requests needed in a window before it is judged. Default: 200.
    pub min_requests: u64,
    /// Largest acceptable ratio of 5xx and connection errors to requests. Default: 0.02.
    pub max_error_rate: f64,
    /// Largest acceptable p99 latency after / before. Default: 2.0.
    pub max_latency_ratio: f64,
    /// A p99 latency rise smaller than this never breaches, whatever the ratio (a p99
    /// of 4 ms becoming 10 ms is noise, not an outage). Default: 25 ms.
    pub latency_floor: Duration,
    /// The slow-backend alarm: a backend whose p99 latency is above this many times the
    /// median p99 of the other backends of its pool (and above it by at least
    /// `latency_floor`). Default: 3.0.
    pub max_backend_latency_ratio: f64,
    /// Largest acceptable pool skew. Default: 0.25.
    pub max_skew: f64,
    /// Largest acceptable backend load ratio (observed share / capacity share). Default: 2.0.
    pub max_load_ratio: f64,
    /// Largest acceptable share after / before for a backend. Default: 2.0.
    pub max_shift: f64,
    /// Whether applies refuse lint warnings too. Default: false.
    pub deny_warnings: bool,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            watch: Duration::from_secs(60),
            min_requests: 200,
            max_error_rate: 0.02,
            max_latency_ratio: 2.0,
            latency_floor: DEFAULT_LATENCY_FLOOR,
            max_backend_latency_ratio: 3.0,
            max_skew: 0.25,
            max_load_ratio: 2.0,
            max_shift: 2.0,
            deny_warnings: false,
        }
    }
}

/// Default for [`Guard::latency_floor`].
pub const DEFAULT_LATENCY_FLOOR: Duration = Duration::from_millis(25);

/// One `[lint.allow]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LintAllow {
    /// The silenced rule.
    pub rule: String,
    /// Why, printed with every finding of that rule.
    pub reason: String,
}

/// `[alerts]`
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alerts {
    /// URL that alarms are POSTed to as JSON.
    pub webhook: Option<String>,
}
