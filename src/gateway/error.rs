//! The two kinds of failure: the client's (an OpenAI-style error response) and the processor's
//! (the ext_proc stream fails; Envoy answers 500). One exhaustive mapping decides the response.

use crate::llm::{ErrorBody, RequestError};

use super::reply::Immediate;

/// A request the gateway refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("Unknown request URL: {method} {path}. Supported: POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings, GET /v1/models.")]
    UnknownPath { method: String, path: String },
    #[error("Method {method} is not allowed for {path}; use {allowed}.")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("The request body is required.")]
    MissingBody,
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("Content-Encoding {0:?} is not supported for request bodies; send identity, gzip, deflate or br.")]
    UnsupportedEncoding(String),
    #[error("The request body could not be decoded: {0}.")]
    BadEncoding(String),
}

/// A processor failure: the protocol with Envoy went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("unexpected {got} while waiting for {expected}")]
    UnexpectedMessage {
        got: &'static str,
        expected: &'static str,
    },
    #[error("request without :path or :method")]
    MissingPseudoHeader,
}

impl ClientError {
    /// The response the client gets. Exhaustive on purpose: a new variant must choose.
    pub fn to_response(&self) -> Immediate {
        let message = self.to_string();
        let (status, kind, param, code) = match self {
            ClientError::Request(e) => (400, "invalid_request_error", e.param(), None),
            ClientError::UnknownPath { .. } => {
                (404, "invalid_request_error", None, Some("unknown_url"))
            }
            ClientError::MethodNotAllowed { .. } => (
                405,
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            ),
            ClientError::MissingBody => (400, "invalid_request_error", None, Some("missing_body")),
            ClientError::ModelNotFound(_) => (
                404,
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            ClientError::UnsupportedEncoding(_) => (
                415,
                "invalid_request_error",
                None,
                Some("unsupported_encoding"),
            ),
            ClientError::BadEncoding(_) => {
                (400, "invalid_request_error", None, Some("bad_encoding"))
            }
        };
        let mut response =
            Immediate::json(status, ErrorBody::new(message, kind, param, code).to_json());
        if let ClientError::MethodNotAllowed { allowed, .. } = self {
            response.headers.push(("allow".into(), (*allowed).into()));
        }
        response
    }
}
