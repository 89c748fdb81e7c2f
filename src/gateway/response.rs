//! How the processor reads a response body: JSON buffered whole, SSE streamed event by event
//! (never held back), compressed bodies decoded on the side, and non-JSON errors rewritten as
//! OpenAI-style JSON. The bytes the client gets are the provider's, except for that rewrite.

use std::time::Instant;

use bytes::Bytes;

use crate::llm::{decode_all, Decoder, Family, Limits, SseReader, Usage, UsageChunkFilter};

use super::headers::Headers;
use super::reply::{BodyMode, Continue};

/// Largest error text quoted in a rewritten error body.
const MAX_ERROR_TEXT: usize = 1024;

/// What the processor does with a response body.
#[derive(Debug)]
pub enum ResponseBody {
    /// A 2xx JSON body, buffered whole, for its usage.
    Json {
        family: &'static dyn Family,
        encoding: String,
        buffer: Vec<u8>,
        /// Keep the body for the request's span.
        trace: bool,
    },
    /// A 2xx event stream, read as it passes.
    Sse {
        decoder: Option<Box<Decoder>>,
        reader: Box<SseReader>,
        broken: bool,
        /// Takes out the usage-only chunk the gateway asked for and the client did not.
        filter: Option<Box<UsageChunkFilter>>,
    },
    /// A non-2xx body: buffered, then rewritten as the family's error when it is not JSON,
    /// and rid of the backend's key whatever it is.
    Error {
        family: &'static dyn Family,
        encoding: String,
        buffer: Vec<u8>,
    },
}

/// What a finished response body gave.
#[derive(Debug, Clone, Default)]
pub struct ResponseOutcome {
    pub usage: Option<Usage>,
    pub response_model: Option<String>,
    /// The response's id, where later requests may name it (the Responses API).
    pub response_id: Option<String>,
    /// For the span, when traces are exported: a JSON answer's body, or what a stream said.
    pub trace_body: Option<bytes::Bytes>,
    pub capture: Option<crate::llm::Capture>,
    /// Streams: ms from sending the request to the first token, and the mean gap between tokens.
    pub time_to_first_token_ms: Option<f64>,
    pub inter_token_latency_ms: Option<f64>,
    /// A changed body (and its headers) for the client.
    pub replacement: Option<Continue>,
    /// Streams: events that carried generated text (what a stream cut before its usage used).
    pub token_events: u64,
}

fn mime(headers: &Headers) -> String {
    headers
        .get("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl ResponseBody {
    /// The reading a response needs, or `None` when its body can pass unseen. `strip_usage_chunk`:
    /// the gateway asked for stream usage the client did not ask for.
    pub fn for_response(
        family: &'static dyn Family,
        headers: &Headers,
        status: u16,
        strip_usage_chunk: bool,
        capture: Option<usize>,
    ) -> Option<Self> {
        let mime = mime(headers);
        let encoding = headers.get("content-encoding").unwrap_or("").to_string();
        let is_json = mime == "application/json" || mime.ends_with("+json");
        match (200..300).contains(&status) {
            true if mime == "text/event-stream" => {
                // An unknown encoding leaves the stream unread (it still passes through).
                let (decoder, broken) = match Decoder::for_encoding(&encoding, Limits::default()) {
                    Ok(d) => (d.map(Box::new), false),
                    Err(e) => {
                        tracing::warn!(error = %e, "usage of this stream cannot be read");
                        (None, true)
                    }
                };
                // Encoded streams pass as sent: the request asked for identity, and rewriting
                // compressed bytes is not worth a client's stray chunk.
                let filter = (strip_usage_chunk && decoder.is_none() && !broken)
                    .then(Box::<UsageChunkFilter>::default);
                let mut reader = Box::new(SseReader::new(family));
                // A traced request keeps its answer, up to `capture` bytes, for its span.
                reader.state.capture = capture.map(crate::llm::Capture::new);
                Some(Self::Sse {
                    decoder,
                    reader,
                    broken,
                    filter,
                })
            }
            true if is_json => Some(Self::Json {
                family,
                encoding,
                buffer: Vec::new(),
                trace: capture.is_some(),
            }),
            true => None,
            // Errors are read whole, JSON ones too: a provider's error may echo the request's
            // headers, and the key must not come back to the client.
            false => Some(Self::Error {
                family,
                encoding,
                buffer: Vec::new(),
            }),
        }
    }

    /// Bytes buffered so far that [`ResponseBody::finish`] will decode, for a compressed body.
    pub fn compressed_len(&self) -> Option<usize> {
        match self {
            Self::Json {
                encoding, buffer, ..
            }
            | Self::Error {
                encoding, buffer, ..
            } => (!matches!(encoding.trim(), "" | "identity")).then_some(buffer.len()),
            Self::Sse { .. } => None,
        }
    }

    pub fn mode(&self) -> BodyMode {
        match self {
            Self::Sse { .. } => BodyMode::Streamed,
            Self::Json { .. } | Self::Error { .. } => BodyMode::Buffered,
        }
    }

    /// Reads a chunk; returns what the client gets instead of it, when that differs.
    pub fn feed(&mut self, chunk: &[u8], now: Instant) -> Option<Bytes> {
        match self {
            Self::Json { buffer, .. } | Self::Error { buffer, .. } => {
                buffer.extend_from_slice(chunk);
                None
            }
            Self::Sse {
                filter: Some(filter),
                reader,
                ..
            } => filter.feed(chunk, reader, now),
            Self::Sse {
                decoder,
                reader,
                broken,
                filter: None,
            } => {
                if *broken {
                    return None;
                }
                match decoder {
                    None => reader.feed(chunk, now),
                    Some(d) => match d.feed(chunk) {
                        Ok(bytes) => reader.feed(&bytes, now),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot decode the event stream; usage not read");
                            *broken = true;
                        }
                    },
                }
                None
            }
        }
    }

    /// The end of the body: bytes still held back, to send with the last chunk.
    pub fn flush(&mut self, now: Instant) -> Option<Bytes> {
        match self {
            Self::Sse {
                filter: Some(filter),
                reader,
                ..
            } => filter.finish(reader, now),
            Self::Sse { .. } | Self::Json { .. } | Self::Error { .. } => None,
        }
    }

    /// What the body gave; `secret` (the backend's key) never goes back to the client.
    pub fn finish(
        self,
        status: u16,
        sent: Instant,
        now: Instant,
        secret: Option<&str>,
    ) -> ResponseOutcome {
        match self {
            Self::Json {
                family,
                encoding,
                buffer,
                trace,
            } => {
                match decode_all(&encoding, &buffer, Limits::default()) {
                    Ok(body) if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() => {
                        // A success that claims JSON but is not: the client could not use it either.
                        tracing::warn!(
                            status,
                            "the provider sent an invalid JSON body; answering 502"
                        );
                        ResponseOutcome {
                            replacement: Some(invalid_json_replacement(family, status)),
                            ..ResponseOutcome::default()
                        }
                    }
                    Ok(body) => {
                        let info = family.response_info(&body);
                        ResponseOutcome {
                            usage: info.usage,
                            response_model: info.model,
                            response_id: info.id,
                            trace_body: trace.then(|| bytes::Bytes::from(body)),
                            ..ResponseOutcome::default()
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot decode the response; usage not read");
                        ResponseOutcome::default()
                    }
                }
            }
            Self::Sse { mut reader, .. } => {
                reader.finish(now);
                let (ttft, itl) = timing(&reader, sent);
                ResponseOutcome {
                    usage: reader.state.usage,
                    response_model: reader.state.model.clone(),
                    response_id: reader.state.id.clone(),
                    capture: reader.state.capture.take(),
                    trace_body: None,
                    time_to_first_token_ms: ttft,
                    inter_token_latency_ms: itl,
                    replacement: None,
                    token_events: reader.state.token_events,
                }
            }
            Self::Error {
                family,
                encoding,
                buffer,
            } => ResponseOutcome {
                replacement: error_replacement(family, status, &encoding, &buffer, secret),
                ..ResponseOutcome::default()
            },
        }
    }
}

/// Token timing of a stream, relative to when the request was sent: time to the first token,
/// and the mean gap between tokens (output tokens when the usage gives them, else token events).
fn timing(reader: &SseReader, sent: Instant) -> (Option<f64>, Option<f64>) {
    let s = &reader.state;
    let ttft = s.first_token.map(|t| ms(t.saturating_duration_since(sent)));
    let gaps = s
        .usage
        .map(|u| u.output)
        .filter(|n| *n > 1)
        .unwrap_or(s.token_events);
    let itl = match (s.first_token, s.last_token) {
        (Some(first), Some(last)) if gaps > 1 => {
            Some(ms(last.saturating_duration_since(first)) / (gaps - 1) as f64)
        }
        _ => None,
    };
    (ttft, itl)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A 502 in the family's shape for a provider success whose JSON body does not parse.
fn invalid_json_replacement(family: &dyn Family, status: u16) -> Continue {
    let message = format!("The provider answered {status} with a body that is not valid JSON.");
    let json = family.error_body(message, "server_error", None, Some("upstream_error"));
    Continue {
        set_headers: vec![
            (":status".into(), "502".into()),
            ("content-type".into(), "application/json".into()),
            ("content-length".into(), json.len().to_string()),
        ],
        remove_headers: vec!["content-encoding".into()],
        body: Some(Bytes::from(json)),
        ..Continue::default()
    }
}

/// A provider error for the client: a non-JSON one in the family's JSON shape with the same
/// status (quoting its text), a JSON one as sent; either rid of `secret`. `None` when it passes
/// unchanged.
fn error_replacement(
    family: &dyn Family,
    status: u16,
    encoding: &str,
    body: &[u8],
    secret: Option<&str>,
) -> Option<Continue> {
    let decoded = decode_all(encoding, body, Limits::default()).unwrap_or_else(|_| body.to_vec());
    if serde_json::from_slice::<serde::de::IgnoredAny>(&decoded).is_ok() {
        let redacted = redact(&decoded, secret)?;
        tracing::warn!(status, "the provider's error echoed the key; removed");
        return Some(replacement_body(redacted, None));
    }
    let redacted = redact(&decoded, secret);
    let text = String::from_utf8_lossy(redacted.as_deref().unwrap_or(&decoded)).into_owned();
    let text = text.trim();
    let mut cut = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let message = if text.is_empty() {
        format!("The provider answered {status} with an empty body.")
    } else {
        format!("The provider answered {status}: {}", &text[..cut])
    };
    let kind = if status >= 500 {
        "server_error"
    } else {
        "upstream_error"
    };
    let json = family.error_body(message, kind, None, Some("upstream_error"));
    Some(replacement_body(json, Some("application/json")))
}

/// A new body for the client: plain (any encoding is gone), its length, maybe its type.
fn replacement_body(body: Vec<u8>, content_type: Option<&str>) -> Continue {
    let mut set_headers = vec![("content-length".to_string(), body.len().to_string())];
    if let Some(t) = content_type {
        set_headers.push(("content-type".into(), t.into()));
    }
    Continue {
        set_headers,
        remove_headers: vec!["content-encoding".into()],
        body: Some(Bytes::from(body)),
        ..Continue::default()
    }
}

/// `bytes` with every occurrence of `secret` replaced by `***`; `None` when there is none (or
/// no usable secret: a key shorter than 4 characters would match too much).
fn redact(bytes: &[u8], secret: Option<&str>) -> Option<Vec<u8>> {
    let secret = secret.filter(|s| s.len() >= 4)?.as_bytes();
    let first = bytes.windows(secret.len()).position(|w| w == secret)?;
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut rest = &bytes[first..];
    while !rest.is_empty() {
        if rest.starts_with(secret) {
            out.extend_from_slice(b"***");
            rest = &rest[secret.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    Some(out)
}
