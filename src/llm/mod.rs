//! The client-facing API: endpoints and API families (request bodies, usage, error bodies per
//! family), SSE and body decoding. Pure functions over bytes, so they can be fuzzed and
//! benchmarked alone.

mod decode;
mod endpoint;
mod error;
pub mod family;
mod models;
mod request;
mod sse;
mod usage;

pub use decode::{decode_all, DecodeError, Decoder, Limits, MAX_DECODED, MAX_RATIO, RATIO_FLOOR};
pub use endpoint::{supported, Endpoint};
pub use error::{ErrorBody, OpenAIError};
pub use family::{
    Api, Chat, CohereRerank, Completions, CountTokens, Embeddings, Family, Images, Messages,
    Rerank, Responses, FAMILIES,
};
pub use models::{model_body, models_body};
pub use request::{
    apply_edits, model_edit, parse_request, rewrite_model, Edit, RequestError, RequestInfo, Shape,
    MAX_MODEL_LEN,
};
pub use sse::{Capture, SseReader, SseState, UsageChunkFilter};
pub use usage::{ResponseInfo, Usage};
