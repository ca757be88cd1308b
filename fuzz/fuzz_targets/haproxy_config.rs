//! `check --from haproxy` and `import --from haproxy` on any text (host names are
//! never resolved).
//!
//! Properties: see fuzz/fuzz_targets/common/foreign.rs.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::foreign::properties(evenkeel::fuzzing::Product::Haproxy, data);
});
