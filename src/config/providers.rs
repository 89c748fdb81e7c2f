//! What ai-extproc knows of a provider beyond its API schema: behaviour that differs between
//! providers speaking the same OpenAI schema, decided per AIServiceBackend. An annotation on
//! the AIServiceBackend overrides what the Backend's host name implies.

use std::collections::BTreeMap;

/// The annotation that says how a backend reports usage on streams.
pub const STREAM_USAGE_ANNOTATION: &str = "ai-extproc.io/stream-usage";

/// How a backend reports token usage on streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamUsage {
    /// Only when asked (`stream_options.include_usage: true`), in an extra chunk with
    /// `"choices": []`: OpenAI's semantics, and the safe assumption. ai-extproc asks for it and
    /// takes that chunk out of what a client that did not ask receives.
    #[default]
    OnRequest,
    /// Always, on the chunk that finishes the stream (Fireworks): nothing is asked or removed.
    Always,
}

/// Providers known to report stream usage unasked, by API host.
const ALWAYS_REPORT_STREAM_USAGE: &[&str] = &["api.fireworks.ai"];

/// The stream-usage behaviour of a backend: its annotation (`on-request` or `always`), else
/// what its host is known to do. An unknown annotation value is an error message.
pub fn stream_usage(
    annotations: &BTreeMap<String, String>,
    host: Option<&str>,
) -> Result<StreamUsage, String> {
    match annotations.get(STREAM_USAGE_ANNOTATION).map(String::as_str) {
        Some("on-request") => Ok(StreamUsage::OnRequest),
        Some("always") => Ok(StreamUsage::Always),
        Some(other) => Err(format!(
            "unknown value {other:?} (expected on-request or always)"
        )),
        None if host.is_some_and(|h| ALWAYS_REPORT_STREAM_USAGE.contains(&h)) => {
            Ok(StreamUsage::Always)
        }
        None => Ok(StreamUsage::OnRequest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_wins_over_the_host() {
        let none = BTreeMap::new();
        assert_eq!(
            stream_usage(&none, Some("api.fireworks.ai")),
            Ok(StreamUsage::Always)
        );
        assert_eq!(
            stream_usage(&none, Some("api.openai.com")),
            Ok(StreamUsage::OnRequest)
        );
        assert_eq!(stream_usage(&none, None), Ok(StreamUsage::OnRequest));
        let on_request = BTreeMap::from([(
            STREAM_USAGE_ANNOTATION.to_string(),
            "on-request".to_string(),
        )]);
        assert_eq!(
            stream_usage(&on_request, Some("api.fireworks.ai")),
            Ok(StreamUsage::OnRequest)
        );
        let bad = BTreeMap::from([(STREAM_USAGE_ANNOTATION.to_string(), "yes".to_string())]);
        assert!(stream_usage(&bad, None).is_err());
    }
}
