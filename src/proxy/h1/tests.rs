//! The backend side's suite: request encoding, and exchanges with backends on
//! 127.0.0.1 that answer with bytes written by hand (chunked and length-framed bodies on
//! one connection, interim heads, truncation, bodiless responses, stray bytes). The
//! helpers are shared with [`crate::proxy::transport`]'s tests.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{
    encode, BodyFraming, Connection, Error, Framing, Limits, Outgoing, Progress, ResponseHead,
    Sender,
};
use crate::proxy::headers::RequestFields;
use crate::proxy::transport::Transport;
use crate::proxy::upstream::Counted;

fn parts(build: http::request::Builder) -> request::Parts {
    build.body(()).expect("request").into_parts().0
}

fn text(out: &Outgoing) -> String {
    String::from_utf8(out.head.to_vec()).expect("ascii")
}

#[test]
fn the_head_drops_hop_by_hop_fields_and_adds_forwarded_ones() {
    let request = parts(
        http::Request::get("http://shop.example/cart?x=1")
            .header("host", "shop.example")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("expect", "100-continue")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-for", "10.0.0.2")
            .header("x-forwarded-proto", "https")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-kept", "yes"),
    );
    let host = HeaderValue::from_static("shop.example");
    let client = HeaderValue::from_static("127.0.0.9");
    let out = encode(
        &request,
        RequestFields::Map(&request.headers),
        BodyFraming::None,
        Sender {
            address: &client,

            https: false,
        },
        Some(&host),
        "10.0.0.9:80",
        None,
    );
    assert_eq!(
        text(&out),
        "GET /cart?x=1 HTTP/1.1\r\ncookie: a=1; b=2\r\nx-kept: yes\r\n\
         host: shop.example\r\nx-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.9\r\n\
         x-forwarded-proto: http\r\nx-forwarded-host: shop.example\r\n\r\n"
    );
}

/// An HTTP/1 client's fields go out as it sent them — its order, its spelling — with
/// no header map between: framing and hop-by-hop fields of any case left out, as well
/// as what `Connection` names, cookies joined, a chunked body's `Content-Length` gone.
#[test]
fn an_http1_clients_fields_go_out_in_its_order_and_spelling_without_what_evenkeel_replaces() {
    let mut read = bytes::BytesMut::from(
        &b"POST /up HTTP/1.1\r\nX-Trace-Id: 7\r\nHOST: shop.example\r\nCONTENT-LENGTH: 5\r\n\
           Cookie: a=1\r\nConnection: X-Secret, Keep-Alive\r\nx-secret: 1\r\n\
           Transfer-encoding: chunked\r\nAccept: */*\r\ncookie: b=2\r\nTE: trailers\r\n\
           X-Forwarded-For: 10.0.0.1\r\n\r\n"[..],
    );
    let head = super::server::parse_head(&mut read, &mut Vec::new())
        .expect("valid")
        .expect("complete");
    assert!(read.is_empty());
    assert!(matches!(head.framing, Framing::Chunked(_)));
    assert!(
        !head.keep_alive,
        "a length beside chunked closes after the response"
    );
    let (request, ()) = head.request.into_parts();
    assert!(request.headers.is_empty(), "no header map is built");
    let fields = RequestFields::Sent(&head.fields);
    let host = crate::proxy::forward::request_host(&request, fields);
    let out = encode(
        &request,
        fields,
        BodyFraming::Chunked,
        Sender {
            address: &HeaderValue::from_static("127.0.0.9"),
            https: false,
        },
        host.as_ref(),
        "10.0.0.9:80",
        None,
    );
    assert_eq!(
        text(&out),
        "POST /up HTTP/1.1\r\nX-Trace-Id: 7\r\nCookie: a=1; b=2\r\nAccept: */*\r\n\
         host: shop.example\r\nx-forwarded-for: 10.0.0.1, 127.0.0.9\r\n\
         x-forwarded-proto: http\r\nx-forwarded-host: shop.example\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
}

/// httparse (which reads every name and value) takes exactly what a header map would:
/// evenkeel builds none for an HTTP/1 request and relies on it. A byte a later
/// httparse let through that `HeaderName` or `HeaderValue` refuse would fail here.
#[test]
fn every_field_byte_httparse_takes_a_header_map_takes_too() {
    for byte in 0..=255u8 {
        let parse = |head: Vec<u8>| {
            super::server::parse_head(&mut bytes::BytesMut::from(&head[..]), &mut Vec::new())
        };
        let mut value = b"GET / HTTP/1.1\r\nHost: a\r\nX: a".to_vec();
        value.extend_from_slice(&[byte, b'a']);
        value.extend_from_slice(b"\r\n\r\n");
        let taken = matches!(parse(value), Ok(Some(_)));
        assert_eq!(
            taken,
            HeaderValue::from_bytes(&[b'a', byte, b'a']).is_ok(),
            "value byte {byte:#04x}"
        );
        if byte == b':' {
            continue; // `X:Y: 1` is a field `X`
        }
        let mut name = b"GET / HTTP/1.1\r\nHost: a\r\nX".to_vec();
        name.extend_from_slice(&[byte, b'Y']);
        name.extend_from_slice(b": 1\r\n\r\n");
        if let Ok(Some(_)) = parse(name) {
            assert!(
                http::header::HeaderName::from_bytes(&[b'X', byte, b'Y']).is_ok(),
                "name byte {byte:#04x}"
            );
        }
    }
}

#[test]
fn an_http2_request_gets_its_host_from_the_authority_and_a_body_without_length_is_chunked() {
    let request = parts(
        http::Request::post("http://api.example:8080/v1")
            .version(http::Version::HTTP_2)
            .header("content-type", "text/plain"),
    );
    let host = HeaderValue::from_static("api.example:8080");
    let client = HeaderValue::from_static("::1");
    let out = encode(
        &request,
        RequestFields::Map(&request.headers),
        BodyFraming::Chunked,
        Sender {
            address: &client,

            https: true,
        },
        Some(&host),
        "b:80",
        None,
    );
    assert!(out.chunked);
    assert_eq!(
        text(&out),
        "POST /v1 HTTP/1.1\r\ncontent-type: text/plain\r\nhost: api.example:8080\r\n\
         x-forwarded-for: ::1\r\nx-forwarded-proto: https\r\n\
         x-forwarded-host: api.example:8080\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

/// Found by fuzz/request_head: an HTTP/1.0 request without `Host` went to backends
/// as an HTTP/1.1 request without one, which a strict backend answers with 400 (and
/// NGINX and Django refuse an empty one too: review).
#[test]
fn a_request_without_host_goes_out_with_the_backends_address_as_host() {
    let request = parts(http::Request::get("/").version(http::Version::HTTP_10));
    let client = HeaderValue::from_static("10.0.0.1");
    let out = encode(
        &request,
        RequestFields::Map(&request.headers),
        BodyFraming::None,
        Sender {
            address: &client,

            https: false,
        },
        None,
        "app1.internal:8080",
        None,
    );
    assert_eq!(
        text(&out),
        "GET / HTTP/1.1\r\nhost: app1.internal:8080\r\nx-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
    );
}

/// A backend on 127.0.0.1 that reads one request head per answer and writes the
/// answers as they are, then closes.
async fn backend(answers: Vec<&'static [u8]>) -> Connection {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        for answer in answers {
            let mut seen = Vec::new();
            while !seen.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                seen.push(byte[0]);
            }
            socket.write_all(answer).await.expect("write");
        }
    });
    let stream = TcpStream::connect(addr).await.expect("connect");
    let open = Arc::new(AtomicU64::new(0));
    Connection::new(Transport::Plain(stream), Counted::new(&open))
}

pub(crate) fn no_body() -> Option<http_body_util::Empty<Bytes>> {
    None
}

/// A connection to a backend that answers `answers`, and the head of its first.
async fn first_answer(answers: Vec<&'static [u8]>) -> (Connection, ResponseHead) {
    let mut connection = backend(answers).await;
    let head = connection
        .exchange(&get(), &mut no_body(), later())
        .await
        .expect("head");
    (connection, head)
}

pub(crate) fn later() -> Limits {
    Limits {
        head: tokio::time::Instant::now() + std::time::Duration::from_secs(5),
        body_idle: std::time::Duration::from_secs(5),
    }
}

pub(crate) fn get() -> Outgoing {
    let request = parts(http::Request::get("/").header("host", "b"));
    encode(
        &request,
        RequestFields::Map(&request.headers),
        BodyFraming::None,
        Sender {
            address: &HeaderValue::from_static("127.0.0.1"),

            https: false,
        },
        Some(&HeaderValue::from_static("b")),
        "b:80",
        None,
    )
}

pub(crate) async fn body(
    connection: &mut Connection,
    mut framing: Framing,
) -> Result<Vec<u8>, Error> {
    let mut all = Vec::new();
    while let Some(piece) = std::future::poll_fn(|cx| connection.poll_body(&mut framing, cx)).await
    {
        all.extend_from_slice(&piece?);
    }
    Ok(all)
}

pub(crate) fn run<F: std::future::Future>(test: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test)
}

#[test]
fn chunked_and_length_responses_follow_each_other_on_one_connection() {
    run(async {
        let mut connection = backend(vec![
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\
              keep-alive: timeout=5\r\nx-backend: b1\r\n\r\n\
              5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope",
        ])
        .await;
        let head = connection
            .exchange(&get(), &mut no_body(), later())
            .await
            .expect("first");
        assert_eq!(head.status, 200);
        assert!(head.keep_alive);
        let headers = head.fields.to_header_map().expect("valid");
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-backend"], "b1");
        assert_eq!(
            body(&mut connection, head.framing).await.expect("body"),
            b"hello, world"
        );
        assert!(connection.is_idle_and_open());

        let head = connection
            .exchange(&get(), &mut no_body(), later())
            .await
            .expect("second");
        assert_eq!(head.status, 404);
        assert_eq!(
            head.fields.to_header_map().expect("valid")["content-length"],
            "4"
        );
        assert_eq!(head.framing, Framing::Length(4));
        assert_eq!(
            body(&mut connection, head.framing).await.expect("body"),
            b"nope"
        );
        // The backend has closed: the connection is not offered again (as soon as
        // the close has arrived: on a loaded machine the kernel may take a while).
        let mut waited = 0;
        while connection.is_idle_and_open() && waited < 100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            waited += 1;
        }
        assert!(!connection.is_idle_and_open());
    });
}

#[test]
fn a_response_without_length_ends_with_the_connection_and_is_not_reused() {
    run(async {
        let (mut connection, head) = first_answer(vec![
            b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil close",
        ])
        .await;
        assert_eq!(head.framing, Framing::Close);
        assert!(!head.keep_alive);
        assert_eq!(
            body(&mut connection, head.framing).await.expect("body"),
            b"until close"
        );
    });
}

#[test]
fn connection_close_and_the_fields_connection_names_are_honoured() {
    run(async {
        let (mut connection, head) = first_answer(vec![b"HTTP/1.1 200 OK\r\nconnection: close, x-hop\r\nx-hop: 1\r\ncontent-length: 2\r\n\r\nok"]).await;
        assert!(!head.keep_alive);
        assert!(!head
            .fields
            .to_header_map()
            .expect("valid")
            .contains_key("x-hop"));
        assert_eq!(
            body(&mut connection, head.framing).await.expect("body"),
            b"ok"
        );
    });
}

#[test]
fn malformed_and_truncated_responses_are_errors_that_say_how_far_they_got() {
    run(async {
        for (answer, expected) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"[..],
                "differing Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                "invalid Content-Length",
            ),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-",
                "closed the connection in the middle",
            ),
        ] {
            let mut connection = backend(vec![answer]).await;
            let failure = connection
                .exchange(&get(), &mut no_body(), later())
                .await
                .err()
                .expect("error");
            assert_eq!(failure.progress, Progress::Answered);
            assert!(
                failure.error.to_string().contains(expected),
                "{}",
                failure.error
            );
        }
        let mut connection = backend(vec![]).await;
        let failure = connection
            .exchange(&get(), &mut no_body(), later())
            .await
            .err()
            .expect("error");
        assert_eq!(failure.progress, Progress::Unanswered);

        let mut connection =
            backend(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]).await;
        let head = connection
            .exchange(&get(), &mut no_body(), later())
            .await
            .expect("head");
        let error = body(&mut connection, head.framing)
            .await
            .expect_err("truncated");
        assert!(matches!(error, Error::Truncated), "{error}");

        let (mut connection, head) = first_answer(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ])
        .await;
        let error = body(&mut connection, head.framing)
            .await
            .expect_err("bad chunk");
        assert!(matches!(error, Error::BadChunk), "{error}");
    });
}

#[test]
fn responses_to_head_and_204_have_no_body_whatever_their_length_says() {
    run(async {
        let mut connection = backend(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let request = parts(http::Request::head("/").header("host", "b"));
        let head_request = encode(
            &request,
            RequestFields::Map(&request.headers),
            BodyFraming::None,
            Sender {
                address: &HeaderValue::from_static("1.2.3.4"),

                https: false,
            },
            None,
            "b:80",
            None,
        );
        let head = connection
            .exchange(&head_request, &mut no_body(), later())
            .await
            .expect("head");
        assert_eq!(head.framing, Framing::Done);
        assert_eq!(
            head.fields.to_header_map().expect("valid")["content-length"],
            "1234"
        );
        let head = connection
            .exchange(&get(), &mut no_body(), later())
            .await
            .expect("204");
        assert_eq!(head.framing, Framing::Done);
        assert!(head.keep_alive);
    });
}

/// Issue 12, defect 4, at its root: stray bytes that reach the kernel after a
/// response, while the worker takes no turn of its event loop (a busy worker),
/// must still be seen at checkout. Going by tokio's readiness missed them.
#[test]
fn stray_bytes_that_came_without_an_event_loop_turn_are_seen_at_checkout() {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let backend = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\r\n\r\n") {
            if socket.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            seen.push(byte[0]);
        }
        let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nEVIL");
        std::thread::sleep(std::time::Duration::from_millis(500));
    });
    run(async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let open = Arc::new(AtomicU64::new(0));
        let mut connection = Connection::new(Transport::Plain(stream), Counted::new(&open));
        let head = connection
            .exchange(&get(), &mut no_body(), later())
            .await
            .expect("head");
        assert_eq!(
            body(&mut connection, head.framing).await.expect("body"),
            b"ok"
        );
        assert!(connection.is_drained());
        // Busy: no turn of the event loop while the stray bytes arrive.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!connection.is_idle_and_open());
    });
    let _ = backend.join();
}

/// An offer of `protocols`, expecting the accept of RFC 6455's example key when
/// `keyed`.
fn offer(protocols: &'static [u8], keyed: bool) -> crate::proxy::headers::UpgradeOffer {
    crate::proxy::headers::UpgradeOffer {
        protocols: Bytes::from_static(protocols),
        accept: keyed.then(|| Bytes::from_static(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")),
    }
}

fn parse_101(
    head: &[u8],
    offered: Option<crate::proxy::headers::UpgradeOffer>,
) -> Result<Option<super::ResponseHead>, Error> {
    let mut read = bytes::BytesMut::from(head);
    let asked = super::Asked {
        is_head: false,
        upgrade: offered.as_ref(),
    };
    super::parse_response(&mut read, &mut Vec::new(), asked)
}

/// A 101 opens a tunnel only where the request asked for one, to a protocol it
/// offered; what it passes on keeps its `Upgrade` and drops the other hop-by-hop
/// fields, and the connection is never reused.
#[test]
fn a_101_is_taken_only_as_the_answer_to_the_upgrade_offered() {
    let good = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade, x-hop\r\n\
                 x-hop: 1\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\ncontent-length: 3\r\n\r\nabc";
    let head = parse_101(good, Some(offer(b"websocket", true)))
        .expect("valid")
        .expect("complete");
    assert_eq!(head.status, 101);
    assert_eq!(head.framing, Framing::Done);
    assert!(!head.keep_alive);
    let names: Vec<String> = head
        .fields
        .iter()
        .map(|(n, _)| String::from_utf8_lossy(n).to_ascii_lowercase())
        .collect();
    assert_eq!(names, ["upgrade", "sec-websocket-accept"]);
    for (what, response, offered) in [
        ("no upgrade asked", &good[..], None),
        (
            "another protocol",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
            Some(offer(b"websocket", false)),
        ),
        (
            "a wrong accept",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            Some(offer(b"websocket", true)),
        ),
        (
            "no accept",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            Some(offer(b"websocket", true)),
        ),
        (
            "two accepts",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            Some(offer(b"websocket", true)),
        ),
        (
            "no Upgrade",
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n",
            Some(offer(b"websocket", false)),
        ),
        (
            "two Upgrade fields",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nUpgrade: websocket\r\n\r\n",
            Some(offer(b"websocket", false)),
        ),
        (
            "HTTP/1.0",
            b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            Some(offer(b"websocket", false)),
        ),
    ] {
        assert!(
            matches!(parse_101(response, offered), Err(Error::Malformed(_))),
            "{what}"
        );
    }
    // A 100 before the 101 is skipped, as any interim response.
    let continued = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    let head = parse_101(continued, Some(offer(b"websocket", false))).expect("valid");
    assert_eq!(
        head.map(|h| h.status),
        Some(http::StatusCode::SWITCHING_PROTOCOLS)
    );
    // A request that offered an upgrade may get an ordinary answer.
    let ordinary = b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n";
    let head = parse_101(ordinary, Some(offer(b"websocket", true))).expect("valid");
    assert_eq!(
        head.map(|h| h.status),
        Some(http::StatusCode::UPGRADE_REQUIRED)
    );
}

/// A body read in more pieces than one vectored write takes beside its head is
/// gathered into one piece (the same bytes), so head and body stay one write; a body
/// in few pieces keeps them, shared, and empty pieces are left out.
#[test]
fn a_body_in_many_pieces_is_gathered_so_it_goes_in_one_write() {
    let request = parts(http::Request::post("/up").header("host", "b"));
    let head = || {
        encode(
            &request,
            RequestFields::Map(&request.headers),
            BodyFraming::Length(2000),
            Sender {
                address: &HeaderValue::from_static("127.0.0.1"),

                https: false,
            },
            Some(&HeaderValue::from_static("b")),
            "b:80",
            None,
        )
    };
    let many: std::collections::VecDeque<Bytes> = (0..20u8)
        .map(|i| Bytes::from(vec![b'a' + i; 100]))
        .collect();
    let gathered = head().with_body(&many);
    assert_eq!(gathered.inline.len(), 1);
    let whole: Vec<u8> = many.iter().flat_map(|p| p.to_vec()).collect();
    assert_eq!(gathered.inline[0], whole);
    let few: std::collections::VecDeque<Bytes> = [
        Bytes::from(vec![b'x'; 1500]),
        Bytes::new(),
        Bytes::from(vec![b'y'; 500]),
    ]
    .into();
    let kept = head().with_body(&few);
    assert_eq!(kept.inline.len(), 2);
    assert_eq!(
        kept.inline[0].as_ptr(),
        few[0].as_ptr(),
        "shared, not copied"
    );
}

/// A body sent with its head ([`Outgoing::with_body`]) reaches the backend as the same
/// bytes a body sent apart would, behind a head that announces its length; a try on a
/// connection the backend has already reset is unwritten (it may go out again, body
/// and all, on another connection).
#[test]
fn a_body_sent_with_its_head_arrives_whole_and_a_reset_connection_leaves_it_unwritten() {
    run(async {
        let request = parts(http::Request::post("/up").header("host", "b"));
        let outgoing = || {
            let pieces: std::collections::VecDeque<Bytes> =
                [Bytes::from_static(b"hello "), Bytes::from_static(b"world")].into();
            encode(
                &request,
                RequestFields::Map(&request.headers),
                BodyFraming::Length(11),
                Sender {
                    address: &HeaderValue::from_static("127.0.0.1"),

                    https: false,
                },
                Some(&HeaderValue::from_static("b")),
                "b:80",
                None,
            )
            .with_body(&pieces)
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            while !seen.ends_with(b"\r\n\r\nhello world") {
                let mut piece = [0u8; 256];
                match socket.read(&mut piece).await.unwrap_or(0) {
                    0 => break,
                    n => seen.extend_from_slice(&piece[..n]),
                }
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("answer");
            String::from_utf8(seen).expect("text")
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut connection = Connection::new(
            Transport::Plain(stream),
            Counted::new(&Arc::new(AtomicU64::new(0))),
        );
        let head = connection
            .exchange(&outgoing(), &mut no_body(), later())
            .await
            .expect("answered");
        assert_eq!(head.status, 200);
        let seen = seen.await.expect("backend");
        assert!(seen.starts_with("POST /up HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("\r\ncontent-length: 11\r\n"), "{seen}");
        assert!(seen.ends_with("\r\n\r\nhello world"), "{seen}");

        // A backend that resets the connection before anything is written.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (socket, _) = listener.accept().await.expect("accept");
        socket2::SockRef::from(&socket)
            .set_linger(Some(std::time::Duration::ZERO))
            .expect("linger");
        drop(socket);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut connection = Connection::new(
            Transport::Plain(stream),
            Counted::new(&Arc::new(AtomicU64::new(0))),
        );
        let Err(failure) = connection
            .exchange(&outgoing(), &mut no_body(), later())
            .await
        else {
            panic!("a reset connection answered");
        };
        assert_eq!(failure.progress, Progress::Unwritten, "{:?}", failure.error);
    });
}
