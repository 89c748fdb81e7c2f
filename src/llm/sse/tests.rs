use std::time::Instant;

use rand::{Rng, SeedableRng};

use super::*;
use crate::llm::family::Chat;

const FIREWORKS: &str = concat!(
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"accounts/fireworks/models/m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n",
    ": keep-alive\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hm\"},\"finish_reason\":null}]}\r\n\r\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hé\"},\"finish_reason\":null}]}\r\r",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"llo\"},\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8,\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n",
    "data: [DONE]\n\n",
);

fn expected() -> Usage {
    Usage {
        input: 5,
        output: 3,
        total: 8,
        reasoning: 1,
        ..Usage::default()
    }
}

static NOW: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn read(chunks: &[&[u8]]) -> SseState {
    let mut r = SseReader::new(&Chat);
    let now = *NOW;
    for c in chunks {
        r.feed(c, now);
    }
    r.finish(now);
    r.state
}

#[test]
fn whole_stream() {
    let s = read(&[FIREWORKS.as_bytes()]);
    assert_eq!(s.usage, Some(expected()));
    assert_eq!(s.model.as_deref(), Some("accounts/fireworks/models/m"));
    assert_eq!(s.events, 6);
    assert_eq!(s.token_events, 3);
    assert_eq!(s.malformed, 0);
    assert!(s.done);
}

#[test]
fn every_two_way_split_gives_the_same_result() {
    let whole = read(&[FIREWORKS.as_bytes()]);
    let bytes = FIREWORKS.as_bytes();
    for i in 0..=bytes.len() {
        let (a, b) = bytes.split_at(i);
        assert_eq!(read(&[a, b]), whole, "split at {i}");
    }
}

#[test]
fn random_chunkings_give_the_same_result() {
    let whole = read(&[FIREWORKS.as_bytes()]);
    let bytes = FIREWORKS.as_bytes();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..2_000 {
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let n = rng.random_range(1..=16).min(bytes.len() - at);
            chunks.push(&bytes[at..at + n]);
            at += n;
        }
        assert_eq!(read(&chunks), whole);
    }
    // One byte at a time.
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(read(&singles), whole);
}

#[test]
fn openai_include_usage_and_malformed_events() {
    let stream = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n",
        "data: {not json}\n\n",
        "event: ping\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1,\"total_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":1}}}\n\n",
        "data: [DONE]",
    );
    let s = read(&[stream.as_bytes()]);
    assert_eq!(s.malformed, 1);
    assert_eq!(
        s.usage,
        Some(Usage {
            input: 2,
            cached_input: 1,
            output: 1,
            total: 3,
            ..Usage::default()
        })
    );
    assert!(s.done, "an unterminated last event still counts at the end");
}

#[test]
fn multi_line_data_is_joined() {
    let s = read(&[b"data: {\"usage\":\ndata: {\"prompt_tokens\":4}}\n\n"]);
    assert_eq!(s.usage.map(|u| u.input), Some(4));
}

#[test]
fn an_overlong_line_is_skipped_not_kept() {
    let mut r = SseReader::new(&Chat);
    let now = Instant::now();
    r.feed(b"data: ", now);
    let big = vec![b'x'; MAX_LINE + 10];
    r.feed(&big, now);
    assert!(r.line.len() <= MAX_LINE);
    r.feed(b"\n\ndata: {\"usage\":{\"prompt_tokens\":1}}\n\n", now);
    r.finish(now);
    assert_eq!(r.state.usage.map(|u| u.input), Some(1));
    assert_eq!(r.state.events, 1);
}

#[test]
fn a_line_of_exactly_the_limit_is_kept_one_more_byte_is_not() {
    assert_eq!(
        MAX_LINE,
        4 << 20,
        "4 MiB: a 3 MB base64 image fits in one line"
    );
    let event = |len: usize| {
        // `data: ` + JSON padded to `len` bytes on the line, split in two parts.
        let head = r#"data: {"usage":{"prompt_tokens":1,"total_tokens":1},"pad":""#;
        let pad = "x".repeat(len - head.len() - 2);
        format!("{head}{pad}\"}}\n\n")
    };
    for (len, kept) in [(MAX_LINE, true), (MAX_LINE + 1, false)] {
        let text = event(len);
        let (a, b) = text.as_bytes().split_at(len / 2);
        let state = read(&[a, b]);
        assert_eq!(state.usage.is_some(), kept, "a line of {len} bytes");
    }
}

#[test]
fn only_an_event_with_no_choices_counts_as_usage_only() {
    let state = read(&[
        b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"total_tokens\":2}}\n\n",
        b"data: {\"choices\":[],\"usage\":null}\n\n",
    ]);
    assert_eq!(state.usage_only_events, 0);
    let state =
        read(&[b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"total_tokens\":2}}\n\n"]);
    assert_eq!(state.usage_only_events, 1);
}
