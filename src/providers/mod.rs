//! Provider schemas: how a request of one API family reaches a backend that speaks a given
//! schema (AIServiceBackend `spec.schema`): its path, its credential headers and the edits to
//! its body. One module per schema; the gateway asks [`upstream`] and applies what it returns,
//! so a new schema (Anthropic, Azure OpenAI...) is one module and one match arm here.
//!
//! What is asked of a schema is per backend, not per request: with failover, each attempt
//! at another backend gets that backend's answer.

mod anthropic;
mod azure;
mod cohere;
mod openai;

use crate::config::{Schema, SecretString, ServiceBackend};
use crate::llm::{Api, Edit, Family, RequestInfo};

/// A request as the gateway routed it, to be sent to one backend.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub family: &'static dyn Family,
    /// The client's path, query included.
    pub client_path: &'a str,
    /// The client's body as parsed.
    pub request: &'a RequestInfo,
    pub backend: &'a ServiceBackend,
    /// The model the backend is asked for, when it differs from the client's
    /// (`modelNameOverride`).
    pub model_override: Option<&'a str>,
    /// The backend's key, when the processor puts it on the request (else Envoy does).
    pub key: Option<&'a SecretString>,
}

/// What the backend gets besides the client's own headers and body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The `:path` it is sent to.
    pub path: String,
    /// Headers set on the request (credentials).
    pub set_headers: Vec<(String, String)>,
    /// Client headers removed (a client's own credentials).
    pub remove_headers: Vec<String>,
    /// Edits to the body (the model name).
    pub edits: Vec<Edit>,
}

/// The request as `target.backend`'s schema expects it.
pub fn upstream(target: &Target<'_>) -> Upstream {
    match target.backend.schema {
        Schema::OpenAI => openai::upstream(target),
        Schema::Anthropic => anthropic::upstream(target),
        Schema::AzureOpenAI => azure::upstream(target),
        Schema::Cohere => cohere::upstream(target),
    }
}

/// A request about a stored response (`/v1/responses/{id}[/...]`, no body) as `backend`
/// expects it, with `key` when the processor puts it on; `None` when its schema has no
/// stored responses.
pub fn stored_response(
    backend: &ServiceBackend,
    client_path: &str,
    key: Option<&SecretString>,
) -> Option<Upstream> {
    match backend.schema {
        Schema::OpenAI => Some(openai::stored_response(backend, client_path, key)),
        Schema::AzureOpenAI => Some(azure::stored_response(backend, client_path, key)),
        Schema::Anthropic | Schema::Cohere => None,
    }
}

/// Whether a backend of `schema` serves `family` (a rule may hold backends of several
/// schemas for one model; each request goes to those that serve its family).
pub fn serves(schema: Schema, family: &dyn Family) -> bool {
    match schema {
        Schema::OpenAI => family.api() == Api::OpenAI,
        Schema::Anthropic => family.api() == Api::Anthropic,
        Schema::AzureOpenAI => azure::serves(family),
        Schema::Cohere => family.api() == Api::Cohere,
    }
}

/// The path prefix of a backend whose AIServiceBackend names neither prefix nor version.
pub fn default_prefix(schema: Schema) -> &'static str {
    match schema {
        Schema::OpenAI | Schema::Anthropic => "/v1",
        Schema::AzureOpenAI => "",
        Schema::Cohere => cohere::DEFAULT_PREFIX,
    }
}
