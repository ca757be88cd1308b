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

/// Whether a client's request field is left out of what goes to the backend, which
/// gets its own instead: hop-by-hop fields and those its `Connection` lists (`named`),
/// the framing (`Content-Length`), `Host` (or `:authority`), `Expect` (answered by
/// evenkeel), and `X-Forwarded-*` (evenkeel sets them). HTTP/1 and HTTP/2 requests
/// alike.
pub fn is_replaced_toward_backend(name: &HeaderName, named: &ConnectionLists<'_>) -> bool {
    is_hop_by_hop(name)
        || *name == header::CONTENT_LENGTH
        || *name == header::HOST
        || *name == header::EXPECT
        || *name == X_FORWARDED_FOR
        || *name == X_FORWARDED_HOST
        || *name == X_FORWARDED_PROTO
        || named.names(name)
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

/// What an upgrade request offers the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeOffer {
    /// The protocols, joined by `, `, as `Upgrade` sends them on.
    pub protocols: Bytes,
    /// For a WebSocket offer with a `Sec-WebSocket-Key`: the `Sec-WebSocket-Accept` a
    /// backend that really switches must answer with (RFC 6455 §4.2.2).
    pub accept: Option<Bytes>,
}

/// The WebSocket GUID of RFC 6455 §1.3.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` that answers `key`: base64 of the SHA-1 of the key and
/// the WebSocket GUID.
pub fn websocket_accept(key: &[u8]) -> Bytes {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut sha1 = sha1::Sha1::new();
    sha1.update(key.trim_ascii());
    sha1.update(WEBSOCKET_GUID);
    let digest = sha1.finalize();
    Bytes::from(base64::engine::general_purpose::STANDARD.encode(digest))
}

/// What an HTTP/1.1 request offers to switch to, for a request that is a real
/// upgrade: `Connection` lists `upgrade` (RFC 9110 §7.8: a sender of `Upgrade` must),
/// and something is offered other than a protocol that carries HTTP itself (`h2c`,
/// `h2`, `HTTP/...`, `TLS/...`), which is always left out: through it the client would
/// speak HTTP to the backend directly, in requests evenkeel would no longer route. A
/// request that offers only those is served as the HTTP/1.1 request it also is (a
/// server may ignore an upgrade). `None`: no upgrade; the request is an ordinary one,
/// and its `Upgrade` is hop-by-hop like any other.
pub fn upgrade_offer(headers: &HeaderMap) -> Option<UpgradeOffer> {
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
            if !is_protocol(protocol) || carries_http(protocol) {
                continue;
            }
            if !offer.is_empty() {
                offer.extend_from_slice(b", ");
            }
            offer.extend_from_slice(protocol);
        }
    }
    if offer.is_empty() {
        return None;
    }
    let websocket = tokens(&offer).any(|p| p.eq_ignore_ascii_case(b"websocket"));
    let key = headers.get("sec-websocket-key");
    Some(UpgradeOffer {
        protocols: Bytes::from(offer),
        accept: key
            .filter(|_| websocket)
            .map(|key| websocket_accept(key.as_bytes())),
    })
}

/// Whether `protocol` is one as `Upgrade` names it (RFC 9110 §7.8): a token, or two
/// joined by one `/` (name and version). Anything else is left out of an offer.
fn is_protocol(protocol: &[u8]) -> bool {
    let is_token = |t: &[u8]| {
        !t.is_empty()
            && t.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    match protocol.iter().position(|&b| b == b'/') {
        Some(slash) => is_token(&protocol[..slash]) && is_token(&protocol[slash + 1..]),
        None => is_token(protocol),
    }
}

/// A protocol through which the client would speak HTTP to the backend itself:
/// `h2c`, `h2`, `HTTP/...` (RFC 9110's example), `TLS/...` (RFC 2817), any version.
fn carries_http(protocol: &[u8]) -> bool {
    let name = protocol.split(|&b| b == b'/').next().unwrap_or(protocol);
    [&b"h2c"[..], b"h2", b"http", b"tls"]
        .iter()
        .any(|http| name.trim_ascii().eq_ignore_ascii_case(http))
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

    /// An upgrade is offered only with `Connection: upgrade`, and never to a protocol
    /// that carries HTTP itself.
    #[test]
    fn an_upgrade_offer_needs_connection_upgrade_and_leaves_http_protocols_out() {
        let offer = |fields| upgrade_offer(&headers(fields)).map(|o| o.protocols);
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
        assert_eq!(
            offer(&[
                ("connection", "upgrade"),
                ("upgrade", "TLS/1.2, HTTP/2.0, h2, http/1.1")
            ]),
            None
        );
        // Found by fuzzing: what is not a protocol token is no offer either.
        assert_eq!(
            offer(&[
                ("connection", "upgrade"),
                (
                    "upgrade",
                    "h2cbSocket-Key: dGhub25jZQ==, a/b/c, /1, websocket/"
                )
            ]),
            None
        );
    }

    /// RFC 6455 §1.3's example key and answer; only a WebSocket offer with a key
    /// expects one.
    #[test]
    fn a_websocket_offer_knows_the_accept_that_answers_its_key() {
        assert_eq!(
            &websocket_accept(b" dGhlIHNhbXBsZSBub25jZQ== ")[..],
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        let ws = upgrade_offer(&headers(&[
            ("connection", "upgrade"),
            ("upgrade", "WebSocket"),
            key,
        ]))
        .expect("an offer");
        assert_eq!(
            ws.accept.as_deref(),
            Some(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])
        );
        let other = upgrade_offer(&headers(&[
            ("connection", "upgrade"),
            ("upgrade", "foo"),
            key,
        ]))
        .expect("an offer");
        assert_eq!(other.accept, None);
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
