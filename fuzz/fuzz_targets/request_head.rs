//! The client side's request-head parser, and the head evenkeel then sends a backend.
//!
//! Properties, for any bytes a client may send:
//! - a head is refused, incomplete, or parsed within the bytes given, at the point
//!   where httparse (the reference tokenizer) says the head ends;
//! - a parsed request that evenkeel forwards becomes a head that evenkeel's own parser
//!   reads back whole, with the same method, target and body framing, exactly one
//!   framing field of evenkeel's making, none of the client's hop-by-hop fields, and
//!   exactly one non-empty `Host` — the one evenkeel routed by: what the backend reads
//!   is what evenkeel routed and framed (no desync);
//! - an upgrade goes out with no body, `Connection: upgrade` and one `Upgrade` of
//!   evenkeel's making, naming only protocols the client offered and never `h2c`.
#![no_main]

use evenkeel::fuzzing::{
    forwarded_head, read_request, routing_host, Framing, Read, FORWARDED_TO, HEAD_BYTES_MAX,
    REQUEST_FIELDS_MAX,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Read::Parsed(request, used) = read_request(data) else {
        return;
    };
    assert!(used <= data.len());
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut reference = httparse::Request::new(&mut fields);
    assert_eq!(
        reference.parse(data).ok(),
        Some(httparse::Status::Complete(used)),
        "the head ends where httparse says"
    );
    let Some(head) = forwarded_head(&request) else {
        return;
    };
    let again = match read_request(&head) {
        Read::Parsed(again, len) => {
            assert_eq!(
                len,
                head.len(),
                "the whole forwarded head, no more: {head:?}"
            );
            again
        }
        // evenkeel adds up to four fields (X-Forwarded-*, and Host when the client sent
        // none) and a client address: a head at evenkeel's own limits may leave over them
        // (a backend's limits decide). Counted on the head sent, not guessed.
        Read::Refused(431)
            if sent_fields(&head) > REQUEST_FIELDS_MAX || head.len() > HEAD_BYTES_MAX =>
        {
            return
        }
        other => panic!("evenkeel cannot read the head it sends: {other:?}\n{head:?}"),
    };
    assert_eq!(again.parts.method, request.parts.method);
    // Origin-form, as the backend gets it: an absolute-form target's path and query
    // ("/" when it has no path).
    let target = |r: &evenkeel::fuzzing::ClientRequest| {
        let target = r.parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if target.starts_with('?') {
            format!("/{target}")
        } else {
            target.to_string()
        }
    };
    assert_eq!(target(&again), target(&request));
    let class = |f: Framing| match f {
        Framing::Done => "none".to_string(),
        Framing::Length(n) => format!("length {n}"),
        Framing::Chunked(_) => "chunked".to_string(),
        Framing::Close => "close".to_string(),
    };
    assert_eq!(class(again.framing), class(request.framing), "{head:?}");
    let headers = &again.parts.headers;
    let framing_fields = headers.get_all(http::header::CONTENT_LENGTH).iter().count()
        + headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .count();
    assert!(framing_fields <= 1, "{head:?}");
    let upgrade = headers.get(http::header::UPGRADE);
    if let Some(upgrade) = upgrade {
        assert_eq!(
            class(request.framing),
            "none",
            "an upgrade with a body: {head:?}"
        );
        let connections: Vec<_> = headers.get_all(http::header::CONNECTION).iter().collect();
        assert_eq!(connections, ["upgrade"], "{head:?}");
        assert_eq!(headers.get_all(http::header::UPGRADE).iter().count(), 1);
        let offered: Vec<Vec<u8>> = request
            .parts
            .headers
            .get_all(http::header::UPGRADE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|t| t.trim_ascii().to_ascii_lowercase())
            .collect();
        for protocol in upgrade.as_bytes().split(|&b| b == b',') {
            let protocol = protocol.trim_ascii().to_ascii_lowercase();
            assert!(!protocol.is_empty(), "{head:?}");
            assert!(
                protocol
                    .iter()
                    .all(|b| b.is_ascii_graphic() && !b",;:=\"()<>@[]{}?\\".contains(b)),
                "not a protocol token: {head:?}"
            );
            let name = protocol.split(|&b| b == b'/').next().unwrap_or_default();
            assert!(
                !matches!(name, b"h2c" | b"h2" | b"http" | b"tls"),
                "a protocol that carries HTTP forwarded: {head:?}"
            );
            assert!(offered.contains(&protocol), "not offered: {head:?}");
        }
    }
    for hop in [
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
    ] {
        if upgrade.is_some() && (hop == "connection" || hop == "upgrade") {
            continue;
        }
        assert!(!headers.contains_key(hop), "{hop} forwarded: {head:?}");
    }
    // Exactly one Host: the one the request was routed by, else the backend's address
    // (an HTTP/1.1 request must have one, and an empty one is refused by NGINX).
    let hosts: Vec<_> = headers.get_all(http::header::HOST).iter().collect();
    assert_eq!(hosts.len(), 1, "{head:?}");
    assert!(!hosts[0].is_empty(), "an empty Host: {head:?}");
    let expected = routing_host(&request).unwrap_or_else(|| FORWARDED_TO.as_bytes().to_vec());
    assert_eq!(hosts[0].as_bytes(), &expected[..], "{head:?}");
    assert_eq!(
        headers.contains_key("x-forwarded-host"),
        routing_host(&request).is_some()
    );
});

/// How many fields a head evenkeel sent has, by httparse with room for them all.
fn sent_fields(head: &[u8]) -> usize {
    let mut fields = [httparse::EMPTY_HEADER; 4 * REQUEST_FIELDS_MAX];
    let mut sent = httparse::Request::new(&mut fields);
    match sent.parse(head) {
        Ok(httparse::Status::Complete(_)) => sent.headers.len(),
        _ => 0,
    }
}
