//! LLM spans. When traces are exported, each ext_proc stream records one span
//! ([`crate::otlp::SpanWriter`]): it lives from the request headers to the end of the response
//! (a stream's last event, or the client leaving), a child of the client's `traceparent`, its
//! context sent to the provider. It is named after the operation and carries OpenInference
//! attributes (the default, what Arize Phoenix reads) or OpenTelemetry's GenAI semantic
//! conventions, written as OTLP protobuf as they are known.
//!
//! Cost: nothing here runs unless traces are exported. Then the request body's top level is
//! split into raw fields once and each attribute reads the field it needs (chat messages and
//! answers into borrowed typed structs, `view`) and is encoded from the borrowed text; a JSON
//! answer is read once more; a stream's output is what its events already gave the family's
//! reader (kept in a bounded [`Capture`](crate::llm::Capture)), not parsed again.
//!
//! Privacy: the `OPENINFERENCE_HIDE_*` switches ([`TraceConfig`]) replace what they hide with
//! [`REDACTED`]; keys never reach a span (no header is recorded, and a body's secrets are the
//! client's own text).

use std::borrow::Cow;

use serde_json::Value;

use crate::config::{Config, Schema};
use crate::llm::{Api, Family};
use crate::otlp::{now_ns, Sink, SpanWriter, Tracer, Value as AttrValue};
use crate::telemetry::{TraceConfig, TraceFormat, REDACTED};

use super::request::Routed;
use super::response::ResponseOutcome;

/// What a base64 `data:` image URL becomes (the bytes would swamp the trace store).
fn image_placeholder(url: &str) -> String {
    let kind = url
        .strip_prefix("data:")
        .and_then(|r| r.split([';', ',']).next())
        .unwrap_or("image");
    format!("data:{kind};base64,[{} bytes omitted]", url.len())
}

/// What a request's attributes, and then its answer's, may take: this many
/// `--trace-max-output-bytes` each (1 MiB by default), room for the capped `input.value` or
/// `output.value` and the messages of a long conversation; past it attributes are dropped and
/// counted in the span.
const SPAN_LIMIT_FACTOR: usize = 16;

/// Bytes of attributes each phase of a request (its request, its answer) may add.
fn limit(cfg: &TraceConfig) -> usize {
    SPAN_LIMIT_FACTOR * cfg.max_output_bytes.max(4096)
}

/// Appended to a streamed answer cut at the cap.
pub const TRUNCATED: &str = "…[truncated by ai-extproc]";

/// `text` cut to at most `cap` bytes (on a character boundary), marked when cut: a 9 MB
/// vision body does not become a 9 MB attribute.
fn capped(text: &str, cap: usize) -> Cow<'_, str> {
    if text.len() <= cap {
        return Cow::Borrowed(text);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{TRUNCATED}", &text[..end]))
}

/// `bytes` as text (lossy), capped: borrowed when it is valid UTF-8 within the cap.
fn capped_bytes(bytes: &[u8], cap: usize) -> Cow<'_, str> {
    match String::from_utf8_lossy(bytes) {
        Cow::Borrowed(text) => capped(text, cap),
        Cow::Owned(text) => Cow::Owned(capped(&text, cap).into_owned()),
    }
}

/// The span of one request, when traces are exported: recorded as the request goes, sent to
/// the exporter when the stream ends (dropped).
#[derive(Debug)]
pub struct LlmSpan {
    w: SpanWriter,
    cfg: TraceConfig,
    sink: Sink,
}

impl LlmSpan {
    /// The span of a request whose headers carry `headers` (`traceparent`, `tracestate`,
    /// `x-request-id`): a child of the client's trace, named `ext_proc` until the endpoint is
    /// known.
    pub fn start(tracer: &Tracer, headers: &[(String, String)], cfg: TraceConfig) -> Self {
        let mut w = SpanWriter::start("ext_proc", headers, &tracer.sampler, limit(&cfg));
        if w.sampled() {
            if let Some((_, id)) = headers.iter().find(|(k, _)| k == "x-request-id") {
                w.attr("request_id", id);
            }
        }
        Self {
            w,
            cfg,
            sink: tracer.sink.clone(),
        }
    }

    /// Most bytes of the answer to keep for the span; none when the span is not recorded
    /// (an unsampled request keeps nothing of its answer).
    pub fn capture_bytes(&self) -> Option<usize> {
        self.w.sampled().then_some(self.cfg.max_output_bytes)
    }

    /// The W3C headers that carry the span's context to the provider.
    pub fn context_headers(&self) -> Vec<(String, String)> {
        self.w.context_headers()
    }

    /// The endpoint is known: the span takes the operation's name.
    pub fn named(&mut self, family: &dyn Family) {
        let name = match self.cfg.format {
            TraceFormat::OpenInference => family.span_name(),
            TraceFormat::GenAi => family.operation(),
        };
        self.w.rename(name);
    }

    /// The endpoint has no family (the models list, a stored response): the span takes
    /// `name`.
    pub fn named_as(&mut self, name: &'static str) {
        self.w.rename(name);
    }

    /// The request was routed: what it asks, of whom.
    pub(crate) fn request(&mut self, config: &Config, routed: &Routed, body: &[u8]) {
        if !self.w.sampled() {
            return;
        }
        if self.cfg.format == TraceFormat::GenAi {
            self.w.rename(format!(
                "{} {}",
                routed.family.operation(),
                routed.requested_model
            ));
        }
        // The body shows up about twice: `input.value` and the messages.
        let cap = self.cfg.max_output_bytes;
        self.w.budget(limit(&self.cfg));
        self.w.reserve(2 * body.len().min(cap) + 1024);
        let mut a = Attrs {
            cfg: &self.cfg,
            w: &mut self.w,
        };
        request_attributes(&mut a, config, routed, body);
    }

    /// The response ended (or the client left): tokens, the answer, timings, attempts.
    pub(crate) fn response(&mut self, config: &Config, routed: &Routed, outcome: &ResponseOutcome) {
        if !self.w.sampled() {
            return;
        }
        self.w.budget(limit(&self.cfg));
        let answer = outcome.trace_body.as_ref().map_or(0, |b| b.len());
        self.w
            .reserve(2 * answer.min(self.cfg.max_output_bytes) + 512);
        let mut a = Attrs {
            cfg: &self.cfg,
            w: &mut self.w,
        };
        response_attributes(&mut a, config, routed, outcome);
        if let Some(ms) = outcome.time_to_first_token_ms {
            let since = (routed.sent.elapsed().as_secs_f64() - ms / 1000.0).max(0.0);
            let at = now_ns().saturating_sub((since * 1e9) as u64);
            self.w.event(
                "first_token",
                at,
                &[("time_to_first_token_ms", AttrValue::Double(ms))],
            );
        }
        for (i, attempt) in routed.attempts.list().iter().enumerate() {
            self.w.event(
                "attempt",
                now_ns(),
                &[
                    ("attempt", AttrValue::Int(i as i64 + 1)),
                    ("backend", AttrValue::Str(&attempt.backend)),
                    (
                        "status",
                        AttrValue::Int(attempt.status.map_or(0, i64::from)),
                    ),
                ],
            );
        }
        if !(200..300).contains(&routed.status) && routed.status != 0 {
            self.error(
                &format!("the provider answered {}", routed.status),
                "provider_error",
            );
        }
    }

    /// The request failed (refused by the gateway, or the provider's error): error status and
    /// the error's type.
    pub fn error(&mut self, message: &str, kind: &str) {
        if !self.w.sampled() {
            return;
        }
        self.w.error(message);
        let key = match self.cfg.format {
            TraceFormat::OpenInference => "exception.type",
            TraceFormat::GenAi => "error.type",
        };
        self.w.late_str(key, kind.to_string());
        self.w.late_str("exception.message", message.to_string());
    }

    /// A reply the gateway wrote itself, with `status` and `body` (its error type is read from
    /// OpenAI's or Anthropic's envelope).
    pub fn refused(&mut self, status: u16, body: &[u8]) {
        if status < 400 || !self.w.sampled() {
            return;
        }
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let e = if v["error"].is_object() {
            &v["error"]
        } else {
            &v
        };
        let kind = e["type"].as_str().unwrap_or("error");
        let message = e["message"].as_str().unwrap_or("refused");
        self.w
            .late_int("http.response.status_code", i64::from(status));
        self.error(message, kind);
    }
}

impl Drop for LlmSpan {
    /// The stream ended: the span is finished and queued for export.
    fn drop(&mut self) {
        if self.w.sampled() {
            self.sink.send(self.w.finish(now_ns()));
        }
    }
}

/// Who hosts a backend, for `llm.provider` / `gen_ai.provider.name`.
fn provider(config: &Config, routed: &Routed) -> String {
    let backend = &config.backends[routed.selection.backend];
    if backend.schema == Schema::AzureOpenAI {
        return "azure".into();
    }
    let host = config.clusters[backend.cluster].host().unwrap_or("");
    for (needle, name) in [
        ("fireworks.ai", "fireworks"),
        ("openai.com", "openai"),
        ("anthropic.com", "anthropic"),
        ("cohere.com", "cohere"),
        ("amazonaws.com", "aws"),
        ("googleapis.com", "google"),
    ] {
        if host.ends_with(needle) {
            return name.into();
        }
    }
    backend.name.clone()
}

fn system(family: &dyn Family) -> &'static str {
    match family.api() {
        Api::OpenAI => "openai",
        Api::Anthropic => "anthropic",
        Api::Cohere => "cohere",
    }
}

/// Writes attributes into the span, knowing what is hidden.
struct Attrs<'a> {
    cfg: &'a TraceConfig,
    w: &'a mut SpanWriter,
}

impl Attrs<'_> {
    fn put<'v>(&mut self, key: &str, value: impl Into<AttrValue<'v>>) {
        self.w.attr(key, value);
    }

    /// Text from the conversation, capped like `input.value` (a value already capped, at most
    /// the cap and the marker long, is left as it is), or the redaction marker.
    fn text(&mut self, key: &str, value: &str, hidden: bool) {
        let cap = self.cfg.max_output_bytes;
        if hidden {
            self.put(key, REDACTED);
        } else if value.len() > cap + TRUNCATED.len() {
            self.put(key, capped(value, cap).as_ref());
        } else {
            self.put(key, value);
        }
    }
}

/// The request's attributes, in the span's format.
fn request_attributes(a: &mut Attrs<'_>, config: &Config, routed: &Routed, body: &[u8]) {
    let fields = view::Fields::parse(body).unwrap_or_default();
    let provider = provider(config, routed);
    match a.cfg.format {
        TraceFormat::OpenInference => {
            openinference::request(a, routed, &provider, &fields, body);
        }
        TraceFormat::GenAi => genai::request(a, routed, &provider, &fields),
    }
}

/// The response's attributes, in the span's format.
fn response_attributes(
    a: &mut Attrs<'_>,
    config: &Config,
    routed: &Routed,
    outcome: &ResponseOutcome,
) {
    let model = outcome
        .response_model
        .clone()
        .unwrap_or_else(|| routed.provider_model.clone());
    let answer = messages::answer(routed.family, outcome, a.cfg.max_output_bytes);
    let usage = outcome.usage.as_ref();
    match a.cfg.format {
        TraceFormat::OpenInference => {
            let backend = routed.backend_name(config);
            openinference::response(a, model, backend, usage, &answer);
        }
        TraceFormat::GenAi => {
            genai::response(a, &model, outcome.response_id.as_deref(), usage, &answer);
        }
    }
}

mod genai;
mod messages;
mod openinference;
#[cfg(test)]
mod tests;
mod view;
