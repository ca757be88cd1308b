//! evenkeel: an HTTP load balancer that makes a bad configuration hard to ship, quick
//! to see and cheap to undo. See README.md for a tour and ../shared/DESIGN.md for the
//! architecture; each module's doc says what it is for.

pub mod admin;
pub mod apply;
pub mod balance;
pub mod cli;
pub mod config;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod loadgen;
pub mod monitor;
pub mod proxy;
pub mod report;
pub mod runtime;
pub mod sim;
pub mod store;
