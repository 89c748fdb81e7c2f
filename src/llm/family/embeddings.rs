//! Embeddings (`POST /v1/embeddings`): an `input` string or array; the answer is one JSON body
//! (OpenAI's embeddings do not stream), so there is no stream usage to ask for.

use std::time::Instant;

use super::{openai, Family};
use crate::llm::request::{Edit, RequestError, RequestInfo, Shape};
use crate::llm::sse::SseState;
use crate::llm::usage::ResponseInfo;

#[derive(Debug, Clone, Copy)]
pub struct Embeddings;

impl Family for Embeddings {
    fn name(&self) -> &'static str {
        "embeddings"
    }

    fn operation(&self) -> &'static str {
        "embeddings"
    }

    fn suffix(&self) -> &'static str {
        "/embeddings"
    }

    fn path(&self) -> &'static str {
        "/v1/embeddings"
    }

    fn span_name(&self) -> &'static str {
        "Embeddings"
    }

    fn span_kind(&self) -> &'static str {
        "EMBEDDING"
    }

    fn required(&self) -> &'static [&'static str] {
        &["input"]
    }

    fn check(&self, fields: &[Option<Shape>]) -> Result<(), RequestError> {
        openai::string_or_array("input", fields.first().copied().flatten())
    }

    fn usage_edit(&self, _: &[u8], _: &RequestInfo) -> Option<Edit> {
        None
    }

    fn response_info(&self, body: &[u8]) -> ResponseInfo {
        openai::response_info(body)
    }

    /// A provider that streams embeddings anyway is read like a chat stream (usage only).
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
