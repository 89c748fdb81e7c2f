//! Legacy completions (`POST /v1/completions`): a `prompt` string or array (of strings or token
//! ids); streams report usage when `stream_options.include_usage` asks.

use std::time::Instant;

use super::{openai, Family};
use crate::llm::request::{Edit, RequestError, RequestInfo, Shape};
use crate::llm::sse::SseState;
use crate::llm::usage::ResponseInfo;

#[derive(Debug, Clone, Copy)]
pub struct Completions;

impl Family for Completions {
    fn name(&self) -> &'static str {
        "completions"
    }

    fn operation(&self) -> &'static str {
        "text_completion"
    }

    fn suffix(&self) -> &'static str {
        "/completions"
    }

    fn path(&self) -> &'static str {
        "/v1/completions"
    }

    fn span_name(&self) -> &'static str {
        "Completion"
    }

    fn required(&self) -> &'static [&'static str] {
        &["prompt"]
    }

    fn check(&self, fields: &[Option<Shape>]) -> Result<(), RequestError> {
        openai::string_or_array("prompt", fields.first().copied().flatten())
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
