//! A backend's response head: parsed off the connection's read buffer by httparse,
//! then judged — what frames the body (RFC 9112 §6.3), whether the connection may be
//! reused, which fields go on to the client (hop-by-hop ones and those `Connection`
//! names never do). The fields keep sharing the bytes read ([`Fields`]).
//!
//! Framing: a response to `HEAD`, a 204 and a 304 have no body; else
//! `Transfer-Encoding: chunked` frames it by chunks (any other coding is refused as
//! malformed: evenkeel does not decode it, and the field is not passed on, so the
//! client would get coded bytes undeclared); else `Content-Length` (differing values:
//! refused); else the close. `Content_Length` or `Transfer_Encoding` spelt with
//! underscores is refused, and a head over [`MAX_HEAD_BYTES`] too (502 to the client).
//! Interim 1xx responses are skipped. A 101 answers an upgrade (WebSocket) only: to a
//! request that asked none it is malformed, and its `Upgrade` must name only
//! protocols the request offered (else malformed too, so a backend cannot turn a
//! connection into a tunnel the client did not ask for). A 101 has no body, its
//! connection is never reused, and its `Upgrade` field is kept for the client. The
//! connection may be reused only when the response allows it (HTTP/1.1
//! without `Connection: close`, or HTTP/1.0 with `keep-alive` and no `close`), and it
//! was framed without confusion (no length beside chunked, no body announced on a
//! `HEAD` answer or a 204).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;

use super::body::{is_disguised_framing, parse_length, Chunk, Framing};
use super::{Error, FieldSpan, Fields, MAX_HEAD_BYTES};
use crate::proxy::headers::{
    is_hop_by_hop_name, switches_to_offered, tokens, ConnectionOptions, UpgradeOffer,
};

/// Most header fields accepted in a response head.
pub(super) const MAX_HEADERS: usize = 128;

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

/// What the request asked that decides how its response is read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Asked<'a> {
    /// The request was a `HEAD`: the response has no body.
    pub is_head: bool,
    /// What the request offered to switch to; `None`: no upgrade was asked.
    pub upgrade: Option<&'a UpgradeOffer>,
}

/// Parses a complete response head off the front of `read` (skipping 1xx ones other
/// than a 101 to an upgrade, which it consumes), recording field positions in `spans`;
/// `None` while it is incomplete.
pub fn parse_response(
    read: &mut BytesMut,
    spans: &mut Vec<FieldSpan>,
    asked: Asked<'_>,
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
        if code == 101 && asked.upgrade.is_none() {
            return Err(Error::Malformed(
                "101 Switching Protocols, no upgrade was asked",
            ));
        }
        if (100..200).contains(&code) && code != 101 {
            read.advance(len);
            continue;
        }
        let status =
            StatusCode::from_u16(code).map_err(|_| Error::Malformed("status code out of range"))?;
        let http10 = response.version == Some(0);
        // Field positions, so the values can share the head's bytes once split off.
        let base = read.as_ptr() as usize;
        spans.clear();
        spans.extend(
            response
                .headers
                .iter()
                .map(|field| FieldSpan::locate(field, base)),
        );
        let raw = read.split_to(len).freeze();
        if let Some(offer) = asked.upgrade.filter(|_| code == 101) {
            return switched(&raw, spans, offer, http10).map(Some);
        }
        return build_head(&raw, spans, status, http10, asked.is_head).map(Some);
    }
}

/// Builds the response head from `raw` and the field positions in it.
fn build_head(
    raw: &Bytes,
    spans: &[FieldSpan],
    status: StatusCode,
    http10: bool,
    is_head: bool,
) -> Result<ResponseHead, Error> {
    // Framing and connection options first: they decide what is kept.
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut content_length: Option<u64> = None;
    let mut connection = ConnectionOptions::default();
    for span in spans {
        let name = span.name(raw);
        let value = span.value(raw);
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
    kept.extend(spans.iter().copied().filter(|span| {
        let name = span.name(raw);
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

/// A 101 to a request that offered `offer`: it must be HTTP/1.1 and switch to offered
/// protocols only; a switch to WebSocket answers the request's key with the right
/// `Sec-WebSocket-Accept` (so a backend endpoint that merely echoes a status and
/// fields cannot pass for one that switched). Its end-to-end fields and its `Upgrade`
/// go on to the client; it has no body, and the connection is the tunnel's from here.
fn switched(
    raw: &Bytes,
    spans: &[FieldSpan],
    offer: &UpgradeOffer,
    http10: bool,
) -> Result<ResponseHead, Error> {
    if http10 {
        return Err(Error::Malformed("101 Switching Protocols in HTTP/1.0"));
    }
    let mut upgrade: Option<&[u8]> = None;
    let mut accepts = Vec::new();
    let mut connection = ConnectionOptions::default();
    for span in spans {
        let name = span.name(raw);
        if name.eq_ignore_ascii_case(b"sec-websocket-accept") {
            accepts.push(span.value(raw).trim_ascii());
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            if upgrade.is_some() {
                return Err(Error::Malformed("101 with more than one Upgrade field"));
            }
            upgrade = Some(span.value(raw));
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection.read(span.value(raw));
        }
    }
    let Some(answered) = upgrade.filter(|a| switches_to_offered(&offer.protocols, a)) else {
        return Err(Error::Malformed(
            "101 Switching Protocols to a protocol the request did not offer",
        ));
    };
    let to_websocket = tokens(answered).any(|p| p.eq_ignore_ascii_case(b"websocket"));
    if let Some(accept) = offer.accept.as_deref().filter(|_| to_websocket) {
        if accepts != [accept] {
            return Err(Error::Malformed(
                "101 to WebSocket without the Sec-WebSocket-Accept that answers the key",
            ));
        }
    }
    let kept = spans
        .iter()
        .copied()
        .filter(|span| {
            let name = span.name(raw);
            name.eq_ignore_ascii_case(b"upgrade")
                || !(is_hop_by_hop_name(name)
                    || name.eq_ignore_ascii_case(b"content-length")
                    || (connection.names_fields && is_listed(raw, spans, name)))
        })
        .collect();
    Ok(ResponseHead {
        status: StatusCode::SWITCHING_PROTOCOLS,
        fields: Fields {
            raw: raw.clone(),
            spans: kept,
        },
        framing: Framing::Done,
        keep_alive: false,
    })
}

/// Whether a `Connection` field of the head names `name`.
fn is_listed(raw: &Bytes, spans: &[FieldSpan], name: &[u8]) -> bool {
    spans.iter().any(|span| {
        span.name(raw).eq_ignore_ascii_case(b"connection")
            && tokens(span.value(raw)).any(|t| t.eq_ignore_ascii_case(name))
    })
}
