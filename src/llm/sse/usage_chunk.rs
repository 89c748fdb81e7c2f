//! Takes OpenAI's usage-only chunk (`"choices": []` plus the usage, sent because the gateway
//! asked for `stream_options.include_usage`) out of a stream whose client did not ask for it:
//! the standard loop over `chunk.choices[0]` would fail on it. Everything is still read for
//! usage.
//!
//! Complete events pass as soon as they arrive; only the bytes of an event not yet complete
//! are held until its blank line (a client cannot act on part of an event either). A chunk of
//! whole events, none of them dropped, is forwarded untouched (no body rewrite at all).

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::SseReader;

/// Most bytes of one incomplete event held back; past it the filter gives up and the rest of
/// the stream passes unchanged (bounded memory whatever the provider sends).
pub const MAX_HELD: usize = 1024 * 1024;

/// Filters one stream's chunks.
#[derive(Debug, Default)]
pub struct UsageChunkFilter {
    /// Bytes of an incomplete event.
    held: BytesMut,
    /// Gave up (an event over `MAX_HELD`): chunks pass as they are.
    passthrough: bool,
    /// The last event ended on a CR that was the last byte of a chunk: if the next chunk starts
    /// with LF, that LF is the rest of its CRLF and goes where the event went (dropped or not).
    cr_ended: Option<Dropped>,
}

/// Whether an event was taken out.
type Dropped = bool;

/// Where the first complete event of `buf` ends: just past the empty line that closes it
/// (lines end with LF, CRLF or CR).
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut line_empty = true;
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'\n' | b'\r' => {
                let end = if buf[i] == b'\r' && buf.get(i + 1) == Some(&b'\n') {
                    i + 2
                } else {
                    i + 1
                };
                if line_empty {
                    return Some(end);
                }
                line_empty = true;
                i = end;
            }
            _ => {
                line_empty = false;
                i += 1;
            }
        }
    }
    None
}

impl UsageChunkFilter {
    /// Reads `chunk` (into `reader`) and returns what the client gets instead of it, or `None`
    /// when it passes unchanged.
    pub fn feed(&mut self, chunk: &[u8], reader: &mut SseReader, now: Instant) -> Option<Bytes> {
        if self.passthrough {
            reader.feed(chunk, now);
            return None;
        }
        let mut chunk = chunk;
        let mut dropped = false;
        if let (Some(event_dropped), Some(b'\n')) = (self.cr_ended.take(), chunk.first()) {
            reader.feed(&chunk[..1], now);
            if event_dropped {
                chunk = &chunk[1..];
                dropped = true;
            }
        }
        let had_held = !self.held.is_empty();
        self.held.extend_from_slice(chunk);
        let mut out = BytesMut::with_capacity(self.held.len());
        while let Some(end) = event_end(&self.held) {
            let event = self.held.split_to(end);
            let before = reader.state.usage_only_events;
            reader.feed(&event, now);
            let event_dropped = reader.state.usage_only_events != before;
            if event_dropped {
                dropped = true;
            } else {
                out.extend_from_slice(&event);
            }
            self.cr_ended =
                (event.last() == Some(&b'\r') && self.held.is_empty()).then_some(event_dropped);
        }
        if self.held.len() > MAX_HELD {
            tracing::warn!(
                held = self.held.len(),
                "an event longer than the usage-chunk filter holds; passing the stream unchanged"
            );
            self.passthrough = true;
            let rest = self.held.split();
            reader.feed(&rest, now);
            out.extend_from_slice(&rest);
        }
        let unchanged = !had_held && !dropped && self.held.is_empty();
        (!unchanged).then(|| out.freeze())
    }

    /// The end of the stream: what is still held (an event without its closing blank line).
    pub fn finish(&mut self, reader: &mut SseReader, now: Instant) -> Option<Bytes> {
        if self.held.is_empty() {
            return None;
        }
        let rest = self.held.split().freeze();
        let before = reader.state.usage_only_events;
        reader.feed(&rest, now);
        reader.finish(now);
        if reader.state.usage_only_events == before {
            Some(rest)
        } else {
            Some(Bytes::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::family::Chat;

    const STREAM: &str = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, SseReader, usize) {
        let mut f = UsageChunkFilter::default();
        let mut r = SseReader::new(&Chat);
        let now = Instant::now();
        let (mut out, mut rewritten) = (Vec::new(), 0);
        for c in chunks {
            match f.feed(c, &mut r, now) {
                Some(b) => {
                    rewritten += 1;
                    out.extend_from_slice(&b);
                }
                None => out.extend_from_slice(c),
            }
        }
        if let Some(b) = f.finish(&mut r, now) {
            out.extend_from_slice(&b);
        }
        r.finish(now);
        (out, r, rewritten)
    }

    fn without_usage_chunk(s: &str) -> String {
        s.split_inclusive("\n\n")
            .filter(|e| !e.contains("\"choices\":[]"))
            .collect()
    }

    #[test]
    fn the_usage_chunk_is_dropped_at_every_split_and_usage_still_read() {
        let bytes = STREAM.as_bytes();
        let want = without_usage_chunk(STREAM);
        for at in 0..=bytes.len() {
            let (out, r, _) = run(&[&bytes[..at], &bytes[at..]]);
            assert_eq!(String::from_utf8(out).unwrap(), want, "split at {at}");
            assert_eq!(r.state.usage.map(|u| u.total), Some(4), "split at {at}");
            assert!(r.state.done);
        }
        let one_byte_chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&one_byte_chunks).0, want.as_bytes());
    }

    #[test]
    fn whole_events_without_the_usage_chunk_pass_untouched() {
        let events: Vec<&str> = STREAM.split_inclusive("\n\n").collect();
        let chunks: Vec<&[u8]> = [events[0], events[1], events[3]]
            .iter()
            .map(|e| e.as_bytes())
            .collect();
        let (_, _, rewritten) = run(&chunks);
        assert_eq!(rewritten, 0, "no chunk needed a rewrite");
    }

    /// A CRLF cut between its CR and LF (found by fuzzing): the LF goes with its event.
    #[test]
    fn a_crlf_split_across_chunks_goes_with_its_event() {
        let stream = STREAM.replace('\n', "\r\n");
        let bytes = stream.as_bytes();
        let want = without_usage_chunk(STREAM).replace('\n', "\r\n");
        for at in 0..=bytes.len() {
            let (out, r, _) = run(&[&bytes[..at], &bytes[at..]]);
            assert_eq!(String::from_utf8(out).unwrap(), want, "split at {at}");
            assert_eq!(r.state.usage.map(|u| u.total), Some(4), "split at {at}");
        }
        let one_byte_chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&one_byte_chunks).0, want.as_bytes());
    }

    #[test]
    fn crlf_and_cr_line_ends() {
        for eol in ["\r\n", "\r"] {
            let stream = STREAM.replace('\n', eol);
            let (out, r, _) = run(&[stream.as_bytes()]);
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains("\"choices\":[]"), "{eol:?}: {out}");
            assert!(out.contains("[DONE]"));
            assert_eq!(r.state.usage.map(|u| u.total), Some(4));
        }
    }

    #[test]
    fn an_overlong_event_turns_the_filter_off_without_losing_bytes() {
        let long = format!("data: \"{}\"\n\n", "x".repeat(MAX_HELD + 256 * 1024));
        let stream = format!("{long}{STREAM}");
        let chunks: Vec<&[u8]> = stream.as_bytes().chunks(64 * 1024).collect();
        let (out, r, _) = run(&chunks);
        assert_eq!(out, stream.as_bytes(), "passes unchanged once off");
        assert_eq!(r.state.usage.map(|u| u.total), Some(4));
    }

    #[test]
    fn events_end_at_their_blank_line_whatever_the_line_ends() {
        assert_eq!(event_end(b"data: x\n\nrest"), Some(9));
        assert_eq!(event_end(b"data: x\r\n\r\nrest"), Some(11));
        assert_eq!(event_end(b"data: x\r\rrest"), Some(9));
        assert_eq!(event_end(b"\n"), Some(1));
        assert_eq!(event_end(b"data: x\n"), None);
        assert_eq!(event_end(b""), None);
    }

    #[test]
    fn the_end_of_a_stream_without_its_blank_line() {
        let now = Instant::now();
        let usage_only =
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"total_tokens\":2}}";
        let content = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}";
        for (tail, want) in [
            (usage_only, Some(Bytes::new())),
            (content, Some(Bytes::from(content))),
        ] {
            let (mut f, mut r) = (UsageChunkFilter::default(), SseReader::new(&Chat));
            f.feed(tail.as_bytes(), &mut r, now);
            assert_eq!(f.finish(&mut r, now), want, "{tail}");
        }
        let (mut f, mut r) = (UsageChunkFilter::default(), SseReader::new(&Chat));
        f.feed(format!("{content}\n\n").as_bytes(), &mut r, now);
        assert_eq!(f.finish(&mut r, now), None, "nothing held");
    }

    #[test]
    fn an_event_ending_on_a_cr_with_more_held_keeps_the_next_lf() {
        // The usage-only event ends on CR CR, but the chunk goes on: the LF that starts the
        // next chunk belongs to the held event, not to the dropped one.
        let now = Instant::now();
        let (mut f, mut r) = (UsageChunkFilter::default(), SseReader::new(&Chat));
        let first = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"total_tokens\":2}}\r\rdata: {\"choices\":[{\"delta\":{}}]}";
        let mut out = f.feed(first.as_bytes(), &mut r, now).unwrap().to_vec();
        out.extend_from_slice(&f.feed(b"\n\n", &mut r, now).unwrap());
        assert_eq!(out, b"data: {\"choices\":[{\"delta\":{}}]}\n\n");
    }

    #[test]
    fn an_event_of_exactly_the_bound_is_still_filtered() {
        assert_eq!(MAX_HELD, 1 << 20, "1 MiB, as the README says");
        let now = Instant::now();
        let (mut f, mut r) = (UsageChunkFilter::default(), SseReader::new(&Chat));
        let head = "data: {\"choices\":[{\"delta\":{}}],\"pad\":\"";
        let big = format!("{head}{}", "x".repeat(MAX_HELD - head.len()));
        assert_eq!(big.len(), MAX_HELD);
        f.feed(big.as_bytes(), &mut r, now);
        f.feed(b"\"}\n\n", &mut r, now);
        // Still filtering: the usage-only event that follows is taken out.
        let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"total_tokens\":2}}\n\n";
        assert_eq!(f.feed(usage.as_bytes(), &mut r, now), Some(Bytes::new()));
    }
}
