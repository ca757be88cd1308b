//! The PROXY protocol (HAProxy's spec, versions 1 and 2), parsed and built by the `ppp`
//! crate: read first on a TCP listener with `accept_proxy_protocol` (from an L4
//! balancer in front, which says who the client really is), and written first to the
//! backends of a pool with `proxy_protocol = "v2"`.
//!
//! Reading is strict: the connection must begin with a complete, valid header — the
//! v2 signature or `PROXY ` — within `header_timeout`, in at most [`MAX_HEADER`] bytes;
//! anything else closes it. A `LOCAL` command (a health check of the balancer in
//! front) or an `UNKNOWN`/unspecified address keeps the connection's own address.
//! Bytes behind the header are the client's first and go on to the backend.

use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, BytesMut};
use ppp::{v1, v2, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The longest header read: a v1 header is at most 107 bytes; v2 headers carry TLVs,
/// which evenkeel skips, and HAProxy bounds them alike.
pub const MAX_HEADER: usize = 4096;
/// The v2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// It did not come in time, or the connection closed or failed first.
    #[error("no complete PROXY header before header_timeout or the close")]
    Missing,
    /// What came is not a PROXY header, or not a valid one.
    #[error("not a valid PROXY protocol header")]
    Invalid,
}

/// Reads the PROXY header off the front of `stream` by `deadline`: the client's
/// address it names (`None`: keep the connection's own), and the bytes read past it.
pub async fn read(
    stream: &mut TcpStream,
    deadline: Instant,
) -> Result<(Option<SocketAddr>, BytesMut), HeaderError> {
    let mut read = BytesMut::with_capacity(256);
    loop {
        if let Some(parsed) = parse(&read)? {
            let (client, length) = parsed;
            read.advance(length);
            return Ok((client, read));
        }
        if read.len() >= MAX_HEADER {
            return Err(HeaderError::Invalid);
        }
        read.reserve(256);
        let got = tokio::time::timeout_at(deadline, stream.read_buf(&mut read))
            .await
            .map_err(|_| HeaderError::Missing)?
            .map_err(|_| HeaderError::Missing)?;
        if got == 0 {
            return Err(HeaderError::Missing);
        }
    }
}

/// The longest v1 header, CRLF included (the spec's 107 bytes).
const V1_MAX: usize = 107;

/// A complete header at the front of `bytes`: the client it names and its length;
/// `None` while it may still be one. A v1 header is a line: it is judged once its CRLF
/// has come (ppp would call some cut-short lines final and some malformed ones
/// incomplete); `PROXY UNKNOWN` with anything after it is a header without addresses.
pub fn parse(bytes: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, HeaderError> {
    let is_prefix =
        |of: &[u8]| bytes[..bytes.len().min(of.len())] == of[..bytes.len().min(of.len())];
    if is_prefix(b"PROXY ") {
        let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return if bytes.len() < V1_MAX {
                Ok(None)
            } else {
                Err(HeaderError::Invalid)
            };
        };
        let line = &bytes[..end + 2];
        if line.len() > V1_MAX {
            return Err(HeaderError::Invalid);
        }
        if line.starts_with(b"PROXY UNKNOWN") {
            return Ok(Some((None, line.len())));
        }
        let header = v1::Header::try_from(line).map_err(|_| HeaderError::Invalid)?;
        let client = match header.addresses {
            v1::Addresses::Tcp4(a) => {
                Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
            }
            v1::Addresses::Tcp6(a) => {
                Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
            }
            v1::Addresses::Unknown => None,
        };
        return Ok(Some((client, line.len())));
    }
    // What no header begins with is refused at once (the parser would wait for more).
    if !is_prefix(V2_SIGNATURE) {
        return Err(HeaderError::Invalid);
    }
    let parsed = v2::Header::try_from(bytes);
    if parsed.is_incomplete() {
        return Ok(None);
    }
    let header = parsed.map_err(|_| HeaderError::Invalid)?;
    let client = match (header.command, header.addresses) {
        (v2::Command::Local, _) => None,
        (_, v2::Addresses::IPv4(a)) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        (_, v2::Addresses::IPv6(a)) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        (_, _) => None,
    };
    Ok(Some((client, header.len())))
}

/// The v2 header for a connection from `client` to `local` (the listener's address);
/// addresses of two families are both written as IPv6 (IPv4-mapped).
pub fn v2_header(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V6(_)) => (
            SocketAddr::new(IpAddr::V6(c.ip().to_ipv6_mapped()), c.port()),
            local,
        ),
        (SocketAddr::V6(_), SocketAddr::V4(l)) => (
            client,
            SocketAddr::new(IpAddr::V6(l.ip().to_ipv6_mapped()), l.port()),
        ),
        _ => (client, local),
    };
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client, local),
    )
    .build()
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What evenkeel writes, it reads back; v1 of both families too; and what is not a
    /// header is refused at its first byte, not waited on.
    #[test]
    fn headers_read_back_and_garbage_is_refused_at_once() {
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:6379".parse().unwrap();
        let mut bytes = v2_header(client, local);
        let length = bytes.len();
        bytes.extend_from_slice(b"PING\r\n");
        assert_eq!(parse(&bytes).unwrap(), Some((Some(client), length)));
        for cut in 0..length {
            assert_eq!(parse(&bytes[..cut]).unwrap(), None, "{cut} bytes");
        }
        let mixed = v2_header(client, "[::1]:6379".parse().unwrap());
        let (mapped, _) = parse(&mixed).unwrap().unwrap();
        assert_eq!(
            mapped.map(|a| a.ip()),
            Some(IpAddr::V6("::ffff:192.0.2.7".parse().unwrap()))
        );
        let v1 = b"PROXY TCP6 2001:db8::1 ::1 5000 6379\r\nPING";
        assert_eq!(
            parse(v1).unwrap(),
            Some((Some("[2001:db8::1]:5000".parse().unwrap()), v1.len() - 4))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), Some((None, 15)));
        // Found by review: every cut of a v1 header waits for the rest; the spec lets
        // UNKNOWN carry anything; a complete but malformed line is refused at once.
        let v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 6379\r\n";
        for cut in 0..v1.len() {
            assert_eq!(parse(&v1[..cut]).unwrap(), None, "{cut} bytes");
        }
        assert_eq!(
            parse(b"PROXY UNKNOWN a b c d e\r\nx").unwrap(),
            Some((None, 25))
        );
        assert!(parse(b"PROXY TCP4 1.2.3.4\r\n").is_err());
        assert!(parse(&[b"PROXY ".as_slice(), &[b'1'; 120]].concat()).is_err());
        for garbage in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"*1\r\n$4\r\nPING\r\n",
            b"PROXZ",
            b"\r\n\r\n\0X",
        ] {
            assert!(parse(garbage).is_err(), "{garbage:?}");
        }
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n").is_err());
    }
}
