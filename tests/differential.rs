//! Differential test of evenkeel's own HTTP/1 request reader against a reference:
//! hyper's HTTP/1 server, fed the same bytes over an in-memory stream.
//!
//! Requests are generated from parts that include the shapes request smuggling is
//! made of: two lengths, a length beside chunked, obfuscated codings, folded lines,
//! bare CR and LF, odd chunk sizes and extensions, and a second request behind the
//! first. The property: every request evenkeel reads, the reference reads too, the
//! same (method, target, body), and in the same place — evenkeel may refuse what the
//! reference takes (it is the stricter of the two by design), never the reverse. A
//! request evenkeel reads where the reference reads none, or a different body, is
//! the disagreement a backend behind evenkeel could be desynchronised by.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use evenkeel::fuzzing::{decode_body, read_request, Framing, Read};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;

/// A request as a reader saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    body: Vec<u8>,
}

/// The requests evenkeel reads off `bytes`, one after the other, until it refuses one,
/// one is incomplete, or one ends the connection.
fn evenkeel_reads(bytes: &[u8]) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut rest = bytes;
    loop {
        let Read::Parsed(request, used) = read_request(rest) else {
            return seen;
        };
        let after = &rest[used..];
        let (body, left) = match request.framing {
            Framing::Done => (Vec::new(), after.len()),
            framing => {
                let decoded = decode_body(framing, &[after]);
                match decoded.body {
                    Ok(body) => (body, decoded.rest),
                    Err(_) => return seen,
                }
            }
        };
        seen.push(Seen {
            method: request.parts.method.to_string(),
            target: request.parts.uri.to_string(),
            body,
        });
        if !request.keep_alive {
            return seen;
        }
        rest = &after[after.len() - left..];
    }
}

/// The requests hyper's HTTP/1 server reads off `bytes`, answering each with 200.
fn reference_reads(bytes: &[u8]) -> Vec<Seen> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bytes = bytes.to_vec();
    let collected = Arc::clone(&seen);
    runtime.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let service = hyper::service::service_fn(move |request: http::Request<_>| {
            let collected = Arc::clone(&collected);
            async move {
                let (parts, body) = request.into_parts();
                let body = match BodyExt::collect(body).await {
                    Ok(body) => body.to_bytes().to_vec(),
                    Err(_) => {
                        return Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                    }
                };
                collected.lock().expect("lock").push(Seen {
                    method: parts.method.to_string(),
                    target: parts.uri.to_string(),
                    body,
                });
                Ok(http::Response::new(Full::new(Bytes::new())))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let feed = async move {
            let _ = client.write_all(&bytes).await;
            let _ = client.shutdown().await;
            // Read the answers, so the server never waits on a full pipe.
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            tokio::join!(connection, feed)
        })
        .await;
    });
    let seen = seen.lock().expect("lock").clone();
    seen
}

/// A line end: CRLF mostly, sometimes a bare LF or CR (which evenkeel refuses).
fn line_end() -> impl Strategy<Value = &'static str> {
    prop_oneof![20 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r")]
}

/// Framing fields, plain and obfuscated.
fn framing_field() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("Content-Length"),
        Just("content-length"),
        Just("Content-Length "),
        Just("Content_Length"),
        Just("Transfer-Encoding"),
        Just("transfer-encoding"),
        Just("Transfer-Encoding "),
        Just("Transfer_Encoding"),
    ];
    let value = prop_oneof![
        Just("0"),
        Just("5"),
        Just("05"),
        Just(" 5"),
        Just("5 "),
        Just("+5"),
        Just("-1"),
        Just("5,5"),
        Just("5, 6"),
        Just("18446744073709551616"),
        Just("chunked"),
        Just("Chunked"),
        Just("chunked "),
        Just(" chunked"),
        Just("\tchunked"),
        Just("gzip, chunked"),
        Just("chunked, gzip"),
        Just("chunked, chunked"),
        Just("identity"),
        Just("xchunked"),
        Just("chunked;q=1"),
    ];
    (name, value).prop_map(|(n, v)| format!("{n}:{v}"))
}

/// Any other field, including a folded one and a Host.
fn other_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Host: a.example".to_string()),
        Just("Host: b.example".to_string()),
        Just("Connection: close".to_string()),
        Just("Connection: keep-alive".to_string()),
        Just("Expect: 100-continue".to_string()),
        Just("X-Folded: a\r\n b".to_string()),
        Just("X-Tab:\tvalue".to_string()),
        Just(" Leading: space".to_string()),
        Just("X-Empty:".to_string()),
        Just("Bad Name: x".to_string()),
    ]
}

/// A body: raw bytes, or a chunked body with odd sizes, extensions and trailers.
fn body() -> impl Strategy<Value = String> {
    // A size line for the 5-byte chunk "hello", plain or odd.
    let size = prop_oneof![
        6 => Just("5"),
        1 => Just("05"),
        1 => Just("5;ext=1"),
        1 => Just("5 ;ext"),
        1 => Just("5\t"),
        1 => Just("0x5"),
        1 => Just("ffffffffffffffffff"),
        1 => Just("-1"),
        1 => Just(""),
        1 => Just("5;a=\"b\nc\""),
        1 => Just("5;a\rb"),
    ];
    let chunk = (size, line_end(), line_end())
        .prop_map(|(size, size_end, data_end)| format!("{size}{size_end}hello{data_end}"));
    let trailer = prop_oneof![
        Just("X-T: 1"),
        Just("bad trailer"),
        Just("\rX-T: 1"),
        Just("X-T: a\rb"),
    ];
    let trailers = proptest::collection::vec((trailer, line_end()), 0..3).prop_map(|t| {
        t.into_iter()
            .map(|(field, end)| format!("{field}{end}"))
            .collect::<String>()
    });
    let chunked = (
        proptest::collection::vec(chunk, 1..4),
        line_end(),
        trailers,
        line_end(),
    )
        .prop_map(|(chunks, last_end, trailers, end)| {
            format!("{}0{last_end}{trailers}{end}", chunks.concat())
        });
    prop_oneof![
        1 => Just(String::new()),
        1 => Just("hello".to_string()),
        1 => Just("hello world".to_string()),
        6 => chunked,
    ]
}

/// The framing a request declares: mostly coherent (a chunked body under
/// `Transfer-Encoding: chunked`, a length that fits), sometimes generated field by
/// field from plain and obfuscated spellings.
fn framing() -> impl Strategy<Value = (Vec<String>, String)> {
    let chunked_fields = prop_oneof![
        Just(vec!["Transfer-Encoding: chunked".to_string()]),
        Just(vec!["transfer-encoding: Chunked".to_string()]),
        Just(vec!["Transfer-Encoding: gzip, chunked".to_string()]),
        Just(vec![
            "Transfer-Encoding: chunked".to_string(),
            "Content-Length: 3".to_string()
        ]),
        Just(vec![
            "Transfer-Encoding: chunked".to_string(),
            "Transfer-Encoding: chunked".to_string()
        ]),
    ];
    prop_oneof![
        3 => (chunked_fields, body()),
        1 => Just((vec!["Content-Length: 5".to_string()], "hello".to_string())),
        2 => (proptest::collection::vec(framing_field(), 0..3), body()),
    ]
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("HEAD")];
    let target = prop_oneof![
        6 => Just("/a"),
        2 => Just("/a?b=c"),
        2 => Just("http://a.example/x"),
        1 => Just("http://a.example?q"),
        1 => Just("?q"),
        1 => Just("*"),
        1 => Just("a.example:443"),
        1 => Just("a"),
    ];
    let version = prop_oneof![4 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0")];
    let others = proptest::collection::vec(other_field(), 0..3);
    let ends = proptest::collection::vec(line_end(), 6);
    (method, target, version, framing(), others, ends).prop_map(
        |(method, target, version, (framing, body), others, ends)| {
            let mut out = format!("{method} {target} {version}{}", ends[0]);
            let mut fields = framing;
            fields.extend(others);
            // Most requests have a Host, as HTTP/1.1 requires (HTTP/1.0 ones only some).
            if !fields.iter().any(|f| f.starts_with("Host"))
                && (version == "HTTP/1.1" || method != "HEAD")
            {
                out.push_str("Host: a.example\r\n");
            }
            for (i, field) in fields.iter().enumerate() {
                out.push_str(field);
                out.push_str(ends[(i + 1) % ends.len()]);
            }
            out.push_str("\r\n");
            out.push_str(&body);
            out.push_str("GET /second HTTP/1.1\r\nHost: a.example\r\n\r\n");
            out.into_bytes()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn evenkeel_reads_no_request_the_reference_reads_differently(bytes in request()) {
        let ours = evenkeel_reads(&bytes);
        let reference = reference_reads(&bytes);
        prop_assert!(
            ours.len() <= reference.len() && ours[..] == reference[..ours.len()],
            "input {:?}\nevenkeel read {:?}\nhyper read {:?}",
            String::from_utf8_lossy(&bytes),
            ours,
            reference
        );
    }
}

/// The harness itself: hyper and evenkeel agree on plain pipelined requests, and the
/// comparison sees a difference when there is one.
#[test]
fn the_reference_reads_plain_requests_as_evenkeel_does() {
    let bytes = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    let ours = evenkeel_reads(bytes);
    assert_eq!(ours.len(), 2);
    assert_eq!(ours[0].body, b"hello");
    assert_eq!(ours, reference_reads(bytes));
    let chunked =
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(evenkeel_reads(chunked), reference_reads(chunked));
}

/// Known smuggling shapes, each followed by a request that must not be read as a
/// second one: evenkeel refuses every one of them outright.
#[test]
fn known_smuggling_shapes_are_refused() {
    let chunked = "Transfer-Encoding: chunked\r\n";
    let shapes = [
        // A bare LF inside a chunk extension ends the size line for some readers.
        format!("{chunked}\r\n5;a=\"b\nc\"\r\nhello\r\n0\r\n\r\n"),
        // A bare LF as the size line's end.
        format!("{chunked}\r\n5\nhello\r\n0\r\n\r\n"),
        // A bare CR in a trailer line.
        format!("{chunked}\r\n5\r\nhello\r\n0\r\n\rX: y\r\n\r\n"),
        // Two lengths.
        "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_string(),
        "Content-Length: 5, 5\r\n\r\nhello".to_string(),
        // A coding after chunked: the body ends with the connection for some readers.
        "Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_string(),
        // Framing fields spelt with '_'.
        "Content_Length: 5\r\n\r\nhello".to_string(),
        "Transfer_Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_string(),
        // A folded framing field.
        "Transfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_string(),
        // A chunk size past 64 bits.
        format!("{chunked}\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"),
        // No hex digit before the extension.
        format!("{chunked}\r\n;5\r\nhello\r\n0\r\n\r\n"),
    ];
    for shape in shapes {
        let bytes = format!(
            "POST /a HTTP/1.1\r\nHost: a\r\n{shape}GET /second HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let ours = evenkeel_reads(bytes.as_bytes());
        assert!(
            ours.is_empty(),
            "{shape:?}: evenkeel read {ours:?} (hyper read {:?})",
            reference_reads(bytes.as_bytes())
        );
    }
}
