//! Anthropic's token counting (`POST /v1/messages/count_tokens`, and Envoy AI Gateway's
//! `/anthropic/v1/messages/count_tokens`): the body of a Messages request, `max_tokens` not
//! needed. The answer, `{"input_tokens": N}`, is a count and not usage (nothing is generated,
//! and Anthropic does not bill it), so nothing is metered or charged to a budget. Errors use
//! Anthropic's envelope.

use std::time::Instant;

use super::{messages, Api, Family};
use crate::llm::request::{Edit, RequestError, RequestInfo, Shape};
use crate::llm::sse::SseState;
use crate::llm::usage::ResponseInfo;

#[derive(Debug, Clone, Copy)]
pub struct CountTokens;

impl Family for CountTokens {
    fn name(&self) -> &'static str {
        "count_tokens"
    }

    fn operation(&self) -> &'static str {
        "count_tokens"
    }

    fn suffix(&self) -> &'static str {
        "/messages/count_tokens"
    }

    fn path(&self) -> &'static str {
        "/v1/messages/count_tokens"
    }

    fn span_name(&self) -> &'static str {
        "CountTokens"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["/anthropic/v1/messages/count_tokens"]
    }

    fn api(&self) -> Api {
        Api::Anthropic
    }

    fn required(&self) -> &'static [&'static str] {
        &["messages"]
    }

    fn check(&self, fields: &[Option<Shape>]) -> Result<(), RequestError> {
        messages::check_messages(fields.first().copied().flatten())
    }

    fn usage_edit(&self, _: &[u8], _: &RequestInfo) -> Option<Edit> {
        None
    }

    /// A count, not usage.
    fn response_info(&self, _body: &[u8]) -> ResponseInfo {
        ResponseInfo::default()
    }

    /// It does not stream; an event is passed through unread.
    fn read_event(&self, _data: &[u8], _state: &mut SseState, _now: Instant) {}

    fn error_body(
        &self,
        message: String,
        kind: &'static str,
        _param: Option<&'static str>,
        code: Option<&'static str>,
    ) -> Vec<u8> {
        messages::error_body(message, kind, code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_not_usage() {
        assert_eq!(
            CountTokens.response_info(br#"{"input_tokens":42}"#),
            ResponseInfo::default()
        );
        assert!(CountTokens
            .check(&[Some(Shape::Array { empty: false })])
            .is_ok());
        assert_eq!(
            CountTokens.check(&[None]),
            Err(RequestError::MissingField("messages"))
        );
        let info = crate::llm::parse_request(
            &CountTokens,
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(info.model, "m");
    }
}
