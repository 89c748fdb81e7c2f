//! The fake's Anthropic-compatible Messages API (`POST /inference/v1/messages`), shaped like
//! Anthropic's: a message with `content` blocks and `usage` (`input_tokens`,
//! `cache_read_input_tokens`, `cache_creation_input_tokens`, `output_tokens`), or with
//! `stream: true` the typed events `message_start` (input usage), `content_block_*`, `ping`,
//! `message_delta` (output usage) and `message_stop`. Its errors use Anthropic's envelope. The
//! key may come as `Authorization: Bearer` or `x-api-key` (checked by the caller).

use serde_json::{json, Map, Value};

use super::{answer, model_of, pieces, request_id, tokens, FireworksOptions, Kind, ModelKind};
use crate::upstreams::record::Recorded;
use crate::upstreams::responses::{bytes_response, json_response, sse_response, Body};

const FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
];

fn error(status: u16, kind: &str, message: &str) -> http::Response<Body> {
    json_response(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
        &[],
    )
}

/// Anthropic's own API, as its stand-in answers it: `x-api-key` (a Bearer key is refused, as
/// Anthropic does), `anthropic-version`, and nothing but `/messages`.
pub(super) fn as_anthropic(
    req: &Recorded,
    options: &FireworksOptions,
    endpoint: &str,
) -> http::Response<Body> {
    if req.header("x-api-key") != Some(options.api_key.as_str()) {
        return error(401, "authentication_error", "invalid x-api-key");
    }
    if req.header("anthropic-version").is_none() {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    match (req.method.as_str(), endpoint) {
        ("POST", "/messages") => respond(req, options),
        ("POST", "/messages/count_tokens") => count_tokens(req, options),
        _ => error(404, "not_found_error", "Not Found"),
    }
}

/// `POST /messages/count_tokens`: `{"input_tokens": N}` for a Messages body (no `max_tokens`).
fn count_tokens(req: &Recorded, options: &FireworksOptions) -> http::Response<Body> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
        return error(
            400,
            "invalid_request_error",
            "The request body is not valid JSON.",
        );
    };
    if let Some(extra) = body
        .keys()
        .find(|k| !FIELDS.contains(&k.as_str()) || *k == "max_tokens" || *k == "stream")
    {
        return error(
            400,
            "invalid_request_error",
            &format!("{extra}: Extra inputs are not permitted"),
        );
    }
    if model_of(&body, options, "").is_err() {
        return error(404, "not_found_error", "model: not found");
    }
    match input_tokens(&body) {
        Some(n) => json_response(200, &json!({ "input_tokens": n }), &[]),
        None => error(400, "invalid_request_error", "messages: Field required"),
    }
}

pub(super) fn respond(req: &Recorded, options: &FireworksOptions) -> http::Response<Body> {
    let request_id = request_id(req);
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
        return error(
            400,
            "invalid_request_error",
            "The request body is not valid JSON.",
        );
    };
    if let Some(extra) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return error(
            400,
            "invalid_request_error",
            &format!("{extra}: Extra inputs are not permitted"),
        );
    }
    let Some(max_tokens) = body.get("max_tokens").and_then(Value::as_u64) else {
        return error(400, "invalid_request_error", "max_tokens: Field required");
    };
    let (model, kind) = match model_of(&body, options, &request_id) {
        Ok(m) => m,
        Err(_) => return error(404, "not_found_error", "model: not found"),
    };
    if !kind.generates() {
        return error(
            400,
            "invalid_request_error",
            &format!("{model} does not support messages"),
        );
    }
    let Some(input) = input_tokens(&body) else {
        return error(400, "invalid_request_error", "messages: Field required");
    };
    let (_, text) = answer(Kind::Chat, ModelKind::Chat, &Map::new());
    let mut parts = pieces(text);
    let stop = if parts.len() as u64 > max_tokens {
        parts.truncate(usize::try_from(max_tokens).unwrap_or(usize::MAX));
        "max_tokens"
    } else {
        "end_turn"
    };
    let m = Reply {
        id: format!("msg_{request_id}"),
        model,
        input,
        parts,
        stop,
    };
    let headers = [("request-id", format!("req_{request_id}"))];
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return sse_response(m.events(), options.stream_interval, &headers);
    }
    let whole = serde_json::to_vec(&m.whole()).unwrap_or_default();
    bytes_response(200, "application/json", whole, &headers)
}

/// `system` and the messages' text (a string or text blocks); `None` without messages.
fn input_tokens(body: &Map<String, Value>) -> Option<u64> {
    let text_of = |v: &Value| match v {
        Value::String(s) => tokens(s),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| b.get("text").and_then(Value::as_str).map_or(1, tokens))
            .sum(),
        _ => 1,
    };
    let messages = body.get("messages")?.as_array().filter(|m| !m.is_empty())?;
    let system = body.get("system").map_or(0, text_of);
    Some(
        system
            + messages
                .iter()
                .map(|m| m.get("content").map_or(1, text_of))
                .sum::<u64>(),
    )
}

struct Reply {
    id: String,
    model: String,
    input: u64,
    parts: Vec<String>,
    stop: &'static str,
}

impl Reply {
    fn usage(&self, output: u64) -> Value {
        json!({"input_tokens": self.input, "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": 0, "output_tokens": output})
    }

    fn whole(&self) -> Value {
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [{"type": "text", "text": self.parts.concat()}],
            "stop_reason": self.stop, "stop_sequence": null,
            "usage": self.usage(self.parts.len() as u64),
        })
    }

    fn events(&self) -> Vec<String> {
        let event = |kind: &str, data: Value| format!("event: {kind}\ndata: {data}\n\n");
        let mut events = vec![event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": self.usage(1),
            }}),
        )];
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        events.push(event("ping", json!({"type": "ping"})));
        for p in &self.parts {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": self.stop, "stop_sequence": null},
                   "usage": {"output_tokens": self.parts.len()}}),
        ));
        events.push(event("message_stop", json!({"type": "message_stop"})));
        events
    }
}
