//! LLM spans. When traces are exported, the ext_proc stream's span is the request's LLM span:
//! it lives from the request headers to the end of the response (a stream's last event, or the
//! client leaving), a child of the client's `traceparent`, its context sent to the provider. It
//! is named after the operation and carries OpenInference attributes (the default, what Arize
//! Phoenix reads) or OpenTelemetry's GenAI semantic conventions.
//!
//! Cost: nothing here runs unless traces are exported. Then the request body's top level is
//! split into raw fields once and each attribute reads the field it needs (chat messages and
//! answers into borrowed typed structs, `view`); a JSON answer is read once more; a stream's
//! output is what its events already gave the family's reader (kept in a bounded
//! [`Capture`](crate::llm::Capture)), not parsed again.
//!
//! Privacy: the `OPENINFERENCE_HIDE_*` switches ([`TraceConfig`]) replace what they hide with
//! [`REDACTED`]; keys never reach a span (no header is recorded, and a body's secrets are the
//! client's own text).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::{Key, KeyValue, StringValue, Value as OtelValue};
use serde_json::Value;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{Config, Schema};
use crate::llm::{Api, Family, Usage};
use crate::telemetry::{TraceConfig, TraceFormat, REDACTED};

use super::request::Routed;
use super::response::ResponseOutcome;

/// What replaces a base64 `data:` image URL (the bytes would swamp the trace store).
fn image_placeholder(url: &str) -> String {
    let kind = url
        .strip_prefix("data:")
        .and_then(|r| r.split([';', ',']).next())
        .unwrap_or("image");
    format!("data:{kind};base64,[{} bytes omitted]", url.len())
}

/// Appended to a streamed answer cut at the cap.
pub const TRUNCATED: &str = "…[truncated by ai-extproc]";

/// `text` cut to at most `cap` bytes (on a character boundary), marked when cut: a 9 MB
/// vision body does not become a 9 MB attribute.
fn capped(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_string();
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &text[..end])
}

/// The span of one request, when traces are exported.
#[derive(Debug, Clone)]
pub struct LlmSpan {
    span: tracing::Span,
    cfg: TraceConfig,
}

impl LlmSpan {
    pub fn new(span: tracing::Span, cfg: TraceConfig) -> Self {
        Self { span, cfg }
    }

    /// Most bytes of a streamed answer to keep.
    pub fn max_output_bytes(&self) -> usize {
        self.cfg.max_output_bytes
    }

    /// One lookup of the OpenTelemetry span for all of `attrs` (each `set_attribute` of
    /// tracing-opentelemetry looks it up again).
    fn set(&self, attrs: Vec<KeyValue>) {
        self.span.context().span().set_attributes(attrs);
    }

    /// The endpoint is known: the span takes the operation's name.
    pub fn named(&self, family: &dyn Family) {
        let name = match self.cfg.format {
            TraceFormat::OpenInference => family.span_name(),
            TraceFormat::GenAi => family.operation(),
        };
        self.rename(name.to_string());
    }

    /// The span is already started (entered), so `otel.name` no longer renames it: the
    /// OpenTelemetry span is renamed itself.
    fn rename(&self, name: String) {
        self.span.context().span().update_name(name);
    }

    /// The request was routed: what it asks, of whom.
    pub(crate) fn request(&self, config: &Config, routed: &Routed, body: &[u8]) {
        let cfg = &self.cfg;
        if cfg.format == TraceFormat::GenAi {
            self.rename(format!(
                "{} {}",
                routed.family.operation(),
                routed.requested_model
            ));
        }
        self.set(request_attributes(cfg, config, routed, body));
    }

    /// The response ended (or the client left): tokens, the answer, timings, attempts.
    pub(crate) fn response(&self, config: &Config, routed: &Routed, outcome: &ResponseOutcome) {
        self.set(response_attributes(&self.cfg, config, routed, outcome));
        if let Some(ms) = outcome.time_to_first_token_ms {
            let at = SystemTime::now()
                .checked_sub(Duration::from_secs_f64(
                    (routed.sent.elapsed().as_secs_f64() - ms / 1000.0).max(0.0),
                ))
                .unwrap_or_else(SystemTime::now);
            self.span.add_event_with_timestamp(
                "first_token",
                at,
                vec![KeyValue::new("time_to_first_token_ms", ms)],
            );
        }
        for (i, attempt) in routed.attempts.list().iter().enumerate() {
            self.span.add_event(
                "attempt",
                vec![
                    KeyValue::new("attempt", i as i64 + 1),
                    KeyValue::new("backend", attempt.backend.clone()),
                    KeyValue::new("status", attempt.status.map_or(0, i64::from)),
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
    pub fn error(&self, message: &str, kind: &str) {
        self.span.set_status(Status::error(message.to_string()));
        let key = match self.cfg.format {
            TraceFormat::OpenInference => "exception.type",
            TraceFormat::GenAi => "error.type",
        };
        self.set(vec![
            KeyValue::new(key, kind.to_string()),
            KeyValue::new("exception.message", message.to_string()),
        ]);
    }

    /// A reply the gateway wrote itself, with `status` and `body` (its error type is read from
    /// OpenAI's or Anthropic's envelope).
    pub fn refused(&self, status: u16, body: &[u8]) {
        if status < 400 {
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
        self.set(vec![KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        )]);
        self.error(message, kind);
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

/// A builder of `KeyValue`s that knows what is hidden.
struct Attrs<'a> {
    cfg: &'a TraceConfig,
    out: Vec<KeyValue>,
}

impl<'a> Attrs<'a> {
    fn new(cfg: &'a TraceConfig) -> Self {
        Self {
            cfg,
            out: Vec::new(),
        }
    }

    /// A fixed name (`&'static str`) stays static: the SDK clones every attribute of every
    /// span once more when it exports, and a static key or a shared string costs nothing to
    /// clone.
    fn put(&mut self, key: impl Into<Key>, value: impl Into<OtelValue>) {
        self.out.push(KeyValue::new(key, value));
    }

    /// Text from the conversation (shared, so the exporter's clone does not copy it), or the
    /// redaction marker.
    fn text(&mut self, key: impl Into<Key>, value: &str, hidden: bool) {
        let v: OtelValue = if hidden {
            REDACTED.into()
        } else {
            OtelValue::String(StringValue::from(Arc::<str>::from(value)))
        };
        self.put(key, v);
    }

    fn usage(&mut self, u: &Usage) {
        let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        match self.cfg.format {
            TraceFormat::OpenInference => {
                self.put("llm.token_count.prompt", n(u.input));
                self.put("llm.token_count.completion", n(u.output));
                self.put("llm.token_count.total", n(u.total));
                self.put(
                    "llm.token_count.prompt_details.cache_read",
                    n(u.cached_input),
                );
                self.put(
                    "llm.token_count.prompt_details.cache_write",
                    n(u.cache_creation_input),
                );
                self.put(
                    "llm.token_count.completion_details.reasoning",
                    n(u.reasoning),
                );
            }
            TraceFormat::GenAi => {
                self.put("gen_ai.usage.input_tokens", n(u.input));
                self.put("gen_ai.usage.output_tokens", n(u.output));
                self.put("gen_ai.usage.cache_read.input_tokens", n(u.cached_input));
                self.put(
                    "gen_ai.usage.cache_creation.input_tokens",
                    n(u.cache_creation_input),
                );
            }
        }
    }
}

/// One message, as OpenInference lists them.
#[derive(Debug, Default)]
struct Message {
    role: String,
    /// Plain text content.
    content: Option<String>,
    /// Parts: ("text", text) or ("image", url).
    parts: Vec<(&'static str, String)>,
    /// Reasoning text (an answer's).
    reasoning: Option<String>,
    /// (id, name, arguments)
    tool_calls: Vec<(String, String, String)>,
    tool_call_id: Option<String>,
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Content as text or parts, whichever API wrote it (OpenAI's `text`/`image_url` parts, the
/// Responses API's `input_text`/`input_image`/`output_text`, Anthropic's `text`/`image`/
/// `thinking`/`tool_use`/`tool_result` blocks).
fn read_content(content: &Value, m: &mut Message) {
    match content {
        Value::String(s) => m.content = Some(s.clone()),
        Value::Array(parts) => {
            for p in parts {
                match p["type"].as_str().unwrap_or("") {
                    "text" | "input_text" | "output_text" => {
                        m.parts.push(("text", str_of(&p["text"])));
                    }
                    "image_url" => {
                        let url = p["image_url"]["url"]
                            .as_str()
                            .or(p["image_url"].as_str())
                            .unwrap_or("");
                        m.parts.push(("image", url.to_string()));
                    }
                    "input_image" => {
                        m.parts
                            .push(("image", p["image_url"].as_str().unwrap_or("").to_string()));
                    }
                    "image" => {
                        // Anthropic: a URL source, or base64 data.
                        let src = &p["source"];
                        let url = match src["type"].as_str() {
                            Some("url") => src["url"].as_str().unwrap_or("").to_string(),
                            _ => format!(
                                "data:{};base64,{}",
                                src["media_type"].as_str().unwrap_or("image"),
                                src["data"].as_str().unwrap_or("")
                            ),
                        };
                        m.parts.push(("image", url));
                    }
                    "thinking" => {
                        m.reasoning = Some(str_of(&p["thinking"]));
                    }
                    "tool_use" => m.tool_calls.push((
                        str_of(&p["id"]),
                        str_of(&p["name"]),
                        p["input"].to_string(),
                    )),
                    "tool_result" => {
                        m.tool_call_id = Some(str_of(&p["tool_use_id"]));
                        match &p["content"] {
                            Value::String(s) => m.parts.push(("text", s.clone())),
                            Value::Array(inner) => {
                                for i in inner {
                                    m.parts.push(("text", str_of(&i["text"])));
                                }
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// The request's messages, whichever family.
fn input_messages(family: &dyn Family, fields: &view::Fields<'_>) -> Vec<Message> {
    if family.name() == "chat" {
        return view::chat_messages(fields);
    }
    let body = &fields.object(&["instructions", "input", "system", "messages"]);
    let mut out = Vec::new();
    match family.name() {
        "responses" => {
            if let Some(i) = body["instructions"].as_str() {
                out.push(Message {
                    role: "system".into(),
                    content: Some(i.into()),
                    ..Message::default()
                });
            }
            match &body["input"] {
                Value::String(s) => out.push(Message {
                    role: "user".into(),
                    content: Some(s.clone()),
                    ..Message::default()
                }),
                Value::Array(items) => {
                    for item in items {
                        match item["type"].as_str() {
                            Some("function_call_output") => out.push(Message {
                                role: "tool".into(),
                                content: Some(str_of(&item["output"])),
                                tool_call_id: item["call_id"].as_str().map(String::from),
                                ..Message::default()
                            }),
                            Some("function_call") => out.push(Message {
                                role: "assistant".into(),
                                tool_calls: vec![(
                                    str_of(&item["call_id"]),
                                    str_of(&item["name"]),
                                    str_of(&item["arguments"]),
                                )],
                                ..Message::default()
                            }),
                            _ => {
                                let mut m = Message {
                                    role: item["role"].as_str().unwrap_or("user").into(),
                                    ..Message::default()
                                };
                                read_content(&item["content"], &mut m);
                                out.push(m);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        "messages" | "count_tokens" => {
            if !body["system"].is_null() {
                let mut m = Message {
                    role: "system".into(),
                    ..Message::default()
                };
                read_content(&body["system"], &mut m);
                out.push(m);
            }
            for v in body["messages"].as_array().into_iter().flatten() {
                let mut m = Message {
                    role: str_of(&v["role"]),
                    ..Message::default()
                };
                read_content(&v["content"], &mut m);
                out.push(m);
            }
        }
        _ => {}
    }
    out
}

/// The answer's messages from a whole JSON body.
fn output_messages(family: &dyn Family, body: &[u8]) -> Vec<Message> {
    if matches!(family.name(), "chat" | "completions") {
        return view::answer_messages(body).unwrap_or_default();
    }
    let body = &serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    match family.name() {
        "responses" => {
            let mut m = Message {
                role: "assistant".into(),
                ..Message::default()
            };
            for item in body["output"].as_array().into_iter().flatten() {
                match item["type"].as_str() {
                    Some("message") => read_content(&item["content"], &mut m),
                    Some("function_call") => m.tool_calls.push((
                        str_of(&item["call_id"]),
                        str_of(&item["name"]),
                        str_of(&item["arguments"]),
                    )),
                    Some("reasoning") => {
                        let text: Vec<String> = item["summary"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|s| str_of(&s["text"]))
                            .collect();
                        m.reasoning = Some(text.join(""));
                    }
                    _ => {}
                }
            }
            vec![m]
        }
        "messages" => {
            let mut m = Message {
                role: str_of(&body["role"]),
                ..Message::default()
            };
            read_content(&body["content"], &mut m);
            vec![m]
        }
        _ => Vec::new(),
    }
}

/// OpenInference's `llm.{input,output}_messages.{i}.message.*`.
fn put_messages(a: &mut Attrs<'_>, prefix: &str, messages: &[Message], input: bool) {
    let cfg = a.cfg;
    let hide_all = if input {
        cfg.hide_inputs || cfg.hide_input_messages
    } else {
        cfg.hide_outputs || cfg.hide_output_messages
    };
    let hide_text = hide_all
        || if input {
            cfg.hide_input_text
        } else {
            cfg.hide_output_text
        };
    let hide_images = hide_all || (input && cfg.hide_input_images);
    for (i, m) in messages.iter().enumerate() {
        let p = format!("{prefix}.{i}.message");
        a.text(format!("{p}.role"), &m.role, hide_all);
        if let Some(c) = &m.content {
            a.text(format!("{p}.content"), c, hide_text);
        }
        for (j, (kind, value)) in m.parts.iter().enumerate() {
            let q = format!("{p}.contents.{j}.message_content");
            a.put(format!("{q}.type"), *kind);
            if *kind == "image" {
                let url = if value.starts_with("data:") {
                    image_placeholder(value)
                } else {
                    value.clone()
                };
                a.text(format!("{q}.image.image.url"), &url, hide_images);
            } else {
                a.text(format!("{q}.text"), value, hide_text);
            }
        }
        if let Some(r) = &m.reasoning {
            a.text(format!("{p}.reasoning_content"), r, hide_text);
        }
        for (k, (id, name, args)) in m.tool_calls.iter().enumerate() {
            let q = format!("{p}.tool_calls.{k}.tool_call");
            if !id.is_empty() {
                a.put(format!("{q}.id"), id.clone());
            }
            a.text(format!("{q}.function.name"), name, hide_all);
            a.text(format!("{q}.function.arguments"), args, hide_text);
        }
        if let Some(id) = &m.tool_call_id {
            a.put(format!("{p}.tool_call_id"), id.clone());
        }
    }
}

/// GenAI's `gen_ai.{input,output}.messages`: one JSON array of `{role, parts}`.
fn genai_messages(a: &mut Attrs<'_>, key: &str, messages: &[Message], input: bool) {
    let cfg = a.cfg;
    let hidden = if input {
        cfg.hide_inputs || cfg.hide_input_messages
    } else {
        cfg.hide_outputs || cfg.hide_output_messages
    };
    if hidden {
        a.put(key.to_string(), REDACTED);
        return;
    }
    let hide_text = if input {
        cfg.hide_input_text
    } else {
        cfg.hide_output_text
    };
    let text = |t: &str| {
        if hide_text {
            REDACTED.to_string()
        } else {
            t.to_string()
        }
    };
    let list: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut parts = Vec::new();
            if let Some(c) = &m.content {
                parts.push(serde_json::json!({"type": "text", "content": text(c)}));
            }
            for (kind, v) in &m.parts {
                parts.push(if *kind == "image" {
                    let url = if input && cfg.hide_input_images {
                        REDACTED.to_string()
                    } else if v.starts_with("data:") {
                        image_placeholder(v)
                    } else {
                        v.clone()
                    };
                    serde_json::json!({"type": "uri", "uri": url})
                } else {
                    serde_json::json!({"type": "text", "content": text(v)})
                });
            }
            if let Some(r) = &m.reasoning {
                parts.push(serde_json::json!({"type": "reasoning", "content": text(r)}));
            }
            for (id, name, args) in &m.tool_calls {
                parts.push(serde_json::json!({"type": "tool_call", "id": id, "name": name, "arguments": text(args)}));
            }
            serde_json::json!({"role": m.role, "parts": parts})
        })
        .collect();
    a.put(key.to_string(), Value::Array(list).to_string());
}

/// `input.value`: the body as sent, unless it holds images: then a copy with `data:` URLs as
/// placeholders (and every image URL hidden under `OPENINFERENCE_HIDE_INPUT_IMAGES`), so the
/// images the messages' attributes leave out do not come back through the raw body. Capped.
fn input_value(body: &[u8], cfg: &TraceConfig) -> String {
    // Most bodies hold no image: only those are parsed and rewritten.
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    if has(b"data:") || (cfg.hide_input_images && has(b"image")) {
        let mut copy: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if scrub_images(&mut copy, cfg.hide_input_images) {
            return capped(&copy.to_string(), cfg.max_output_bytes);
        }
    }
    capped(&String::from_utf8_lossy(body), cfg.max_output_bytes)
}

/// Replaces image URLs in `v` (any API's image parts, and any `data:` URL); true if it did.
fn scrub_images(v: &mut Value, hide: bool) -> bool {
    match v {
        Value::String(s) if s.starts_with("data:") => {
            *s = if hide {
                REDACTED.to_string()
            } else {
                image_placeholder(s)
            };
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, i| scrub_images(i, hide) | changed),
        Value::Object(map) if map.get("type").and_then(Value::as_str) == Some("base64") => {
            // Anthropic's image source: bare base64 in `data`.
            match map.get_mut("data") {
                Some(Value::String(d)) => {
                    *d = format!("[{} bytes omitted]", d.len());
                    true
                }
                _ => false,
            }
        }
        Value::Object(map) => {
            let is_image = matches!(
                map.get("type").and_then(Value::as_str),
                Some("image_url" | "input_image" | "image")
            );
            let mut changed = false;
            for (k, item) in map.iter_mut() {
                let url_field = matches!(k.as_str(), "image_url" | "url" | "source");
                if hide && is_image && url_field {
                    *item = Value::String(REDACTED.to_string());
                    changed = true;
                } else {
                    changed |= scrub_images(item, hide);
                }
            }
            changed
        }
        _ => false,
    }
}

/// The request's parameters: the body without its messages, input and tools.
fn invocation_parameters(fields: &view::Fields<'_>) -> String {
    fields.without(&[
        "messages",
        "input",
        "prompt",
        "tools",
        "system",
        "instructions",
        "documents",
        "query",
    ])
}

fn request_attributes(
    cfg: &TraceConfig,
    config: &Config,
    routed: &Routed,
    body: &[u8],
) -> Vec<KeyValue> {
    let family = routed.family;
    let mut a = Attrs::new(cfg);
    let fields = view::Fields::parse(body).unwrap_or_default();
    let provider = provider(config, routed);
    match cfg.format {
        TraceFormat::OpenInference => {
            a.put("openinference.span.kind", family.span_kind());
            a.put("llm.system", system(family));
            a.put("llm.provider", provider);
            a.put("llm.model_name", routed.provider_model.clone());
            a.put("llm.invocation_parameters", invocation_parameters(&fields));
            let raw = if cfg.hide_inputs {
                String::new()
            } else {
                input_value(body, cfg)
            };
            a.text("input.value", &raw, cfg.hide_inputs);
            a.put("input.mime_type", "application/json");
            put_messages(
                &mut a,
                "llm.input_messages",
                &input_messages(family, &fields),
                true,
            );
            for (i, tool) in fields.elements("tools").iter().enumerate() {
                a.put(
                    format!("llm.tools.{i}.tool.json_schema"),
                    tool.get().to_string(),
                );
            }
            match family.name() {
                "completions" => {
                    let prompts: Vec<String> = match &fields.value("prompt") {
                        Value::Array(items) => items.iter().map(str_of).collect(),
                        other => vec![str_of(other)],
                    };
                    for (i, p) in prompts.iter().enumerate() {
                        a.text(
                            format!("llm.prompts.{i}.prompt.text"),
                            p,
                            cfg.hide_inputs || cfg.hide_input_text,
                        );
                    }
                }
                "embeddings" => {
                    a.put("embedding.model_name", routed.provider_model.clone());
                    let texts: Vec<String> = match &fields.value("input") {
                        Value::Array(items) => items.iter().map(str_of).collect(),
                        other => vec![str_of(other)],
                    };
                    for (i, t) in texts.iter().enumerate() {
                        a.text(
                            format!("embedding.embeddings.{i}.embedding.text"),
                            t,
                            cfg.hide_inputs || cfg.hide_input_text,
                        );
                    }
                }
                "rerank" | "cohere_rerank" => {
                    a.put("reranker.model_name", routed.provider_model.clone());
                    a.text(
                        "reranker.query",
                        fields.value("query").as_str().unwrap_or(""),
                        cfg.hide_inputs || cfg.hide_input_text,
                    );
                    for (i, d) in fields
                        .value("documents")
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        let text = d["text"].as_str().map_or_else(|| str_of(d), String::from);
                        a.text(
                            format!("reranker.input_documents.{i}.document.content"),
                            &text,
                            cfg.hide_inputs || cfg.hide_input_text,
                        );
                    }
                }
                _ => {}
            }
        }
        TraceFormat::GenAi => {
            a.put("gen_ai.operation.name", family.operation());
            a.put("gen_ai.provider.name", provider);
            a.put("gen_ai.request.model", routed.requested_model.clone());
            for (field, key) in [
                ("max_tokens", "gen_ai.request.max_tokens"),
                ("max_completion_tokens", "gen_ai.request.max_tokens"),
                ("max_output_tokens", "gen_ai.request.max_tokens"),
                ("temperature", "gen_ai.request.temperature"),
                ("top_p", "gen_ai.request.top_p"),
            ] {
                match &fields.value(field) {
                    Value::Number(n) if n.is_i64() => a.put(key, n.as_i64().unwrap_or(0)),
                    Value::Number(n) => a.put(key, n.as_f64().unwrap_or(0.0)),
                    _ => {}
                }
            }
            genai_messages(
                &mut a,
                "gen_ai.input.messages",
                &input_messages(family, &fields),
                true,
            );
        }
    }
    a.out
}

fn response_attributes(
    cfg: &TraceConfig,
    config: &Config,
    routed: &Routed,
    outcome: &ResponseOutcome,
) -> Vec<KeyValue> {
    let family = routed.family;
    let mut a = Attrs::new(cfg);
    let model = outcome
        .response_model
        .clone()
        .unwrap_or_else(|| routed.provider_model.clone());
    let backend = routed.backend_name(config).to_string();
    if let Some(u) = &outcome.usage {
        a.usage(u);
    }
    // The answer: the JSON body's messages, or what the stream's events said.
    let (messages, value, mime) = match (&outcome.trace_body, &outcome.capture) {
        (Some(body), _) => (
            output_messages(family, body),
            capped(&String::from_utf8_lossy(body), cfg.max_output_bytes),
            "application/json",
        ),
        (None, Some(c)) => {
            let mut text = c.text.clone();
            if c.truncated {
                text.push_str(TRUNCATED);
            }
            let m = Message {
                role: "assistant".into(),
                content: (!text.is_empty()).then(|| text.clone()),
                reasoning: (!c.reasoning.is_empty()).then(|| c.reasoning.clone()),
                tool_calls: c
                    .tool_calls
                    .iter()
                    .map(|(n, args)| (String::new(), n.clone(), args.clone()))
                    .collect(),
                ..Message::default()
            };
            (vec![m], text, "text/plain")
        }
        (None, None) => (Vec::new(), String::new(), ""),
    };
    match cfg.format {
        TraceFormat::OpenInference => {
            a.put("llm.model_name", model);
            if !backend.is_empty() {
                a.put("ai_gateway.backend", backend);
            }
            if !mime.is_empty() {
                // A JSON answer was capped above; a stream's capture is bounded as it grows.
                a.text("output.value", &value, cfg.hide_outputs);
                a.put("output.mime_type", mime);
            }
            put_messages(&mut a, "llm.output_messages", &messages, false);
        }
        TraceFormat::GenAi => {
            a.put("gen_ai.response.model", model);
            if let Some(id) = &outcome.response_id {
                a.put("gen_ai.response.id", id.clone());
            }
            if !messages.is_empty() {
                genai_messages(&mut a, "gen_ai.output.messages", &messages, false);
            }
        }
    }
    a.out
}

#[cfg(test)]
mod tests;
mod view;
