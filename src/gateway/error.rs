//! The two kinds of failure: the client's (an OpenAI-style error response) and the processor's
//! (the ext_proc stream fails; Envoy answers 500). One exhaustive mapping decides the response.

use crate::contract::{MAX_REQUEST_HEADERS, MAX_REQUEST_HEADER_BYTES};
use crate::llm::{supported, ErrorBody, Family, RequestError};

use super::reply::Immediate;

/// A request the gateway refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("Unknown request URL: {method} {path}. Supported: {}.", supported())]
    UnknownPath { method: String, path: String },
    #[error("The request headers are too many or too large ({count} headers, {bytes} bytes; at most {MAX_REQUEST_HEADERS} headers and {MAX_REQUEST_HEADER_BYTES} bytes).")]
    HeadersTooLarge { count: usize, bytes: usize },
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
    #[error("The request body inflates to more than this gateway accepts ({0} bytes).")]
    DecodedTooLarge(usize),
    #[error("The request body inflates more than {0} times; send it less compressed.")]
    CompressionRatio(usize),
    #[error("Rate limit reached for {budget}: {limit} {unit} per window, {remaining} left; try again in {reset}.", limit = standing.limit, unit = if standing.tokens { "tokens" } else { "requests" }, remaining = standing.remaining, reset = crate::budget::reset_header(standing.reset))]
    RateLimited {
        budget: String,
        standing: crate::budget::Standing,
    },
    #[error("The gateway could not check this request's rate limits; try again later.")]
    BudgetsUnavailable,
    #[error("Response '{0}' not found: this gateway does not know which backend holds it (a response is found at the backend that created it; this replica remembers that in memory, for responses it served).")]
    ResponseNotFound(String),
    #[error("The model `{model}` is not served on {path}: its backends speak {schemas}, which do not serve this API.")]
    NotServed {
        model: String,
        path: String,
        schemas: String,
    },
}

/// A processor failure: the protocol with Envoy went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("unexpected {got} while waiting for {expected}")]
    UnexpectedMessage {
        got: &'static str,
        expected: &'static str,
    },
}

impl ClientError {
    /// The response the client gets, in `family`'s error shape once the endpoint is known
    /// (OpenAI's before). Exhaustive on purpose: a new variant must choose.
    pub fn to_response(&self, family: Option<&dyn Family>) -> Immediate {
        let message = self.to_string();
        let (status, kind, param, code) = match self {
            ClientError::Request(e) => (400, "invalid_request_error", e.param(), None),
            ClientError::UnknownPath { .. } => {
                (404, "invalid_request_error", None, Some("unknown_url"))
            }
            ClientError::HeadersTooLarge { .. } => (
                431,
                "invalid_request_error",
                None,
                Some("request_header_fields_too_large"),
            ),
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
            ClientError::DecodedTooLarge(_) | ClientError::CompressionRatio(_) => (
                413,
                "invalid_request_error",
                None,
                Some("request_too_large"),
            ),
            ClientError::RateLimited { .. } => (
                429,
                "rate_limit_exceeded",
                None,
                Some("rate_limit_exceeded"),
            ),
            ClientError::ResponseNotFound(_) => (
                404,
                "invalid_request_error",
                None,
                Some("response_not_found"),
            ),
            ClientError::NotServed { .. } => (
                400,
                "invalid_request_error",
                Some("model"),
                Some("unsupported_api"),
            ),
            ClientError::BudgetsUnavailable => (
                503,
                "service_unavailable",
                None,
                Some("rate_limit_unavailable"),
            ),
        };
        let body = match family {
            Some(f) => f.error_body(message, kind, param, code),
            None => ErrorBody::new(message, kind, param, code).to_json(),
        };
        let mut response = Immediate::json(status, body);
        if let ClientError::MethodNotAllowed { allowed, .. } = self {
            response.headers.push(("allow".into(), (*allowed).into()));
        }
        if let ClientError::RateLimited { standing, .. } = self {
            response
                .headers
                .extend(super::budget::headers(standing, true));
        }
        response
    }
}
