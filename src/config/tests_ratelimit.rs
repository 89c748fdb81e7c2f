//! BackendTrafficPolicy `rateLimit` rules as budgets: what compiles, and every field ai-extproc
//! cannot honour refused with its place.

use std::time::Duration;

use super::tests_diagnostics::{compile, errors};
use super::*;

/// Route `r` (costs `total`), then a policy targeting it with `rules`.
fn config(rules: &str) -> String {
    format!(
        r#"apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: r}}
spec:
  llmRequestCosts: [{{metadataKey: total, type: TotalToken}}, {{metadataKey: cc, type: CacheCreationInputToken}}]
  rules:
    - matches: [{{headers: [{{name: x-ai-eg-model, value: m}}]}}]
      backendRefs: [{{name: a}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: a}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: a, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: a}}
spec:
  endpoints: [{{fqdn: {{hostname: a.example, port: 443}}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: p}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]
  rateLimit:
    type: Global
    global:
      rules:
{rules}
"#
    )
}

#[test]
fn rules_become_budgets() {
    let c = compile(&config(
        "        - clientSelectors: [{headers: [{name: X-User-Id, type: Distinct}, {name: x-tier, value: free}, {name: x-org, type: RegularExpression, value: 'a.*', invert: true}]}]\n          limit: {requests: 100, unit: Minute}\n          cost: {request: {from: Number, number: 2}, response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: total}}}\n        - limit: {requests: 5, unit: Day}",
    ))
    .unwrap();
    assert_eq!(c.budgets.len(), 2);
    let b = &c.budgets[0];
    assert_eq!(b.name, "default/p#0");
    assert_eq!((b.limit, b.window), (100, Duration::from_secs(60)));
    assert_eq!(
        (b.request_cost, b.response_cost.as_deref()),
        (2, Some("total"))
    );
    assert_eq!(b.routes, [0]);
    assert_eq!(b.selectors[0].name, "x-user-id");
    assert!(matches!(b.selectors[0].matcher, SelectorMatch::Distinct));
    assert!(matches!(&b.selectors[1].matcher, SelectorMatch::Exact(v) if v == "free"));
    let SelectorMatch::Regex(re) = &b.selectors[2].matcher else {
        panic!("a regex");
    };
    assert!(re.is_match("abc") && !re.is_match("xabc") && b.selectors[2].invert);
    // Without a cost, a request costs 1.
    let d = &c.budgets[1];
    assert_eq!((d.request_cost, d.response_cost.as_deref()), (1, None));
    assert_eq!(d.window, Duration::from_secs(86_400));
    assert!(d.global);
}

#[test]
fn what_cannot_be_honoured_is_an_error_naming_the_field() {
    let cases = [
        (
            "        - limit: {requests: 1, unit: Week}",
            "spec.rateLimit.global.rules[0].limit.unit",
        ),
        (
            "        - limit: {requests: 0, unit: Hour}",
            "spec.rateLimit.global.rules[0].limit.requests",
        ),
        (
            "        - clientSelectors: [{sourceCIDR: {type: Distinct, value: 0.0.0.0/0}}]\n          limit: {requests: 1, unit: Hour}",
            "spec.rateLimit.global.rules[0].clientSelectors[0].sourceCIDR",
        ),
        (
            "        - clientSelectors: [{headers: [{name: x, type: Distinct, invert: true}]}]\n          limit: {requests: 1, unit: Hour}",
            "spec.rateLimit.global.rules[0].clientSelectors[0].headers[0].invert",
        ),
        (
            "        - clientSelectors: [{headers: [{name: x, type: RegularExpression, value: '('}]}]\n          limit: {requests: 1, unit: Hour}",
            "spec.rateLimit.global.rules[0].clientSelectors[0].headers[0].value",
        ),
        (
            "        - limit: {requests: 1, unit: Hour}\n          cost: {response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: nope}}}",
            "spec.rateLimit.global.rules[0].cost.response.metadata.key",
        ),
        (
            "        - limit: {requests: 1, unit: Hour}\n          cost: {response: {from: Metadata, metadata: {namespace: other, key: total}}}",
            "spec.rateLimit.global.rules[0].cost.response.metadata.namespace",
        ),
        (
            "        - limit: {requests: 1, unit: Hour}\n          cost: {request: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: total}}}",
            "spec.rateLimit.global.rules[0].cost.request.from",
        ),
    ];
    for (rules, field) in cases {
        let e = errors(&config(rules));
        assert!(e.iter().any(|m| m.contains(field)), "{field}: {e:?}");
    }
    // A local policy needs `local`.
    let e = errors(
        &config("        - limit: {requests: 1, unit: Hour}")
            .replace("type: Global", "type: Local"),
    );
    assert!(e.iter().any(|m| m.contains("spec.rateLimit")), "{e:?}");
}
