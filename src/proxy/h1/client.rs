//! HTTP/1.1 toward backends: request encoding, a keep-alive [`Connection`] driven by the
//! task of the request that uses it (no task of its own, no channel), and the exchange
//! of a request for a response.
//!
//! A request's head is written once, in one pass over the client's fields, by
//! [`encode`]: origin-form target, hop-by-hop fields and those `Connection` names left
//! out, `Host` and `X-Forwarded-*` set, the body framed by evenkeel ([`BodyFraming`])
//! and never by the client's fields. The bytes are kept, so a retry sends them again as
//! they are. [`Connection::exchange`] sends them and the body, and reads the answer;
//! a backend that answers while the body is still going up is heard at once (RFC 9112
//! §9.5), and the upload stops if the answer refuses the body. How far a failed
//! exchange got ([`Progress`]) is what tells the caller whether the request may go
//! again on another connection.
//!
//! The answer's head is read by [`parse_response`] ([`super::response`]), which
//! decides its framing and whether the connection may be reused; a connection goes
//! back to the pool only when the response allowed it, its body was read to the end,
//! and nothing followed it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderValue;
use http::{request, Method};
use hyper::body::Body;

use super::body::{poll_body, poll_fill, Framing};
use super::response::{parse_response, Asked, ResponseHead, MAX_HEADERS};
use super::{put_field, put_length, Error, FieldSpan, RequestBody, MAX_HEAD_BYTES};
use crate::proxy::headers::{
    connection_lists, is_replaced_toward_backend, tokens, RequestFields, UpgradeOffer,
};
use crate::proxy::outbox::{
    poll_write_slices, pump, write_all, write_all_pieces, Outbox, PumpError, MAX_SLICES,
};
use crate::proxy::stall::Stall;
use crate::proxy::transport::Transport;
use crate::proxy::upstream::Counted;

/// Request body bytes gathered into one write to a backend at most.
const BODY_GATHER: usize = 64 * 1024;

/// A request's head as it goes to every backend tried, and how its body is framed.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The encoded request line and headers, blank line included.
    pub head: Bytes,
    /// The body is sent with chunked framing (the client gave no `Content-Length`).
    pub(super) chunked: bool,
    /// A `HEAD` request: the response has no body whatever its headers say.
    is_head: bool,
    /// What the request offers to switch to (an upgrade: `Connection: upgrade` and
    /// its `Upgrade` are sent); `None`: an ordinary request.
    pub upgrade: Option<Box<UpgradeOffer>>,
    /// The whole body, sent behind `head` in the same (vectored) write
    /// ([`Outgoing::with_body`]); empty when the body goes apart, or there is none.
    pub(super) inline: Box<[Bytes]>,
}

impl Outgoing {
    /// The request with `body` (the whole body its `Content-Length` announced) behind
    /// its head, so both go out in one write. Sent this way, a try that fails once the
    /// head is out counts as sent, as one whose body failed after its head does.
    /// The pieces are shared, not copied: head and body go out in one vectored write
    /// (`writev`; copying an 8 KiB body behind its head cost 824 instructions and an
    /// allocation per upload, callgrind). A body in more pieces than one such write
    /// takes beside the head is gathered into one piece first, so it stays one write
    /// (and over TLS one record).
    pub fn with_body(self, body: &VecDeque<Bytes>) -> Outgoing {
        let pieces = body.iter().filter(|piece| !piece.is_empty());
        let inline = if pieces.clone().count() < MAX_SLICES {
            pieces.cloned().collect()
        } else {
            let mut whole = Vec::with_capacity(pieces.clone().map(Bytes::len).sum());
            pieces.for_each(|piece| whole.extend_from_slice(piece));
            Box::new([Bytes::from(whole)]) as Box<[Bytes]>
        };
        Outgoing { inline, ..self }
    }

    /// Whether the body goes out with the head ([`Outgoing::with_body`]).
    pub fn has_inline_body(&self) -> bool {
        !self.inline.is_empty()
    }
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
    pub fn of<B: Body>(fields: RequestFields<'_>, body: &B) -> BodyFraming {
        let has_length = fields.contains("content-length");
        match (body.is_end_stream(), body.size_hint().exact()) {
            (true, _) if has_length => BodyFraming::Length(0),
            (true, _) => BodyFraming::None,
            (false, Some(length)) => BodyFraming::Length(length),
            (false, None) => BodyFraming::Chunked,
        }
    }
}

/// The client a request came from, as a backend is told of it.
#[derive(Clone, Copy, Debug)]
pub struct Sender<'a> {
    /// Its address, as an `X-Forwarded-For` value.
    pub address: &'a HeaderValue,
    /// It came over TLS: `X-Forwarded-Proto: https`.
    pub https: bool,
}

/// Encodes a request (`parts`: method and target; `fields`: its fields) for a
/// backend: origin-form target, HTTP/1.1, the client's fields (an HTTP/1 client's in
/// its order and spelling) without hop-by-hop ones (nor those `Connection` names) and
/// without `Expect` (the client got its 100 Continue from evenkeel). `Host` is the host the request was
/// routed by (`host`: the client's `Host`, or the authority of an absolute-form or
/// HTTP/2 target), or — when the client gave none, as an HTTP/1.0 client may —
/// `backend`, the backend's address as the config writes it (what NGINX's `proxy_pass`
/// sends): an HTTP/1.1 request must have a `Host`, and NGINX and Django refuse an
/// empty one. `X-Forwarded-For` with the client (`sender`) appended, `X-Forwarded-Proto: https`
/// when the client came over TLS else `http`, `X-Forwarded-Host` set to the
/// client's host (none when it gave none); `Content-Length` or chunked framing from
/// `framing`. Cookie fields are joined into one (RFC 9113 §8.2.3). An upgrade
/// (`upgrade`: what is offered, see [`upgrade_offer`]) is asked for with
/// `Connection: upgrade` and `Upgrade` of its own: the client's were hop-by-hop.
///
/// [`upgrade_offer`]: crate::proxy::headers::upgrade_offer
pub fn encode(
    parts: &request::Parts,
    fields: RequestFields<'_>,
    framing: BodyFraming,
    sender: Sender<'_>,
    host: Option<&HeaderValue>,
    backend: &str,
    upgrade: Option<&UpgradeOffer>,
) -> Outgoing {
    let chunked = framing == BodyFraming::Chunked;
    let mut out = Vec::with_capacity(256 + fields.size_hint());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // An absolute-form target with no path (`http://a?q`) keeps its query behind "/".
    if target.starts_with('?') {
        out.push(b'/');
    }
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let named = connection_lists(fields);
    let mut cookie_written = false;
    for (name, value) in fields.iter() {
        if is_replaced_toward_backend(name, &named) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"cookie") {
            if !cookie_written {
                cookie_written = true;
                put_joined(&mut out, name, fields.get_all("cookie"), b"; ");
            }
            continue;
        }
        put_field(&mut out, name, value);
    }
    match host {
        Some(host) => put_field(&mut out, b"host", host.as_bytes()),
        None => put_field(&mut out, b"host", backend.as_bytes()),
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for value in fields.get_all("x-forwarded-for") {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(sender.address.as_bytes());
    out.extend_from_slice(if sender.https {
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
            put_length(&mut out, length);
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if let Some(offer) = upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
        put_field(&mut out, b"upgrade", &offer.protocols);
    }
    out.extend_from_slice(b"\r\n");
    Outgoing {
        head: Bytes::from(out),
        chunked,
        is_head: parts.method == Method::HEAD,
        upgrade: upgrade.map(|offer| Box::new(offer.clone())),
        inline: Box::default(),
    }
}

fn put_joined<'a>(
    out: &mut Vec<u8>,
    name: &[u8],
    values: impl IntoIterator<Item = &'a [u8]>,
    separator: &[u8],
) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(separator);
        }
        out.extend_from_slice(value);
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

/// One keep-alive connection to a backend.
pub struct Connection {
    stream: Transport,
    read: BytesMut,
    /// Where the fields of the last response head were (reused, not reallocated).
    spans: Vec<FieldSpan>,
    /// Bounds each exchange (made at the first, re-armed for the next).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// False once an exchange ended with part of its request unsent.
    reusable: bool,
    open: Counted,
}

impl Connection {
    /// A connection over `stream`, counted in the open gauge while it lives.
    pub fn new(stream: Transport, open: Counted) -> Connection {
        Connection {
            stream,
            read: BytesMut::new(),
            spans: Vec::new(),
            timer: None,
            reusable: true,
            open,
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
    /// for stopping (for a head, and a body sent with it, the clock is read only once a
    /// write has to wait: most never do). The connection keeps one timer for all its
    /// exchanges, re-armed each time: making and dropping a timer per request cost a few
    /// percent of its instructions.
    pub async fn exchange<B: RequestBody>(
        &mut self,
        request: &Outgoing,
        body: &mut Option<B>,
        limits: Limits,
    ) -> Result<ResponseHead, Failure> {
        // Only a streamed upload takes long enough to be worth reading the clock for
        // from the start; a head (with a body sent with it) is timed from its first
        // wait, if it has one.
        let started = body.is_some().then(tokio::time::Instant::now);
        let waited = self.send(request, body, limits.body_idle).await?;
        let sending = started.or(waited).map_or(Duration::ZERO, |s| s.elapsed());
        let deadline = limits.head + sending;
        let mut timer = match self.timer.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let result = tokio::select! {
            biased;
            result = self.read_head(request) => result,
            () = &mut timer => Err(Failure {
                error: Error::TimedOut,
                progress: Progress::Answered,
            }),
        };
        self.timer = Some(timer);
        result.map(|mut head| {
            // A backend asked to upgrade that answers otherwise may still expect the
            // other protocol next: its connection is not reused.
            head.keep_alive &= self.reusable && request.upgrade.is_none();
            head
        })
    }

    /// Writes the request head, then the body (re-chunked when `request.chunked`),
    /// what the body has at hand gathered into one write. The body is taken only once
    /// the head is written, so a try that fails before that can go out again whole.
    /// When writing the head (and a body sent with it) first had to wait, if it did.
    async fn send<B: RequestBody>(
        &mut self,
        request: &Outgoing,
        body: &mut Option<B>,
        body_idle: std::time::Duration,
    ) -> Result<Option<tokio::time::Instant>, Failure> {
        let mut stall = Stall::new(body_idle);
        let stream = &mut self.stream;
        let mut written = 0;
        let mut waited = None;
        let mut writer = |cx: &mut Context<'_>, slices: &[io::IoSlice<'_>]| {
            let wrote = poll_write_slices(Pin::new(&mut *stream), cx, slices);
            match wrote {
                Poll::Ready(Ok(n)) => written += n,
                Poll::Pending => {
                    waited.get_or_insert_with(tokio::time::Instant::now);
                }
                Poll::Ready(Err(_)) => {}
            }
            wrote
        };
        // A write to a connection the backend has closed fails at once, before anything
        // reaches it. A body sent with the head counts as sent once the head is out.
        let wrote = if request.inline.is_empty() {
            write_all(&mut writer, &request.head, &mut stall).await
        } else {
            let pieces = std::iter::once(&request.head).chain(request.inline.iter());
            write_all_pieces(&mut writer, pieces, &mut stall).await
        };
        wrote.map_err(|error| Failure {
            error: error.into(),
            progress: if !request.inline.is_empty() && written >= request.head.len() {
                Progress::Unanswered
            } else {
                Progress::Unwritten
            },
        })?;
        let Some(body) = body.take() else {
            return Ok(waited);
        };
        // Boxed: most requests have no body, and this future's state would otherwise
        // be carried (and copied) with every request's.
        Box::pin(self.upload(body, request.chunked, stall)).await?;
        Ok(waited)
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

    async fn read_head(&mut self, request: &Outgoing) -> Result<ResponseHead, Failure> {
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
            match self.parse_head(request) {
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

    /// Parses a complete response head to `request` from the read buffer (skipping
    /// 1xx ones but a 101 to an upgrade); `None` while it is incomplete.
    fn parse_head(&mut self, request: &Outgoing) -> Result<Option<ResponseHead>, Error> {
        let asked = Asked {
            is_head: request.is_head,
            upgrade: request.upgrade.as_deref(),
        };
        parse_response(&mut self.read, &mut self.spans, asked)
    }

    /// The connection as a tunnel's backend side, once its response was a 101: the
    /// stream, the bytes the backend sent after the 101's head (the new protocol's
    /// first), and the count of open connections it stays in while the tunnel lives.
    pub fn into_tunnel(self) -> (Transport, BytesMut, Counted) {
        (self.stream, self.read, self.open)
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
