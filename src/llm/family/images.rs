//! Image generation (`POST /v1/images/generations`): a `prompt` string. OpenAI's image models
//! report `usage` with `input_tokens` (text and image tokens of the prompt), `output_tokens`
//! (the image's tokens) and `total_tokens`, read into the usual numbers; models that report
//! none (DALL-E) are not metered. With `stream: true` (gpt-image-1) the events are
//! `image_generation.partial_image` (counted as token events, so the first one is the time to
//! first token) and `image_generation.completed`, which carries the usage.

use std::borrow::Cow;
use std::time::Instant;

use serde::Deserialize;

use super::{openai, Family};
use crate::llm::request::{Edit, RequestError, RequestInfo, Shape};
use crate::llm::sse::SseState;
use crate::llm::usage::{ResponseInfo, Usage};

#[derive(Debug, Clone, Copy)]
pub struct Images;

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
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
    output_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl From<RawUsage> for Usage {
    fn from(u: RawUsage) -> Self {
        let input = u.input_tokens.unwrap_or(0);
        let output = u.output_tokens.unwrap_or(0);
        Usage {
            input,
            output,
            total: u.total_tokens.unwrap_or(input + output),
            ..Usage::default()
        }
    }
}

impl Family for Images {
    fn name(&self) -> &'static str {
        "images"
    }

    fn operation(&self) -> &'static str {
        // As OpenTelemetry's GenAI conventions and Envoy AI Gateway name it.
        "image_generation"
    }

    fn suffix(&self) -> &'static str {
        "/images/generations"
    }

    fn path(&self) -> &'static str {
        "/v1/images/generations"
    }

    fn span_name(&self) -> &'static str {
        "ImageGeneration"
    }

    fn required(&self) -> &'static [&'static str] {
        &["prompt"]
    }

    fn check(&self, fields: &[Option<Shape>]) -> Result<(), RequestError> {
        match fields.first().copied().flatten() {
            None => Err(RequestError::MissingField("prompt")),
            Some(Shape::String) => Ok(()),
            Some(_) => Err(RequestError::WrongType {
                field: "prompt",
                expected: "a string",
            }),
        }
    }

    fn usage_edit(&self, _: &[u8], _: &RequestInfo) -> Option<Edit> {
        None
    }

    fn response_info(&self, body: &[u8]) -> ResponseInfo {
        match serde_json::from_slice::<Body<'_>>(body) {
            Ok(b) => ResponseInfo {
                usage: b.usage.map(Usage::from),
                model: b.model.map(Cow::into_owned),
                id: None,
            },
            Err(_) => ResponseInfo::default(),
        }
    }

    fn read_event(&self, data: &[u8], s: &mut SseState, now: Instant) {
        let Ok(event) = serde_json::from_slice::<Body<'_>>(data) else {
            s.malformed += 1;
            return;
        };
        if let Some(u) = event.usage {
            s.usage = Some(Usage::from(u));
        }
        if event.kind.as_deref() == Some("image_generation.partial_image") {
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
    fn image_usage_json_and_stream() {
        let body = br#"{"created":1,"data":[{"b64_json":"AAAA"}],"usage":{"input_tokens":50,"input_tokens_details":{"text_tokens":50,"image_tokens":0},"output_tokens":272,"total_tokens":322}}"#;
        let want = Usage {
            input: 50,
            output: 272,
            total: 322,
            ..Usage::default()
        };
        assert_eq!(Images.response_info(body).usage, Some(want));
        assert_eq!(
            Images.response_info(br#"{"created":1,"data":[]}"#).usage,
            None
        );
        let mut s = SseState::default();
        let t = Instant::now();
        Images.read_event(
            br#"{"type":"image_generation.partial_image","b64_json":"AA","partial_image_index":0}"#,
            &mut s,
            t,
        );
        Images.read_event(
            br#"{"type":"image_generation.completed","b64_json":"AAAA","usage":{"input_tokens":50,"output_tokens":272,"total_tokens":322}}"#,
            &mut s,
            t,
        );
        assert_eq!(s.usage, Some(want));
        assert_eq!(s.token_events, 1);
        assert_eq!(Images.check(&[Some(Shape::String)]), Ok(()));
        assert_eq!(
            Images.check(&[None]),
            Err(RequestError::MissingField("prompt"))
        );
    }
}
