//! The Anthropic schema: `{prefix}/messages` under the backend's prefix (`/v1`, Fireworks'
//! Anthropic-compatible `/inference/v1`), the model in the body's `model` field. The backend's
//! key goes as `x-api-key` (a BackendSecurityPolicy `AnthropicAPIKey`: Anthropic's own API) or
//! as `Authorization: Bearer` (`APIKey`: Anthropic-compatible endpoints such as Fireworks').
//! A client's own `x-api-key` (what the Anthropic SDKs send) and `Authorization` never reach the
//! provider. `anthropic-version` is the client's (the Anthropic SDKs send it).

use super::{Target, Upstream};
use crate::config::KeyHeader;
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
    let style = target
        .backend
        .key_source
        .as_ref()
        .map_or(KeyHeader::Bearer, |s| s.header);
    // The client's credential headers go; the backend's key (when the processor puts it on)
    // takes the one its policy says.
    let mut remove = vec!["x-api-key", "authorization"];
    if let Some(key) = target.key {
        let (name, value) = style.header(key.expose());
        remove.retain(|h| *h != name);
        up.set_headers.push((name.into(), value));
    }
    up.remove_headers = remove.into_iter().map(String::from).collect();
    if let Some(model) = target.model_override {
        up.edits.push(model_edit(target.request, model));
    }
    up
}

#[cfg(test)]
mod tests {
    use super::super::{upstream, Target};
    use crate::config::{Schema, SecretString, ServiceBackend, StreamUsage};
    use crate::llm::{apply_edits, parse_request, Messages};

    #[test]
    fn path_key_and_model() {
        let body = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
        let info = parse_request(&Messages, body).unwrap();
        let backend = ServiceBackend {
            name: "ns/b".into(),
            schema: Schema::Anthropic,
            prefix: "/inference/v1".into(),
            api_version: None,
            api_key: None,
            key_source: None,
            cluster: 0,
            stream_usage: StreamUsage::OnRequest,
        };
        let key = SecretString::new("fw_key");
        let mut target = Target {
            family: &Messages,
            client_path: "/anthropic/v1/messages?beta=true",
            request: &info,
            backend: &backend,
            model_override: Some("accounts/fireworks/models/x"),
            key: Some(&key),
        };
        let up = upstream(&target);
        assert_eq!(up.path, "/inference/v1/messages?beta=true");
        assert_eq!(
            up.set_headers,
            [("authorization".to_string(), "Bearer fw_key".to_string())]
        );
        assert_eq!(up.remove_headers, ["x-api-key", "api-key"]);
        // Anthropic's own API: the key as x-api-key.
        let mut anthropic = backend.clone();
        anthropic.key_source = Some(crate::config::KeySource {
            secret: "ns/k".into(),
            env_var: "K".into(),
            header: crate::config::KeyHeader::XApiKey,
        });
        let up = upstream(&Target {
            backend: &anthropic,
            ..target
        });
        assert_eq!(
            up.set_headers,
            [("x-api-key".to_string(), "fw_key".to_string())]
        );
        assert_eq!(up.remove_headers, ["authorization", "api-key"]);
        assert_eq!(
            apply_edits(body, up.edits),
            r#"{"model":"accounts/fireworks/models/x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#
        );
        // Envoy puts the key on: every client credential is removed.
        target.key = None;
        assert_eq!(
            upstream(&target).remove_headers,
            ["x-api-key", "authorization", "api-key"]
        );
    }
}
