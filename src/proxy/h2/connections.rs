//! Each worker's HTTP/2 connections to the backends of pools with `protocol = "h2c"`
//! or `"h2"`: a few per backend, each carrying many streams.
//!
//! A request takes the first connection of its backend with room for another stream
//! (fewer open than the backend's `SETTINGS_MAX_CONCURRENT_STREAMS`), else opens a new
//! one while the backend has fewer than `limits.max_connections` over all workers, else
//! queues on the least busy (the h2 crate opens the stream once one ends there). One
//! connection to a backend is opened at a time, in a task of its own: requests that
//! find no room while one is opening wait for it, so a burst does not open a
//! connection per request before the first one's settings say how many streams it
//! takes, and a request that stops waiting does not abandon it. A new connection is
//! used only once the backend's settings have come (a PING's answer follows them). A
//! connection whose driver task ended (the backend closed it, sent GOAWAY, or broke
//! it, or answered no keepalive PING) is dropped from the list; one with no stream for
//! the pool's `timeouts.idle` is closed by the sweep. The h2 crate drives each connection in a task of its own on the
//! worker's `LocalSet`, so streams progress while no request polls them.
//!
//! Lists are per [`Key`], as HTTP/1's idle lists are, so a server two pools reach with
//! different TLS settings never shares a connection between them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use ::h2::client::SendRequest;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::super::upstream::{self, ConnectError, Counted, Key};
use crate::balance::BackendLoad;
use crate::config::TlsTarget;

/// The flow-control window evenkeel opens to a backend for each stream: how far a
/// response may run ahead of the client reading it, and so what one stream can carry
/// per round trip to the backend (64 MB/s at 1 ms). A stream whose client reads
/// slowly, or not at all, holds up to this much in memory: 64 KiB, as HAProxy's
/// default and HTTP/1's read-ahead (`limits.body_buffer`).
const STREAM_WINDOW: u32 = 64 * 1024;
/// The window for a whole connection: the most HTTP/2 allows, so that streams whose
/// clients read slowly (each holding up to [`STREAM_WINDOW`]) never use up the
/// connection's window and stall the other streams on it.
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;
/// Largest response head (fields, decoded) accepted from a backend, as for HTTP/1.
const MAX_HEADER_LIST: u32 = super::super::h1::MAX_HEAD_BYTES as u32;

/// One HTTP/2 connection to a backend.
pub struct H2Connection {
    sender: SendRequest<Bytes>,
    /// Streams this worker has open on it.
    streams: Cell<usize>,
    /// Its driver task ended: it takes no more streams.
    closed: Rc<Cell<bool>>,
    /// When its last stream ended (or it was made).
    last_used: Cell<Instant>,
    /// How long it may stay without a stream: its pool's `timeouts.idle`.
    idle_timeout: Duration,
}

impl H2Connection {
    /// A handle to open streams with.
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.sender.clone()
    }

    /// Whether it may take another stream now.
    fn has_room(&self) -> bool {
        !self.closed.get() && self.streams.get() < self.sender.current_max_send_streams()
    }

    /// Whether its driver task ended.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

/// A stream counted on its connection for as long as it lives.
pub struct OpenStream(Rc<H2Connection>);

impl OpenStream {
    /// Counts a stream on `connection`.
    pub fn on(connection: &Rc<H2Connection>) -> OpenStream {
        connection.streams.set(connection.streams.get() + 1);
        OpenStream(Rc::clone(connection))
    }

    /// The connection it is on.
    pub fn connection(&self) -> &Rc<H2Connection> {
        &self.0
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let connection = &self.0;
        connection
            .streams
            .set(connection.streams.get().saturating_sub(1));
        connection.last_used.set(Instant::now());
    }
}

/// One worker's HTTP/2 connections, by backend.
#[derive(Default)]
pub struct H2Connections {
    lists: Rc<RefCell<HashMap<Key, Vec<Rc<H2Connection>>>>>,
    /// Backends a connection is being opened to.
    opening: Rc<RefCell<HashMap<Key, Rc<Opening>>>>,
}

/// A connection being opened to a backend, in a task of its own, so a request that
/// stops waiting (its client left, its deadline passed) does not abandon it halfway:
/// once open it is listed for the next streams.
pub struct Opening {
    done: Notify,
    /// `None` while it opens; then the connection, or why it failed.
    result: RefCell<Option<Result<Rc<H2Connection>, String>>>,
}

impl Opening {
    /// Waits until the connection opened (`Ok`) or failed (`Err`, why), or `until`
    /// passed (`None`).
    pub async fn outcome(&self, until: Instant) -> Option<Result<Rc<H2Connection>, String>> {
        let done = self.done.notified();
        if self.result.borrow().is_none() {
            // The task sets the result only after this request yields, which the
            // wait below does with `done` already polled, hence registered.
            tokio::time::timeout_at(until, done).await.ok()?;
        }
        self.result.borrow().clone()
    }
}

/// What a connection to open needs.
pub struct Target {
    /// The backend's address.
    pub addr: SocketAddr,
    /// Its TLS, if the pool has `tls`.
    pub tls: Option<Arc<TlsTarget>>,
    /// The pool's `timeouts.connect`.
    pub connect: Duration,
    /// The pool's `timeouts.idle`.
    pub idle: Duration,
    /// The shared gauge of upstream connections.
    pub open: Arc<AtomicU64>,
    /// The backend's load, which counts its shared connections.
    pub load: Arc<BackendLoad>,
    /// Counts a failed open against the backend, once, whoever waits for it.
    pub failed: Box<dyn FnOnce(&ConnectError)>,
}

/// Ends an opening when its task does (or panics): the backend's entry is removed and
/// who waits is woken.
struct Opened {
    key: Key,
    openings: Rc<RefCell<HashMap<Key, Rc<Opening>>>>,
    opening: Rc<Opening>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        if self.opening.result.borrow().is_none() {
            *self.opening.result.borrow_mut() = Some(Err("the open was abandoned".into()));
        }
        self.openings.borrow_mut().remove(&self.key);
        self.opening.done.notify_waiters();
    }
}

/// Which connection a new stream should take.
pub enum Choice {
    /// This one, which has room: the stream is counted on it already.
    Use(OpenStream),
    /// A connection is being opened (by this request, `opener`, or another one): wait
    /// for it; the opener takes it, the others choose again.
    Wait {
        /// The connection being opened.
        opening: Rc<Opening>,
        /// This request started it, and answers for its failure.
        opener: bool,
    },
    /// This one, the least busy, where the stream waits for room: the backend has
    /// `limits.max_connections` already.
    Queue(OpenStream),
}

impl H2Connections {
    /// Where a stream to `key` goes, for a backend with `load` and `max_connections`;
    /// `avoid`: not on this connection (it refused the stream). A new connection is
    /// opened to `target()` when none has room; at `max_connections` over all workers,
    /// a worker with no connection to the backend still opens one: the limit may be
    /// passed by one connection per worker.
    pub fn choose(
        &self,
        key: Key,
        load: &BackendLoad,
        max_connections: u32,
        avoid: Option<&Rc<H2Connection>>,
        target: impl FnOnce() -> Target,
    ) -> Choice {
        let mut lists = self.lists.borrow_mut();
        let list = lists.entry(key).or_default();
        list.retain(|c| !c.closed.get());
        let others = || {
            list.iter()
                .filter(move |c| avoid.is_none_or(|a| !Rc::ptr_eq(a, c)))
        };
        if let Some(connection) = others().find(|c| c.has_room()) {
            return Choice::Use(OpenStream::on(connection));
        }
        if let Some(opening) = self.opening.borrow().get(&key) {
            return Choice::Wait {
                opening: Rc::clone(opening),
                opener: false,
            };
        }
        if let Some(least_busy) = others().min_by_key(|c| c.streams.get()) {
            if load.shared_connections() >= max_connections {
                return Choice::Queue(OpenStream::on(least_busy));
            }
        }
        let opening = Rc::new(Opening {
            done: Notify::new(),
            result: RefCell::new(None),
        });
        self.opening.borrow_mut().insert(key, Rc::clone(&opening));
        let lists = Rc::clone(&self.lists);
        let opened = Opened {
            key,
            openings: Rc::clone(&self.opening),
            opening: Rc::clone(&opening),
        };
        let mut target = target();
        tokio::task::spawn_local(async move {
            let failed = std::mem::replace(&mut target.failed, Box::new(|_| {}));
            let result = match H2Connections::open(&target).await {
                Ok(connection) => {
                    lists
                        .borrow_mut()
                        .entry(key)
                        .or_default()
                        .push(Rc::clone(&connection));
                    Ok(connection)
                }
                Err(error) => {
                    failed(&error);
                    Err(error.to_string())
                }
            };
            *opened.opening.result.borrow_mut() = Some(result);
            drop(opened);
        });
        Choice::Wait {
            opening,
            opener: true,
        }
    }

    /// Opens a connection to `target` (over TLS, which must agree on `h2`, when it has
    /// some) within its connect timeout, and starts its driver task; it is ready once
    /// the backend's settings (its stream limit) have come. It is counted in the
    /// shared gauge of upstream connections and among the backend's shared connections.
    async fn open(target: &Target) -> Result<Rc<H2Connection>, ConnectError> {
        let Target {
            addr,
            tls,
            connect: timeout,
            idle: idle_timeout,
            open,
            load,
            failed: _,
        } = target;
        let (addr, timeout, idle_timeout) = (*addr, *timeout, *idle_timeout);
        let deadline = Instant::now() + timeout;
        let transport = upstream::open_transport(addr, tls.as_ref(), timeout).await?;
        if tls.is_some() && !transport.agreed_h2() {
            return Err(ConnectError::Tls(std::io::Error::other(
                "the backend did not agree to HTTP/2 (ALPN h2)",
            )));
        }
        let handshake = ::h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST)
            .enable_push(false)
            // Streams evenkeel cancels (clients that leave) are many on a busy
            // connection over its life: the h2 crate's default of 1,024 in all would
            // tear down every stream on it (GOAWAY ENHANCE_YOUR_CALM) one day.
            .max_local_error_reset_streams(None)
            .max_concurrent_reset_streams(4096)
            .handshake::<_, Bytes>(transport);
        let (sender, mut connection) = tokio::time::timeout_at(deadline, handshake)
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(|e| ConnectError::Io(std::io::Error::other(e)))?;
        let ping = connection.ping_pong();
        let closed = Rc::new(Cell::new(false));
        let counted = (Counted::new(open), load.open_shared());
        let ended = Rc::clone(&closed);
        let (ready, settings) = tokio::sync::oneshot::channel();
        tokio::task::spawn_local(async move {
            drive(connection, ping, ready, addr).await;
            ended.set(true);
            drop(counted);
        });
        // A server's settings come first on its side of the connection, so once a
        // PING is answered, they are known: how many streams the backend allows.
        match tokio::time::timeout_at(deadline, settings).await {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => return Err(ConnectError::Io(std::io::Error::other(error))),
            Ok(Err(_)) => {
                return Err(ConnectError::Io(std::io::Error::other(
                    "the connection ended during the handshake",
                )))
            }
        }
        Ok(Rc::new(H2Connection {
            sender,
            streams: Cell::new(0),
            closed,
            last_used: Cell::new(Instant::now()),
            idle_timeout,
        }))
    }

    /// Forgets `connection` (it failed): no new stream takes it.
    pub fn remove(&self, key: Key, connection: &Rc<H2Connection>) {
        if let Some(list) = self.lists.borrow_mut().get_mut(&key) {
            list.retain(|c| !Rc::ptr_eq(c, connection));
        }
    }

    /// Closes connections that ended, and those without a stream for their idle
    /// timeout (dropping the last handle to a connection lets h2 close it).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut lists = self.lists.borrow_mut();
        for list in lists.values_mut() {
            list.retain(|c| {
                !c.closed.get() && (c.streams.get() > 0 || c.last_used.get() + c.idle_timeout > now)
            });
        }
        lists.retain(|_, list| !list.is_empty());
    }

    /// Closes every connection once its streams have ended.
    pub fn clear(&self) {
        self.lists.borrow_mut().clear();
    }
}

/// How often a connection is PINGed to prove the backend still answers on it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// A PING unanswered this long ends the connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Drives a connection until it ends: first one PING whose answer says the backend's
/// settings have come (`ready`), then one every [`KEEPALIVE_INTERVAL`]. A connection
/// whose PING goes unanswered for [`KEEPALIVE_TIMEOUT`] is dropped — a backend (or
/// something between) that went silent, idle or not, is found before a request waits on
/// it.
async fn drive<T>(
    connection: ::h2::client::Connection<T, Bytes>,
    ping: Option<::h2::PingPong>,
    ready: tokio::sync::oneshot::Sender<Result<(), ::h2::Error>>,
    addr: SocketAddr,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::pin!(connection);
    let Some(mut ping) = ping else {
        let _ = ready.send(Ok(()));
        if let Err(error) = connection.await {
            tracing::debug!(%addr, %error, "HTTP/2 connection to a backend ended");
        }
        return;
    };
    let settled = tokio::select! {
        ended = &mut connection => Err(ended),
        pong = ping.ping(::h2::Ping::opaque()) => Ok(pong),
    };
    match settled {
        Ok(pong) => {
            let failed = pong.is_err();
            let _ = ready.send(pong.map(|_| ()));
            if failed {
                return;
            }
        }
        Err(ended) => {
            if let Err(error) = ended {
                tracing::debug!(%addr, %error, "HTTP/2 connection to a backend ended");
            }
            return;
        }
    }
    loop {
        let ended = tokio::select! {
            ended = &mut connection => ended,
            () = tokio::time::sleep(KEEPALIVE_INTERVAL) => {
                let answered = tokio::time::timeout(
                    KEEPALIVE_TIMEOUT,
                    ping.ping(::h2::Ping::opaque()),
                );
                tokio::select! {
                    ended = &mut connection => ended,
                    pong = answered => match pong {
                        Ok(Ok(_)) => continue,
                        _ => {
                            tracing::debug!(%addr, "HTTP/2 connection to a backend answered no PING; closed");
                            return;
                        }
                    },
                }
            }
        };
        if let Err(error) = ended {
            tracing::debug!(%addr, %error, "HTTP/2 connection to a backend ended");
        }
        return;
    }
}
