//! OpenAI's wire format, shared by the OpenAI families (chat completions, completions,
//! embeddings): the `usage` object, stream chunks, `stream_options.include_usage`, and
//! `{"error": {...}}` bodies.

use std::borrow::Cow;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::llm::error::ErrorBody;
use crate::llm::request::{Edit, RequestError, RequestInfo, Shape};
use crate::llm::sse::SseState;
use crate::llm::usage::{ResponseInfo, Usage};

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<RawUsage>,
}

/// OpenAI's `usage` object, as Fireworks writes it too.
#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    /// Anthropic-style, also sent by some OpenAI-compatible providers that cache prompts.
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<RawUsage> for Usage {
    fn from(u: RawUsage) -> Self {
        let input = u.prompt_tokens.unwrap_or(0);
        let output = u.completion_tokens.unwrap_or(0);
        Usage {
            input,
            cached_input: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_creation_input: u.cache_creation_input_tokens.unwrap_or(0),
            output,
            total: u.total_tokens.unwrap_or(input + output),
            reasoning: u
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// Usage and model of a non-streaming JSON response; nothing when it is not JSON.
pub(super) fn response_info(body: &[u8]) -> ResponseInfo {
    match serde_json::from_slice::<Envelope<'_>>(body) {
        Ok(e) => ResponseInfo {
            usage: e.usage.map(Usage::from),
            model: e.model.map(Cow::into_owned),
            id: None,
        },
        Err(_) => ResponseInfo::default(),
    }
}

/// One stream chunk (`chat.completion.chunk` or a completions chunk).
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    /// Completions stream `text` instead of a delta.
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    /// Left unparsed (a scan, like `IgnoredAny`) unless a trace keeps the answer.
    #[serde(default, borrow)]
    tool_calls: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: Option<usize>,
    /// In the call's first delta only.
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// Reads a stream chunk: the first model named, the latest usage (it is cumulative), usage-only
/// chunks, and when generated text (or a tool call) arrived.
pub(super) fn read_event(data: &[u8], s: &mut SseState, now: Instant) {
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        s.malformed += 1;
        return;
    };
    if s.model.is_none() {
        s.model = chunk.model.map(Cow::into_owned);
    }
    if chunk.choices.as_ref().is_some_and(Vec::is_empty) && chunk.usage.is_some() {
        s.usage_only_events += 1;
    }
    if let Some(u) = chunk.usage {
        s.usage = Some(Usage::from(u));
    }
    let non_empty = |t: &Option<Cow<'_, str>>| t.as_deref().is_some_and(|t| !t.is_empty());
    if s.capture.is_some() {
        for c in chunk.choices.iter().flatten() {
            if let Some(d) = &c.delta {
                s.capture_text(d.content.as_deref().unwrap_or(""));
                s.capture_reasoning(d.reasoning_content.as_deref().unwrap_or(""));
                let calls: Vec<ToolCallDelta<'_>> = d
                    .tool_calls
                    .and_then(|raw| serde_json::from_str(raw.get()).ok())
                    .unwrap_or_default();
                for (i, call) in calls.iter().enumerate() {
                    let f = call.function.as_ref();
                    s.capture_tool_call(
                        call.index.unwrap_or(i),
                        call.id.as_deref(),
                        f.and_then(|f| f.name.as_deref()),
                        f.and_then(|f| f.arguments.as_deref()).unwrap_or(""),
                    );
                }
            }
            s.capture_text(c.text.as_deref().unwrap_or(""));
        }
    }
    let has_token = chunk.choices.iter().flatten().any(|c| {
        let delta_token = c.delta.as_ref().is_some_and(|d| {
            non_empty(&d.content) || non_empty(&d.reasoning_content) || d.tool_calls.is_some()
        });
        delta_token || non_empty(&c.text)
    });
    if has_token {
        s.token_events += 1;
        s.first_token.get_or_insert(now);
        s.last_token = Some(now);
    }
}

/// The edit that makes a stream report usage (`stream_options.include_usage: true`), keeping
/// any other stream option; `None` when the request already asks for it.
pub fn include_usage_edit(body: &[u8], info: &RequestInfo) -> Option<Edit> {
    if info.include_usage {
        return None;
    }
    match &info.stream_options {
        None => {
            let at = info.object_start + 1;
            Some(Edit {
                range: at..at,
                text: r#""stream_options":{"include_usage":true},"#.to_string(),
            })
        }
        Some(range) => {
            let mut options =
                match serde_json::from_slice::<serde_json::Value>(&body[range.clone()]) {
                    Ok(serde_json::Value::Object(map)) => map,
                    Ok(serde_json::Value::Null) => serde_json::Map::new(),
                    // Not an object: leave it for the provider to refuse.
                    _ => return None,
                };
            options.insert("include_usage".into(), serde_json::Value::Bool(true));
            Some(Edit {
                range: range.clone(),
                text: serde_json::to_string(&options).unwrap_or_default(),
            })
        }
    }
}

/// A field that takes a string or an array (`prompt`, `input`).
pub(super) fn string_or_array(
    field: &'static str,
    shape: Option<Shape>,
) -> Result<(), RequestError> {
    match shape {
        None => Err(RequestError::MissingField(field)),
        Some(Shape::String | Shape::Array { .. }) => Ok(()),
        Some(Shape::Other) => Err(RequestError::WrongType {
            field,
            expected: "a string or an array",
        }),
    }
}

/// `{"error": {"message", "type", "param", "code"}}`.
pub(super) fn error_body(
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
) -> Vec<u8> {
    ErrorBody::new(message, kind, param, code).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fireworks_chat_usage() {
        let body = br#"{"id":"x","model":"accounts/fireworks/models/m","usage":{"prompt_tokens":47,"total_tokens":49,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":29},"completion_tokens_details":{"reasoning_tokens":1},"cache_creation_input_tokens":7}}"#;
        let info = response_info(body);
        assert_eq!(
            info.usage,
            Some(Usage {
                input: 47,
                cached_input: 29,
                cache_creation_input: 7,
                output: 2,
                total: 49,
                reasoning: 1
            })
        );
        assert_eq!(info.model.as_deref(), Some("accounts/fireworks/models/m"));
    }

    #[test]
    fn embeddings_usage_has_no_output() {
        let body = br#"{"data":[],"usage":{"prompt_tokens":11,"total_tokens":11}}"#;
        assert_eq!(
            response_info(body).usage,
            Some(Usage {
                input: 11,
                total: 11,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn absent_or_null_usage() {
        assert_eq!(response_info(br#"{"choices":[]}"#).usage, None);
        assert_eq!(response_info(br#"{"usage":null}"#).usage, None);
        assert_eq!(response_info(b"not json"), ResponseInfo::default());
    }
}
