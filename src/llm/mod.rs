//! OpenAI-compatible API views: endpoints, request bodies, usage and error bodies. Pure
//! functions over bytes, so they can be fuzzed and benchmarked alone.

mod decode;
mod endpoint;
mod error;
mod models;
mod request;
mod sse;
mod usage;

pub use decode::{decode_all, DecodeError, Decoder, Limits, MAX_DECODED, MAX_RATIO, RATIO_FLOOR};
pub use endpoint::Endpoint;
pub use error::{ErrorBody, OpenAIError};
pub use models::models_body;
pub use request::{
    apply_edits, include_usage_edit, model_edit, parse_request, rewrite_model, Edit, RequestError,
    RequestInfo, MAX_MODEL_LEN,
};
pub use sse::{SseReader, SseState, UsageChunkFilter};
pub use usage::{response_info, usage_from_json, ResponseInfo, Usage};
