//! Anthropic's Messages API (`POST /v1/messages`, and Envoy AI Gateway's
//! `/anthropic/v1/messages`): a non-empty `messages` array and `max_tokens`. Usage is
//! `input_tokens` (what was not read from or written to the prompt cache),
//! `cache_read_input_tokens`, `cache_creation_input_tokens` and `output_tokens`; the gateway
//! counts input as all three input numbers together (as OpenAI's `prompt_tokens` includes the
//! cached ones), cached input as the cache reads, cache creation as the writes. A stream tells
//! the input usage in `message_start` and the output (cumulative) in `message_delta`, so the
//! two are merged; streams always report usage, so nothing is added to the request. Errors on
//! these paths use Anthropic's envelope, `{"type":"error","error":{"type","message"}}`.

use std::borrow::Cow;
use std::time::Instant;

use serde::Deserialize;

use super::{Api, Family};
use crate::llm::request::{Edit, RequestError, RequestInfo, Shape};
use crate::llm::sse::SseState;
use crate::llm::usage::{ResponseInfo, Usage};

#[derive(Debug, Clone, Copy)]
pub struct Messages;

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<RawUsage>,
}

/// Anthropic's `usage`; in a stream each event has some of it.
#[derive(Deserialize, Default)]
struct RawUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl RawUsage {
    /// `into` updated with what this usage says (a stream's events each say part of it).
    fn merge(self, into: Option<Usage>) -> Usage {
        let mut u = into.unwrap_or_default();
        // Keep the parts of input apart while merging: input = uncached + read + written.
        let uncached = u
            .input
            .saturating_sub(u.cached_input)
            .saturating_sub(u.cache_creation_input);
        let uncached = self.input_tokens.unwrap_or(uncached);
        u.cached_input = self.cache_read_input_tokens.unwrap_or(u.cached_input);
        u.cache_creation_input = self
            .cache_creation_input_tokens
            .unwrap_or(u.cache_creation_input);
        u.input = uncached + u.cached_input + u.cache_creation_input;
        u.output = self.output_tokens.unwrap_or(u.output);
        u.total = u.input + u.output;
        u
    }
}

/// One stream event's data.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// `message_start`.
    #[serde(default, borrow)]
    message: Option<Message<'a>>,
    /// `message_delta`.
    #[serde(default)]
    usage: Option<RawUsage>,
    /// `content_block_delta`: `text_delta`, `thinking_delta`, `input_json_delta`.
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    /// `content_block_start`/`_delta`: the block's position in the answer.
    #[serde(default)]
    index: Option<usize>,
    /// `content_block_start`: a `tool_use` block names its call (id, name) here; its input
    /// follows as `input_json_delta` pieces.
    #[serde(default, borrow)]
    content_block: Option<Block<'a>>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
}

impl Family for Messages {
    fn name(&self) -> &'static str {
        "messages"
    }

    fn operation(&self) -> &'static str {
        // As Envoy AI Gateway names it.
        "messages"
    }

    fn suffix(&self) -> &'static str {
        "/messages"
    }

    fn path(&self) -> &'static str {
        "/v1/messages"
    }

    fn span_name(&self) -> &'static str {
        "Messages"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["/anthropic/v1/messages"]
    }

    fn api(&self) -> Api {
        Api::Anthropic
    }

    fn required(&self) -> &'static [&'static str] {
        &["messages", "max_tokens"]
    }

    fn check(&self, fields: &[Option<Shape>]) -> Result<(), RequestError> {
        check_messages(fields.first().copied().flatten())?;
        match fields.get(1).copied().flatten() {
            None => Err(RequestError::MissingField("max_tokens")),
            Some(Shape::Other) => Ok(()),
            Some(Shape::String | Shape::Array { .. }) => Err(RequestError::WrongType {
                field: "max_tokens",
                expected: "a number",
            }),
        }
    }

    fn usage_edit(&self, _body: &[u8], _request: &RequestInfo) -> Option<Edit> {
        None
    }

    fn response_info(&self, body: &[u8]) -> ResponseInfo {
        match serde_json::from_slice::<Message<'_>>(body) {
            Ok(m) => ResponseInfo {
                usage: m.usage.map(|u| u.merge(None)),
                model: m.model.map(Cow::into_owned),
                id: None,
            },
            Err(_) => ResponseInfo::default(),
        }
    }

    fn read_event(&self, data: &[u8], s: &mut SseState, now: Instant) {
        let Ok(event) = serde_json::from_slice::<Event<'_>>(data) else {
            s.malformed += 1;
            return;
        };
        if let Some(m) = event.message {
            if s.model.is_none() {
                s.model = m.model.map(Cow::into_owned);
            }
            if let Some(u) = m.usage {
                s.usage = Some(u.merge(s.usage));
            }
        }
        if let Some(u) = event.usage {
            s.usage = Some(u.merge(s.usage));
        }
        let non_empty = |t: &Option<Cow<'_, str>>| t.as_deref().is_some_and(|t| !t.is_empty());
        if s.capture.is_some() {
            // A tool call is known by the index of the block that holds it.
            if let Some(b) = event
                .content_block
                .as_ref()
                .filter(|b| b.kind == "tool_use")
            {
                s.capture_tool_call(
                    event.index.unwrap_or(0),
                    b.id.as_deref(),
                    b.name.as_deref(),
                    "",
                );
            }
            if let Some(d) = event.delta.as_ref() {
                s.capture_text(d.text.as_deref().unwrap_or(""));
                s.capture_reasoning(d.thinking.as_deref().unwrap_or(""));
                if let Some(json) = d.partial_json.as_deref().filter(|j| !j.is_empty()) {
                    s.capture_tool_call(event.index.unwrap_or(0), None, None, json);
                }
            }
        }
        let token = event.kind == "content_block_delta"
            && event.delta.is_some_and(|d| {
                non_empty(&d.text) || non_empty(&d.thinking) || non_empty(&d.partial_json)
            });
        if token {
            s.token_events += 1;
            s.first_token.get_or_insert(now);
            s.last_token = Some(now);
        }
    }

    fn error_body(
        &self,
        message: String,
        kind: &'static str,
        _param: Option<&'static str>,
        code: Option<&'static str>,
    ) -> Vec<u8> {
        error_body(message, kind, code)
    }
}

/// `messages`: a non-empty array.
pub(super) fn check_messages(shape: Option<Shape>) -> Result<(), RequestError> {
    match shape {
        None => Err(RequestError::MissingField("messages")),
        Some(Shape::Array { empty: true }) => Err(RequestError::EmptyMessages),
        Some(Shape::Array { empty: false }) => Ok(()),
        Some(Shape::String | Shape::Other) => Err(RequestError::WrongType {
            field: "messages",
            expected: "an array",
        }),
    }
}

/// Anthropic's envelope, with Anthropic's error type for what the gateway refuses.
pub(super) fn error_body(
    message: String,
    kind: &'static str,
    code: Option<&'static str>,
) -> Vec<u8> {
    let kind = match (kind, code) {
        (_, Some("model_not_found" | "unknown_url")) => "not_found_error",
        ("rate_limit_exceeded", _) => "rate_limit_error",
        ("service_unavailable", _) => "overloaded_error",
        ("invalid_request_error", _) => "invalid_request_error",
        ("authentication_error", _) => "authentication_error",
        ("permission_denied", _) => "permission_error",
        _ => "api_error",
    };
    let message = serde_json::to_string(&message).unwrap_or_default();
    format!(r#"{{"type":"error","error":{{"type":"{kind}","message":{message}}}}}"#).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_a_message_and_of_its_stream() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":10,"cache_read_input_tokens":30,"cache_creation_input_tokens":5,"output_tokens":7}}"#;
        let want = Usage {
            input: 45,
            cached_input: 30,
            cache_creation_input: 5,
            output: 7,
            total: 52,
            reasoning: 0,
        };
        let info = Messages.response_info(body);
        assert_eq!(info.usage, Some(want));
        assert_eq!(info.model.as_deref(), Some("claude-x"));

        let mut s = SseState::default();
        let t = Instant::now();
        for event in [
            r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":10,"cache_read_input_tokens":30,"cache_creation_input_tokens":5,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#,
            r#"{"type":"message_stop"}"#,
        ] {
            Messages.read_event(event.as_bytes(), &mut s, t);
        }
        assert_eq!(s.usage, Some(want));
        assert_eq!((s.token_events, s.malformed), (1, 0));
        assert_eq!(s.model.as_deref(), Some("claude-x"));
    }

    #[test]
    fn errors_take_anthropics_envelope() {
        let body = Messages.error_body("no".into(), "invalid_request_error", None, None);
        assert_eq!(
            body,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"no"}}"#
        );
        let body = Messages.error_body(
            "x".into(),
            "invalid_request_error",
            None,
            Some("model_not_found"),
        );
        assert!(String::from_utf8(body).unwrap().contains("not_found_error"));
    }

    #[test]
    fn messages_and_max_tokens_are_required() {
        let ok = Some(Shape::Array { empty: false });
        assert!(Messages.check(&[ok, Some(Shape::Other)]).is_ok());
        assert_eq!(
            Messages.check(&[ok, None]),
            Err(RequestError::MissingField("max_tokens"))
        );
        assert!(Messages.check(&[ok, Some(Shape::String)]).is_err());
        assert!(Messages.check(&[None, Some(Shape::Other)]).is_err());
        // Parsed: `max_tokens` is both required here and the bound budgets estimate from.
        let body = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
        let info = crate::llm::parse_request(&Messages, body).unwrap();
        assert_eq!(info.max_output_tokens, Some(5));
        let no_max =
            br#"{"model":"m","max_tokens":null,"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            crate::llm::parse_request(&Messages, no_max).unwrap_err(),
            RequestError::MissingField("max_tokens")
        );
    }
}
