//! Generating load: stand-in backends now; `loadtest` and `preflight` arrive with
//! their own issue.

pub mod standin;
