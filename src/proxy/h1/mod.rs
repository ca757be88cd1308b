//! evenkeel's own HTTP/1.x, both ways: toward backends (every request goes out over
//! HTTP/1.1) and toward HTTP/1 clients. httparse reads start lines and fields; the rest
//! — what a head means for its body and its connection, the body framing, the bytes
//! written — is here.
//!
//! Why not hyper's, which evenkeel used before: hyper's client ran each backend
//! connection as a task of its own fed through a channel, and a request's header map was
//! rebuilt to rewrite it and again to encode it; its server kept two 8 KiB buffers for
//! every client connection's whole life. Here a backend connection is a socket and a
//! read buffer driven by the task of the request that uses it; a request head is
//! written in one pass into bytes a retry sends again as they are; heads are parsed
//! straight into what the other side gets, fields left where they were read and found
//! by name there, with no header map ([`Fields`], [`FieldSpan`]; a header map is made
//! only for an HTTP/2 side); and an idle client connection holds no buffer. Commit 80dfd29 (the
//! backend side: 38,807 → 30,929 instructions a request under callgrind) and d2bdbc4
//! (the client side: 21.8 KB → 4.5 KB an idle connection) have the before and after.
//! HTTP/2 clients are still served by hyper ([`super::server`]).
//!
//! The files, as in pingora's `protocols/http/v1`:
//! - [`body`]: body framing, the same both ways — [`Framing`], and [`poll_body`], the
//!   decoder that reads backends' response bodies and clients' request bodies alike.
//! - [`client`]: toward backends — request encoding ([`encode`]), the keep-alive
//!   [`Connection`] and its exchange.
//! - [`response`]: the backend's response head ([`parse_response`]): its framing,
//!   whether the connection may be reused, the fields passed on.
//! - [`server`]: toward clients — the request-head reader (`parse_head`) and the
//!   response-head writer, driven by the connection loop in [`super::downstream`].
//! - this file: what they share — [`Error`], [`MAX_HEAD_BYTES`], [`FieldSpan`] and
//!   [`Fields`], the [`RequestBody`] trait.
//! - `tests.rs`: the backend side's suite, over real sockets.
//!
//! The framing rules (RFC 9112), strict where two readers could disagree on where a
//! message ends — the opening for request smuggling:
//! - A head is at most [`MAX_HEAD_BYTES`] (a larger request: 431; a larger response:
//!   502). `Content_Length` or `Transfer_Encoding` spelt with `_` is refused either way.
//! - A request body (§6.1–6.3): a `Transfer-Encoding` whose last coding is `chunked`
//!   frames it by chunks (a `Content-Length` beside it is dropped, and the connection
//!   closes after the response; a coding before `chunked` gets 501 from
//!   [`super::forward`]); any other `Transfer-Encoding`, or one in HTTP/1.0, is refused;
//!   else `Content-Length`, one field of digits only; else no body.
//! - A response body (§6.3): none for `HEAD`, 204 and 304; else `chunked` (other codings
//!   refused: evenkeel does not decode them); else `Content-Length` (differing values
//!   refused); else until the close. 1xx heads are skipped; a 101 is refused unless
//!   it answers an upgrade with a protocol the request offered ([`response`]).
//! - Chunks (§7.1): chunk-size and trailer lines end in CRLF with no bare CR or LF in
//!   them; at most 64 trailer fields, never forwarded ([`body`]).
//! - Bodies evenkeel sends are framed by evenkeel, never by fields copied from the other
//!   side ([`BodyFraming`], the response heads of [`server`]).

use std::io;
use std::ops::Range;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::Body;

pub mod body;
pub mod client;
pub mod response;
pub mod server;
#[cfg(test)]
pub(crate) mod tests;

pub(in crate::proxy) use body::poll_fill;
pub use body::{poll_body, Chunk, Framing};
pub use client::{encode, BodyFraming, Connection, Failure, Limits, Outgoing, Progress, Sender};
pub use response::{parse_response, Asked, ResponseHead};

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

/// Why an exchange with a backend failed, or a body could not be read ([`poll_body`]
/// reads a client's request body too).
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
    /// A chunked body is malformed.
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

/// Where one field's name and value are in a message head's bytes (offsets from the
/// head's first byte), so a head is parsed once and its values are slices of the bytes
/// read rather than copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSpan {
    /// Where the name begins.
    pub name_start: usize,
    /// The name's length in bytes.
    pub name_len: usize,
    /// Where the value begins.
    pub value_start: usize,
    /// The value's length in bytes.
    pub value_len: usize,
}

impl FieldSpan {
    /// Where `field`, which httparse parsed out of a head that starts at address
    /// `head_start`, is in that head.
    fn locate(field: &httparse::Header<'_>, head_start: usize) -> FieldSpan {
        FieldSpan {
            name_start: field.name.as_ptr() as usize - head_start,
            name_len: field.name.len(),
            value_start: field.value.as_ptr() as usize - head_start,
            value_len: field.value.len(),
        }
    }

    /// The field's name, out of `head`.
    pub fn name(self, head: &[u8]) -> &[u8] {
        &head[self.name_start..self.name_start + self.name_len]
    }

    /// The field's value, out of `head`.
    pub fn value(self, head: &[u8]) -> &[u8] {
        &head[self.value_range()]
    }

    /// Where the value is in the head (to slice a `Bytes` that shares the head).
    pub fn value_range(self) -> Range<usize> {
        self.value_start..self.value_start + self.value_len
    }
}

/// A message's fields as its sender wrote them: the head's bytes and where each kept
/// field is in them — a response's end-to-end fields as the backend sent them, or an
/// HTTP/1 client's request fields. Written out as they are toward an HTTP/1 peer
/// (building a header map only to write it out again was about a tenth of a proxied
/// request's instructions, and a fifth of one with a browser's eleven request fields:
/// 34,053 → 26,683 instructions, `BROWSER_FIELDS=1 bench/profile.sh`); an HTTP/2 side
/// gets [`Fields::to_header_map`].
#[derive(Debug, Clone)]
pub struct Fields {
    raw: Bytes,
    spans: Vec<FieldSpan>,
}

impl Fields {
    /// The fields of the head `raw` at `spans`.
    pub(crate) fn new(raw: Bytes, spans: Vec<FieldSpan>) -> Fields {
        Fields { raw, spans }
    }

    /// The length of the head the fields were read from.
    pub fn head_len(&self) -> usize {
        self.raw.len()
    }

    /// Each field's name (as the sender spelled it) and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|span| (span.name(&self.raw), span.value(&self.raw)))
    }

    /// The values of the fields named `name` (any case), in order.
    pub fn values<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        self.spans
            .iter()
            .filter(move |span| {
                span.name_len == name.len() && span.name(&self.raw).eq_ignore_ascii_case(name)
            })
            .map(|span| span.value(&self.raw))
    }

    /// The value of the first field named `name` (any case), sharing the head's bytes.
    pub fn value(&self, name: &[u8]) -> Option<HeaderValue> {
        let span = self.spans.iter().find(|span| {
            span.name_len == name.len() && span.name(&self.raw).eq_ignore_ascii_case(name)
        })?;
        HeaderValue::from_maybe_shared(self.raw.slice(span.value_range())).ok()
    }

    /// The fields as a header map (values share the head's bytes).
    pub fn to_header_map(&self) -> Result<HeaderMap, Error> {
        let mut headers = HeaderMap::with_capacity(self.spans.len());
        for span in &self.spans {
            let name = HeaderName::from_bytes(span.name(&self.raw))
                .map_err(|_| Error::Malformed("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(self.raw.slice(span.value_range()))
                .map_err(|_| Error::Malformed("invalid header value"))?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// Writes a `content-length: N` line (itoa: `write!` through core::fmt cost about 300
/// instructions).
fn put_length(out: &mut Vec<u8>, length: u64) {
    put_field(
        out,
        b"content-length",
        itoa::Buffer::new().format(length).as_bytes(),
    );
}

/// Writes one `name: value` line.
fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
