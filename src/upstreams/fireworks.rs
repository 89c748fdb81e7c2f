//! A fake Fireworks inference API that answers as `FIREWORKS-WIRE.md` describes the real one:
//! strict validation, Fireworks model ids, usage (cached and reasoning tokens), SSE streams with
//! usage on the finishing chunk, and the real error envelopes.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Map, Value};

mod azure;
mod cohere;
mod messages;
mod rerank;
mod responses;

use super::record::Recorded;
use super::responses::{bytes_response, json_response, sse_response, sse_response_then, Body};

const PREFIX: &str = "/inference/v1";
const CREATED: i64 = 1_768_319_392;

/// The models the fake serves: id and what it does.
pub const FAKE_MODELS: [(&str, ModelKind); 5] = [
    (
        "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct",
        ModelKind::Chat,
    ),
    (
        "accounts/fireworks/models/qwen3-vl-30b-a3b-thinking",
        ModelKind::Thinking,
    ),
    (
        "accounts/fireworks/models/qwen3-embedding-8b",
        ModelKind::Embedding,
    ),
    (
        "accounts/fireworks/models/llama-v3p1-8b-instruct",
        ModelKind::Chat,
    ),
    ("fireworks/qwen3-reranker-8b", ModelKind::Rerank),
];

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Chat,
    Thinking,
    Embedding,
    Rerank,
}

impl ModelKind {
    /// Whether it generates text (chat, completions, responses, messages).
    fn generates(self) -> bool {
        matches!(self, Self::Chat | Self::Thinking)
    }
}

/// Which provider's API a fake answers as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Speaks {
    /// Fireworks' inference API (OpenAI's endpoints, Anthropic's Messages, rerank).
    #[default]
    Fireworks,
    /// Anthropic's own API: only `/messages` (and `/messages/count_tokens`), the key only as
    /// `x-api-key`, `anthropic-version` required, errors in Anthropic's envelope.
    Anthropic,
    /// Azure OpenAI: `/openai/deployments/{deployment}/...` and `/openai/responses`, the key as
    /// `api-key`, `api-version` required; deployments are the chat models it serves.
    AzureOpenAI,
    /// Cohere's v2 API: `/v2/rerank` with a Bearer key, errors as `{"message"}`.
    Cohere,
}

/// Settings of the fake.
#[derive(Debug, Clone)]
pub struct FireworksOptions {
    /// The only key it accepts (`Authorization: Bearer <key>`).
    pub api_key: String,
    /// Pause between streamed events.
    pub stream_interval: Duration,
    /// The path prefix it serves (Fireworks': `/inference/v1`); anything else is a 404.
    pub prefix: String,
    /// Its name, for faults meant for one of several fakes (`name=fault` in [`FAULT_HEADER`]).
    pub name: String,
    /// The host name its certificate is for (a stand-in for another provider's host).
    pub host: String,
    /// Chat model ids it serves besides Fireworks' (a stand-in for another provider).
    pub extra_chat_models: Vec<String>,
    /// Whose API it answers as (a stand-in for another provider than Fireworks).
    pub speaks: Speaks,
    /// Responses it stored (`store` not false), for `GET`/`DELETE /responses/{id}`.
    pub stored: responses::Store,
}

impl Default for FireworksOptions {
    fn default() -> Self {
        Self {
            api_key: String::new(),
            stream_interval: Duration::ZERO,
            prefix: PREFIX.to_string(),
            name: "fireworks".to_string(),
            host: "api.fireworks.ai".to_string(),
            extra_chat_models: Vec::new(),
            speaks: Speaks::Fireworks,
            stored: responses::Store::default(),
        }
    }
}

impl FireworksOptions {
    /// The fault this fake must play, if any: the header's value, or with several fakes
    /// behind one rule (failover tests) its own entry of `name=fault,other=fault`.
    fn fault<'r>(&self, req: &'r Recorded) -> Option<&'r str> {
        let value = req.header(FAULT_HEADER)?;
        if !value.contains('=') {
            return Some(value);
        }
        value.split(',').find_map(|entry| {
            let (name, fault) = entry.split_once('=')?;
            (name.trim() == self.name).then_some(fault.trim())
        })
    }
}

const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "context_length_exceeded_behavior",
    "prompt_truncate_len",
    "reasoning_effort",
    "perf_metrics_in_response",
    "prompt_cache_key",
    "logit_bias",
    "metadata",
];
const COMPLETION_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "echo",
    "logprobs",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "user",
    "seed",
    "context_length_exceeded_behavior",
    "prompt_truncate_len",
    "perf_metrics_in_response",
    "response_format",
    "logit_bias",
    "prompt_cache_key",
];
const EMBEDDING_FIELDS: &[&str] = &[
    "model",
    "input",
    "encoding_format",
    "dimensions",
    "user",
    "prompt_template",
];

/// Test-only request header that makes the fake fail the way providers (or what stands in
/// front of them) do: `429`, `503` (Fireworks' JSON envelope), `500` (a proxy's plain text),
/// `sse-malformed` (a 100-event stream with a broken event in the middle, usage at the end),
/// `reset` (a stream cut mid-way, after usage so far), `hang` (no answer at all), `drop` (the
/// connection closed before any answer), `garbage`
/// (a 200 "JSON" body that is not JSON), `slow-stream` (one event a second for two minutes),
/// `echo` and `echo-json` (a 500 HTML page and a 400 JSON error that quote the request's headers,
/// as some proxies' and frameworks' error pages do). Error bodies carry a `usage` object where
/// they can, so that a test shows it is not charged. With several fakes behind one rule
/// (failover), `primary=503,secondary=hang` gives each named fake its own fault.
pub const FAULT_HEADER: &str = "x-fake-fireworks-fault";

/// Test-only request header: `on-request` makes the fake report stream usage as OpenAI does,
/// only when asked (`stream_options.include_usage: true`), instead of as Fireworks does (on
/// the finishing chunk, always). A backend with that behaviour is configured with the
/// annotation `ai-extproc.io/stream-usage: on-request`.
pub const STREAM_USAGE_HEADER: &str = "x-fake-fireworks-stream-usage";

fn fault_response(fault: &str, req: &Recorded, request_id: &str) -> http::Response<Body> {
    let usage = json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10});
    let echoed: Vec<String> = req
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect();
    let envelope = |status: u16, message: &str| {
        json_response(
            status,
            &json!({"error": {"object": "error", "type": "invalid_request_error", "code": "invalid_request_error", "message": message}, "request_id": request_id, "usage": usage}),
            &[(
                "x-ratelimit-over-limit",
                if status == 429 { "yes" } else { "no" }.to_string(),
            )],
        )
    };
    match fault {
        "sse-malformed" => malformed_stream(),
        "reset" => reset_stream(),
        "slow-stream" => slow_stream(),
        "garbage" => bytes_response(
            200,
            "application/json",
            format!("{{\"usage\":{usage}}}\x00\x13garbage{{{{{{not json").into_bytes(),
            &[],
        ),
        "echo" => bytes_response(
            500,
            "text/html",
            format!(
                "<html><body><h1>500 Internal Server Error</h1><pre>{}</pre></body></html>",
                echoed.join("\n")
            )
            .into_bytes(),
            &[],
        ),
        "echo-json" => json_response(
            400,
            &json!({"error": {"type": "invalid_request_error", "message": "bad request", "headers": echoed}, "usage": usage}),
            &[],
        ),
        "429" => envelope(429, "rate limit exceeded, please try again later"),
        "401" => json_response(
            401,
            &json!({"error": {"message": "The API key you provided is invalid.", "param": null, "code": "UNAUTHORIZED", "type": "error"}, "request_id": request_id, "usage": usage}),
            &[],
        ),
        "503" => envelope(503, "The server is overloaded, please try again later"),
        _ => bytes_response(
            500,
            "text/plain",
            format!("Internal Server Error\n{{\"usage\":{usage}}}\n").into_bytes(),
            &[],
        ),
    }
}

fn reset_stream() -> http::Response<Body> {
    let chunk = |content: &str, usage: &str| {
        format!("data: {{\"model\":\"accounts/fireworks/models/qwen3-vl-235b-a22b-instruct\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}}}}],\"usage\":{usage}}}\n\n")
    };
    let events = vec![
        chunk("Hel", "null"),
        chunk(
            "lo",
            r#"{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}"#,
        ),
        chunk(" wor", "null"),
    ];
    let cut = std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "fault: reset mid-stream",
    );
    sse_response_then(events, Duration::from_millis(20), Some(cut), &[])
}

/// A generation that takes two minutes: one token a second (clients that leave mid-way).
fn slow_stream() -> http::Response<Body> {
    let events = (0..120)
        .map(|i| format!("data: {{\"model\":\"accounts/fireworks/models/qwen3-vl-235b-a22b-instruct\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i} \"}}}}]}}\n\n"))
        .chain(["data: [DONE]\n\n".to_string()])
        .collect();
    sse_response(events, Duration::from_secs(1), &[])
}

fn malformed_stream() -> http::Response<Body> {
    let mut events: Vec<String> = (0..100)
        .map(|i| {
            if i == 50 {
                "data: {\"choices\":[{\"delta\":{\"content\":\"broken\"}\n\n".to_string()
            } else {
                format!("data: {{\"model\":\"accounts/fireworks/models/qwen3-vl-235b-a22b-instruct\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}}}}]}}\n\n")
            }
        })
        .collect();
    events.push("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":99,\"total_tokens\":106}}\n\n".into());
    events.push("data: [DONE]\n\n".into());
    sse_response(events, Duration::ZERO, &[])
}

/// Answers one request (`None`: close the connection unanswered).
pub async fn handle(req: &Recorded, options: &FireworksOptions) -> Option<http::Response<Body>> {
    match options.fault(req) {
        // Never answer; the caller's timeout decides.
        Some("hang") => tokio::time::sleep(Duration::from_secs(3600)).await,
        Some("drop") => return None,
        _ => {}
    }
    Some(respond(req, options))
}

fn respond(req: &Recorded, options: &FireworksOptions) -> http::Response<Body> {
    let path = req.path.split('?').next().unwrap_or("");
    let Some(endpoint) = path.strip_prefix(options.prefix.as_str()) else {
        return json_response(
            404,
            &json!({"error": {"message": format!("Path not found: {path}"), "code": "NOT_FOUND"}}),
            &[],
        );
    };
    let request_id = request_id(req);
    if let Some(fault) = options.fault(req) {
        return fault_response(fault, req, &request_id);
    }
    match options.speaks {
        Speaks::Fireworks => {}
        Speaks::Anthropic => return messages::as_anthropic(req, options, endpoint),
        Speaks::AzureOpenAI => return azure::respond(req, options, endpoint, &request_id),
        Speaks::Cohere => return cohere::respond(req, options, endpoint),
    }
    let bearer =
        req.header("authorization") == Some(format!("Bearer {}", options.api_key).as_str());
    // The Anthropic-compatible endpoint also takes the Anthropic SDKs' header.
    let x_api_key =
        endpoint == "/messages" && req.header("x-api-key") == Some(options.api_key.as_str());
    if !(bearer || x_api_key) {
        return json_response(
            401,
            &json!({"error": {"message": "The API key you provided is invalid.", "param": null, "code": "UNAUTHORIZED", "type": "error"}, "request_id": request_id}),
            &[],
        );
    }
    match (req.method.as_str(), endpoint) {
        ("GET", "/models") => json_response(200, &models_list(), &[]),
        ("POST", "/chat/completions") => generate(req, options, &request_id, Kind::Chat),
        ("POST", "/completions") => generate(req, options, &request_id, Kind::Completion),
        ("POST", "/embeddings") => embeddings(req, options, &request_id),
        ("POST", "/responses") => responses::respond(req, options),
        ("GET" | "DELETE", e) if e.starts_with("/responses/") => {
            responses::stored(req, options, &e["/responses/".len()..])
        }
        ("POST", "/messages") => messages::respond(req, options),
        ("POST", "/rerank") => rerank::respond(req, options, &request_id),
        _ => json_response(
            404,
            &json!({"error": {"message": format!("Path not found: {path}"), "code": "NOT_FOUND"}}),
            &[],
        ),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

fn request_id(req: &Recorded) -> String {
    // Deterministic per body so tests can predict it; 32 hex digits like the real ids.
    let mut h: u128 = 0xcbf2_9ce4_8422_2325;
    for b in req.body.iter().chain(req.path.as_bytes()) {
        h = (h ^ u128::from(*b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
    }
    format!("{h:032x}")
}

/// Why the fake refuses a request, before it becomes Fireworks' error envelope.
enum Refusal {
    Validation(String),
    ModelNotFound(String),
}

impl Refusal {
    fn response(self) -> http::Response<Body> {
        match self {
            Refusal::Validation(m) => validation_error(m),
            Refusal::ModelNotFound(request_id) => model_not_found(&request_id),
        }
    }
}

fn validation_error(message: String) -> http::Response<Body> {
    json_response(
        400,
        &json!({"error": {"object": "error", "type": "invalid_request_error", "code": "invalid_request_error", "message": message}}),
        &[],
    )
}

fn model_not_found(request_id: &str) -> http::Response<Body> {
    json_response(
        404,
        &json!({"error": {"message": "Model not found, inaccessible, and/or not deployed", "param": "model", "code": "NOT_FOUND", "type": "error"}, "request_id": request_id}),
        &[],
    )
}

/// Parses and checks the body like Fireworks' strict validator.
fn parse_body(req: &Recorded, allowed: &[&str]) -> Result<Map<String, Value>, Refusal> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
        return Err(Refusal::Validation(
            "Input should be a valid dictionary or object to extract fields from".into(),
        ));
    };
    if let Some(extra) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Refusal::Validation(format!(
            "Extra inputs are not permitted, field: '{extra}'"
        )));
    }
    if body.contains_key("max_tokens") && body.contains_key("max_completion_tokens") {
        return Err(Refusal::Validation(
            "max_tokens and max_completion_tokens are aliases; send only one".into(),
        ));
    }
    Ok(body)
}

fn model_of(
    body: &Map<String, Value>,
    options: &FireworksOptions,
    request_id: &str,
) -> Result<(String, ModelKind), Refusal> {
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return Err(Refusal::Validation("Field required, field: 'model'".into()));
    };
    if options.extra_chat_models.iter().any(|m| m == model) {
        return Ok((model.to_string(), ModelKind::Chat));
    }
    FAKE_MODELS
        .iter()
        .find(|(id, _)| *id == model)
        .map(|(id, kind)| (id.to_string(), *kind))
        .ok_or_else(|| Refusal::ModelNotFound(request_id.to_string()))
}

/// A rough token count: one per 4 characters, at least one.
fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

fn prompt_tokens(body: &Map<String, Value>, kind: Kind) -> Result<u64, String> {
    match kind {
        Kind::Completion => match body.get("prompt") {
            Some(Value::String(s)) => Ok(tokens(s)),
            Some(Value::Array(items)) => Ok(items.len() as u64),
            _ => Err("Field required, field: 'prompt'".into()),
        },
        Kind::Chat => {
            let Some(Value::Array(messages)) = body.get("messages") else {
                return Err("Field required, field: 'messages'".into());
            };
            let mut n = 0;
            for m in messages {
                n += 4;
                match m.get("content") {
                    Some(Value::String(s)) => n += tokens(s),
                    Some(Value::Array(parts)) => {
                        for p in parts {
                            match p.get("type").and_then(Value::as_str) {
                                Some("text") => n += tokens(p.get("text").and_then(Value::as_str).unwrap_or("")),
                                Some("image_url") => {
                                    let url = p.pointer("/image_url/url").and_then(Value::as_str).unwrap_or("");
                                    if !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with("data:")) {
                                        return Err(format!("Failed to download the image from {url:?}: UnsupportedProtocol"));
                                    }
                                    n += 256;
                                }
                                _ => return Err("Input tag does not match any of the expected tags: 'text', 'image_url'".into()),
                            }
                        }
                    }
                    _ => {}
                }
            }
            Ok(n)
        }
    }
}

/// The answer text (and reasoning) of the fake model.
fn answer(
    kind: Kind,
    model: ModelKind,
    body: &Map<String, Value>,
) -> (Option<&'static str>, &'static str) {
    let has_image = body
        .get("messages")
        .is_some_and(|m| m.to_string().contains("\"image_url\""));
    match (kind, model) {
        (Kind::Completion, _) => (
            None,
            " I'm interested in learning more about the different types of clouds and how they form, and what they can tell us about the weather.",
        ),
        (Kind::Chat, ModelKind::Thinking) if has_image => (
            Some("The user wants a description of the image. I will look at the scene and describe it."),
            "The image shows a bright, colourful scene with a clear subject in the foreground.",
        ),
        (Kind::Chat, ModelKind::Thinking) => (
            Some("The user greeted me. I should greet them back and offer help."),
            "Hello! How can I help you today?",
        ),
        (Kind::Chat, _) if has_image => (None, "The image shows a bright, colourful scene with a clear subject in the foreground."),
        (Kind::Chat, _) => (None, "Hello! 😊  \nHow can I help you today? Feel free to ask me anything."),
    }
}

/// A function call the fake model makes: when the request forces one (`tool_choice` naming a
/// function, or `required` with tools), it calls that function (or the first tool) with its
/// required parameters set to `"example"`.
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

impl ToolCall {
    fn whole(&self) -> Value {
        json!({"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}})
    }

    /// As OpenAI and Fireworks stream it: id, type and name first, then the arguments in pieces.
    fn deltas(&self) -> Vec<Value> {
        let mut out = vec![
            json!({"tool_calls": [{"index": 0, "id": self.id, "type": "function",
            "function": {"name": self.name, "arguments": ""}}]}),
        ];
        let mut rest = self.arguments.as_str();
        while !rest.is_empty() {
            let mut end = rest.len().min(8);
            while !rest.is_char_boundary(end) {
                end += 1;
            }
            out.push(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": &rest[..end]}}]}),
            );
            rest = &rest[end..];
        }
        out
    }
}

fn forced_tool_call(body: &Map<String, Value>, request_id: &str) -> Option<ToolCall> {
    let tools = body.get("tools")?.as_array()?;
    let name = match body.get("tool_choice")? {
        Value::String(s) if s == "required" => tools
            .first()?
            .pointer("/function/name")?
            .as_str()?
            .to_string(),
        v => v.pointer("/function/name")?.as_str()?.to_string(),
    };
    let tool = tools
        .iter()
        .find(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name.as_str()))?;
    let mut arguments = Map::new();
    for p in tool
        .pointer("/function/parameters/required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        arguments.insert(p.to_string(), json!("example"));
    }
    Some(ToolCall {
        id: format!("call_{request_id}"),
        name,
        arguments: Value::Object(arguments).to_string(),
    })
}

/// Splits text into word pieces (each keeps its leading space) for token-by-token streams.
fn pieces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, word) in text.split(' ').enumerate() {
        out.push(if i == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        });
    }
    out.retain(|p| !p.is_empty());
    out
}

fn generate(
    req: &Recorded,
    options: &FireworksOptions,
    request_id: &str,
    kind: Kind,
) -> http::Response<Body> {
    let allowed = if kind == Kind::Chat {
        CHAT_FIELDS
    } else {
        COMPLETION_FIELDS
    };
    let body = match parse_body(req, allowed) {
        Ok(b) => b,
        Err(r) => return r.response(),
    };
    let (model, model_kind) = match model_of(&body, options, request_id) {
        Ok(m) => m,
        Err(r) => return r.response(),
    };
    if !model_kind.generates() {
        return validation_error(format!(
            "Model {model} is not a text generation model and does not support this endpoint"
        ));
    }
    let prompt = match prompt_tokens(&body, kind) {
        Ok(n) => n,
        Err(m) => return validation_error(m),
    };
    let (reasoning, text) = answer(kind, model_kind, &body);
    let tool_call = (kind == Kind::Chat)
        .then(|| forced_tool_call(&body, request_id))
        .flatten();
    let limit = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .or(if kind == Kind::Completion {
            Some(16)
        } else {
            None
        });
    let (mut content_pieces, mut finish) = match tool_call {
        Some(_) => (Vec::new(), "tool_calls"),
        None => (pieces(text), "stop"),
    };
    if let Some(limit) = limit {
        if content_pieces.len() as u64 > limit {
            content_pieces.truncate(limit as usize);
            finish = "length";
        }
    }
    let reasoning_pieces = reasoning.map(pieces).unwrap_or_default();
    let call_tokens = tool_call.as_ref().map_or(0, |c| tokens(&c.arguments));
    let completion = (content_pieces.len() + reasoning_pieces.len()) as u64 + call_tokens;
    let mut usage = json!({
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": 0}
    });
    if !reasoning_pieces.is_empty() {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": reasoning_pieces.len()});
    }
    let headers = vec![
        ("x-request-id", request_id.to_string()),
        ("fireworks-prompt-tokens", prompt.to_string()),
        ("fireworks-server-time-to-first-token", "0.012".to_string()),
        ("x-ratelimit-limit-requests", "6000".to_string()),
        ("x-ratelimit-remaining-requests", "5999".to_string()),
        ("x-ratelimit-over-limit", "no".to_string()),
    ];
    let id = if kind == Kind::Chat {
        format!("chatcmpl-{request_id}")
    } else {
        format!("cmpl-{request_id}")
    };
    let gen = Generation {
        id,
        model,
        kind,
        reasoning_pieces,
        content_pieces,
        tool_call,
        finish,
        usage,
    };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
        let usage = match (include_usage, req.header(STREAM_USAGE_HEADER)) {
            (true, _) => StreamUsage::Asked,
            (false, Some("on-request")) => StreamUsage::Never,
            (false, _) => StreamUsage::Finishing,
        };
        return stream_response(gen, usage, options.stream_interval, &headers);
    }
    let body = serde_json::to_vec(&gen.whole()).unwrap_or_default();
    if accepts_gzip(req) {
        let mut headers = headers;
        headers.push(("content-encoding", "gzip".to_string()));
        return bytes_response(200, "application/json", gzip(&body), &headers);
    }
    bytes_response(200, "application/json", body, &headers)
}

fn accepts_gzip(req: &Recorded) -> bool {
    req.header("accept-encoding")
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
}

/// Gzip, as Fireworks' edge sends to clients that accept it.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data)
        .and_then(|_| e.finish())
        .unwrap_or_default()
}

struct Generation {
    id: String,
    model: String,
    kind: Kind,
    reasoning_pieces: Vec<String>,
    content_pieces: Vec<String>,
    tool_call: Option<ToolCall>,
    finish: &'static str,
    usage: Value,
}

impl Generation {
    fn whole(&self) -> Value {
        let content: String = self.content_pieces.concat();
        let choice = match self.kind {
            Kind::Chat => {
                let mut message = json!({"role": "assistant", "content": content});
                if let Some(call) = &self.tool_call {
                    message["content"] = Value::Null;
                    message["tool_calls"] = json!([call.whole()]);
                }
                if !self.reasoning_pieces.is_empty() {
                    message["reasoning_content"] = json!(self.reasoning_pieces.concat());
                }
                json!({"index": 0, "message": message, "finish_reason": self.finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": content, "logprobs": null, "finish_reason": self.finish})
            }
        };
        let object = if self.kind == Kind::Chat {
            "chat.completion"
        } else {
            "text_completion"
        };
        json!({"id": self.id, "object": object, "created": CREATED, "model": self.model, "choices": [choice], "usage": self.usage})
    }

    fn chunk(&self, choices: Value, usage: Value) -> String {
        let object = if self.kind == Kind::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let v = json!({"id": self.id, "object": object, "created": CREATED, "model": self.model, "choices": choices, "usage": usage});
        format!("data: {v}\n\n")
    }

    /// The SSE events, in order.
    fn events(&self, usage: StreamUsage) -> Vec<String> {
        let mut events = Vec::new();
        // With include_usage (OpenAI semantics) every chunk carries "usage": null.
        let none = Value::Null;
        let piece = |delta: Value| match self.kind {
            Kind::Chat => json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            Kind::Completion => {
                json!([{"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")), "logprobs": null, "finish_reason": null}])
            }
        };
        if self.kind == Kind::Chat {
            events.push(self.chunk(piece(json!({"role": "assistant"})), none.clone()));
        }
        for p in &self.reasoning_pieces {
            events.push(self.chunk(piece(json!({"reasoning_content": p})), none.clone()));
        }
        for p in &self.content_pieces {
            events.push(self.chunk(piece(json!({"content": p})), none.clone()));
        }
        if let Some(call) = &self.tool_call {
            for delta in call.deltas() {
                events.push(self.chunk(piece(delta), none.clone()));
            }
        }
        let last = match self.kind {
            Kind::Chat => json!([{"index": 0, "delta": {}, "finish_reason": self.finish}]),
            Kind::Completion => {
                json!([{"index": 0, "text": "", "logprobs": null, "finish_reason": self.finish}])
            }
        };
        match usage {
            StreamUsage::Asked => {
                events.push(self.chunk(last, none));
                events.push(self.chunk(json!([]), self.usage.clone()));
            }
            // Fireworks sends usage on the finishing chunk even without stream_options.
            StreamUsage::Finishing => events.push(self.chunk(last, self.usage.clone())),
            StreamUsage::Never => events.push(self.chunk(last, none)),
        }
        events.push("data: [DONE]\n\n".into());
        events
    }
}

/// Where a stream reports its usage.
#[derive(Clone, Copy)]
enum StreamUsage {
    /// Asked with `include_usage`: a last chunk with `"choices": []` (OpenAI and Fireworks).
    Asked,
    /// Not asked, Fireworks: on the finishing chunk.
    Finishing,
    /// Not asked, OpenAI semantics: nowhere.
    Never,
}

fn stream_response(
    gen: Generation,
    usage: StreamUsage,
    interval: Duration,
    headers: &[(&str, String)],
) -> http::Response<Body> {
    sse_response(gen.events(usage), interval, headers)
}

fn embeddings(
    req: &Recorded,
    options: &FireworksOptions,
    request_id: &str,
) -> http::Response<Body> {
    let body = match parse_body(req, EMBEDDING_FIELDS) {
        Ok(b) => b,
        Err(r) => return r.response(),
    };
    let (model, kind) = match model_of(&body, options, request_id) {
        Ok(m) => m,
        Err(r) => return r.response(),
    };
    if kind != ModelKind::Embedding {
        return validation_error(format!("Model {model} does not support embeddings"));
    }
    let inputs: Vec<(String, u64)> = match body.get("input") {
        Some(Value::String(s)) => vec![(s.clone(), tokens(s))],
        Some(Value::Array(items)) if !items.is_empty() => {
            if items.iter().all(Value::is_u64) {
                vec![(Value::Array(items.clone()).to_string(), items.len() as u64)]
            } else {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => out.push((s.clone(), tokens(s))),
                        Value::Array(ids) if ids.iter().all(Value::is_u64) => {
                            out.push((item.to_string(), ids.len() as u64))
                        }
                        _ => {
                            return validation_error(
                                "Input should be a valid string or list of token ids".into(),
                            )
                        }
                    }
                }
                out
            }
        }
        _ => return validation_error("Field required, field: 'input'".into()),
    };
    let dims = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(16)
        .clamp(1, 4096) as usize;
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return validation_error(format!(
                "Input should be 'float' or 'base64', got {other:?}"
            ))
        }
    };
    let prompt: u64 = inputs.iter().map(|(_, n)| n).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, (text, _))| {
            let vector = embed(text, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"index": i, "embedding": embedding, "object": "embedding"})
        })
        .collect();
    json_response(
        200,
        &json!({"data": data, "model": model, "object": "list", "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}),
        &[("x-request-id", request_id.to_string())],
    )
}

/// A deterministic vector for a text (values are multiples of 1/256, exact in f32).
fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..dims)
        .map(|i| {
            h = h.rotate_left(7) ^ (i as u64).wrapping_mul(0x9e37_79b9);
            ((h % 1024) as f32 - 512.0) / 256.0
        })
        .collect()
}

fn models_list() -> Value {
    let data: Vec<Value> = FAKE_MODELS
        .iter()
        .map(|(id, _)| json!({"id": id, "object": "model", "owned_by": "fireworks", "created": CREATED}))
        .collect();
    json!({"object": "list", "data": data})
}
