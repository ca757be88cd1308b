//! Forwarding one request: route it, pick a backend, send it on a pooled connection,
//! stream the response back.
//!
//! Bodies are streamed both ways, never buffered whole: the client's request body is
//! handed to the upstream connection as it arrives, and the response body is a
//! [`Streamed`] wrapper around the backend's that returns the connection to the pool
//! once the body has been read to its end (a body dropped half-read closes it).
//!
//! A pooled connection the backend has just closed is the classic keep-alive race: a
//! try on one that fails with nothing of the request written
//! ([`h1::Progress::Unwritten`]), or — for an idempotent request without a body — with
//! no byte answered ([`h1::Progress::Unanswered`]), goes out once more on a new
//! connection.

use std::convert::Infallible;
use std::future::{poll_fn, Future as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Uri;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::budget::ByteBudget;
use super::errors::Refusal;
use super::grpc;
use super::h1::{self, Framing, Progress, RequestBody};
use super::h2::connections::H2Connections;
use super::h2::exchange::{BoxError, Relayed};
use super::h2::forward::H2Request;
use super::headers::{self, RequestFields};
use super::read_ahead::{read_ahead, ReadAhead, ReadingAhead};
use super::spill::Spill;
use super::stall::Stall;
use super::tls::ClientTls;
use super::tunnel::{Tunnel, TunnelPermit, TunnelTerms};
use super::upstream::{self, UpstreamPool};
use crate::balance::{key_hash, InFlight};
use crate::config::HashKey;
use crate::health;
use crate::runtime::{BackendRuntime, NoBackend, PoolRuntime, Runtime, Snapshot};

/// The body of every response evenkeel sends.
// Not boxed: the HTTP/1 variant is nearly every response, and a box would cost it an
// allocation (the `Either` this replaced had the same layout).
#[allow(clippy::large_enum_variant)]
pub enum ProxyBody {
    /// An HTTP/1 backend's, streamed from its connection.
    Streamed(Streamed),
    /// An HTTP/2 backend's, relayed from its stream (trailers included).
    Relayed(Relayed),
    /// Evenkeel's own (a refusal, a redirect).
    Own(Full<Bytes>),
}

impl ProxyBody {
    /// The tunnel a 101 opened ([`Streamed::take_tunnel`]).
    pub fn take_tunnel(&mut self) -> Option<Tunnel> {
        match self {
            ProxyBody::Streamed(streamed) => streamed.take_tunnel(),
            _ => None,
        }
    }

    /// The backend's fields as it sent them ([`Streamed::take_fields`]).
    pub fn take_fields(&mut self) -> Option<h1::Fields> {
        match self {
            ProxyBody::Streamed(streamed) => streamed.take_fields(),
            _ => None,
        }
    }

    /// How far to read ahead of a slow client, and where the overflow may wait
    /// ([`Streamed::read_ahead`], [`Streamed::spill`]); `None`: not at all (an
    /// HTTP/2 stream's window bounds what the backend sends ahead).
    pub fn read_ahead(&self) -> Option<(usize, Spill)> {
        match self {
            ProxyBody::Streamed(streamed) => Some((streamed.read_ahead(), streamed.spill())),
            _ => None,
        }
    }

    /// What an HTTP/1 client's side wrote of this body ([`Streamed::record_sent`]).
    pub fn record_sent(&mut self, bytes: u64, complete: bool) {
        if let ProxyBody::Streamed(streamed) = self {
            streamed.record_sent(bytes, complete);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Streamed(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Relayed(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Own(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Streamed(b) => b.is_end_stream(),
            ProxyBody::Relayed(b) => b.is_end_stream(),
            ProxyBody::Own(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Streamed(b) => b.size_hint(),
            ProxyBody::Relayed(b) => b.size_hint(),
            ProxyBody::Own(b) => b.size_hint(),
        }
    }
}

/// The client end of a connection, as every request on it needs it.
pub struct Client {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its IP as an `X-Forwarded-For` value, made once per connection.
    pub(super) forwarded_for: HeaderValue,
    /// The connection's TLS session; `None`: plain HTTP.
    pub tls: Option<ClientTls>,
}

impl Client {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            forwarded_for: headers::client_value(addr.ip()),
            tls: None,
        }
    }

    /// The same client, over TLS.
    pub fn with_tls(self, tls: ClientTls) -> Client {
        Client {
            tls: Some(tls),
            ..self
        }
    }
}

/// What one worker thread needs to forward requests.
pub struct Worker {
    /// The live configuration.
    pub runtime: Arc<Runtime>,
    /// This worker's upstream connections.
    pub upstream: UpstreamPool,
    /// This worker's HTTP/2 connections to backends.
    pub h2: H2Connections,
    /// Whether to write an access-log line per request.
    pub access_log: bool,
    /// Bytes of request bodies this worker may hold read ahead at once, over all its
    /// connections and streams ([`super::budget::READ_AHEAD_BUDGET`]).
    pub read_ahead: Rc<ByteBudget>,
    /// Bytes of responses this worker may keep in temporary files at once
    /// ([`super::budget::SPILL_BUDGET`]).
    pub spill: Rc<ByteBudget>,
    /// The address each listener is bound to (port 0 resolved), in config order.
    pub bound: Vec<SocketAddr>,
}

/// The request id a client may send, logged when it is plain ([`super::access::is_plain_id`]).
const X_REQUEST_ID: &str = "x-request-id";
/// The largest request, head and body, sent in one write ([`h1::Outgoing::with_body`]):
/// one TLS record at most (a failed write over TLS then cannot have sent part of it
/// unseen), and within a socket's first send buffer (16 KiB on Linux), so the write is
/// not left waiting while the backend answers early (a 413), which the write of a body
/// sent apart watches for.
const INLINE_WRITE: u64 = 16 * 1024;
/// Room kept in [`INLINE_WRITE`] for the head to change when it is encoded again for
/// another backend (its address as `Host`).
const ANOTHER_HOST: u64 = 512;

/// A request as the access log records it: cheap clones only (the URI, names and
/// client are reference-counted), formatted into the worker's log buffer when it ends.
/// Boxed where it is carried, so requests pay one pointer for it while the log is off.
pub(super) struct AccessRecord {
    method: Method,
    uri: Uri,
    /// The client's `X-Request-Id`, when it is plain enough to log.
    id: Option<HeaderValue>,
    client: Rc<Client>,
    status: u16,
    route: Option<Arc<str>>,
    pool: Option<Arc<PoolRuntime>>,
    backend: Option<Arc<BackendRuntime>>,
    tries: u32,
    bytes_out: u64,
    start: Instant,
    /// The last try's time to its response head.
    upstream: Option<Duration>,
    /// The response broke off after it had begun.
    aborted: bool,
    /// A gRPC call's `grpc-status`, once known.
    grpc_status: Option<u32>,
}

impl AccessRecord {
    /// Counts `bytes` more sent to the client (a tunnel's, after its 101).
    pub(super) fn add_bytes_out(&mut self, bytes: u64) {
        self.bytes_out += bytes;
    }

    /// Marks the exchange as broken off (a tunnel that failed).
    pub(super) fn mark_aborted(&mut self) {
        self.aborted = true;
    }

    /// The record of a TCP listener's connection from `client` (`method=TCP`,
    /// `path=/`): its status and backend are filled in as it goes.
    pub(super) fn connection(
        client: Rc<Client>,
        route: &Arc<str>,
        pool: &Arc<PoolRuntime>,
        start: Instant,
    ) -> AccessRecord {
        AccessRecord {
            method: Method::from_bytes(b"TCP").unwrap_or(Method::GET),
            uri: Uri::from_static("/"),
            id: None,
            client,
            status: 499,
            route: Some(Arc::clone(route)),
            pool: Some(Arc::clone(pool)),
            backend: None,
            tries: 0,
            bytes_out: 0,
            start,
            upstream: None,
            aborted: false,
            grpc_status: None,
        }
    }

    /// A gRPC call's `grpc-status` (from its trailers, or a Trailers-Only answer).
    pub(super) fn grpc_status(&mut self, code: Option<u32>) {
        self.grpc_status = code;
    }

    /// A try went to `backend`.
    pub(super) fn tried(&mut self, backend: &Arc<BackendRuntime>) {
        self.tries += 1;
        self.backend = Some(Arc::clone(backend));
    }

    /// The answer: `status`, and the time to it from the last try's start.
    pub(super) fn answered_with(&mut self, status: u16, upstream: Option<Duration>) {
        self.status = status;
        self.upstream = upstream;
    }

    /// Records a response evenkeel made itself (a refusal, a redirect): its status, and
    /// its body's size unless the request was a `HEAD`, which gets no body.
    pub(super) fn answered<B: Body>(&mut self, response: &Response<B>) {
        self.status = response.status().as_u16();
        self.grpc_status = grpc::status(response.headers());
        self.bytes_out = if self.method == Method::HEAD {
            0
        } else {
            response.body().size_hint().exact().unwrap_or(0)
        };
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        super::access::line(&super::access::Entry {
            id: self.id.as_ref().and_then(|id| id.to_str().ok()),
            client: self.client.addr,
            method: &self.method,
            path: self.uri.path(),
            status: self.status,
            route: self.route.as_deref(),
            pool: self.pool.as_ref().map(|p| p.name.as_str()),
            backend: self.backend.as_ref().map(|b| b.address.as_str()),
            tries: self.tries,
            bytes_out: self.bytes_out,
            duration: self.start.elapsed(),
            upstream: self.upstream,
            tls: self.client.tls.as_ref().and_then(|t| t.version),
            aborted: self.aborted,
            grpc_status: self.grpc_status,
        });
    }
}

impl Worker {
    /// Serves one request from `client` that arrived on listener number `listener`;
    /// `fields_sent`: an HTTP/1 request's fields as the client sent them (its header map is
    /// then empty); `asks_upgrade`: it has an `Upgrade` field (known from reading its
    /// head, so the other requests look for none).
    pub async fn handle<B: RequestBody + 'static>(
        self: Rc<Self>,
        request: Request<B>,
        fields_sent: Option<h1::Fields>,
        listener: usize,
        client: Rc<Client>,
        asks_upgrade: bool,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let start = Instant::now();
        let fields_as_sent = request.version() != http::Version::HTTP_2;
        let (parts, body) = request.into_parts();
        let fields = match &fields_sent {
            Some(sent) => RequestFields::Sent(sent),
            None => RequestFields::Map(&parts.headers),
        };
        let snapshot = self.runtime.snapshot();
        let record = |route: Option<&Arc<str>>,
                      pool: Option<&Arc<PoolRuntime>>,
                      backend: Option<&Arc<BackendRuntime>>,
                      status: u16| {
            self.access_log.then(|| {
                Box::new(AccessRecord {
                    method: parts.method.clone(),
                    uri: parts.uri.clone(),
                    id: fields
                        .value(X_REQUEST_ID)
                        .filter(|id| super::access::is_plain_id(id.as_bytes())),
                    client: Rc::clone(&client),
                    status,
                    route: route.cloned(),
                    pool: pool.cloned(),
                    backend: backend.cloned(),
                    tries: 0,
                    bytes_out: 0,
                    start,
                    upstream: None,
                    aborted: false,
                    grpc_status: None,
                })
            })
        };
        // gRPC clients get evenkeel's own errors as gRPC statuses. gRPC runs over HTTP/2
        // only, so HTTP/1 requests skip the look at their content type.
        let grpc = !fields_as_sent && grpc::is_grpc(&parts.headers);
        let refuse =
            |refusal: Refusal, route: Option<&Arc<str>>, pool: Option<&Arc<PoolRuntime>>| {
                let pool_name = pool.map(|p| p.name.as_str());
                let response = if grpc {
                    grpc::refusal_response(refusal, pool_name)
                } else {
                    refusal.response(pool_name)
                };
                if let Some(mut log) = record(route, pool, None, response.status().as_u16()) {
                    log.bytes_out = response.body().size_hint().exact().unwrap_or(0);
                    log.grpc_status = grpc::status(response.headers());
                }
                Ok(response.map(ProxyBody::Own))
            };

        let on = snapshot.config.listeners.get(listener);
        if on.is_some_and(|l| l.redirect_https) {
            return match self.redirect_https(&parts, fields, &snapshot) {
                Some(response) => {
                    if let Some(mut log) = record(None, None, None, 0) {
                        log.answered(&response);
                    }
                    Ok(response)
                }
                None => refuse(Refusal::NoHostToRedirect, None, None),
            };
        }
        let upgrade = asks_upgrade.then(|| upgrade_of(&parts, fields)).flatten();
        if let Some(refusal) = answered_here(&parts, fields, upgrade.as_ref()) {
            return refuse(refusal, None, None);
        }
        let host = request_host(&parts, fields);
        // Routing matches the host as written; a backend reading `a@b` (an HTTP/2
        // `:authority`, a URL parser) could take it for `b`.
        if host.as_ref().is_some_and(|h| h.as_bytes().contains(&b'@')) {
            return refuse(Refusal::HostWithUserinfo, None, None);
        }
        let host_name = host.as_ref().and_then(|h| h.to_str().ok()).map(strip_port);
        if let Some(tls) = &client.tls {
            // A host that cannot be read as text cannot be checked against the
            // certificate either: with SNI, it is misdirected too.
            let misdirected = match host_name {
                Some(host) => !tls.may_serve(host),
                None => host.is_some() && tls.server_name.is_some(),
            };
            if misdirected {
                return refuse(Refusal::Misdirected, None, None);
            }
        }
        let Some((routed, route)) =
            snapshot.route_with_label(listener, host_name, parts.uri.path())
        else {
            return refuse(Refusal::NoRoute, None, None);
        };
        // An upgrade counts against its listener's tunnels from here, should it switch.
        let permit = match (&upgrade, on) {
            (Some(_), Some(on)) => {
                match TunnelPermit::take(&self.runtime, listener, on.max_tunnels) {
                    Some(permit) => Some(permit),
                    None => {
                        routed
                            .stats
                            .record(Refusal::TooManyTunnels.status().as_u16());
                        return refuse(Refusal::TooManyTunnels, Some(route), Some(routed));
                    }
                }
            }
            _ => None,
        };
        // A body that fits the pool's buffer is read whole before a backend is picked,
        // so a client that sends it slowly holds no backend connection meanwhile.
        let has_body = !body.is_end_stream();
        // A gRPC call to an HTTP/2 pool streams its messages as they come (a client
        // stream, a bidirectional call), never held back until the body ends.
        let body = if !has_body || (grpc && routed.config.protocol.is_http2()) {
            ReadAhead::empty(body)
        } else {
            let reading = ReadingAhead {
                limit: routed.config.limits.body_buffer as usize,
                body_idle: routed.config.timeouts.body_idle,
                until: Instant::now() + routed.config.timeouts.request,
                budget: &self.read_ahead,
            };
            // Boxed: most requests have no body, and a future this size carried in
            // every request's state costs copies (measured with callgrind).
            match Box::pin(read_ahead(body, reading)).await {
                Ok(body) => body,
                Err(refusal) => return refuse(refusal, Some(route), Some(routed)),
            }
        };
        let mut pool = snapshot.serving(routed);
        // The time the client took to send a buffered body does not count.
        let routed_at = if has_body { Instant::now() } else { start };
        let mut deadline = routed_at + pool.timeouts.request;
        // The health time for the pool's records of the request before a try (its count
        // in the retry budget, the first pick): one clock reading serves them all. Not
        // `start`: reading a body may have taken seconds.
        let routed_health = health::at(routed_at.into_std());
        // A gRPC call's own deadline, when it is the earlier.
        let client_deadline = grpc
            .then(|| grpc::timeout(&parts.headers))
            .flatten()
            .map(|timeout| start + timeout)
            .filter(|&at| at < deadline);
        if let Some(at) = client_deadline {
            deadline = at;
        }
        let mut hops = 0;
        let (mut backend, key) = loop {
            let key = pool
                .hash_key
                .as_ref()
                .and_then(|k| request_key(k, &parts, fields, client.addr))
                .map(|k| key_hash(&k));
            // A backup pool's turn may come after a wait for a free slot: read again.
            let now = if hops == 0 {
                routed_health
            } else {
                health::now()
            };
            pool.budget.record_request(now);
            match self.first_backend(pool, key, deadline, now).await {
                Ok(backend) => break (backend, key),
                // The health thread fails a pool over moments after it loses its last
                // usable backend; until then, go to the backup directly.
                Err(Refusal::NoBackend) if hops < snapshot.pools.len() => {
                    match pool.backup.and_then(|b| snapshot.pools.get(b)) {
                        Some(backup) => {
                            pool = backup;
                            hops += 1;
                        }
                        None => {
                            routed.stats.record(Refusal::NoBackend.status().as_u16());
                            return refuse(Refusal::NoBackend, Some(route), Some(routed));
                        }
                    }
                }
                Err(refusal) => {
                    pool.stats.record(refusal.status().as_u16());
                    return refuse(refusal, Some(route), Some(routed));
                }
            }
        };
        // 499 (NGINX's "client closed request") unless the request gets further.
        let mut log = record(Some(route), Some(pool), Some(&backend.runtime), 499);
        // A request that may go out again after it was sent: its head is kept encoded,
        // and it has no body to lose.
        let replayable = is_idempotent(&parts.method) && !has_body;
        let framing = h1::BodyFraming::of(fields, &body);
        if pool.config.protocol.is_http2() {
            // An HTTP/1 request's fields, as a header map for the HTTP/2 stream.
            let mapped = match &fields_sent {
                Some(sent) => match sent.to_header_map() {
                    Ok(headers) => {
                        let (mut mapped, ()) = Request::new(()).into_parts();
                        mapped.method = parts.method.clone();
                        mapped.uri = parts.uri.clone();
                        mapped.version = parts.version;
                        mapped.headers = headers;
                        Some(mapped)
                    }
                    Err(_) => return refuse(Refusal::BadTarget, Some(route), Some(routed)),
                },
                None => None,
            };
            return Ok(self
                .forward_h2(H2Request {
                    parts: mapped.as_ref().unwrap_or(&parts),
                    body: has_body.then_some(body),
                    length: match framing {
                        h1::BodyFraming::Length(length) => Some(length),
                        _ => None,
                    },
                    pool,
                    backend,
                    key,
                    deadline,
                    log,
                    client: &client,
                    host: host.as_ref(),
                    grpc,
                    client_deadline,
                    upgrade: upgrade.is_some(),
                    replayable,
                })
                .await);
        }
        let encode_head = |backend: &BackendRuntime| {
            h1::encode(
                &parts,
                fields,
                framing,
                h1::Sender {
                    address: &client.forwarded_for,
                    https: client.tls.is_some(),
                },
                host.as_ref(),
                // As the health probe: the TLS name when there is one.
                backend
                    .tls
                    .as_ref()
                    .map_or(backend.address.as_str(), |t| t.host(&backend.address)),
                upgrade.as_ref(),
            )
        };
        // A small request read whole goes out in one write, its body behind its head
        // (one system call where two were: 16.6 µs of CPU per 8 KiB upload where 18.7,
        // bench/uploads.sh), when both fit [`INLINE_WRITE`].
        let mut body = body;
        let mut outgoing = encode_head(&backend.runtime);
        let mut inline = None;
        // The read-ahead bytes stay counted in the worker's budget while they are sent.
        let mut _held = None;
        if let h1::BodyFraming::Length(_) = framing {
            let head = outgoing.head.len() as u64;
            let fits = |length| head + length + ANOTHER_HOST <= INLINE_WRITE;
            if let Some((pieces, reserved)) = body.take_whole_if(fits) {
                outgoing = outgoing.with_body(&pieces);
                _held = reserved;
                // Kept only to encode the request again for another backend.
                inline = host.is_none().then_some(pieces);
            }
        }
        let encode = |backend: &BackendRuntime| match &inline {
            Some(pieces) => encode_head(backend).with_body(pieces),
            None => encode_head(backend),
        };
        // The client's body, until a try starts sending it.
        let mut body = (has_body && !outgoing.has_inline_body()).then_some(body);
        let mut tried = Tried::default();
        let mut attempt = 0;
        let mut permit = permit;
        let failure = loop {
            let slot = tried.begin(pool, &backend, &mut log);
            let try_start = Instant::now();
            let limits = h1::Limits {
                head: (try_start + pool.timeouts.per_try).min(deadline),
                body_idle: pool.timeouts.body_idle,
            };
            let sent = self
                .send(
                    pool,
                    &backend.runtime,
                    &outgoing,
                    &mut body,
                    replayable,
                    limits,
                )
                .await;
            // May this failure be retried on another backend, and on which?
            let retry = |sent: bool| {
                let eligible = (!sent || replayable) && Instant::now() < deadline;
                next_try(pool, eligible, attempt, key, &tried)
            };
            let (refusal, next) = match sent {
                Ok((response, connection, first, head_at)) => {
                    let status = response.status.as_u16();
                    let latency = head_at.saturating_duration_since(try_start);
                    backend.runtime.stats.record_status(status);
                    backend.runtime.stats.latency.record(latency);
                    pool.record(
                        &backend.runtime,
                        status < 500,
                        health::at(head_at.into_std()),
                        &self.runtime.events,
                    );
                    let next = matches!(status, 502..=504).then(|| retry(true)).flatten();
                    match next {
                        Some(next) => (Refusal::BadGateway, next),
                        None => {
                            if let Some(log) = log.as_mut() {
                                log.status = status;
                                log.upstream = Some(latency);
                            }
                            pool.stats.record(status);
                            // A 101 answers only an upgrade, to a protocol it offered.
                            let tunnel = match permit.take() {
                                Some(permit) if status == 101 => Some(Box::new(TunnelTerms {
                                    permit: Some(permit),
                                    idle: pool.timeouts.tunnel_idle,
                                    drain_timeout: snapshot.config.drain_timeout,
                                    backend: Arc::clone(&backend.runtime),
                                })),
                                _ => None,
                            };
                            return Ok(self.stream(
                                response,
                                connection,
                                first,
                                Streaming {
                                    pool,
                                    backend: &backend.runtime,
                                    slot,
                                    log,
                                    fields_as_sent,
                                    tunnel,
                                },
                            ));
                        }
                    }
                }
                // The client's own failure (its body broke or stopped): not the backend's
                // fault, and nothing to retry.
                Err(failure) if failure.clients().is_some() => {
                    break failure.clients().unwrap_or(Refusal::BadRequestBody);
                }
                Err(failure) => {
                    count_failure(&self.runtime, pool, &backend.runtime, &failure.cause);
                    let refusal = match failure.cause {
                        TryError::Timeout => Refusal::Timeout,
                        _ => Refusal::BadGateway,
                    };
                    match retry(failure.sent) {
                        Some(next) => (refusal, next),
                        None => break refusal,
                    }
                }
            };
            count_retry(pool, &backend.runtime, next, refusal);
            drop(slot);
            attempt += 1;
            backend = Picked::of(next);
            if host.is_none() {
                // Its Host is the backend's own address.
                outgoing = encode(&backend.runtime);
            }
        };
        pool.stats.record(failure.status().as_u16());
        refuse_logged(log, failure, &pool.name, grpc)
    }

    /// The first backend for a request: a usable one under its connection limit, or —
    /// while every usable backend is at `limits.max_connections` — one that frees a
    /// slot before `deadline`, if fewer than `limits.max_pending` requests per backend
    /// already wait; else a fast 503. `now`: the health time (`health::now`) to pick
    /// at first.
    pub(super) async fn first_backend(
        &self,
        pool: &Arc<PoolRuntime>,
        key: Option<u64>,
        deadline: Instant,
        mut now: Duration,
    ) -> Result<Picked, Refusal> {
        loop {
            match pool.pick(key, &[], now) {
                Ok(backend) => return Ok(Picked::of(backend)),
                Err(NoBackend::Unusable) => return Err(Refusal::NoBackend),
                Err(NoBackend::Full) => {
                    let limit = pool.config.limits.max_pending as usize * pool.backends.len();
                    let waiting = pool.waiting.fetch_add(1, Ordering::Relaxed) as usize;
                    let _waiter = Waiter(pool);
                    if waiting >= limit || Instant::now() >= deadline {
                        return Err(Refusal::Overloaded);
                    }
                    // Woken when a request of the pool ends; re-check at least every 50 ms.
                    let nap = deadline
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(50));
                    let _ = tokio::time::timeout(nap, pool.slot_freed.notified()).await;
                    now = health::now();
                }
            }
        }
    }

    /// The response to the client, its body read from `connection` as it is sent.
    /// HTTP/1 clients get the backend's fields as they were sent (in the body, see
    /// [`Streamed::take_fields`]); HTTP/2 clients a header map, or a 502 if a field
    /// cannot be one.
    fn stream(
        self: &Rc<Self>,
        head: h1::ResponseHead,
        connection: h1::Connection,
        first: Option<Bytes>,
        streaming: Streaming<'_>,
    ) -> Response<ProxyBody> {
        let Streaming {
            pool,
            backend,
            slot,
            log,
            fields_as_sent,
            tunnel,
        } = streaming;
        let (fields, headers) = if fields_as_sent {
            (Some(head.fields), http::HeaderMap::new())
        } else {
            match head.fields.to_header_map() {
                Ok(headers) => (None, headers),
                Err(error) => {
                    tracing::debug!(pool = %pool.name, %error, "response fields unfit for HTTP/2");
                    let response = Refusal::BadGateway.response(Some(&pool.name));
                    if let Some(mut log) = log {
                        log.answered(&response);
                    }
                    return response.map(ProxyBody::Own);
                }
            }
        };
        let mut body = Streamed {
            first,
            connection: Some(connection),
            framing: head.framing,
            fields,
            stall: Stall::new(pool.timeouts.body_idle),
            read_ahead: pool.config.limits.body_buffer as usize,
            spill_limit: pool.config.limits.body_spill,
            spill_budget: Rc::clone(&self.spill),
            release: head.keep_alive.then(|| Release {
                worker: Rc::clone(self),
                key: upstream::Key::new(backend.socket_addr, backend.tls.as_ref()),
                idle_timeout: pool.timeouts.idle,
            }),
            slot: Some(slot),
            log,
            tunnel,
        };
        if body.framing == Framing::Done && body.tunnel.is_none() {
            // Read whole with its head: the connection is free before the client has a byte.
            body.finish();
        }
        let mut response = Response::new(ProxyBody::Streamed(body));
        *response.status_mut() = head.status;
        *response.headers_mut() = headers;
        response
    }

    /// Sends the request to `backend` on a pooled connection, or a new one when the
    /// pool has none or the pooled one turned out closed by the backend (nothing
    /// written, or — for a request that may be sent twice — no byte answered: the
    /// keep-alive race, where the backend closed the idle connection as the request
    /// went out). `body` is taken once a try starts sending it. Returns the response
    /// head with the first piece of its body, when it follows at once (see
    /// [`first_piece`]), and when the head came (the backend's latency ends there,
    /// not after the wait for the first piece).
    async fn send<B: RequestBody>(
        &self,
        pool: &PoolRuntime,
        backend: &BackendRuntime,
        outgoing: &h1::Outgoing,
        body: &mut Option<B>,
        replayable: bool,
        limits: h1::Limits,
    ) -> Result<(h1::ResponseHead, h1::Connection, Option<Bytes>, Instant), TryFailure> {
        let addr = backend.socket_addr;
        let (mut head, mut connection) = 'connection: {
            let key = upstream::Key::new(addr, backend.tls.as_ref());
            if let Some(mut connection) = self.upstream.checkout(key) {
                match connection.exchange(outgoing, body, limits).await {
                    Ok(head) => break 'connection (head, connection),
                    Err(failure)
                        if !matches!(failure.error, h1::Error::TimedOut)
                            && (failure.progress == Progress::Unwritten
                                || (failure.progress == Progress::Unanswered && replayable)) =>
                    {
                        tracing::debug!(%addr, error = %failure.error, "pooled connection closed; new one");
                    }
                    Err(failure) => return Err(TryFailure::exchange(failure)),
                }
            }
            let open = &self.runtime.upstream_connections;
            let connect_limit = pool
                .timeouts
                .connect
                .min(limits.head.saturating_duration_since(Instant::now()));
            let mut connection = upstream::connect(addr, backend.tls.as_ref(), connect_limit, open)
                .await
                .map_err(|e| TryFailure::new(false, e))?;
            let head = connection
                .exchange(outgoing, body, limits)
                .await
                .map_err(TryFailure::exchange)?;
            (head, connection)
        };
        let head_at = Instant::now();
        let first = first_piece(&mut connection, &mut head.framing)
            .await
            .map_err(|error| TryFailure::new(true, error))?;
        Ok((head, connection, first, head_at))
    }
}

/// How long a response's head waits for the first piece of its body.
const FIRST_PIECE_GRACE: Duration = Duration::from_millis(250);

/// The first piece of a response body, if it comes within [`FIRST_PIECE_GRACE`]
/// (`None`: the body is empty, or has not begun yet — a long poll, an event stream).
/// A backend that closes or breaks in that time has failed the try: the client gets a
/// 502 (or a retry) rather than a head with nothing behind it.
async fn first_piece(
    connection: &mut h1::Connection,
    framing: &mut Framing,
) -> Result<Option<Bytes>, TryError> {
    if *framing == Framing::Done {
        return Ok(None);
    }
    // The timer is made only if the body is not at hand already (it mostly is).
    let mut grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
    poll_fn(|cx| match connection.poll_body(framing, cx) {
        Poll::Ready(None) => Poll::Ready(Ok(None)),
        Poll::Ready(Some(Ok(data))) => Poll::Ready(Ok(Some(data))),
        Poll::Ready(Some(Err(error))) => Poll::Ready(Err(error.into())),
        Poll::Pending => {
            let grace =
                grace.get_or_insert_with(|| Box::pin(tokio::time::sleep(FIRST_PIECE_GRACE)));
            ready!(grace.as_mut().poll(cx));
            Poll::Ready(Ok(None))
        }
    })
    .await
}

/// The backend chosen for a try, with its position in the pool.
pub(super) struct Picked {
    pub(super) index: usize,
    pub(super) runtime: Arc<BackendRuntime>,
}

impl Picked {
    pub(super) fn of(backend: &Arc<BackendRuntime>) -> Picked {
        Picked {
            index: backend.index,
            runtime: Arc::clone(backend),
        }
    }
}

/// Backends already tried for a request (at most 1 + the 10 retries config allows).
#[derive(Default)]
pub(super) struct Tried {
    indexes: [usize; 11],
    len: usize,
}

impl Tried {
    /// Starts a try on `backend` for `pool`: it is counted here, in the access
    /// record's tries, in the backend's requests; the returned slot holds its place in
    /// flight. Shared by HTTP/1, HTTP/2 and TCP tries.
    pub(super) fn begin(
        &mut self,
        pool: &Arc<PoolRuntime>,
        backend: &Picked,
        log: &mut Option<Box<AccessRecord>>,
    ) -> Slot {
        self.push(backend.index);
        if let Some(log) = log.as_mut() {
            log.tried(&backend.runtime);
        }
        backend
            .runtime
            .stats
            .requests
            .fetch_add(1, Ordering::Relaxed);
        Slot::take(pool, &backend.runtime)
    }

    fn push(&mut self, index: usize) {
        if self.len < self.indexes.len() {
            self.indexes[self.len] = index;
            self.len += 1;
        }
    }

    pub(super) fn as_slice(&self) -> &[usize] {
        &self.indexes[..self.len]
    }
}

/// The backend to try next after `attempt` retries, for a request that `eligible` may
/// go again: if the pool's `retries.attempts` allow one more, its retry budget has room
/// (else that is counted) and a backend not yet `tried` is usable. Shared by
/// requests and TCP connections ([`super::layer4`]).
pub(super) fn next_try<'a>(
    pool: &'a PoolRuntime,
    eligible: bool,
    attempt: u32,
    key: Option<u64>,
    tried: &Tried,
) -> Option<&'a Arc<BackendRuntime>> {
    let retries = pool.config.retries;
    if !eligible || attempt >= retries.attempts {
        return None;
    }
    if !pool.budget.try_retry(health::now(), retries.budget_percent) {
        pool.stats
            .retry_budget_exhausted
            .fetch_add(1, Ordering::Relaxed);
        return None;
    }
    pool.pick(key, tried.as_slice(), health::now()).ok()
}

/// Counts a try on `backend` that failed with `error` (no answer): in its counters and
/// passive health.
pub(super) fn count_failure(
    runtime: &Runtime,
    pool: &PoolRuntime,
    backend: &BackendRuntime,
    error: &dyn std::fmt::Display,
) {
    backend.stats.failures.fetch_add(1, Ordering::Relaxed);
    pool.record(backend, false, health::now(), &runtime.events);
    tracing::debug!(pool = %pool.name, backend = %backend.address, %error, "request failed");
}

/// Counts a retry of a request of `pool` from `from` (which failed with `refusal`)
/// to `to`.
pub(super) fn count_retry(
    pool: &PoolRuntime,
    from: &BackendRuntime,
    to: &BackendRuntime,
    refusal: Refusal,
) {
    tracing::debug!(pool = %pool.name, from = %from.address, to = %to.address, ?refusal, "retrying");
    pool.stats.retries.fetch_add(1, Ordering::Relaxed);
}

/// A request counted in flight on its backend for as long as it lasts (response body
/// included); when it ends, requests waiting for a connection slot are woken.
pub struct Slot {
    _in_flight: InFlight,
    pool: Arc<PoolRuntime>,
}

impl Slot {
    pub(super) fn take(pool: &Arc<PoolRuntime>, backend: &BackendRuntime) -> Slot {
        Slot {
            _in_flight: backend.load.begin(),
            pool: Arc::clone(pool),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.pool.waiting.load(Ordering::Relaxed) > 0 {
            self.pool.slot_freed.notify_waiters();
        }
    }
}

/// Counts a request waiting for a connection slot while it waits.
struct Waiter<'a>(&'a PoolRuntime);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Methods whose requests may be repeated (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn refuse_logged(
    log: Option<Box<AccessRecord>>,
    refusal: Refusal,
    pool: &str,
    grpc: bool,
) -> Result<Response<ProxyBody>, Infallible> {
    let response = if grpc {
        grpc::refusal_response(refusal, Some(pool))
    } else {
        refusal.response(Some(pool))
    };
    if let Some(mut log) = log {
        log.answered(&response);
    }
    Ok(response.map(ProxyBody::Own))
}

/// Why a try failed, and whether the request (at least partly) went out.
struct TryFailure {
    sent: bool,
    cause: TryError,
}

impl TryFailure {
    fn new(sent: bool, cause: impl Into<TryError>) -> TryFailure {
        TryFailure {
            sent,
            cause: cause.into(),
        }
    }

    /// The refusal for a try that failed by the client's doing (its request body
    /// broke or stopped), which is no backend's fault; `None` for any other failure.
    fn clients(&self) -> Option<Refusal> {
        match &self.cause {
            TryError::Exchange(h1::Error::RequestBody(_)) => Some(Refusal::BadRequestBody),
            TryError::Exchange(h1::Error::ClientStalled(_)) => Some(Refusal::ClientTimeout),
            _ => None,
        }
    }

    /// A failed exchange: a timeout counts as sent (the backend may be working on it).
    fn exchange(failure: h1::Failure) -> TryFailure {
        match failure.error {
            h1::Error::TimedOut => TryFailure::new(true, TryError::Timeout),
            error => TryFailure::new(failure.progress != Progress::Unwritten, error),
        }
    }
}

/// What made a try fail.
#[derive(Debug, thiserror::Error)]
enum TryError {
    /// No response head before the try's deadline (`timeouts.per_try`, within
    /// `timeouts.request`).
    #[error("no response within per_try")]
    Timeout,
    #[error(transparent)]
    Connect(#[from] upstream::ConnectError),
    #[error(transparent)]
    Exchange(#[from] h1::Error),
}

impl Worker {
    /// A 308 to the request's URL over `https://`: the port of the config's first
    /// TLS listener (left out when it is 443), or 443 when it has none. `None` when
    /// the request names no host, or one that is not a plain host name or IP address
    /// (`a@b`, `a/b`, spaces...: it would redirect elsewhere than it says).
    fn redirect_https(
        &self,
        parts: &http::request::Parts,
        fields: RequestFields<'_>,
        snapshot: &Snapshot,
    ) -> Option<Response<ProxyBody>> {
        let host = redirect_host(request_host(parts, fields)?.to_str().ok()?)?;
        let port = snapshot
            .config
            .listeners
            .iter()
            .position(|l| l.tls.is_some())
            .and_then(|i| self.bound.get(i))
            .map_or(443, SocketAddr::port);
        // `OPTIONS *` and the like: the site's root.
        let target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| p.starts_with('/'))
            .unwrap_or("/");
        let location = if port == 443 {
            format!("https://{host}{target}")
        } else {
            format!("https://{host}:{port}{target}")
        };
        let mut response = Response::new(ProxyBody::Own(Full::new(Bytes::new())));
        *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_str(&location).ok()?);
        Some(response)
    }
}

/// The host of `authority` (a `Host` value) as a redirect may name it: a DNS name
/// (letters, digits, `-`, `_`, `.`), an IPv4 address, or an IPv6 address in brackets;
/// the port dropped. `None` for anything else.
fn redirect_host(authority: &str) -> Option<String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: std::net::Ipv6Addr = ip.parse().ok()?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return port_ok.then(|| format!("[{ip}]"));
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return None,
        None => authority,
    };
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    plain.then(|| host.to_ascii_lowercase())
}

/// What evenkeel answers itself rather than forward, whatever the route: CONNECT
/// (501: evenkeel is not a forward proxy), transfer codings it does not decode (501),
/// and an upgrade whose request has a body (501).
pub(crate) fn answered_here(
    request: &http::request::Parts,
    fields: RequestFields<'_>,
    upgrade: Option<&headers::UpgradeOffer>,
) -> Option<Refusal> {
    if request.method == Method::CONNECT {
        Some(Refusal::Connect)
    } else if headers::has_unsupported_transfer_coding(fields) {
        Some(Refusal::TransferCoding)
    } else if upgrade.is_some() && has_body_fields(fields) {
        Some(Refusal::UpgradeWithBody)
    } else {
        None
    }
}

/// What an upgrade request offers ([`headers::upgrade_offer`]); only HTTP/1.1
/// requests upgrade (an HTTP/1.0 server must ignore `Upgrade`, RFC 9110 §7.8; HTTP/2
/// has none).
pub(crate) fn upgrade_of(
    request: &http::request::Parts,
    fields: RequestFields<'_>,
) -> Option<headers::UpgradeOffer> {
    if request.version == http::Version::HTTP_11 {
        headers::upgrade_offer(fields)
    } else {
        None
    }
}

/// Whether the fields announce a body: any `Transfer-Encoding`, or a `Content-Length`
/// other than 0.
fn has_body_fields(fields: RequestFields<'_>) -> bool {
    fields.contains("transfer-encoding")
        || fields
            .get_all("content-length")
            .any(|v| v.trim_ascii() != b"0")
}

/// The host a request is for: the authority of an absolute-form (or HTTP/2) target,
/// which wins over `Host` (RFC 9112 §3.2.2), else its `Host` header; `None`
/// when it names no host.
pub(crate) fn request_host(
    request: &http::request::Parts,
    fields: RequestFields<'_>,
) -> Option<HeaderValue> {
    let host = request
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| fields.value("host"))?;
    // An empty host (`Host:`, `Host: :80`, `http://:80/`) names nothing: the request is
    // treated as one without a host (NGINX and Django refuse an empty `Host`).
    let names_something = host.to_str().map_or(true, |h| !strip_port(h).is_empty());
    names_something.then_some(host)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// The request's consistent-hash key, or `None` when it lacks one.
fn request_key(
    key: &HashKey,
    request: &http::request::Parts,
    fields: RequestFields<'_>,
    client: SocketAddr,
) -> Option<Vec<u8>> {
    match key {
        HashKey::Header(name) => fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.to_vec()),
        HashKey::Cookie(name) => fields
            .get_all("cookie")
            // Visible ASCII only, as `HeaderValue::to_str` reads a value.
            .filter(|v| v.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)))
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_bytes().to_vec()),
        HashKey::ClientIp => Some(client.ip().to_string().into_bytes()),
        HashKey::Path => Some(request.uri.path().as_bytes().to_vec()),
    }
}

/// Gives a connection back to its worker's pool.
struct Release {
    worker: Rc<Worker>,
    key: upstream::Key,
    idle_timeout: Duration,
}

/// A backend's response body on its way to the client, read from the backend's
/// connection as the client's side asks for it. Once read to its end it returns the
/// connection to the pool (when the response allowed keep-alive) and frees its slot
/// at once, however long the client then takes to read what is left; dropped before
/// its end, or after an error, it closes the connection, and an error marks the
/// request aborted in the access log.
pub struct Streamed {
    /// The first piece of the body, read before the response was handed on.
    first: Option<Bytes>,
    connection: Option<h1::Connection>,
    framing: Framing,
    /// The backend's fields, for a client that takes them as they were sent.
    fields: Option<h1::Fields>,
    /// Bounds each pause of the body by the pool's `timeouts.body_idle`.
    stall: Stall,
    /// The pool's `limits.body_buffer`: how far to read ahead of a slow client.
    read_ahead: usize,
    /// The pool's `limits.body_spill`: how much more may wait in a temporary file.
    spill_limit: u64,
    /// The worker's budget for bytes in temporary files.
    spill_budget: Rc<ByteBudget>,
    release: Option<Release>,
    slot: Option<Slot>,
    log: Option<Box<AccessRecord>>,
    /// A 101 to an upgrade: what its tunnel needs ([`Streamed::take_tunnel`]).
    tunnel: Option<Box<TunnelTerms>>,
}

impl Streamed {
    /// The tunnel a 101 opened, for the client's side to run
    /// ([`super::downstream`]); `None` for any other response.
    pub fn take_tunnel(&mut self) -> Option<Tunnel> {
        let terms = self.tunnel.take()?;
        let connection = self.connection.take()?;
        let slot = self.slot.take()?;
        Some(Tunnel {
            connection,
            slot,
            log: self.log.take(),
            terms,
        })
    }

    /// The backend's response fields as it sent them, for an HTTP/1 client (the
    /// response's header map is then empty); `None` for HTTP/2 clients.
    pub fn take_fields(&mut self) -> Option<h1::Fields> {
        self.fields.take()
    }

    /// How many bytes of the body to read ahead of a client that reads slowly.
    pub fn read_ahead(&self) -> usize {
        self.read_ahead
    }

    /// Where the body's overflow may wait for a client that reads slowly
    /// ([`super::spill`]): up to the pool's `limits.body_spill`, within the worker's
    /// budget.
    pub fn spill(&self) -> Spill {
        Spill::new(self.spill_limit, Some(Rc::clone(&self.spill_budget)))
    }

    /// What an HTTP/1 client's side wrote of this body (`bytes`, as framed on the wire)
    /// and whether it wrote all of it, for the access log: a client that left early
    /// makes the line say `aborted=true`, with what it really got.
    pub fn record_sent(&mut self, bytes: u64, complete: bool) {
        if let Some(log) = self.log.as_mut() {
            log.bytes_out = bytes;
            log.aborted |= !complete;
        }
    }

    /// The body has been read to its end: the connection goes back to the pool (if it
    /// may) and the slot is freed.
    fn finish(&mut self) {
        if let (Some(r), Some(connection)) = (self.release.take(), self.connection.take()) {
            r.worker.upstream.checkin(r.key, connection, r.idle_timeout);
        }
        self.connection = None;
        self.slot = None;
    }
}

/// What [`Worker::stream`] needs besides the response and its connection.
struct Streaming<'a> {
    pool: &'a PoolRuntime,
    backend: &'a BackendRuntime,
    slot: Slot,
    log: Option<Box<AccessRecord>>,
    /// The client takes the fields as the backend sent them (HTTP/1).
    fields_as_sent: bool,
    /// The terms of the tunnel a 101 opens.
    tunnel: Option<Box<TunnelTerms>>,
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = h1::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            if let Some(log) = this.log.as_mut() {
                log.bytes_out += first.len() as u64;
            }
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Some(connection) = this.connection.as_mut() else {
            return Poll::Ready(None);
        };
        let piece = match connection.poll_body(&mut this.framing, cx) {
            Poll::Ready(piece) => piece,
            Poll::Pending => {
                ready!(this.stall.poll_paused(cx));
                Some(Err(h1::Error::Stalled(this.stall.limit())))
            }
        };
        this.stall.progressed();
        match piece {
            Some(Ok(data)) => {
                if let Some(log) = this.log.as_mut() {
                    log.bytes_out += data.len() as u64;
                }
                if this.framing == Framing::Done {
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(error)) => {
                this.release = None;
                this.connection = None;
                if let Some(log) = this.log.as_mut() {
                    log.aborted = true;
                }
                Poll::Ready(Some(Err(error)))
            }
            None => {
                this.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        let first = self.first.as_ref().map_or(0, |f| f.len() as u64);
        match self.framing {
            Framing::Done => SizeHint::with_exact(first),
            Framing::Length(left) => SizeHint::with_exact(first + left),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        if self.framing == Framing::Done && self.first.is_none() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{check_source, Source};

    /// A redirect names only a plain host: what a hostile `Host` could turn into
    /// another destination (userinfo, a path, a fragment, spaces) is refused.
    #[test]
    fn a_redirect_takes_only_a_plain_host_name_or_ip_address() {
        assert_eq!(
            redirect_host("Shop.Example:8080").as_deref(),
            Some("shop.example")
        );
        assert_eq!(redirect_host("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(redirect_host("[::1]:8080").as_deref(), Some("[::1]"));
        for hostile in [
            "good.com@evil.com",
            "good.com:1@evil.com",
            "good.com/evil.com",
            "good.com#x",
            "good.com?x",
            "a b",
            "::1",
            "[::1]x",
            "[nope]",
            "",
            ":80",
            "good.com:",
        ] {
            assert_eq!(redirect_host(hostile), None, "{hostile:?}");
        }
    }

    /// The 503 path in its two parts (the whole path through `serve` is covered by
    /// tests/survive.rs): with every backend unusable (here: weight 0, which only a
    /// test can build), `pick` finds nothing, and the refusal `handle` then sends is a
    /// 503 naming the pool and no backend.
    #[test]
    fn a_pool_with_no_usable_backend_is_refused_with_503_naming_the_pool() {
        let checked = check_source(Source {
            path: "t.toml".into(),
            text: "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                   [[route]]\npool = \"web\"\n\
                   [pool.web]\nbackends = [{ address = \"127.0.0.1:9001\" }, \
                   { address = \"127.0.0.1:9002\" }]\n"
                .into(),
        });
        let mut config = checked.config.expect("valid");
        for backend in &mut config.pools[0].backends {
            backend.weight = 0;
        }
        let runtime = Runtime::new(config);
        let snapshot = runtime.snapshot();
        let pool = snapshot.route(0, Some("x"), "/").expect("routed");
        assert_eq!(
            pool.pick(None, &[], crate::health::now()).err(),
            Some(NoBackend::Unusable)
        );

        let response = Refusal::NoBackend.response(Some(&pool.name));
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        let body = body_text(response.into_body());
        assert!(body.contains("pool \"web\""), "{body}");
        assert!(!body.contains("127.0.0.1"), "{body}");
    }

    fn body_text(body: Full<Bytes>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let bytes = rt.block_on(async {
            http_body_util::BodyExt::collect(body)
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default()
        });
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
