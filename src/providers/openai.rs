//! The OpenAI schema: `{prefix}/chat/completions` (and the other endpoints) under the backend's
//! prefix (`/v1`, Fireworks' `/inference/v1`), the key as `Authorization: Bearer`, the model in
//! the body's `model` field.

use super::{Target, Upstream};
use crate::config::{SecretString, ServiceBackend};
use crate::llm::model_edit;

pub(super) fn upstream(target: &Target<'_>) -> Upstream {
    let mut up = Upstream {
        path: target
            .family
            .backend_path(&target.backend.prefix, target.client_path),
        set_headers: Vec::new(),
        remove_headers: Vec::new(),
        edits: Vec::new(),
    };
    // The client's own Authorization never reaches a provider: replaced, or removed.
    match target.key {
        Some(key) => up
            .set_headers
            .push(("authorization".into(), format!("Bearer {}", key.expose()))),
        None => up.remove_headers.push("authorization".into()),
    }
    if let Some(model) = target.model_override {
        up.edits.push(model_edit(target.request, model));
    }
    up
}

/// `{prefix}/responses/{id}...` for a stored response.
pub(super) fn stored_response(
    backend: &ServiceBackend,
    client_path: &str,
    key: Option<&SecretString>,
) -> Upstream {
    let rest = client_path.strip_prefix("/v1").unwrap_or(client_path);
    let mut up = Upstream {
        path: format!("{}{rest}", backend.prefix),
        set_headers: Vec::new(),
        remove_headers: Vec::new(),
        edits: Vec::new(),
    };
    match key {
        Some(key) => up
            .set_headers
            .push(("authorization".into(), format!("Bearer {}", key.expose()))),
        None => up.remove_headers.push("authorization".into()),
    }
    up
}

#[cfg(test)]
mod tests {
    use super::super::{upstream, Target};
    use crate::config::{Schema, SecretString, ServiceBackend, StreamUsage};
    use crate::llm::{apply_edits, parse_request, Chat, Embeddings};

    fn backend(prefix: &str) -> ServiceBackend {
        ServiceBackend {
            name: "ns/b".into(),
            schema: Schema::OpenAI,
            prefix: prefix.into(),
            api_version: None,
            api_key: None,
            key_source: None,
            cluster: 0,
            stream_usage: StreamUsage::OnRequest,
        }
    }

    #[test]
    fn path_key_and_model() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let info = parse_request(&Chat, body).unwrap();
        let fireworks = backend("/inference/v1");
        let key = SecretString::new("fw_key");
        let up = upstream(&Target {
            family: &Chat,
            client_path: "/v1/chat/completions?x=1",
            request: &info,
            backend: &fireworks,
            model_override: Some("accounts/fireworks/models/x"),
            key: Some(&key),
        });
        assert_eq!(up.path, "/inference/v1/chat/completions?x=1");
        assert_eq!(
            up.set_headers,
            [("authorization".to_string(), "Bearer fw_key".to_string())]
        );
        assert_eq!(up.remove_headers, ["x-api-key", "api-key"]);
        assert_eq!(
            apply_edits(body, up.edits),
            r#"{"model":"accounts/fireworks/models/x","messages":[{"role":"user","content":"hi"}]}"#
        );

        let plain = backend("/v1");
        let up = upstream(&Target {
            family: &Embeddings,
            client_path: "/v1/embeddings",
            request: &info,
            backend: &plain,
            model_override: None,
            key: None,
        });
        assert_eq!(up.path, "/v1/embeddings");
        assert!(up.set_headers.is_empty());
        assert_eq!(up.remove_headers, ["authorization", "x-api-key", "api-key"]);
        assert!(up.edits.is_empty());
    }
}
