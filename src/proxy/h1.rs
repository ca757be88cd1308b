//! HTTP/1.1 toward backends: a connection is a socket and a read buffer, driven by the
//! task of the request that uses it.
//!
//! hyper's client ran each upstream connection as its own task fed through a channel,
//! rebuilt the request's header map once to rewrite it and once more to encode it, and
//! parsed every response into a map that evenkeel then rewrote again. Here the request
//! head is written in one pass over the client's headers (hop-by-hop headers dropped,
//! `X-Forwarded-*` added) into bytes that a retry can send again as they are, and the
//! response head is parsed by httparse straight into the map the client gets, hop-by-hop
//! headers left out, values sharing the bytes read. callgrind, 1 worker, 3 backends:
//! see the commit that introduced this module for the before and after.
//!
//! Framing (RFC 9112 §6): a response to `HEAD`, a 204 and a 304 have no body; else
//! `Transfer-Encoding: chunked` frames it by chunks (any other coding is refused as
//! malformed: evenkeel does not decode it, and the field is not passed on, so the
//! client would get coded bytes undeclared); else `Content-Length` (several differing
//! values: refused as malformed); else the close. `Content_Length` or
//! `Transfer_Encoding` spelt with underscores is refused, and a head over
//! [`MAX_HEAD_BYTES`] too (502 to the client). Interim 1xx responses are
//! skipped; a 101 (no upgrade is ever asked for) is malformed. A connection is reused
//! only when the response allowed it (HTTP/1.1 without `Connection: close`, or HTTP/1.0
//! with `keep-alive`), its body was read to the end, and nothing followed it.

use std::future::poll_fn;
use std::io;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, StatusCode};
use hyper::body::Body;
use tokio::io::AsyncRead;

use super::headers::{
    connection_lists, is_hop_by_hop, is_hop_by_hop_name, tokens, ConnectionOptions,
    X_FORWARDED_FOR, X_FORWARDED_HOST,
};
use super::outbox::{poll_write_slices, pump, write_all, Outbox, PumpError};
use super::stall::Stall;
use super::transport::Transport;

/// A client's request body as the proxy forwards it: hyper's (HTTP/2) or evenkeel's
/// own (HTTP/1, [`super::downstream`]).
pub trait RequestBody:
    Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Unpin
{
}

impl<B> RequestBody for B where
    B: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Unpin
{
}

/// Largest message head accepted either way (start line and fields): a larger request
/// gets 431, a larger response is malformed (502).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields accepted in a response head.
const MAX_HEADERS: usize = 128;
/// How much room a read asks for.
const READ_CHUNK: usize = 16 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most trailer fields accepted after a chunked body (they are not forwarded).
const MAX_TRAILERS: u32 = 64;
/// Request body bytes gathered into one write to a backend at most.
const BODY_GATHER: usize = 64 * 1024;

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The backend closed the connection before a complete response head.
    #[error("the backend closed the connection before answering")]
    Closed,
    /// The backend closed the connection before the end of the response body.
    #[error("the backend closed the connection in the middle of the response body")]
    Truncated,
    /// The response head is not valid HTTP/1.x.
    #[error("malformed response head: {0}")]
    Malformed(&'static str),
    /// The response head is larger than [`MAX_HEAD_BYTES`].
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The chunked response body is malformed.
    #[error("malformed chunked response body")]
    BadChunk,
    /// No complete response head before the try's deadline (`timeouts.per_try`).
    #[error("the backend did not answer in time")]
    TimedOut,
    /// The backend took or sent no byte of a body for this long
    /// (`timeouts.body_idle`).
    #[error("the backend moved no byte of the body for {0:?}")]
    Stalled(std::time::Duration),
    /// The client sent no byte of its request body for this long
    /// (`timeouts.body_idle`).
    #[error("the client sent no byte of its request body for {0:?}")]
    ClientStalled(std::time::Duration),
    /// Reading the client's request body failed.
    #[error("reading the client's request body failed: {0}")]
    RequestBody(Box<dyn std::error::Error + Send + Sync>),
}

/// A request's head as it goes to every backend tried, and how its body is framed.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The encoded request line and headers, blank line included.
    pub head: Bytes,
    /// The body is sent with chunked framing (the client gave no `Content-Length`).
    chunked: bool,
    /// A `HEAD` request: the response has no body whatever its headers say.
    is_head: bool,
}

/// How a request's body goes to the backend. The framing is always evenkeel's own,
/// never the client's fields copied: a client must not be able to make the backend
/// frame the body differently from how evenkeel sends it (say, with
/// `Connection: content-length`, which would strip the length from a copied head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body, and the client sent no `Content-Length`.
    None,
    /// `Content-Length: N` (also 0, when the client sent it).
    Length(u64),
    /// Chunked: the client sent a body without a length (chunked, or HTTP/2).
    Chunked,
}

impl BodyFraming {
    /// The framing for a request with these fields and this body: its length when
    /// the body knows it exactly (the client's `Content-Length`, or a body evenkeel
    /// read whole before picking a backend), else chunked.
    pub fn of<B: Body>(headers: &HeaderMap, body: &B) -> BodyFraming {
        let has_length = headers.contains_key(header::CONTENT_LENGTH);
        match (body.is_end_stream(), body.size_hint().exact()) {
            (true, _) if has_length => BodyFraming::Length(0),
            (true, _) => BodyFraming::None,
            (false, Some(length)) => BodyFraming::Length(length),
            (false, None) => BodyFraming::Chunked,
        }
    }
}

/// Encodes a request for a backend: origin-form target, HTTP/1.1, the client's headers
/// without hop-by-hop ones (nor those `Connection` names) and without `Expect` (the
/// client got its 100 Continue from evenkeel); `Host` is the host the request was
/// routed by (`host`: the client's `Host`, or the authority of an absolute-form or
/// HTTP/2 target; empty without either, as from an HTTP/1.0 client); `X-Forwarded-For` with the client appended, `X-Forwarded-Proto:
/// https` when the client came over TLS (`https`) else `http`, `X-Forwarded-Host` set
/// to that host; `Content-Length` or chunked framing from
/// `framing`. Cookie fields are joined into one (RFC 9113 §8.2.3).
pub fn encode(
    parts: &request::Parts,
    framing: BodyFraming,
    client: &HeaderValue,
    https: bool,
    host: Option<&HeaderValue>,
) -> Outgoing {
    let headers = &parts.headers;
    let chunked = framing == BodyFraming::Chunked;
    let mut out = Vec::with_capacity(256 + headers.len() * 32);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // An absolute-form target with no path (`http://a?q`) keeps its query behind "/".
    if target.starts_with('?') {
        out.push(b'/');
    }
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let named = connection_lists(headers);
    let mut cookie_written = false;
    for (name, value) in headers {
        if is_hop_by_hop(name)
            || *name == header::CONTENT_LENGTH
            || *name == header::HOST
            || *name == header::EXPECT
            || *name == X_FORWARDED_FOR
            || *name == X_FORWARDED_HOST
            || *name == super::headers::X_FORWARDED_PROTO
            || named.names(name)
        {
            continue;
        }
        if *name == header::COOKIE {
            if !cookie_written {
                cookie_written = true;
                put_joined(&mut out, name, headers.get_all(header::COOKIE), b"; ");
            }
            continue;
        }
        put_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    match host {
        Some(host) => put_field(&mut out, b"host", host.as_bytes()),
        // An HTTP/1.0 client may send none; an HTTP/1.1 request must have one, empty
        // when the target has no authority (RFC 9112 §3.2), or a backend answers 400.
        None => out.extend_from_slice(b"host: \r\n"),
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for value in headers.get_all(&X_FORWARDED_FOR) {
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.as_bytes());
    out.extend_from_slice(if https {
        b"\r\nx-forwarded-proto: https\r\n"
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
    if let Some(host) = host {
        put_field(&mut out, b"x-forwarded-host", host.as_bytes());
    }
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(length) => {
            let _ = write!(out, "content-length: {length}\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    Outgoing {
        head: Bytes::from(out),
        chunked,
        is_head: parts.method == Method::HEAD,
    }
}

/// Writes one `name: value` line.
pub(super) fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn put_joined<'a>(
    out: &mut Vec<u8>,
    name: &HeaderName,
    values: impl IntoIterator<Item = &'a HeaderValue>,
    separator: &[u8],
) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(separator);
        }
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// What bounds one exchange with a backend.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// When the response head must have arrived had the request gone out at once
    /// (`timeouts.per_try` from the try's start, within `timeouts.request`); moved
    /// later by the time sending the request takes.
    pub head: tokio::time::Instant,
    /// The longest the request may pause while it is sent (`timeouts.body_idle`).
    pub body_idle: std::time::Duration,
}

/// How far an exchange got before it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing of the request was written; the body, if any, is untouched.
    Unwritten,
    /// Some of the request was written, no byte of a response arrived.
    Unanswered,
    /// The backend had begun to answer.
    Answered,
}

/// A failed exchange.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: Error,
    /// How far the exchange got.
    pub progress: Progress,
}

/// What a backend has said while its request body was still being sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Early {
    /// Nothing final yet (interim 1xx heads are dropped as they come).
    Nothing,
    /// A final head that asks to keep receiving (a 2xx or 3xx on a connection it
    /// keeps open): the upload goes on.
    Head,
    /// A final head that refuses the body (4xx, 5xx, or `Connection: close`), an end
    /// of stream, an error, or a head evenkeel will refuse anyway: the upload stops.
    Stop,
}

/// Reads what the backend has sent during an upload (RFC 9112 §9.5: a client should
/// stop sending a body the server shows it does not want).
fn early_answer(read: &mut BytesMut) -> Early {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut fields);
        match response.parse(read) {
            Ok(httparse::Status::Complete(len)) => {
                let code = response.code.unwrap_or(0);
                if (100..200).contains(&code) && code != 101 {
                    read.advance(len);
                    continue;
                }
                let closes = response.headers.iter().any(|f| {
                    f.name.eq_ignore_ascii_case("connection")
                        && tokens(f.value).any(|t| t.eq_ignore_ascii_case(b"close"))
                });
                return if code >= 400 || closes || code < 200 {
                    Early::Stop
                } else {
                    Early::Head
                };
            }
            Ok(httparse::Status::Partial) if read.len() < MAX_HEAD_BYTES => return Early::Nothing,
            _ => return Early::Stop,
        }
    }
}

/// A failure to send a request, as a [`Failure`] at `progress`.
fn sending_failed<E>(
    error: PumpError<E>,
    body_idle: std::time::Duration,
    progress: Progress,
) -> Failure
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Failure {
        error: match error {
            PumpError::Body(e) => Error::RequestBody(e.into()),
            PumpError::Write(e) => e.into(),
            PumpError::Stalled { reading: true } => Error::ClientStalled(body_idle),
            PumpError::Stalled { reading: false } => Error::Stalled(body_idle),
        },
        progress,
    }
}

/// A backend's response head, hop-by-hop headers removed, and its body's framing.
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// The end-to-end fields.
    pub fields: Fields,
    /// How the body is framed.
    pub framing: Framing,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// How a response body is framed, and how much of it is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body, or the body was read to its end.
    Done,
    /// This many bytes are left.
    Length(u64),
    /// Chunked, at this point of the chunk grammar.
    Chunked(Chunk),
    /// The body ends when the backend closes the connection.
    Close,
}

/// Where a chunked body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, in the trailer section, after this many fields.
    Trailers(u32),
}

/// One keep-alive connection to a backend.
pub struct Connection {
    stream: Transport,
    read: BytesMut,
    /// Where the fields of the last response head were (reused, not reallocated).
    spans: Vec<Span>,
    /// Bounds each exchange (made at the first, re-armed for the next).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// False once an exchange ended with part of its request unsent.
    reusable: bool,
    _open: super::upstream::Counted,
}

impl Connection {
    /// A connection over `stream`, counted in the open gauge while it lives.
    pub fn new(stream: Transport, open: super::upstream::Counted) -> Connection {
        Connection {
            stream,
            read: BytesMut::new(),
            spans: Vec::new(),
            timer: None,
            reusable: true,
            _open: open,
        }
    }

    /// Whether an idle connection can take a request: nothing unread, and the backend
    /// has neither closed it nor sent anything since its last response (bytes past its
    /// `Content-Length`, a body after a `HEAD` response): see
    /// [`Transport::is_idle_and_open`].
    pub fn is_idle_and_open(&mut self) -> bool {
        self.read.is_empty() && self.stream.is_idle_and_open()
    }

    /// Sends the request (`body`: the client's, taken only once the head is written)
    /// and reads the response head. Sending is bounded by progress: a pause of
    /// `limits.body_idle` in which no byte moves (the client sends nothing of its body,
    /// or the backend reads nothing) fails it with [`Error::Stalled`]. The response
    /// head must then arrive by `limits.head` moved later by however long sending took
    /// (else [`Error::TimedOut`]), so a long upload is not cut for taking long, only
    /// for stopping. The connection keeps one timer for all its exchanges, re-armed
    /// each time: making and dropping a timer per request cost a few percent of its
    /// instructions.
    pub async fn exchange<B: RequestBody>(
        &mut self,
        request: &Outgoing,
        body: &mut Option<B>,
        limits: Limits,
    ) -> Result<ResponseHead, Failure> {
        // Only an upload takes long enough to be worth reading the clock for.
        let started = body.is_some().then(tokio::time::Instant::now);
        self.send(request, body, limits.body_idle).await?;
        let deadline = limits.head + started.map_or(Duration::ZERO, |s| s.elapsed());
        let mut timer = match self.timer.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let result = tokio::select! {
            biased;
            result = self.read_head(request.is_head) => result,
            () = &mut timer => Err(Failure {
                error: Error::TimedOut,
                progress: Progress::Answered,
            }),
        };
        self.timer = Some(timer);
        result.map(|mut head| {
            head.keep_alive &= self.reusable;
            head
        })
    }

    /// Writes the request head, then the body (re-chunked when `request.chunked`),
    /// what the body has at hand gathered into one write. The body is taken only once
    /// the head is written, so a try that fails before that can go out again whole.
    async fn send<B: RequestBody>(
        &mut self,
        request: &Outgoing,
        body: &mut Option<B>,
        body_idle: std::time::Duration,
    ) -> Result<(), Failure> {
        let mut stall = Stall::new(body_idle);
        let stream = &mut self.stream;
        let mut writer = |cx: &mut Context<'_>, slices: &[io::IoSlice<'_>]| {
            poll_write_slices(Pin::new(&mut *stream), cx, slices)
        };
        // A write to a connection the backend has closed fails at once, before anything
        // reaches it.
        write_all(&mut writer, &request.head, &mut stall)
            .await
            .map_err(|error| Failure {
                error: error.into(),
                progress: Progress::Unwritten,
            })?;
        let Some(body) = body.take() else {
            return Ok(());
        };
        // Boxed: most requests have no body, and this future's state would otherwise
        // be carried (and copied) with every request's.
        Box::pin(self.upload(body, request.chunked, stall)).await
    }

    /// Sends a request body, what it has at hand gathered into one write, until it
    /// ends or the backend answers.
    async fn upload<B: RequestBody>(
        &mut self,
        mut body: B,
        chunked: bool,
        mut stall: Stall,
    ) -> Result<(), Failure> {
        let body_idle = stall.limit();
        let Connection {
            stream,
            read,
            reusable,
            ..
        } = self;
        let (mut from_backend, mut to_backend) = stream.split();
        let mut writer = |cx: &mut Context<'_>, slices: &[io::IoSlice<'_>]| {
            poll_write_slices(Pin::new(&mut to_backend), cx, slices)
        };
        let mut outbox = Outbox::default();
        let upload = pump(
            &mut body,
            &mut outbox,
            chunked,
            BODY_GATHER,
            None,
            &mut writer,
            &mut stall,
        );
        // A backend may answer before it has the whole body. If it refuses the body (a
        // 413, a close), its answer is the response and the rest of the body is not
        // sent; if it answers and keeps reading (a 200 from a streaming handler), the
        // upload goes on, and should the backend close before the body is all sent, its
        // answer still stands. Either way neither connection is reused.
        let mut early = Early::Nothing;
        let answered = poll_fn(|cx| loop {
            if early == Early::Head {
                return Poll::Pending; // read on once the upload is done
            }
            match ready!(poll_fill(&mut from_backend, read, cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => match early_answer(read) {
                    Early::Nothing => {}
                    Early::Head => {
                        *reusable = false;
                        early = Early::Head;
                    }
                    Early::Stop => return Poll::Ready(()),
                },
            }
        });
        let sent = tokio::select! {
            biased;
            () = answered => {
                *reusable = false;
                return Ok(());
            }
            sent = upload => sent,
        };
        match sent {
            Ok(()) => Ok(()),
            // The backend answered, then stopped taking the body: the answer stands.
            Err(PumpError::Write(_)) if !*reusable => Ok(()),
            Err(e) => Err(sending_failed(e, body_idle, Progress::Unanswered)),
        }
    }

    async fn read_head(&mut self, is_head: bool) -> Result<ResponseHead, Failure> {
        // Bytes may have come while the body was being sent.
        let mut answered = !self.read.is_empty();
        let failure = |error, answered| Failure {
            error,
            progress: if answered {
                Progress::Answered
            } else {
                Progress::Unanswered
            },
        };
        loop {
            match self.parse_head(is_head) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(error) => return Err(failure(error, true)),
            }
            if self.read.len() >= MAX_HEAD_BYTES {
                return Err(failure(Error::HeadTooLarge, true));
            }
            let read = std::future::poll_fn(|cx| self.poll_fill(cx)).await;
            match read {
                Ok(0) if answered => return Err(failure(Error::Truncated, true)),
                Ok(0) => return Err(failure(Error::Closed, false)),
                Ok(_) => answered = true,
                Err(error) => return Err(failure(error.into(), answered)),
            }
        }
    }

    /// Parses a complete response head from the read buffer (skipping 1xx ones);
    /// `None` while it is incomplete.
    fn parse_head(&mut self, is_head: bool) -> Result<Option<ResponseHead>, Error> {
        parse_response(&mut self.read, &mut self.spans, is_head)
    }

    /// Reads more of the response into the buffer; 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.stream, &mut self.read, cx)
    }

    /// Runs `f` on the TCP socket under the connection (tests).
    #[cfg(test)]
    pub(crate) fn with_tcp<T>(&self, f: impl FnOnce(&tokio::net::TcpStream) -> T) -> T {
        self.stream.with_tcp(f)
    }

    /// Whether nothing the backend sent is left unread (a connection with bytes past
    /// its last response must not be reused).
    pub fn is_drained(&self) -> bool {
        self.read.is_empty()
    }

    /// The next piece of a response body framed by `framing` (which it advances);
    /// `None` at its end.
    pub fn poll_body(
        &mut self,
        framing: &mut Framing,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Error>>> {
        poll_body(&mut self.stream, &mut self.read, framing, cx)
    }
}

/// Parses a complete response head off the front of `read` (skipping 1xx ones, which
/// it consumes), recording field positions in `spans`; `None` while it is incomplete.
/// `is_head`: the request was a `HEAD`, so the response has no body.
pub fn parse_response(
    read: &mut BytesMut,
    spans: &mut Vec<Span>,
    is_head: bool,
) -> Result<Option<ResponseHead>, Error> {
    loop {
        // Uninitialised: zeroing 128 fields cost 4,000 instructions per response.
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            read,
            &mut fields,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
            Ok(httparse::Status::Complete(_)) => return Err(Error::HeadTooLarge),
            Ok(httparse::Status::Partial) if read.len() >= MAX_HEAD_BYTES => {
                return Err(Error::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Malformed("more than 128 header fields"))
            }
            Err(_) => return Err(Error::Malformed("not an HTTP/1.x response")),
        };
        let code = response.code.unwrap_or(0);
        if code == 101 {
            return Err(Error::Malformed(
                "101 Switching Protocols, no upgrade was asked",
            ));
        }
        if (100..200).contains(&code) {
            read.advance(len);
            continue;
        }
        let status =
            StatusCode::from_u16(code).map_err(|_| Error::Malformed("status code out of range"))?;
        let http10 = response.version == Some(0);
        // Field positions, so the values can share the head's bytes once split off.
        let base = read.as_ptr() as usize;
        spans.clear();
        spans.extend(response.headers.iter().map(|field| {
            (
                field.name.as_ptr() as usize - base,
                field.name.len(),
                field.value.as_ptr() as usize - base,
                field.value.len(),
            )
        }));
        let raw = read.split_to(len).freeze();
        return build_head(&raw, spans, status, http10, is_head).map(Some);
    }
}

/// Reads more from `stream` into `read`; 0 at the end of the stream. A read that
/// returns less than asked clears the socket's readiness (tokio), so no extra read
/// that would only say "would block" follows.
pub(super) fn poll_fill<S: AsyncRead + Unpin>(
    stream: &mut S,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if read.capacity() - read.len() < 1024 {
        read.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, read)
}

/// The next piece of a message body framed by `framing` (which it advances), from
/// `read` and then `stream`; `None` at its end.
pub fn poll_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    read: &mut BytesMut,
    framing: &mut Framing,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Bytes, Error>>> {
    loop {
        match framing {
            Framing::Done => return Poll::Ready(None),
            Framing::Length(left) => {
                if read.is_empty() && ready!(poll_fill(stream, read, cx))? == 0 {
                    return Poll::Ready(Some(Err(Error::Truncated)));
                }
                let take = (*left).min(read.len() as u64);
                *left -= take;
                if *left == 0 {
                    *framing = Framing::Done;
                }
                return Poll::Ready(Some(Ok(read.split_to(take as usize).freeze())));
            }
            Framing::Close => {
                if read.is_empty() && ready!(poll_fill(stream, read, cx))? == 0 {
                    *framing = Framing::Done;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Ok(read.split().freeze())));
            }
            Framing::Chunked(chunk) => match *chunk {
                // httparse takes an empty size (a line of only an extension) for 0:
                // require a hex digit first, as RFC 9112 §7.1 does.
                Chunk::Size if read.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
                    return Poll::Ready(Some(Err(Error::BadChunk)));
                }
                Chunk::Size => {
                    // The line must end in CRLF with no bare CR or LF before: httparse
                    // takes a bare LF inside a chunk extension, where a peer that ends
                    // lines at LF would read the chunk's data from there.
                    let Some(lf) = read.iter().position(|&b| b == b'\n') else {
                        let (_, inner) = read.split_last().unwrap_or((&0, &[]));
                        if inner.contains(&b'\r') {
                            return Poll::Ready(Some(Err(Error::BadChunk)));
                        }
                        ready!(fill_line(stream, read, cx))?;
                        continue;
                    };
                    if lf == 0 || read[lf - 1] != b'\r' || read[..lf - 1].contains(&b'\r') {
                        return Poll::Ready(Some(Err(Error::BadChunk)));
                    }
                    match httparse::parse_chunk_size(&read[..=lf]) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            read.advance(used);
                            *chunk = if size == 0 {
                                Chunk::Trailers(0)
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        _ => return Poll::Ready(Some(Err(Error::BadChunk))),
                    }
                }
                Chunk::Data(left) => {
                    if read.is_empty() && ready!(poll_fill(stream, read, cx))? == 0 {
                        return Poll::Ready(Some(Err(Error::Truncated)));
                    }
                    let take = left.min(read.len() as u64);
                    *chunk = if take == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - take)
                    };
                    return Poll::Ready(Some(Ok(read.split_to(take as usize).freeze())));
                }
                Chunk::DataEnd => {
                    if read.len() < 2 {
                        ready!(fill_line(stream, read, cx))?;
                        continue;
                    }
                    if &read[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(Error::BadChunk)));
                    }
                    read.advance(2);
                    *chunk = Chunk::Size;
                }
                Chunk::Trailers(lines) => {
                    let end = read.windows(2).position(|w| w == b"\r\n");
                    // A bare LF or CR (which a lenient peer may take for a line end) or
                    // a line that is no field would let two parsers disagree on where
                    // the message ends: refuse. At most 64 trailer fields.
                    let line = &read[..end.unwrap_or(read.len())];
                    // Without its line end yet, the last byte may be the CR of a CRLF
                    // split between reads.
                    let inner = match (end, line.split_last()) {
                        (None, Some((b'\r', inner))) => inner,
                        _ => line,
                    };
                    if line.contains(&b'\n')
                        || inner.contains(&b'\r')
                        || (end.is_some_and(|e| e > 0) && !line.contains(&b':'))
                        || lines >= MAX_TRAILERS
                    {
                        return Poll::Ready(Some(Err(Error::BadChunk)));
                    }
                    match end {
                        // The blank line: the end. Trailer fields are not forwarded.
                        Some(0) => {
                            read.advance(2);
                            *framing = Framing::Done;
                            return Poll::Ready(None);
                        }
                        Some(end) => {
                            read.advance(end + 2);
                            *chunk = Chunk::Trailers(lines + 1);
                        }
                        None => ready!(fill_line(stream, read, cx))?,
                    }
                }
            },
        }
    }
}

/// Reads more of a line of the chunk grammar; an error if the line is too long or the
/// stream ends.
fn fill_line<S: AsyncRead + Unpin>(
    stream: &mut S,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Error>> {
    if read.len() > MAX_LINE {
        return Poll::Ready(Err(Error::BadChunk));
    }
    match ready!(poll_fill(stream, read, cx)) {
        Ok(0) => Poll::Ready(Err(Error::Truncated)),
        Ok(_) => Poll::Ready(Ok(())),
        Err(e) => Poll::Ready(Err(e.into())),
    }
}

/// A field's name and value in a message head: (name start, length, value start,
/// length).
pub type Span = (usize, usize, usize, usize);

/// Builds the response head from `raw` and the field positions in it.
fn build_head(
    raw: &Bytes,
    spans: &[Span],
    status: StatusCode,
    http10: bool,
    is_head: bool,
) -> Result<ResponseHead, Error> {
    let field = |&(n, nl, v, vl): &Span| (&raw[n..n + nl], (v, vl));
    // Framing and connection options first: they decide what is kept.
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut content_length: Option<u64> = None;
    let mut connection = ConnectionOptions::default();
    for span in spans {
        let (name, (v, vl)) = field(span);
        let value = &raw[v..v + vl];
        if is_disguised_framing(name) {
            return Err(Error::Malformed("a framing field spelt with '_'"));
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Transfer-Encoding is hop-by-hop and not passed on: a coding evenkeel does
            // not decode (gzip, chunked) would reach the client undeclared.
            let mut codings = tokens(value);
            if !(codings
                .next()
                .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
                && codings.next().is_none())
                || transfer_encoding.is_some()
            {
                return Err(Error::Malformed("a transfer coding other than chunked"));
            }
            transfer_encoding = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_length(value.trim_ascii())
                .ok_or(Error::Malformed("invalid Content-Length"))?;
            if content_length.is_some_and(|l| l != length) {
                return Err(Error::Malformed("differing Content-Length values"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection.read(value);
        }
    }
    let mut kept = Vec::with_capacity(spans.len());
    kept.extend(spans.iter().copied().filter(|&(n, nl, _, _)| {
        let name = &raw[n..n + nl];
        !(is_hop_by_hop_name(name)
            || (transfer_encoding.is_some() && name.eq_ignore_ascii_case(b"content-length"))
            || (connection.names_fields && is_listed(raw, spans, name)))
    }));
    let framing = if is_head
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Done
    } else if let Some(codings) = transfer_encoding {
        match tokens(codings).last() {
            Some(last) if last.eq_ignore_ascii_case(b"chunked") => Framing::Chunked(Chunk::Size),
            _ => Framing::Close,
        }
    } else {
        match content_length {
            Some(0) => Framing::Done,
            Some(length) => Framing::Length(length),
            None => Framing::Close,
        }
    };
    // A response framed by Transfer-Encoding next to a Content-Length, or in HTTP/1.0,
    // was framed by someone confused: read it, but do not reuse the connection (RFC
    // 9112 §6.1, §6.3).
    let confused = transfer_encoding.is_some() && (content_length.is_some() || http10);
    // A response that has no body but announces one (a `HEAD` response, as it may; a
    // 204, as it must not) is where a misbehaving backend sends a body anyway — perhaps
    // later than any check for stray bytes can see: do not reuse the connection.
    let announces_body = transfer_encoding.is_some() || content_length.is_some_and(|l| l > 0);
    let bodiless_with_length = (is_head || status == StatusCode::NO_CONTENT) && announces_body;
    let keep_alive = framing != Framing::Close
        && !confused
        && !bodiless_with_length
        && if http10 {
            connection.keep_alive && !connection.close
        } else {
            !connection.close
        };
    Ok(ResponseHead {
        status,
        fields: Fields {
            raw: raw.clone(),
            spans: kept,
        },
        framing,
        keep_alive,
    })
}

/// A response's end-to-end fields as the backend sent them: the head's bytes and where
/// each kept field is in them. HTTP/1 clients get them written out as they are
/// (building a header map only to write it out again was about a tenth of a proxied
/// request's instructions); HTTP/2 clients get [`Fields::to_header_map`].
#[derive(Debug, Clone)]
pub struct Fields {
    raw: Bytes,
    spans: Vec<Span>,
}

impl Fields {
    /// Each field's name (as the backend spelled it) and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|&(n, nl, v, vl)| (&self.raw[n..n + nl], &self.raw[v..v + vl]))
    }

    /// The fields as a header map (values share the head's bytes).
    pub fn to_header_map(&self) -> Result<HeaderMap, Error> {
        let mut headers = HeaderMap::with_capacity(self.spans.len());
        for &(n, nl, v, vl) in &self.spans {
            let name = HeaderName::from_bytes(&self.raw[n..n + nl])
                .map_err(|_| Error::Malformed("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(self.raw.slice(v..v + vl))
                .map_err(|_| Error::Malformed("invalid header value"))?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// Whether a `Connection` field of the head names `name`.
fn is_listed(raw: &Bytes, spans: &[Span], name: &[u8]) -> bool {
    spans.iter().any(|&(n, nl, v, vl)| {
        raw[n..n + nl].eq_ignore_ascii_case(b"connection")
            && tokens(&raw[v..v + vl]).any(|t| t.eq_ignore_ascii_case(name))
    })
}

/// Whether a field name is `Content-Length` or `Transfer-Encoding` spelt with `_` for
/// `-` (any case): many servers read `_` as `-`, so such a field would frame the body
/// for them and not for evenkeel — a known smuggling path.
pub(super) fn is_disguised_framing(name: &[u8]) -> bool {
    let disguised = |framing: &[u8]| {
        name.len() == framing.len()
            && name.contains(&b'_')
            && name
                .iter()
                .zip(framing)
                .all(|(&a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    };
    disguised(b"content-length") || disguised(b"transfer-encoding")
}

/// A `Content-Length` value: digits only (no sign, no spaces).
pub(super) fn parse_length(token: &[u8]) -> Option<u64> {
    if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn parts(build: http::request::Builder) -> request::Parts {
        build.body(()).expect("request").into_parts().0
    }

    fn text(out: &Outgoing) -> String {
        String::from_utf8(out.head.to_vec()).expect("ascii")
    }

    #[test]
    fn the_head_drops_hop_by_hop_fields_and_adds_forwarded_ones() {
        let request = parts(
            http::Request::get("http://shop.example/cart?x=1")
                .header("host", "shop.example")
                .header("connection", "keep-alive, x-secret")
                .header("x-secret", "1")
                .header("keep-alive", "timeout=5")
                .header("te", "trailers")
                .header("expect", "100-continue")
                .header("x-forwarded-for", "10.0.0.1")
                .header("x-forwarded-for", "10.0.0.2")
                .header("x-forwarded-proto", "https")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .header("x-kept", "yes"),
        );
        let host = HeaderValue::from_static("shop.example");
        let client = HeaderValue::from_static("127.0.0.9");
        let out = encode(&request, BodyFraming::None, &client, false, Some(&host));
        assert_eq!(
            text(&out),
            "GET /cart?x=1 HTTP/1.1\r\ncookie: a=1; b=2\r\nx-kept: yes\r\n\
             host: shop.example\r\nx-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.9\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: shop.example\r\n\r\n"
        );
    }

    #[test]
    fn an_http2_request_gets_its_host_from_the_authority_and_a_body_without_length_is_chunked() {
        let request = parts(
            http::Request::post("http://api.example:8080/v1")
                .version(http::Version::HTTP_2)
                .header("content-type", "text/plain"),
        );
        let host = HeaderValue::from_static("api.example:8080");
        let client = HeaderValue::from_static("::1");
        let out = encode(&request, BodyFraming::Chunked, &client, true, Some(&host));
        assert!(out.chunked);
        assert_eq!(
            text(&out),
            "POST /v1 HTTP/1.1\r\ncontent-type: text/plain\r\nhost: api.example:8080\r\n\
             x-forwarded-for: ::1\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: api.example:8080\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    /// Found by fuzz/request_head: an HTTP/1.0 request without `Host` went to backends
    /// as an HTTP/1.1 request without one, which a strict backend answers with 400.
    #[test]
    fn a_request_without_host_goes_out_with_an_empty_host() {
        let request = parts(http::Request::get("/").version(http::Version::HTTP_10));
        let client = HeaderValue::from_static("10.0.0.1");
        let out = encode(&request, BodyFraming::None, &client, false, None);
        assert_eq!(
            text(&out),
            "GET / HTTP/1.1\r\nhost: \r\nx-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        );
    }

    /// A backend on 127.0.0.1 that reads one request head per answer and writes the
    /// answers as they are, then closes.
    async fn backend(answers: Vec<&'static [u8]>) -> Connection {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            for answer in answers {
                let mut seen = Vec::new();
                while !seen.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    seen.push(byte[0]);
                }
                socket.write_all(answer).await.expect("write");
            }
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let open = Arc::new(AtomicU64::new(0));
        Connection::new(
            Transport::Plain(stream),
            super::super::upstream::Counted::new(&open),
        )
    }

    pub(crate) fn no_body() -> Option<http_body_util::Empty<Bytes>> {
        None
    }

    /// A connection to a backend that answers `answers`, and the head of its first.
    async fn first_answer(answers: Vec<&'static [u8]>) -> (Connection, ResponseHead) {
        let mut connection = backend(answers).await;
        let head = connection
            .exchange(&get(), &mut no_body(), later())
            .await
            .expect("head");
        (connection, head)
    }

    pub(crate) fn later() -> Limits {
        Limits {
            head: tokio::time::Instant::now() + std::time::Duration::from_secs(5),
            body_idle: std::time::Duration::from_secs(5),
        }
    }

    pub(crate) fn get() -> Outgoing {
        let request = parts(http::Request::get("/").header("host", "b"));
        encode(
            &request,
            BodyFraming::None,
            &HeaderValue::from_static("127.0.0.1"),
            false,
            Some(&HeaderValue::from_static("b")),
        )
    }

    pub(crate) async fn body(
        connection: &mut Connection,
        mut framing: Framing,
    ) -> Result<Vec<u8>, Error> {
        let mut all = Vec::new();
        while let Some(piece) =
            std::future::poll_fn(|cx| connection.poll_body(&mut framing, cx)).await
        {
            all.extend_from_slice(&piece?);
        }
        Ok(all)
    }

    pub(crate) fn run<F: std::future::Future>(test: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(test)
    }

    #[test]
    fn chunked_and_length_responses_follow_each_other_on_one_connection() {
        run(async {
            let mut connection = backend(vec![
                b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
                  HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\
                  keep-alive: timeout=5\r\nx-backend: b1\r\n\r\n\
                  5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n",
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope",
            ])
            .await;
            let head = connection
                .exchange(&get(), &mut no_body(), later())
                .await
                .expect("first");
            assert_eq!(head.status, 200);
            assert!(head.keep_alive);
            let headers = head.fields.to_header_map().expect("valid");
            assert_eq!(headers.len(), 1, "{headers:?}");
            assert_eq!(headers["x-backend"], "b1");
            assert_eq!(
                body(&mut connection, head.framing).await.expect("body"),
                b"hello, world"
            );
            assert!(connection.is_idle_and_open());

            let head = connection
                .exchange(&get(), &mut no_body(), later())
                .await
                .expect("second");
            assert_eq!(head.status, 404);
            assert_eq!(
                head.fields.to_header_map().expect("valid")["content-length"],
                "4"
            );
            assert_eq!(head.framing, Framing::Length(4));
            assert_eq!(
                body(&mut connection, head.framing).await.expect("body"),
                b"nope"
            );
            // The backend has closed: the connection is not offered again (as soon as
            // the close has arrived: on a loaded machine the kernel may take a while).
            let mut waited = 0;
            while connection.is_idle_and_open() && waited < 100 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                waited += 1;
            }
            assert!(!connection.is_idle_and_open());
        });
    }

    #[test]
    fn a_response_without_length_ends_with_the_connection_and_is_not_reused() {
        run(async {
            let (mut connection, head) = first_answer(vec![
                b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil close",
            ])
            .await;
            assert_eq!(head.framing, Framing::Close);
            assert!(!head.keep_alive);
            assert_eq!(
                body(&mut connection, head.framing).await.expect("body"),
                b"until close"
            );
        });
    }

    #[test]
    fn connection_close_and_the_fields_connection_names_are_honoured() {
        run(async {
            let (mut connection, head) = first_answer(vec![b"HTTP/1.1 200 OK\r\nconnection: close, x-hop\r\nx-hop: 1\r\ncontent-length: 2\r\n\r\nok"]).await;
            assert!(!head.keep_alive);
            assert!(!head
                .fields
                .to_header_map()
                .expect("valid")
                .contains_key("x-hop"));
            assert_eq!(
                body(&mut connection, head.framing).await.expect("body"),
                b"ok"
            );
        });
    }

    #[test]
    fn malformed_and_truncated_responses_are_errors_that_say_how_far_they_got() {
        run(async {
            for (answer, expected) in [
                (
                    &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"[..],
                    "differing Content-Length",
                ),
                (
                    b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                    "invalid Content-Length",
                ),
                (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
                (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
                (
                    b"HTTP/1.1 200 OK\r\ncontent-",
                    "closed the connection in the middle",
                ),
            ] {
                let mut connection = backend(vec![answer]).await;
                let failure = connection
                    .exchange(&get(), &mut no_body(), later())
                    .await
                    .err()
                    .expect("error");
                assert_eq!(failure.progress, Progress::Answered);
                assert!(
                    failure.error.to_string().contains(expected),
                    "{}",
                    failure.error
                );
            }
            let mut connection = backend(vec![]).await;
            let failure = connection
                .exchange(&get(), &mut no_body(), later())
                .await
                .err()
                .expect("error");
            assert_eq!(failure.progress, Progress::Unanswered);

            let mut connection =
                backend(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]).await;
            let head = connection
                .exchange(&get(), &mut no_body(), later())
                .await
                .expect("head");
            let error = body(&mut connection, head.framing)
                .await
                .expect_err("truncated");
            assert!(matches!(error, Error::Truncated), "{error}");

            let (mut connection, head) = first_answer(vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            ])
            .await;
            let error = body(&mut connection, head.framing)
                .await
                .expect_err("bad chunk");
            assert!(matches!(error, Error::BadChunk), "{error}");
        });
    }

    #[test]
    fn responses_to_head_and_204_have_no_body_whatever_their_length_says() {
        run(async {
            let mut connection = backend(vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\n\r\n",
            ])
            .await;
            let request = parts(http::Request::head("/").header("host", "b"));
            let head_request = encode(
                &request,
                BodyFraming::None,
                &HeaderValue::from_static("1.2.3.4"),
                false,
                None,
            );
            let head = connection
                .exchange(&head_request, &mut no_body(), later())
                .await
                .expect("head");
            assert_eq!(head.framing, Framing::Done);
            assert_eq!(
                head.fields.to_header_map().expect("valid")["content-length"],
                "1234"
            );
            let head = connection
                .exchange(&get(), &mut no_body(), later())
                .await
                .expect("204");
            assert_eq!(head.framing, Framing::Done);
            assert!(head.keep_alive);
        });
    }

    /// Issue 12, defect 4, at its root: stray bytes that reach the kernel after a
    /// response, while the worker takes no turn of its event loop (a busy worker),
    /// must still be seen at checkout. Going by tokio's readiness missed them.
    #[test]
    fn stray_bytes_that_came_without_an_event_loop_turn_are_seen_at_checkout() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let backend = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            while !seen.ends_with(b"\r\n\r\n") {
                if socket.read(&mut byte).unwrap_or(0) == 0 {
                    return;
                }
                seen.push(byte[0]);
            }
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            std::thread::sleep(std::time::Duration::from_millis(50));
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nEVIL");
            std::thread::sleep(std::time::Duration::from_millis(500));
        });
        run(async {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let open = Arc::new(AtomicU64::new(0));
            let mut connection = Connection::new(
                Transport::Plain(stream),
                super::super::upstream::Counted::new(&open),
            );
            let head = connection
                .exchange(&get(), &mut no_body(), later())
                .await
                .expect("head");
            assert_eq!(
                body(&mut connection, head.framing).await.expect("body"),
                b"ok"
            );
            assert!(connection.is_drained());
            // Busy: no turn of the event loop while the stray bytes arrive.
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(!connection.is_idle_and_open());
        });
        let _ = backend.join();
    }
}
