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

/// The headers a client may carry its own credentials in (OpenAI's, Anthropic's, Azure's SDKs):
/// none reaches a provider, whatever its schema; the backend's key is set by the schema (or by
/// Envoy).
pub const CLIENT_CREDENTIALS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

/// The request as `target.backend`'s schema expects it.
pub fn upstream(target: &Target<'_>) -> Upstream {
    let mut up = match target.backend.schema {
        Schema::OpenAI => openai::upstream(target),
        Schema::Anthropic => anthropic::upstream(target),
        Schema::AzureOpenAI => azure::upstream(target),
        Schema::Cohere => cohere::upstream(target),
    };
    remove_client_credentials(&mut up);
    up
}

/// Every client credential header the upstream does not set is removed.
fn remove_client_credentials(up: &mut Upstream) {
    for name in CLIENT_CREDENTIALS {
        let set = up.set_headers.iter().any(|(n, _)| n == name);
        if !set && !up.remove_headers.iter().any(|n| n == name) {
            up.remove_headers.push(name.to_string());
        }
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
    let mut up = match backend.schema {
        Schema::OpenAI => openai::stored_response(backend, client_path, key),
        Schema::AzureOpenAI => azure::stored_response(backend, client_path, key),
        Schema::Anthropic | Schema::Cohere => return None,
    };
    remove_client_credentials(&mut up);
    Some(up)
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
