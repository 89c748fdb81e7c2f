//! The fake's Responses API (`POST /inference/v1/responses`), shaped like OpenAI's (which
//! Fireworks implements): a response object with `output` items and `usage`
//! (`input_tokens`, `output_tokens`, their details, `total_tokens`), or with `stream: true`
//! typed events (`event: response.created` ... `response.output_text.delta` ...
//! `response.completed`, whose `response` carries the usage), each data also naming its `type`
//! and `sequence_number`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use super::{
    answer, model_of, parse_body, pieces, request_id, tokens, validation_error, FireworksOptions,
    Kind, ModelKind, CREATED,
};
use crate::upstreams::record::Recorded;
use crate::upstreams::responses::{bytes_response, json_response, sse_response, Body};

/// The responses a fake stored (`store` is true by default), by id; bounded like the
/// recorder, the oldest forgotten first.
#[derive(Debug, Clone, Default)]
pub struct Store(Arc<Mutex<Stored>>);

/// The responses by id, and their ids oldest first.
type Stored = (HashMap<String, Value>, std::collections::VecDeque<String>);

impl Store {
    const MAX: usize = 4096;

    fn put(&self, id: String, response: Value) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.insert(id.clone(), response).is_none() {
            g.1.push_back(id);
        }
        while g.1.len() > Self::MAX {
            if let Some(old) = g.1.pop_front() {
                g.0.remove(&old);
            }
        }
    }

    fn get(&self, id: &str) -> Option<Value> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.0.get(id).cloned()
    }

    fn delete(&self, id: &str) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.1.retain(|x| x != id);
        g.0.remove(id).is_some()
    }
}

fn not_found(id: &str, param: Option<&str>) -> http::Response<Body> {
    let (message, code) = match param {
        Some(_) => (
            format!("Previous response with id '{id}' not found."),
            json!("previous_response_not_found"),
        ),
        None => (format!("Response with id '{id}' not found."), Value::Null),
    };
    json_response(
        404,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}),
        &[],
    )
}

/// `GET` or `DELETE /responses/{id}`: a stored response, or OpenAI's 404.
pub(super) fn stored(req: &Recorded, options: &FireworksOptions, id: &str) -> http::Response<Body> {
    let id = id.split('?').next().unwrap_or(id);
    if req.method == "DELETE" {
        return if options.stored.delete(id) {
            json_response(
                200,
                &json!({"id": id, "object": "response", "deleted": true}),
                &[],
            )
        } else {
            not_found(id, None)
        };
    }
    match options.stored.get(id) {
        Some(r) => json_response(200, &r, &[]),
        None => not_found(id, None),
    }
}

/// What the fake accepts in a Responses request; anything else is refused like Fireworks'
/// strict validator does.
const FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "store",
    "stream",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
    "include",
];

pub(super) fn respond(req: &Recorded, options: &FireworksOptions) -> http::Response<Body> {
    let request_id = request_id(req);
    let body = match parse_body(req, FIELDS) {
        Ok(b) => b,
        Err(r) => return r.response(),
    };
    let (model, kind) = match model_of(&body, options, &request_id) {
        Ok(m) => m,
        Err(r) => return r.response(),
    };
    if !kind.generates() {
        return validation_error(format!(
            "Model {model} is not a text generation model and does not support this endpoint"
        ));
    }
    let input = match input_tokens(&body) {
        Ok(n) => n,
        Err(m) => return validation_error(m),
    };
    let (_, text) = answer(Kind::Chat, ModelKind::Chat, &Map::new());
    let mut parts = pieces(text);
    let limit = body.get("max_output_tokens").and_then(Value::as_u64);
    let truncated = limit.is_some_and(|l| parts.len() as u64 > l);
    if let Some(l) = limit {
        parts.truncate(usize::try_from(l).unwrap_or(usize::MAX));
    }
    let output = parts.len() as u64;
    let usage = json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + output,
    });
    let r = Reply {
        id: format!("resp_{request_id}"),
        item: format!("msg_{request_id}"),
        model,
        instructions: body.get("instructions").cloned().unwrap_or(Value::Null),
        parts,
        truncated,
        usage,
    };
    if let Some(prev) = body.get("previous_response_id").and_then(Value::as_str) {
        if options.stored.get(prev).is_none() {
            return not_found(prev, Some("previous_response_id"));
        }
    }
    if body.get("store").and_then(Value::as_bool) != Some(false) {
        options
            .stored
            .put(r.id.clone(), r.response("completed", true));
    }
    let headers = [("x-request-id", request_id.clone())];
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return sse_response(r.events(), options.stream_interval, &headers);
    }
    let whole = serde_json::to_vec(&r.response("completed", true)).unwrap_or_default();
    bytes_response(200, "application/json", whole, &headers)
}

/// `input` (a string, or items whose `content` is a string or `input_text` parts) and
/// `instructions`, about one token per 4 characters.
fn input_tokens(body: &Map<String, Value>) -> Result<u64, String> {
    let mut n = body
        .get("instructions")
        .and_then(Value::as_str)
        .map_or(0, tokens);
    match body.get("input") {
        None if body.contains_key("previous_response_id") => {}
        None => return Err("Field required, field: 'input'".into()),
        Some(Value::String(s)) => n += tokens(s),
        Some(Value::Array(items)) => {
            for item in items {
                match item.get("content") {
                    Some(Value::String(s)) => n += tokens(s),
                    Some(Value::Array(parts)) => {
                        for p in parts {
                            n += p.get("text").and_then(Value::as_str).map_or(1, tokens);
                        }
                    }
                    _ => n += 1,
                }
            }
        }
        Some(_) => return Err("Input should be a valid string or list, field: 'input'".into()),
    }
    Ok(n.max(1))
}

struct Reply {
    id: String,
    item: String,
    model: String,
    instructions: Value,
    parts: Vec<String>,
    truncated: bool,
    usage: Value,
}

impl Reply {
    fn message(&self, done: bool) -> Value {
        let content = if done {
            json!([{"type": "output_text", "text": self.parts.concat(), "annotations": []}])
        } else {
            json!([])
        };
        let status = if done { "completed" } else { "in_progress" };
        json!({"type": "message", "id": self.item, "status": status, "role": "assistant", "content": content})
    }

    /// The response object at a point of its life.
    fn response(&self, status: &str, done: bool) -> Value {
        let status = if done && self.truncated {
            "incomplete"
        } else {
            status
        };
        let incomplete = if done && self.truncated {
            json!({"reason": "max_output_tokens"})
        } else {
            Value::Null
        };
        json!({
            "id": self.id, "object": "response", "created_at": CREATED, "status": status,
            "error": null, "incomplete_details": incomplete, "instructions": self.instructions,
            "model": self.model, "output": if done { json!([self.message(true)]) } else { json!([]) },
            "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "temperature": 1.0,
            "top_p": 1.0, "metadata": {}, "text": {"format": {"type": "text"}},
            "usage": if done { self.usage.clone() } else { Value::Null },
        })
    }

    fn events(&self) -> Vec<String> {
        let mut events = Vec::new();
        let mut push = |kind: &str, mut data: Value| {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(events.len());
            events.push(format!("event: {kind}\ndata: {data}\n\n"));
        };
        push(
            "response.created",
            json!({"response": self.response("in_progress", false)}),
        );
        push(
            "response.in_progress",
            json!({"response": self.response("in_progress", false)}),
        );
        push(
            "response.output_item.added",
            json!({"output_index": 0, "item": self.message(false)}),
        );
        let at = json!({"item_id": self.item, "output_index": 0, "content_index": 0});
        let mut part = at.clone();
        part["part"] = json!({"type": "output_text", "text": "", "annotations": []});
        push("response.content_part.added", part);
        for p in &self.parts {
            let mut delta = at.clone();
            delta["delta"] = json!(p);
            delta["logprobs"] = json!([]);
            push("response.output_text.delta", delta);
        }
        let mut done = at.clone();
        done["text"] = json!(self.parts.concat());
        done["logprobs"] = json!([]);
        push("response.output_text.done", done);
        let mut part = at;
        part["part"] =
            json!({"type": "output_text", "text": self.parts.concat(), "annotations": []});
        push("response.content_part.done", part);
        push(
            "response.output_item.done",
            json!({"output_index": 0, "item": self.message(true)}),
        );
        let last = if self.truncated {
            "response.incomplete"
        } else {
            "response.completed"
        };
        push(last, json!({"response": self.response("completed", true)}));
        events
    }
}
