//! Backend schemas (OpenAI, Anthropic, AzureOpenAI, Cohere) and their credentials: what
//! compiles, what is refused.

use super::tests_diagnostics::{compile, errors};
use super::*;

/// A route whose one rule holds `refs`, an OpenAI backend `o`, an Anthropic backend `a` (with
/// the policy `policy`), both on Backend `be`.
fn config(refs: &str, policy: &str) -> String {
    format!(
        r#"apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: r}}
spec:
  rules:
    - matches: [{{headers: [{{name: x-ai-eg-model, value: m}}]}}]
      backendRefs: {refs}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: o}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: be, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: a}}
spec:
  schema: {{name: Anthropic}}
  backendRef: {{name: be, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: be}}
spec:
  endpoints: [{{fqdn: {{hostname: api.example, port: 443}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: k}}
stringData: {{apiKey: sk-1}}
---
{policy}
"#
    )
}

fn policy(kind: &str, field: &str, target: &str) -> String {
    format!("apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: BackendSecurityPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {target}}}]\n  type: {kind}\n  {field}: {{secretRef: {{name: k}}}}\n")
}

#[test]
fn a_rule_may_hold_an_openai_and_an_anthropic_backend_with_their_credentials() {
    let c = compile(&config(
        "[{name: o}, {name: a}]",
        &policy("AnthropicAPIKey", "anthropicAPIKey", "a"),
    ))
    .unwrap();
    let a = c.backends.iter().find(|b| b.name == "default/a").unwrap();
    assert_eq!(a.schema, Schema::Anthropic);
    assert_eq!(a.prefix, "/v1");
    assert_eq!(a.key_source.as_ref().unwrap().header, KeyHeader::XApiKey);
    assert_eq!(a.api_key.as_ref().unwrap().expose(), "sk-1");
    let c = compile(&config("[{name: a}]", &policy("APIKey", "apiKey", "a"))).unwrap();
    assert_eq!(
        c.backends[0].key_source.as_ref().unwrap().header,
        KeyHeader::Bearer
    );
}

#[test]
fn what_cannot_work_is_refused_naming_it() {
    for (text, place, message) in [
        (
            config(
                "[{name: o}]",
                &policy("AnthropicAPIKey", "anthropicAPIKey", "o"),
            ),
            "spec.type",
            "for backends of schema Anthropic",
        ),
        (
            config("[{name: a}]", &policy("AnthropicAPIKey", "apiKey", "a")),
            "spec.anthropicAPIKey",
            "required for type AnthropicAPIKey",
        ),
        (
            config(
                "[{name: o}, {name: a, priority: 1}]",
                &policy("APIKey", "apiKey", "o"),
            ),
            "spec.rules[0].backendRefs",
            "one schema",
        ),
        (
            config("[{name: a}]", &policy("AzureAPIKey", "azureAPIKey", "a")),
            "spec.type",
            "for backends of schema AzureOpenAI",
        ),
        (
            config(
                "[{name: a}]",
                "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: BackendSecurityPolicy\nmetadata: {name: p}\nspec:\n  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: a}]\n  type: AzureCredentials\n  azureCredentials: {clientID: c, tenantID: t, clientSecretRef: {name: k}}\n",
            ),
            "spec.azureCredentials",
            "not supported yet",
        ),
        (
            azure("[{name: z}]", "{name: AzureOpenAI}"),
            "spec.schema.version",
            "api-version",
        ),
        (
            azure("[{name: z}]", "{name: AzureOpenAI, version: v, prefix: /x}"),
            "spec.schema.prefix",
            "not supported",
        ),
        (
            azure(
                "[{name: z}, {name: z2, priority: 1}]",
                "{name: AzureOpenAI, version: v}",
            ),
            "spec.rules[0].backendRefs",
            "AzureOpenAI",
        ),
    ] {
        let e = errors(&text);
        assert!(
            e.iter().any(|e| e.contains(place) && e.contains(message)),
            "{place} / {message}: {e:?}"
        );
    }
}

/// A rule of `refs` over Azure backends `z` and `z2` of schema `schema`, `z` with an
/// AzureAPIKey policy.
fn azure(refs: &str, schema: &str) -> String {
    let mut text = config(refs, &policy("AzureAPIKey", "azureAPIKey", "z"));
    for name in ["z", "z2"] {
        text.push_str(&format!(
            "---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIServiceBackend\nmetadata: {{name: {name}}}\nspec:\n  schema: {schema}\n  backendRef: {{name: be, kind: Backend, group: gateway.envoyproxy.io}}\n"
        ));
    }
    text
}

#[test]
fn azure_and_cohere_backends() {
    let c = compile(&azure(
        "[{name: z}]",
        "{name: AzureOpenAI, version: 2025-01-01-preview}",
    ))
    .unwrap();
    let z = c.backends.iter().find(|b| b.name == "default/z").unwrap();
    assert_eq!(z.schema, Schema::AzureOpenAI);
    assert_eq!(z.api_version.as_deref(), Some("2025-01-01-preview"));
    assert_eq!(z.key_source.as_ref().unwrap().header, KeyHeader::ApiKey);
    let text = config("[{name: o}]", &policy("APIKey", "apiKey", "o")).replace(
        "schema: {name: OpenAI}",
        "schema: {name: Cohere, version: v2}",
    );
    let c = compile(&text).unwrap();
    let o = c.backends.iter().find(|b| b.name == "default/o").unwrap();
    assert_eq!((o.schema, o.prefix.as_str()), (Schema::Cohere, "/v2"));
    let c = compile(&text.replace("{name: Cohere, version: v2}", "{name: Cohere}")).unwrap();
    assert_eq!(c.backends[0].prefix, "/v2");
}
