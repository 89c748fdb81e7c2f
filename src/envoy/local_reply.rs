//! Envoy's own errors in OpenAI's shape: a body over the limit, headers too many or too large,
//! HTTP/1.0, malformed framing, no route, a provider Envoy cannot reach or that times out, the
//! processor failing. Envoy writes these replies itself (plain text by default, or an empty
//! body); the mappers below turn each into `{"error":{"message","type","param","code"}}`.
//!
//! On the Anthropic API's paths (see `llm::Api`) the same errors take Anthropic's envelope,
//! `{"type":"error","error":{"type","message"}}`, so that the Anthropic SDKs read them.
//!
//! The processor's own replies are already OpenAI JSON: they carry the metadata key
//! `contract::PROCESSOR_REPLY_KEY` and the first mapper leaves them exactly as they are.
//! Because Envoy's errors are JSON before any filter sees them, the processor's response phase
//! passes them untouched instead of reporting them as "the provider answered ...".

use serde_json::{json, Value};

use crate::contract::{
    MAX_REQUEST_HEADERS, MAX_REQUEST_HEADER_BYTES, METADATA_NAMESPACE, PROCESSOR_REPLY_KEY,
};
use crate::llm::{Api, FAMILIES};

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
    let errors = [
            (status(413), Error(&too_large, "invalid_request_error", "request_too_large")),
            (
                status(426),
                Error(
                    "HTTP/1.0 is not supported: use HTTP/1.1 or HTTP/2.",
                    "invalid_request_error",
                    "http_version_not_supported",
                ),
            ),
            (
                status(431),
                Error(&headers, "invalid_request_error", "request_header_fields_too_large"),
            ),
            // Client authentication (a SecurityPolicy's apiKeyAuth or jwt) refused the request.
            (
                status(401),
                Error(
                    "Invalid or missing credentials: %LOCAL_REPLY_BODY%",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
            ),
            (
                status(403),
                Error(
                    "The credentials do not allow this request: %LOCAL_REPLY_BODY%",
                    "invalid_request_error",
                    "permission_denied",
                ),
            ),
            (
                status(404),
                Error("No route for this request.", "invalid_request_error", "not_found"),
            ),
            (
                status(408),
                Error(
                    "The request was not received in time (%LOCAL_REPLY_BODY%).",
                    "invalid_request_error",
                    "request_timeout",
                ),
            ),
            (
                json!({"and_filter": {"filters": [
                    comparison("GE", 400, "ge_400"),
                    comparison("LE", 499, "le_499")
                ]}}),
                Error(
                    "The request is not valid HTTP (%RESPONSE_CODE_DETAILS%).",
                    "invalid_request_error",
                    "bad_request",
                ),
            ),
            (
                json!({"response_flag_filter": {"flags": ["UT"]}}),
                Error(
                    "The provider did not answer in time (%LOCAL_REPLY_BODY%).",
                    "server_error",
                    "upstream_timeout",
                ),
            ),
            // Any other flag Envoy sets is about reaching the provider: no healthy or no
            // reachable endpoint, overflow, reset, DNS...
            (
                json!({"response_flag_filter": {}}),
                Error(
                    "The gateway could not get an answer from the provider: %LOCAL_REPLY_BODY% (%RESPONSE_FLAGS%).",
                    "server_error",
                    "upstream_unavailable",
                ),
            ),
    ];
    // What is left is the gateway itself failing (the processor unreachable, a rejected
    // header mutation, a timeout waiting for the processor).
    let last = Error(
        "The gateway failed to process this request (%RESPONSE_CODE_DETAILS%).",
        "server_error",
        "gateway_error",
    );
    let anthropic = anthropic_paths();
    // The processor's replies: as they are.
    let mut mappers = vec![json!({
        "filter": processor_reply,
        "body_format_override": {
            "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
            "content_type": "application/json"
        }
    })];
    for (filter, e) in &errors {
        mappers.push(mapper(
            json!({"and_filter": {"filters": [anthropic.clone(), filter.clone()]}}),
            e.anthropic(),
        ));
        mappers.push(mapper(filter.clone(), e.openai()));
    }
    mappers.push(mapper(anthropic, last.anthropic()));
    json!({"mappers": mappers, "body_format": last.openai()})
}

fn mapper(filter: Value, body_format: Value) -> Value {
    json!({"filter": filter, "body_format_override": body_format})
}

/// A filter for requests on the Anthropic API's paths (query string or not).
fn anthropic_paths() -> Value {
    let paths: Vec<&str> = FAMILIES
        .iter()
        .filter(|f| f.api() == Api::Anthropic)
        .flat_map(|f| std::iter::once(f.path()).chain(f.aliases().iter().copied()))
        .collect();
    let regex = format!(r"(?:{})(?:\?.*)?", paths.join("|").replace('.', r"\."));
    json!({"header_filter": {"header": {
        "name": ":path",
        "string_match": {"safe_regex": {"regex": regex}}
    }}})
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

/// An error's message (which may use Envoy's substitution commands), OpenAI type and code.
struct Error<'a>(&'a str, &'a str, &'a str);

impl Error<'_> {
    fn openai(&self) -> Value {
        let Error(message, kind, code) = *self;
        json!({
            "json_format": {"error": {"message": message, "type": kind, "param": null, "code": code}},
            "content_type": "application/json"
        })
    }

    /// Anthropic's envelope, with the type Anthropic uses for the same error.
    fn anthropic(&self) -> Value {
        let Error(message, kind, code) = *self;
        let kind = match (kind, code) {
            (_, "request_too_large") => "request_too_large",
            (_, "invalid_api_key") => "authentication_error",
            (_, "permission_denied") => "permission_error",
            (_, "not_found") => "not_found_error",
            ("invalid_request_error", _) => "invalid_request_error",
            _ => "api_error",
        };
        json!({
            "json_format": {"type": "error", "error": {"type": kind, "message": message}},
            "content_type": "application/json"
        })
    }
}
