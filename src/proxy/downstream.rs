//! HTTP/1.x toward clients: the loop that serves one client connection. Reading a
//! request head and writing a response head are [`h1::server`]'s; this loop owns the
//! connection around them.
//!
//! An idle connection holds no read buffer, no request state and no task: a connection
//! that waits for its next request gives its read buffer back to its worker's spares
//! once a request has been read to its end, takes one again only when bytes wait, and
//! after a second without a
//! request [`serve`] returns it to be parked by its worker ([`super::parking`]; over
//! TLS, when its session holds nothing decrypted — the session and its 4 KiB record
//! buffer stay). hyper's server, which evenkeel used before,
//! kept two 8 KiB buffers per connection for its whole life: 10,000 idle keep-alive
//! clients cost 21.8 KB each; a parked plain one costs about 500 B
//! (docs/benchmarks.md).
//! The response head and a body that is already at hand go out in one write.
//!
//! What the loop decides (RFC 9112):
//! - `header_timeout` bounds the wait for a head and its reading, the idle time of a
//!   kept-alive connection included; a head [`h1::server`] refuses gets its 400, 417 or
//!   431. The connection closes after either.
//! - `Expect: 100-continue` is answered when the body is first read (once the request
//!   is routed: [`super::read_ahead`]), so a request refused before that never makes
//!   the client send its body.
//! - Keep-alive as the request head allows, but a request body left unread closes the
//!   connection after the response (`Connection: close` says so). A connection
//!   evenkeel closes while the client may still be sending is closed lingering: what
//!   arrives in the next half second is read and dropped, so the answer is not lost to
//!   a reset.
//! - A client that closes its connection while its request is served cancels the
//!   request; a response body that breaks off after its head has gone out cuts the
//!   connection (with a reset when the client could not tell the truncation).
//!
//! Requests are served one at a time; pipelined ones wait in the read buffer.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Response, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::forward::{Client, ProxyBody, Worker};
use super::h1::server::{self, parse_head, Head, ReadError, ResponseFraming};
use super::h1::{self, FieldSpan, Framing};
use super::outbox::{self, pump, Outbox, PumpError};
use super::spill::Spill;
use super::stall::Stall;
use super::tunnel::Tunnel;

/// Response bytes gathered before a write; larger body pieces are written as they are.
const GATHER: usize = 16 * 1024;
/// How long, and how many bytes, a closing connection reads and drops what the
/// client still sends; `LINGER` also bounds the wait to shut its side down (a TLS
/// close_notify).
pub(super) const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;
/// The longest a client may take nothing of a response being written to it (NGINX's
/// `send_timeout` default); then its connection is closed.
const SEND_STALL: Duration = Duration::from_secs(60);
/// The interim response owed to a client that sent `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A client connection's bytes: plain TCP, or TLS over TCP.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + 'static {
    /// Room asked for by the first read of a request. A request whose head and body
    /// arrive together in it (an 8 KiB upload) is read in one system call and goes to
    /// its backend in one write; with 4 KiB it took two of each (strace: 7 system calls
    /// per request against HAProxy's 4, whose buffers are 16 KiB).
    const FIRST_READ: usize;

    /// The TCP socket underneath (to peek for a close, and to set a reset on close).
    fn tcp(&self) -> &TcpStream;

    /// Whether nothing read from the socket waits inside the stream: then readability of
    /// the socket is what tells that the client sent more. Over TLS, decrypted bytes may
    /// wait inside the session, where the socket shows nothing.
    fn holds_nothing_unread(&self) -> bool;

    /// Ready once reading may make progress, so an idle connection can wait without a
    /// read buffer: when the socket is readable, or at once while the stream holds
    /// bytes read ([`Self::holds_nothing_unread`]).
    fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.holds_nothing_unread() {
            self.tcp().poll_read_ready(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    /// While a request is served with its body read: `Ready(true)` once the client has
    /// closed or broken its connection, `Ready(false)` once it sent more (a pipelined
    /// request, which then waits its turn; it may have been read into `read`).
    fn poll_closed(&mut self, read: &mut BytesMut, cx: &mut Context<'_>) -> Poll<bool>;
}

impl ClientStream for TcpStream {
    /// The buffer is taken once bytes wait, and given back after the request.
    const FIRST_READ: usize = 16 * 1024;

    fn tcp(&self) -> &TcpStream {
        self
    }

    fn holds_nothing_unread(&self) -> bool {
        true
    }

    /// Peeks, so a pipelined request stays in the socket.
    fn poll_closed(&mut self, _: &mut BytesMut, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            if ready!(self.poll_read_ready(cx)).is_err() {
                return Poll::Ready(true);
            }
            let mut probe = [MaybeUninit::<u8>::uninit(); 1];
            let peeked = self.try_io(tokio::io::Interest::READABLE, || {
                socket2::SockRef::from(&*self).peek(&mut probe)
            });
            match peeked {
                Ok(0) => return Poll::Ready(true),
                Ok(_) => return Poll::Ready(false),
                // Stale readiness, now cleared: wait for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(true),
            }
        }
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    /// 4 KiB, as measured before TLS connections were parked (16 KiB is not measured
    /// over TLS).
    const FIRST_READ: usize = 4096;

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    /// rustls wants bytes from the socket only when it holds no plaintext (and no
    /// complete record: tokio-rustls decrypts what it reads at once).
    fn holds_nothing_unread(&self) -> bool {
        self.get_ref().1.wants_read()
    }

    /// Reads through the session: the socket's bytes may be only a close_notify (the
    /// client closed properly) or a session message, which a peek cannot tell from a
    /// pipelined request. One read at most (a pipelined request lands in `read`).
    fn poll_closed(&mut self, read: &mut BytesMut, cx: &mut Context<'_>) -> Poll<bool> {
        match ready!(h1::poll_fill(self, read, cx)) {
            Ok(0) | Err(_) => Poll::Ready(true),
            Ok(_) => Poll::Ready(false),
        }
    }
}

/// The client connection, shared by the serving loop and the request body.
struct Inbound<S> {
    stream: S,
    read: BytesMut,
    /// What is left of the current request's body.
    body: Framing,
    /// Bytes of [`CONTINUE`] still to write before the body is read (0: none owed).
    continue_left: usize,
    /// [`CONTINUE`] is written but may not be flushed yet.
    continue_unflushed: bool,
}

type Shared<S> = Rc<RefCell<Inbound<S>>>;

/// A client's HTTP/1 request body, read from its connection as the backend side asks
/// for it.
pub struct RequestBody<S>(Shared<S>);

impl<S: ClientStream> Body for RequestBody<S> {
    type Data = Bytes;
    type Error = h1::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::Error>>> {
        let mut inbound = self.0.borrow_mut();
        let inbound = &mut *inbound;
        while inbound.continue_left > 0 {
            let from = CONTINUE.len() - inbound.continue_left;
            let written = ready!(Pin::new(&mut inbound.stream).poll_write(cx, &CONTINUE[from..]))?;
            if written == 0 {
                return Poll::Ready(Some(Err(io::Error::from(io::ErrorKind::WriteZero).into())));
            }
            inbound.continue_left -= written;
            // Out of a TLS session's buffer too: the client waits for it to send.
            inbound.continue_unflushed = inbound.continue_left == 0;
        }
        if inbound.continue_unflushed {
            ready!(Pin::new(&mut inbound.stream).poll_flush(cx))?;
            inbound.continue_unflushed = false;
        }
        let piece = ready!(h1::poll_body(
            &mut inbound.stream,
            &mut inbound.read,
            &mut inbound.body,
            cx
        ));
        Poll::Ready(piece.map(|piece| piece.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.0.borrow().body == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.0.borrow().body {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

/// What became of a connection [`serve`] served.
pub enum Served<S> {
    /// It closed, or is closed by now.
    Closed,
    /// The connection waits for its next request with nothing read of it: it can wait
    /// parked ([`super::parking`]) until `head_by`, its deadline for that head.
    Idle {
        /// The connection.
        stream: S,
        /// When the next request head must have been read.
        head_by: Instant,
    },
}

/// Serves the HTTP/1 connection `stream` from `client` on listener `listener` until
/// it closes, fails, breaks the protocol, exceeds `header_timeout` (the first head is
/// due by `first_head_by`), or — once `shutdown` turns true — has finished the request
/// it was serving; or until it has waited a second (`BUSY_GRACE`) for its next request
/// with nothing read of it: then it is [`Served::Idle`], for the caller to park, with
/// neither a buffer nor a task (over TLS, the caller parks it only when the session
/// holds nothing decrypted: [`ClientStream::holds_nothing_unread`]).
///
/// Requests are served in a boxed future that stays while requests keep coming, so a
/// busy connection allocates it once, not per request.
pub async fn serve<S: ClientStream>(
    stream: S,
    worker: Rc<Worker>,
    listener: usize,
    client: Rc<Client>,
    header_timeout: Duration,
    first_head_by: Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> Served<S> {
    let mut connection = Connection {
        inbound: Rc::new(RefCell::new(Inbound {
            stream,
            read: BytesMut::new(),
            body: Framing::Done,
            continue_left: 0,
            continue_unflushed: false,
        })),
        worker,
        listener,
        client,
        header_timeout,
        head_by: first_head_by,
        spans: Vec::new(),
        client_done: false,
        reset: false,
    };
    // One shutdown waiter and one head timer for the connection's busy life, re-armed
    // per request: making and dropping them per request cost about 10% of its
    // instructions.
    let mut stopping = shutdown.clone();
    let stop = stopping.wait_for(|stopping| *stopping);
    tokio::pin!(stop);
    let head_timer = tokio::time::sleep_until(first_head_by.min(Instant::now() + BUSY_GRACE));
    tokio::pin!(head_timer);
    let busy = connection.busy(head_timer.as_mut(), stop.as_mut(), shutdown);
    let switched = match Box::pin(busy).await {
        Phase::Idle => {
            let head_by = connection.head_by;
            return match Rc::try_unwrap(connection.inbound) {
                Ok(inbound) => Served::Idle {
                    stream: inbound.into_inner().stream,
                    head_by,
                },
                // A request body outlived its request (nothing keeps one today): close.
                Err(_) => {
                    tracing::debug!("a request body outlived its request; connection closed");
                    Served::Closed
                }
            };
        }
        Phase::Closing => None,
        Phase::Switched(tunnel) => Some(tunnel),
    };
    // Boxed for the same reason: what closing holds (a linger buffer, a tunnel's copy)
    // would otherwise be part of every connection's task.
    Box::pin(connection.close(switched)).await;
    Served::Closed
}

/// How long a connection that has served a request keeps its task and state for the
/// next; then, with nothing read of it, it is parked (see [`serve`]).
const BUSY_GRACE: Duration = Duration::from_secs(1);

/// What a busy connection turned into.
enum Phase {
    /// It has waited [`BUSY_GRACE`] for its next request with nothing read of it.
    Idle,
    /// It closes.
    Closing,
    /// A 101 made it the client side of a tunnel.
    Switched(Tunnel),
}

/// One client connection, between its phases.
struct Connection<S> {
    inbound: Shared<S>,
    worker: Rc<Worker>,
    listener: usize,
    client: Rc<Client>,
    header_timeout: Duration,
    /// When the next request head must have been read.
    head_by: Instant,
    spans: Vec<FieldSpan>,
    /// The client closed or broke its side: nothing of it is left to read.
    client_done: bool,
    /// Cut the connection with a reset rather than a close (see [`Ended::Aborted`]).
    reset: bool,
}

impl<S: ClientStream> Connection<S> {
    fn timed_out(&self) {
        tracing::debug!(client = %self.client.addr, "no request head within header_timeout; closed");
    }

    /// Serves requests until the connection closes, switches protocols, or has waited
    /// [`BUSY_GRACE`] for its next request with nothing read of it.
    async fn busy(
        &mut self,
        mut head_timer: Pin<&mut Sleep>,
        mut stop: Pin<&mut impl Future>,
        shutdown: &watch::Receiver<bool>,
    ) -> Phase {
        loop {
            let next = tokio::select! {
                biased;
                next = read_head(&self.inbound, &mut self.spans) => next,
                // Before the timer: a connection that turns idle as shutdown comes is
                // closed here (gracefully: a TLS one with its close_notify), not parked.
                _ = stop.as_mut() => return Phase::Closing,
                _ = head_timer.as_mut() => {
                    if Instant::now() >= self.head_by {
                        self.timed_out();
                        return Phase::Closing;
                    }
                    head_timer.as_mut().reset(self.head_by);
                    let mut inbound = self.inbound.borrow_mut();
                    if inbound.read.is_empty() {
                        give_back(std::mem::take(&mut inbound.read), S::FIRST_READ);
                        self.spans = Vec::new();
                        return Phase::Idle;
                    }
                    continue;
                }
            };
            let head = match next {
                Ok(Some(head)) => head,
                Ok(None) | Err(ReadError::Io) => {
                    self.client_done = true;
                    return Phase::Closing;
                }
                Err(ReadError::Malformed) => {
                    refuse(&self.inbound, b"400 Bad Request").await;
                    return Phase::Closing;
                }
                Err(ReadError::TooLarge) => {
                    refuse(&self.inbound, b"431 Request Header Fields Too Large").await;
                    return Phase::Closing;
                }
                Err(ReadError::Expectation) => {
                    refuse(&self.inbound, b"417 Expectation Failed").await;
                    return Phase::Closing;
                }
            };
            let version = head.request.version();
            let is_head = head.request.method() == Method::HEAD;
            // A client that asked to switch protocols and was not switched may have sent
            // bytes of the other protocol already: its connection closes after the answer.
            let asked_upgrade = head.asks_upgrade;
            {
                let mut inbound = self.inbound.borrow_mut();
                inbound.body = head.framing;
                inbound.continue_left = if head.expects_continue
                    && version == Version::HTTP_11
                    && head.framing != Framing::Done
                {
                    CONTINUE.len()
                } else {
                    0
                };
            }
            let request = head.request.map(|()| RequestBody(Rc::clone(&self.inbound)));
            let handled = Rc::clone(&self.worker).handle(
                request,
                Some(head.fields),
                self.listener,
                Rc::clone(&self.client),
                asked_upgrade,
            );
            tokio::pin!(handled);
            // A client that closes its connection while its request is served cancels it:
            // the upstream exchange is dropped, and its backend connection with it.
            let mut response = tokio::select! {
                biased;
                Ok(response) = &mut handled => response,
                () = client_gone(&self.inbound) => {
                    tracing::debug!(client = %self.client.addr, "the client closed its connection; request cancelled");
                    self.client_done = true;
                    return Phase::Closing;
                }
            };
            // A body left unread (a refusal, a client that never got its 100 Continue)
            // cannot be skipped safely: close after this response.
            let body_read = self.inbound.borrow().body == Framing::Done;
            let keep_alive = head.keep_alive && body_read && !asked_upgrade && !*shutdown.borrow();
            let tunnel = response.body_mut().take_tunnel();
            match write_response(&self.inbound, response, is_head, version, keep_alive).await {
                Ok(_) if tunnel.is_some() => return Phase::Switched(tunnel.expect("checked")),
                Ok(true) => {}
                Ok(false) => return Phase::Closing,
                Err(Ended::Client(e)) => {
                    tracing::debug!(client = %self.client.addr, error = %e, "writing a response failed");
                    // A client that takes nothing would not take a graceful close either
                    // (over TLS, the close_notify waits behind the unsent tail): reset.
                    self.reset = true;
                    return Phase::Closing;
                }
                Err(Ended::Aborted { close_delimited }) => {
                    self.reset = close_delimited;
                    return Phase::Closing;
                }
            }
            // `header_timeout` bounds the wait for the next head; the connection turns
            // idle sooner.
            let now = Instant::now();
            self.head_by = now + self.header_timeout;
            head_timer
                .as_mut()
                .reset(self.head_by.min(now + BUSY_GRACE));
            // Waiting for the next request: no buffer unless one is already pipelined.
            let mut inbound = self.inbound.borrow_mut();
            if inbound.read.is_empty() {
                give_back(std::mem::take(&mut inbound.read), S::FIRST_READ);
            }
        }
    }

    /// Closes the connection: runs the tunnel a 101 opened, or resets, or shuts our
    /// side and lingers.
    async fn close(self, switched: Option<Tunnel>) {
        let Ok(inbound) = Rc::try_unwrap(self.inbound) else {
            return; // a request body outlived its request: just close
        };
        let Inbound {
            mut stream, read, ..
        } = inbound.into_inner();
        if let Some(tunnel) = switched {
            // What the client sent behind its request is the tunnel's first bytes; each
            // side's end is passed on to the other, so there is nothing left to close.
            tunnel.run(&mut stream, read).await;
            return;
        }
        if self.reset {
            let _ = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO));
            return;
        }
        // Our side first, so what was written reaches the client before the close. Over
        // TLS this writes (close_notify, and whatever the session still holds): bounded,
        // so a client that stops reading cannot keep the connection, and its slot, open.
        let _ = tokio::time::timeout(LINGER, stream.shutdown()).await;
        if !self.client_done {
            // Lingering close (RFC 9112 §9.6): closing with unread bytes from the client
            // would reset the connection and could destroy the answer just sent (a 400,
            // a 431, a response whose request body was not read), so read and drop what
            // still comes, briefly.
            let linger = async {
                let mut sink = [0u8; 4096];
                let mut total = 0;
                while let Ok(read @ 1..) = stream.read(&mut sink).await {
                    total += read;
                    if total > LINGER_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, linger).await;
        }
    }
}

/// Resolves when the client closes (or breaks) its connection while its request is
/// being served. It does not look while the request body is still being read (that
/// is the body's to read), and stops looking once the client sends more (a pipelined
/// request, which waits its turn).
async fn client_gone<S: ClientStream>(inbound: &Shared<S>) {
    let mut pipelined = false;
    poll_fn(|cx| {
        let mut inbound = inbound.borrow_mut();
        let inbound = &mut *inbound;
        if pipelined || inbound.body != Framing::Done || !inbound.read.is_empty() {
            return Poll::Pending;
        }
        if ready!(inbound.stream.poll_closed(&mut inbound.read, cx)) {
            Poll::Ready(())
        } else {
            pipelined = true;
            Poll::Pending
        }
    })
    .await
}

/// Read buffers a worker keeps for its connections' next requests at most (1 MiB of
/// plain connections' 16 KiB first reads, 256 KiB of TLS ones' 4 KiB).
const SPARE_READS: usize = 64;

/// A worker's spare read buffers, and whether one was taken since the last sweep.
struct Spares {
    buffers: Vec<BytesMut>,
    taken: bool,
}

thread_local! {
    /// Each worker's spare read buffers: a connection takes one when bytes of its next
    /// request arrive and gives it back once the request is served, so a busy worker
    /// allocates none per request, and a connection waiting for its next request
    /// holds none. (Two allocations per request were: the buffer, and the shared
    /// header its head's bytes needed once split off; callgrind, session 16.)
    static SPARES: RefCell<Spares> = const {
        RefCell::new(Spares { buffers: Vec::new(), taken: false })
    };
}

/// A read buffer with room for exactly `size` bytes: a spare one, or a new one.
fn take_spare(size: usize) -> BytesMut {
    SPARES
        .with(|spares| {
            let mut spares = spares.borrow_mut();
            spares.taken = true;
            // Plain and TLS connections' buffers differ in size; the newest that fits.
            let found = spares.buffers.iter().rposition(|b| b.capacity() == size)?;
            Some(spares.buffers.swap_remove(found))
        })
        .unwrap_or_else(|| BytesMut::with_capacity(size))
}

/// Keeps the emptied read buffer `buffer`, taken with room for `size` bytes, as a
/// spare — only once nothing else shares its memory (the request's head and body
/// pieces split off it are gone), so that it takes `size` bytes again from the start
/// of its allocation, and only if that allocation is `size` bytes (a buffer that grew
/// for a large head or body is freed).
fn give_back(mut buffer: BytesMut, size: usize) {
    // With room for `size` left, `try_reclaim` would keep the buffer where it is, after
    // pieces that may still be alive; with less, it reclaims the allocation's start,
    // which it does only when no other handle shares it.
    if !buffer.is_empty()
        || buffer.capacity() >= size
        || !buffer.try_reclaim(size)
        || buffer.capacity() != size
    {
        return;
    }
    SPARES.with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.buffers.len() < SPARE_READS {
            spares.buffers.push(buffer);
        }
    });
}

/// Frees this worker's spare read buffers if none was taken since the last call (once
/// a second, from the worker's sweep): an idle worker keeps none.
pub(super) fn free_unused_spares() {
    SPARES.with(|spares| {
        let mut spares = spares.borrow_mut();
        if !std::mem::take(&mut spares.taken) {
            spares.buffers = Vec::new();
        }
    });
}

/// Reads the next request head; `None` when the client closed between requests.
async fn read_head<S: ClientStream>(
    inbound: &Shared<S>,
    spans: &mut Vec<FieldSpan>,
) -> Result<Option<Head>, ReadError> {
    loop {
        {
            let mut inbound = inbound.borrow_mut();
            if !inbound.read.is_empty() {
                if let Some(head) = parse_head(&mut inbound.read, spans)? {
                    return Ok(Some(head));
                }
            }
        }
        let read = poll_fn(|cx| {
            let mut inbound = inbound.borrow_mut();
            let inbound = &mut *inbound;
            if inbound.read.capacity() == 0 {
                // Idle: take a buffer only once there is something to read.
                ready!(inbound.stream.poll_idle(cx))?;
                inbound.read = take_spare(S::FIRST_READ);
            }
            h1::poll_fill(&mut inbound.stream, &mut inbound.read, cx)
        })
        .await;
        match read {
            Ok(0) if inbound.borrow().read.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(ReadError::Io),
            Ok(_) => {}
        }
    }
}

/// Writes `response`; whether the connection stays open after it.
async fn write_response<S: ClientStream>(
    inbound: &Shared<S>,
    response: Response<ProxyBody>,
    is_head: bool,
    version: Version,
    keep_alive: bool,
) -> Result<bool, Ended> {
    let (parts, mut body) = response.into_parts();
    let fields = body.take_fields();
    let mut outbox = Outbox::pooled();
    let out = outbox.head_mut();
    let ResponseFraming {
        no_body,
        chunked,
        has_length,
        keep_alive,
    } = server::write_response_head(
        out,
        &parts,
        fields.as_ref(),
        &body,
        is_head,
        version,
        keep_alive,
    );
    if no_body {
        drop(body);
        write_all(inbound, out).await.map_err(Ended::Client)?;
        return Ok(keep_alive);
    }
    let mut stall = Stall::new(SEND_STALL);
    // Bytes written, head included: what the access log reports is what the client got.
    let head_len = out.len() as u64;
    let mut written = 0u64;
    let mut writer = |cx: &mut Context<'_>, slices: &[io::IoSlice<'_>]| {
        let wrote =
            outbox::poll_write_slices(Pin::new(&mut inbound.borrow_mut().stream), cx, slices);
        if let Poll::Ready(Ok(n)) = &wrote {
            written += *n as u64;
        }
        wrote
    };
    // Read ahead of a slow client as far as the pool allows, so the backend's
    // connection is free once its response is read.
    let (read_ahead, mut spill) = match body.read_ahead() {
        Some((read_ahead, spill)) => (read_ahead.max(GATHER), spill),
        None => (GATHER, Spill::new(0, None)),
    };
    let close_delimited = !chunked && !has_length && !keep_alive && version == Version::HTTP_10;
    let pumped = pump(
        &mut body,
        &mut outbox,
        chunked,
        read_ahead,
        Some(&mut spill),
        &mut writer,
        &mut stall,
    )
    .await;
    body.record_sent(written.saturating_sub(head_len), pumped.is_ok());
    match pumped {
        Ok(()) => Ok(keep_alive),
        Err(PumpError::Body(error)) => {
            tracing::debug!(%error, "the response broke off; the client's connection is cut");
            Err(Ended::Aborted { close_delimited })
        }
        Err(e) => Err(Ended::Client(pump_error(e))),
    }
}

/// Why a response could not be written to its end.
enum Ended {
    /// Writing to the client failed or stalled.
    Client(io::Error),
    /// The backend's body broke off after the response had begun; a response whose
    /// end is the connection's close (HTTP/1.0 without a length) is then cut with a
    /// reset, so the client cannot take it for complete.
    Aborted {
        /// The client could not tell a truncated body from a whole one.
        close_delimited: bool,
    },
}

/// A failure to write to the client as an I/O error.
fn pump_error<E: std::fmt::Display>(error: PumpError<E>) -> io::Error {
    match error {
        PumpError::Write(e) => e,
        PumpError::Stalled { .. } => io::ErrorKind::TimedOut.into(),
        PumpError::Body(e) => io::Error::other(e.to_string()),
    }
}

/// Answers a request that cannot be served with `status` (code and reason), and says
/// the connection closes.
async fn refuse<S: ClientStream>(inbound: &Shared<S>, status: &[u8]) {
    let _ = write_all(inbound, &server::refusal(status)).await;
}

/// Writes `bytes` to the client; fails if the client takes nothing for [`SEND_STALL`].
async fn write_all<S: ClientStream>(inbound: &Shared<S>, bytes: &[u8]) -> io::Result<()> {
    let mut writer = |cx: &mut Context<'_>, slices: &[io::IoSlice<'_>]| {
        outbox::poll_write_slices(Pin::new(&mut inbound.borrow_mut().stream), cx, slices)
    };
    outbox::write_all(&mut writer, bytes, &mut Stall::new(SEND_STALL)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spares() -> usize {
        SPARES.with(|spares| spares.borrow().buffers.len())
    }

    /// A read buffer goes back to the spares only once the head split off it is gone,
    /// and then from the start of its allocation; one that grew is freed.
    #[test]
    fn a_read_buffer_is_kept_only_once_nothing_shares_it() {
        let size = 16 * 1024;
        let mut read = take_spare(size);
        let start = read.as_ptr();
        read.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let head = read.split_to(read.len()).freeze();
        give_back(std::mem::take(&mut read), size);
        assert_eq!(spares(), 0, "its head still shares it");

        let mut read = take_spare(size);
        read.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let again = read.split_to(read.len()).freeze();
        drop(again);
        give_back(read, size);
        assert_eq!(spares(), 1);
        let reused = take_spare(size);
        assert_eq!(reused.capacity(), size);
        assert_ne!(
            reused.as_ptr(),
            start,
            "the first is still held by its head"
        );
        assert_eq!(&head[..4], b"GET ", "and its bytes are untouched");

        // Room for a whole first read left behind a head still alive (a buffer that
        // grew for a large head): not kept, or the head's allocation would stay with it.
        let mut large = BytesMut::with_capacity(2 * size);
        large.extend_from_slice(&[b'h'; 100]);
        let large_head = large.split_to(100).freeze();
        give_back(large, size);
        assert_eq!(spares(), 0, "{} bytes still share it", large_head.len());

        let mut grown = reused;
        grown.extend_from_slice(&vec![b'x'; size + 1]);
        let _ = grown.split_to(grown.len());
        give_back(grown, size);
        assert_eq!(spares(), 0, "a buffer that grew is freed");
    }

    /// Plain and TLS connections' buffers differ in size: each gets its own kind, and
    /// an unused second frees them all.
    #[test]
    fn each_size_gets_its_own_spares_and_idle_ones_are_freed() {
        let used = |size: usize| {
            let mut read = BytesMut::with_capacity(size);
            read.extend_from_slice(b"x");
            let _ = read.split_to(1);
            read
        };
        give_back(used(4096), 4096);
        give_back(used(16 * 1024), 16 * 1024);
        give_back(used(4096), 4096);
        assert_eq!(spares(), 3);
        assert_eq!(take_spare(16 * 1024).capacity(), 16 * 1024);
        assert_eq!(take_spare(4096).capacity(), 4096);
        assert_eq!(spares(), 1);
        free_unused_spares();
        assert_eq!(spares(), 1, "one was taken since the last sweep");
        free_unused_spares();
        assert_eq!(spares(), 0);
    }
}
