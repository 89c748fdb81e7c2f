//! The SSE reader: never panics, and any split of the same bytes reads the same (every split
//! point of an input, or a spread of them, and one byte at a time). The usage-chunk
//! filter likewise: any split gives the client the same bytes, reads the same usage as the plain
//! reader, and removes nothing but usage-only events (what it forwards is the input with some
//! whole events taken out, in order). Every API family's event parser is read split too.
#![no_main]

use std::time::Instant;

use ai_extproc::llm::{Chat, SseReader, UsageChunkFilter, FAMILIES};
use libfuzzer_sys::fuzz_target;

/// What the client gets when the filter reads `parts` in turn.
fn filtered(parts: &[&[u8]], now: Instant) -> (Vec<u8>, SseReader) {
    let mut reader = SseReader::new(&Chat);
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

/// Where to split `data`: every position of a short input, a spread of them (offset by `seed`)
/// for a longer one.
fn split_points(data: &[u8], seed: u16) -> Vec<usize> {
    const MAX: usize = 64;
    let n = data.len();
    if n < MAX {
        return (0..=n).collect();
    }
    let offset = usize::from(seed) % (n / MAX);
    (0..MAX).map(|i| offset + i * n / MAX).collect()
}

/// The reader's state after reading `parts` in turn.
fn read(parts: &[&[u8]], now: Instant) -> SseReader {
    let mut reader = SseReader::new(&Chat);
    for part in parts {
        reader.feed(part, now);
    }
    reader.finish(now);
    reader
}

fn check(parts: &[&[u8]], data: &[u8], whole: &SseReader, out_whole: &[u8], now: Instant) {
    assert_eq!(
        whole.state,
        read(parts, now).state,
        "a split changed what was read"
    );
    let (out, reader) = filtered(parts, now);
    assert_eq!(out, out_whole, "a split changed what the client gets");
    assert_eq!(reader.state.usage, whole.state.usage);
    assert!(is_subsequence(&out, data));
}

fuzz_target!(|input: (u16, &[u8])| {
    let (seed, data) = input;
    let now = Instant::now();
    let whole = read(&[data], now);
    let (out_whole, read_whole) = filtered(&[data], now);
    assert_eq!(read_whole.state.usage, whole.state.usage);
    assert!(is_subsequence(&out_whole, data));
    if whole.state.usage_only_events == 0 {
        assert_eq!(out_whole, data, "nothing to remove, nothing removed");
    }
    // Every split in two (or a spread of them), and one byte at a time.
    for at in split_points(data, seed) {
        check(&[&data[..at], &data[at..]], data, &whole, &out_whole, now);
    }
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    check(&bytes, data, &whole, &out_whole, now);
    // Every family's event parser (Responses' typed events, Anthropic's, images'...): no
    // panic, and a split reads the same.
    for family in FAMILIES {
        let mut whole = SseReader::new(family);
        whole.feed(data, now);
        whole.finish(now);
        for at in split_points(data, seed).into_iter().step_by(8) {
            let mut r = SseReader::new(family);
            r.feed(&data[..at], now);
            r.feed(&data[at..], now);
            r.finish(now);
            assert_eq!(r.state, whole.state, "{}: a split changed what was read", family.name());
        }
    }
});
