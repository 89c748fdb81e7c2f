//! The config loader on arbitrary YAML: never panics; a refusal has at least one error, each
//! naming the file (or the config as a whole) and saying what is wrong; the same text always gives the same answer.
#![no_main]

use ai_extproc::config::{load_str, CompileOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = load_str("fuzz.yaml", text, &CompileOptions::default());
    let again = load_str("fuzz.yaml", text, &CompileOptions::default());
    match (first, again) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.routes.len(), b.routes.len());
            assert_eq!(a.backends.len(), b.backends.len());
        }
        (Err(a), Err(b)) => {
            assert!(!a.0.is_empty(), "a refusal says why");
            for e in &a.0 {
                // A document's error names the file; "<config>" is the config as a whole.
                let file = e.location.file.to_string_lossy();
                assert!(file == "fuzz.yaml" || file == "<config>", "{file}");
                assert!(!e.message.trim().is_empty(), "an error without a message");
            }
            assert_eq!(
                a.to_string(),
                b.to_string(),
                "the same text, the same errors"
            );
        }
        _ => panic!("the same text loaded once and was refused once"),
    }
});
