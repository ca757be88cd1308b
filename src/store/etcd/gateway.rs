//! A small client for etcd's v3 API through its JSON gateway (`/v3/kv/range`,
//! `/v3/kv/txn`, `/v3/watch`, ...), over hyper's HTTP/1 client.
//!
//! Why the gateway and not the `etcd-client` crate: that crate generates its gRPC
//! code at build time with `protoc`, which every machine building evenkeel would then
//! need (the README's quick start is `cargo run` on a fresh machine), and brings tonic
//! and prost into every build for calls made a few times a minute. The gateway is part
//! of every etcd since 3.3 (`/v3/` since 3.4), speaks the same protobuf messages as
//! JSON, and needs nothing beyond hyper, rustls and base64, which evenkeel has.
//!
//! What the gateway's JSON looks like: keys and values are base64; 64-bit integers
//! are strings (`"revision": "42"`); fields at their default (false, 0, empty) are
//! left out. A watch is one long POST whose answer streams one JSON object per event
//! batch. Each call opens its own connection (calls are rare; etcd is never on the
//! request path) and tries the endpoints in turn, starting with the last that answered.
//!
//! Authentication: with a user, `/v3/auth/authenticate` gives a token sent as the
//! `Authorization` header; an expired token is renewed once per call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::config::store::Endpoint;

/// The call that logs in (its refusal is a wrong user or password).
pub const AUTHENTICATE: &str = "/v3/auth/authenticate";
/// How long one call may take (connect, send, answer), per endpoint tried.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest watch message: the keys a node watches are small, and etcd refuses
/// requests above 1.5 MiB by default. (Bounds the work a hostile answer can cause.)
const MAX_WATCH_MESSAGE: usize = 4 << 20;
/// Largest answer read from a call (a range of versions is the biggest).
const MAX_ANSWER: usize = 256 << 20;

/// Why a call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GatewayError {
    /// No endpoint answered.
    #[error("etcd unreachable ({0})")]
    Unreachable(String),
    /// etcd answered with an error.
    #[error("etcd refused {path}: {message}")]
    Refused {
        /// The call.
        path: String,
        /// etcd's message.
        message: String,
        /// The gRPC status code (16: unauthenticated, ...).
        code: i64,
    },
    /// An answer that is not what etcd sends.
    #[error("unexpected answer from etcd to {path}: {detail}")]
    Malformed {
        /// The call.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

/// A client for one etcd cluster.
pub struct Gateway {
    endpoints: Vec<Endpoint>,
    tls: Option<tokio_rustls::TlsConnector>,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
    /// The endpoint that answered last.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// A key and value as etcd keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created it.
    pub create_revision: i64,
    /// The revision that last changed it.
    pub mod_revision: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// The answer to a range.
#[derive(Clone, Debug, Default)]
pub struct Range {
    /// The keys found (none with `count_only`).
    pub kvs: Vec<KeyValue>,
    /// How many keys the range holds (beyond a `limit` too).
    pub count: i64,
    /// The store's revision when it was read.
    pub revision: i64,
}

/// How a range reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct RangeOptions {
    /// At most this many keys (0: all).
    pub limit: i64,
    /// Only keys created at or after this revision (0: any).
    pub min_create_revision: i64,
    /// Sort by creation revision instead of by key.
    pub by_creation: bool,
    /// Keys only, no values.
    pub keys_only: bool,
    /// Only the count.
    pub count_only: bool,
}

/// One condition of a transaction.
#[derive(Clone, Debug)]
pub enum Compare {
    /// The key was last changed at this revision (0: the key does not exist).
    ModRevision(Vec<u8>, i64),
    /// The key is bound to this lease (0: to none, or the key does not exist).
    Lease(Vec<u8>, i64),
}

/// One operation of a transaction.
#[derive(Clone, Debug)]
pub enum Operation {
    /// Write a key.
    Put(Vec<u8>, Vec<u8>),
    /// Write a key bound to a lease (it goes when the lease ends).
    PutLeased(Vec<u8>, Vec<u8>, i64),
    /// Read a key.
    Get(Vec<u8>),
}

/// The answer to a transaction.
#[derive(Clone, Debug)]
pub struct TxnAnswer {
    /// Whether every condition held (then the success operations ran).
    pub succeeded: bool,
    /// The store's revision after it.
    pub revision: i64,
    /// The ranges read, in order of the `Get` operations that ran.
    pub ranges: Vec<Range>,
}

/// One message of a watch.
#[derive(Clone, Debug)]
pub enum WatchMessage {
    /// Keys changed (or were deleted: `value` empty and `deleted`).
    Events {
        /// The revision of the batch.
        revision: i64,
        /// The changes.
        events: Vec<WatchEvent>,
    },
    /// The start revision was compacted away: read everything again.
    Compacted {
        /// The oldest revision etcd still has.
        compact_revision: i64,
    },
    /// Nothing changed; the store is at `revision` (the first message, and progress).
    Progress {
        /// The store's revision.
        revision: i64,
    },
}

/// One change a watch saw.
#[derive(Clone, Debug)]
pub struct WatchEvent {
    /// True: the key was deleted.
    pub deleted: bool,
    /// The key and its new value.
    pub kv: KeyValue,
}

/// A watch in progress: messages in order until etcd or the network ends it.
pub struct Watch {
    body: Incoming,
    buffer: BytesMut,
    path: String,
}

impl Gateway {
    /// A client for `endpoints`, over TLS with `tls` for `https://` ones, logging in
    /// with `credentials` (user, password) when given.
    pub fn new(
        endpoints: Vec<Endpoint>,
        tls: Option<Arc<rustls::ClientConfig>>,
        credentials: Option<(String, String)>,
    ) -> Gateway {
        Gateway {
            endpoints,
            tls: tls.map(tokio_rustls::TlsConnector::from),
            credentials,
            token: Mutex::new(None),
            preferred: AtomicUsize::new(0),
        }
    }

    /// Reads `key` (with `range_end`: the keys from `key` up to it, exclusive).
    pub async fn range(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
        options: RangeOptions,
    ) -> Result<Range, GatewayError> {
        let mut body = json!({ "key": BASE64.encode(key) });
        if let Some(end) = range_end {
            body["range_end"] = BASE64.encode(end).into();
        }
        if options.limit > 0 {
            body["limit"] = options.limit.to_string().into();
        }
        if options.min_create_revision > 0 {
            body["min_create_revision"] = options.min_create_revision.to_string().into();
        }
        if options.by_creation {
            body["sort_order"] = "ASCEND".into();
            body["sort_target"] = "CREATE".into();
        }
        if options.keys_only {
            body["keys_only"] = true.into();
        }
        if options.count_only {
            body["count_only"] = true.into();
        }
        let answer = self.call("/v3/kv/range", &body).await?;
        range_of(&answer, "/v3/kv/range")
    }

    /// Reads every key starting with `prefix`.
    pub async fn range_prefix(
        &self,
        prefix: &[u8],
        options: RangeOptions,
    ) -> Result<Range, GatewayError> {
        self.range(prefix, Some(&prefix_end(prefix)), options).await
    }

    /// Writes `key` (attached to `lease` when not 0); the revision of the write.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, GatewayError> {
        let mut body = json!({ "key": BASE64.encode(key), "value": BASE64.encode(value) });
        if lease != 0 {
            body["lease"] = lease.to_string().into();
        }
        let answer = self.call("/v3/kv/put", &body).await?;
        Ok(revision_of(&answer))
    }

    /// Deletes the keys from `key` up to `range_end` (exclusive); how many.
    pub async fn delete_range(&self, key: &[u8], range_end: &[u8]) -> Result<i64, GatewayError> {
        let body = json!({ "key": BASE64.encode(key), "range_end": BASE64.encode(range_end) });
        let answer = self.call("/v3/kv/deleterange", &body).await?;
        Ok(int(&answer["deleted"]))
    }

    /// Runs `success` when every condition in `compare` holds, else `failure`, as one
    /// atomic step.
    pub async fn txn(
        &self,
        compare: &[Compare],
        success: &[Operation],
        failure: &[Operation],
    ) -> Result<TxnAnswer, GatewayError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::ModRevision(key, revision) => json!({
                    "key": BASE64.encode(key),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": revision.to_string(),
                }),
                Compare::Lease(key, lease) => json!({
                    "key": BASE64.encode(key),
                    "target": "LEASE",
                    "result": "EQUAL",
                    "lease": lease.to_string(),
                }),
            })
            .collect();
        let operations = |ops: &[Operation]| -> Vec<Value> {
            ops.iter()
                .map(|op| match op {
                    Operation::Put(key, value) => json!({ "request_put": {
                        "key": BASE64.encode(key), "value": BASE64.encode(value) } }),
                    Operation::PutLeased(key, value, lease) => json!({ "request_put": {
                        "key": BASE64.encode(key),
                        "value": BASE64.encode(value),
                        "lease": lease.to_string(),
                    } }),
                    Operation::Get(key) => {
                        json!({ "request_range": { "key": BASE64.encode(key) } })
                    }
                })
                .collect()
        };
        let body = json!({
            "compare": compare,
            "success": operations(success),
            "failure": operations(failure),
        });
        let path = "/v3/kv/txn";
        let answer = self.call(path, &body).await?;
        let ranges = answer["responses"]
            .as_array()
            .map(|responses| {
                responses
                    .iter()
                    .filter_map(|r| r.get("response_range"))
                    .map(|r| range_of(r, path))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(TxnAnswer {
            succeeded: answer["succeeded"].as_bool().unwrap_or(false),
            revision: revision_of(&answer),
            ranges,
        })
    }

    /// A lease of `ttl` seconds; its id.
    pub async fn lease_grant(&self, ttl: u64) -> Result<i64, GatewayError> {
        let answer = self
            .call("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))
            .await?;
        match int(&answer["ID"]) {
            0 => Err(malformed("/v3/lease/grant", "no lease id")),
            id => Ok(id),
        }
    }

    /// Renews lease `id`; its remaining seconds (0: it expired and is gone).
    pub async fn lease_keepalive(&self, id: i64) -> Result<i64, GatewayError> {
        let answer = self
            .call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))
            .await?;
        Ok(int(&answer["result"]["TTL"]))
    }

    /// Ends lease `id` now, deleting its keys.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), GatewayError> {
        self.call("/v3/lease/revoke", &json!({ "ID": id.to_string() }))
            .await
            .map(drop)
    }

    /// Watches the keys from `key` up to `range_end` from `start_revision` on.
    pub async fn watch(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
    ) -> Result<Watch, GatewayError> {
        let body = json!({ "create_request": {
            "key": BASE64.encode(key),
            "range_end": BASE64.encode(range_end),
            "start_revision": start_revision.to_string(),
            "progress_notify": true,
        }});
        let path = "/v3/watch";
        let response = self.send(path, &body).await?;
        Ok(Watch {
            body: response.into_body(),
            buffer: BytesMut::new(),
            path: path.into(),
        })
    }

    /// One call: the answer's JSON, or etcd's error.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, GatewayError> {
        for attempt in 0..2 {
            let response = self.send(path, body).await?;
            let status = response.status();
            let bytes = tokio::time::timeout(CALL_TIMEOUT, read_all(response.into_body()))
                .await
                .map_err(|_| {
                    GatewayError::Unreachable(format!("{path}: no answer within {CALL_TIMEOUT:?}"))
                })?
                .map_err(|e| GatewayError::Unreachable(format!("{path}: {e}")))?;
            let answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
                // etcd answers some refusals in plain text (a client certificate with a
                // Common Name under auth, ...): say what it said.
                let said = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                malformed(path, &format!("status {status}, not JSON ({e}): {said:?}"))
            })?;
            if status.is_success() && answer.get("error").is_none() {
                return Ok(answer);
            }
            let code = int(&answer["code"]);
            let message = answer["message"]
                .as_str()
                .or(answer["error"].as_str())
                .unwrap_or("no message")
                .to_string();
            // 16: unauthenticated (an expired or revoked token): log in again, once.
            if code == 16 && attempt == 0 && self.credentials.is_some() {
                *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                continue;
            }
            return Err(GatewayError::Refused {
                path: path.into(),
                message,
                code,
            });
        }
        Err(malformed(path, "authentication keeps failing"))
    }

    /// Sends a POST to each endpoint in turn until one answers with a head.
    async fn send(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<hyper::Response<Incoming>, GatewayError> {
        let token = if path == AUTHENTICATE {
            None
        } else {
            self.token().await?
        };
        let first = self.preferred.load(Ordering::Relaxed);
        let count = self.endpoints.len().max(1);
        let mut failures = Vec::new();
        for i in 0..self.endpoints.len() {
            let index = (first + i) % count;
            let endpoint = &self.endpoints[index];
            let sent = tokio::time::timeout(
                CALL_TIMEOUT,
                self.send_to(endpoint, path, body, token.as_deref()),
            )
            .await;
            match sent {
                Ok(Ok(response)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Ok(Err(e)) => failures.push(format!("{endpoint}: {e}")),
                Err(_) => failures.push(format!("{endpoint}: no answer within {CALL_TIMEOUT:?}")),
            }
        }
        Err(GatewayError::Unreachable(failures.join("; ")))
    }

    async fn send_to(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<hyper::Response<Incoming>, String> {
        let tcp = tokio::net::TcpStream::connect(&endpoint.authority)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        // A watch sits idle for minutes: keepalive probes find a peer that vanished
        // (a dropped NAT mapping, a host gone) within half a minute.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5))
            .with_retries(3);
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        let request = {
            let mut request = hyper::Request::post(path)
                .header(hyper::header::HOST, &endpoint.authority)
                .header(hyper::header::CONTENT_TYPE, "application/json");
            if let Some(token) = token {
                request = request.header(hyper::header::AUTHORIZATION, token);
            }
            request
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| e.to_string())?
        };
        if endpoint.tls {
            let connector = self
                .tls
                .as_ref()
                .ok_or("no TLS settings for an https:// endpoint")?;
            let name = pki_types::ServerName::try_from(endpoint.host.clone())
                .map_err(|e| format!("server name {:?}: {e}", endpoint.host))?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(TokioIo::new(stream), request).await
        } else {
            exchange(TokioIo::new(tcp), request).await
        }
    }

    /// The auth token, logging in first when there are credentials and no token yet.
    async fn token(&self) -> Result<Option<String>, GatewayError> {
        let Some((user, password)) = &self.credentials else {
            return Ok(None);
        };
        if let Some(token) = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(Some(token));
        }
        let path = AUTHENTICATE;
        let answer =
            Box::pin(self.call(path, &json!({ "name": user, "password": password }))).await?;
        let token = answer["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| malformed(path, "no token"))?
            .to_string();
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        Ok(Some(token))
    }
}

impl Watch {
    /// The next message; `None` when etcd ended the watch.
    pub async fn next(&mut self) -> Result<Option<WatchMessage>, GatewayError> {
        loop {
            if let Some(message) = parse_message(&mut self.buffer, &self.path)? {
                return Ok(Some(message));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(GatewayError::Unreachable(format!("watch: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if self.buffer.len() + data.len() > MAX_WATCH_MESSAGE {
                            return Err(malformed(&self.path, "a watch message too large"));
                        }
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// One whole message from the front of a watch's `buffer`, if it holds one (`path`
/// names the call in errors).
fn parse_message(buffer: &mut BytesMut, path: &str) -> Result<Option<WatchMessage>, GatewayError> {
    let start = buffer
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(buffer.len());
    buffer.advance(start);
    if buffer.is_empty() {
        return Ok(None);
    }
    let mut stream = serde_json::Deserializer::from_slice(buffer).into_iter::<Value>();
    let value = match stream.next() {
        Some(Ok(value)) => value,
        Some(Err(e)) if e.is_eof() => return Ok(None),
        Some(Err(e)) => return Err(malformed(path, &e.to_string())),
        None => return Ok(None),
    };
    let used = stream.byte_offset();
    buffer.advance(used);
    if let Some(error) = value.get("error") {
        return Err(GatewayError::Refused {
            path: path.to_string(),
            message: error["message"]
                .as_str()
                .or(error.as_str())
                .unwrap_or("watch failed")
                .to_string(),
            code: int(&error["grpc_code"]),
        });
    }
    let result = &value["result"];
    let revision = int(&result["header"]["revision"]);
    let compact_revision = int(&result["compact_revision"]);
    if compact_revision > 0 {
        return Ok(Some(WatchMessage::Compacted { compact_revision }));
    }
    if result["canceled"].as_bool() == Some(true) {
        let reason = result["cancel_reason"]
            .as_str()
            .unwrap_or("canceled by etcd");
        return Err(GatewayError::Refused {
            path: path.to_string(),
            message: reason.to_string(),
            code: 0,
        });
    }
    let Some(events) = result["events"].as_array() else {
        return Ok(Some(WatchMessage::Progress { revision }));
    };
    let events = events
        .iter()
        .map(|e| {
            Ok(WatchEvent {
                deleted: e["type"].as_str() == Some("DELETE"),
                kv: key_value(&e["kv"], path)?,
            })
        })
        .collect::<Result<Vec<_>, GatewayError>>()?;
    Ok(Some(WatchMessage::Events { revision, events }))
}

/// The end of the range of every key starting with `prefix` (etcd's "prefix end").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

async fn exchange<T>(
    io: T,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // Ends when the answer is read (or the watch is dropped).
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

async fn read_all(body: Incoming) -> Result<Bytes, String> {
    let mut body = body;
    let mut all = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if all.len() + data.len() > MAX_ANSWER {
                return Err("answer too large".into());
            }
            all.extend_from_slice(&data);
        }
    }
    Ok(all.freeze())
}

fn malformed(path: &str, detail: &str) -> GatewayError {
    GatewayError::Malformed {
        path: path.into(),
        detail: detail.into(),
    }
}

/// A 64-bit integer as the gateway writes it: a string, a number, or absent (0).
fn int(value: &Value) -> i64 {
    match value {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn revision_of(answer: &Value) -> i64 {
    int(&answer["header"]["revision"])
}

fn bytes_of(value: &Value, path: &str) -> Result<Vec<u8>, GatewayError> {
    match value.as_str() {
        None => Ok(Vec::new()),
        Some(text) => BASE64
            .decode(text)
            .map_err(|e| malformed(path, &format!("bad base64 ({e})"))),
    }
}

fn key_value(value: &Value, path: &str) -> Result<KeyValue, GatewayError> {
    Ok(KeyValue {
        key: bytes_of(&value["key"], path)?,
        value: bytes_of(&value["value"], path)?,
        create_revision: int(&value["create_revision"]),
        mod_revision: int(&value["mod_revision"]),
        lease: int(&value["lease"]),
    })
}

fn range_of(answer: &Value, path: &str) -> Result<Range, GatewayError> {
    let kvs = answer["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| key_value(kv, path))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(Range {
        kvs,
        count: int(&answer["count"]),
        revision: revision_of(answer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn integers_are_read_as_the_gateway_writes_them() {
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
    }

    #[test]
    fn a_watch_stream_is_split_into_whole_messages_and_waits_for_the_rest() {
        let created = r#"{"result":{"header":{"revision":"2"},"created":true}}"#;
        let put = r#"{"result":{"header":{"revision":"3"},"events":[{"kv":{"key":"L2EvY3VycmVudA==","create_revision":"2","mod_revision":"3","version":"2","value":"aGVsbG8="}},{"type":"DELETE","kv":{"key":"L2EvYg==","mod_revision":"3"}}]}}"#;
        let mut buffer = BytesMut::from(format!("{created}\n{put}\n{{\"result\":").as_bytes());
        let path = "/v3/watch";
        assert!(matches!(
            parse_message(&mut buffer, path),
            Ok(Some(WatchMessage::Progress { revision: 2 }))
        ));
        let Ok(Some(WatchMessage::Events { revision, events })) = parse_message(&mut buffer, path)
        else {
            panic!("a batch of events");
        };
        assert_eq!(revision, 3);
        assert_eq!(events.len(), 2);
        assert_eq!(
            (
                events[0].deleted,
                events[0].kv.key.as_slice(),
                events[0].kv.value.as_slice()
            ),
            (false, &b"/a/current"[..], &b"hello"[..])
        );
        assert_eq!(events[0].kv.mod_revision, 3);
        assert_eq!(
            (events[1].deleted, events[1].kv.key.as_slice()),
            (true, &b"/a/b"[..])
        );
        assert!(
            matches!(parse_message(&mut buffer, path), Ok(None)),
            "a partial object waits for more bytes"
        );
        buffer.extend_from_slice(
            br#"{"header":{"revision":"9"},"compact_revision":"7","canceled":true}}"#,
        );
        assert!(matches!(
            parse_message(&mut buffer, path),
            Ok(Some(WatchMessage::Compacted {
                compact_revision: 7
            }))
        ));
        let mut garbage = BytesMut::from(&b"<html>"[..]);
        assert!(parse_message(&mut garbage, path).is_err());
    }
}
