//! The client-facing OpenAI endpoints ai-extproc serves.

/// An OpenAI endpoint, recognised from the client's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
}

impl Endpoint {
    /// Recognises `/v1/<endpoint>` with or without a query string.
    pub fn from_path(path: &str) -> Option<Self> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match path {
            "/v1/chat/completions" => Some(Self::ChatCompletions),
            "/v1/completions" => Some(Self::Completions),
            "/v1/embeddings" => Some(Self::Embeddings),
            "/v1/models" => Some(Self::Models),
            _ => None,
        }
    }

    /// The path after the API prefix (`/v1`, `/inference/v1`, ...).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Models => "/models",
        }
    }

    /// Whether the endpoint takes `method` (HEAD wherever GET is).
    pub fn allows(self, method: &str) -> bool {
        match self {
            Self::Models => matches!(method, "GET" | "HEAD"),
            Self::ChatCompletions | Self::Completions | Self::Embeddings => method == "POST",
        }
    }

    /// The methods it takes, as an `Allow` header value.
    pub fn allow(self) -> &'static str {
        match self {
            Self::Models => "GET, HEAD",
            Self::ChatCompletions | Self::Completions | Self::Embeddings => "POST",
        }
    }

    /// Short name for logs and metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Models => "models",
        }
    }

    /// The backend path for a prefix, keeping the client's query string.
    pub fn backend_path(self, prefix: &str, client_path: &str) -> String {
        let query = client_path.split_once('?').map(|(_, q)| q);
        match query {
            Some(q) => format!("{prefix}{}?{q}", self.suffix()),
            None => format!("{prefix}{}", self.suffix()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_records_and_metrics() {
        use Endpoint::*;
        let names = [ChatCompletions, Completions, Embeddings, Models].map(Endpoint::name);
        assert_eq!(names, ["chat", "completions", "embeddings", "models"]);
    }

    #[test]
    fn paths() {
        assert_eq!(
            Endpoint::from_path("/v1/chat/completions"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(
            Endpoint::from_path("/v1/embeddings?x=1"),
            Some(Endpoint::Embeddings)
        );
        assert_eq!(Endpoint::from_path("/v1/chat/completions/"), None);
        assert_eq!(Endpoint::from_path("/chat/completions"), None);
        assert_eq!(
            Endpoint::ChatCompletions.backend_path("/inference/v1", "/v1/chat/completions?a=b&c"),
            "/inference/v1/chat/completions?a=b&c"
        );
        assert_eq!(
            Endpoint::Completions.backend_path("/v1", "/v1/completions"),
            "/v1/completions"
        );
    }
}
