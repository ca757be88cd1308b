//! HTTP/1.x toward clients: the request-head reader and the response-head writer. The
//! connection loop that drives them — buffers, timeouts, `100 Continue`, pipelining,
//! the lingering close — is [`crate::proxy::downstream`].
//!
//! A request head is parsed by httparse into the `http::Request` the proxy forwards
//! (method, target, version) and its fields as sent ([`Fields`]: the head's bytes and
//! where each field is in them; no header map is built), and judged by the rules of
//! RFC 9112 (see docs/reliability.md for why each is strict):
//! - A head is at most [`MAX_HEAD_BYTES`] and 100 fields (else 431); anything httparse
//!   refuses (bad request line, obs-fold, bad field syntax) is a 400, and so is a line
//!   ending in a bare LF, a target in none of the four forms of §3.2, an absolute-form
//!   target with `user@`, an HTTP/1.1 request without `Host`, two `Host` fields, and
//!   `Content_Length` / `Transfer_Encoding` spelt with underscores. An `Expect` other
//!   than `100-continue` gets 417. An absolute-form target's authority wins over
//!   `Host`, for routing and for the `Host` the backend gets (`request_host` in
//!   [`crate::proxy::forward`]).
//! - Body framing: a `Transfer-Encoding` whose last coding is `chunked` frames the body
//!   by chunks (a `Content-Length` beside it is dropped, and the connection closes after
//!   the response, so nothing can be smuggled behind it); any other
//!   `Transfer-Encoding`, or one in an HTTP/1.0 request, is a 400. `Content-Length`
//!   must be one field of digits (else 400). Neither: no body.
//! - Keep-alive: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
//!   `Connection: keep-alive`; `close` wins when both are sent.
//!
//! A response head (`write_response_head`) is always `HTTP/1.1`, with the backend's
//! fields as it sent them (hop-by-hop ones already left out) or those of a response
//! evenkeel made, and `Date` added when missing. Its body is framed by the response's
//! `Content-Length`, or its body's exact size, else chunked (HTTP/1.1) or until the
//! close (HTTP/1.0); responses to `HEAD`, 1xx, 204 and 304 carry none.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::{response, Method, Request, StatusCode, Uri, Version};
use hyper::body::Body;

use super::body::{is_disguised_framing, parse_length, Chunk, Framing};
use super::{put_field, put_length, FieldSpan, Fields, MAX_HEAD_BYTES};
use crate::proxy::headers::{tokens, ConnectionOptions};

/// Most fields in a request head; more get 431.
pub(crate) const MAX_FIELDS: usize = 100;

/// Why no request could be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// Not HTTP/1.x, or framing that cannot be trusted: 400.
    Malformed,
    /// The head is over [`MAX_HEAD_BYTES`] or [`MAX_FIELDS`]: 431.
    TooLarge,
    /// `Expect` asks for something other than `100-continue`: 417.
    Expectation,
    /// The connection failed, or closed inside a head.
    Io,
}

/// A request head, and what it says about its body and the connection.
pub(crate) struct Head {
    /// Method, target and version; its header map is empty: the fields are `fields`.
    pub(crate) request: Request<()>,
    /// The fields as the client sent them (a `Content-Length` beside a chunked
    /// `Transfer-Encoding` left out).
    pub(crate) fields: Fields,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) expects_continue: bool,
    /// It has an `Upgrade` field (whether or not it is an upgrade evenkeel carries).
    pub(crate) asks_upgrade: bool,
}

/// Parses a complete request head off the front of `read`; `None` while it is
/// incomplete.
pub(crate) fn parse_head(
    read: &mut BytesMut,
    spans: &mut Vec<FieldSpan>,
) -> Result<Option<Head>, ReadError> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        read,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) => return Err(ReadError::TooLarge),
        Ok(httparse::Status::Partial) if read.len() >= MAX_HEAD_BYTES => {
            return Err(ReadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::TooLarge),
        Err(_) => return Err(ReadError::Malformed),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| ReadError::Malformed)?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = read.as_ptr() as usize;
    let path = parsed.path.unwrap_or_default();
    let path = (path.as_ptr() as usize - base, path.len());
    spans.clear();
    spans.extend(
        parsed
            .headers
            .iter()
            .map(|field| FieldSpan::locate(field, base)),
    );
    let raw = read.split_to(len).freeze();
    // Every line ends in CRLF: a bare LF, which a lenient peer may take for a line end
    // where evenkeel does not, is refused. Each line end comes before a field name or
    // the blank line, so those places are all there is to look at.
    if !raw.ends_with(b"\r\n\r\n")
        || spans.iter().any(|span| {
            span.name_start < 2 || &raw[span.name_start - 2..span.name_start] != b"\r\n"
        })
    {
        return Err(ReadError::Malformed);
    }
    let uri = Uri::from_maybe_shared(raw.slice(path.0..path.0 + path.1))
        .map_err(|_| ReadError::Malformed)?;
    // One of the four forms of RFC 9112 §3.2: origin (`/path`), absolute
    // (`http://host/path`), authority (`host:port`, CONNECT only) or asterisk (`*`,
    // OPTIONS only). `?q` or `path` would reach a backend as something else again.
    let target = &raw[path.0..path.0 + path.1];
    let form_ok = target.first() == Some(&b'/')
        || (uri.scheme().is_some() && uri.authority().is_some_and(|a| !a.host().is_empty()))
        || (target == b"*" && method == Method::OPTIONS)
        || (method == Method::CONNECT && uri.authority().is_some() && uri.scheme().is_none());
    if !form_ok {
        return Err(ReadError::Malformed);
    }
    // `user:password@` in an absolute-form target (deprecated, RFC 9110 §4.2.4): a
    // backend could take the host for something else.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(ReadError::Malformed);
    }

    let mut chunked_last: Option<bool> = None;
    let mut content_length: Option<u64> = None;
    let mut connection = ConnectionOptions::default();
    let mut expects_continue = false;
    let mut asks_upgrade = false;
    let mut has_host = false;
    // No header map: the fields stay where they were read, and what evenkeel needs of
    // them is found by name. httparse has checked every name (a token) and value (no
    // control byte but tab), as `HeaderName` and `HeaderValue` would.
    for span in spans.iter() {
        let name = span.name(&raw);
        if is_disguised_framing(name) {
            return Err(ReadError::Malformed);
        }
        let value = span.value(&raw);
        let is = |known: &[u8]| name.len() == known.len() && name.eq_ignore_ascii_case(known);
        if is(b"transfer-encoding") {
            chunked_last = Some(
                tokens(value)
                    .last()
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")),
            );
        } else if is(b"content-length") {
            // One field, one number. RFC 9110 §8.6 lets a recipient take `5, 5` or two
            // equal fields as one; hyper's server (the reference of
            // tests/differential.rs) and NGINX refuse them, and so does evenkeel: a
            // backend must never be the stricter reader of a length evenkeel took.
            if content_length.is_some() {
                return Err(ReadError::Malformed);
            }
            let length = parse_length(value.trim_ascii()).ok_or(ReadError::Malformed)?;
            content_length = Some(length);
        } else if is(b"connection") {
            connection.read(value);
        } else if is(b"expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(ReadError::Expectation);
            }
            expects_continue = true;
        } else if is(b"host") {
            if has_host {
                // Two hosts: routing and the backend could each pick a different one.
                return Err(ReadError::Malformed);
            }
            has_host = true;
        } else if is(b"upgrade") {
            asks_upgrade = true;
        }
    }
    // HTTP/1.1 requires Host (RFC 9112 §3.2): without it, routing by host is a guess.
    if version == Version::HTTP_11 && !has_host {
        return Err(ReadError::Malformed);
    }
    // `close` wins over `keep-alive` when a client sends both (found by
    // tests/differential.rs: hyper closes, evenkeel read on).
    let mut keep_alive = if version == Version::HTTP_11 {
        !connection.close
    } else {
        connection.keep_alive && !connection.close
    };
    let mut kept = spans.as_slice();
    let without_length: Vec<FieldSpan>;
    let framing = match chunked_last {
        Some(true) if version == Version::HTTP_11 => {
            if content_length.is_some() {
                without_length = spans
                    .iter()
                    .filter(|span| !span.name(&raw).eq_ignore_ascii_case(b"content-length"))
                    .copied()
                    .collect();
                kept = &without_length;
                keep_alive = false;
            }
            Framing::Chunked(Chunk::Size)
        }
        Some(_) => return Err(ReadError::Malformed),
        None => match content_length {
            None | Some(0) => Framing::Done,
            Some(length) => Framing::Length(length),
        },
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    Ok(Some(Head {
        request,
        fields: Fields::new(raw, kept.to_vec()),
        framing,
        keep_alive,
        expects_continue,
        asks_upgrade,
    }))
}

/// What a response head written by [`write_response_head`] has committed the rest of
/// the response to.
pub(crate) struct ResponseFraming {
    /// The response has no body (a response to `HEAD`, a 1xx, a 204, a 304).
    pub(crate) no_body: bool,
    /// The body goes in chunks.
    pub(crate) chunked: bool,
    /// The head has a `Content-Length` (the response's, or its body's exact size).
    pub(crate) has_length: bool,
    /// The connection stays open after the response.
    pub(crate) keep_alive: bool,
}

/// Writes into `out` the head of a response (`parts`, and `fields`: the backend's as
/// it sent them, if it came from one; else `parts.headers`) to a request that was a
/// `HEAD` when `is_head`, in `version`; `keep_alive`: whether the connection may stay
/// open. `body` is asked only for its exact size.
pub(crate) fn write_response_head<B: Body>(
    out: &mut Vec<u8>,
    parts: &response::Parts,
    fields: Option<&Fields>,
    body: &B,
    is_head: bool,
    version: Version,
    keep_alive: bool,
) -> ResponseFraming {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let no_body = is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let (mut has_length, mut has_date) = (false, false);
    // The backend's fields as it sent them (hop-by-hop ones already left out), else
    // the header map of a response evenkeel made.
    let mut field = |name: &[u8], value: &[u8]| {
        if name.eq_ignore_ascii_case(b"connection")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            return;
        }
        has_length |= name.eq_ignore_ascii_case(b"content-length");
        has_date |= name.eq_ignore_ascii_case(b"date");
        put_field(out, name, value);
    };
    match fields {
        Some(fields) => fields.iter().for_each(|(name, value)| field(name, value)),
        None => {
            for (name, value) in &parts.headers {
                field(name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    if !has_date {
        put_date(out);
    }
    let mut keep_alive = keep_alive;
    let mut chunked = false;
    if !no_body && !has_length {
        match body.size_hint().exact() {
            Some(length) => {
                put_length(out, length);
                has_length = true;
            }
            None if version == Version::HTTP_11 => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                chunked = true;
            }
            // HTTP/1.0 without a length: the body ends with the connection.
            None => keep_alive = false,
        }
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // The connection is a tunnel from here; the backend's `Upgrade` is in `fields`.
        out.extend_from_slice(b"connection: upgrade\r\n");
        keep_alive = false;
    } else if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    ResponseFraming {
        no_body,
        chunked,
        has_length,
        keep_alive,
    }
}

/// The whole of a response that refuses a request with `status` (code and reason), and
/// says the connection closes.
pub(crate) fn refusal(status: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\n");
    put_date(&mut out);
    out.extend_from_slice(b"content-length: 0\r\nconnection: close\r\n\r\n");
    out
}

/// Writes a `Date` field; the text is made once a second per worker thread.
fn put_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != second {
            *date = (second, httpdate::fmt_http_date(now));
        }
        put_field(out, b"date", date.1.as_bytes());
    });
}
