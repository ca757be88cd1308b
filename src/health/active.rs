//! Active health probes: an HTTP request (method, path, `Host`, accepted statuses) or
//! a TCP connect, on a new connection each time, within the check's timeout.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::{HealthCheck, Probe};

/// Runs one probe of the backend at `addr` (written `address` in the config).
/// `Ok` carries what passed (`status 200`, `connected`); `Err` what failed.
pub async fn probe(check: &HealthCheck, addr: SocketAddr, address: &str) -> Result<String, String> {
    match tokio::time::timeout(check.timeout, run(check, addr, address)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

async fn run(check: &HealthCheck, addr: SocketAddr, address: &str) -> Result<String, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let Probe::Http {
        method,
        path,
        host,
        expect_status,
    } = &check.probe
    else {
        return Ok("connected".into());
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake failed: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let host = HeaderValue::from_str(host.as_deref().unwrap_or(address))
        .map_err(|e| format!("bad host: {e}"))?;
    let request = Request::builder()
        .method(method.as_str())
        .uri(path.as_str())
        .header(header::HOST, host)
        .header(header::USER_AGENT, "evenkeel-health")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad probe request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
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
