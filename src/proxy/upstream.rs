//! Keep-alive connections to backends: one pool per worker thread, per backend.
//!
//! Each worker owns its connections (thread-per-core, DESIGN "Performance
//! architecture"): no lock, no cross-thread hand-off. A connection is an HTTP/1.1
//! `hyper::client::conn` whose I/O task runs on the worker's `LocalSet`. After a
//! response body has been read to its end the connection goes back to the idle list
//! of its backend; idle connections expire after the pool's `timeouts.idle`, and a
//! sweep closes them even when no request comes by.
//!
//! Every connection is counted in one shared gauge while it is open (made in
//! [`connect`], released when its I/O task ends), for `/metrics`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Most idle connections kept per backend per worker.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// The body of a request to a backend: the client's, streamed, or none (a retry of a
/// request without a body).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// A connection's request side.
pub type Sender = SendRequest<UpstreamBody>;

/// Why a new connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect did not finish within `timeouts.connect`.
    #[error("connect timed out")]
    Timeout,
    /// The connect failed (refused, unreachable).
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP/1 handshake failed, or the new connection closed before the request
    /// could be written.
    #[error("handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

struct Idle {
    sender: Sender,
    expires: Instant,
}

/// The idle connections of one worker.
#[derive(Default)]
pub struct UpstreamPool {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>>>,
}

impl UpstreamPool {
    /// An idle, open connection to `addr`, newest first, if there is one.
    pub fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(conn) = list.pop() {
            if conn.expires > now && conn.sender.is_ready() {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Returns a connection whose last response was read to its end.
    pub fn checkin(&self, addr: SocketAddr, sender: Sender, idle_timeout: Duration) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_BACKEND {
            list.push(Idle {
                sender,
                expires: Instant::now() + idle_timeout,
            });
        }
    }

    /// Closes expired and closed idle connections.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|c| c.expires > now && !c.sender.is_closed());
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }
}

/// One open connection, counted in a shared gauge for as long as it lives.
struct Counted(Arc<AtomicU64>);

impl Counted {
    fn new(open: &Arc<AtomicU64>) -> Counted {
        open.fetch_add(1, Ordering::Relaxed);
        Counted(Arc::clone(open))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Opens a new connection to `addr` within `timeout`; its I/O task runs on the
/// current `LocalSet`. `open` counts it until the connection ends.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    open: &Arc<AtomicU64>,
) -> Result<Sender, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    let counted = Counted::new(open);
    tokio::task::spawn_local(async move {
        // Dropped when the connection ends, or with the task if the worker stops.
        let _counted = counted;
        if let Err(e) = connection.await {
            tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
        }
    });
    sender.ready().await?;
    Ok(sender)
}
