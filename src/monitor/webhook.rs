//! Alert delivery to `alerts.webhook`: alarms and the guard's rollbacks, POSTed as JSON.
//!
//! Sending never blocks or slows anything: events go into a bounded queue
//! ([`QUEUE`] entries); when it is full the event is dropped and counted. A single
//! task delivers the queue in order, retrying each alert with exponential backoff
//! (0.2 s doubling to 5 s, [`ATTEMPTS`] tries), so a webhook that is down costs a
//! bounded amount of memory and one connection attempt at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

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
    /// Starts the delivery task for `url` (`http://host:port/path`) on the current
    /// runtime.
    pub fn start(url: &str, stats: Arc<WebhookStats>) -> Result<Webhook, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("bad webhook URL {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("webhook {url:?}: only http:// is supported"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("webhook {url:?} has no host"))?
            .clone();
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string());
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
                    if post(&authority, &path, body.clone()).await {
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

/// One POST; true on a 2xx answer within 5 s.
async fn post(authority: &http::uri::Authority, path: &str, body: Vec<u8>) -> bool {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        let request = Request::post(path)
            .header(header::HOST, authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        Some(response.status().is_success())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), attempt).await,
        Ok(Some(true))
    )
}
