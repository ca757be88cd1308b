//! gRPC through evenkeel: how its requests are told apart, what their deadline is, how
//! evenkeel's own errors reach a gRPC client, and how a gRPC status counts for the
//! monitor.
//!
//! A gRPC request is an HTTP/2 request whose `content-type` is `application/grpc`
//! (alone, or with `+proto`, `+json`, `;...`). Its answers carry their outcome in the
//! `grpc-status` trailer (or, for a response with no messages, in the headers:
//! "Trailers-Only"), with HTTP status 200 either way ([the gRPC over HTTP/2
//! spec](https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md)).
//!
//! - **Evenkeel's own errors** are Trailers-Only responses a gRPC library understands:
//!   no usable backend or a broken backend → `UNAVAILABLE` (14), a backend too slow →
//!   `DEADLINE_EXCEEDED` (4), every backend at its limit → `RESOURCE_EXHAUSTED` (8),
//!   no route → `UNIMPLEMENTED` (12). A plain-text 503 would reach the application as
//!   `UNAVAILABLE` anyway, but without evenkeel's message.
//! - **Deadline**: `grpc-timeout` (the client's deadline, sent with the request) is the
//!   request's deadline when it is shorter than the pool's `timeouts.request`.
//! - **Outcome**: a gRPC answer counts for the monitor, the guard and passive health
//!   with the HTTP status the gRPC spec maps its `grpc-status` to (`UNAVAILABLE` → 503,
//!   `INTERNAL` → 500, `NOT_FOUND` → 404...), recorded when the status arrives — the
//!   end of the stream. So a backend failing its calls is an error as a 5xx is, and a
//!   lookup that finds nothing is not: counting every non-OK status as an error would
//!   make a service whose normal answers include `NOT_FOUND` look broken, and the guard
//!   roll back every change to it.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::errors::Refusal;

/// `grpc-status`.
pub const GRPC_STATUS: header::HeaderName = header::HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub const GRPC_MESSAGE: header::HeaderName = header::HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub const GRPC_TIMEOUT: header::HeaderName = header::HeaderName::from_static("grpc-timeout");

/// gRPC status codes evenkeel answers with itself.
pub mod code {
    /// The call succeeded.
    pub const OK: u32 = 0;
    /// The deadline passed first.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// A limit was reached.
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// Nothing serves this method.
    pub const UNIMPLEMENTED: u32 = 12;
    /// Something broke.
    pub const INTERNAL: u32 = 13;
    /// The service cannot be reached now; the call may be retried.
    pub const UNAVAILABLE: u32 = 14;
}

/// Whether the request (or response) with these headers is gRPC.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// The request's `grpc-timeout`: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`); `None` when absent or malformed (then the pool's timeout alone applies).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `grpc-status` in `headers` (trailers, or the headers of a Trailers-Only
/// answer), if there is a valid one.
pub fn status(headers: &HeaderMap) -> Option<u32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// The HTTP status a gRPC status stands for, as the gRPC spec and Envoy map them: what
/// the monitor counts (see the module docs). Unknown codes count as 500.
pub fn http_status(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// The gRPC status evenkeel answers `refusal` with.
pub fn refusal_code(refusal: Refusal) -> u32 {
    match refusal {
        Refusal::NoRoute | Refusal::Connect | Refusal::UpgradeWithBody => code::UNIMPLEMENTED,
        Refusal::TransferCoding | Refusal::UpgradeToHttp2 => code::UNIMPLEMENTED,
        Refusal::BadTarget => code::INTERNAL,
        Refusal::NoBackend | Refusal::BadGateway | Refusal::Misdirected => code::UNAVAILABLE,
        Refusal::Overloaded | Refusal::TooManyTunnels => code::RESOURCE_EXHAUSTED,
        Refusal::Timeout | Refusal::ClientTimeout => code::DEADLINE_EXCEEDED,
        Refusal::BadRequestBody | Refusal::NoHostToRedirect | Refusal::HostWithUserinfo => {
            code::INTERNAL
        }
    }
}

/// `refusal` as a gRPC client understands it: a Trailers-Only response (status 200,
/// `content-type: application/grpc`, `grpc-status` and `grpc-message`, no body).
pub fn refusal_response(refusal: Refusal, pool: Option<&str>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(refusal_code(refusal)));
    let message = percent_encode(&format!("evenkeel: {}", refusal.message(pool)));
    if let Ok(message) = HeaderValue::from_str(&message) {
        headers.insert(GRPC_MESSAGE, message);
    }
    response
}

/// `grpc-message`'s encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn grpc_is_told_apart_by_its_content_type() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;charset=x",
        ] {
            assert!(is_grpc(&headers("content-type", yes)), "{yes}");
        }
        for no in ["application/grpc-web", "application/grpcx", "text/plain"] {
            assert!(!is_grpc(&headers("content-type", no)), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeout_reads_every_unit_and_refuses_malformed_values() {
        let t = |v| timeout(&headers("grpc-timeout", v));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("1S"), Some(Duration::from_secs(1)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S", " 1S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn server_side_grpc_failures_count_as_5xx_and_client_side_ones_do_not() {
        for code in [2, 4, 12, 13, 14, 15, 99] {
            assert!(http_status(code) >= 500, "{code}");
        }
        for code in [0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 16] {
            assert!(http_status(code) < 500, "{code}");
        }
    }

    #[test]
    fn a_refusal_is_a_trailers_only_answer_with_an_encoded_message() {
        let response = refusal_response(Refusal::NoBackend, Some("grpc-ü"));
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(h[GRPC_STATUS], "14");
        let message = h[GRPC_MESSAGE].to_str().unwrap_or_default();
        assert!(message.contains("pool \"grpc-%C3%BC\""), "{message}");
        assert!(message.contains("no usable backend"), "{message}");
        assert_eq!(refusal_code(Refusal::Timeout), code::DEADLINE_EXCEEDED);
        assert_eq!(refusal_code(Refusal::Overloaded), code::RESOURCE_EXHAUSTED);
    }
}
