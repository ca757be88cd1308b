//! The admin listener: how connections are accepted, capped and timed out, so that a
//! flood of connections to the admin port costs the process a bounded number of file
//! descriptors and no CPU, and the proxy next to it keeps serving.
//!
//! Three defences, each against one way of holding the port (issue 12, where 1,100 idle
//! connections used up the descriptors, the proxy's listener stopped accepting and this
//! accept loop spun at 100% CPU):
//!
//! - **A cap.** The loop takes a permit of a semaphore of `[admin] max_connections`
//!   *before* it accepts, and the connection's task gives it back when it ends. Past the
//!   cap, connections wait in the kernel's backlog, which costs the process no
//!   descriptor; when the backlog is full the kernel drops new SYNs and clients retry.
//!   (The proxy's listeners cap the same way: DESIGN `listener.max_connections`.)
//! - **Timeouts a silent client cannot stretch.** Each connection is in one of three
//!   [`Phase`]s, and a watchdog beside it closes it when its phase's deadline passes:
//!   - *head*: a request head must be complete within `header_timeout`, counted from the
//!     accept for a connection's first request (so a connection that never sends a byte
//!     is closed too) and from the first byte for later requests;
//!   - *busy*: a request is being handled: no deadline here (the handlers are bounded,
//!     and a `POST /config` body must arrive within `header_timeout`, see `read_body`);
//!   - *idle*: between requests, until the first byte of the next head: closed after
//!     `idle_timeout` without activity. Writing the response counts as activity, so a
//!     client that stops reading a large response is closed after `idle_timeout` too.
//!
//!   hyper's own `header_read_timeout` is off: in the hyper we use (1.12) it also runs
//!   during the wait between keep-alive requests (hyperium/hyper#3828; `proto/h1/conn.rs`
//!   restarts it when a connection goes idle), so one value would be both the head and
//!   the idle timeout. Keeping them apart is what Envoy
//!   (`idle_timeout` vs `request_headers_timeout`) and Go (`IdleTimeout` vs
//!   `ReadHeaderTimeout`) do. The phases are tracked by a thin wrapper around the socket
//!   ([`Watched`]: any byte read between requests starts a head) and by the service
//!   (a [`Busy`] guard lives while a request is handled).
//! - **Backing off instead of spinning.** An accept error (EMFILE and ENFILE above all:
//!   no descriptor for the new connection, which therefore stays in the backlog and keeps
//!   the listener readable) is logged once per burst, not once per error, and the loop
//!   sleeps [`ACCEPT_BACKOFF`] before it tries again. The proxy's accept loop does the
//!   same (`proxy::server`).
//!
//! What remains — descriptors for the proxy while all this holds — is `serve`'s
//! business: it raises the soft open-files limit to the hard one at start.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::AdminState;

/// How long the accept loop sleeps after a failed accept before it tries again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Largest request head the admin API reads (hyper's read buffer), in bytes: admin
/// requests are small, and 64 connections × 64 KiB bounds what a flood can make it hold.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The connection limits of `[admin]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// A request head must be complete within this (from the accept for the first).
    pub header_timeout: Duration,
    /// A connection with no request in progress is closed after this without activity.
    pub idle_timeout: Duration,
}

impl From<&crate::config::Admin> for Limits {
    fn from(admin: &crate::config::Admin) -> Limits {
        Limits {
            max_connections: admin.max_connections as usize,
            header_timeout: admin.header_timeout,
            idle_timeout: admin.idle_timeout,
        }
    }
}

/// Accepts connections on `listener` forever, at most `limits.max_connections` served
/// at once, each on a task of its own.
pub(super) async fn accept_loop(listener: TcpListener, state: Arc<AdminState>) {
    let limits = state.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut failures = AcceptFailures::default();
    loop {
        // The permit before the accept: past the cap, connections wait in the backlog.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let (stream, peer) = loop {
            match listener.accept().await {
                Ok(accepted) => {
                    failures.recovered();
                    break accepted;
                }
                Err(error) => {
                    failures.failed(&error);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            serve_connection(stream, peer, state).await;
            drop(slot);
        });
    }
}

/// A burst of failed accepts, logged once when it starts and once when it ends.
#[derive(Default)]
struct AcceptFailures {
    /// When the current burst started and how many accepts failed in it.
    burst: Option<(Instant, u64)>,
}

impl AcceptFailures {
    fn failed(&mut self, error: &io::Error) {
        match &mut self.burst {
            Some((_, count)) => *count += 1,
            None => {
                tracing::error!(
                    %error,
                    "admin listener: accept failed; retrying every {} ms (logged once until it recovers)",
                    ACCEPT_BACKOFF.as_millis()
                );
                self.burst = Some((Instant::now(), 1));
            }
        }
    }

    fn recovered(&mut self) {
        if let Some((since, count)) = self.burst.take() {
            tracing::warn!(
                failed = count,
                seconds = since.elapsed().as_secs_f64(),
                "admin listener: accepting again"
            );
        }
    }
}

/// Serves one connection until the client closes it, an error ends it, or the
/// watchdog finds its phase's deadline passed.
async fn serve_connection(stream: TcpStream, peer: SocketAddr, state: Arc<AdminState>) {
    let limits = state.limits;
    let activity = Arc::new(Activity::new(limits));
    let io = TokioIo::new(Watched {
        stream,
        activity: Arc::clone(&activity),
    });
    let in_service = Arc::clone(&activity);
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        let busy = Busy::start(Arc::clone(&in_service));
        async move {
            let response = super::handle(request, &state).await;
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    let connection = http1::Builder::new()
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service);
    tokio::select! {
        _ = connection => {}
        reason = activity.watch() => {
            tracing::debug!(%peer, "admin connection closed: {reason}");
        }
    }
}

/// Where a connection is between requests; see the module doc.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Reading a request head, which must be complete by `deadline`.
    Head { deadline: Instant },
    /// A request is being handled.
    Busy,
    /// No request in progress and no byte of the next one yet; last activity at `since`.
    Idle { since: Instant },
}

/// A connection's phase, shared by its socket wrapper, its service and its watchdog.
struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when a phase change may move the deadline earlier.
    changed: Notify,
    limits: Limits,
}

impl Activity {
    /// A connection just accepted: its first head is due within `header_timeout`.
    fn new(limits: Limits) -> Activity {
        Activity {
            phase: Mutex::new(Phase::Head {
                deadline: Instant::now() + limits.header_timeout,
            }),
            changed: Notify::new(),
            limits,
        }
    }

    fn set(&self, change: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *phase = change(*phase);
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: between requests, they are the start of the next head.
    fn read(&self) {
        let limits = self.limits;
        let mut started = false;
        self.set(|phase| match phase {
            Phase::Idle { .. } => {
                started = true;
                Phase::Head {
                    deadline: Instant::now() + limits.header_timeout,
                }
            }
            other => other,
        });
        if started {
            self.changed.notify_one();
        }
    }

    /// Bytes left: a response on its way keeps an idle connection alive.
    fn wrote(&self) {
        self.set(|phase| match phase {
            Phase::Idle { .. } => Phase::Idle {
                since: Instant::now(),
            },
            other => other,
        });
    }

    /// Resolves when the current phase's deadline has passed, with what was too slow.
    async fn watch(&self) -> &'static str {
        loop {
            let notified = self.changed.notified();
            let (deadline, reason) = match self.phase() {
                Phase::Head { deadline } => (
                    deadline,
                    "no complete request head within [admin] header_timeout",
                ),
                Phase::Idle { since } => (
                    since + self.limits.idle_timeout,
                    "idle for [admin] idle_timeout",
                ),
                Phase::Busy => {
                    notified.await;
                    continue;
                }
            };
            if Instant::now() >= deadline {
                return reason;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = notified => {}
            }
        }
    }
}

/// Marks a connection busy while a request is handled; idle again when dropped
/// (the response returned, or the handler cancelled).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Busy {
        activity.set(|_| Phase::Busy);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(|_| Phase::Idle {
            since: Instant::now(),
        });
        self.0.changed.notify_one();
    }
}

/// The connection's socket, reporting every read and write to its [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 1,
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out_after_the_header_timeout() {
        let activity = Activity::new(limits());
        let started = Instant::now();
        let reason = activity.watch().await;
        assert!(reason.contains("header_timeout"), "{reason}");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn busy_has_no_deadline_and_idle_gets_the_idle_timeout() {
        let activity = Arc::new(Activity::new(limits()));
        let busy = Busy::start(Arc::clone(&activity));
        let started = Instant::now();
        let watch = activity.watch();
        tokio::pin!(watch);
        // Busy for 30 s: far past both timeouts, and nothing fires.
        tokio::select! {
            _ = &mut watch => panic!("a busy connection was timed out"),
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        drop(busy);
        let reason = watch.await;
        assert!(reason.contains("idle_timeout"), "{reason}");
        assert_eq!(started.elapsed(), Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn a_byte_between_requests_starts_the_shorter_head_deadline() {
        let activity = Arc::new(Activity::new(limits()));
        drop(Busy::start(Arc::clone(&activity)));
        let started = Instant::now();
        let watch = activity.watch();
        tokio::pin!(watch);
        tokio::select! {
            _ = &mut watch => panic!("timed out while idle for 2 s of 5"),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        activity.read();
        let reason = watch.await;
        assert!(reason.contains("header_timeout"), "{reason}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
