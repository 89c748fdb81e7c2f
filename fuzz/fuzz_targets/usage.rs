//! Usage extraction from provider bodies, plain and compressed: never panics, bounded.
#![no_main]

use ai_extproc::llm::{decode_all, response_info, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = response_info(data);
    for encoding in ["gzip", "deflate", "br"] {
        if let Ok(decoded) = decode_all(encoding, data, Limits::default()) {
            let _ = response_info(&decoded);
        }
    }
});
