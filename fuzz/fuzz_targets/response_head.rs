//! The backend side's response-head parser, and the body after it.
//!
//! Properties, for any bytes a backend may send (the first input byte says whether the
//! request was a `HEAD`, and whether it offered an upgrade to `websocket`, with a key
//! or without):
//! - a parsed head ends where httparse says the last (non-1xx) head ends (a 101 ends
//!   it only for a request that offered an upgrade);
//! - a 101 is only ever taken for a request that offered an upgrade, with one
//!   `Upgrade` field that names only `websocket`, no body, and no reuse; with a key,
//!   only with one `Sec-WebSocket-Accept`, the one that answers it;
//! - the fields passed on to the client carry no hop-by-hop field (but a 101's
//!   `Upgrade`) and no framing
//!   field that disagrees with how evenkeel frames the body for the client
//!   (`Transfer-Encoding` never; `Content-Length` only with a length-framed or bodiless
//!   response);
//! - the body decodes the same whether it arrives in one read or byte by byte, and
//!   ends at the same place (the connection's next response is not misread); a body
//!   refused one way is refused the other way too.
#![no_main]

use evenkeel::fuzzing::{decode_body, read_response, websocket_offer, Framing, Read};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let is_head = flags & 1 == 1;
    let offer = (flags & 2 == 2).then(|| websocket_offer(flags & 4 == 4));
    let offered = offer.as_ref();
    let Read::Parsed(response, used) = read_response(bytes, is_head, offered) else {
        return;
    };
    let switched = response.status == 101;
    if switched {
        assert!(offered.is_some(), "a 101 taken with no upgrade asked");
        assert_eq!(response.framing, Framing::Done);
        assert!(!response.keep_alive);
        let upgrades: Vec<&Vec<u8>> = response
            .fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"upgrade"))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(upgrades.len(), 1, "one Upgrade passed on with a 101");
        if flags & 4 == 4 {
            let accepts: Vec<&[u8]> = response
                .fields
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"sec-websocket-accept"))
                .map(|(_, v)| v.trim_ascii())
                .collect();
            assert_eq!(accepts, [&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..]]);
        }
        for protocol in upgrades[0].split(|&b| b == b',') {
            let protocol = protocol.trim_ascii();
            assert!(
                protocol.is_empty() || protocol.eq_ignore_ascii_case(b"websocket"),
                "a 101 to {:?}",
                String::from_utf8_lossy(protocol)
            );
        }
    }
    assert!(used <= bytes.len());
    // httparse, skipping 1xx heads as evenkeel does.
    let mut at = 0;
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut reference = httparse::Response::new(&mut fields);
        match reference.parse(&bytes[at..]) {
            Ok(httparse::Status::Complete(len)) => {
                let code = reference.code.unwrap_or(0);
                at += len;
                if !(100..200).contains(&code) || (code == 101 && offered.is_some()) {
                    assert_eq!(code, response.status);
                    break;
                }
            }
            other => panic!("evenkeel parsed what httparse did not: {other:?}"),
        }
    }
    assert_eq!(at, used, "the head ends where httparse says");
    for (name, _) in &response.fields {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if switched && name == "upgrade" {
            continue;
        }
        assert!(
            !matches!(
                name.as_str(),
                "connection"
                    | "keep-alive"
                    | "transfer-encoding"
                    | "upgrade"
                    | "te"
                    | "trailer"
                    | "proxy-connection"
            ),
            "{name} passed on"
        );
        if name == "content-length" {
            assert!(
                matches!(response.framing, Framing::Length(_) | Framing::Done),
                "a Content-Length passed on with {:?}",
                response.framing
            );
        }
    }
    let body = &bytes[used..];
    let whole = decode_body(response.framing, &[body]);
    let bytewise: Vec<&[u8]> = body.chunks(1).collect();
    let split = decode_body(response.framing, &bytewise);
    // Both errors (of whatever kind: the connection is dropped either way), or the same
    // body ending at the same place.
    if whole.body.is_ok() || split.body.is_ok() {
        assert_eq!(whole, split, "the body depends on how it was read");
    }
});
