//! The SSE reader: never panics, and any split of the same bytes reads the same.
#![no_main]

use std::time::Instant;

use ai_extproc::llm::SseReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8])| {
    let (split, data) = input;
    let now = Instant::now();
    let mut whole = SseReader::new();
    whole.feed(data, now);
    whole.finish(now);
    let at = usize::from(split) % (data.len() + 1);
    let mut parts = SseReader::new();
    parts.feed(&data[..at], now);
    parts.feed(&data[at..], now);
    parts.finish(now);
    assert_eq!(whole.state, parts.state);
});
