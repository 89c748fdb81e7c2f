//! Rerank (`POST /v1/rerank`), as Fireworks (and Jina, Voyage...) serve it: a `query` string and
//! a non-empty `documents` array (strings or objects), `top_n`, `return_documents`. The answer
//! lists `{index, relevance_score, document?}` under `data` with OpenAI's `usage`
//! (`prompt_tokens`, `total_tokens`), read as input tokens; a provider that reports none is
//! not metered. It does not stream.

use std::time::Instant;

use super::{openai, Family};
use crate::llm::request::{Edit, RequestError, RequestInfo, Shape};
use crate::llm::sse::SseState;
use crate::llm::usage::ResponseInfo;

#[derive(Debug, Clone, Copy)]
pub struct Rerank;

/// `query` (a string) and `documents` (a non-empty array), as both rerank APIs take them.
pub(super) fn check_query_and_documents(fields: &[Option<Shape>]) -> Result<(), RequestError> {
    match fields.first().copied().flatten() {
        None => return Err(RequestError::MissingField("query")),
        Some(Shape::String) => {}
        Some(_) => {
            return Err(RequestError::WrongType {
                field: "query",
                expected: "a string",
            })
        }
    }
    match fields.get(1).copied().flatten() {
        None => Err(RequestError::MissingField("documents")),
        Some(Shape::Array { empty: false }) => Ok(()),
        Some(Shape::Array { empty: true }) => Err(RequestError::WrongType {
            field: "documents",
            expected: "a non-empty array",
        }),
        Some(_) => Err(RequestError::WrongType {
            field: "documents",
            expected: "an array",
        }),
    }
}

impl Family for Rerank {
    fn name(&self) -> &'static str {
        "rerank"
    }

    fn operation(&self) -> &'static str {
        "rerank"
    }

    fn suffix(&self) -> &'static str {
        "/rerank"
    }

    fn path(&self) -> &'static str {
        "/v1/rerank"
    }

    fn span_name(&self) -> &'static str {
        "Rerank"
    }

    fn span_kind(&self) -> &'static str {
        "RERANKER"
    }

    fn required(&self) -> &'static [&'static str] {
        &["query", "documents"]
    }

    fn check(&self, fields: &[Option<Shape>]) -> Result<(), RequestError> {
        check_query_and_documents(fields)
    }

    fn usage_edit(&self, _: &[u8], _: &RequestInfo) -> Option<Edit> {
        None
    }

    fn response_info(&self, body: &[u8]) -> ResponseInfo {
        openai::response_info(body)
    }

    /// It does not stream; a provider that does anyway is read like a chat stream.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Usage;

    #[test]
    fn fireworks_rerank_usage_and_checks() {
        let body = br#"{"object":"list","model":"fireworks/qwen3-reranker-8b","data":[{"index":1,"relevance_score":0.9}],"usage":{"prompt_tokens":31,"total_tokens":31}}"#;
        let info = Rerank.response_info(body);
        assert_eq!(
            info.usage,
            Some(Usage {
                input: 31,
                total: 31,
                ..Usage::default()
            })
        );
        assert_eq!(
            Rerank.response_info(br#"{"data":[]}"#),
            ResponseInfo::default()
        );
        let docs = Some(Shape::Array { empty: false });
        assert!(Rerank.check(&[Some(Shape::String), docs]).is_ok());
        assert_eq!(
            Rerank.check(&[None, docs]),
            Err(RequestError::MissingField("query"))
        );
        assert!(Rerank.check(&[Some(Shape::Other), docs]).is_err());
        assert_eq!(
            Rerank.check(&[Some(Shape::String), None]),
            Err(RequestError::MissingField("documents"))
        );
        assert!(Rerank
            .check(&[Some(Shape::String), Some(Shape::Array { empty: true })])
            .is_err());
    }
}
