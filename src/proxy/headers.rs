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
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::h1::Fields;

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

/// The fields evenkeel makes its own toward a backend, besides the hop-by-hop ones.
const REPLACED: [&[u8]; 6] = [
    b"content-length",
    b"host",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
];

/// Whether a client's request field `name` (any case) is left out of what goes to the
/// backend, which gets its own instead: hop-by-hop fields and those its `Connection`
/// lists (`named`), the framing (`Content-Length`), `Host` (or `:authority`), `Expect`
/// (answered by evenkeel), and `X-Forwarded-*` (evenkeel sets them). HTTP/1 and HTTP/2
/// requests alike.
pub fn is_replaced_toward_backend(name: &[u8], named: &ConnectionLists<'_>) -> bool {
    // Every name above is 2 to 17 bytes long: most fields are told apart by length
    // alone, with no comparison of their bytes.
    let compared = |list: &[&[u8]]| {
        list.iter()
            .any(|known| known.len() == name.len() && name.eq_ignore_ascii_case(known))
    };
    compared(&HOP_BY_HOP) || compared(&REPLACED) || named.names(name)
}

/// A request's fields, however they were read: as an HTTP/1 client sent them (the
/// bytes of its head and where each field is in them, with no header map built), or
/// as hyper's header map (HTTP/2). Names are looked up without regard to case;
/// `Sent` keeps the client's order and spelling.
#[derive(Clone, Copy)]
pub enum RequestFields<'a> {
    /// As an HTTP/1 client sent them.
    Sent(&'a Fields),
    /// An HTTP/2 request's header map.
    Map(&'a HeaderMap),
}

impl<'a> RequestFields<'a> {
    /// Each field's name and value, in order (a header map's order: by name).
    pub fn iter(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        match self {
            RequestFields::Sent(fields) => Either::Sent(fields.iter()),
            RequestFields::Map(map) => Either::Map(
                map.iter()
                    .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
            ),
        }
    }

    /// About how many bytes the fields take written out.
    pub fn size_hint(self) -> usize {
        match self {
            RequestFields::Sent(fields) => fields.head_len(),
            RequestFields::Map(map) => map.len() * 32,
        }
    }

    /// The values of the fields named `name` (lowercase), in order.
    pub fn get_all(self, name: &'static str) -> impl Iterator<Item = &'a [u8]> {
        match self {
            RequestFields::Sent(fields) => Either::Sent(fields.values(name.as_bytes())),
            RequestFields::Map(map) => {
                Either::Map(map.get_all(name).into_iter().map(HeaderValue::as_bytes))
            }
        }
    }

    /// The value of the first field named `name` (lowercase).
    pub fn get(self, name: &'static str) -> Option<&'a [u8]> {
        self.get_all(name).next()
    }

    /// Whether a field is named `name` (lowercase).
    pub fn contains(self, name: &'static str) -> bool {
        self.get(name).is_some()
    }

    /// The value of the first field named `name` (lowercase) as a header value, sharing
    /// the bytes read where it can.
    pub fn value(self, name: &'static str) -> Option<HeaderValue> {
        match self {
            RequestFields::Sent(fields) => fields.value(name.as_bytes()),
            RequestFields::Map(map) => map.get(name).cloned(),
        }
    }
}

/// One of the two kinds of [`RequestFields`]' iterators.
enum Either<S, M> {
    Sent(S),
    Map(M),
}

impl<T, S: Iterator<Item = T>, M: Iterator<Item = T>> Iterator for Either<S, M> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match self {
            Either::Sent(sent) => sent.next(),
            Either::Map(map) => map.next(),
        }
    }
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

/// The header names a message's `Connection` fields list (hop-by-hop as well), read
/// once per message: sorted (by length, then without regard to case) and without
/// repeats, so a field is looked up in them by halving, however many a client lists.
pub struct ConnectionLists<'a> {
    named: Vec<&'a [u8]>,
}

/// The `Connection` lists of `fields`.
pub fn connection_lists(fields: RequestFields<'_>) -> ConnectionLists<'_> {
    let mut named: Vec<&[u8]> = fields.get_all("connection").flat_map(tokens).collect();
    named.sort_unstable_by(|a, b| by_name(a, b));
    named.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    ConnectionLists { named }
}

/// Field names in order of length, then of their bytes in lowercase.
fn by_name(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| {
        a.iter()
            .map(u8::to_ascii_lowercase)
            .cmp(b.iter().map(u8::to_ascii_lowercase))
    })
}

impl ConnectionLists<'_> {
    /// Whether `name` (any case) is listed.
    pub fn names(&self, name: &[u8]) -> bool {
        !self.named.is_empty()
            && self
                .named
                .binary_search_by(|listed| by_name(listed, name))
                .is_ok()
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
pub fn upgrade_offer(fields: RequestFields<'_>) -> Option<UpgradeOffer> {
    let upgrade = fields.get("upgrade")?;
    let asked = fields
        .get_all("connection")
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(b"upgrade")));
    if !asked {
        return None;
    }
    let mut offer = Vec::with_capacity(upgrade.len());
    for value in fields.get_all("upgrade") {
        for protocol in tokens(value) {
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
    let key = fields.get("sec-websocket-key");
    Some(UpgradeOffer {
        protocols: Bytes::from(offer),
        accept: key.filter(|_| websocket).map(websocket_accept),
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
pub fn has_unsupported_transfer_coding(fields: RequestFields<'_>) -> bool {
    let mut codings = fields.get_all("transfer-encoding").flat_map(tokens);
    match codings.next() {
        None => false,
        Some(first) => !first.eq_ignore_ascii_case(b"chunked") || codings.next().is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn only_chunked_alone_is_a_supported_transfer_coding() {
        let coded = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            has_unsupported_transfer_coding(RequestFields::Map(&h))
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
        let offer =
            |fields| upgrade_offer(RequestFields::Map(&headers(fields))).map(|o| o.protocols);
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
        let ws = upgrade_offer(RequestFields::Map(&headers(&[
            ("connection", "upgrade"),
            ("upgrade", "WebSocket"),
            key,
        ])))
        .expect("an offer");
        assert_eq!(
            ws.accept.as_deref(),
            Some(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])
        );
        let other = upgrade_offer(RequestFields::Map(&headers(&[
            ("connection", "upgrade"),
            ("upgrade", "foo"),
            key,
        ])))
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
