//! API families: what the gateway knows of one kind of request (chat completions, completions,
//! embeddings...). Each family is one module implementing [`Family`]: which body fields it
//! requires, how a stream is made to report its usage, how usage is read from a JSON body and
//! from an SSE event, and what its error bodies look like. The rest of the gateway asks the
//! family and never matches on which one it is, so a new API (Responses, Anthropic Messages,
//! rerank...) is one module here and one entry in [`FAMILIES`].

mod chat;
mod cohere_rerank;
mod completions;
mod count_tokens;
mod embeddings;
mod images;
mod messages;
mod openai;
mod rerank;
mod responses;

use std::fmt;
use std::time::Instant;

use super::request::{Edit, RequestError, RequestInfo, Shape};
use super::sse::SseState;
use super::usage::ResponseInfo;

pub use chat::Chat;
pub use cohere_rerank::CohereRerank;
pub use completions::Completions;
pub use count_tokens::CountTokens;
pub use embeddings::Embeddings;
pub use images::Images;
pub use messages::Messages;
pub use rerank::Rerank;
pub use responses::Responses;

/// Most body fields a family may require beside `model` (the parser keeps their shapes in a
/// fixed array, so parsing allocates nothing for them).
pub const MAX_REQUIRED: usize = 4;

/// Whose wire format a family speaks: a backend's schema serves the families of its API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAI,
    Anthropic,
    Cohere,
}

/// One API family. Implementations are unit structs listed in [`FAMILIES`].
pub trait Family: Sync + fmt::Debug {
    /// Short name in usage records, metrics and logs (`chat`).
    fn name(&self) -> &'static str;

    /// OpenTelemetry's `gen_ai.operation.name` for it.
    fn operation(&self) -> &'static str;

    /// The path after a backend's API prefix (`/chat/completions`).
    fn suffix(&self) -> &'static str;

    /// The client's path (`/v1/chat/completions`).
    fn path(&self) -> &'static str;

    /// Its spans' name (OpenInference's, as Envoy AI Gateway names them: `ChatCompletion`).
    fn span_name(&self) -> &'static str;

    /// OpenInference's span kind of it: `LLM`, `EMBEDDING`, `RERANKER`.
    fn span_kind(&self) -> &'static str {
        "LLM"
    }

    /// Other client paths it is served on (Envoy AI Gateway's `/anthropic/v1/messages`).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whose wire format it is.
    fn api(&self) -> Api {
        Api::OpenAI
    }

    /// The body fields it requires beside `model` (at most [`MAX_REQUIRED`]).
    fn required(&self) -> &'static [&'static str];

    /// Checks the shapes of [`Family::required`]'s fields, in that order (`None`: absent).
    fn check(&self, fields: &[Option<Shape>]) -> Result<(), RequestError>;

    /// The edit that makes a stream of this family report its usage, when the request does not
    /// ask for it already; `None` when there is nothing to ask (or it cannot stream).
    fn usage_edit(&self, body: &[u8], request: &RequestInfo) -> Option<Edit>;

    /// Usage and model of a whole JSON response.
    fn response_info(&self, body: &[u8]) -> ResponseInfo;

    /// Reads one SSE event's data (not `[DONE]`) that arrived at `now` into `state`.
    fn read_event(&self, data: &[u8], state: &mut SseState, now: Instant);

    /// An error body in this API's shape.
    fn error_body(
        &self,
        message: String,
        kind: &'static str,
        param: Option<&'static str>,
        code: Option<&'static str>,
    ) -> Vec<u8>;

    /// The body field naming an earlier response whose backend must serve this request too
    /// (the Responses API's `previous_response_id`).
    fn pin_field(&self) -> Option<&'static str> {
        None
    }

    /// The backend path under `prefix`, keeping the client's query string.
    fn backend_path(&self, prefix: &str, client_path: &str) -> String {
        match client_path.split_once('?') {
            Some((_, q)) => format!("{prefix}{}?{q}", self.suffix()),
            None => format!("{prefix}{}", self.suffix()),
        }
    }
}

/// Every family the gateway serves, in the order they are listed to clients.
pub static FAMILIES: [&dyn Family; 9] = [
    &Chat,
    &Completions,
    &Embeddings,
    &Responses,
    &Messages,
    &CountTokens,
    &Rerank,
    &CohereRerank,
    &Images,
];

/// The family of a client path (`/v1/...`, query string ignored).
pub fn from_path(path: &str) -> Option<&'static dyn Family> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.path() == path || f.aliases().contains(&path))
}

/// The family of a name in records and metrics.
pub fn named(name: &str) -> Option<&'static dyn Family> {
    FAMILIES.iter().copied().find(|f| f.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_found_by_its_path_and_name() {
        for f in FAMILIES {
            assert!(f.required().len() <= MAX_REQUIRED, "{}", f.name());
            let found = from_path(f.path()).unwrap();
            assert_eq!(found.name(), f.name());
            let found = from_path(&format!("{}?a=b", f.path())).unwrap();
            assert_eq!(found.name(), f.name());
            assert_eq!(named(f.name()).unwrap().suffix(), f.suffix());
        }
        let names = FAMILIES.map(|f| f.name());
        assert_eq!(
            names,
            [
                "chat",
                "completions",
                "embeddings",
                "responses",
                "messages",
                "count_tokens",
                "rerank",
                "cohere_rerank",
                "images"
            ]
        );
        let ops = FAMILIES.map(|f| f.operation());
        assert_eq!(
            ops,
            [
                "chat",
                "text_completion",
                "embeddings",
                "responses",
                "messages",
                "count_tokens",
                "rerank",
                "rerank",
                "image_generation"
            ]
        );
        assert_eq!(
            from_path("/anthropic/v1/messages?beta=true")
                .unwrap()
                .name(),
            "messages"
        );
        assert!(from_path("/anthropic/v1/chat/completions").is_none());
    }

    #[test]
    fn paths() {
        assert_eq!(from_path("/v1/chat/completions").unwrap().name(), "chat");
        assert_eq!(
            from_path("/v1/embeddings?x=1").unwrap().name(),
            "embeddings"
        );
        assert!(from_path("/v1/chat/completions/").is_none());
        assert!(from_path("/chat/completions").is_none());
        assert!(from_path("/v1").is_none());
        assert!(from_path("/v1/models").is_none());
        assert!(named("models").is_none());
        assert_eq!(
            Chat.backend_path("/inference/v1", "/v1/chat/completions?a=b&c"),
            "/inference/v1/chat/completions?a=b&c"
        );
        assert_eq!(
            Completions.backend_path("/v1", "/v1/completions"),
            "/v1/completions"
        );
    }
}
