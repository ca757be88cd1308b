//! A request to a pool that speaks HTTP/2 to its backends: its tries, their outcomes
//! and the response relayed back.
//!
//! The rules are HTTP/1's ([`crate::proxy::forward`]) where they carry over: a try that
//! sent nothing (a failed connect) or that the backend did not process may go to
//! another backend; one that was sent may go again only if it is idempotent and has no
//! body; a 502, 503 or 504 answer is retried on the same terms; the retry budget and
//! `retries.attempts` bound it all. What HTTP/2 adds: a stream the backend did not
//! process (see [`super::exchange`]) goes once more at once, on another connection to
//! the same backend, whatever its method, if its body is still at hand.
//!
//! A gRPC call answered `UNAVAILABLE` is not sent again: the backend may have run it
//! (gRPC's own docs say retrying `UNAVAILABLE` is not always safe for non-idempotent
//! calls, and nothing on the wire says which calls are idempotent), and evenkeel never
//! replays a non-idempotent request whose body was sent (DESIGN, principle 5). gRPC
//! clients retry by their per-method policy, which knows.
//!
//! What is the client's doing is not counted against a backend: a request body that
//! stops arriving (408, or the stream cut), a deadline the client set with
//! `grpc-timeout` passing, a call the client cancelled.

use std::rc::Rc;
use std::sync::Arc;

use http::header::HeaderValue;
use http::{request, Response};
use tokio::time::Instant;

use super::connections::{Choice, H2Connection, OpenStream, Target};
use super::exchange::{self, Answered, Ended, Relayed, Replay, StreamError};
use crate::health;
use crate::proxy::errors::Refusal;
use crate::proxy::forward::{
    count_failure, count_retry, next_try, AccessRecord, Client, Picked, ProxyBody, Slot, Tried,
    Worker,
};
use crate::proxy::grpc;
use crate::proxy::h1::RequestBody;
use crate::proxy::stall::Stall;
use crate::proxy::upstream;
use crate::runtime::{BackendRuntime, PoolRuntime, Runtime};

/// A request routed to an HTTP/2 pool, with its first backend picked.
pub(in crate::proxy) struct H2Request<'a, B> {
    pub parts: &'a request::Parts,
    /// The client's body; `None`: it has none.
    pub body: Option<B>,
    /// Its length, when the client said.
    pub length: Option<u64>,
    pub pool: &'a Arc<PoolRuntime>,
    pub backend: Picked,
    pub key: Option<u64>,
    pub deadline: Instant,
    pub log: Option<Box<AccessRecord>>,
    pub client: &'a Client,
    pub host: Option<&'a HeaderValue>,
    /// A gRPC call.
    pub grpc: bool,
    /// The deadline its `grpc-timeout` set, when earlier than the pool's.
    pub client_deadline: Option<Instant>,
    /// It asked for an upgrade (refused: HTTP/2 has none).
    pub upgrade: bool,
    /// May be sent again after it was sent (idempotent, no body).
    pub replayable: bool,
}

/// Why a try failed.
enum Failure {
    /// The connection the try waited for could not be opened: nothing was sent, and
    /// the failure was counted against the backend by the opening.
    Open,
    /// The connection the try waited for was not open before the try's deadline:
    /// nothing was sent.
    Waited,
    Stream(StreamError),
    /// The request target cannot be written as an HTTP/2 head.
    BadTarget,
    /// The answer's `Content-Length` is invalid, or has differing values (the h2
    /// crate takes an empty one for 0): malformed, as from an HTTP/1 backend.
    BadLength,
}

impl Worker {
    /// Sends `request` to its pool's backends over HTTP/2 until one answers or the
    /// tries run out; the response (or evenkeel's refusal).
    pub(in crate::proxy) async fn forward_h2<B: RequestBody + 'static>(
        self: &Rc<Self>,
        request: H2Request<'_, B>,
    ) -> Response<ProxyBody> {
        let H2Request {
            parts,
            body,
            length,
            pool,
            mut backend,
            key,
            deadline,
            mut log,
            client,
            host,
            grpc,
            client_deadline,
            upgrade,
            replayable,
        } = request;
        let refuse = |refusal: Refusal, log: Option<Box<AccessRecord>>| {
            let response = if grpc {
                grpc::refusal_response(refusal, Some(&pool.name))
            } else {
                refusal.response(Some(&pool.name))
            };
            if let Some(mut log) = log {
                log.answered(&response);
            }
            response.map(ProxyBody::Own)
        };
        if upgrade {
            pool.stats.record(Refusal::UpgradeToHttp2.status().as_u16());
            return refuse(Refusal::UpgradeToHttp2, log);
        }
        // Whether the deadline the client chose has passed.
        let clients_deadline_passed = || deadline_passed(client_deadline);
        let replay = body.map(|b| Replay::new(b, pool.config.limits.body_buffer as usize));
        let mut tried = Tried::default();
        let mut attempt = 0;
        let refusal = loop {
            if Instant::now() >= deadline {
                break Refusal::Timeout;
            }
            let slot = tried.begin(pool, &backend, &mut log);
            let try_start = Instant::now();
            let head_by = (try_start + pool.timeouts.per_try).min(deadline);
            let tried_once = self
                .h2_try(
                    pool,
                    &backend.runtime,
                    &replay,
                    head_by,
                    client_deadline,
                    |b| {
                        exchange::request_head(
                            parts,
                            &client.forwarded_for,
                            client.tls.is_some(),
                            host,
                            b.tls
                                .as_ref()
                                .map_or(b.address.as_str(), |t| t.host(&b.address)),
                            b.tls.is_some(),
                            length,
                        )
                    },
                )
                .await;
            let retry = |eligible: bool| {
                next_try(
                    pool,
                    eligible && Instant::now() < deadline,
                    attempt,
                    key,
                    &tried,
                )
            };
            let (refusal, next) = match tried_once.and_then(one_length) {
                Ok(answered) => {
                    let status = answered.response.status().as_u16();
                    let latency = Instant::now().saturating_duration_since(try_start);
                    backend.runtime.stats.latency.record(latency);
                    let answers_grpc = grpc && grpc::is_grpc(answered.response.headers());
                    let ends_here = answered.response.body().is_end_stream();
                    // A gRPC call's outcome is its grpc-status: in the head of a
                    // Trailers-Only answer, else at the end of the stream.
                    let outcome = if answers_grpc && ends_here {
                        let code = grpc::status(answered.response.headers());
                        Some(grpc_outcome(code, client_deadline))
                    } else if answers_grpc {
                        None
                    } else {
                        Some(status)
                    };
                    if let Some(outcome) = outcome {
                        record_answer(&self.runtime, pool, &backend.runtime, outcome);
                    }
                    let retry_status =
                        !answers_grpc && replayable && matches!(outcome, Some(502..=504));
                    match retry_status.then(|| retry(true)).flatten() {
                        Some(next) => (Refusal::BadGateway, next),
                        None => {
                            if let Some(outcome) = outcome {
                                pool.stats.record(outcome);
                            }
                            if let Some(log) = log.as_mut() {
                                log.answered_with(status, Some(latency));
                                if answers_grpc && ends_here {
                                    log.grpc_status(grpc::status(answered.response.headers()));
                                }
                            }
                            if let Some(replay) = &replay {
                                // Answered: the body will not go out again.
                                replay.stop_keeping();
                            }
                            return self.relay(
                                answered,
                                pool,
                                &backend.runtime,
                                slot,
                                log,
                                // The outcome when it was not counted yet (gRPC: at
                                // its end), with whether the client set the deadline.
                                outcome.is_none().then_some(client_deadline),
                            );
                        }
                    }
                }
                Err(Failure::Stream(StreamError::Client(error))) => {
                    tracing::debug!(pool = %pool.name, %error, "the request body broke off");
                    break Refusal::BadRequestBody;
                }
                Err(Failure::Stream(StreamError::ClientStalled)) => break Refusal::ClientTimeout,
                Err(Failure::Stream(StreamError::TimedOut)) if clients_deadline_passed() => {
                    // The client's own deadline: its choice, no backend's failure.
                    pool.stats.record(499);
                    return refuse(Refusal::Timeout, log);
                }
                Err(Failure::BadTarget) => break Refusal::BadTarget,
                Err(Failure::BadLength) => {
                    count_failure(
                        &self.runtime,
                        pool,
                        &backend.runtime,
                        &"an invalid content-length",
                    );
                    match retry(replayable) {
                        Some(next) => (Refusal::BadGateway, next),
                        None => break Refusal::BadGateway,
                    }
                }
                // Counted against the backend by the opening itself.
                Err(Failure::Open) => match retry(true) {
                    Some(next) => (Refusal::BadGateway, next),
                    None => break Refusal::BadGateway,
                },
                Err(Failure::Waited) if clients_deadline_passed() => {
                    pool.stats.record(499);
                    return refuse(Refusal::Timeout, log);
                }
                Err(Failure::Waited) => match retry(true) {
                    Some(next) => (Refusal::Timeout, next),
                    None => break Refusal::Timeout,
                },
                Err(Failure::Stream(e)) => {
                    let (refusal, eligible) = match e {
                        StreamError::TimedOut => (Refusal::Timeout, replayable),
                        StreamError::Unprocessed(_) => (Refusal::BadGateway, replay_ready(&replay)),
                        _ => (Refusal::BadGateway, replayable),
                    };
                    count_failure(&self.runtime, pool, &backend.runtime, &e);
                    match retry(eligible) {
                        Some(next) => (refusal, next),
                        None => break refusal,
                    }
                }
            };
            count_retry(pool, &backend.runtime, next, refusal);
            drop(slot);
            attempt += 1;
            backend = Picked::of(next);
        };
        let counted = match refusal {
            Refusal::Timeout if clients_deadline_passed() => 499,
            refusal => refusal.status().as_u16(),
        };
        pool.stats.record(counted);
        refuse(refusal, log)
    }

    /// One try on `backend`: a stream on one of this worker's connections to it (a new
    /// one if none has room), and once more on another connection if the backend did
    /// not process it. `head` makes the request's head for a backend. A connection
    /// that failed the try (no answer in time — unless `head_by` is the client's own
    /// deadline —, or broken) takes no new stream.
    async fn h2_try<B: RequestBody + 'static>(
        &self,
        pool: &Arc<PoolRuntime>,
        backend: &Arc<BackendRuntime>,
        replay: &Option<Replay<B>>,
        head_by: Instant,
        client_deadline: Option<Instant>,
        head: impl Fn(&BackendRuntime) -> Option<http::Request<()>>,
    ) -> Result<Answered, Failure> {
        let key = upstream::Key::new(backend.socket_addr, backend.tls.as_ref());
        let max_connections = pool.config.limits.max_connections;
        // The connection that refused the stream, for the one more time it goes out.
        let mut refused_on: Option<Rc<H2Connection>> = None;
        loop {
            // What went out the last time is lost: no second time.
            if refused_on.is_some() && !replay_ready(replay) {
                return Err(Failure::Stream(StreamError::Unprocessed(
                    ::h2::Error::from(::h2::Reason::REFUSED_STREAM),
                )));
            }
            let target = || {
                let (runtime, pool, failed_backend) = (
                    Arc::clone(&self.runtime),
                    Arc::clone(pool),
                    Arc::clone(backend),
                );
                Target {
                    addr: backend.socket_addr,
                    tls: backend.tls.clone(),
                    connect: pool.timeouts.connect,
                    idle: pool.timeouts.idle,
                    open: Arc::clone(&self.runtime.upstream_connections),
                    load: Arc::clone(&backend.load),
                    failed: Box::new(move |error| {
                        count_failure(&runtime, &pool, &failed_backend, error)
                    }),
                }
            };
            let choice = self.h2.choose(
                key,
                &backend.load,
                max_connections,
                refused_on.as_ref(),
                target,
            );
            let stream = match choice {
                Choice::Use(stream) | Choice::Queue(stream) => stream,
                Choice::Wait { opening, opener } => match opening.outcome(head_by).await {
                    // The opener takes its connection (a backend that allows no
                    // stream yet gets one connection, not one per choice); others
                    // choose again.
                    Some(Ok(connection)) if opener => OpenStream::on(&connection),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) => return Err(Failure::Open),
                    None => return Err(Failure::Waited),
                },
            };
            let reader = replay.as_ref().and_then(Replay::reader);
            let head = head(backend).ok_or(Failure::BadTarget)?;
            let connection = Rc::clone(stream.connection());
            let stall = Stall::new(pool.timeouts.body_idle);
            match exchange::exchange(stream, head, reader, head_by, client_deadline, stall).await {
                Err(StreamError::Unprocessed(error)) if refused_on.is_none() => {
                    tracing::debug!(backend = %backend.address, %error, "stream not processed; again on another connection");
                    // A connection that said GOAWAY takes no new stream.
                    if connection.is_closed() || error.is_go_away() {
                        self.h2.remove(key, &connection);
                    }
                    refused_on = Some(connection);
                }
                Err(error) => {
                    let connections_fault = match &error {
                        StreamError::TimedOut => !deadline_passed(client_deadline),
                        // A reset of this stream alone leaves the connection as it was.
                        StreamError::Failed(e) | StreamError::Unprocessed(e) => {
                            !(e.is_reset() && e.is_remote())
                        }
                        StreamError::Client(_) | StreamError::ClientStalled => false,
                    };
                    if connections_fault {
                        self.h2.remove(key, &connection);
                    }
                    return Err(Failure::Stream(error));
                }
                Ok(answered) => return Ok(answered),
            }
        }
    }

    /// The response to the client: `answered`'s head, its body relayed. `at_end`: for
    /// a gRPC call whose outcome comes with its end (its grpc-status), whether the
    /// client set its deadline; `None`: the outcome is counted already.
    fn relay(
        &self,
        answered: Answered,
        pool: &Arc<PoolRuntime>,
        backend: &Arc<BackendRuntime>,
        slot: Slot,
        log: Option<Box<AccessRecord>>,
        at_end: Option<Option<Instant>>,
    ) -> Response<ProxyBody> {
        let Answered {
            response,
            pipe,
            stream,
        } = answered;
        let (mut parts, recv) = response.into_parts();
        parts.version = http::Version::HTTP_11;
        let deferred = at_end.map(|client_deadline| {
            (
                Arc::clone(&self.runtime),
                Arc::clone(pool),
                Arc::clone(backend),
                client_deadline,
            )
        });
        let mut log = log;
        let on_end = Box::new(move |ended: Ended, bytes: u64| {
            if let Some(log) = log.as_mut() {
                log.add_bytes_out(bytes);
                match &ended {
                    Ended::Whole(Some(trailers)) => log.grpc_status(grpc::status(trailers)),
                    Ended::Whole(None) => {}
                    Ended::Broke | Ended::Dropped => log.mark_aborted(),
                }
            }
            if let Some((runtime, pool, backend, client_deadline)) = deferred {
                let status = match &ended {
                    Ended::Whole(trailers) => {
                        grpc_outcome(trailers.as_ref().and_then(grpc::status), client_deadline)
                    }
                    Ended::Broke => 502,
                    // The client cancelled or stalled: no one's failure, and no
                    // success either for passive health.
                    Ended::Dropped => 499,
                };
                if status == 499 {
                    backend.stats.record_status(status);
                } else {
                    record_answer(&runtime, &pool, &backend, status);
                }
                pool.stats.record(status);
            }
            drop(slot);
            drop(log);
        });
        let body = Relayed::new(
            recv,
            pipe,
            stream,
            Stall::new(pool.timeouts.body_idle),
            on_end,
        );
        Response::from_parts(parts, ProxyBody::Relayed(body))
    }
}

/// Whether a replay of the request body is still possible (or it has none).
fn replay_ready<B: RequestBody + 'static>(replay: &Option<Replay<B>>) -> bool {
    replay.as_ref().is_none_or(Replay::can_replay)
}

/// Counts an answer of `status` from `backend`: in its counters and passive health
/// (the pool's own count is of the answers its clients got).
fn record_answer(runtime: &Runtime, pool: &PoolRuntime, backend: &BackendRuntime, status: u16) {
    backend.stats.record_status(status);
    pool.record(backend, status < 500, health::now(), &runtime.events);
}

/// The HTTP status a gRPC call's `code` counts as ([`grpc::http_status`]; none: 502, a
/// broken answer). A `DEADLINE_EXCEEDED` once the client's own deadline has passed counts
/// as 499: the backend kept the client's deadline, no failure of its own.
fn grpc_outcome(code: Option<u32>, client_deadline: Option<Instant>) -> u16 {
    match code {
        Some(grpc::code::DEADLINE_EXCEEDED) if deadline_passed(client_deadline) => 499,
        Some(code) => grpc::http_status(code),
        None => 502,
    }
}

/// How early a backend may answer `DEADLINE_EXCEEDED` for the client's deadline (it
/// counts from when the call reached it) and still be taken as keeping that deadline.
const DEADLINE_SLACK: std::time::Duration = std::time::Duration::from_millis(50);

/// Whether the client's own deadline (`grpc-timeout`), if it set one, has passed.
fn deadline_passed(client_deadline: Option<Instant>) -> bool {
    client_deadline.is_some_and(|at| Instant::now() + DEADLINE_SLACK >= at)
}

/// `answered` with one valid `Content-Length` at most: differing or invalid values
/// (digits only, as [`h1::body`](crate::proxy::h1::body) reads an HTTP/1 answer's) make
/// it malformed, so an HTTP/1 client never gets a length its framing cannot trust;
/// equal repeats are collapsed into one.
fn one_length(mut answered: Answered) -> Result<Answered, Failure> {
    let headers = answered.response.headers_mut();
    let mut length = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        let parsed = crate::proxy::h1::body::parse_length(value.as_bytes().trim_ascii())
            .ok_or(Failure::BadLength)?;
        if length.is_some_and(|l| l != parsed) {
            return Err(Failure::BadLength);
        }
        length = Some(parsed);
    }
    if let Some(length) = length {
        headers.insert(http::header::CONTENT_LENGTH, length.into());
    }
    Ok(answered)
}
