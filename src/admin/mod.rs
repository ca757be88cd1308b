//! The admin API: what a running evenkeel is doing, on its own listener.
//!
//! It runs on one thread of its own, so a burst of admin calls never takes time from
//! the proxy's workers. Every endpoint but `GET /healthz` (and `GET /metrics`, when it
//! arrives) needs `Authorization: Bearer <token>` with the token from
//! `admin.token_file`; a missing or wrong token gets 401 and changes nothing.
//!
//! Endpoints so far:
//! - `GET /healthz` → `ok` (no token): the process is up.
//! - `GET /status` → JSON: every pool, its backends, their weight, intended share,
//!   requests, observed share, responses by class, failures, in-flight requests.
//! - `GET /config` → the config text in force.
//! - `POST /backends/{pool}/{address}/drain` and `/enable` → stop sending a backend new
//!   requests (those in flight finish), or start again.

mod status;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::runtime::Runtime;

pub use status::{BackendStatus, PoolStatus, Status};

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The token file could not be read or is empty.
    #[error("cannot read the admin token from {path}: {reason}")]
    Token {
        /// The token file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr} (admin): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
}

/// Reads the bearer token: the file's content without surrounding white space.
pub fn read_token(path: &Path) -> Result<String, AdminError> {
    let error = |reason: String| AdminError::Token {
        path: path.display().to_string(),
        reason,
    };
    let token = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let token = token.trim().to_string();
    if token.len() < 16 {
        return Err(error("the token must be at least 16 characters".into()));
    }
    Ok(token)
}

/// Binds `addr` and serves the admin API on a thread of its own. Returns the bound
/// address (port 0 resolved).
pub fn start(
    runtime: Arc<Runtime>,
    addr: SocketAddr,
    token: String,
) -> Result<SocketAddr, AdminError> {
    let bind_error = |source| AdminError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let token = Arc::new(token);
    std::thread::Builder::new()
        .name("evenkeel-admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "admin runtime failed"),
            };
            rt.block_on(serve(listener, runtime, token));
        })
        .map_err(bind_error)?;
    Ok(bound)
}

async fn serve(listener: std::net::TcpListener, runtime: Arc<Runtime>, token: Arc<String>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "admin listener failed"),
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let runtime = Arc::clone(&runtime);
        let token = Arc::clone(&token);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = handle(&request, &runtime, &token);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn handle(request: &Request<Incoming>, runtime: &Runtime, token: &str) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if (request.method(), path) == (&Method::GET, "/healthz") {
        return text(StatusCode::OK, "ok\n");
    }
    if !authorized(request, token) {
        return json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "missing or wrong token: send Authorization: Bearer <token from admin.token_file>"}),
        );
    }
    match (request.method(), path) {
        (&Method::GET, "/status") => json(StatusCode::OK, &Status::of(&runtime.snapshot())),
        (&Method::GET, "/config") => text(StatusCode::OK, &runtime.snapshot().config.source.text),
        (&Method::POST, path) if path.starts_with("/backends/") => drain_or_enable(runtime, path),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no endpoint {} {path}", request.method())}),
        ),
    }
}

/// `POST /backends/{pool}/{address}/drain` and `/enable`: a draining backend gets no
/// new requests (those in flight finish); enabling it puts it back, ramping up under
/// the pool's slow start.
fn drain_or_enable(runtime: &Runtime, path: &str) -> Response<Full<Bytes>> {
    let not_found =
        |what: String| json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": what }));
    let rest = path.trim_start_matches("/backends/");
    let Some((target, action)) = rest.rsplit_once('/') else {
        return not_found(format!(
            "use POST /backends/POOL/ADDRESS/drain or /enable, not {path}"
        ));
    };
    let draining = match action {
        "drain" => true,
        "enable" => false,
        _ => return not_found(format!("unknown action {action:?}: use drain or enable")),
    };
    let Some((pool_name, address)) = target.split_once('/') else {
        return not_found(format!("use POST /backends/POOL/ADDRESS/{action}"));
    };
    let snapshot = runtime.snapshot();
    let Some(pool) = snapshot.pools.iter().find(|p| p.name == pool_name) else {
        return not_found(format!("no pool {pool_name:?}"));
    };
    let Some(backend) = pool.backends.iter().find(|b| b.address == address) else {
        return not_found(format!("pool {pool_name:?} has no backend {address:?}"));
    };
    if backend.health.is_draining() != draining {
        backend.health.set_draining(draining, crate::health::now());
        runtime.events.emit(crate::health::Event::Draining {
            pool: pool.name.clone(),
            backend: backend.address.clone(),
            draining,
        });
        pool.changed.notify_one();
    }
    json(
        StatusCode::OK,
        &serde_json::json!({
            "pool": pool.name,
            "backend": backend.address,
            "draining": draining,
            "in_flight": backend.load.in_flight(),
        }),
    )
}

/// Whether the request carries the bearer token (compared in constant time).
fn authorized(request: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
