//! The client-facing endpoints ai-extproc serves: `/v1/models` and `/v1/models/{id}`, answered
//! by the gateway itself, and one per API family (see [`super::family`]).

use super::family::{self, Family, FAMILIES};

/// An endpoint, recognised from the client's path.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    /// `GET /v1/models`.
    Models,
    /// `GET /v1/models/{id}` (the id may hold `/`, raw or percent-encoded).
    Model,
    /// A stored response of the Responses API: `GET`/`DELETE /v1/responses/{id}`,
    /// `GET .../input_items`, `POST .../cancel`; sent to the backend that holds it.
    StoredResponse,
    /// `POST /v1/<family>`.
    Api(&'static dyn Family),
}

impl Endpoint {
    /// The span name of the endpoint (an API family's is the family's own).
    pub fn span_name(&self) -> &'static str {
        match self {
            Self::Models => "ListModels",
            Self::Model => "GetModel",
            Self::StoredResponse => "StoredResponse",
            Self::Api(family) => family.span_name(),
        }
    }

    /// Recognises `/v1/<endpoint>` with or without a query string.
    pub fn from_path(path: &str) -> Option<Self> {
        let bare = path.split_once('?').map_or(path, |(p, _)| p);
        if bare == "/v1/models" {
            return Some(Self::Models);
        }
        if bare
            .strip_prefix("/v1/models/")
            .is_some_and(|id| !id.is_empty())
        {
            return Some(Self::Model);
        }
        if let Some(rest) = bare.strip_prefix("/v1/responses/") {
            let mut parts = rest.split('/');
            let id = parts.next().unwrap_or("");
            let sub = parts.next();
            let known = matches!(sub, None | Some("input_items" | "cancel"));
            return (!id.is_empty() && known && parts.next().is_none())
                .then_some(Self::StoredResponse);
        }
        family::from_path(path).map(Self::Api)
    }

    /// Whether the endpoint takes `method` (HEAD wherever GET is).
    pub fn allows(self, method: &str) -> bool {
        match self {
            Self::Models | Self::Model => matches!(method, "GET" | "HEAD"),
            Self::StoredResponse => matches!(method, "GET" | "DELETE" | "POST"),
            Self::Api(_) => method == "POST",
        }
    }

    /// The methods it takes, as an `Allow` header value.
    pub fn allow(self) -> &'static str {
        match self {
            Self::Models | Self::Model => "GET, HEAD",
            Self::StoredResponse => "GET, POST, DELETE",
            Self::Api(_) => "POST",
        }
    }
}

/// Every endpoint with its method, for an error naming what is served
/// (`POST /v1/chat/completions, ..., GET /v1/models`).
pub fn supported() -> String {
    let mut list: Vec<String> = Vec::new();
    for f in FAMILIES {
        list.push(format!("POST {}", f.path()));
        list.extend(f.aliases().iter().map(|a| format!("POST {a}")));
    }
    list.push("GET /v1/models".into());
    list.push("GET /v1/models/{id}".into());
    list.push("GET/DELETE /v1/responses/{id}".into());
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods() {
        assert!(matches!(
            Endpoint::from_path("/v1/models?x"),
            Some(Endpoint::Models)
        ));
        assert!(matches!(
            Endpoint::from_path("/v1/chat/completions"),
            Some(Endpoint::Api(f)) if f.name() == "chat"
        ));
        assert!(matches!(
            Endpoint::from_path("/v1/models/accounts/fireworks/models/x?y"),
            Some(Endpoint::Model)
        ));
        assert!(Endpoint::from_path("/v1/models/").is_none());
        for stored in [
            "/v1/responses/resp_1",
            "/v1/responses/resp_1/input_items?limit=1",
            "/v1/responses/resp_1/cancel",
        ] {
            assert!(matches!(
                Endpoint::from_path(stored),
                Some(Endpoint::StoredResponse)
            ));
        }
        assert!(Endpoint::from_path("/v1/responses/").is_none());
        assert!(Endpoint::from_path("/v1/responses/resp_1/other").is_none());
        assert!(matches!(
            Endpoint::from_path("/v1/responses"),
            Some(Endpoint::Api(f)) if f.name() == "responses"
        ));
        assert!(Endpoint::Models.allows("HEAD") && !Endpoint::Models.allows("POST"));
        let chat = Endpoint::from_path("/v1/chat/completions").unwrap();
        assert!(chat.allows("POST") && !chat.allows("GET"));
        assert_eq!(chat.allow(), "POST");
        assert_eq!(Endpoint::Models.allow(), "GET, HEAD");
        assert_eq!(
            supported(),
            "POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings, POST /v1/responses, POST /v1/messages, POST /anthropic/v1/messages, POST /v1/messages/count_tokens, POST /anthropic/v1/messages/count_tokens, POST /v1/rerank, POST /cohere/v2/rerank, POST /v1/images/generations, GET /v1/models, GET /v1/models/{id}, GET/DELETE /v1/responses/{id}"
        );
    }
}
