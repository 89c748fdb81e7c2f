//! The Azure OpenAI schema: deployments in the path, `/openai/deployments/{deployment}/chat/
//! completions?api-version={version}` (also completions, embeddings, images) and
//! `/openai/responses?api-version=...` for the Responses API, as Envoy AI Gateway writes them.
//! The deployment is the model the backend is asked for (`modelNameOverride`, else the
//! client's), the version the AIServiceBackend's `spec.schema.version`. The key goes as
//! `api-key` (BackendSecurityPolicy `AzureAPIKey`); the client's `api-key` and
//! `Authorization` never reach Azure.

use super::{Target, Upstream};
use crate::config::{KeyHeader, SecretString, ServiceBackend};
use crate::llm::{model_edit, Api, Family};

/// The families Azure OpenAI serves.
pub(super) fn serves(family: &dyn Family) -> bool {
    family.api() == Api::OpenAI
        && matches!(
            family.name(),
            "chat" | "completions" | "embeddings" | "images" | "responses"
        )
}

/// `/openai/responses/{id}...?api-version=...` for a stored response.
pub(super) fn stored_response(
    backend: &ServiceBackend,
    client_path: &str,
    key: Option<&SecretString>,
) -> Upstream {
    let (path, query) = client_path.split_once('?').unwrap_or((client_path, ""));
    let rest = path.strip_prefix("/v1").unwrap_or(path);
    let mut up = Upstream {
        path: with_version(format!("/openai{rest}"), backend, query),
        set_headers: Vec::new(),
        remove_headers: Vec::new(),
        edits: Vec::new(),
    };
    credentials(&mut up, backend, key);
    up
}

/// `path?api-version=...` and the client's other query parameters.
fn with_version(mut path: String, backend: &ServiceBackend, client_query: &str) -> String {
    let version = backend.api_version.as_deref().unwrap_or_default();
    path.push_str("?api-version=");
    path.push_str(&encode_segment(version));
    for pair in client_query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some("api-version"))
    {
        path.push('&');
        path.push_str(pair);
    }
    path
}

/// The backend's key as its policy says; the client's credentials removed.
fn credentials(up: &mut Upstream, backend: &ServiceBackend, key: Option<&SecretString>) {
    let style = backend
        .key_source
        .as_ref()
        .map_or(KeyHeader::ApiKey, |s| s.header);
    let mut remove = vec!["api-key", "authorization"];
    if let Some(key) = key {
        let (name, value) = style.header(key.expose());
        remove.retain(|h| *h != name);
        up.set_headers.push((name.into(), value));
    }
    up.remove_headers = remove.into_iter().map(String::from).collect();
}

pub(super) fn upstream(target: &Target<'_>) -> Upstream {
    let deployment = target.model_override.unwrap_or(&target.request.model);
    let path = if target.family.name() == "responses" {
        "/openai/responses".to_string()
    } else {
        format!(
            "/openai/deployments/{}{}",
            encode_segment(deployment),
            target.family.suffix()
        )
    };
    let client_query = target.client_path.split_once('?').map_or("", |(_, q)| q);
    let mut up = Upstream {
        path: with_version(path, target.backend, client_query),
        set_headers: Vec::new(),
        remove_headers: Vec::new(),
        edits: Vec::new(),
    };
    credentials(&mut up, target.backend, target.key);
    if let Some(model) = target.model_override {
        up.edits.push(model_edit(target.request, model));
    }
    up
}

/// A path segment: unreserved characters as they are, the rest percent-encoded.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{serves as schema_serves, upstream, Target};
    use crate::config::{KeyHeader, KeySource, Schema, SecretString, ServiceBackend, StreamUsage};
    use crate::llm::{apply_edits, parse_request, Chat, Embeddings, Messages, Rerank, Responses};

    #[test]
    fn deployment_path_version_and_key() {
        let body = br#"{"model":"gpt-4.5-preview","messages":[{"role":"user","content":"hi"}]}"#;
        let info = parse_request(&Chat, body).unwrap();
        let backend = ServiceBackend {
            name: "ns/azure".into(),
            schema: Schema::AzureOpenAI,
            prefix: String::new(),
            api_version: Some("2025-01-01-preview".into()),
            api_key: None,
            key_source: Some(KeySource {
                secret: "ns/k".into(),
                env_var: "K".into(),
                header: KeyHeader::ApiKey,
            }),
            cluster: 0,
            stream_usage: StreamUsage::OnRequest,
        };
        let key = SecretString::new("az_key");
        let target = Target {
            family: &Chat,
            client_path: "/v1/chat/completions?x=1&api-version=old",
            request: &info,
            backend: &backend,
            model_override: None,
            key: Some(&key),
        };
        let up = upstream(&target);
        assert_eq!(
            up.path,
            "/openai/deployments/gpt-4.5-preview/chat/completions?api-version=2025-01-01-preview&x=1"
        );
        assert_eq!(
            up.set_headers,
            [("api-key".to_string(), "az_key".to_string())]
        );
        assert_eq!(up.remove_headers, ["authorization", "x-api-key"]);
        assert!(up.edits.is_empty());
        // The override names the deployment and the body's model.
        let up = upstream(&Target {
            family: &Embeddings,
            client_path: "/v1/embeddings",
            model_override: Some("my embed/1"),
            key: None,
            ..target
        });
        assert_eq!(
            up.path,
            "/openai/deployments/my%20embed%2F1/embeddings?api-version=2025-01-01-preview"
        );
        assert_eq!(up.remove_headers, ["api-key", "authorization", "x-api-key"]);
        assert_eq!(
            apply_edits(body, up.edits),
            r#"{"model":"my embed/1","messages":[{"role":"user","content":"hi"}]}"#
        );
        let up = upstream(&Target {
            family: &Responses,
            client_path: "/v1/responses",
            ..target
        });
        assert_eq!(up.path, "/openai/responses?api-version=2025-01-01-preview");
        let up = super::stored_response(&backend, "/v1/responses/resp_1/input_items?limit=2", None);
        assert_eq!(
            up.path,
            "/openai/responses/resp_1/input_items?api-version=2025-01-01-preview&limit=2"
        );
        assert!(schema_serves(Schema::AzureOpenAI, &Chat));
        assert!(!schema_serves(Schema::AzureOpenAI, &Messages));
        assert!(!schema_serves(Schema::AzureOpenAI, &Rerank));
    }
}
