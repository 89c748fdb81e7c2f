//! The basic guide's self-hosted test upstream: every chat completion is answered with the
//! same line of Invictus.

use std::time::Duration;

use serde_json::json;

use super::record::Recorded;
use super::responses::{json_response, sse_response, Body};

/// How the test upstream streams (`"stream": true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestOptions {
    /// Content events per stream (the usage and `[DONE]` events come on top).
    pub stream_events: usize,
    /// Pause between events.
    pub stream_interval: Duration,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            stream_events: 8,
            stream_interval: Duration::ZERO,
        }
    }
}

/// What the test upstream always says.
pub const ANSWER: &str = "I am the master of my fate, I am the captain of my soul.";

pub fn handle(req: &Recorded, options: &TestOptions) -> http::Response<Body> {
    let path = req.path.split('?').next().unwrap_or("");
    match (req.method.as_str(), path) {
        ("GET", "/health") => json_response(200, &json!({"status": "ok"}), &[]),
        ("POST", "/v1/chat/completions") => {
            let body = req.json().unwrap_or_default();
            let model = body
                .get("model")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_string();
            if body.get("stream").and_then(|s| s.as_bool()) == Some(true) {
                let include_usage = body
                    .pointer("/stream_options/include_usage")
                    .and_then(|v| v.as_bool())
                    == Some(true);
                return stream(&model, include_usage, options);
            }
            let body = json!({
                "id": "chatcmpl-testupstream",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop"
                }],
                "usage": {"prompt_tokens": 5, "completion_tokens": 14, "total_tokens": 19}
            });
            json_response(200, &body, &[])
        }
        _ => json_response(
            404,
            &json!({"error": {"message": format!("{} {} is not served by the test upstream", req.method, path), "type": "invalid_request_error", "param": null, "code": "not_found"}}),
            &[],
        ),
    }
}

/// An OpenAI stream: a role chunk, `stream_events` content chunks, a finishing chunk, `[DONE]`.
/// Usage only when asked (`stream_options.include_usage`), as OpenAI does: every chunk then
/// carries `"usage": null` and one more chunk, with `"choices": []`, carries the usage.
fn stream(model: &str, include_usage: bool, options: &TestOptions) -> http::Response<Body> {
    let chunk = |choices: serde_json::Value, usage: Option<serde_json::Value>| {
        let mut v = json!({"id": "chatcmpl-testupstream", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": choices});
        if include_usage {
            v["usage"] = usage.unwrap_or(serde_json::Value::Null);
        }
        format!("data: {v}\n\n")
    };
    let delta = |delta: serde_json::Value, finish: Option<&str>| json!([{"index": 0, "delta": delta, "finish_reason": finish}]);
    let words: Vec<&str> = ANSWER.split(' ').collect();
    let mut events = vec![chunk(delta(json!({"role": "assistant"}), None), None)];
    for i in 0..options.stream_events {
        let word = words[i % words.len()];
        events.push(chunk(
            delta(json!({"content": format!("{word} ")}), None),
            None,
        ));
    }
    events.push(chunk(delta(json!({}), Some("stop")), None));
    if include_usage {
        let n = options.stream_events as u64;
        events.push(chunk(
            json!([]),
            Some(json!({"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n})),
        ));
    }
    events.push("data: [DONE]\n\n".to_string());
    sse_response(events, options.stream_interval, &[])
}
