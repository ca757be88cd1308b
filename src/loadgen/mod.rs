//! Generating load: `loadtest` against any HTTP target on this machine, and the
//! stand-in backends `demo` (and `preflight`) run.
//!
//! - [`spec`]: what a test does (target, request, pacing, stop).
//! - [`engine`]: runs it — closed loop or open loop (latency from the intended send
//!   time, so stalls are not hidden).
//! - [`report`]: what it measured (HDR percentiles, statuses, errors, groups).
//! - [`standin`]: stand-in backends with a set latency.

pub mod engine;
pub mod preflight;
pub mod report;
pub mod spec;
pub mod standin;

pub use engine::{run, run_blocking};
pub use report::Report;
pub use spec::{LoadSpec, Pacing, Stop, Target};
