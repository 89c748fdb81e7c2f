//! OpenInference attributes (what Arize Phoenix and Envoy AI Gateway read): `llm.*`,
//! `input.*`/`output.*`, `embedding.*`, `reranker.*`.

use std::borrow::Cow;

use serde_json::Value;

use crate::llm::Usage;
use crate::telemetry::{TraceConfig, REDACTED};

use super::messages::{input_messages, str_of, Answer, Message};
use super::{capped, capped_bytes, image_placeholder, system, view, Attrs};
use crate::gateway::request::Routed;

/// What the request asks, of whom.
pub(super) fn request(
    a: &mut Attrs<'_>,
    routed: &Routed,
    provider: &str,
    fields: &view::Fields<'_>,
    body: &[u8],
) {
    let cfg = a.cfg;
    let family = routed.family;
    a.put("openinference.span.kind", family.span_kind());
    a.put("llm.system", system(family));
    a.put("llm.provider", provider);
    // The answer may name the model that answered (`response`).
    a.w.late_str("llm.model_name", routed.provider_model.clone());
    a.put("llm.invocation_parameters", &invocation_parameters(fields));
    let raw = if cfg.hide_inputs {
        Cow::Borrowed("")
    } else {
        input_value(body, cfg)
    };
    a.text("input.value", &raw, cfg.hide_inputs);
    a.put("input.mime_type", "application/json");
    put_messages(
        a,
        "llm.input_messages",
        &input_messages(family, fields),
        true,
    );
    for (i, tool) in fields.elements("tools").iter().enumerate() {
        a.put(&format!("llm.tools.{i}.tool.json_schema"), tool.get());
    }
    // Prompts, embedding inputs and rerank texts: input text, not messages.
    let hide_text = cfg.hide_inputs || cfg.hide_input_text;
    match family.name() {
        "completions" => {
            for (i, p) in texts(&fields.value("prompt")).iter().enumerate() {
                a.text(&format!("llm.prompts.{i}.prompt.text"), p, hide_text);
            }
        }
        "embeddings" => {
            a.put("embedding.model_name", &routed.provider_model);
            for (i, t) in texts(&fields.value("input")).iter().enumerate() {
                a.text(
                    &format!("embedding.embeddings.{i}.embedding.text"),
                    t,
                    hide_text,
                );
            }
        }
        "rerank" | "cohere_rerank" => {
            a.put("reranker.model_name", &routed.provider_model);
            a.text(
                "reranker.query",
                fields.value("query").as_str().unwrap_or(""),
                hide_text,
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
                    &format!("reranker.input_documents.{i}.document.content"),
                    &text,
                    hide_text,
                );
            }
        }
        _ => {}
    }
}

/// What answered (`model`, `backend`), its usage and its answer.
pub(super) fn response(
    a: &mut Attrs<'_>,
    model: String,
    backend: &str,
    usage: Option<&Usage>,
    answer: &Answer<'_>,
) {
    let cfg = a.cfg;
    if let Some(u) = usage {
        let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        a.put("llm.token_count.prompt", n(u.input));
        a.put("llm.token_count.completion", n(u.output));
        a.put("llm.token_count.total", n(u.total));
        a.put(
            "llm.token_count.prompt_details.cache_read",
            n(u.cached_input),
        );
        a.put(
            "llm.token_count.prompt_details.cache_write",
            n(u.cache_creation_input),
        );
        a.put(
            "llm.token_count.completion_details.reasoning",
            n(u.reasoning),
        );
    }
    a.w.late_str("llm.model_name", model);
    if !backend.is_empty() {
        a.put("ai_gateway.backend", backend);
    }
    if !answer.mime.is_empty() {
        // A JSON answer was capped above; a stream's capture is bounded as it grows.
        a.text("output.value", &answer.value, cfg.hide_outputs);
        a.put("output.mime_type", answer.mime);
    }
    put_messages(a, "llm.output_messages", &answer.messages, false);
}

/// A field that is one text or an array of them (`prompt`, embeddings' `input`).
fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(str_of).collect(),
        other => vec![str_of(other)],
    }
}

/// OpenInference's `llm.{input,output}_messages.{i}.message.*`.
fn put_messages(a: &mut Attrs<'_>, prefix: &str, messages: &[Message], input: bool) {
    let cfg = a.cfg;
    let hide_all = cfg.hides_messages(input);
    let hide_text = hide_all
        || if input {
            cfg.hide_input_text
        } else {
            cfg.hide_output_text
        };
    let hide_images = hide_all || (input && cfg.hide_input_images);
    for (i, m) in messages.iter().enumerate() {
        let p = format!("{prefix}.{i}.message");
        a.text(&format!("{p}.role"), &m.role, hide_all);
        if let Some(c) = &m.content {
            a.text(&format!("{p}.content"), c, hide_text);
        }
        for (j, (kind, value)) in m.parts.iter().enumerate() {
            let q = format!("{p}.contents.{j}.message_content");
            a.put(&format!("{q}.type"), *kind);
            if *kind == "image" {
                let url = if value.starts_with("data:") {
                    image_placeholder(value)
                } else {
                    value.clone()
                };
                a.text(&format!("{q}.image.image.url"), &url, hide_images);
            } else {
                a.text(&format!("{q}.text"), value, hide_text);
            }
        }
        if let Some(r) = &m.reasoning {
            a.text(&format!("{p}.reasoning_content"), r, hide_text);
        }
        for (k, (id, name, args)) in m.tool_calls.iter().enumerate() {
            let q = format!("{p}.tool_calls.{k}.tool_call");
            if !id.is_empty() {
                a.put(&format!("{q}.id"), id);
            }
            a.text(&format!("{q}.function.name"), name, hide_all);
            a.text(&format!("{q}.function.arguments"), args, hide_text);
        }
        if let Some(id) = &m.tool_call_id {
            a.put(&format!("{p}.tool_call_id"), id);
        }
    }
}

/// `input.value`: the body as sent, unless it holds images: then a copy with `data:` URLs as
/// placeholders (and every image URL hidden under `OPENINFERENCE_HIDE_INPUT_IMAGES`), so the
/// images the messages' attributes leave out do not come back through the raw body. Capped.
fn input_value<'a>(body: &'a [u8], cfg: &TraceConfig) -> Cow<'a, str> {
    // Most bodies hold no image: only those are parsed and rewritten.
    let has = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    if has(b"data:") || (cfg.hide_input_images && has(b"image")) {
        let mut copy: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if scrub_images(&mut copy, cfg.hide_input_images) {
            return Cow::Owned(capped(&copy.to_string(), cfg.max_output_bytes).into_owned());
        }
    }
    capped_bytes(body, cfg.max_output_bytes)
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
