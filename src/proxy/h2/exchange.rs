//! One request as an HTTP/2 stream to a backend: its head, its body piped in as the
//! client sends it (with a copy kept for a replay), and the response relayed back.
//!
//! - **Head**: the client's method, path and fields; the authority is the client's host
//!   (else the backend's address, as HTTP/1's `Host`), the scheme that of the pool.
//!   Hop-by-hop fields are left out (`TE: trailers` is kept: gRPC needs it), and
//!   `X-Forwarded-*` set as for HTTP/1 ([`super::super::headers`]).
//! - **Body**: pumped from the client into the stream as the backend's flow-control
//!   window allows, from the request's own task: while it waits for the response head
//!   and then whenever the response body is polled, so both directions stream at once
//!   (gRPC's bidirectional calls). A [`Replay`] keeps what it sent, up to the pool's
//!   `limits.body_buffer`, so a stream the backend refused unprocessed can go again.
//! - **Unprocessed streams** (RFC 9113 §8.7): a stream reset with `REFUSED_STREAM`, one
//!   above the last stream a GOAWAY says was processed, and one that could not be
//!   opened because the connection had ended, were never acted on by the backend, so
//!   they may be sent again whatever their method.
//! - **Response**: [`Relayed`] passes data and trailers on as they come, releasing
//!   flow-control capacity as the client takes them, so a slow client slows the
//!   backend's stream and nothing is buffered beyond the stream window.

use std::cell::RefCell;
use std::future::poll_fn;
use std::future::Future as _;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use ::h2::{Reason, RecvStream, SendStream};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{request, Request, Response};
use hyper::body::{Body, Frame};
use tokio::time::Instant;

use super::connections::OpenStream;
use crate::proxy::h1::RequestBody;
use crate::proxy::headers::{
    connection_lists, is_replaced_toward_backend, tokens, RequestFields, X_FORWARDED_FOR,
    X_FORWARDED_HOST, X_FORWARDED_PROTO,
};
use crate::proxy::stall::Stall;

/// Any error a body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The head of the stream for the request `parts`, from a client at `client` (its
/// `X-Forwarded-For` value; `https`: it came over TLS), for the host `host` it named
/// (else `backend`, the backend's address), with `length` its body's length when
/// known. `None` when the target cannot form a URI (it came through HTTP/1's own
/// parser, which allows what `http::Uri` may not).
pub fn request_head(
    parts: &request::Parts,
    client: &HeaderValue,
    https: bool,
    host: Option<&HeaderValue>,
    backend: &str,
    tls: bool,
    length: Option<u64>,
) -> Option<Request<()>> {
    let authority = host
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| Authority::try_from(backend).ok())?;
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = if target.starts_with('/') || target == "*" {
        target.to_string()
    } else {
        format!("/{target}")
    };
    let uri = Uri::builder()
        .scheme(if tls { Scheme::HTTPS } else { Scheme::HTTP })
        .authority(authority)
        .path_and_query(target)
        .build()
        .ok()?;
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    let headers = request.headers_mut();
    let named = connection_lists(RequestFields::Map(&parts.headers));
    for (name, value) in &parts.headers {
        if *name == header::TE {
            if tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"trailers")) {
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }
            continue;
        }
        if is_replaced_toward_backend(name.as_str().as_bytes(), &named) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let mut forwarded = Vec::new();
    for value in parts.headers.get_all(&X_FORWARDED_FOR) {
        forwarded.extend_from_slice(value.as_bytes());
        forwarded.extend_from_slice(b", ");
    }
    forwarded.extend_from_slice(client.as_bytes());
    headers.insert(
        X_FORWARDED_FOR,
        HeaderValue::from_bytes(&forwarded).unwrap_or_else(|_| client.clone()),
    );
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Some(request)
}

/// A request body that may be sent more than once: what was read of it is kept, up to
/// a limit, for the next try.
pub struct Replay<B> {
    state: Rc<RefCell<Kept<B>>>,
}

struct Kept<B> {
    /// The rest of the client's body; `None` once it has ended.
    source: Option<B>,
    /// The data read so far, while it fits `limit`.
    data: Vec<Bytes>,
    bytes: usize,
    limit: usize,
    /// More than `limit` was read: no replay.
    overflowed: bool,
    trailers: Option<HeaderMap>,
    /// The try now reading (older readers read nothing more).
    try_number: u32,
    /// The request was answered: kept pieces are handed out once more, for the last
    /// time.
    answered: bool,
}

impl<B: RequestBody + 'static> Replay<B> {
    /// `body`, kept up to `limit` bytes.
    pub fn new(body: B, limit: usize) -> Replay<B> {
        Replay {
            state: Rc::new(RefCell::new(Kept {
                source: Some(body),
                data: Vec::new(),
                bytes: 0,
                limit,
                overflowed: false,
                trailers: None,
                try_number: 0,
                answered: false,
            })),
        }
    }

    /// Keeps no more of the body: the request was answered, so it will not go out
    /// again. What was kept is freed piece by piece as the try now reading hands it
    /// out (it may not have sent it all yet: a backend may answer before the body
    /// ends).
    pub fn stop_keeping(&self) {
        let mut state = self.state.borrow_mut();
        state.overflowed = true;
        state.answered = true;
    }

    /// Whether a next try can have the body from its start.
    pub fn can_replay(&self) -> bool {
        !self.state.borrow().overflowed
    }

    /// A reader from the start for the next try; `None` when more than the limit has
    /// been read (what went out is lost).
    pub fn reader(&self) -> Option<Reader<B>> {
        let mut state = self.state.borrow_mut();
        if state.overflowed {
            return None;
        }
        state.try_number += 1;
        Some(Reader {
            state: Rc::clone(&self.state),
            next: 0,
            try_number: state.try_number,
            trailers_read: false,
        })
    }
}

/// One try's view of a [`Replay`].
pub struct Reader<B> {
    state: Rc<RefCell<Kept<B>>>,
    /// The next kept piece to give.
    next: usize,
    try_number: u32,
    trailers_read: bool,
}

impl<B: RequestBody> Reader<B> {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut state = self.state.borrow_mut();
        if state.try_number != self.try_number {
            return Poll::Ready(None);
        }
        let answered = state.answered;
        if let Some(data) = state.data.get_mut(self.next) {
            self.next += 1;
            let data = if answered {
                std::mem::take(data)
            } else {
                data.clone()
            };
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(source) = state.source.as_mut() else {
            if self.trailers_read {
                return Poll::Ready(None);
            }
            self.trailers_read = true;
            return Poll::Ready(state.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        };
        let frame = match ready!(Pin::new(source).poll_frame(cx)) {
            None => {
                state.source = None;
                self.trailers_read = true;
                return Poll::Ready(None);
            }
            Some(Err(error)) => {
                state.source = None;
                state.overflowed = true;
                return Poll::Ready(Some(Err(error.into())));
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                if !state.overflowed {
                    if state.bytes + data.len() <= state.limit {
                        state.bytes += data.len();
                        state.data.push(data.clone());
                        self.next += 1;
                    } else {
                        state.overflowed = true;
                        state.data = Vec::new();
                        self.next = 0;
                    }
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    state.trailers = Some(trailers.clone());
                    state.source = None;
                    self.trailers_read = true;
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Err(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::new())))),
            },
        }
    }
}

/// Why pumping a request body stopped before its end.
pub enum PipeError {
    /// The client's body broke off.
    Client(BoxError),
    /// The backend's side of the stream closed or broke.
    Backend(::h2::Error),
}

/// A request body being pumped into its stream.
pub trait Pipe {
    /// Sends what the client has sent and the window allows; `Ready(Ok)` once the
    /// whole body (and its trailers) went out.
    fn poll_pipe(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PipeError>>;

    /// Whether the client's body moved since the last call (for the stream's
    /// `body_idle` bound).
    fn take_moved(&mut self) -> bool;

    /// Whether it waits for the backend (flow-control room for data it holds), not
    /// for the client: a pause then is the backend's.
    fn waits_on_backend(&self) -> bool;
}

struct RequestPipe<B> {
    reader: Reader<B>,
    send: SendStream<Bytes>,
    /// Data read from the client and not yet sent.
    pending: Option<Bytes>,
    moved: bool,
}

impl<B: RequestBody> Pipe for RequestPipe<B> {
    fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    fn waits_on_backend(&self) -> bool {
        self.pending.as_ref().is_some_and(|data| !data.is_empty())
    }

    fn poll_pipe(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PipeError>> {
        loop {
            if let Some(data) = self.pending.as_mut() {
                if data.is_empty() {
                    self.pending = None;
                    continue;
                }
                self.send.reserve_capacity(data.len());
                match ready!(self.send.poll_capacity(cx)) {
                    None => {
                        return Poll::Ready(Err(PipeError::Backend(::h2::Error::from(
                            Reason::STREAM_CLOSED,
                        ))))
                    }
                    Some(Err(e)) => return Poll::Ready(Err(PipeError::Backend(e))),
                    Some(Ok(0)) => continue,
                    Some(Ok(n)) => {
                        let piece = data.split_to(n.min(data.len()));
                        self.send
                            .send_data(piece, false)
                            .map_err(PipeError::Backend)?;
                    }
                }
                continue;
            }
            let frame = ready!(self.reader.poll_frame(cx));
            self.moved = true;
            match frame {
                None => {
                    self.send
                        .send_data(Bytes::new(), true)
                        .map_err(PipeError::Backend)?;
                    return Poll::Ready(Ok(()));
                }
                Some(Err(error)) => {
                    self.send.send_reset(Reason::CANCEL);
                    return Poll::Ready(Err(PipeError::Client(error)));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.pending = Some(data),
                    Err(frame) => {
                        if let Ok(mut trailers) = frame.into_trailers() {
                            // No framing, routing or hop-by-hop field in trailers (RFC
                            // 9110 §6.5.1): they are left out as from the head.
                            let none = HeaderMap::new();
                            let named = connection_lists(RequestFields::Map(&none));
                            let names: Vec<_> = trailers.keys().cloned().collect();
                            for name in names {
                                if is_replaced_toward_backend(name.as_str().as_bytes(), &named) {
                                    trailers.remove(&name);
                                }
                            }
                            self.send
                                .send_trailers(trailers)
                                .map_err(PipeError::Backend)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
            }
        }
    }
}

/// Why a stream brought no response head.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The backend never acted on the stream (see the module docs): it may go again.
    #[error("the backend did not process the stream: {0}")]
    Unprocessed(::h2::Error),
    /// The stream failed after the backend may have acted on it.
    #[error("{0}")]
    Failed(::h2::Error),
    /// The client's body broke off.
    #[error("the request body broke off: {0}")]
    Client(BoxError),
    /// The client's body stopped arriving for `timeouts.body_idle`.
    #[error("the request body stopped arriving")]
    ClientStalled,
    /// No response head before the deadline.
    #[error("no response within per_try")]
    TimedOut,
}

impl StreamError {
    /// `error`, as unprocessed when it says so.
    fn of(error: ::h2::Error) -> StreamError {
        let refused = error.reason() == Some(Reason::REFUSED_STREAM);
        if refused || (error.is_go_away() && error.is_remote()) {
            StreamError::Unprocessed(error)
        } else {
            StreamError::Failed(error)
        }
    }
}

/// A stream whose response head has come.
pub struct Answered {
    /// The response head, and its body to relay.
    pub response: Response<RecvStream>,
    /// The rest of the request body, still to send.
    pub pipe: Option<Box<dyn Pipe>>,
    /// The stream, counted on its connection.
    pub stream: OpenStream,
}

/// Sends `head` with `body` (none: the head ends the stream) as `stream`, and waits
/// for the response head while the body goes out: until `head_by`, pushed back by the
/// time the body took to send (as for HTTP/1: a long upload is not the backend's
/// slowness) but never past `client_deadline`, each pause of the body bounded by
/// `stall`.
pub async fn exchange<B: RequestBody + 'static>(
    stream: OpenStream,
    head: Request<()>,
    body: Option<Reader<B>>,
    head_by: Instant,
    client_deadline: Option<Instant>,
    mut stall: Stall,
) -> Result<Answered, StreamError> {
    let mut sender = stream.connection().sender();
    match tokio::time::timeout_at(head_by, poll_fn(|cx| sender.poll_ready(cx))).await {
        Err(_) => return Err(StreamError::TimedOut),
        // Not opened at all: the connection is gone.
        Ok(Err(e)) => return Err(StreamError::Unprocessed(e)),
        Ok(Ok(())) => {}
    }
    let (mut response, send) = sender
        .send_request(head, body.is_none())
        .map_err(StreamError::Unprocessed)?;
    let mut pipe: Option<Box<dyn Pipe>> = body.map(|reader| {
        Box::new(RequestPipe {
            reader,
            send,
            pending: None,
            moved: false,
        }) as Box<dyn Pipe>
    });
    let started = Instant::now();
    // While the body is still going out, only its pauses are bounded.
    let mut timer = Box::pin(tokio::time::sleep_until(if pipe.is_some() {
        head_by + Duration::from_secs(86_400)
    } else {
        head_by
    }));
    let waited = poll_fn(|cx| {
        if let Some(p) = pipe.as_mut() {
            match p.poll_pipe(cx) {
                Poll::Ready(Err(PipeError::Client(e))) => {
                    return Poll::Ready(Err(StreamError::Client(e)))
                }
                // The response says what became of the stream.
                Poll::Ready(_) => {
                    pipe = None;
                    // Never past the client's own deadline.
                    let pushed = head_by + started.elapsed();
                    timer
                        .as_mut()
                        .reset(client_deadline.map_or(pushed, |at| pushed.min(at)));
                }
                Poll::Pending => {
                    if p.take_moved() {
                        stall.progressed();
                    }
                }
            }
        }
        if let Poll::Ready(answer) = Pin::new(&mut response).poll(cx) {
            return Poll::Ready(answer.map_err(StreamError::of));
        }
        if let Some(p) = pipe.as_ref() {
            if stall.poll_paused(cx).is_ready() {
                // A backend that takes no more of the body has stalled, not the client.
                return Poll::Ready(Err(if p.waits_on_backend() {
                    StreamError::TimedOut
                } else {
                    StreamError::ClientStalled
                }));
            }
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(StreamError::TimedOut))
    })
    .await;
    waited.map(|response| Answered {
        response,
        pipe,
        stream,
    })
}

/// What became of a relayed response at its end.
pub enum Ended {
    /// It ended whole, with these trailers (if any).
    Whole(Option<HeaderMap>),
    /// It broke off.
    Broke,
    /// It was dropped before its end: the client went away.
    Dropped,
}

/// A backend's HTTP/2 response body on its way to the client (see the module docs).
/// `on_end` is called once, when it ends whole or breaks; dropped before then (the
/// client went away), the stream is reset (h2 does it when the last handle goes).
pub struct Relayed {
    recv: RecvStream,
    pipe: Option<Box<dyn Pipe>>,
    data_done: bool,
    ended: bool,
    /// Bounds each pause of the body by the pool's `timeouts.body_idle`.
    stall: Stall,
    stream: Option<OpenStream>,
    on_end: Option<Box<dyn FnOnce(Ended, u64)>>,
    /// Data bytes relayed.
    bytes: u64,
}

impl Relayed {
    /// The body `recv` of a response on `stream`, whose request's body `pipe` is
    /// still sending, bounded by `stall`.
    pub fn new(
        recv: RecvStream,
        pipe: Option<Box<dyn Pipe>>,
        stream: OpenStream,
        stall: Stall,
        on_end: Box<dyn FnOnce(Ended, u64)>,
    ) -> Relayed {
        let at_end = recv.is_end_stream();
        let mut relayed = Relayed {
            data_done: at_end,
            recv,
            pipe,
            ended: false,
            stall,
            stream: Some(stream),
            on_end: Some(on_end),
            bytes: 0,
        };
        // A head that ended the stream (gRPC's Trailers-Only): the client's side must
        // see the end with the head (`is_end_stream`), or HTTP/2 clients get an
        // empty DATA frame that gRPC libraries refuse.
        if at_end {
            relayed.end(Ended::Whole(None));
        }
        relayed
    }

    fn end(&mut self, how: Ended) {
        self.ended = true;
        self.pipe = None;
        self.stream = None;
        if let Some(on_end) = self.on_end.take() {
            on_end(how, self.bytes);
        }
    }

    fn broke(&mut self, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.end(Ended::Broke);
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(pipe) = this.pipe.as_mut() {
            match pipe.poll_pipe(cx) {
                Poll::Ready(Err(PipeError::Client(error))) => {
                    this.end(Ended::Dropped);
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(_) => {
                    // Its last frames moved: the backend's pause starts now.
                    this.pipe = None;
                    this.stall.progressed();
                }
                Poll::Pending => {
                    if pipe.take_moved() {
                        this.stall.progressed();
                    }
                }
            }
        }
        loop {
            if this.data_done {
                match this.recv.poll_trailers(cx) {
                    Poll::Ready(Ok(trailers)) => {
                        this.end(Ended::Whole(trailers.clone()));
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Poll::Ready(Err(error)) => return this.broke(error.into()),
                    Poll::Pending => break,
                }
            }
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    this.stall.progressed();
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.bytes += data.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => return this.broke(error.into()),
                Poll::Ready(None) => this.data_done = true,
                Poll::Pending => break,
            }
        }
        // Neither way moved: cut the stream once that lasts `body_idle`. While the
        // client is still sending, the pause is the client's.
        ready!(this.stall.poll_paused(cx));
        let limit = this.stall.limit();
        if this.pipe.as_ref().is_some_and(|p| !p.waits_on_backend()) {
            this.end(Ended::Dropped);
            return Poll::Ready(Some(Err(
                format!("nothing moved either way for {limit:?}").into()
            )));
        }
        this.broke(format!("the backend sent nothing for {limit:?}").into())
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        if !self.ended {
            self.end(Ended::Dropped);
        }
    }
}
