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
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Instant;

use super::errors::Refusal;
use super::headers;
use super::upstream::{self, Sender, UpstreamPool};
use crate::balance::{key_hash, InFlight};
use crate::config::HashKey;
use crate::runtime::{BackendRuntime, PoolRuntime, Runtime};

/// The body of every response evenkeel sends: a backend's, streamed, or its own.
pub type ProxyBody = Either<Streamed, Full<Bytes>>;

/// What one worker thread needs to forward requests.
pub struct Worker {
    /// The live configuration.
    pub runtime: Arc<Runtime>,
    /// This worker's upstream connections.
    pub upstream: UpstreamPool,
    /// Whether to write an access-log line per request.
    pub access_log: bool,
}

/// A request as the access log records it.
struct AccessRecord {
    method: Method,
    path: String,
    status: u16,
    pool: String,
    backend: String,
    start: Instant,
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        tracing::info!(
            target: "evenkeel::access",
            method = %self.method,
            path = %self.path,
            status = self.status,
            pool = %self.pool,
            backend = %self.backend,
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
        );
    }
}

impl Worker {
    /// Serves one request from `client` that arrived on listener number `listener`.
    pub async fn handle(
        self: Rc<Self>,
        request: Request<Incoming>,
        listener: usize,
        client: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let start = Instant::now();
        let snapshot = self.runtime.snapshot();
        let record = |pool: Option<&str>, backend: Option<&str>, status: u16| {
            self.access_log.then(|| AccessRecord {
                method: request.method().clone(),
                path: request.uri().path().to_string(),
                status,
                pool: pool.unwrap_or("-").to_string(),
                backend: backend.unwrap_or("-").to_string(),
                start,
            })
        };
        let refuse = |refusal: Refusal, pool: Option<&str>, backend: Option<&str>| {
            drop(record(pool, backend, refusal.status().as_u16()));
            Ok(refusal.response(pool).map(Either::Right))
        };

        if headers::is_upgrade(request.headers()) || request.method() == Method::CONNECT {
            return refuse(Refusal::Upgrade, None, None);
        }
        if headers::has_unsupported_transfer_coding(request.headers()) {
            return refuse(Refusal::TransferCoding, None, None);
        }
        let host = request_host(&request);
        let host_name = host.as_ref().and_then(|h| h.to_str().ok()).map(strip_port);
        let Some(pool) = snapshot.route(listener, host_name, request.uri().path()) else {
            return refuse(Refusal::NoRoute, None, None);
        };
        let key = pool
            .hash_key
            .as_ref()
            .and_then(|k| request_key(k, &request, client))
            .map(|k| key_hash(&k));
        let Some(backend) = pool.pick(key) else {
            return refuse(Refusal::NoBackend, Some(&pool.name), None);
        };
        let log = record(Some(&pool.name), Some(&backend.address), 0);
        let upstream_request = upstream_request(request, client, host);
        let in_flight = backend.load.begin();
        backend.stats.requests.fetch_add(1, Ordering::Relaxed);

        let deadline = pool.timeouts.per_try.min(pool.timeouts.request);
        let sent = tokio::time::timeout(deadline, self.send(pool, backend, upstream_request)).await;
        let (response, sender) = match sent {
            Ok(Ok(done)) => done,
            Ok(Err(error)) => {
                backend.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pool = %pool.name, backend = %backend.address, %error, "request failed");
                return refuse_logged(log, Refusal::BadGateway, &pool.name);
            }
            Err(_) => {
                backend.stats.failures.fetch_add(1, Ordering::Relaxed);
                return refuse_logged(log, Refusal::Timeout, &pool.name);
            }
        };
        let (mut parts, body) = response.into_parts();
        backend.stats.record_status(parts.status.as_u16());
        headers::remove_hop_by_hop(&mut parts.headers);
        let log = log.map(|mut l| {
            l.status = parts.status.as_u16();
            l
        });
        let body = Streamed {
            body,
            ended: false,
            release: Some(Release {
                worker: Rc::clone(&self),
                addr: backend.socket_addr,
                sender,
                idle_timeout: pool.timeouts.idle,
            }),
            _in_flight: in_flight,
            _log: log,
        };
        Ok(Response::from_parts(parts, Either::Left(body)))
    }

    /// Sends `request` to `backend` on a pooled connection, or a new one when the pool
    /// has none or the pooled one turned out closed before anything was written.
    async fn send(
        &self,
        pool: &PoolRuntime,
        backend: &BackendRuntime,
        request: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Sender), SendError> {
        let addr = backend.socket_addr;
        let mut request = request;
        if let Some(mut sender) = self.upstream.checkout(addr) {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, sender)),
                Err(mut e) => match e.take_message() {
                    // Nothing was written: try once more on a fresh connection.
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Request(e.into_error())),
                },
            }
        }
        let mut sender = upstream::connect(addr, pool.timeouts.connect).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(SendError::Request)?;
        Ok((response, sender))
    }
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

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Connect(#[from] upstream::ConnectError),
    #[error("request failed: {0}")]
    Request(hyper::Error),
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
    client: SocketAddr,
    host: Option<HeaderValue>,
) -> Request<Incoming> {
    let (mut parts, body) = request.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    // The client already got its 100 Continue from us when we read its body.
    parts.headers.remove(header::EXPECT);
    headers::add_forwarded(&mut parts.headers, client.ip(), host.as_ref());
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
    _in_flight: InFlight,
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

    /// A pool with no usable backend cannot be made through `serve` yet (a pool whose
    /// backends all weigh 0 is the config error `zero-total-weight`, and nothing else
    /// makes a backend unusable), so the 503 path is checked here in its two parts:
    /// `pick` finds nothing, and the refusal `handle` then sends is a 503 naming the
    /// pool and no backend.
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
        assert!(pool.pick(None).is_none());

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
