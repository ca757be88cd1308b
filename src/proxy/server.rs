//! Listeners and worker threads.
//!
//! Every worker thread runs its own `current_thread` tokio runtime and `LocalSet`, and
//! accepts on its own `SO_REUSEPORT` socket for each listener, so the kernel spreads
//! connections over workers and a connection stays on one thread from accept to close
//! (DESIGN "Performance architecture": this design reached NGINX parity where the
//! work-stealing runtime cost 20–40% more CPU per request). Sockets are bound before
//! the threads start: a listener on port 0 gets its port from the first bind, and the
//! other workers bind that same port.
//!
//! Connections speak HTTP/1.1 or HTTP/2 with prior knowledge (detected from the first
//! bytes). `header_timeout` bounds how long a client may take to send a request head
//! (including the first bytes, before the protocol is known);
//! `max_connections` bounds the connections a listener serves at once (further ones
//! wait in the kernel's accept backlog).
//!
//! Shutdown: listeners close at once, each connection finishes the request it is
//! serving and closes, and after `drain_timeout` whatever remains is cut.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use socket2::{Domain, Protocol, Socket, Type};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::LocalSet;

use super::budget::{ByteBudget, READ_AHEAD_BUDGET, SPILL_BUDGET};
use super::downstream::{self, ClientStream};
use super::forward::{Client, ProxyBody, Worker};
use super::h1::MAX_HEAD_BYTES;
use super::h2::connections::H2Connections;
use super::parking::{Parkable, Parking};
use super::tls::{ClientTls, ListenerAcceptor};
use super::upstream::UpstreamPool;
use crate::config::Listener;
use crate::runtime::Runtime;

/// How often idle upstream connections are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Streams an HTTP/2 client may have open at once on one connection.
const H2_MAX_STREAMS: u32 = 128;
/// Streams an HTTP/2 client may reset before evenkeel has served them (h2's default).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams evenkeel may reset for a client's protocol errors before it sends GOAWAY.
const H2_MAX_LOCAL_RESETS: usize = 1024;

/// How to run the proxy.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Write one access-log line per request.
    pub access_log: bool,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be bound.
    #[error("cannot listen on {addr} (listener {listener:?}): {source}")]
    Bind {
        /// The listener's name.
        listener: String,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// A worker thread or its runtime could not be created.
    #[error("cannot start worker thread: {0}")]
    Thread(io::Error),
}

/// A running proxy.
pub struct Running {
    /// Each listener's name and the address it is bound to (port 0 resolved).
    pub listeners: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting and lets connections finish (up to the drain timeout).
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until every worker has stopped.
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Binds every listener and starts the workers.
pub fn start(runtime: Arc<Runtime>, options: Options) -> Result<Running, StartError> {
    let snapshot = runtime.snapshot();
    let config = &snapshot.config;
    let workers = options.workers.max(1);
    // sockets[w][l]: worker w's socket for listener l.
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for listener in &config.listeners {
        let bind_error = |source| StartError::Bind {
            listener: listener.name.clone(),
            addr: listener.listen,
            source,
        };
        let first = bind_reuseport(listener.listen).map_err(bind_error)?;
        let addr = first.local_addr().map_err(bind_error)?;
        sockets[0].push(first);
        for worker_sockets in sockets.iter_mut().skip(1) {
            worker_sockets.push(bind_reuseport(addr).map_err(bind_error)?);
        }
        bound.push((listener.name.clone(), addr));
    }
    let limits: Vec<Arc<Semaphore>> = config
        .listeners
        .iter()
        .map(|l| Arc::new(Semaphore::new(l.max_connections as usize)))
        .collect();
    let (shutdown, _) = watch::channel(false);
    // spreads[l]: how listener l's connections are spread; inboxes[w][l]: what worker w
    // is handed for listener l.
    let mut inboxes: Vec<Vec<mpsc::UnboundedReceiver<Handoff>>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut spreads = Vec::new();
    for _ in &config.listeners {
        let mut handoff = Vec::new();
        for inbox in &mut inboxes {
            let (sender, receiver) = mpsc::unbounded_channel();
            handoff.push(sender);
            inbox.push(receiver);
        }
        spreads.push(Arc::new(Spread {
            open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            handoff,
        }));
    }
    let mut threads = Vec::new();
    for (id, (worker_sockets, inbox)) in sockets.into_iter().zip(inboxes).enumerate() {
        let runtime = Arc::clone(&runtime);
        let limits = limits.clone();
        let shutdown = shutdown.subscribe();
        let options = options.clone();
        let spreads = spreads.clone();
        let bound_addrs: Vec<SocketAddr> = bound.iter().map(|(_, addr)| *addr).collect();
        let thread = std::thread::Builder::new()
            .name(format!("evenkeel-worker-{id}"))
            .spawn(move || {
                let accepting = Accepting {
                    id,
                    sockets: worker_sockets,
                    inbox,
                    spreads,
                    limits,
                    bound: bound_addrs,
                };
                run_worker(runtime, accepting, shutdown, options)
            })
            .map_err(StartError::Thread)?;
        threads.push(thread);
    }
    Ok(Running {
        listeners: bound,
        shutdown,
        threads,
    })
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What a worker accepts from: its sockets (one per listener), the connections other
/// workers hand it, and how each listener's connections are spread.
struct Accepting {
    id: usize,
    sockets: Vec<std::net::TcpListener>,
    inbox: Vec<mpsc::UnboundedReceiver<Handoff>>,
    spreads: Vec<Arc<Spread>>,
    limits: Vec<Arc<Semaphore>>,
    /// Every listener's bound address, in config order.
    bound: Vec<SocketAddr>,
}

fn run_worker(
    runtime: Arc<Runtime>,
    accepting: Accepting,
    shutdown: watch::Receiver<bool>,
    options: Options,
) {
    let Accepting {
        id,
        sockets,
        inbox,
        spreads,
        limits,
        bound,
    } = accepting;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a worker runtime");
            return;
        }
    };
    let drain_timeout = runtime.snapshot().config.drain_timeout;
    let listeners: Vec<Listener> = runtime.snapshot().config.listeners.clone();
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        let worker = Rc::new(Worker {
            runtime,
            upstream: UpstreamPool::default(),
            h2: H2Connections::default(),
            access_log: options.access_log,
            read_ahead: Rc::new(ByteBudget::new(READ_AHEAD_BUDGET)),
            spill: Rc::new(ByteBudget::new(SPILL_BUDGET)),
            bound,
        });
        let connections = Rc::new(Connections::default());
        let mut http2 = http2::Builder::new(LocalExec);
        http2
            .timer(TokioTimer::new())
            // Streams at once per connection, and the rapid-reset bounds (CVE-2023-44487):
            // a client that resets more streams than this before they are served, or
            // makes evenkeel reset this many, gets GOAWAY.
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_pending_accept_reset_streams(Some(H2_MAX_PENDING_RESETS))
            .max_local_error_reset_streams(Some(H2_MAX_LOCAL_RESETS))
            .max_header_list_size(MAX_HEAD_BYTES as u32);
        let http2 = Rc::new(http2);
        for ((index, socket), inbox) in sockets.into_iter().enumerate().zip(inbox) {
            let listener = match tokio::net::TcpListener::from_std(socket) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot register a listener");
                    continue;
                }
            };
            let serving = Rc::new(Serving {
                worker_id: id,
                listener: index,
                tcp: listeners[index].mode == crate::config::ListenerMode::Tcp,
                header_timeout: listeners[index].header_timeout,
                spread: Arc::clone(&spreads[index]),
                worker: Rc::clone(&worker),
                connections: Rc::clone(&connections),
                http2: Rc::clone(&http2),
                shutdown: shutdown.clone(),
                tls: RefCell::new(None),
                parking: Parking::default(),
                parking_tls: Parking::default(),
            });
            if !serving.tcp {
                tokio::task::spawn_local(run_parking::<tokio::net::TcpStream>(Rc::clone(&serving)));
                tokio::task::spawn_local(run_parking::<
                    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
                >(Rc::clone(&serving)));
            }
            tokio::task::spawn_local(accept_loop(
                listener,
                Arc::clone(&limits[index]),
                Rc::clone(&serving),
            ));
            tokio::task::spawn_local(take_handoffs(inbox, serving));
        }
        let sweeper = Rc::clone(&worker);
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                sweeper.upstream.sweep();
                sweeper.h2.sweep();
                super::access::flush();
                super::downstream::free_unused_spares();
                return_freed_memory();
            }
        });
        let mut stop = shutdown.clone();
        let _ = stop.wait_for(|stopping| *stopping).await;
        worker.upstream.clear();
        worker.h2.clear();
        // Connections finish the request they serve, then close; cut the rest late.
        let _ = tokio::time::timeout(drain_timeout, connections.all_closed()).await;
    });
    // The connections still open after the drain are cut here; their requests' access
    // lines are written as they go, so flush after.
    {
        let _entered = rt.enter();
        drop(local);
    }
    super::access::flush();
}

/// Counts a worker's open client connections, so shutdown can wait for them.
#[derive(Default)]
struct Connections {
    open: Cell<usize>,
    closed: Notify,
}

impl Connections {
    fn opened(self: &Rc<Self>) -> ConnectionGuard {
        self.open.set(self.open.get() + 1);
        ConnectionGuard(Rc::clone(self))
    }

    async fn all_closed(&self) {
        while self.open.get() > 0 {
            self.closed.notified().await;
        }
    }
}

struct ConnectionGuard(Rc<Connections>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
        self.0.closed.notify_waiters();
    }
}

/// Spreads one listener's client connections evenly over the workers. The kernel
/// hashes connections over the workers' `SO_REUSEPORT` sockets, which with a few dozen
/// connections leaves one worker with clearly more than another (measured with 64 wrk
/// connections and 2 workers: 54% and 46% of the CPU), and the busier one's queue
/// shows in the tail latency. A worker that accepts a connection while it serves more
/// than one more of this listener's connections than the least busy worker hands the
/// connection to that worker instead (the cost is paid once per connection).
struct Spread {
    /// Open connections of this listener per worker.
    open: Vec<AtomicUsize>,
    /// Where to hand a connection to each worker.
    handoff: Vec<mpsc::UnboundedSender<Handoff>>,
}

impl Spread {
    /// The worker that should serve a connection `me` just accepted; counted as open
    /// there from now on.
    fn place(&self, me: usize) -> usize {
        let (least, fewest) = self
            .open
            .iter()
            .map(|open| open.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, open)| open)
            .unwrap_or((me, 0));
        let mine = self.open[me].load(Ordering::Relaxed);
        let to = if mine > fewest + 1 { least } else { me };
        self.open[to].fetch_add(1, Ordering::Relaxed);
        to
    }
}

/// A connection one worker accepted and hands to another.
struct Handoff {
    stream: std::net::TcpStream,
    client: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// What serving one listener's connections on one worker needs.
struct Serving {
    worker_id: usize,
    listener: usize,
    /// A `mode = "tcp"` listener ([`super::layer4`]); its mode never changes by reload.
    tcp: bool,
    header_timeout: Duration,
    spread: Arc<Spread>,
    worker: Rc<Worker>,
    connections: Rc<Connections>,
    http2: Rc<http2::Builder<LocalExec>>,
    shutdown: watch::Receiver<bool>,
    /// The handshake for the listener's TLS in force (made again when a reload brings
    /// new certificates).
    tls: RefCell<Option<ListenerAcceptor>>,
    /// Its plain HTTP/1 connections waiting for their next request.
    parking: Parking<Parked<tokio::net::TcpStream>>,
    /// Its HTTP/1 connections over TLS waiting for their next request.
    parking_tls: Parking<Parked<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>>,
}

impl Serving {
    /// The TLS handshake for a new connection, per the snapshot in force; `None`:
    /// the listener serves plain HTTP.
    fn acceptor(&self) -> Option<ListenerAcceptor> {
        let snapshot = self.worker.runtime.snapshot();
        let tls = snapshot.config.listeners.get(self.listener)?.tls.as_ref()?;
        let mut cached = self.tls.borrow_mut();
        match &*cached {
            Some(acceptor) if Arc::ptr_eq(&acceptor.tls, tls) => Some(acceptor.clone()),
            _ => {
                let acceptor = ListenerAcceptor::new(tls);
                *cached = Some(acceptor.clone());
                Some(acceptor)
            }
        }
    }
}

/// Counts a connection as open on its worker (in [`Spread`]) while it lives.
struct Placed(Arc<Spread>, usize);

impl Drop for Placed {
    fn drop(&mut self) {
        self.0.open[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    limit: Arc<Semaphore>,
    serving: Rc<Serving>,
) {
    let mut shutdown = serving.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stopping| *stopping) => return,
            accepted = accept(&listener, &limit) => accepted,
        };
        let (stream, client, permit) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let to = serving.spread.place(serving.worker_id);
        if to == serving.worker_id {
            let placed = Placed(Arc::clone(&serving.spread), to);
            serve_connection(&serving, stream, client, permit, placed);
            continue;
        }
        // Counted on the other worker from here on (`place` did it).
        let handed = stream.into_std().map(|stream| Handoff {
            stream,
            client,
            permit,
        });
        match handed {
            Ok(handoff) => {
                if let Err(returned) = serving.spread.handoff[to].send(handoff) {
                    // That worker has stopped: nobody serves it; close.
                    serving.spread.open[to].fetch_sub(1, Ordering::Relaxed);
                    drop(returned);
                }
            }
            Err(e) => {
                serving.spread.open[to].fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(%client, error = %e, "cannot hand a connection over; closed");
            }
        }
    }
}

/// Serves the connections other workers hand this one, until shutdown.
async fn take_handoffs(mut inbox: mpsc::UnboundedReceiver<Handoff>, serving: Rc<Serving>) {
    let mut shutdown = serving.shutdown.clone();
    loop {
        let handoff = tokio::select! {
            _ = shutdown.wait_for(|stopping| *stopping) => return,
            handoff = inbox.recv() => handoff,
        };
        let Some(Handoff {
            stream,
            client,
            permit,
        }) = handoff
        else {
            return;
        };
        // `place` already counted it here.
        let placed = Placed(Arc::clone(&serving.spread), serving.worker_id);
        match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => serve_connection(&serving, stream, client, permit, placed),
            Err(e) => tracing::debug!(%client, error = %e, "cannot take a connection over; closed"),
        }
    }
}

/// Hands the memory this worker's connections freed back to the system. mimalloc, the
/// binary's allocator, returns freed pages only after a delay and only when the thread
/// allocates or frees again, so a worker that went quiet kept what its connections
/// freed as they turned idle: 5.6 KB per connection of 500 idle ones, 2.1 KB with it
/// (bench/idle_connections.py). Once a second, so it costs nothing per request.
#[allow(unsafe_code)]
fn return_freed_memory() {
    // SAFETY: `mi_collect` takes no pointer, has no precondition, and may be called on
    // any thread at any time; with `force = false` it only tidies this thread's heap
    // and returns pages that no live allocation uses. Without mimalloc as the global
    // allocator (the library's own tests) it tidies an empty heap.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// Serves one client connection on this worker, in a task of its own.
fn serve_connection(
    serving: &Rc<Serving>,
    stream: tokio::net::TcpStream,
    client: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    placed: Placed,
) {
    let _ = stream.set_nodelay(true);
    let held = Held {
        _permit: permit,
        _open: serving.connections.opened(),
        _placed: placed,
    };
    let serving = Rc::clone(serving);
    // Only what a plain HTTP/1 connection is served in is inline in its task; the TCP,
    // TLS and HTTP/2 paths are boxed, so their larger state is not part of every
    // connection's task.
    tokio::task::spawn_local(async move {
        let mut shutdown = serving.shutdown.clone();
        let header_timeout = serving.header_timeout;
        if serving.tcp {
            let worker = Rc::clone(&serving.worker);
            let layer4 =
                super::layer4::serve(stream, worker, serving.listener, client, header_timeout);
            Box::pin(layer4).await;
        } else if let Some(tls) = serving.acceptor() {
            Box::pin(serve_tls(
                &serving,
                tls,
                stream,
                client,
                held,
                &mut shutdown,
            ))
            .await;
            return;
        } else {
            let protocol = tokio::select! {
                protocol = detect_protocol(&stream, header_timeout) => protocol,
                _ = shutdown.wait_for(|stopping| *stopping) => None,
            };
            match protocol {
                None => tracing::debug!(%client, "client sent no request head in time; closed"),
                Some(Speaks::Http1) => {
                    let first_head_by = tokio::time::Instant::now() + header_timeout;
                    let parked = Parked {
                        stream,
                        client,
                        tls: None,
                        _held: held,
                    };
                    serve_http1(&serving, parked, first_head_by, &mut shutdown).await;
                    return;
                }
                Some(Speaks::Http2) => {
                    let peer = Rc::new(Client::new(client));
                    Box::pin(serve_http2(&serving, stream, peer, &mut shutdown)).await;
                }
            }
        }
        drop(held);
    });
}

/// What keeps a client connection counted while it is open: its place under the
/// listener's `max_connections`, in the worker's open connections (shutdown waits for
/// them), and in the spread over workers.
struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _open: ConnectionGuard,
    _placed: Placed,
}

/// An HTTP/1 client connection between requests, parked in its listener's [`Parking`]
/// on this worker: all it keeps while it waits (its task and request state are gone).
struct Parked<S> {
    stream: S,
    client: SocketAddr,
    /// Its TLS session's record; `None`: plain HTTP.
    tls: Option<Box<ClientTls>>,
    _held: Held,
}

impl<S: ClientStream> Parkable for Parked<S> {
    fn socket(&self) -> &tokio::net::TcpStream {
        self.stream.tcp()
    }
}

/// A client stream that can be parked, and where its parked connections wait.
trait Parks: ClientStream + Sized {
    fn parking(serving: &Serving) -> &Parking<Parked<Self>>;

    /// Closes a parked connection whose wait ended without a request (its
    /// `header_timeout`, or shutdown).
    fn close_parked(parked: Parked<Self>);
}

impl Parks for tokio::net::TcpStream {
    fn parking(serving: &Serving) -> &Parking<Parked<Self>> {
        &serving.parking
    }

    fn close_parked(parked: Parked<Self>) {
        tracing::debug!(client = %parked.client, "parked connection closed (header_timeout or shutdown)");
    }
}

impl Parks for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn parking(serving: &Serving) -> &Parking<Parked<Self>> {
        &serving.parking_tls
    }

    /// With a close_notify, as a TLS connection closed by its serving task is (bounded:
    /// a client that takes nothing cannot hold it).
    fn close_parked(mut parked: Parked<Self>) {
        tracing::debug!(client = %parked.client, "parked TLS connection closed (header_timeout or shutdown)");
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(
                downstream::LINGER,
                tokio::io::AsyncWriteExt::shutdown(&mut parked.stream),
            )
            .await;
        });
    }
}

/// Serves an HTTP/1 connection until it closes, or turns idle: then it is parked (or,
/// with its next request already there, served on).
async fn serve_http1<S: Parks>(
    serving: &Rc<Serving>,
    mut connection: Parked<S>,
    mut head_by: tokio::time::Instant,
    shutdown: &mut watch::Receiver<bool>,
) {
    loop {
        let client = Client::new(connection.client);
        let client = match &connection.tls {
            Some(tls) => client.with_tls(ClientTls::clone(tls)),
            None => client,
        };
        let served = downstream::serve(
            connection.stream,
            Rc::clone(&serving.worker),
            serving.listener,
            Rc::new(client),
            serving.header_timeout,
            head_by,
            shutdown,
        )
        .await;
        let downstream::Served::Idle {
            stream,
            head_by: by,
        } = served
        else {
            return;
        };
        connection.stream = stream;
        head_by = by;
        if !connection.stream.holds_nothing_unread() {
            continue;
        }
        match S::parking(serving).park(connection, head_by) {
            Ok(()) => return,
            Err(ready) => connection = ready,
        }
    }
}

/// Takes this worker's parked `S` connections of one listener out again until
/// shutdown: those whose next request came are served in a task each, those past
/// their deadline closed, and at shutdown all the others.
async fn run_parking<S: Parks>(serving: Rc<Serving>) {
    let shutdown = serving.shutdown.clone();
    S::parking(&serving)
        .run(
            shutdown,
            |parked, head_by| {
                let serving = Rc::clone(&serving);
                tokio::task::spawn_local(async move {
                    let mut shutdown = serving.shutdown.clone();
                    serve_http1(&serving, parked, head_by, &mut shutdown).await;
                });
            },
            S::close_parked,
        )
        .await;
}

/// Serves a TLS client connection: the handshake, then HTTP/1 or HTTP/2 as ALPN chose.
async fn serve_tls(
    serving: &Rc<Serving>,
    tls: ListenerAcceptor,
    stream: tokio::net::TcpStream,
    client: SocketAddr,
    held: Held,
    shutdown: &mut watch::Receiver<bool>,
) {
    // The handshake counts against `header_timeout`: a client that stalls inside it is
    // cut like one that stalls inside a head.
    let header_timeout = serving.header_timeout;
    let first_head_by = tokio::time::Instant::now() + header_timeout;
    let handshake = tokio::time::timeout_at(first_head_by, tls.acceptor.accept(stream));
    let accepted = tokio::select! {
        accepted = handshake => accepted.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        _ = shutdown.wait_for(|stopping| *stopping) => Err(io::ErrorKind::Interrupted.into()),
    };
    let counters = &serving.worker.runtime.tls;
    let stream = match accepted {
        Ok(stream) => {
            counters.handshakes.fetch_add(1, Ordering::Relaxed);
            stream
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
        Err(e) => {
            let reason = super::tls::failure_reason(&e);
            counters.failed(reason);
            tracing::debug!(%client, error = %e, reason, "TLS handshake failed; closed");
            return;
        }
    };
    let session = stream.get_ref().1;
    let http2 = session.alpn_protocol() == Some(b"h2");
    let server_name = session.server_name().map(str::to_ascii_lowercase);
    let certificate = Arc::clone(super::tls::choose(
        &tls.tls.certificates,
        server_name.as_deref(),
    ));
    let version = super::tls::version_name(session.protocol_version());
    let client_tls = ClientTls {
        server_name,
        certificate,
        version,
    };
    if http2 {
        let peer = Rc::new(Client::new(client).with_tls(client_tls));
        serve_http2(serving, stream, peer, shutdown).await;
        drop(held);
    } else {
        let parked = Parked {
            stream,
            client,
            tls: Some(Box::new(client_tls)),
            _held: held,
        };
        serve_http1(serving, parked, first_head_by, shutdown).await;
    }
}

/// Serves HTTP/2 on a client connection (plain or TLS) until it closes.
async fn serve_http2<S: ClientStream>(
    serving: &Rc<Serving>,
    stream: S,
    peer: Rc<Client>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let worker = Rc::clone(&serving.worker);
    let index = serving.listener;
    let header_timeout = serving.header_timeout;
    let client = peer.addr;
    let activity = Rc::new(Activity::new());
    let streams = Rc::clone(&activity);
    let service = service_fn(move |request| {
        let stream = streams.begin();
        // HTTP/2 has no `Upgrade` (RFC 9113 §8.2.2).
        let handled = Rc::clone(&worker).handle(request, None, index, Rc::clone(&peer), false);
        async move {
            let Ok(response) = handled.await;
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                _stream: stream,
            }))
        }
    });
    let connection = serving
        .http2
        .serve_connection(TokioIo::new(stream), service);
    let idle = activity.idle_for(header_timeout);
    if let Err(e) = drive(connection, shutdown, idle, header_timeout).await {
        tracing::debug!(%client, error = %e, "client connection ended with an error");
    }
}

/// Serves one client connection until it ends, or — once shutdown begins — until it
/// has finished the streams it is serving (GOAWAY). Once `idle` resolves (no stream
/// open) it says GOAWAY too, and closes at the latest `grace` later: hyper waits for
/// a handshake to finish before it sends GOAWAY, and a client that stalls inside
/// the handshake would keep the connection for ever.
async fn drive<C>(
    connection: C,
    shutdown: &mut watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.wait_for(|stopping| *stopping) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = idle => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(grace, connection).await.unwrap_or(Ok(()))
        }
    }
}

/// The streams of an HTTP/2 connection: how many are open (a request being handled
/// or its response body being sent) and when the last one began or ended.
struct Activity {
    open: Cell<usize>,
    last: Cell<tokio::time::Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            open: Cell::new(0),
            last: Cell::new(tokio::time::Instant::now()),
        }
    }

    /// Counts a stream as open until the returned guard is dropped.
    fn begin(self: &Rc<Self>) -> OpenStream {
        self.open.set(self.open.get() + 1);
        self.last.set(tokio::time::Instant::now());
        OpenStream(Rc::clone(self))
    }

    /// Resolves once no stream has been open for `limit`: a client that sends the
    /// preface and nothing more, or holds an idle connection, is let go after
    /// `header_timeout` as an HTTP/1 client would be. (hyper bounds neither: its
    /// `header_read_timeout` is HTTP/1 only.)
    async fn idle_for(self: Rc<Self>, limit: Duration) {
        loop {
            // With streams open, look again a whole `limit` from now.
            let due = if self.open.get() > 0 {
                tokio::time::Instant::now()
            } else {
                self.last.get()
            };
            tokio::time::sleep_until(due + limit).await;
            if self.open.get() == 0 && self.last.get().elapsed() >= limit {
                return;
            }
        }
    }
}

/// One open HTTP/2 stream, counted in its connection's [`Activity`].
struct OpenStream(Rc<Activity>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
        self.0.last.set(tokio::time::Instant::now());
    }
}

/// A response body that keeps its stream counted as open until it is done.
struct Tracked {
    body: ProxyBody,
    _stream: OpenStream,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The HTTP/2 connection preface; a client that starts otherwise speaks HTTP/1.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a client connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Speaks {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// Waits, within `limit`, until the client has sent enough to tell HTTP/1 from HTTP/2
/// (one byte that departs from the HTTP/2 preface, or the whole preface); `None` when
/// it closed or was too slow. hyper's `header_read_timeout` only starts once a
/// connection is handed to it, so without this a client that connects and sends
/// nothing (or a piece of the preface) would hold its connection, and a
/// `max_connections` slot, forever. The bytes are peeked, not read: hyper reads them
/// again (so no rewinding wrapper sits under every later read, as with hyper-util's
/// auto-detection). A slow client may thus take up to twice `header_timeout` for its
/// first head: once here, once in hyper.
async fn detect_protocol(stream: &tokio::net::TcpStream, limit: Duration) -> Option<Speaks> {
    let detect = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) if buf[..n] != H2_PREFACE[..n] => return Some(Speaks::Http1),
                Ok(n) if n == buf.len() => return Some(Speaks::Http2),
                // A piece of the preface: pause, then peek again (peek returns at once
                // while unread bytes wait, so waiting for readiness would spin).
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(limit, detect).await.ok().flatten()
}

async fn accept(
    listener: &tokio::net::TcpListener,
    limit: &Arc<Semaphore>,
) -> io::Result<(
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let permit = Arc::clone(limit)
        .acquire_owned()
        .await
        .map_err(|_| io::Error::other("listener closed"))?;
    let (stream, client) = listener.accept().await?;
    Ok((stream, client, permit))
}

/// Runs hyper's HTTP/2 stream tasks on the worker's `LocalSet`.
#[derive(Clone, Copy, Debug)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(open: &[usize]) -> Spread {
        Spread {
            open: open.iter().map(|&n| AtomicUsize::new(n)).collect(),
            handoff: open.iter().map(|_| mpsc::unbounded_channel().0).collect(),
        }
    }

    #[test]
    fn a_worker_keeps_a_connection_unless_it_serves_two_more_than_the_least_busy() {
        let even = spread(&[2, 1]);
        assert_eq!(even.place(0), 0);
        assert_eq!(even.open[0].load(Ordering::Relaxed), 3);

        let uneven = spread(&[3, 1, 2]);
        assert_eq!(uneven.place(0), 1);
        assert_eq!(uneven.open[1].load(Ordering::Relaxed), 2);
        assert_eq!(uneven.open[0].load(Ordering::Relaxed), 3);

        let alone = spread(&[7]);
        assert_eq!(alone.place(0), 0);
    }
}
