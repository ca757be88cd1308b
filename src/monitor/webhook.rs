//! Alert delivery to `alerts.webhook`: alarms and the guard's rollbacks, POSTed as JSON.
//!
//! Sending never blocks or slows anything: events go into a bounded queue
//! ([`QUEUE`] entries); when it is full the event is dropped and counted. A single
//! task delivers the queue in order, retrying each alert with exponential backoff
//! (0.2 s doubling to 5 s, [`ATTEMPTS`] tries), so a webhook that is down costs a
//! bounded amount of memory and one connection attempt at a time.
//!
//! An `https://` webhook is verified against the system's roots
//! ([`crate::config::backend_tls::system_roots`]), with its host as the server name; one
//! client config per webhook, so deliveries resume their TLS session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use crate::config::backend_tls;
use crate::health::Event;

/// Alerts waiting for delivery at most.
pub const QUEUE: usize = 64;
/// Tries per alert.
pub const ATTEMPTS: u32 = 5;

/// Delivery counters.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Alerts delivered (2xx).
    pub delivered: AtomicU64,
    /// Alerts dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Alerts given up after every try failed.
    pub failed: AtomicU64,
}

/// The sending side of the queue.
#[derive(Debug, Clone)]
pub struct Webhook {
    queue: mpsc::Sender<Event>,
    /// Counters.
    pub stats: Arc<WebhookStats>,
}

impl Webhook {
    /// Starts the delivery task for `url` (`http://host[:port]/path` or `https://...`)
    /// on the current runtime.
    pub fn start(url: &str, stats: Arc<WebhookStats>) -> Result<Webhook, String> {
        let endpoint = Endpoint::parse(url)?;
        let (queue, mut pending) = mpsc::channel::<Event>(QUEUE);
        let task_stats = Arc::clone(&stats);
        tokio::spawn(async move {
            while let Some(event) = pending.recv().await {
                let body = serde_json::to_vec(&serde_json::json!({
                    "source": "evenkeel",
                    "event": event,
                    "text": event.to_string(),
                }))
                .unwrap_or_default();
                let mut backoff = Duration::from_millis(200);
                let mut delivered = false;
                for attempt in 1..=ATTEMPTS {
                    if endpoint.post(body.clone()).await {
                        delivered = true;
                        break;
                    }
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
                let counter = if delivered {
                    &task_stats.delivered
                } else {
                    &task_stats.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Webhook { queue, stats })
    }

    /// Queues `event` for delivery, or drops (and counts) it when the queue is full.
    pub fn send(&self, event: Event) {
        if self.queue.try_send(event).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where alerts go.
struct Endpoint {
    /// Host name or IP (without brackets), to connect to.
    host: String,
    port: u16,
    /// `Host` of the requests.
    authority: http::uri::Authority,
    /// Path and query.
    path: String,
    /// For `https://`: the client config and the server name.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("bad webhook URL {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "webhook {url:?}: only http:// and https:// are supported"
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("webhook {url:?} has no host"))?
            .clone();
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_string();
        let tls = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("webhook {url:?}: {host:?} is no TLS server name: {e}"))?;
            let config = backend_tls::with_roots(Arc::clone(backend_tls::system_roots()));
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Endpoint {
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            authority,
            path: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.to_string()),
            tls,
        })
    }

    /// One POST; true on a 2xx answer within 5 s.
    async fn post(&self, body: Vec<u8>) -> bool {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .ok()?;
            match &self.tls {
                None => self.send(stream, body).await,
                Some((connector, name)) => {
                    let stream = match connector.connect(name.clone(), stream).await {
                        Ok(stream) => stream,
                        Err(error) => {
                            tracing::warn!(%error, host = %self.host, "webhook: TLS handshake failed");
                            return None;
                        }
                    };
                    self.send(stream, body).await
                }
            }
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(5), attempt).await,
            Ok(Some(true))
        )
    }

    /// The request on an open connection: whether the answer was a 2xx.
    async fn send<S>(&self, stream: S, body: Vec<u8>) -> Option<bool>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        let request = Request::post(self.path.as_str())
            .header(header::HOST, self.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        Some(response.status().is_success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_give_their_host_port_and_tls() {
        let https = Endpoint::parse("https://alerts.example.com/hook?team=ops").expect("https");
        assert_eq!(
            (https.host.as_str(), https.port),
            ("alerts.example.com", 443)
        );
        assert_eq!(https.path, "/hook?team=ops");
        assert!(https.tls.is_some());
        let http = Endpoint::parse("http://[::1]:9099/hook").expect("http");
        assert_eq!((http.host.as_str(), http.port), ("::1", 9099));
        assert_eq!(http.authority.as_str(), "[::1]:9099");
        assert!(http.tls.is_none());
        assert_eq!(Endpoint::parse("http://127.0.0.1/").expect("http").port, 80);
        assert!(Endpoint::parse("ftp://127.0.0.1/").is_err());
    }
}
