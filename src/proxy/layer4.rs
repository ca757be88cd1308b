//! TCP listeners (`mode = "tcp"`): each client connection is balanced to a backend of
//! the listener's pool, then bytes are carried both ways unread ([`super::tunnel`])
//! until either side closes.
//!
//! The pool works as for HTTP, with the connection as its unit: the balancing
//! algorithms (a consistent hash reads `client_ip`), usability (health checks, passive
//! ejection, drain, slow start, panic mode, failover to the backup pool), and
//! `limits.max_connections` per backend, with up to `limits.max_pending` connections
//! waiting for room before a refusal. A connect that fails or times out
//! (`timeouts.connect`) is a failure of the backend, and the connection is tried on
//! another (`retries`, within the budget): nothing was sent yet. An open connection is
//! in flight on its backend until it closes. What the monitor and the access log see,
//! per connection:
//! - a **request** of the pool and of the backend, with the connect time as latency;
//! - status **200** once the backend has sent a byte or the connection ended cleanly;
//!   **502** for a connect failure, or a backend that reset the connection before its
//!   first byte (these are the pool's errors, and passive ejection counts them);
//!   **503** when no backend could take it;
//! - `bytes_out`: the bytes the backend sent.
//!
//! With `accept_proxy_protocol` the connection must begin with a PROXY header
//! ([`super::proxy_protocol`]) within `header_timeout`, and the client it names is the
//! client (for `client_ip` hashing, the access log, and a `proxy_protocol` pool's own
//! header). A pool with `proxy_protocol = "v2"` gets a v2 header before the client's
//! first byte. Idle connections close after the pool's `timeouts.tunnel_idle`; drains,
//! reloads and SIGTERM treat them as tunnels.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::errors::Refusal;
use super::forward::{next_try, AccessRecord, Client, Picked, Tried, Worker};
use super::tunnel::{Side, Tunnel, TunnelEnd, TunnelTerms};
use super::upstream;
use crate::balance::key_hash;
use crate::config::HashKey;
use crate::health;

/// Serves one connection accepted on TCP listener number `listener`, from `peer`, to
/// its end.
pub async fn serve(
    mut stream: TcpStream,
    worker: Rc<Worker>,
    listener: usize,
    peer: SocketAddr,
    header_timeout: Duration,
) {
    let start = Instant::now();
    let snapshot = worker.runtime.snapshot();
    let Some(on) = snapshot.config.listeners.get(listener) else {
        return;
    };
    // The address the client reached (the listener's may be 0.0.0.0).
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| worker.bound.get(listener).copied().unwrap_or(on.listen));
    let (client_addr, first_bytes) = if on.accept_proxy_protocol {
        match super::proxy_protocol::read(&mut stream, start + header_timeout).await {
            Ok((named, rest)) => (named.unwrap_or(peer), rest),
            Err(error) => {
                tracing::debug!(client = %peer, %error, "PROXY header refused; closed");
                return;
            }
        }
    } else {
        (peer, BytesMut::new())
    };
    let Some((routed, route)) = snapshot.route_with_label(listener, None, "/") else {
        return;
    };
    let client = Rc::new(Client::new(client_addr));
    let mut log = worker.access_log.then(|| {
        Box::new(AccessRecord::connection(
            Rc::clone(&client),
            route,
            routed,
            start,
        ))
    });
    let mut pool = snapshot.serving(routed);
    let key = match pool.hash_key {
        Some(HashKey::ClientIp) => Some(key_hash(client_addr.ip().to_string().as_bytes())),
        _ => None,
    };
    let now = health::now();
    pool.budget.record_request(now);
    // From when the connection is ready to go on: a PROXY header's wait does not count.
    let deadline = Instant::now() + pool.timeouts.request;
    // The backup pool directly, while the health thread has not yet failed over.
    let mut hops = 0;
    let mut backend = loop {
        match worker.first_backend(pool, key, deadline, now).await {
            Ok(backend) => break backend,
            Err(Refusal::NoBackend) if hops < snapshot.pools.len() => {
                match pool.backup.and_then(|b| snapshot.pools.get(b)) {
                    Some(backup) => {
                        pool = backup;
                        hops += 1;
                    }
                    None => return refused(routed, log, 503),
                }
            }
            Err(refusal) => return refused(pool, log, refusal.status().as_u16()),
        }
    };
    let mut tried = Tried::default();
    let mut attempt = 0;
    let (connection, slot, connected_in) = loop {
        let slot = tried.begin(pool, &backend, &mut log);
        let stats = &backend.runtime.stats;
        let try_start = Instant::now();
        let limit = pool
            .timeouts
            .connect
            .min(deadline.saturating_duration_since(try_start));
        let open = &worker.runtime.upstream_connections;
        match upstream::connect(backend.runtime.socket_addr, None, limit, open).await {
            Ok(connection) => break (connection, slot, try_start.elapsed()),
            Err(error) => {
                tracing::debug!(pool = %pool.name, backend = %backend.runtime.address, %error, "TCP connect failed");
                stats.failures.fetch_add(1, Ordering::Relaxed);
                stats.record_status(502);
                pool.record(
                    &backend.runtime,
                    false,
                    health::now(),
                    &worker.runtime.events,
                );
                drop(slot);
                // Nothing was sent: a failed connect may always go again.
                let eligible = Instant::now() < deadline;
                match next_try(pool, eligible, attempt, key, &tried) {
                    Some(next) => {
                        pool.stats.retries.fetch_add(1, Ordering::Relaxed);
                        attempt += 1;
                        backend = Picked::of(next);
                    }
                    None => return refused(pool, log, 502),
                }
            }
        }
    };
    backend.runtime.stats.latency.record(connected_in);
    let mut first = BytesMut::new();
    if pool.config.proxy_protocol {
        first.put_slice(&super::proxy_protocol::v2_header(client_addr, local));
    }
    first.put_slice(&first_bytes);
    let terms = Box::new(TunnelTerms {
        permit: None,
        idle: pool.timeouts.tunnel_idle,
        drain_timeout: snapshot.config.drain_timeout,
        backend: Arc::clone(&backend.runtime),
    });
    // Logged as a success unless it ends otherwise: a connection cut at shutdown (its
    // task dropped inside the tunnel) still writes its line, with its bytes.
    if let Some(log) = log.as_mut() {
        log.answered_with(200, Some(connected_in));
    }
    let tunnel = Tunnel {
        connection,
        slot,
        log,
        terms,
    };
    let carried = tunnel.run(&mut stream, first).await;
    // The backend failed the connection if it reset or broke it before its first byte;
    // a client that resets or breaks it is its own doing (499), not the backend's.
    let status = match carried.end {
        TunnelEnd::Failed(Side::Backend, _) if carried.from_backend == 0 => 502,
        TunnelEnd::Failed(Side::Client, _) => 499,
        _ => 200,
    };
    let runtime = &backend.runtime;
    runtime.stats.record_status(status);
    runtime
        .stats
        .bytes
        .fetch_add(carried.from_backend + carried.to_backend, Ordering::Relaxed);
    if status == 502 {
        runtime.stats.failures.fetch_add(1, Ordering::Relaxed);
    }
    if status != 499 {
        pool.record(
            runtime,
            status == 200,
            health::now(),
            &worker.runtime.events,
        );
    }
    pool.stats.record(status);
    if let Some(mut log) = carried.log {
        log.answered_with(status, Some(connected_in));
    }
}

/// A connection no backend took: counted as the pool's `status`, and logged.
fn refused(pool: &crate::runtime::PoolRuntime, log: Option<Box<AccessRecord>>, status: u16) {
    pool.stats.record(status);
    if let Some(mut log) = log {
        log.answered_with(status, None);
    }
}
