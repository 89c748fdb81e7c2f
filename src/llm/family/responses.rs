//! OpenAI's Responses API (`POST /v1/responses`): `input` (a string or an array of items,
//! optional when `previous_response_id` continues a stored conversation). Usage is
//! `input_tokens`, `input_tokens_details.cached_tokens`, `output_tokens`,
//! `output_tokens_details.reasoning_tokens`, `total_tokens`, at the top of a JSON response and
//! in the `response` of a stream's `response.completed` (or `.incomplete`, `.failed`) event;
//! streams always report it, so nothing is added to the request. Streamed events are typed
//! (`event: response.output_text.delta`, each data carrying its `type`); generated tokens come
//! as `*.delta` events.

use std::borrow::Cow;
use std::time::Instant;

use serde::Deserialize;

use super::{openai, Family};
use crate::llm::request::{Edit, RequestError, RequestInfo, Shape};
use crate::llm::sse::SseState;
use crate::llm::usage::{ResponseInfo, Usage};

#[derive(Debug, Clone, Copy)]
pub struct Responses;

/// A response object (the JSON body, or the `response` of a lifecycle event).
#[derive(Deserialize)]
struct Response<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<RawUsage>,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<RawUsage> for Usage {
    fn from(u: RawUsage) -> Self {
        let input = u.input_tokens.unwrap_or(0);
        let output = u.output_tokens.unwrap_or(0);
        Usage {
            input,
            cached_input: u
                .input_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_creation_input: 0,
            output,
            total: u.total_tokens.unwrap_or(input + output),
            reasoning: u
                .output_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// One stream event's data.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    response: Option<Response<'a>>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
}

impl Family for Responses {
    fn name(&self) -> &'static str {
        "responses"
    }

    fn operation(&self) -> &'static str {
        // As Envoy AI Gateway names it.
        "responses"
    }

    fn suffix(&self) -> &'static str {
        "/responses"
    }

    fn path(&self) -> &'static str {
        "/v1/responses"
    }

    fn span_name(&self) -> &'static str {
        "Responses"
    }

    fn required(&self) -> &'static [&'static str] {
        &["input"]
    }

    fn pin_field(&self) -> Option<&'static str> {
        Some("previous_response_id")
    }

    fn check(&self, fields: &[Option<Shape>]) -> Result<(), RequestError> {
        match fields.first().copied().flatten() {
            // Optional: `previous_response_id` or a stored prompt may stand for it.
            None | Some(Shape::String | Shape::Array { .. }) => Ok(()),
            Some(Shape::Other) => Err(RequestError::WrongType {
                field: "input",
                expected: "a string or an array",
            }),
        }
    }

    fn usage_edit(&self, _body: &[u8], _request: &RequestInfo) -> Option<Edit> {
        None
    }

    fn response_info(&self, body: &[u8]) -> ResponseInfo {
        match serde_json::from_slice::<Response<'_>>(body) {
            Ok(r) => ResponseInfo {
                usage: r.usage.map(Usage::from),
                model: r.model.map(Cow::into_owned),
                id: r.id.map(Cow::into_owned),
            },
            Err(_) => ResponseInfo::default(),
        }
    }

    fn read_event(&self, data: &[u8], s: &mut SseState, now: Instant) {
        let Ok(event) = serde_json::from_slice::<Event<'_>>(data) else {
            s.malformed += 1;
            return;
        };
        if let Some(r) = event.response {
            if s.model.is_none() {
                s.model = r.model.map(Cow::into_owned);
            }
            if s.id.is_none() {
                s.id = r.id.map(Cow::into_owned);
            }
            if let Some(u) = r.usage {
                s.usage = Some(Usage::from(u));
            }
        }
        if let Some(d) = event.delta.as_deref() {
            match event.kind.as_ref() {
                "response.output_text.delta" => s.capture_text(d),
                "response.reasoning_text.delta" | "response.reasoning_summary_text.delta" => {
                    s.capture_reasoning(d)
                }
                _ => {}
            }
        }
        // Text, reasoning, refusals, tool-call arguments: every `*.delta` with something in it.
        if event.kind.ends_with(".delta") && event.delta.is_some_and(|d| !d.is_empty()) {
            s.token_events += 1;
            s.first_token.get_or_insert(now);
            s.last_token = Some(now);
        }
    }

    fn error_body(
        &self,
        message: String,
        kind: &'static str,
        param: Option<&'static str>,
        code: Option<&'static str>,
    ) -> Vec<u8> {
        openai::error_body(message, kind, param, code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_a_response_and_of_its_stream() {
        let body = br#"{"id":"resp_1","object":"response","model":"accounts/fireworks/models/m","output":[],"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":4},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":19}}"#;
        let want = Usage {
            input: 12,
            cached_input: 4,
            cache_creation_input: 0,
            output: 7,
            total: 19,
            reasoning: 2,
        };
        let info = Responses.response_info(body);
        assert_eq!(info.usage, Some(want));
        assert_eq!(info.model.as_deref(), Some("accounts/fireworks/models/m"));

        let mut s = SseState::default();
        let t = Instant::now();
        Responses.read_event(
            br#"{"type":"response.created","response":{"model":"m1","usage":null}}"#,
            &mut s,
            t,
        );
        Responses.read_event(
            br#"{"type":"response.output_text.delta","delta":"Hi"}"#,
            &mut s,
            t,
        );
        Responses.read_event(
            br#"{"type":"response.output_text.delta","delta":""}"#,
            &mut s,
            t,
        );
        Responses.read_event(
            br#"{"type":"response.output_text.done","text":"Hi"}"#,
            &mut s,
            t,
        );
        Responses.read_event(
            br#"{"type":"response.completed","response":{"model":"m2","usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":4},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":19}}}"#,
            &mut s,
            t,
        );
        Responses.read_event(b"{not json", &mut s, t);
        assert_eq!(s.model.as_deref(), Some("m1"));
        assert_eq!(s.usage, Some(want));
        assert_eq!((s.token_events, s.malformed), (1, 1));
    }

    #[test]
    fn input_is_a_string_an_array_or_absent() {
        assert!(Responses.check(&[None]).is_ok());
        assert!(Responses.check(&[Some(Shape::String)]).is_ok());
        assert!(Responses
            .check(&[Some(Shape::Array { empty: false })])
            .is_ok());
        assert!(Responses.check(&[Some(Shape::Other)]).is_err());
    }
}
