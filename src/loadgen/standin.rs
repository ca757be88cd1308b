//! Stand-in backends: small HTTP servers that answer like a real backend with a set
//! latency, for `demo` and (later) `preflight`.
//!
//! Each runs on a thread of its own with a `current_thread` runtime, so it costs the
//! proxy under test no worker time. It answers every request with 200 after its
//! latency, a body naming it and an `X-Backend` header, reads and discards request
//! bodies, counts the requests it served, and stops when dropped. It speaks HTTP/1.1,
//! or HTTP/2 in clear text (prior knowledge) for a pool that speaks HTTP/2 to its
//! backends.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

/// A running stand-in backend.
pub struct StandIn {
    /// Its name (the `X-Backend` header it sends).
    pub name: String,
    /// The address it listens on.
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
}

impl StandIn {
    /// Starts a stand-in called `name` on 127.0.0.1 (any free port) answering after
    /// `latency`, in HTTP/2 (h2c) when `http2`.
    pub fn start(name: &str, latency: Duration, http2: bool) -> io::Result<StandIn> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let header = HeaderValue::from_str(name).map_err(io::Error::other)?;
        let body = Bytes::from(format!("hello from {name}\n"));
        let counter = Arc::clone(&requests);
        std::thread::Builder::new()
            .name(format!("standin-{name}"))
            .spawn(move || {
                rt.block_on(serve(
                    listener, latency, header, body, counter, stopped, http2,
                ))
            })?;
        Ok(StandIn {
            name: name.to_string(),
            addr,
            requests,
            stop,
        })
    }

    /// Requests it has answered.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

async fn serve(
    listener: std::net::TcpListener,
    latency: Duration,
    header: HeaderValue,
    body: Bytes,
    requests: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
    http2: bool,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (header, body, requests) = (header.clone(), body.clone(), Arc::clone(&requests));
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (header, body, requests) =
                    (header.clone(), body.clone(), Arc::clone(&requests));
                async move {
                    // Read the whole request body, as a real backend would.
                    let _ = request.into_body().collect().await;
                    tokio::time::sleep(latency).await;
                    requests.fetch_add(1, Ordering::Relaxed);
                    let mut response = Response::new(Full::new(body));
                    response.headers_mut().insert("x-backend", header);
                    Ok::<_, Infallible>(response)
                }
            });
            let io = TokioIo::new(stream);
            if http2 {
                let connection =
                    http2::Builder::new(TokioExecutor::new()).serve_connection(io, service);
                tokio::select! {
                    _ = connection => {}
                    _ = stopped.wait_for(|s| *s) => {}
                }
            } else {
                let connection = http1::Builder::new().serve_connection(io, service);
                tokio::select! {
                    _ = connection => {}
                    _ = stopped.wait_for(|s| *s) => {}
                }
            }
        });
    }
}
