//! Token usage in provider responses (OpenAI's `usage` object, as Fireworks writes it too).

use serde::Deserialize;

/// Token counts of one response. Missing numbers are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    pub total: u64,
    pub reasoning: u64,
}

/// What the gateway reads from a JSON response (or one SSE event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseInfo {
    pub usage: Option<Usage>,
    /// The `model` the provider reports.
    pub model: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    usage: Option<RawUsage>,
}

#[derive(Deserialize)]
pub(crate) struct RawUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
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
            output,
            total: u.total_tokens.unwrap_or(input + output),
            reasoning: u
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// Usage and model of a non-streaming JSON response (chat, completions, embeddings).
pub fn response_info(body: &[u8]) -> ResponseInfo {
    match serde_json::from_slice::<Envelope<'_>>(body) {
        Ok(e) => ResponseInfo {
            usage: e.usage.map(Usage::from),
            model: e.model.map(|m| m.into_owned()),
        },
        Err(_) => ResponseInfo::default(),
    }
}

/// Usage of a non-streaming JSON response, if it has one.
pub fn usage_from_json(body: &[u8]) -> Option<Usage> {
    response_info(body).usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fireworks_chat_usage() {
        let body = br#"{"id":"x","model":"accounts/fireworks/models/m","usage":{"prompt_tokens":47,"total_tokens":49,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":29},"completion_tokens_details":{"reasoning_tokens":1}}}"#;
        let info = response_info(body);
        assert_eq!(
            info.usage,
            Some(Usage {
                input: 47,
                cached_input: 29,
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
            usage_from_json(body),
            Some(Usage {
                input: 11,
                total: 11,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn absent_or_null_usage() {
        assert_eq!(usage_from_json(br#"{"choices":[]}"#), None);
        assert_eq!(usage_from_json(br#"{"usage":null}"#), None);
        assert_eq!(usage_from_json(b"not json"), None);
    }
}
