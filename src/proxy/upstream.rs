//! Keep-alive connections to backends: one pool per worker thread, per backend.
//!
//! Each worker owns its connections (thread-per-core, DESIGN "Performance
//! architecture"): no lock, no cross-thread hand-off. A connection is an
//! [`h1::Connection`], driven by the task of the request using it (no task of its own).
//! After a response body has been read to its end the connection goes back to the idle
//! list of its backend; idle connections expire after the pool's `timeouts.idle`, and a
//! sweep closes them even when no request comes by. A connection the backend closed
//! while it was idle, or that sent bytes nobody asked for, is noticed when it is
//! checked in or out (see [`h1::Connection::is_idle_and_open`]) and closed.
//!
//! Every connection is counted in one shared gauge while it is open (made in
//! [`connect`], released when its I/O task ends), for `/metrics`.
//!
//! Idle lists are per [`Key`]: the backend's address and the TLS it was reached with,
//! so a server that two pools reach differently (plain and TLS, or with other names or
//! roots) never gets one pool's connection for the other's request, and a reload that
//! changes a pool's `tls` leaves its old connections unused (they expire).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::h1;
use super::transport::Transport;
use crate::config::TlsTarget;

/// Most idle connections kept per backend per worker.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// Why a new connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect did not finish within `timeouts.connect`.
    #[error("connect timed out")]
    Timeout,
    /// The connect failed (refused, unreachable).
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed (the certificate did not verify, no protocol in
    /// common, the backend does not speak TLS).
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

/// Which idle list a connection belongs to (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    addr: SocketAddr,
    /// 0: plain TCP; else the address of the backend's [`TlsTarget`], which every
    /// connection made with it keeps alive (so no other target can get the same number
    /// while one of them is idle).
    tls: usize,
}

impl Key {
    /// The idle list of connections to `addr` made with `tls`.
    pub fn new(addr: SocketAddr, tls: Option<&Arc<TlsTarget>>) -> Key {
        Key {
            addr,
            tls: tls.map_or(0, |t| Arc::as_ptr(t) as usize),
        }
    }
}

struct Idle {
    connection: h1::Connection,
    expires: Instant,
}

/// The idle connections of one worker.
#[derive(Default)]
pub struct UpstreamPool {
    idle: RefCell<HashMap<Key, Vec<Idle>, BuildHasherDefault<AddrHasher>>>,
}

/// Hashes backend addresses for the idle lists. The keys come from the config, so
/// SipHash's resistance to chosen keys buys nothing, and it cost about 2% of the
/// instructions of a proxied request (a checkout and a checkin each).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    // Whole words at once (the TLS part of a key, the length of the address's bytes).
    fn write_usize(&mut self, word: usize) {
        self.0 = (self.0.rotate_left(5) ^ word as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl UpstreamPool {
    /// An idle, open connection of list `key`, newest first, if there is one.
    pub fn checkout(&self, key: Key) -> Option<h1::Connection> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&key)?;
        let now = Instant::now();
        while let Some(mut idle) = list.pop() {
            if idle.expires > now && idle.connection.is_idle_and_open() {
                return Some(idle.connection);
            }
        }
        None
    }

    /// Returns a connection whose last response was read to its end; one that holds
    /// bytes past that response is closed instead (they belong to no request).
    pub fn checkin(&self, key: Key, connection: h1::Connection, idle_timeout: Duration) {
        if !connection.is_drained() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_BACKEND {
            list.push(Idle {
                connection,
                expires: Instant::now() + idle_timeout,
            });
        }
    }

    /// Closes expired idle connections and those the backend closed.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain_mut(|c| c.expires > now && c.connection.is_idle_and_open());
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }
}

/// One open connection, counted in a shared gauge for as long as it lives.
pub struct Counted(Arc<AtomicU64>);

impl Counted {
    pub(crate) fn new(open: &Arc<AtomicU64>) -> Counted {
        open.fetch_add(1, Ordering::Relaxed);
        Counted(Arc::clone(open))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Opens a new connection to `addr` — over TLS with `tls` — within `timeout` (the TCP
/// connect and the TLS handshake together); `open` counts it until it is dropped.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&Arc<TlsTarget>>,
    timeout: Duration,
    open: &Arc<AtomicU64>,
) -> Result<h1::Connection, ConnectError> {
    let transport = open_transport(addr, tls, timeout).await?;
    Ok(h1::Connection::new(transport, Counted::new(open)))
}

/// The stream of a new connection to `addr`, over TLS with `tls`, within `timeout`
/// (the TCP connect and the TLS handshake together); `TCP_NODELAY` is set.
pub async fn open_transport(
    addr: SocketAddr,
    tls: Option<&Arc<TlsTarget>>,
    timeout: Duration,
) -> Result<Transport, ConnectError> {
    let deadline = Instant::now() + timeout;
    let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    stream.set_nodelay(true)?;
    let transport = match tls {
        None => Transport::Plain(stream),
        Some(tls) => tokio::time::timeout_at(deadline, Transport::tls(stream, tls))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Tls)?,
    };
    Ok(transport)
}
