//! `check --from nginx` and `import --from nginx` on any text (includes resolve to
//! nothing; host names are never resolved).
//!
//! Properties: see fuzz/fuzz_targets/common/foreign.rs.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::foreign::properties(evenkeel::fuzzing::Product::Nginx, data);
});
