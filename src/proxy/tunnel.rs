//! Upgraded connections (WebSocket and other HTTP/1.1 upgrades): once a backend has
//! answered an upgrade with a 101 that switches to a protocol the client offered, the
//! client's connection and the backend's carry bytes both ways, unread, until either
//! side closes.
//!
//! How an upgrade gets here (RFC 9110 §7.8, RFC 6455 §4):
//! - Only an HTTP/1.1 request with `Connection: upgrade` and an `Upgrade` other than
//!   `h2c` is an upgrade ([`super::headers::upgrade_offer`]); it is routed and balanced
//!   like any request, and goes out with `Connection: upgrade` and the offered
//!   `Upgrade` ([`super::h1::encode`]). Bytes the client sends after the head wait in
//!   its read buffer until the backend answers.
//! - A 101 that names a protocol the request did not offer is a broken response
//!   (502, [`super::h1::response`]): a backend cannot open a tunnel nobody asked for.
//!   Any other answer is an ordinary response, after which both connections close (the
//!   backend's may expect the other protocol; the client may have sent some).
//! - The tunnel counts against its listener's `max_tunnels` from the request on (a
//!   503 beyond it, [`TunnelPermit`]), and stays in flight on its backend for
//!   `least_connections` and `limits.max_connections`, in the pool's in-flight gauge,
//!   and for the drain of `serve` on SIGTERM ([`super::server`]).
//!
//! While it runs ([`Tunnel::run`]):
//! - what either side read before the switch (the backend's first frames behind its
//!   101, the client's behind its request) goes out first;
//! - an end of stream from one side is passed on as a half-close to the other, and the
//!   tunnel ends once both directions have ended, or either fails; once one direction
//!   has ended, 30 s of silence (or `tunnel_idle`, when shorter) close it;
//! - no byte either way for the pool's `timeouts.tunnel_idle` (default 1 h) closes it
//!   (the watch looks on a tick of a quarter of the shortest limit it keeps, so a
//!   tunnel may outlive a limit by that much);
//! - once its backend is drained (admin API), it may go on for `drain_timeout`, then
//!   is closed (unless the backend was enabled meanwhile; a drain begun anew counts
//!   from its own start). A reload never cuts a tunnel: it keeps the backend it was opened to,
//!   whatever the new config says. Health checks failing on the backend do not cut
//!   it either (its bytes still flow, or its own end will tell);
//! - the access log line comes when it ends, even when shutdown cuts it: status 101,
//!   the whole tunnel's duration, the bytes the backend sent through it, and
//!   `aborted=true` when reading or writing a side failed.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::forward::{AccessRecord, Slot};
use super::h1;
use crate::health;
use crate::runtime::{BackendRuntime, Runtime};

/// Bytes each direction of a tunnel reads at once (NGINX's `proxy_buffer_size`).
const TUNNEL_BUFFER: usize = 16 * 1024;
/// How long a tunnel one side has ended may stay silent before it is closed (or the
/// pool's `tunnel_idle`, when shorter): a WebSocket peer answers the other's close at
/// once, and a half-open tunnel otherwise holds its backend until `tunnel_idle`.
const HALF_CLOSED_IDLE: Duration = Duration::from_secs(30);

/// One upgraded connection counted against its listener's `max_tunnels` for as long as
/// it lives (from the upgrade request on).
pub struct TunnelPermit {
    runtime: Arc<Runtime>,
    listener: usize,
}

impl TunnelPermit {
    /// A permit on listener number `listener` while fewer than `max` tunnels are open
    /// on it; `None` when `max` are.
    pub fn take(runtime: &Arc<Runtime>, listener: usize, max: u32) -> Option<TunnelPermit> {
        let open = runtime.tunnels.get(listener)?;
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < u64::from(max)).then_some(n + 1)
        })
        .ok()?;
        Some(TunnelPermit {
            runtime: Arc::clone(runtime),
            listener,
        })
    }
}

impl Drop for TunnelPermit {
    fn drop(&mut self) {
        if let Some(open) = self.runtime.tunnels.get(self.listener) {
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What an upgrade request carries to its tunnel, should its backend switch (and a
/// TCP listener's connection to its own).
pub struct TunnelTerms {
    /// The listener's count of tunnels (none for a TCP listener's connections, which
    /// its `max_connections` bounds).
    pub permit: Option<TunnelPermit>,
    /// The pool's `timeouts.tunnel_idle`.
    pub idle: Duration,
    /// The config's `drain_timeout`: how long a tunnel outlives its backend's drain.
    pub drain_timeout: Duration,
    /// The backend, watched for a drain.
    pub backend: Arc<BackendRuntime>,
}

/// A switched connection to a backend, with what it holds while it lives.
pub struct Tunnel {
    pub(super) connection: h1::Connection,
    pub(super) slot: Slot,
    pub(super) log: Option<Box<AccessRecord>>,
    pub(super) terms: Box<TunnelTerms>,
}

/// How a tunnel went.
pub struct Carried {
    /// Why it ended.
    pub end: TunnelEnd,
    /// Bytes the backend sent through it.
    pub from_backend: u64,
    /// Bytes the client sent through it.
    pub to_backend: u64,
    /// The access-log record it was given, its bytes counted, for the caller to finish
    /// (dropping it writes the line).
    pub(super) log: Option<Box<AccessRecord>>,
}

/// A side of a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client's connection.
    Client,
    /// The backend's connection.
    Backend,
}

/// Why a tunnel ended.
#[derive(Debug)]
pub enum TunnelEnd {
    /// Both sides closed their direction.
    Closed,
    /// Reading or writing `side` failed (a reset, a broken TLS session).
    Failed(Side, io::Error),
    /// No byte moved for `timeouts.tunnel_idle`.
    Idle,
    /// Its backend was drained, and `drain_timeout` has passed since.
    Drained,
}

impl Tunnel {
    /// Carries bytes between `client` and the backend until the tunnel ends:
    /// `from_client` (what the client sent after its request's head) goes to the
    /// backend first, and what the backend sent after its 101 to the client.
    pub async fn run<C: TunnelSide>(self, client: &mut C, from_client: BytesMut) -> Carried {
        let Tunnel {
            connection,
            slot,
            log,
            terms,
        } = self;
        let (mut backend, from_backend, _open) = connection.into_tunnel();
        // Declared first, so it is dropped last: a tunnel cut at shutdown (its task
        // dropped) still logs what it carried.
        let accounted = Accounted {
            log,
            to_client: Cell::new(0),
        };
        let to_backend = Cell::new(from_client.len() as u64);
        let activity = Activity {
            moved: Cell::new(false),
            half_closed: Cell::new(false),
        };
        let carried = async {
            let on = |side| move |error| (side, error);
            backend
                .write_all(&from_client)
                .await
                .map_err(on(Side::Backend))?;
            backend.flush().await.map_err(on(Side::Backend))?;
            client
                .write_all(&from_backend)
                .await
                .map_err(on(Side::Client))?;
            client.flush().await.map_err(on(Side::Client))?;
            accounted.to_client.set(from_backend.len() as u64);
            let mut up = Direction::new(Some(&to_backend));
            let mut down = Direction::new(Some(&accounted.to_client));
            // Each wake-up starts with the other direction, so one that never runs dry
            // cannot spend the task's whole budget before the other gets a turn.
            let mut up_first = false;
            std::future::poll_fn(|cx| {
                up_first = !up_first;
                // Up reads the client and writes the backend; down the other way.
                let (up, down) = if up_first {
                    let up = up
                        .poll_carry(cx, &mut *client, &mut backend, &activity)
                        .map_err(|e| e.on(Side::Client, Side::Backend))?;
                    let down = down
                        .poll_carry(cx, &mut backend, &mut *client, &activity)
                        .map_err(|e| e.on(Side::Backend, Side::Client))?;
                    (up, down)
                } else {
                    let down = down
                        .poll_carry(cx, &mut backend, &mut *client, &activity)
                        .map_err(|e| e.on(Side::Backend, Side::Client))?;
                    let up = up
                        .poll_carry(cx, &mut *client, &mut backend, &activity)
                        .map_err(|e| e.on(Side::Client, Side::Backend))?;
                    (up, down)
                };
                if up.is_ready() && down.is_ready() {
                    Poll::Ready(Ok::<(), (Side, io::Error)>(()))
                } else {
                    Poll::Pending
                }
            })
            .await
        };
        // One watch for silence and drains, on a coarse tick (a quarter of the
        // shortest of the limits it keeps): polled beside the bytes on every wake-up,
        // it must cost next to nothing there, so it reads no clock and takes no lock.
        let watched = async {
            let health = &terms.backend.health;
            let tick = terms
                .idle
                .min(terms.drain_timeout)
                .min(HALF_CLOSED_IDLE)
                .div_f64(4.0)
                .max(Duration::from_millis(10));
            let mut silent = Duration::ZERO;
            let mut interval = tokio::time::interval_at(Instant::now() + tick, tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                silent = if activity.moved.replace(false) {
                    Duration::ZERO
                } else {
                    silent + tick
                };
                let limit = if activity.half_closed.get() {
                    terms.idle.min(HALF_CLOSED_IDLE)
                } else {
                    terms.idle
                };
                if silent >= limit {
                    return TunnelEnd::Idle;
                }
                // Drained since at least drain_timeout (counted from the drain's start).
                let drained_long = health
                    .draining_since()
                    .is_some_and(|since| since + terms.drain_timeout <= health::now());
                if drained_long {
                    return TunnelEnd::Drained;
                }
            }
        };
        let end = tokio::select! {
            biased;
            carried = carried => match carried {
                Ok(_) => TunnelEnd::Closed,
                Err((side, error)) => TunnelEnd::Failed(side, error),
            },
            end = watched => end,
        };
        tracing::debug!(backend = %terms.backend.address, ?end, "tunnel ended");
        drop(slot);
        let mut accounted = accounted;
        let mut log = accounted.log.take();
        if let Some(log) = log.as_mut() {
            log.add_bytes_out(accounted.to_client.get());
            if matches!(end, TunnelEnd::Failed(..)) {
                log.mark_aborted();
            }
        }
        Carried {
            end,
            from_backend: accounted.to_client.get(),
            to_backend: to_backend.get(),
            log,
        }
    }
}

/// A tunnel's access-log record, and the bytes it carried to the client, added to the
/// record when the tunnel ends, however it ends.
struct Accounted {
    log: Option<Box<AccessRecord>>,
    to_client: Cell<u64>,
}

impl Drop for Accounted {
    fn drop(&mut self) {
        if let Some(log) = self.log.as_mut() {
            log.add_bytes_out(self.to_client.get());
        }
    }
}

/// What the idle watch of a tunnel reads.
struct Activity {
    /// A byte came from either side since the watch last looked.
    moved: Cell<bool>,
    /// One side has sent its end of stream (passed on as a half-close).
    half_closed: Cell<bool>,
}

/// How a direction of a tunnel broke.
enum Broke {
    /// Reading the side it carries from failed.
    Reading(io::Error),
    /// Writing the side it carries to failed.
    Writing(io::Error),
}

impl Broke {
    /// The side that failed, for a direction from `from` to `to`, and the error.
    fn on(self, from: Side, to: Side) -> (Side, io::Error) {
        match self {
            Broke::Reading(e) => (from, e),
            Broke::Writing(e) => (to, e),
        }
    }
}

/// A stream a tunnel carries bytes to and from.
pub trait TunnelSide: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> TunnelSide for T {}

/// One direction of a tunnel: what one side sends, written to the other as it comes.
/// Every byte read marks the tunnel active; the reader's end of stream is passed on
/// as a shutdown of the writer, and marks the tunnel half-closed.
struct Direction<'a> {
    buffer: Box<[u8]>,
    /// The bytes read and not yet written: `buffer[start..end]`.
    start: usize,
    end: usize,
    /// The reader has sent its end of stream.
    ended: bool,
    /// Bytes were written since the last flush (a TLS session may hold them).
    unflushed: bool,
    /// The writer has been shut down after the reader's end: nothing more to do.
    shut: bool,
    /// Counts the bytes read, when given.
    count: Option<&'a Cell<u64>>,
}

impl<'a> Direction<'a> {
    fn new(count: Option<&'a Cell<u64>>) -> Direction<'a> {
        Direction {
            buffer: vec![0; TUNNEL_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            ended: false,
            unflushed: false,
            shut: false,
            count,
        }
    }

    /// Carries bytes from `from` to `to` until `from` ends (then `to` is shut down)
    /// or either fails; `Pending` while it waits for either.
    fn poll_carry<R: TunnelSide, W: TunnelSide>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        activity: &Activity,
    ) -> Poll<Result<(), Broke>> {
        if self.shut {
            return Poll::Ready(Ok(()));
        }
        loop {
            while self.start < self.end {
                let written =
                    ready!(Pin::new(&mut *to).poll_write(cx, &self.buffer[self.start..self.end]))
                        .map_err(Broke::Writing)?;
                if written == 0 {
                    return Poll::Ready(Err(Broke::Writing(io::ErrorKind::WriteZero.into())));
                }
                self.start += written;
                self.unflushed = true;
            }
            if self.unflushed {
                ready!(Pin::new(&mut *to).poll_flush(cx)).map_err(Broke::Writing)?;
                self.unflushed = false;
            }
            if self.ended {
                ready!(Pin::new(&mut *to).poll_shutdown(cx)).map_err(Broke::Writing)?;
                self.shut = true;
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut self.buffer);
            ready!(Pin::new(&mut *from).poll_read(cx, &mut read)).map_err(Broke::Reading)?;
            let got = read.filled().len();
            (self.start, self.end) = (0, got);
            if got == 0 {
                self.ended = true;
                activity.half_closed.set(true);
                continue;
            }
            activity.moved.set(true);
            if let Some(count) = self.count {
                count.set(count.get() + got as u64);
            }
        }
    }
}
