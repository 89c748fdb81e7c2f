//! Client request bodies: parsing never panics, and a rewrite changes the model value only.
#![no_main]

use ai_extproc::llm::{apply_edits, model_edit, parse_request, FAMILIES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for family in FAMILIES {
        let Ok(info) = parse_request(family, data) else {
            continue;
        };
        let edit = model_edit(&info, "accounts/fireworks/models/x");
        // Every byte outside the model value is kept.
        let out = apply_edits(data, vec![edit.clone()]);
        assert_eq!(
            &out[..info.model_span.start],
            &data[..info.model_span.start]
        );
        assert_eq!(
            &out[out.len() - (data.len() - info.model_span.end)..],
            &data[info.model_span.end..]
        );
        // The rewritten body still parses, with the new model.
        let again = parse_request(family, &out).expect("a rewritten body parses");
        assert_eq!(again.model, "accounts/fireworks/models/x");
        // Asking for stream usage keeps it valid JSON.
        let mut edits = vec![edit];
        edits.extend(family.usage_edit(data, &info));
        let with_usage = apply_edits(data, edits);
        assert!(parse_request(family, &with_usage).is_ok());
    }
});
