//! The admin API: what a running evenkeel is doing, on its own listener.
//!
//! It runs on one thread of its own, so a burst of admin calls never takes time from
//! the proxy's workers, and it serves at most `[admin] max_connections` connections at
//! once, each closed when its head or idle timeout passes (`listener`), so a flood of
//! connections to the admin port cannot starve the proxy of descriptors or CPU. Every
//! endpoint but `GET /healthz` and `GET /metrics` needs `Authorization: Bearer <token>`
//! with the token from `admin.token_file`; a missing or wrong token gets 401 and
//! changes nothing. `[admin] metrics_require_token = true` puts `GET /metrics` behind
//! the token too (its labels name every backend address).
//!
//! Endpoints so far:
//! - `GET /healthz` → `ok` (no token): the process is up.
//! - `GET /metrics` → OpenMetrics text for Prometheus (no token unless
//!   `metrics_require_token`; [`metrics`]).
//! - `GET /status` → JSON: every pool, its backends, their weight, intended share,
//!   requests, observed share, responses by class, failures, in-flight requests; the
//!   `[guard]` thresholds in force (`guard`), the config `version` in force and the
//!   monitor's last windows and alarms (`monitor`).
//! - `GET /config` → the config text in force.
//! - `POST /config` (TOML body; `?deny_warnings=true`) → apply it: 200 with the new
//!   version, or 422 with the findings when refused (and nothing changes).
//! - `GET /config/history` → every version applied or refused, and the current one.
//! - `POST /config/rollback` (`?to=VERSION`) → go back, by default to the previous good
//!   version, through the same path as any apply.
//! - `POST /backends/{pool}/{address}/drain` and `/enable` → stop sending a backend new
//!   requests (those in flight finish), or start again.

mod listener;
pub mod metrics;
mod preview;
mod status;
mod ui;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::apply::{Applied, Applier, ApplyOptions, RollbackError};
use crate::config::diagnostic;
use crate::monitor::Monitor;
use crate::runtime::Runtime;
use crate::store::Origin;

pub use listener::{Limits, ACCEPT_BACKOFF};
pub use status::{BackendStatus, CertificateStatus, GuardThresholds, PoolStatus, Status};

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
    crate::config::files::read_admin_token(path).map_err(error)
}

/// Binds `settings.listen` and serves the admin API on a thread of its own, under the
/// limits of `settings`. Returns the bound address (port 0 resolved).
pub fn start(
    runtime: Arc<Runtime>,
    applier: Arc<Applier>,
    monitor: Arc<Monitor>,
    settings: &crate::config::Admin,
    token: String,
) -> Result<SocketAddr, AdminError> {
    let addr = settings.listen;
    let limits = Limits::from(settings);
    let metrics_require_token = settings.metrics_require_token;
    let bind_error = |source| AdminError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
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
            let state = Arc::new(AdminState {
                runtime,
                applier,
                monitor,
                token,
                limits,
                metrics_require_token,
            });
            rt.block_on(serve(listener, state));
        })
        .map_err(bind_error)?;
    Ok(bound)
}

/// What every admin request may use.
struct AdminState {
    runtime: Arc<Runtime>,
    applier: Arc<Applier>,
    monitor: Arc<Monitor>,
    token: String,
    /// Connections at once, head and idle timeouts.
    limits: Limits,
    /// Whether `GET /metrics` needs the token too.
    metrics_require_token: bool,
}

async fn serve(listener: std::net::TcpListener, state: Arc<AdminState>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "admin listener failed"),
    };
    listener::accept_loop(listener, state).await;
}

async fn handle(request: Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    let AdminState {
        runtime,
        applier,
        monitor,
        token,
        limits,
        metrics_require_token,
    } = state;
    let path = request.uri().path().to_string();
    // The only endpoints open without the token: they change nothing and tell nothing
    // a token protects (DESIGN "Admin API") — though /metrics names backend addresses,
    // so the operator may close it too; the dashboard's page and assets hold no data.
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        // The dashboard's page and assets: no data in them (see ui.rs).
        (&Method::GET, path) if path == "/ui" || path.starts_with("/ui/") => {
            if let Some(asset) = ui::asset(path) {
                return asset;
            }
        }
        (&Method::GET, "/metrics") if !metrics_require_token => {
            return metrics_response(runtime, applier, monitor)
        }
        _ => {}
    }
    if !authorized(&request, token) {
        return json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "missing or wrong token: send Authorization: Bearer <token from admin.token_file>"}),
        );
    }
    let query = request.uri().query().unwrap_or("").to_string();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/status") => {
            let mut status =
                serde_json::to_value(Status::of(&runtime.snapshot())).unwrap_or_default();
            status["version"] = applier.current().into();
            status["monitor"] = serde_json::to_value(&*monitor.state()).unwrap_or_default();
            let counter =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            status["alerts"] = serde_json::json!({
                "delivered": counter(&monitor.webhook.delivered),
                "dropped": counter(&monitor.webhook.dropped),
                "failed": counter(&monitor.webhook.failed),
                "queue_bound": crate::monitor::webhook::QUEUE,
            });
            json(StatusCode::OK, &status)
        }
        (Method::GET, "/metrics") => metrics_response(runtime, applier, monitor),
        (Method::GET, "/config") => text(StatusCode::OK, &runtime.snapshot().config.source.text),
        (Method::GET, "/config/history") => match off_thread(applier, |a| a.history()).await {
            Ok(versions) => json(
                StatusCode::OK,
                &serde_json::json!({ "current": applier.current(), "versions": versions }),
            ),
            Err(e) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({ "error": e.to_string() }),
            ),
        },
        // A parameter it does not know (`dry-run`), or a flag neither true nor false,
        // is refused: a typo never applies anything.
        (Method::POST, "/config") if config_query_error(&query).is_some() => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "error": config_query_error(&query) }),
        ),
        // A dry run whenever `dry_run` is there and not false.
        (Method::POST, "/config") if dry_run(&query) => {
            let body = match read_body(request, limits.header_timeout).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let (deny_warnings, force) = (flag(&query, "deny_warnings"), flag(&query, "force"));
            let preview = off_thread(applier, move |a| {
                preview::dry_run(a, body, deny_warnings, force)
            });
            json(StatusCode::OK, &preview.await)
        }
        (Method::GET, "/config/diff") => match preview::versions_asked(&query) {
            Ok((from, to)) => {
                let (status, body) =
                    off_thread(applier, move |a| preview::versions(a, from, to)).await;
                json(status, &body)
            }
            Err(e) => json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e })),
        },
        (Method::POST, "/config") => {
            let body = match read_body(request, limits.header_timeout).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let canary = match param(&query, "canary")
                .map(|c| crate::fleet::rollout::CanarySize::parse(&c.replace("%25", "%")))
            {
                None => None,
                Some(Ok(size)) => Some(size),
                Some(Err(e)) => {
                    return json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e }))
                }
            };
            let options = ApplyOptions {
                deny_warnings: flag(&query, "deny_warnings"),
                expect_shift: flag(&query, "expect_shift"),
                force: flag(&query, "force"),
                canary,
            };
            let outcome = off_thread(applier, move |a| {
                a.apply(body, "POST /config".into(), Origin::Api, options)
            });
            applied(applier, outcome.await)
        }
        (Method::GET, "/events") => off_thread(applier, move |a| events(a, &query)).await,
        (Method::GET, "/fleet") => {
            let monitor = Arc::clone(monitor);
            off_thread(applier, move |a| fleet(a, &monitor)).await
        }
        (Method::POST, "/config/rollback") => {
            let to = match param(&query, "to").map(str::parse::<u64>) {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err(_)) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({"error": "`to` must be a version number"}),
                    )
                }
            };
            match off_thread(applier, move |a| a.rollback(to)).await {
                Ok(outcome) => applied(applier, outcome),
                Err(e @ RollbackError::NoSuchVersion(_)) => json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": e.to_string()}),
                ),
                Err(e @ RollbackError::Store(_)) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"error": e.to_string()}),
                ),
                Err(e) => json(
                    StatusCode::CONFLICT,
                    &serde_json::json!({"error": e.to_string()}),
                ),
            }
        }
        (Method::POST, path) if path.starts_with("/backends/") => drain_or_enable(runtime, path),
        (method, path) => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no endpoint {method} {path}")}),
        ),
    }
}

/// Runs `work` on the admin runtime's blocking pool: it may wait for the store (etcd,
/// up to its timeouts), and the admin listener's one thread must go on answering
/// `/healthz`, `/metrics` and `/status` meanwhile.
async fn off_thread<T: Send + 'static>(
    applier: &Arc<Applier>,
    work: impl FnOnce(&Applier) -> T + Send + 'static,
) -> T {
    let applier = Arc::clone(applier);
    match tokio::task::spawn_blocking(move || work(&applier)).await {
        Ok(done) => done,
        // A panic in `work` is the admin task's own: let it be one.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// `GET /fleet`: the fleet's version in force and every node's report, from etcd; 404
/// on an instance that is not part of a fleet; 503 (with this node's own report) while
/// etcd cannot be reached.
fn fleet(applier: &Applier, monitor: &crate::monitor::Monitor) -> Response<Full<Bytes>> {
    let Some(fleet) = applier.fleet() else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "this instance is not part of a fleet ([store] kind = \"etcd\" makes it one)"}),
        );
    };
    match crate::fleet::status::read_now(fleet) {
        Ok(status) => json(StatusCode::OK, &status),
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({
                "error": e.to_string(),
                "self": crate::fleet::status::NodeReport::of(fleet, applier, monitor),
            }),
        ),
    }
}

/// `GET /events?since=&until=`: journal entries, oldest first. `since` is an entry id
/// (entries after it), an RFC 3339 time, or a duration back from now (`15m`).
fn events(applier: &Applier, query: &str) -> Response<Full<Bytes>> {
    let bad = |what: &str| {
        json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "error": what }),
        )
    };
    let (mut after, mut since) = (0, None);
    if let Some(value) = param(query, "since") {
        match value.parse::<u64>() {
            Ok(id) => after = id,
            Err(_) => {
                match time_param(value) {
                    Some(time) => since = Some(time),
                    None => return bad(
                        "`since` must be an event id, an RFC 3339 time or a duration such as 15m",
                    ),
                }
            }
        }
    }
    let until = match param(query, "until").map(time_param) {
        None => None,
        Some(Some(time)) => Some(time),
        Some(None) => return bad("`until` must be an RFC 3339 time or a duration such as 15m"),
    };
    match applier
        .store()
        .journal_entries(after, since.as_deref(), until.as_deref(), 10_000)
    {
        Ok(entries) => json(StatusCode::OK, &serde_json::json!({ "events": entries })),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({ "error": e.to_string() }),
        ),
    }
}

/// An RFC 3339 time as the journal stores it, from RFC 3339 or a duration back from now.
pub fn time_param(value: &str) -> Option<String> {
    let value = value.replace("%3A", ":");
    if let Ok(time) = humantime::parse_rfc3339_weak(&value) {
        return Some(humantime::format_rfc3339_millis(time).to_string());
    }
    let back = crate::config::values::parse_duration(&value).ok()?;
    let time = std::time::SystemTime::now().checked_sub(back)?;
    Some(humantime::format_rfc3339_millis(time).to_string())
}

/// Largest config accepted by `POST /config`.
const MAX_CONFIG_BYTES: usize = 4 << 20;

/// Reads a `POST /config` body: at most [`MAX_CONFIG_BYTES`], all of it within `within`
/// (`[admin] header_timeout`), so a client that sends a head and then dribbles the body
/// cannot hold a connection slot.
async fn read_body(
    request: Request<Incoming>,
    within: std::time::Duration,
) -> Result<String, Response<Full<Bytes>>> {
    let limited = http_body_util::Limited::new(request.into_body(), MAX_CONFIG_BYTES);
    let bytes = match tokio::time::timeout(within, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => {
            return Err(json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({"error": format!("cannot read the config: {e} (at most 4 MiB)")}),
            ))
        }
        Err(_) => {
            return Err(json(
                StatusCode::REQUEST_TIMEOUT,
                &serde_json::json!({"error": format!(
                    "the config did not arrive within [admin] header_timeout ({})",
                    crate::config::values::format_duration(within)
                )}),
            ))
        }
    };
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "the config is not UTF-8 text"}),
        )
    })
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What is wrong with the parameters of a `POST /config`, if anything: one it does not
/// know, or a flag that is not `true`, `1`, `false` or `0` (`dry_run` may be bare).
fn config_query_error(query: &str) -> Option<String> {
    query.split('&').filter(|p| !p.is_empty()).find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "canary" => None,
            "dry_run" | "deny_warnings" | "expect_shift" | "force" => {
                let bare = value.is_empty() && !pair.contains('=') && name == "dry_run";
                (!bare && !matches!(value, "true" | "1" | "false" | "0")).then(|| {
                    format!("`{name}` is true or false, not {value:?}")
                })
            }
            _ => Some(format!(
                "unknown parameter {name:?}: POST /config takes dry_run, deny_warnings, expect_shift, force and canary"
            )),
        }
    })
}

/// Whether a `POST /config` is a dry run: `dry_run` given, bare or with any value but
/// `false` or `0`.
fn dry_run(query: &str) -> bool {
    query.split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        name == "dry_run" && value != "false" && value != "0"
    })
}

fn flag(query: &str, name: &str) -> bool {
    param(query, name).is_some_and(|v| v == "true" || v == "1")
}

/// The answer to an apply or rollback: 200 with the version, 422 with the findings,
/// 409 when another apply changed the fleet's version first. In a fleet, `node` names
/// the node that answered.
fn applied(applier: &Applier, outcome: Applied) -> Response<Full<Bytes>> {
    let (status, mut answer) = match outcome {
        Applied::Applied {
            version,
            warnings,
            source,
        } => (
            StatusCode::OK,
            serde_json::json!({
                "result": "applied",
                "version": version.id,
                "warnings": diagnostic::json_findings(&source, &warnings),
            }),
        ),
        Applied::Unchanged { version } => (
            StatusCode::OK,
            serde_json::json!({ "result": "unchanged", "version": version }),
        ),
        Applied::StoreUnavailable { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "result": "unavailable", "error": reason }),
        ),
        Applied::Staged { version, rollout } => (
            StatusCode::OK,
            serde_json::json!({
                "result": "staged",
                "version": version.id,
                "rollout": rollout,
            }),
        ),
        Applied::Conflict { in_force, seen } => (
            StatusCode::CONFLICT,
            serde_json::json!({
                "result": "conflict",
                "in_force": in_force,
                "seen": seen,
                "error": crate::store::StoreError::Conflict { in_force, seen }.to_string(),
            }),
        ),
        Applied::Refused {
            version,
            findings,
            source,
            reason,
        } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({
                "result": "refused",
                "version": version.map(|v| v.id),
                "reason": reason,
                "findings": diagnostic::json_findings(&source, &findings),
            }),
        ),
    };
    if let Some(fleet) = applier.fleet() {
        answer["node"] = fleet.store().node().into();
    }
    json(status, &answer)
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

/// `GET /metrics`: the exposition, or 500 if it could not be written.
fn metrics_response(
    runtime: &Runtime,
    applier: &Applier,
    monitor: &Monitor,
) -> Response<Full<Bytes>> {
    match metrics::render(runtime, applier, monitor) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be written\n",
        ),
    }
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
