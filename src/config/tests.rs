use std::path::PathBuf;

use super::*;

fn examples() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    vec![root.join("basic.yaml"), root.join("fireworks.yaml")]
}

fn options(env: &[(&str, &str)]) -> CompileOptions {
    CompileOptions {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        secret_env: vec![(
            "envoy-ai-gateway-fireworks-apikey".into(),
            "FIREWORKS_API_KEY".into(),
        )],
        now: 1_700_000_000,
    }
}

#[test]
fn the_guides_files_compile() {
    let config = load(&examples(), &options(&[])).expect("examples compile");
    let ids: Vec<&str> = config.models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "some-cool-self-hosted-model",
            "qwen-embed",
            "qwen-thinking",
            "qwen-instruct",
            "gpt-5"
        ]
    );
    assert!(config
        .models
        .iter()
        .all(|m| m.owned_by == "Envoy AI Gateway" && m.created == 1_700_000_000));
    assert_eq!(config.routes[1].name, "default/envoy-ai-gateway-fireworks");
    let kinds: Vec<CostKind> = config.routes[1]
        .costs
        .iter()
        .map(|c| c.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            CostKind::InputToken,
            CostKind::OutputToken,
            CostKind::TotalToken
        ]
    );
    assert_eq!(config.rules.len(), 5);
    let fw = &config.backends[config.rules[1].backends[0].backend];
    assert_eq!(fw.prefix, "/inference/v1");
    assert_eq!(
        fw.api_key.as_ref().map(|k| k.expose()),
        Some("fw_YOUR_FIREWORKS_API_KEY_HERE")
    );
    assert_eq!(
        config.rules[1].backends[0].model_name_override.as_deref(),
        Some("accounts/fireworks/models/qwen3-embedding-8b")
    );
    assert_eq!(config.rules[4].backends[0].model_name_override, None);
    let basic = &config.backends[config.rules[0].backends[0].backend];
    assert_eq!(basic.prefix, "/v1");
    assert!(basic.api_key.is_none());
    let cluster = &config.clusters[fw.cluster];
    assert_eq!(cluster.name, "default/envoy-ai-gateway-fireworks");
    assert_eq!(
        cluster.endpoint,
        Endpoint::Fqdn {
            hostname: "api.fireworks.ai".into(),
            port: 443
        }
    );
    let tls = cluster.tls.as_ref().expect("tls");
    assert_eq!(tls.ca, CaSource::System);
    assert_eq!(tls.subject_alt_names, ["api.fireworks.ai"]);
    assert_eq!(cluster.host(), Some("api.fireworks.ai"));
    assert!(config.clusters[basic.cluster].tls.is_none());
}

#[test]
fn secret_overrides_from_the_environment() {
    let with_explicit = load(
        &examples(),
        &options(&[("FIREWORKS_API_KEY", "fw_from_env")]),
    )
    .unwrap();
    let key = |c: &Config| c.backends.iter().find_map(|b| b.api_key.clone()).unwrap();
    assert_eq!(key(&with_explicit).expose(), "fw_from_env");

    let var = secret_env_var("envoy-ai-gateway-fireworks-apikey");
    assert_eq!(var, "AI_EXTPROC_SECRET_ENVOY_AI_GATEWAY_FIREWORKS_APIKEY");
    let generic = load(&examples(), &options(&[(var.as_str(), "fw_generic")])).unwrap();
    assert_eq!(key(&generic).expose(), "fw_generic");

    // The explicit mapping wins; an empty variable does not count.
    let both = load(
        &examples(),
        &options(&[
            ("FIREWORKS_API_KEY", "fw_explicit"),
            (var.as_str(), "fw_generic"),
        ]),
    )
    .unwrap();
    assert_eq!(key(&both).expose(), "fw_explicit");
    let empty = load(&examples(), &options(&[("FIREWORKS_API_KEY", "")])).unwrap();
    assert_eq!(key(&empty).expose(), "fw_YOUR_FIREWORKS_API_KEY_HERE");
}

#[test]
fn debug_output_never_shows_the_key() {
    let config = load(
        &examples(),
        &options(&[("FIREWORKS_API_KEY", "fw_topsecret")]),
    )
    .unwrap();
    assert!(!format!("{config:?}").contains("fw_topsecret"));
}

const BROKEN: &str = r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  llmRequestCosts:
    - {metadataKey: a, type: Tokens}
  rules:
    - matches:
        - headers:
            - {type: Prefix, name: x-ai-eg-model, value: m}
            - {type: RegularExpression, name: x-ai-eg-model, value: "(unclosed"}
      backendRefs:
        - name: missing
    - matches:
        - headers: [{name: x-ai-eg-model, value: ok}]
      backendRefs: [{name: b}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: b}
spec:
  schema: {name: OpenAPI}
  backendRef: {name: nobackend, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: p}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: b}]
  type: APIKey
  apiKey: {secretRef: {name: nosecret}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: extra}
spec:
  endpoints: [{fqdn: {hostname: h, port: 1}}]
  surprise: true
---
apiVersion: v1
kind: Service
metadata: {name: ignored}
spec: {anything: goes}
"#;

#[test]
fn every_error_is_reported_with_its_place() {
    let errors = load_str("broken.yaml", BROKEN, &options(&[])).unwrap_err();
    let text = errors.to_string();
    // The strict spec error stops at parse time for that document; the others are semantic.
    assert_eq!(errors.0.len(), 1, "{text}");
    assert!(text.contains("broken.yaml (document 4, Backend default/extra): spec.surprise: unknown field `surprise`"), "{text}");

    let fixed = BROKEN.replace("  surprise: true\n", "");
    let errors = load_str("broken.yaml", &fixed, &options(&[])).unwrap_err();
    let lines: Vec<String> = errors
        .0
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect();
    let expected = [
        "spec.llmRequestCosts[0].type: unknown cost type \"Tokens\"",
        "spec.rules[0].matches[0].headers[0].type: unknown match type \"Prefix\"",
        "spec.rules[0].matches[0].headers[1].value: invalid regular expression",
        "spec.rules[0].backendRefs[0].name: no AIServiceBackend default/missing",
        "spec.schema.name: unknown schema \"OpenAPI\"",
        "spec.backendRef.name: no Backend default/nobackend",
        "spec.apiKey.secretRef.name: no Secret default/nosecret",
    ];
    for want in expected {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in {lines:#?}"
        );
    }
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    assert!(errors
        .0
        .iter()
        .all(|e| e.location.file.as_path() == std::path::Path::new("broken.yaml")));
}

#[test]
fn secrets_in_base64_and_ca_from_a_config_map() {
    let yaml = r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r, namespace: team, creationTimestamp: "2024-05-21T10:00:00Z"}
spec:
  rules:
    - matches: [{headers: [{type: RegularExpression, name: X-AI-EG-Model, value: "llama-.*"}]}]
      backendRefs: [{name: b, weight: 3}]
      timeouts: {request: 90s}
      modelsOwnedBy: me
    - matches: [{headers: [{name: x-ai-eg-model, value: named}]}]
      backendRefs: [{name: b}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: b, namespace: team}
spec:
  schema: {name: OpenAI, prefix: /openai/v1/}
  backendRef: {name: be, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: p, namespace: team}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: b}]
  type: APIKey
  apiKey: {secretRef: {name: s}}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: team}
data: {apiKey: c2stYmFzZTY0}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: be, namespace: team}
spec:
  endpoints: [{ip: {address: 10.0.0.7, port: 8443}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: t, namespace: team}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: be}]
  validation:
    caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}]
    hostname: llm.internal
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ca, namespace: team}
data: {ca.crt: "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"}
"#;
    let config = load_str("ok.yaml", yaml, &options(&[])).unwrap();
    assert_eq!(
        config.backends[0].api_key.as_ref().unwrap().expose(),
        "sk-base64"
    );
    assert_eq!(config.backends[0].prefix, "/openai/v1");
    assert_eq!(config.rules[0].backends[0].weight, 3);
    assert_eq!(
        config.rules[0].request_timeout,
        std::time::Duration::from_secs(90)
    );
    assert!(config.rules[0].matches[0].headers[0].matches("llama-3"));
    assert!(!config.rules[0].matches[0].headers[0].matches("xllama-3"));
    assert_eq!(
        config.rules[0].matches[0].headers[0].name(),
        "x-ai-eg-model"
    );
    // Regex matches name no model; the Exact one takes the route's creation time.
    assert_eq!(
        config.models,
        [ModelInfo {
            id: "named".into(),
            owned_by: "Envoy AI Gateway".into(),
            created: 1_716_285_600
        }]
    );
    let cluster = &config.clusters[0];
    assert_eq!(cluster.name, "team/be");
    let tls = cluster.tls.as_ref().unwrap();
    assert!(matches!(&tls.ca, CaSource::Pem(p) if p.contains("abc")));
    assert_eq!(cluster.host(), Some("llm.internal"));
}

#[test]
fn a_directory_loads_its_yaml_files_in_order() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let config = load(&[dir], &options(&[])).unwrap();
    // basic.yaml, fireworks.yaml, fireworks-apis.yaml.
    assert_eq!(config.models.len(), 7);
}
