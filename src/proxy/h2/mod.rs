//! HTTP/2 to backends, for pools with `protocol = "h2c"` (clear text, prior knowledge)
//! or `"h2"` (over the pool's `tls`, agreed by ALPN).
//!
//! Built on the `h2` crate (hyper's own HTTP/2), used directly rather than through
//! hyper's client: evenkeel needs what hyper hides — the backend's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` (to open another connection rather than queue),
//! and whether a failed stream was refused unprocessed (to send it again).
//!
//! - [`connections`]: each worker's connections, by backend, and which one a stream
//!   takes.
//! - [`exchange`]: one request as a stream: its head, its body pumped in (kept for a
//!   replay), the response relayed with its trailers.
//! - [`forward`]: the tries of a request to an HTTP/2 pool, and what each outcome
//!   counts as (gRPC calls by their `grpc-status`, see [`super::grpc`]).

pub mod connections;
pub mod exchange;
pub mod forward;
