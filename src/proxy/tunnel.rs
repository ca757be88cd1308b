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
//! - no byte either way for the pool's `timeouts.tunnel_idle` (default 1 h) closes it;
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
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::forward::{AccessRecord, Slot};
use super::h1;
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

/// What an upgrade request carries to its tunnel, should its backend switch.
pub struct TunnelTerms {
    /// The listener's count of tunnels.
    pub permit: TunnelPermit,
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

/// Why a tunnel ended.
#[derive(Debug)]
pub enum TunnelEnd {
    /// Both sides closed their direction.
    Closed,
    /// Reading or writing either side failed (a reset, a broken TLS session).
    Failed(io::Error),
    /// No byte moved for `timeouts.tunnel_idle`.
    Idle,
    /// Its backend was drained, and `drain_timeout` has passed since.
    Drained,
}

impl Tunnel {
    /// Carries bytes between `client` and the backend until the tunnel ends:
    /// `from_client` (what the client sent after its request's head) goes to the
    /// backend first, and what the backend sent after its 101 to the client.
    pub async fn run<C>(self, client: &mut C, from_client: BytesMut) -> TunnelEnd
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
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
        let activity = Activity {
            last_moved: Cell::new(Instant::now()),
            half_closed: Cell::new(false),
            ended_one_way: Notify::new(),
        };
        let carried = async {
            backend.write_all(&from_client).await?;
            backend.flush().await?;
            client.write_all(&from_backend).await?;
            client.flush().await?;
            accounted.to_client.set(from_backend.len() as u64);
            let mut client = Watched {
                inner: &mut *client,
                activity: &activity,
                read: None,
            };
            let mut backend = Watched {
                inner: &mut backend,
                activity: &activity,
                read: Some(&accounted.to_client),
            };
            tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut backend,
                TUNNEL_BUFFER,
                TUNNEL_BUFFER,
            )
            .await
        };
        let idle = async {
            loop {
                let half_closed = activity.half_closed.get();
                let limit = if half_closed {
                    terms.idle.min(HALF_CLOSED_IDLE)
                } else {
                    terms.idle
                };
                let until = activity.last_moved.get() + limit;
                if Instant::now() >= until {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = activity.ended_one_way.notified(), if !half_closed => {}
                }
            }
        };
        let drained = async {
            loop {
                let drain = terms.backend.health.draining().await;
                tokio::time::sleep(terms.drain_timeout).await;
                // Still the same drain: not enabled (and drained anew) meanwhile.
                let health = &terms.backend.health;
                if health.is_draining() && health.drain_number() == drain {
                    return;
                }
            }
        };
        let end = tokio::select! {
            carried = carried => match carried {
                Ok(_) => TunnelEnd::Closed,
                Err(error) => TunnelEnd::Failed(error),
            },
            () = idle => TunnelEnd::Idle,
            () = drained => TunnelEnd::Drained,
        };
        tracing::debug!(backend = %terms.backend.address, ?end, "tunnel ended");
        drop(slot);
        let mut accounted = accounted;
        if let (TunnelEnd::Failed(_), Some(log)) = (&end, accounted.log.as_mut()) {
            log.mark_aborted();
        }
        end
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
    /// When a byte last came from either side.
    last_moved: Cell<Instant>,
    /// One side has sent its end of stream (passed on as a half-close).
    half_closed: Cell<bool>,
    /// Woken when `half_closed` turns true.
    ended_one_way: Notify,
}

/// One side of a tunnel: every byte read from it marks the tunnel active, and its end
/// of stream marks it half-closed; `read` counts the bytes.
struct Watched<'a, T> {
    inner: &'a mut T,
    activity: &'a Activity,
    read: Option<&'a Cell<u64>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.activity.last_moved.set(Instant::now());
            if let Some(count) = this.read {
                count.set(count.get() + read as u64);
            }
        } else if room && matches!(polled, Poll::Ready(Ok(()))) {
            this.activity.half_closed.set(true);
            this.activity.ended_one_way.notify_one();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}
