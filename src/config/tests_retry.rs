//! Priorities and BackendTrafficPolicy retries: what compiles, what Envoy is told, and every
//! field ai-extproc cannot honour refused with its place.

use std::time::Duration;

use super::tests_diagnostics::{compile, errors};
use super::*;

/// A route `r` whose rule has backends `a` (priority 0) and `b` (priority `b_priority`), and
/// `extra` documents after it.
fn config(b_priority: u32, extra: &str) -> String {
    let mut text = format!(
        r#"apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: r}}
spec:
  rules:
    - matches: [{{headers: [{{name: x-ai-eg-model, value: m}}]}}]
      backendRefs: [{{name: a}}, {{name: b, priority: {b_priority}}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: single}}]}}]
      backendRefs: [{{name: a}}]
"#
    );
    for name in ["a", "b"] {
        text.push_str(&format!(
            r#"---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  endpoints: [{{fqdn: {{hostname: {name}.example, port: 443}}}}]
"#
        ));
    }
    text.push_str(extra);
    text
}

fn btp(spec: &str) -> String {
    format!("---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {{name: p}}\nspec:\n{spec}\n")
}

#[test]
fn priorities_fail_over_once_by_default() {
    let c = compile(&config(1, "")).unwrap();
    let rule = &c.rules[0];
    assert_eq!(
        rule.backends.iter().map(|b| b.priority).collect::<Vec<_>>(),
        [0, 1]
    );
    assert!(rule.fails_over());
    assert_eq!(rule.retry(&c), Some(Retry::failover_default()));
    let default = Retry::failover_default();
    assert_eq!(
        (default.num_retries, default.status_codes.as_slice()),
        (1, [429, 503].as_slice())
    );
    // One priority: weights only, as before; no retries unless a policy says so.
    let c = compile(&config(0, "")).unwrap();
    assert!(!c.rules[0].fails_over());
    assert_eq!(c.rules[0].retry(&c), None);
    assert!(!c.rules[1].fails_over());
}

#[test]
fn a_policy_on_the_route_sets_its_retries_and_wins_over_the_gateways() {
    let on_route = btp(
        r#"  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  retry:
    numRetries: 5
    numAttemptsPerPriority: 2
    retryOn: {triggers: [connect-failure, retriable-status-codes], httpStatusCodes: [500, 429]}
    perRetry: {timeout: 30s, backOff: {baseInterval: 100ms, maxInterval: 10s}}"#,
    );
    let c = compile(&config(1, &on_route)).unwrap();
    let want = Retry {
        num_retries: 5,
        attempts_per_priority: 2,
        retry_on: vec!["connect-failure".into(), "retriable-status-codes".into()],
        status_codes: vec![500, 429],
        per_try_timeout: Some(Duration::from_secs(30)),
        backoff: Some((Duration::from_millis(100), Some(Duration::from_secs(10)))),
    };
    assert_eq!(c.routes[0].retry.as_ref(), Some(&want));
    // Both rules of the route: the single-backend one retries on its own backend.
    assert_eq!(c.rules[1].retry(&c), Some(want.clone()));

    // Envoy Gateway's defaults for what is left out (less its gRPC triggers).
    let gateway =
        btp("  targetRefs: [{kind: Gateway, name: gw}]\n  retry: {}").replace("name: p", "name: g");
    let c = compile(&config(1, &gateway)).unwrap();
    let retry = c.routes[0].retry.clone().unwrap();
    assert_eq!(retry.num_retries, 2);
    assert_eq!(
        retry.retry_on,
        [
            "connect-failure",
            "refused-stream",
            "retriable-status-codes"
        ]
    );
    assert_eq!(retry.status_codes, [503]);

    let c = compile(&config(1, &format!("{gateway}{on_route}"))).unwrap();
    assert_eq!(
        c.routes[0].retry.as_ref(),
        Some(&want),
        "the route's own wins"
    );
}

#[test]
fn what_cannot_be_honoured_is_an_error_with_its_place() {
    let cases = [
        (
            "  targetRefs: [{kind: Gateway, name: gw}]\n  retry: {retryOn: {triggers: [unavailable]}}",
            "spec.retry.retryOn.triggers[0]",
            "gRPC",
        ),
        (
            "  targetRefs: [{kind: Gateway, name: gw}]\n  retry: {retryOn: {triggers: [sometimes]}}",
            "spec.retry.retryOn.triggers[0]",
            "unknown trigger",
        ),
        (
            "  targetRefs: [{kind: Gateway, name: gw}]\n  retry: {retryOn: {triggers: [retriable-status-codes], httpStatusCodes: [503, 400]}}",
            "spec.retry.retryOn.httpStatusCodes[1]",
            "400 is not retried",
        ),
        (
            "  targetRefs: [{kind: Gateway, name: gw}]\n  retry: {retryOn: {triggers: [reset], httpStatusCodes: [503]}}",
            "spec.retry.retryOn.httpStatusCodes",
            "retriable-status-codes",
        ),
        (
            "  targetRefs: [{kind: Gateway, name: gw}]\n  retry: {numAttemptsPerPriority: 0}",
            "spec.retry.numAttemptsPerPriority",
            "at least 1",
        ),
        (
            "  targetRefs: [{kind: Gateway, name: gw}]\n  retry: {perRetry: {timeout: soon}}",
            "spec.retry.perRetry.timeout",
            "invalid duration",
        ),
        (
            "  targetRefs: [{kind: Gateway, name: gw}]\n  retry: {perRetry: {backOff: {baseInterval: 1s, maxInterval: 10ms}}}",
            "spec.retry.perRetry.backOff.maxInterval",
            "less than baseInterval",
        ),
        (
            "  targetRefs: [{kind: Gateway, name: gw}]\n  retry: {retryBudget: 10}",
            "spec.retry",
            "retryBudget",
        ),
        (
            "  targetRefs: [{kind: HTTPRoute, name: other}]\n  retry: {}",
            "spec.targetRefs[0]",
            "nothing ai-extproc serves",
        ),
        ("  retry: {}", "spec.targetRefs", "required"),
    ];
    for (spec, path, message) in cases {
        let e = errors(&config(1, &btp(spec)));
        assert!(
            e.iter().any(|e| e.contains(path) && e.contains(message)),
            "{spec}: {e:?}"
        );
    }
    // Two policies for one route: which one applies would be a guess.
    let twice = format!(
        "{}{}",
        btp("  targetRefs: [{kind: HTTPRoute, name: r}]\n  retry: {}"),
        btp("  targetRefs: [{kind: HTTPRoute, name: r}]\n  retry: {}")
            .replace("name: p", "name: q")
    );
    assert!(errors(&config(1, &twice))
        .iter()
        .any(|e| e.contains("already has a retry policy")));
    // A priority level whose weights are all 0 never serves.
    let zero = config(1, "").replace(
        "{name: b, priority: 1}",
        "{name: b, priority: 1, weight: 0}",
    );
    assert!(errors(&zero)
        .iter()
        .any(|e| e.contains("all weights at priority 1 are 0")));
}

/// Envoy AI Gateway's `provider_fallback` example (examples/provider_fallback in
/// envoyproxy/ai-gateway), its Bedrock backend replaced by an OpenAI-schema one: loads
/// otherwise unchanged, and fails over with its BackendTrafficPolicy's retries.
#[test]
fn envoy_ai_gateways_provider_fallback_example_loads_and_fails_over() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ai-gateway-examples/provider_fallback");
    let c = load(
        &[dir.join("base.yaml"), dir.join("fallback.yaml")],
        &CompileOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rule = &c.rules[0];
    assert!(rule.fails_over());
    let names: Vec<(&str, u32)> = rule
        .backends
        .iter()
        .map(|b| (c.backends[b.backend].name.as_str(), b.priority))
        .collect();
    assert_eq!(
        names,
        [
            ("default/provider-fallback-always-failing-upstream", 0),
            ("default/provider-fallback-aws", 1)
        ]
    );
    let retry = rule.retry(&c).unwrap();
    assert_eq!(
        (
            retry.num_retries,
            retry.attempts_per_priority,
            retry.status_codes.as_slice()
        ),
        (5, 1, [500].as_slice())
    );
    assert_eq!(
        retry.retry_on,
        ["connect-failure", "retriable-status-codes"]
    );
    assert_eq!(retry.per_try_timeout, Some(Duration::from_secs(30)));
}
