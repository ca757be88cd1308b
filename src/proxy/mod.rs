//! The data path: accept client connections, route and balance each request, forward
//! it to a backend over a pooled keep-alive connection, stream the response back.
//!
//! - [`server`]: listeners, worker threads (one `current_thread` runtime each), limits,
//!   graceful shutdown.
//! - [`downstream`]: HTTP/1.x toward clients (the connection loop); HTTP/2 clients are
//!   served by hyper in [`server`].
//! - [`forward`]: one request, from routing to the streamed response.
//! - [`upstream`]: each worker's keep-alive connections to backends.
//! - [`transport`]: the stream under one: plain TCP, or TLS to a pool with `tls`.
//! - [`h1`]: HTTP/1.1 toward backends (request encoding, response parsing, framing).
//! - [`headers`]: hop-by-hop and `X-Forwarded-*` rules.
//! - [`errors`]: the 404/501/502/503/504 answers evenkeel gives itself.
//! - [`stall`]: bounds on pauses in a body or a write, made only when one pauses.
//! - [`read_ahead`]: a request body read before a backend is picked.
//! - [`outbox`]: copying a body from one side to the other, gathered into few writes.
//! - [`spill`]: a response's overflow in a temporary file, for slow readers.
//! - [`budget`]: the bytes a worker may hold for read-ahead and spills.
//! - [`tls`]: the TLS handshake on HTTPS listeners, and the certificate choice (SNI).
//!
//! Malformed requests (bad request line, oversized head, invalid or conflicting
//! `Content-Length`, a `Transfer-Encoding` whose last coding is not `chunked`, obs-fold)
//! are refused with a 4xx by [`downstream`] (HTTP/2: by hyper) before they reach
//! [`forward`], so they never reach a backend. A request with both `Content-Length` and
//! `Transfer-Encoding: chunked` is framed by the chunking alone, its `Content-Length`
//! dropped, and its connection closed after the response (RFC 9112 §6.3), so nothing
//! can be smuggled behind it. [`forward`] refuses other transfer codings (`gzip,
//! chunked`) with 501: it does not decode them, and must not pass them on stripped.

pub mod access;
pub mod budget;
pub mod downstream;
pub mod errors;
pub mod forward;
pub mod h1;
pub mod headers;
pub mod outbox;
pub mod read_ahead;
pub mod retry;
pub mod server;
pub mod spill;
pub mod stall;
pub mod tls;
pub mod transport;
pub mod upstream;

pub use server::{start, Options, Running, StartError};
