//! The config loader on arbitrary YAML: errors, never panics.
#![no_main]

use ai_extproc::config::{load_str, CompileOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = load_str("fuzz.yaml", text, &CompileOptions::default());
    }
});
