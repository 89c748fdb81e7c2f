//! Server-sent events, read incrementally as the chunks pass: events may be split across
//! chunks or packed several to a chunk; lines end with LF, CRLF or CR; comment lines and
//! `data: [DONE]` are understood. Each event's data goes to the API family, which reads usage
//! (the last one wins: it is cumulative), the provider's model, and when tokens arrive. Never
//! changes the bytes.

use std::time::Instant;

use super::family::Family;
use super::usage::Usage;

mod usage_chunk;

pub use usage_chunk::UsageChunkFilter;

/// Longest line kept while waiting for its end; a longer one is skipped (bounded memory).
pub const MAX_LINE: usize = 4 * 1024 * 1024;

/// Incremental SSE reader; what an event says is read by its API family.
#[derive(Debug)]
pub struct SseReader {
    family: &'static dyn Family,
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// A CR ended the last line: a following LF belongs to it.
    after_cr: bool,
    /// Data lines of the current event.
    data: Vec<u8>,
    has_data: bool,
    skipping_long_line: bool,
    /// What has been read so far.
    pub state: SseState,
}

/// What the stream has said so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseState {
    /// Latest usage seen.
    pub usage: Option<Usage>,
    /// First model named.
    pub model: Option<String>,
    /// The response's id, where a later request may name it (the Responses API).
    pub id: Option<String>,
    /// Events read.
    pub events: u64,
    /// Events whose data was not JSON (passed through all the same).
    pub malformed: u64,
    /// Events that carried generated text.
    pub token_events: u64,
    /// OpenAI's usage-only chunks (`"choices": []` and a usage), sent when asked for.
    pub usage_only_events: u64,
    /// `data: [DONE]` seen.
    pub done: bool,
    /// When the first and the latest token event arrived.
    pub first_token: Option<Instant>,
    pub last_token: Option<Instant>,
    /// The generated output, kept only for a trace (`None`: not kept).
    pub capture: Option<Capture>,
}

/// A stream's output as its events tell it, for a trace: text, reasoning and tool calls,
/// bounded (past `cap` bytes in all, the rest is dropped and `truncated` set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    pub text: String,
    pub reasoning: String,
    /// Tool calls as they stream, in the order they began: (id, name, arguments).
    pub tool_calls: Vec<(String, String, String)>,
    pub truncated: bool,
    cap: usize,
    used: usize,
    /// The stream's own number for each of `tool_calls` (OpenAI's call `index`, Anthropic's
    /// content block `index`, which counts text blocks too).
    call_keys: Vec<usize>,
}

/// Most tool calls kept from one stream.
const MAX_TOOL_CALLS: usize = 128;

impl Capture {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            ..Self::default()
        }
    }

    /// Room for `n` more bytes; past the cap, nothing more is kept.
    fn room(&mut self, n: usize) -> bool {
        if self.used + n > self.cap {
            self.truncated = true;
            return false;
        }
        self.used += n;
        true
    }
}

impl SseState {
    /// Generated text, kept when a trace wants it.
    pub fn capture_text(&mut self, text: &str) {
        self.capture_into(text, |c| &mut c.text);
    }

    /// Reasoning text, kept when a trace wants it.
    pub fn capture_reasoning(&mut self, text: &str) {
        self.capture_into(text, |c| &mut c.reasoning);
    }

    fn capture_into(&mut self, text: &str, field: fn(&mut Capture) -> &mut String) {
        if let Some(c) = self.capture.as_mut() {
            if c.room(text.len()) {
                field(c).push_str(text);
            }
        }
    }

    /// A piece of the tool call the stream numbers `key`: its id and name when first seen,
    /// then its arguments.
    pub fn capture_tool_call(
        &mut self,
        key: usize,
        id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
    ) {
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        let at = match c.call_keys.iter().position(|k| *k == key) {
            Some(at) => at,
            None if c.call_keys.len() < MAX_TOOL_CALLS => {
                c.call_keys.push(key);
                c.tool_calls.push(Default::default());
                c.call_keys.len() - 1
            }
            None => return,
        };
        let n = id.map_or(0, str::len) + name.map_or(0, str::len) + arguments.len();
        if !c.room(n) {
            return;
        }
        let call = &mut c.tool_calls[at];
        if let Some(id) = id {
            call.0.push_str(id);
        }
        if let Some(name) = name {
            call.1.push_str(name);
        }
        call.2.push_str(arguments);
    }
}

impl SseReader {
    pub fn new(family: &'static dyn Family) -> Self {
        Self {
            family,
            line: Vec::new(),
            after_cr: false,
            data: Vec::new(),
            has_data: false,
            skipping_long_line: false,
            state: SseState::default(),
        }
    }

    /// Reads a chunk that arrived at `now`.
    pub fn feed(&mut self, chunk: &[u8], now: Instant) {
        let mut rest = chunk;
        if self.after_cr {
            if let Some(b'\n') = rest.first() {
                rest = &rest[1..];
            }
            self.after_cr = false;
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = rest.split_at(pos);
            self.push_line_part(head);
            let line = std::mem::take(&mut self.line);
            if !std::mem::take(&mut self.skipping_long_line) {
                self.line_done(&line, now);
            }
            self.line = line;
            self.line.clear();
            rest = &tail[1..];
            if tail[0] == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_line_part(rest);
    }

    fn push_line_part(&mut self, part: &[u8]) {
        if self.skipping_long_line {
            return;
        }
        if self.line.len() + part.len() > MAX_LINE {
            self.line.clear();
            self.skipping_long_line = true;
            return;
        }
        self.line.extend_from_slice(part);
    }

    /// Ends the stream: an event without its closing blank line still counts.
    pub fn finish(&mut self, now: Instant) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, now);
        }
        self.dispatch(now);
    }

    fn line_done(&mut self, line: &[u8], now: Instant) {
        if line.is_empty() {
            self.dispatch(now);
            return;
        }
        if line[0] == b':' {
            return; // comment / keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
    }

    fn dispatch(&mut self, now: Instant) {
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        let data = std::mem::take(&mut self.data);
        self.state.events += 1;
        if data.as_slice() == b"[DONE]" {
            self.state.done = true;
        } else {
            self.read_event(&data, now);
        }
        self.data = data;
        self.data.clear();
    }

    fn read_event(&mut self, data: &[u8], now: Instant) {
        self.family.read_event(data, &mut self.state, now);
    }
}

#[cfg(test)]
mod tests;
