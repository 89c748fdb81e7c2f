//! Cohere's rerank (`POST /cohere/v2/rerank`, as Envoy AI Gateway serves it), for backends of
//! schema `Cohere` (`{prefix}/rerank`, prefix `/v2`): `query` and `documents` as in
//! [`super::Rerank`], the answer's `results` with `meta.tokens` (`input_tokens`,
//! `output_tokens`) or, without it, `meta.billed_units` (same names); search units are not
//! tokens and are not counted. Errors use Cohere's `{"message": ...}`.

use std::time::Instant;

use serde::Deserialize;

use super::{rerank, Api, Family};
use crate::llm::request::{Edit, RequestError, RequestInfo, Shape};
use crate::llm::sse::SseState;
use crate::llm::usage::{ResponseInfo, Usage};

#[derive(Debug, Clone, Copy)]
pub struct CohereRerank;

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    tokens: Option<Tokens>,
    #[serde(default)]
    billed_units: Option<Tokens>,
}

#[derive(Deserialize)]
struct Tokens {
    #[serde(default)]
    input_tokens: Option<f64>,
    #[serde(default)]
    output_tokens: Option<f64>,
}

impl Tokens {
    fn usage(&self) -> Option<Usage> {
        if self.input_tokens.is_none() && self.output_tokens.is_none() {
            return None;
        }
        // Cohere writes counts as JSON numbers that may carry a fraction (`12.0`).
        let count = |n: Option<f64>| n.filter(|n| *n >= 0.0).map_or(0, |n| n as u64);
        let (input, output) = (count(self.input_tokens), count(self.output_tokens));
        Some(Usage {
            input,
            output,
            total: input + output,
            ..Usage::default()
        })
    }
}

impl Family for CohereRerank {
    fn name(&self) -> &'static str {
        "cohere_rerank"
    }

    fn operation(&self) -> &'static str {
        "rerank"
    }

    fn suffix(&self) -> &'static str {
        "/rerank"
    }

    fn path(&self) -> &'static str {
        "/cohere/v2/rerank"
    }

    fn span_name(&self) -> &'static str {
        "Rerank"
    }

    fn span_kind(&self) -> &'static str {
        "RERANKER"
    }

    fn api(&self) -> Api {
        Api::Cohere
    }

    fn required(&self) -> &'static [&'static str] {
        &["query", "documents"]
    }

    fn check(&self, fields: &[Option<Shape>]) -> Result<(), RequestError> {
        rerank::check_query_and_documents(fields)
    }

    fn usage_edit(&self, _: &[u8], _: &RequestInfo) -> Option<Edit> {
        None
    }

    fn response_info(&self, body: &[u8]) -> ResponseInfo {
        let usage = serde_json::from_slice::<Body>(body)
            .ok()
            .and_then(|b| b.meta)
            .and_then(|m| {
                m.tokens
                    .and_then(|t| t.usage())
                    .or_else(|| m.billed_units.and_then(|t| t.usage()))
            });
        ResponseInfo {
            usage,
            ..ResponseInfo::default()
        }
    }

    /// It does not stream.
    fn read_event(&self, _data: &[u8], _state: &mut SseState, _now: Instant) {}

    fn error_body(
        &self,
        message: String,
        _kind: &'static str,
        _param: Option<&'static str>,
        _code: Option<&'static str>,
    ) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "message": message })).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohere_usage_from_tokens_or_billed_units() {
        let body = br#"{"id":"x","results":[{"index":0,"relevance_score":0.9}],"meta":{"api_version":{"version":"2"},"billed_units":{"search_units":1},"tokens":{"input_tokens":40.0,"output_tokens":0}}}"#;
        assert_eq!(
            CohereRerank.response_info(body).usage,
            Some(Usage {
                input: 40,
                total: 40,
                ..Usage::default()
            })
        );
        let billed =
            br#"{"results":[],"meta":{"billed_units":{"search_units":1,"input_tokens":7}}}"#;
        assert_eq!(CohereRerank.response_info(billed).usage.unwrap().input, 7);
        let units_only = br#"{"results":[],"meta":{"billed_units":{"search_units":1}}}"#;
        assert_eq!(CohereRerank.response_info(units_only).usage, None);
        assert_eq!(
            CohereRerank.error_body("no".into(), "invalid_request_error", None, None),
            br#"{"message":"no"}"#
        );
    }
}
