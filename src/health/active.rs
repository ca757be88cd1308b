//! Active health probes: an HTTP request (method, path, `Host`, accepted statuses), a
//! gRPC health check, or a TCP connect, on a new connection each time, within the
//! check's timeout. In a pool with `tls` the probe goes over TLS like its requests
//! (same client config, server name and verification; sessions resume), and a `tcp`
//! probe is the connect and the TLS handshake: a backend whose certificate fails
//! verification fails its probes. In a pool that speaks HTTP/2 to its backends
//! (`protocol = "h2c"` or `"h2"`) the HTTP probe is an HTTP/2 request too: a backend
//! that speaks only HTTP/2 would fail an HTTP/1 one.
//!
//! A `grpc` probe calls `grpc.health.v1.Health/Check` (the [gRPC health checking
//! protocol](https://github.com/grpc/grpc/blob/master/doc/health-checking.md)) for the
//! check's `service` and passes when the answer is `SERVING`: `grpc-status` 0 and a
//! `HealthCheckResponse` whose `status` (field 1) is 1. The two messages have one field
//! each, so they are written and read here rather than with a protobuf library.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{HealthCheck, Probe, TlsTarget};

/// Runs one probe of the backend at `addr` (written `address` in the config), over TLS
/// with `tls`, in HTTP/2 when `http2`. `Ok` carries what passed (`status 200`,
/// `connected`, `SERVING`); `Err` what failed.
pub async fn probe(
    check: &HealthCheck,
    addr: SocketAddr,
    address: &str,
    tls: Option<&Arc<TlsTarget>>,
    http2: bool,
) -> Result<String, String> {
    match tokio::time::timeout(check.timeout, run(check, addr, address, tls, http2)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

async fn run(
    check: &HealthCheck,
    addr: SocketAddr,
    address: &str,
    tls: Option<&Arc<TlsTarget>>,
    http2: bool,
) -> Result<String, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let Some(tls) = tls else {
        return exchange(check, address, stream, http2, false).await;
    };
    let stream = TlsConnector::from(Arc::clone(&tls.client))
        .connect(tls.server_name.clone(), stream)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    if http2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("the backend did not agree to HTTP/2 (ALPN h2)".into());
    }
    // The Host a virtual-hosting backend expects is the name the handshake sent.
    exchange(check, tls.host(address), stream, http2, true).await
}

/// The probe's request on an open connection (nothing more for a `tcp` probe), with
/// `Host: default_host` unless the check names one.
async fn exchange<S>(
    check: &HealthCheck,
    default_host: &str,
    stream: S,
    http2: bool,
    tls: bool,
) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (request, expect_status) = match &check.probe {
        Probe::Tcp => return Ok("connected".into()),
        Probe::Http {
            method,
            path,
            host,
            expect_status,
        } => {
            let host = host.as_deref().unwrap_or(default_host);
            let mut request = Request::builder().method(method.as_str());
            request = if http2 {
                let scheme = if tls { "https" } else { "http" };
                request.uri(format!("{scheme}://{host}{path}"))
            } else {
                request
                    .uri(path.as_str())
                    .header(header::HOST, host)
                    .header(header::CONNECTION, "close")
            };
            let request = request
                .header(header::USER_AGENT, "evenkeel-health")
                .body(Full::new(Bytes::new()))
                .map_err(|e| format!("bad probe request: {e}"))?;
            (request, Some(expect_status.clone()))
        }
        Probe::Grpc { service } => {
            let scheme = if tls { "https" } else { "http" };
            let request = Request::builder()
                .method("POST")
                .uri(format!(
                    "{scheme}://{default_host}/grpc.health.v1.Health/Check"
                ))
                .header(header::CONTENT_TYPE, "application/grpc")
                .header(header::TE, "trailers")
                .header(header::USER_AGENT, "evenkeel-health")
                .body(Full::new(check_request(service)))
                .map_err(|e| format!("bad probe request: {e}"))?;
            (request, None)
        }
    };
    let io = TokioIo::new(stream);
    let response = if http2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("handshake failed: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        sender.send_request(request).await
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("handshake failed: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        sender.send_request(request).await
    }
    .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let Some(expect_status) = expect_status else {
        return grpc_verdict(response).await;
    };
    if expect_status.contains(&status) {
        Ok(format!("status {status}"))
    } else {
        Err(format!(
            "status {status}, expected {}-{}",
            expect_status.start(),
            expect_status.end()
        ))
    }
}

/// The body of a `HealthCheckRequest` for `service`: one gRPC message (uncompressed
/// flag, 4-byte length) holding field 1 as a string, left out when empty.
fn check_request(service: &str) -> Bytes {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a varint at the start of `bytes`: the value and its length.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The `status` field of a `HealthCheckResponse` message (0, `UNKNOWN`, when absent);
/// `None` when the message cannot be read.
fn serving_status(mut message: &[u8]) -> Option<u64> {
    let mut status = 0;
    while !message.is_empty() {
        let (tag, n) = varint(message)?;
        message = &message[n..];
        match tag & 7 {
            0 => {
                let (value, n) = varint(message)?;
                message = &message[n..];
                if tag >> 3 == 1 {
                    status = value;
                }
            }
            2 => {
                let (len, n) = varint(message)?;
                let end = n.checked_add(usize::try_from(len).ok()?)?;
                message = message.get(end..)?;
            }
            1 => message = message.get(8..)?,
            5 => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// The name of a `ServingStatus`.
fn serving_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => format!("status {n}"),
    }
}

/// Whether a gRPC health check's answer says `SERVING`.
async fn grpc_verdict(response: http::Response<Incoming>) -> Result<String, String> {
    let http_status = response.status().as_u16();
    if http_status != 200 {
        return Err(format!(
            "status {http_status}, expected a gRPC answer (200)"
        ));
    }
    let in_head = response.headers().get("grpc-status").cloned();
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("the answer broke off: {e}"))?;
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status").cloned())
        .or(in_head);
    let grpc_status = grpc_status
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if grpc_status != "0" {
        return Err(format!("grpc-status {grpc_status}"));
    }
    let body = collected.to_bytes();
    let message = match body.get(..5) {
        Some([0, len @ ..]) => {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            body.get(5..5 + len)
        }
        _ => None,
    }
    .ok_or("a malformed HealthCheckResponse")?;
    match serving_status(message) {
        Some(1) => Ok("SERVING".into()),
        Some(status) => Err(serving_name(status)),
        None => Err("a malformed HealthCheckResponse".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_health_check_request_names_its_service_in_field_one() {
        assert_eq!(&check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &check_request("api")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'p', b'i']
        );
    }

    #[test]
    fn the_serving_status_is_read_from_field_one_among_others() {
        assert_eq!(serving_status(&[0x08, 0x01]), Some(1));
        assert_eq!(serving_status(&[0x08, 0x02]), Some(2));
        assert_eq!(serving_status(&[]), Some(0));
        // An unknown string field 2 before it is skipped.
        assert_eq!(
            serving_status(&[0x12, 0x02, b'h', b'i', 0x08, 0x01]),
            Some(1)
        );
        // Truncated or impossible.
        assert_eq!(serving_status(&[0x08]), None);
        assert_eq!(serving_status(&[0x12, 0x09, b'h']), None);
        assert_eq!(serving_status(&[0x0b]), None);
    }

    proptest::proptest! {
        /// Whatever a backend answers, reading it ends without a panic (a length
        /// beyond the message, a varint of eleven bytes...).
        #[test]
        fn any_bytes_are_read_or_refused_without_a_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = serving_status(&bytes);
            let _ = varint(&bytes);
        }
    }
}
