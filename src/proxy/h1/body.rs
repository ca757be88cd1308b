//! Body framing, the same both ways: how a message says where its body ends, and the
//! decoder that reads a body so framed — a backend's response body
//! ([`Connection::poll_body`](super::Connection::poll_body)) and a client's request body
//! ([`downstream`](crate::proxy::downstream)) alike. The framing is decided from the
//! head, by [`super::client`] for a response and [`super::server`] for a request; this
//! file follows it.
//!
//! A body is one of: none; `Content-Length` bytes; chunks (RFC 9112 §7.1); or, for a
//! response only, everything until the backend closes. The chunk grammar is read
//! strictly, because two parsers that disagree on where a chunked body ends disagree on
//! where the next message begins (request smuggling):
//! - a chunk-size line begins with a hex digit (httparse takes an empty size for 0) and
//!   ends in CRLF, with no bare CR or LF before it (a peer that ends lines at LF would
//!   read the chunk's data from there);
//! - a chunk's data is followed by CRLF;
//! - the trailer section has at most 64 fields, each a line with a `:` and no bare CR
//!   or LF; trailers are read and dropped, never forwarded;
//! - a chunk-size or trailer line longer than about 4 KiB is refused.
//!
//! A break of these rules is [`Error::BadChunk`]; a stream that ends inside a body is
//! [`Error::Truncated`]. `is_disguised_framing` and `parse_length` are the checks both
//! head readers make on the framing fields.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncRead;

use super::Error;

/// How much room a read asks for.
const READ_CHUNK: usize = 16 * 1024;
/// Longest chunk-size or trailer line accepted, CRLF included (however it arrives).
const MAX_LINE: usize = 4096;
/// Most trailer fields accepted after a chunked body (they are not forwarded).
const MAX_TRAILERS: u32 = 64;

/// How a message body is framed, and how much of it is left.
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

/// Reads more from `stream` into `read`; 0 at the end of the stream. A read that
/// returns less than asked clears the socket's readiness (tokio), so no extra read
/// that would only say "would block" follows.
pub(in crate::proxy) fn poll_fill<S: AsyncRead + Unpin>(
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
                    // Longer than MAX_LINE is refused whether the line came in one
                    // read or in many (fill_line bounds a line still arriving).
                    if lf == 0
                        || lf + 1 > MAX_LINE
                        || read[lf - 1] != b'\r'
                        || read[..lf - 1].contains(&b'\r')
                    {
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
                        || end.is_some_and(|e| e + 2 > MAX_LINE)
                        || (end.is_some_and(|e| e > 0) && !line.contains(&b':'))
                        // The blank line may follow the last field allowed (and
                        // may still be on its way).
                        || (lines >= MAX_TRAILERS && !inner.is_empty())
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
pub(crate) fn parse_length(token: &[u8]) -> Option<u64> {
    if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}
