//! OpenAI-compatible API views: endpoints, request bodies, usage and error bodies. Pure
//! functions over bytes, so they can be fuzzed and benchmarked alone.

mod endpoint;
mod error;
mod models;
mod request;
mod usage;

pub use endpoint::Endpoint;
pub use error::{ErrorBody, OpenAIError};
pub use models::models_body;
pub use request::{parse_request, rewrite_model, RequestError, RequestInfo, MAX_MODEL_LEN};
pub use usage::{usage_from_json, Usage};
