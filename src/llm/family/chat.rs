//! Chat completions (`POST /v1/chat/completions`): a non-empty `messages` array; streams report
//! usage when `stream_options.include_usage` asks.

use std::time::Instant;

use super::{openai, Family};
use crate::llm::request::{Edit, RequestError, RequestInfo, Shape};
use crate::llm::sse::SseState;
use crate::llm::usage::ResponseInfo;

#[derive(Debug, Clone, Copy)]
pub struct Chat;

impl Family for Chat {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn operation(&self) -> &'static str {
        "chat"
    }

    fn suffix(&self) -> &'static str {
        "/chat/completions"
    }

    fn path(&self) -> &'static str {
        "/v1/chat/completions"
    }

    fn span_name(&self) -> &'static str {
        "ChatCompletion"
    }

    fn required(&self) -> &'static [&'static str] {
        &["messages"]
    }

    fn check(&self, fields: &[Option<Shape>]) -> Result<(), RequestError> {
        match fields.first().copied().flatten() {
            None => Err(RequestError::MissingField("messages")),
            Some(Shape::Array { empty: true }) => Err(RequestError::EmptyMessages),
            Some(Shape::Array { empty: false }) => Ok(()),
            Some(Shape::String | Shape::Other) => Err(RequestError::WrongType {
                field: "messages",
                expected: "an array",
            }),
        }
    }

    fn usage_edit(&self, body: &[u8], request: &RequestInfo) -> Option<Edit> {
        openai::include_usage_edit(body, request)
    }

    fn response_info(&self, body: &[u8]) -> ResponseInfo {
        openai::response_info(body)
    }

    fn read_event(&self, data: &[u8], state: &mut SseState, now: Instant) {
        openai::read_event(data, state, now)
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
