//! The data path: accept client connections, route and balance each request, forward
//! it to a backend over a pooled keep-alive connection, stream the response back.
//!
//! - [`server`]: listeners, worker threads (one `current_thread` runtime each), limits,
//!   graceful shutdown; HTTP/2 clients are served by hyper here.
//! - [`downstream`]: the loop that serves one HTTP/1.x client connection.
//! - [`h1`]: evenkeel's own HTTP/1.x, both sides: the request-head reader and
//!   response-head writer for clients ([`h1::server`]), the client to backends with its
//!   request encoding and response-head parser ([`h1::client`]), and the body framing
//!   both use ([`h1::body`]).
//! - [`h2`]: HTTP/2 to backends (pools with `protocol = "h2c"` or `"h2"`).
//! - [`grpc`]: gRPC calls: their deadline, evenkeel's errors as gRPC statuses, and
//!   how a `grpc-status` counts.
//! - [`forward`]: one request, from routing to the streamed response.
//! - [`retry`]: the retry budget, which keeps retries a small share of a pool's
//!   requests.
//! - [`upstream`]: each worker's keep-alive connections to backends.
//! - [`transport`]: the stream under one: plain TCP, or TLS to a pool with `tls`.
//! - [`headers`]: hop-by-hop and `X-Forwarded-*` rules.
//! - [`errors`]: the 404/501/502/503/504 answers evenkeel gives itself.
//! - [`access`]: the access log.
//! - [`stall`]: bounds on pauses in a body or a write, made only when one pauses.
//! - [`read_ahead`]: a request body read before a backend is picked.
//! - [`outbox`]: copying a body from one side to the other, gathered into few writes.
//! - [`parking`]: idle HTTP/1 connections, held by their worker until their next
//!   request, their deadline or shutdown.
//! - [`spill`]: a response's overflow in a temporary file, for slow readers.
//! - [`budget`]: the bytes a worker may hold for read-ahead and spills.
//! - [`tls`]: the TLS handshake on HTTPS listeners, and the certificate choice (SNI).
//! - [`tunnel`]: upgraded connections (WebSocket), carried both ways after a 101.
//! - [`layer4`]: TCP listeners: each connection balanced to the listener's pool.
//! - [`proxy_protocol`]: the PROXY header read from a balancer in front, and written
//!   to a TCP pool's backends.
//!
//! Malformed requests (bad request line, oversized head, invalid or conflicting
//! `Content-Length`, a `Transfer-Encoding` whose last coding is not `chunked`, obs-fold)
//! are refused with a 4xx by [`h1::server`] and [`downstream`] (HTTP/2: by hyper) before
//! they reach [`forward`], so they never reach a backend. A request with both
//! `Content-Length` and `Transfer-Encoding: chunked` is framed by the chunking alone,
//! its `Content-Length` dropped, and its connection closed after the response (RFC 9112
//! §6.3), so nothing can be smuggled behind it. [`forward`] refuses other transfer
//! codings (`gzip, chunked`) with 501: it does not decode them, and must not pass them
//! on stripped.

pub mod access;
pub mod budget;
pub mod downstream;
pub mod errors;
pub mod forward;
pub mod grpc;
pub mod h1;
pub mod h2;
pub mod headers;
pub mod layer4;
pub mod outbox;
pub mod parking;
pub mod proxy_protocol;
pub mod read_ahead;
pub mod retry;
pub mod server;
pub mod spill;
pub mod stall;
pub mod tls;
pub mod transport;
pub mod tunnel;
pub mod upstream;

pub use server::{start, Options, Running, StartError};
