//! The Cohere schema (Cohere's v2 API): `{prefix}/rerank` under the backend's prefix (`/v2`,
//! from `spec.schema.version: v2`), the key as `Authorization: Bearer`, the model in the body.
//! Its wire rules for path, key and model are the OpenAI schema's; what differs is the
//! families it serves (Cohere's, see `llm::family::CohereRerank`).

use super::{openai, Target, Upstream};

/// Cohere's API version path.
pub(super) const DEFAULT_PREFIX: &str = "/v2";

pub(super) fn upstream(target: &Target<'_>) -> Upstream {
    openai::upstream(target)
}
