//! OpenTelemetry's GenAI semantic conventions (`--trace-format genai`): `gen_ai.*`.

use serde_json::Value;

use crate::llm::Usage;
use crate::telemetry::REDACTED;

use super::messages::{input_messages, Answer, Message};
use super::{image_placeholder, view, Attrs};
use crate::gateway::request::Routed;

/// What the request asks, of whom.
pub(super) fn request(
    a: &mut Attrs<'_>,
    routed: &Routed,
    provider: &str,
    fields: &view::Fields<'_>,
) {
    let family = routed.family;
    a.put("gen_ai.operation.name", family.operation());
    a.put("gen_ai.provider.name", provider);
    a.put("gen_ai.request.model", &routed.requested_model);
    let mut seen_max = false;
    for (field, key) in [
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("max_completion_tokens", "gen_ai.request.max_tokens"),
        ("max_output_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
    ] {
        // The first of the max-tokens spellings the body uses: a key is written once.
        if key == "gen_ai.request.max_tokens" && seen_max {
            continue;
        }
        let value = fields.value(field);
        seen_max |= key == "gen_ai.request.max_tokens" && value.is_number();
        match &value {
            Value::Number(n) if n.is_i64() => a.put(key, n.as_i64().unwrap_or(0)),
            Value::Number(n) => a.put(key, n.as_f64().unwrap_or(0.0)),
            _ => {}
        }
    }
    genai_messages(
        a,
        "gen_ai.input.messages",
        &input_messages(family, fields),
        true,
    );
}

/// What answered (`model`, `response_id`), its usage and its answer.
pub(super) fn response(
    a: &mut Attrs<'_>,
    model: &str,
    response_id: Option<&str>,
    usage: Option<&Usage>,
    answer: &Answer<'_>,
) {
    if let Some(u) = usage {
        let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        a.put("gen_ai.usage.input_tokens", n(u.input));
        a.put("gen_ai.usage.output_tokens", n(u.output));
        a.put("gen_ai.usage.cache_read.input_tokens", n(u.cached_input));
        a.put(
            "gen_ai.usage.cache_creation.input_tokens",
            n(u.cache_creation_input),
        );
    }
    a.put("gen_ai.response.model", model);
    if let Some(id) = response_id {
        a.put("gen_ai.response.id", id);
    }
    if !answer.messages.is_empty() {
        genai_messages(a, "gen_ai.output.messages", &answer.messages, false);
    }
}

/// GenAI's `gen_ai.{input,output}.messages`: one JSON array of `{role, parts}`.
fn genai_messages(a: &mut Attrs<'_>, key: &str, messages: &[Message], input: bool) {
    let cfg = a.cfg;
    if cfg.hides_messages(input) {
        a.put(key, REDACTED);
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
    a.put(key, &Value::Array(list).to_string());
}
