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
    /// `POST /v1/<family>`.
    Api(&'static dyn Family),
}

impl Endpoint {
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
        family::from_path(path).map(Self::Api)
    }

    /// Whether the endpoint takes `method` (HEAD wherever GET is).
    pub fn allows(self, method: &str) -> bool {
        match self {
            Self::Models | Self::Model => matches!(method, "GET" | "HEAD"),
            Self::Api(_) => method == "POST",
        }
    }

    /// The methods it takes, as an `Allow` header value.
    pub fn allow(self) -> &'static str {
        match self {
            Self::Models | Self::Model => "GET, HEAD",
            Self::Api(_) => "POST",
        }
    }
}

/// Every endpoint with its method, for an error naming what is served
/// (`POST /v1/chat/completions, ..., GET /v1/models`).
pub fn supported() -> String {
    let mut list: Vec<String> = Vec::new();
    for f in FAMILIES {
        list.push(format!("POST {}", f.client_path()));
        list.extend(f.aliases().iter().map(|a| format!("POST {a}")));
    }
    list.push("GET /v1/models".into());
    list.push("GET /v1/models/{id}".into());
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
        assert!(Endpoint::Models.allows("HEAD") && !Endpoint::Models.allows("POST"));
        let chat = Endpoint::from_path("/v1/chat/completions").unwrap();
        assert!(chat.allows("POST") && !chat.allows("GET"));
        assert_eq!(chat.allow(), "POST");
        assert_eq!(Endpoint::Models.allow(), "GET, HEAD");
        assert_eq!(
            supported(),
            "POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings, POST /v1/responses, POST /v1/messages, POST /anthropic/v1/messages, GET /v1/models, GET /v1/models/{id}"
        );
    }
}
