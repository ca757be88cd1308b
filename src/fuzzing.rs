//! The own HTTP/1 code and the config pipeline, fed bytes and answering in plain
//! values: the entry points of the fuzz targets under `fuzz/` (see
//! docs/reliability.md). Nothing else should use this module; it exists so the targets
//! reach exactly the code that serves traffic — the request-head parser the client
//! side runs, the head evenkeel sends a backend, the response-head parser, the body
//! decoder and the chunk encoder — without sockets.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use crate::proxy::h1::body::poll_body;
pub use crate::proxy::h1::body::{Chunk, Framing};
use crate::proxy::h1::client::{encode, BodyFraming, Sender};
use crate::proxy::h1::response::{parse_response, Asked};
use crate::proxy::h1::server::{self, ReadError};
use crate::proxy::h1::{Fields, MAX_HEAD_BYTES};
use crate::proxy::headers::RequestFields;
pub use crate::proxy::headers::UpgradeOffer;
pub use crate::proxy::proxy_protocol::{parse as parse_proxy_header, v2_header};

/// Most fields a client's request head may have (more: 431).
pub const REQUEST_FIELDS_MAX: usize = server::MAX_FIELDS;
/// Most bytes a message head may have (more: 431 for a request, 502 for a response).
pub const HEAD_BYTES_MAX: usize = MAX_HEAD_BYTES;

/// The backend [`forwarded_head`] addresses: the `Host` of a request that had none.
pub const FORWARDED_TO: &str = "backend.example:8080";

/// The host a request is routed by (its `Host`, or its target's authority): the
/// `Host` evenkeel sends on.
pub fn routing_host(request: &ClientRequest) -> Option<Vec<u8>> {
    crate::proxy::forward::request_host(&request.parts, request.fields())
        .map(|h| h.as_bytes().to_vec())
}

/// What reading a message head gave.
#[derive(Debug)]
pub enum Read<T> {
    /// Not all of the head has come yet.
    Incomplete,
    /// Refused: for a request, the status the client gets (400, 417, 431); for a
    /// response, what a client would get instead of it (502).
    Refused(u16),
    /// A complete head, and how many bytes of the input it took.
    Parsed(T, usize),
}

/// A request head as evenkeel read it from a client.
#[derive(Debug)]
pub struct ClientRequest {
    /// Method, target, version, and the fields as a header map (made here to be looked
    /// at: evenkeel itself works on them as sent).
    pub parts: http::request::Parts,
    /// How its body is framed.
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// The fields as the client sent them, as evenkeel reads and forwards them.
    sent: Fields,
}

impl ClientRequest {
    fn fields(&self) -> RequestFields<'_> {
        RequestFields::Sent(&self.sent)
    }
}

/// Reads a request head off the front of `bytes` as evenkeel's client side does.
pub fn read_request(bytes: &[u8]) -> Read<ClientRequest> {
    let mut read = BytesMut::from(bytes);
    let mut spans = Vec::new();
    match server::parse_head(&mut read, &mut spans) {
        Ok(None) => Read::Incomplete,
        Ok(Some(head)) => {
            let (mut parts, ()) = head.request.into_parts();
            // httparse took every name and value that `HeaderName` and `HeaderValue`
            // take: a field that would not make a header map is a finding.
            parts.headers = head
                .fields
                .to_header_map()
                .expect("a field httparse read that a header map refuses");
            Read::Parsed(
                ClientRequest {
                    parts,
                    framing: head.framing,
                    keep_alive: head.keep_alive,
                    sent: head.fields,
                },
                bytes.len() - read.len(),
            )
        }
        Err(ReadError::TooLarge) => Read::Refused(431),
        Err(ReadError::Expectation) => Read::Refused(417),
        Err(ReadError::Malformed | ReadError::Io) => Read::Refused(400),
    }
}

/// The head evenkeel sends backend `backend.example:8080` for `request` from client
/// 192.0.2.1 over plain HTTP (its body, if any, sent with evenkeel's own framing);
/// `None` when evenkeel
/// answers the request itself instead (upgrades, CONNECT, transfer codings it does
/// not decode).
pub fn forwarded_head(request: &ClientRequest) -> Option<Bytes> {
    let fields = request.fields();
    let upgrade = crate::proxy::forward::upgrade_of(&request.parts, fields);
    if crate::proxy::forward::answered_here(&request.parts, fields, upgrade.as_ref()).is_some() {
        return None;
    }
    let framing = match request.framing {
        Framing::Length(length) => BodyFraming::Length(length),
        Framing::Chunked(_) => BodyFraming::Chunked,
        Framing::Done if fields.contains("content-length") => BodyFraming::Length(0),
        Framing::Done | Framing::Close => BodyFraming::None,
    };
    let host = crate::proxy::forward::request_host(&request.parts, fields);
    let client = crate::proxy::headers::client_value([192, 0, 2, 1].into());
    Some(
        encode(
            &request.parts,
            fields,
            framing,
            Sender {
                address: &client,
                https: false,
            },
            host.as_ref(),
            FORWARDED_TO,
            upgrade.as_ref(),
        )
        .head,
    )
}

/// The key of RFC 6455 §1.3's example handshake, which [`websocket_offer`] sends.
pub const WEBSOCKET_KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";

/// An offer to switch to `websocket`, with [`WEBSOCKET_KEY`] (its answer is
/// `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`) when `with_key`.
pub fn websocket_offer(with_key: bool) -> UpgradeOffer {
    UpgradeOffer {
        protocols: Bytes::from_static(b"websocket"),
        accept: with_key.then(|| crate::proxy::headers::websocket_accept(WEBSOCKET_KEY)),
    }
}

/// A response head as evenkeel read it from a backend.
#[derive(Debug)]
pub struct BackendResponse {
    /// The status.
    pub status: u16,
    /// The end-to-end fields passed on to the client, as the backend spelled them.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// How its body is framed.
    pub framing: Framing,
    /// Whether the connection may be reused after the body.
    pub keep_alive: bool,
}

/// Reads a response head (after skipping 1xx heads but a 101 to an upgrade) off the
/// front of `bytes`, as the answer to a `HEAD` request when `is_head`, to a request
/// that offered `upgrade` when it is `Some` (see [`websocket_offer`]).
pub fn read_response(
    bytes: &[u8],
    is_head: bool,
    upgrade: Option<&UpgradeOffer>,
) -> Read<BackendResponse> {
    let mut read = BytesMut::from(bytes);
    let mut spans = Vec::new();
    match parse_response(&mut read, &mut spans, Asked { is_head, upgrade }) {
        Ok(None) => Read::Incomplete,
        Ok(Some(head)) => Read::Parsed(
            BackendResponse {
                status: head.status.as_u16(),
                fields: head
                    .fields
                    .iter()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect(),
                framing: head.framing,
                keep_alive: head.keep_alive,
            },
            bytes.len() - read.len(),
        ),
        Err(_) => Read::Refused(502),
    }
}

/// What decoding a body gave.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The body's bytes, or the decoder's error as text.
    pub body: Result<Vec<u8>, String>,
    /// Bytes of the input after the body's end (the next message), when it ended.
    pub rest: usize,
}

/// Decodes a body framed by `framing` from `pieces`, which arrive one read at a time
/// (the end of the pieces is the end of the stream), with the decoder that reads
/// backends' responses and clients' request bodies.
pub fn decode_body(framing: Framing, pieces: &[&[u8]]) -> Decoded {
    let mut stream = Pieces {
        pieces: pieces.iter().map(|p| Bytes::copy_from_slice(p)).collect(),
    };
    let mut read = BytesMut::new();
    let mut framing = framing;
    let mut body = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match poll_body(&mut stream, &mut read, &mut framing, &mut cx) {
            Poll::Ready(Some(Ok(data))) => body.extend_from_slice(&data),
            Poll::Ready(Some(Err(error))) => {
                return Decoded {
                    body: Err(error.to_string()),
                    rest: 0,
                }
            }
            Poll::Ready(None) => {
                let rest = read.len() + stream.pieces.iter().map(Bytes::len).sum::<usize>();
                return Decoded {
                    body: Ok(body),
                    rest,
                };
            }
            // The stream is always ready: a pending poll would be a decoder bug.
            Poll::Pending => {
                return Decoded {
                    body: Err("pending on a ready stream".into()),
                    rest: 0,
                }
            }
        }
    }
}

/// The chunked encoding of `pieces` as evenkeel sends a body (each non-empty piece one
/// chunk, then the last chunk).
pub fn encode_chunks(pieces: &[&[u8]]) -> Vec<u8> {
    let mut outbox = crate::proxy::outbox::Outbox::default();
    for piece in pieces {
        outbox.push_chunk(Bytes::copy_from_slice(piece));
    }
    outbox.push_last_chunk();
    let mut out = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    let mut writer = |_: &mut Context<'_>, slices: &[std::io::IoSlice<'_>]| {
        let before = out.len();
        for slice in slices {
            out.extend_from_slice(slice);
        }
        Poll::Ready(Ok(out.len() - before))
    };
    while !outbox.is_empty() {
        if !matches!(outbox.poll_write(&mut writer, &mut cx), Poll::Ready(Ok(_))) {
            break;
        }
    }
    out
}

/// An in-memory stream giving one piece per read.
struct Pieces {
    pieces: std::collections::VecDeque<Bytes>,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(piece) = self.pieces.front_mut() {
            let take = piece.len().min(buf.remaining());
            buf.put_slice(&piece.split_to(take));
            if piece.is_empty() {
                self.pieces.pop_front();
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Loads, validates and lints `text` as a config file named `fuzz.toml` in the current
/// folder, with host names never resolved (only addresses and `localhost`): the rules
/// and severities of its findings, and whether it passed.
pub fn check_config(text: &str) -> (bool, Vec<(String, String)>) {
    crate::config::values::resolve_offline();
    let checked = crate::config::check_source(crate::config::Source {
        path: "fuzz.toml".into(),
        text: text.to_string(),
    });
    let findings = checked
        .findings
        .iter()
        .map(|f| (f.rule.to_string(), f.severity.as_str().to_string()))
        .collect();
    (checked.config.is_some(), findings)
}

pub use crate::config::foreign::{Product, Report, Translated};

/// Reads `text` as another product's config file (`/nonexistent/fuzz.conf`), translates
/// and checks it as `check --from` does, with host names never resolved, and writes it
/// as `import --from` would: None when the product's syntax refuses it, or when it
/// includes a file by an absolute path or through `..` (the fuzzer must not read the
/// machine's files).
pub fn audit_foreign(product: Product, text: &str) -> Option<(Translated, Report, String)> {
    use crate::config::foreign::{self, haproxy, nginx};
    crate::config::values::resolve_offline();
    if product == Product::Nginx && reaches_out(text) {
        return None;
    }
    let path = std::path::Path::new("/nonexistent/fuzz.conf");
    let (translated, reword): (Translated, fn(&mut crate::config::diagnostic::Finding)) =
        match product {
            Product::Nginx => (
                nginx::translate(&nginx::parse::parse_text(path, text.to_string()).ok()?),
                nginx::reword,
            ),
            Product::Haproxy => (
                haproxy::translate(&haproxy::parse::parse_text(path, text.to_string()).ok()?),
                haproxy::reword,
            ),
        };
    let report = foreign::check(&translated, std::path::Path::new("/nonexistent"), reword);
    let annotated = foreign::annotated(&translated);
    Some((translated, report, annotated))
}

/// Whether an NGINX text may include a file outside `/nonexistent`.
fn reaches_out(text: &str) -> bool {
    text.match_indices("include").any(|(at, _)| {
        let rest = text[at + "include".len()..]
            .trim_start_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\');
        rest.starts_with(['/', '~', '$'])
            || rest
                .split(|c: char| c.is_whitespace() || c == ';')
                .next()
                .is_some_and(|arg| arg.contains(".."))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/chunked_body: a trailer line with a bare CR in it was taken as one
    /// field, where a peer that ends lines at a bare CR sees the message end early;
    /// split between reads, a CRLF is still a line end.
    #[test]
    fn a_bare_cr_in_a_trailer_line_is_refused() {
        let chunked = Framing::Chunked(Chunk::Size);
        let bare = b"1\r\na\r\n0\r\n\rX-A: b\r\n\r\n";
        assert!(decode_body(chunked, &[bare]).body.is_err());
        let good = b"1\r\na\r\n0\r\nX-A: b\r\n\r\n";
        let bytewise: Vec<&[u8]> = good.chunks(1).collect();
        assert_eq!(
            decode_body(chunked, &bytewise).body.as_deref(),
            Ok(&b"a"[..])
        );
    }

    /// Found by fuzz/chunked_body: httparse takes a bare LF inside a chunk extension
    /// (`a;x\nb\r\n`), where a peer ending lines at LF reads the data from there.
    #[test]
    fn a_bare_lf_or_cr_in_a_chunk_size_line_is_refused() {
        let chunked = Framing::Chunked(Chunk::Size);
        for bad in [
            &b"1;x\ny\r\na\r\n0\r\n\r\n"[..],
            b"1;x\ry\r\na\r\n0\r\n\r\n",
            b"1\na\r\n0\r\n\r\n",
        ] {
            assert!(decode_body(chunked, &[bad]).body.is_err(), "{bad:?}");
            let bytewise: Vec<&[u8]> = bad.chunks(1).collect();
            assert!(decode_body(chunked, &bytewise).body.is_err(), "{bad:?}");
        }
        let good = b"1;name=value\r\na\r\n0\r\n\r\n";
        let bytewise: Vec<&[u8]> = good.chunks(1).collect();
        assert_eq!(
            decode_body(chunked, &bytewise).body.as_deref(),
            Ok(&b"a"[..])
        );
        assert_eq!(decode_body(chunked, &[good]).body.as_deref(), Ok(&b"a"[..]));
    }

    /// Review: a chunk-size or trailer line over the line limit was refused only when
    /// it came in pieces; and the 64th trailer field's blank line was refused.
    #[test]
    fn line_limits_hold_however_the_bytes_arrive() {
        let chunked = Framing::Chunked(Chunk::Size);
        let long_size = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(5000));
        let long_trailer = format!("1\r\na\r\n0\r\nX: {}\r\n\r\n", "x".repeat(5000));
        for bad in [long_size, long_trailer] {
            let bytes = bad.as_bytes();
            assert!(decode_body(chunked, &[bytes]).body.is_err());
            let pieces: Vec<&[u8]> = bytes.chunks(7).collect();
            assert!(decode_body(chunked, &pieces).body.is_err());
        }
        let trailers = |n: usize| format!("1\r\na\r\n0\r\n{}\r\n", "X: y\r\n".repeat(n));
        for (fields, accepted) in [(64, true), (65, false)] {
            let text = trailers(fields);
            let bytewise: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
            for pieces in [vec![text.as_bytes()], bytewise] {
                let decoded = decode_body(chunked, &pieces);
                assert_eq!(decoded.body.is_ok(), accepted, "{fields} trailer fields");
            }
        }
    }

    /// Found by tests/differential.rs: `close` beside `keep-alive` kept an HTTP/1.0
    /// connection; close wins, for requests and responses alike. And one
    /// `Content-Length` field, one number: two equal fields or a list are refused.
    #[test]
    fn close_wins_and_one_length_field_only() {
        let Read::Parsed(request, _) =
            read_request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n")
        else {
            panic!("parsed")
        };
        assert!(!request.keep_alive);
        let Read::Parsed(response, _) = read_response(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 2\r\n\r\nok",
            false,
            None,
        ) else {
            panic!("parsed")
        };
        assert!(!response.keep_alive);
        for lengths in [
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5, 5\r\n",
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\n{lengths}\r\nhello");
            assert!(
                matches!(read_request(head.as_bytes()), Read::Refused(400)),
                "{lengths}"
            );
        }
    }

    /// Review: an empty `Host` (`Host:`, `Host: :80`) went to the backend as it was,
    /// with an empty `X-Forwarded-Host`; it names nothing, so the backend's address goes
    /// instead. An `http://` target with an empty host is invalid (RFC 9110 §4.2.1).
    #[test]
    fn an_empty_host_is_no_host() {
        for empty in ["Host:", "Host: ", "Host: :80"] {
            let head = format!("GET / HTTP/1.1\r\n{empty}\r\n\r\n");
            let Read::Parsed(request, _) = read_request(head.as_bytes()) else {
                panic!("{empty:?} parsed")
            };
            assert_eq!(routing_host(&request), None, "{empty:?}");
            let forwarded = forwarded_head(&request).expect("forwarded");
            let text = String::from_utf8_lossy(&forwarded);
            assert!(
                text.contains(&format!("\r\nhost: {FORWARDED_TO}\r\n")),
                "{text}"
            );
            assert!(!text.contains("x-forwarded-host"), "{text}");
        }
        assert!(matches!(
            read_request(b"GET http://:80/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            Read::Refused(400)
        ));
    }

    /// Found by fuzz/request_head: a target in none of the four request-target forms
    /// (`?q`) was accepted, and went to the backend as `GET ?q HTTP/1.1`; an
    /// absolute-form target with a query and no path must keep its `/`.
    #[test]
    fn a_target_in_no_request_target_form_is_refused() {
        for bad in ["?q=1", "index.html", "*", "a:443"] {
            let head = format!("GET {bad} HTTP/1.1\r\nhost: a\r\n\r\n");
            assert!(
                matches!(read_request(head.as_bytes()), Read::Refused(400)),
                "{bad}"
            );
        }
        for good in [
            "OPTIONS * HTTP/1.1",
            "CONNECT a:443 HTTP/1.1",
            "GET http://a?q=1 HTTP/1.1",
        ] {
            let head = format!("{good}\r\nhost: a\r\n\r\n");
            assert!(
                matches!(read_request(head.as_bytes()), Read::Parsed(..)),
                "{good}"
            );
        }
        let Read::Parsed(request, _) =
            read_request(b"GET http://a?q=1 HTTP/1.1\r\nhost: a\r\n\r\n")
        else {
            panic!("parsed")
        };
        let head = forwarded_head(&request).expect("forwarded");
        assert!(head.starts_with(b"GET /?q=1 HTTP/1.1\r\n"), "{head:?}");
    }

    /// The entry points see what the proxy sees: a smuggling shape is refused, a plain
    /// request's forwarded head reads back, chunks round-trip.
    #[test]
    fn the_entry_points_reach_the_serving_code() {
        assert!(matches!(
            read_request(
                b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"
            ),
            Read::Refused(400)
        ));
        let Read::Parsed(request, used) =
            read_request(b"POST /x?y HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc")
        else {
            panic!("parsed")
        };
        assert_eq!(used, 50);
        let head = forwarded_head(&request).expect("forwarded");
        let Read::Parsed(again, used) = read_request(&head) else {
            panic!("the forwarded head reads back: {head:?}")
        };
        assert_eq!(used, head.len());
        assert_eq!(again.framing, Framing::Length(3));
        assert_eq!(again.parts.uri, "/x?y");
        let encoded = encode_chunks(&[b"hello", b"", b" world"]);
        assert_eq!(encoded, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        let decoded = decode_body(Framing::Chunked(Chunk::Size), &[&encoded, b"NEXT"]);
        assert_eq!(decoded.body.as_deref(), Ok(&b"hello world"[..]));
        assert_eq!(decoded.rest, 4);
        assert!(matches!(
            read_response(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                false,
                None
            ),
            Read::Refused(502)
        ));
    }
}
