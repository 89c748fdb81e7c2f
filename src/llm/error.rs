//! OpenAI-style error bodies, always built by serde (never by string formatting).

use serde::Serialize;

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub error: OpenAIError,
}

/// OpenAI's error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenAIError {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ErrorBody {
    pub fn new(
        message: impl Into<String>,
        kind: &'static str,
        param: Option<&'static str>,
        code: Option<&'static str>,
    ) -> Self {
        Self {
            error: OpenAIError {
                message: message.into(),
                kind,
                param,
                code,
            },
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and options cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_the_client_sent() {
        let body = ErrorBody::new(
            "model \"a\\b\n\" not found",
            "invalid_request_error",
            Some("model"),
            None,
        );
        let v: serde_json::Value = serde_json::from_slice(&body.to_json()).unwrap();
        assert_eq!(v["error"]["message"], "model \"a\\b\n\" not found");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["code"].is_null());
    }
}
