//! Config load + validate + lint, on any text (host names are never resolved here).
//!
//! Properties:
//! - checking is deterministic: the same text gives the same verdict and findings;
//! - a config that TOML reads is judged on its meaning, not its spelling: written out
//!   again by the toml crate, it passes or fails the same, with the same rules found.
#![no_main]

use evenkeel::fuzzing::check_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = check_config(text);
    assert_eq!(first, check_config(text), "not deterministic");
    let Ok(value) = text.parse::<toml::Table>() else {
        return;
    };
    let Ok(rewritten) = toml::to_string(&value) else {
        return;
    };
    let mut again = check_config(&rewritten);
    let mut first = first;
    first.1.sort();
    again.1.sort();
    assert_eq!(
        first, again,
        "judged differently once rewritten:\n{text}\n---\n{rewritten}"
    );
});
