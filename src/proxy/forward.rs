//! Forwarding one request: route it, pick a backend, send it on a pooled connection,
//! stream the response back.
//!
//! Bodies are streamed both ways, never buffered whole: the client's request body is
//! handed to the upstream connection as it arrives, and the response body is a
//! [`Streamed`] wrapper around the backend's that returns the connection to the pool
//! once the body has been read to its end (a body dropped half-read closes it).
//!
//! A pooled connection the backend has just closed is the classic keep-alive race;
//! hyper's `try_send_request` hands the request back when nothing of it was written,
//! and the request then goes out once more on a new connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Instant;

use super::errors::Refusal;
use super::headers;
use super::upstream::{self, Sender, UpstreamBody, UpstreamPool};
use crate::balance::{key_hash, InFlight};
use crate::config::HashKey;
use crate::health;
use crate::runtime::{BackendRuntime, NoBackend, PoolRuntime, Runtime};

/// The body of every response evenkeel sends: a backend's, streamed, or its own.
pub type ProxyBody = Either<Streamed, Full<Bytes>>;

/// The client end of a connection, as every request on it needs it.
pub struct Client {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its IP as an `X-Forwarded-For` value, made once per connection.
    forwarded_for: HeaderValue,
}

impl Client {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            forwarded_for: headers::client_value(addr.ip()),
        }
    }
}

/// What one worker thread needs to forward requests.
pub struct Worker {
    /// The live configuration.
    pub runtime: Arc<Runtime>,
    /// This worker's upstream connections.
    pub upstream: UpstreamPool,
    /// Whether to write an access-log line per request.
    pub access_log: bool,
}

/// A request as the access log records it: cheap clones only (the URI and names are
/// reference-counted), formatted into the worker's log buffer when it ends.
struct AccessRecord {
    method: Method,
    uri: Uri,
    status: u16,
    pool: Option<Arc<PoolRuntime>>,
    backend: Option<Arc<BackendRuntime>>,
    start: Instant,
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        super::access::line(
            &self.method,
            self.uri.path(),
            self.status,
            self.pool.as_ref().map_or("-", |p| p.name.as_str()),
            self.backend.as_ref().map_or("-", |b| b.address.as_str()),
            self.start.elapsed(),
        );
    }
}

impl Worker {
    /// Serves one request from `client` that arrived on listener number `listener`.
    pub async fn handle(
        self: Rc<Self>,
        request: Request<Incoming>,
        listener: usize,
        client: Rc<Client>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let start = Instant::now();
        let snapshot = self.runtime.snapshot();
        let record = |pool: Option<&Arc<PoolRuntime>>,
                      backend: Option<&Arc<BackendRuntime>>,
                      status: u16| {
            self.access_log.then(|| AccessRecord {
                method: request.method().clone(),
                uri: request.uri().clone(),
                status,
                pool: pool.cloned(),
                backend: backend.cloned(),
                start,
            })
        };
        let refuse = |refusal: Refusal, pool: Option<&Arc<PoolRuntime>>| {
            drop(record(pool, None, refusal.status().as_u16()));
            Ok(refusal
                .response(pool.map(|p| p.name.as_str()))
                .map(Either::Right))
        };

        if headers::is_upgrade(request.headers()) || request.method() == Method::CONNECT {
            return refuse(Refusal::Upgrade, None);
        }
        if headers::has_unsupported_transfer_coding(request.headers()) {
            return refuse(Refusal::TransferCoding, None);
        }
        let host = request_host(&request);
        let host_name = host.as_ref().and_then(|h| h.to_str().ok()).map(strip_port);
        let Some(routed) = snapshot.route(listener, host_name, request.uri().path()) else {
            return refuse(Refusal::NoRoute, None);
        };
        let mut pool = snapshot.serving(routed);
        let deadline = start + pool.timeouts.request;
        let mut hops = 0;
        let (mut backend, key) = loop {
            let key = pool
                .hash_key
                .as_ref()
                .and_then(|k| request_key(k, &request, client.addr))
                .map(|k| key_hash(&k));
            pool.budget.record_request(health::now());
            match self.first_backend(pool, key, deadline).await {
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
                            return refuse(Refusal::NoBackend, Some(routed));
                        }
                    }
                }
                Err(refusal) => {
                    pool.stats.record(refusal.status().as_u16());
                    return refuse(refusal, Some(routed));
                }
            }
        };
        let mut log = record(Some(pool), Some(&backend.runtime), 0);
        let replayable = is_idempotent(request.method()) && request.body().is_end_stream();
        let retries = pool.config.retries;
        let request = upstream_request(request, &client, host);
        // What a retry after the request went out needs: a copy of its head (the body
        // is empty, or the request is not retried once sent).
        let head = (retries.attempts > 0 && replayable).then(|| Head::of(&request));
        let mut unsent = Some(request.map(Either::Left));
        let mut tried = Tried::default();
        let mut attempt = 0;
        let failure = loop {
            tried.push(backend.index);
            let Some(request) = unsent.take().or_else(|| head.as_ref().map(Head::request)) else {
                break Refusal::BadGateway;
            };
            let slot = Slot::take(pool, &backend.runtime);
            backend
                .runtime
                .stats
                .requests
                .fetch_add(1, Ordering::Relaxed);
            let per_try = pool
                .timeouts
                .per_try
                .min(deadline.saturating_duration_since(Instant::now()));
            let try_start = Instant::now();
            let sent =
                tokio::time::timeout(per_try, self.send(pool, &backend.runtime, request)).await;
            // May this failure be retried on another backend, and on which?
            let retry = |sent: bool| {
                let eligible = attempt < retries.attempts
                    && (!sent || head.is_some())
                    && Instant::now() < deadline;
                if !eligible {
                    return None;
                }
                if !pool.budget.try_retry(health::now(), retries.budget_percent) {
                    pool.stats
                        .retry_budget_exhausted
                        .fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                pool.pick(key, tried.as_slice(), health::now()).ok()
            };
            let (refusal, next) = match sent {
                Ok(Ok((response, sender))) => {
                    let status = response.status().as_u16();
                    backend.runtime.stats.record_status(status);
                    backend.runtime.stats.latency.record(try_start.elapsed());
                    pool.record(
                        &backend.runtime,
                        status < 500,
                        health::now(),
                        &self.runtime.events,
                    );
                    let next = matches!(status, 502..=504).then(|| retry(true)).flatten();
                    match next {
                        Some(next) => (Refusal::BadGateway, next),
                        None => {
                            if let Some(log) = log.as_mut() {
                                log.status = status;
                            }
                            pool.stats.record(status);
                            return Ok(self.stream(
                                response,
                                sender,
                                pool,
                                &backend.runtime,
                                slot,
                                log,
                            ));
                        }
                    }
                }
                Ok(Err(error)) => {
                    self.failed(pool, &backend.runtime, &error);
                    let was_sent = match error {
                        SendError::NotSent(request, _) => {
                            unsent = Some(*request);
                            false
                        }
                        SendError::Sent(_) => true,
                    };
                    match retry(was_sent) {
                        Some(next) => (Refusal::BadGateway, next),
                        None => break Refusal::BadGateway,
                    }
                }
                Err(_) => {
                    backend
                        .runtime
                        .stats
                        .failures
                        .fetch_add(1, Ordering::Relaxed);
                    pool.record(&backend.runtime, false, health::now(), &self.runtime.events);
                    match retry(true) {
                        Some(next) => (Refusal::Timeout, next),
                        None => break Refusal::Timeout,
                    }
                }
            };
            tracing::debug!(pool = %pool.name, from = %backend.runtime.address, to = %next.address, ?refusal, "retrying");
            pool.stats.retries.fetch_add(1, Ordering::Relaxed);
            drop(slot);
            attempt += 1;
            backend = Picked::of(next);
            if let Some(log) = log.as_mut() {
                log.backend = Some(Arc::clone(&backend.runtime));
            }
        };
        pool.stats.record(failure.status().as_u16());
        refuse_logged(log, failure, &pool.name)
    }

    /// The first backend for a request: a usable one under its connection limit, or —
    /// while every usable backend is at `limits.max_connections` — one that frees a
    /// slot before `deadline`, if fewer than `limits.max_pending` requests per backend
    /// already wait; else a fast 503.
    async fn first_backend(
        &self,
        pool: &Arc<PoolRuntime>,
        key: Option<u64>,
        deadline: Instant,
    ) -> Result<Picked, Refusal> {
        loop {
            match pool.pick(key, &[], health::now()) {
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
                }
            }
        }
    }

    fn failed(&self, pool: &PoolRuntime, backend: &BackendRuntime, error: &SendError) {
        backend.stats.failures.fetch_add(1, Ordering::Relaxed);
        pool.record(backend, false, health::now(), &self.runtime.events);
        let error: &dyn std::fmt::Display = match error {
            SendError::NotSent(_, e) => e,
            SendError::Sent(e) => e,
        };
        tracing::debug!(pool = %pool.name, backend = %backend.address, %error, "request failed");
    }

    fn stream(
        self: &Rc<Self>,
        response: Response<Incoming>,
        sender: Sender,
        pool: &PoolRuntime,
        backend: &BackendRuntime,
        slot: Slot,
        log: Option<AccessRecord>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        let body = Streamed {
            body,
            ended: false,
            release: Some(Release {
                worker: Rc::clone(self),
                addr: backend.socket_addr,
                sender,
                idle_timeout: pool.timeouts.idle,
            }),
            _slot: slot,
            _log: log,
        };
        Response::from_parts(parts, Either::Left(body))
    }

    /// Sends `request` to `backend` on a pooled connection, or a new one when the pool
    /// has none or the pooled one turned out closed before anything was written.
    async fn send(
        &self,
        pool: &PoolRuntime,
        backend: &BackendRuntime,
        request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Sender), SendError> {
        let addr = backend.socket_addr;
        let mut request = request;
        if let Some(mut sender) = self.upstream.checkout(addr) {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, sender)),
                Err(mut e) => match e.take_message() {
                    // Nothing was written: try once more on a fresh connection.
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Sent(e.into_error())),
                },
            }
        }
        let open = &self.runtime.upstream_connections;
        let mut sender = match upstream::connect(addr, pool.timeouts.connect, open).await {
            Ok(sender) => sender,
            Err(e) => return Err(SendError::NotSent(Box::new(request), e)),
        };
        match sender.try_send_request(request).await {
            Ok(response) => Ok((response, sender)),
            Err(mut e) => match e.take_message() {
                Some(unsent) => Err(SendError::NotSent(Box::new(unsent), e.into_error().into())),
                None => Err(SendError::Sent(e.into_error())),
            },
        }
    }
}

/// The backend chosen for a try, with its position in the pool.
struct Picked {
    index: usize,
    runtime: Arc<BackendRuntime>,
}

impl Picked {
    fn of(backend: &Arc<BackendRuntime>) -> Picked {
        Picked {
            index: backend.index,
            runtime: Arc::clone(backend),
        }
    }
}

/// Backends already tried for a request (at most 1 + the 10 retries config allows).
#[derive(Default)]
struct Tried {
    indexes: [usize; 11],
    len: usize,
}

impl Tried {
    fn push(&mut self, index: usize) {
        if self.len < self.indexes.len() {
            self.indexes[self.len] = index;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[usize] {
        &self.indexes[..self.len]
    }
}

/// A request counted in flight on its backend for as long as it lasts (response body
/// included); when it ends, requests waiting for a connection slot are woken.
pub struct Slot {
    _in_flight: InFlight,
    pool: Arc<PoolRuntime>,
}

impl Slot {
    fn take(pool: &Arc<PoolRuntime>, backend: &BackendRuntime) -> Slot {
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

/// The head of a request, kept to send it again.
struct Head {
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
}

impl Head {
    fn of<B>(request: &Request<B>) -> Head {
        Head {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        }
    }

    fn request(&self) -> Request<UpstreamBody> {
        let mut request = Request::new(Either::Right(Empty::new()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
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
    log: Option<AccessRecord>,
    refusal: Refusal,
    pool: &str,
) -> Result<Response<ProxyBody>, Infallible> {
    if let Some(mut log) = log {
        log.status = refusal.status().as_u16();
    }
    Ok(refusal.response(Some(pool)).map(Either::Right))
}

/// Why a try failed.
enum SendError {
    /// Nothing of the request was written; here it is back, with the cause.
    NotSent(Box<Request<UpstreamBody>>, upstream::ConnectError),
    /// The request went out (at least partly), then the exchange failed.
    Sent(hyper::Error),
}

/// The host a request is for: its `Host` header, or the URI authority (HTTP/2).
fn request_host(request: &Request<Incoming>) -> Option<HeaderValue> {
    request.headers().get(header::HOST).cloned().or_else(|| {
        request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
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
fn request_key(key: &HashKey, request: &Request<Incoming>, client: SocketAddr) -> Option<Vec<u8>> {
    match key {
        HashKey::Header(name) => request
            .headers()
            .get(name.as_str())
            .map(|v| v.as_bytes().to_vec()),
        HashKey::Cookie(name) => request
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_bytes().to_vec()),
        HashKey::ClientIp => Some(client.ip().to_string().into_bytes()),
        HashKey::Path => Some(request.uri().path().as_bytes().to_vec()),
    }
}

/// The request as it goes to the backend: origin-form URI, HTTP/1.1, hop-by-hop
/// headers removed, `X-Forwarded-*` added, `Host` kept (or set from an HTTP/2
/// authority).
fn upstream_request(
    request: Request<Incoming>,
    client: &Client,
    host: Option<HeaderValue>,
) -> Request<Incoming> {
    let (mut parts, body) = request.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    // The client already got its 100 Continue from us when we read its body.
    parts.headers.remove(header::EXPECT);
    headers::add_forwarded(&mut parts.headers, &client.forwarded_for, host.as_ref());
    if let (false, Some(host)) = (parts.headers.contains_key(header::HOST), host) {
        parts.headers.insert(header::HOST, host);
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, body)
}

/// Gives a connection back to its worker's pool.
struct Release {
    worker: Rc<Worker>,
    addr: SocketAddr,
    sender: Sender,
    idle_timeout: Duration,
}

/// A backend's response body on its way to the client. Dropped after its end, it
/// returns the connection to the pool; dropped before, the connection closes.
pub struct Streamed {
    body: Incoming,
    ended: bool,
    release: Option<Release>,
    _slot: Slot,
    _log: Option<AccessRecord>,
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) => this.release = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        if self.ended || self.body.is_end_stream() {
            if let Some(r) = self.release.take() {
                r.worker.upstream.checkin(r.addr, r.sender, r.idle_timeout);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{check_source, Source};

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
