//! The basic guide's self-hosted test upstream: every chat completion is answered with the
//! same line of Invictus.

use serde_json::json;

use super::record::Recorded;
use super::server::{json_response, Body};

/// What the test upstream always says.
pub const ANSWER: &str = "I am the master of my fate, I am the captain of my soul.";

pub fn handle(req: &Recorded) -> http::Response<Body> {
    let path = req.path.split('?').next().unwrap_or("");
    match (req.method.as_str(), path) {
        ("GET", "/health") => json_response(200, &json!({"status": "ok"}), &[]),
        ("POST", "/v1/chat/completions") => {
            let model = req
                .json()
                .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_default();
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
