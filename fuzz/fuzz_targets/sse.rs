//! The SSE reader: never panics, and any split of the same bytes reads the same. The usage-chunk
//! filter likewise: any split gives the client the same bytes, reads the same usage as the plain
//! reader, and removes nothing but usage-only events (what it forwards is the input with some
//! whole events taken out, in order).
#![no_main]

use std::time::Instant;

use ai_extproc::llm::{SseReader, UsageChunkFilter};
use libfuzzer_sys::fuzz_target;

/// What the client gets when the filter reads `parts` in turn.
fn filtered(parts: &[&[u8]], now: Instant) -> (Vec<u8>, SseReader) {
    let mut reader = SseReader::new();
    let mut filter = UsageChunkFilter::default();
    let mut out = Vec::new();
    for part in parts {
        match filter.feed(part, &mut reader, now) {
            Some(b) => out.extend_from_slice(&b),
            None => out.extend_from_slice(part),
        }
    }
    if let Some(rest) = filter.finish(&mut reader, now) {
        out.extend_from_slice(&rest);
    }
    reader.finish(now);
    (out, reader)
}

/// Whether `sub` is `whole` with some pieces taken out (a subsequence).
fn is_subsequence(sub: &[u8], whole: &[u8]) -> bool {
    let mut it = whole.iter();
    sub.iter().all(|b| it.any(|w| w == b))
}

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

    let (out_whole, read_whole) = filtered(&[data], now);
    let (out_parts, read_parts) = filtered(&[&data[..at], &data[at..]], now);
    assert_eq!(out_whole, out_parts, "the split changed what the client gets");
    assert_eq!(read_whole.state.usage, whole.state.usage);
    assert_eq!(read_parts.state.usage, whole.state.usage);
    assert!(is_subsequence(&out_whole, data));
    if whole.state.usage_only_events == 0 {
        assert_eq!(out_whole, data, "nothing to remove, nothing removed");
    }
});
