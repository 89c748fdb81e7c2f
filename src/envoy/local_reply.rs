//! Envoy's own errors in OpenAI's shape: a body over the limit, headers too many or too large,
//! HTTP/1.0, malformed framing, no route, a provider Envoy cannot reach or that times out, the
//! processor failing. Envoy writes these replies itself (plain text by default, or an empty
//! body); the mappers below turn each into `{"error":{"message","type","param","code"}}`.
//!
//! The processor's own replies are already OpenAI JSON: they carry the metadata key
//! `contract::PROCESSOR_REPLY_KEY` and the first mapper leaves them exactly as they are.
//! Because Envoy's errors are JSON before any filter sees them, the processor's response phase
//! passes them untouched instead of reporting them as "the provider answered ...".

use serde_json::{json, Value};

use crate::contract::{
    MAX_REQUEST_HEADERS, MAX_REQUEST_HEADER_BYTES, METADATA_NAMESPACE, PROCESSOR_REPLY_KEY,
};

/// The `local_reply_config` of the listener, for a body limit of `max_body_bytes`.
pub fn config(max_body_bytes: u32) -> Value {
    let processor_reply = json!({"metadata_filter": {
        "matcher": {
            "filter": METADATA_NAMESPACE,
            "path": [{"key": PROCESSOR_REPLY_KEY}],
            "value": {"present_match": true}
        },
        "match_if_key_not_found": false
    }});
    let too_large =
        format!("The request body is larger than this gateway accepts ({max_body_bytes} bytes).");
    let headers = format!(
        "The request headers are too many or too large (at most {} headers and {} KiB).",
        MAX_REQUEST_HEADERS,
        MAX_REQUEST_HEADER_BYTES / 1024
    );
    json!({
        "mappers": [
            // The processor's replies: as they are.
            {
                "filter": processor_reply,
                "body_format_override": {
                    "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
                    "content_type": "application/json"
                }
            },
            mapper(status(413), error(&too_large, "invalid_request_error", "request_too_large")),
            mapper(
                status(426),
                error(
                    "HTTP/1.0 is not supported: use HTTP/1.1 or HTTP/2.",
                    "invalid_request_error",
                    "http_version_not_supported",
                ),
            ),
            mapper(
                status(431),
                error(&headers, "invalid_request_error", "request_header_fields_too_large"),
            ),
            // Client authentication (a SecurityPolicy's apiKeyAuth or jwt) refused the request.
            mapper(
                status(401),
                error(
                    "Invalid or missing credentials: %LOCAL_REPLY_BODY%",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
            ),
            mapper(
                status(403),
                error(
                    "The credentials do not allow this request: %LOCAL_REPLY_BODY%",
                    "invalid_request_error",
                    "permission_denied",
                ),
            ),
            mapper(
                status(404),
                error("No route for this request.", "invalid_request_error", "not_found"),
            ),
            mapper(
                status(408),
                error(
                    "The request was not received in time (%LOCAL_REPLY_BODY%).",
                    "invalid_request_error",
                    "request_timeout",
                ),
            ),
            mapper(
                json!({"and_filter": {"filters": [
                    comparison("GE", 400, "ge_400"),
                    comparison("LE", 499, "le_499")
                ]}}),
                error(
                    "The request is not valid HTTP (%RESPONSE_CODE_DETAILS%).",
                    "invalid_request_error",
                    "bad_request",
                ),
            ),
            mapper(
                json!({"response_flag_filter": {"flags": ["UT"]}}),
                error(
                    "The provider did not answer in time (%LOCAL_REPLY_BODY%).",
                    "server_error",
                    "upstream_timeout",
                ),
            ),
            // Any other flag Envoy sets is about reaching the provider: no healthy or no
            // reachable endpoint, overflow, reset, DNS...
            mapper(
                json!({"response_flag_filter": {}}),
                error(
                    "The gateway could not get an answer from the provider: %LOCAL_REPLY_BODY% (%RESPONSE_FLAGS%).",
                    "server_error",
                    "upstream_unavailable",
                ),
            ),
        ],
        // What is left is the gateway itself failing (the processor unreachable, a rejected
        // header mutation, a timeout waiting for the processor).
        "body_format": error(
            "The gateway failed to process this request (%RESPONSE_CODE_DETAILS%).",
            "server_error",
            "gateway_error",
        )
    })
}

fn mapper(filter: Value, body_format: Value) -> Value {
    json!({"filter": filter, "body_format_override": body_format})
}

fn comparison(op: &str, value: u16, key: &str) -> Value {
    json!({"status_code_filter": {"comparison": {
        "op": op,
        "value": {"default_value": value, "runtime_key": format!("ai_gateway.local_reply.{key}")}
    }}})
}

fn status(code: u16) -> Value {
    comparison("EQ", code, &code.to_string())
}

/// An OpenAI error body; `message` may use Envoy's substitution commands.
fn error(message: &str, kind: &str, code: &str) -> Value {
    json!({
        "json_format": {"error": {"message": message, "type": kind, "param": null, "code": code}},
        "content_type": "application/json"
    })
}
