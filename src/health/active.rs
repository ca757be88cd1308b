//! Active health probes: an HTTP request (method, path, `Host`, accepted statuses) or
//! a TCP connect, on a new connection each time, within the check's timeout. In a pool
//! with `tls` the probe goes over TLS like its requests (same client config, server
//! name and verification; sessions resume), and a `tcp` probe is the connect and the
//! TLS handshake: a backend whose certificate fails verification fails its probes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{HealthCheck, Probe, TlsTarget};

/// Runs one probe of the backend at `addr` (written `address` in the config), over TLS
/// with `tls`. `Ok` carries what passed (`status 200`, `connected`); `Err` what failed.
pub async fn probe(
    check: &HealthCheck,
    addr: SocketAddr,
    address: &str,
    tls: Option<&Arc<TlsTarget>>,
) -> Result<String, String> {
    match tokio::time::timeout(check.timeout, run(check, addr, address, tls)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

async fn run(
    check: &HealthCheck,
    addr: SocketAddr,
    address: &str,
    tls: Option<&Arc<TlsTarget>>,
) -> Result<String, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let Some(tls) = tls else {
        return exchange(check, address, stream).await;
    };
    let stream = TlsConnector::from(Arc::clone(&tls.client))
        .connect(tls.server_name.clone(), stream)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    // The Host a virtual-hosting backend expects is the name the handshake sent.
    exchange(check, tls.host(address), stream).await
}

/// The probe's request on an open connection (nothing more for a `tcp` probe), with
/// `Host: default_host` unless the check names one.
async fn exchange<S>(check: &HealthCheck, default_host: &str, stream: S) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
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
    let host = HeaderValue::from_str(host.as_deref().unwrap_or(default_host))
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
