//! Header rewriting between client and backend.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every header it names,
//! `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`)
//! describe one connection and are removed in both directions (by [`super::h1::client`],
//! which writes requests to and reads responses from backends); each side is framed on
//! its own. Toward the backend, `X-Forwarded-For` gets the client address appended (an
//! existing value is kept), and `X-Forwarded-Proto` and `X-Forwarded-Host` are set.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The fields that are hop-by-hop whatever `Connection` says.
const HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"keep-alive",
    b"proxy-connection",
];

/// Whether `name` is hop-by-hop whatever `Connection` says.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str().as_bytes())
}

/// Whether the field name `name` (any case) is hop-by-hop whatever `Connection` says.
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
}

/// The comma-separated tokens of a field value, trimmed, empty ones left out.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// What a message's `Connection` fields say, read one value at a time.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionOptions {
    /// `close` is listed.
    pub close: bool,
    /// `keep-alive` is listed.
    pub keep_alive: bool,
    /// Something else is listed: a field name, hop-by-hop for this message.
    pub names_fields: bool,
}

impl ConnectionOptions {
    /// Adds what one `Connection` value lists.
    pub fn read(&mut self, value: &[u8]) {
        for token in tokens(value) {
            let close = token.eq_ignore_ascii_case(b"close");
            let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
            self.close |= close;
            self.keep_alive |= keep_alive;
            self.names_fields |= !close && !keep_alive;
        }
    }
}

/// The header names a message's `Connection` fields list (hop-by-hop as well).
pub struct ConnectionLists<'a> {
    values: Option<header::GetAll<'a, HeaderValue>>,
}

/// The `Connection` lists of `headers`.
pub fn connection_lists(headers: &HeaderMap) -> ConnectionLists<'_> {
    ConnectionLists {
        values: headers
            .contains_key(header::CONNECTION)
            .then(|| headers.get_all(header::CONNECTION)),
    }
}

impl ConnectionLists<'_> {
    /// Whether `name` is listed.
    pub fn names(&self, name: &HeaderName) -> bool {
        let Some(values) = &self.values else {
            return false;
        };
        let name = name.as_str().as_bytes();
        values
            .iter()
            .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(name)))
    }
}

/// A client address as an `X-Forwarded-For` value; made once per client connection.
pub fn client_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).expect("an IP address is a valid header value")
}

/// The protocols an HTTP/1.1 request offers to switch to, as its `Upgrade` fields list
/// them (joined by `, `), for a request that is a real upgrade: `Connection` lists
/// `upgrade` (RFC 9110 §7.8: a sender of `Upgrade` must), and something other than
/// `h2c` is offered. `h2c` is always left out: it would turn the connection into
/// HTTP/2 with the backend, whose streams evenkeel would no longer route; a request
/// that offers only `h2c` is served as the HTTP/1.1 request it also is (a server may
/// ignore an upgrade). `None`: no upgrade; the request is an ordinary one, and its
/// `Upgrade` is hop-by-hop like any other.
pub fn upgrade_offer(headers: &HeaderMap) -> Option<Bytes> {
    let upgrade = headers.get(header::UPGRADE)?;
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"upgrade")));
    if !asked {
        return None;
    }
    let mut offer = Vec::with_capacity(upgrade.len());
    for value in headers.get_all(header::UPGRADE) {
        for protocol in tokens(value.as_bytes()) {
            if is_h2c(protocol) {
                continue;
            }
            if !offer.is_empty() {
                offer.extend_from_slice(b", ");
            }
            offer.extend_from_slice(protocol);
        }
    }
    (!offer.is_empty()).then(|| Bytes::from(offer))
}

/// `h2c`, or `h2c/VERSION`.
fn is_h2c(protocol: &[u8]) -> bool {
    let name = protocol.split(|&b| b == b'/').next().unwrap_or(protocol);
    name.eq_ignore_ascii_case(b"h2c")
}

/// Whether a 101's `Upgrade` value `answered` switches only to protocols the request
/// offered (`offered`, as [`upgrade_offer`] made it): a server must not switch to a
/// protocol the client did not ask for (RFC 9110 §7.8). Compared without regard to
/// case; an empty answer names nothing and does not match.
pub fn switches_to_offered(offered: &[u8], answered: &[u8]) -> bool {
    let mut any = false;
    let all_offered = tokens(answered).all(|protocol| {
        any = true;
        tokens(offered).any(|o| o.eq_ignore_ascii_case(protocol))
    });
    any && all_offered
}

/// Whether the request's `Transfer-Encoding` is anything but `chunked` alone (say
/// `gzip, chunked`). Only the chunking is decoded ([`super::h1::body`]); since
/// `Transfer-Encoding` is hop-by-hop, forwarding such a body would hand the backend
/// coded bytes with nothing saying so.
pub fn has_unsupported_transfer_coding(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty());
    match codings.next() {
        None => false,
        Some(first) => !first.eq_ignore_ascii_case("chunked") || codings.next().is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chunked_alone_is_a_supported_transfer_coding() {
        let coded = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            has_unsupported_transfer_coding(&h)
        };
        assert!(!coded(&[]));
        assert!(!coded(&["chunked"]));
        assert!(!coded(&["Chunked "]));
        assert!(coded(&["gzip, chunked"]));
        assert!(coded(&["gzip", "chunked"]));
        assert!(coded(&["chunked, chunked"]));
    }

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    /// An upgrade is offered only with `Connection: upgrade`, and never to `h2c`.
    #[test]
    fn an_upgrade_offer_needs_connection_upgrade_and_leaves_h2c_out() {
        let offer = |fields| upgrade_offer(&headers(fields));
        assert_eq!(
            offer(&[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "websocket")
            ])
            .as_deref(),
            Some(&b"websocket"[..])
        );
        assert_eq!(offer(&[("upgrade", "websocket")]), None);
        assert_eq!(offer(&[("connection", "upgrade")]), None);
        assert_eq!(
            offer(&[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c")
            ]),
            None
        );
        assert_eq!(
            offer(&[
                ("connection", "upgrade"),
                ("upgrade", "H2C/1, websocket"),
                ("upgrade", "foo/2")
            ])
            .as_deref(),
            Some(&b"websocket, foo/2"[..])
        );
    }

    /// A 101 may name only what was offered.
    #[test]
    fn a_switch_must_be_to_an_offered_protocol() {
        assert!(switches_to_offered(b"websocket", b"WebSocket"));
        assert!(switches_to_offered(b"websocket, foo/2", b"foo/2"));
        assert!(!switches_to_offered(b"websocket", b"h2c"));
        assert!(!switches_to_offered(b"websocket", b"websocket, h2c"));
        assert!(!switches_to_offered(b"websocket", b""));
        assert!(!switches_to_offered(b"websocket", b" , "));
    }
}
