//! Reading a request body before a backend is picked.
//!
//! A body that fits the pool's `limits.body_buffer` is read whole first, so a client
//! that sends it slowly holds no backend connection and no `limits.max_connections`
//! slot meanwhile (NGINX's `proxy_request_buffering`). Each pause is bounded by
//! `timeouts.body_idle` (408), the whole read by `timeouts.request` (then the rest
//! streams), and the bytes held by the worker's [`ByteBudget`].

use std::collections::VecDeque;
use std::future::{poll_fn, Future as _};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::budget::{ByteBudget, Reserved};
use super::errors::Refusal;
use super::h1::RequestBody;
use super::stall::Stall;

/// A request body as it goes to the backend: what was read ahead, then the rest.
pub struct ReadAhead<B> {
    read: VecDeque<Bytes>,
    /// Bytes in `read`.
    len: u64,
    /// The rest of the client's body; `None` once it has ended.
    rest: Option<B>,
    /// The worker budget the read bytes are counted in.
    _reserved: Option<Reserved>,
}

impl<B: RequestBody> ReadAhead<B> {
    /// Nothing read ahead of `body` (yet).
    pub fn empty(body: B) -> ReadAhead<B> {
        ReadAhead {
            read: VecDeque::new(),
            len: 0,
            rest: (!body.is_end_stream()).then_some(body),
            _reserved: None,
        }
    }
}

impl<B> ReadAhead<B> {
    /// The whole body, taken out (this body is then empty), when it was read to its
    /// end, is not empty and its length passes `wanted`; with the budget its bytes are
    /// counted in. Otherwise nothing is taken: the test comes with the taking, so a
    /// caller cannot take a body and then find it does not want it (which once sent a
    /// request's head without its body).
    pub fn take_whole_if(
        &mut self,
        wanted: impl FnOnce(u64) -> bool,
    ) -> Option<(VecDeque<Bytes>, Option<Reserved>)> {
        if self.rest.is_some() || self.len == 0 || !wanted(self.len) {
            return None;
        }
        self.len = 0;
        Some((std::mem::take(&mut self.read), self._reserved.take()))
    }
}

impl<B: RequestBody> Body for ReadAhead<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(data) = this.read.pop_front() {
            this.len -= data.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(rest).poll_frame(cx));
        if frame.is_none() {
            this.rest = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.rest {
            None => SizeHint::with_exact(self.len),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + self.len);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + self.len);
                }
                hint
            }
        }
    }
}

/// How far to read a request body before picking a backend.
pub struct ReadingAhead<'a> {
    /// At most this many bytes (the pool's `limits.body_buffer`).
    pub limit: usize,
    /// Each pause at most this long, else 408 (`timeouts.body_idle`).
    pub body_idle: Duration,
    /// Until then at most (`timeouts.request` from the start): a client that trickles
    /// a byte at a time then gets its body streamed, not buffered for days.
    pub until: Instant,
    /// The worker's budget for bytes read ahead.
    pub budget: &'a Rc<ByteBudget>,
}

/// Reads the client's body until it ends, `limit` bytes are read or `until` passes
/// (each pause bounded by `body_idle`: else 408; a body that breaks: 400). Past the
/// worker's budget, nothing is read ahead.
pub async fn read_ahead<B: RequestBody>(
    body: B,
    reading: ReadingAhead<'_>,
) -> Result<ReadAhead<B>, Refusal> {
    let wanted = body
        .size_hint()
        .exact()
        .map_or(reading.limit, |len| (len as usize).min(reading.limit));
    let mut ahead = ReadAhead::empty(body);
    if ahead.rest.is_none() {
        return Ok(ahead);
    }
    let Some(reserved) = reading.budget.reserve(wanted) else {
        return Ok(ahead);
    };
    ahead._reserved = Some(reserved);
    let mut stall = Stall::new(reading.body_idle);
    let until = tokio::time::sleep_until(reading.until);
    tokio::pin!(until);
    while (ahead.len as usize) < wanted {
        let Some(rest) = ahead.rest.as_mut() else {
            break;
        };
        let frame = poll_fn(|cx| {
            if until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(None));
            }
            match Pin::new(&mut *rest).poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Ok(Some(frame))),
                Poll::Pending => {
                    ready!(stall.poll_paused(cx));
                    Poll::Ready(Err(Refusal::ClientTimeout))
                }
            }
        })
        .await?;
        let Some(frame) = frame else {
            break; // out of time: stream the rest
        };
        stall.progressed();
        match frame {
            None => ahead.rest = None,
            Some(Err(_)) => return Err(Refusal::BadRequestBody),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        ahead.len += data.len() as u64;
                        ahead.read.push_back(data);
                    }
                }
            }
        }
        if ahead.rest.as_ref().is_some_and(Body::is_end_stream) {
            ahead.rest = None;
        }
    }
    Ok(ahead)
}
