//! Config mistakes caught: errors for what would silently drop or ignore something, warnings for
//! what compiles but does not do what it says.

use super::*;

/// A route, its backend and Backend; `rules` replaces the route's rules.
pub(super) fn base(rules: &str) -> String {
    format!(
        r#"apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: r}}
spec:
  rules:
{rules}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: b}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: be, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: be}}
spec:
  endpoints: [{{fqdn: {{hostname: api.example, port: 443}}}}]
"#
    )
}

pub(super) const ONE_RULE: &str =
    "    - matches: [{headers: [{name: x-ai-eg-model, value: m}]}]\n      backendRefs: [{name: b}]";

pub(super) fn compile(text: &str) -> Result<Config, ConfigErrors> {
    load_str("t.yaml", text, &CompileOptions::default())
}

pub(super) fn errors(text: &str) -> Vec<String> {
    match compile(text) {
        Ok(_) => panic!("compiled:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn warnings(text: &str) -> Vec<String> {
    compile(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_misspelled_kind_is_an_error_not_a_skip() {
    let misspelled = base(ONE_RULE).replace("kind: AIGatewayRoute", "kind: AIGatewayRoutes");
    let e = errors(&misspelled);
    assert!(
        e.iter()
            .any(|e| e.contains("kind") && e.contains("did you mean AIGatewayRoute?")),
        "{e:?}"
    );
    let secrets = format!(
        "{}---\napiVersion: v1\nkind: Secrets\nmetadata: {{name: s}}\n",
        base(ONE_RULE)
    );
    assert!(errors(&secrets)
        .iter()
        .any(|e| e.contains("did you mean Secret?")));
    let mcp = format!(
        "{}---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: MCPRoute\nmetadata: {{name: m}}\nspec: {{}}\n",
        base(ONE_RULE)
    );
    assert!(errors(&mcp).iter().any(|e| e.contains("\"MCPRoute\"")));
    // Kinds of other tools, near ours or not, are not ours to judge.
    for other in [
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: BackendLBPolicy",
        "apiVersion: v1\nkind: Service",
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: ClientTrafficPolicy",
    ] {
        let text = format!(
            "{}---\n{other}\nmetadata: {{name: x}}\nspec: {{}}\n",
            base(ONE_RULE)
        );
        assert!(compile(&text).is_ok(), "{other}");
    }
}

#[test]
fn what_is_read_and_not_applied_is_a_warning() {
    let btp = format!(
        "{}---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {{name: limits}}\nspec: {{targetRefs: [{{kind: Gateway, name: gw}}], loadBalancer: {{type: RoundRobin}}}}\n",
        base(ONE_RULE)
    );
    let w = warnings(&btp);
    assert!(
        w.iter()
            .any(|w| w.contains("BackendTrafficPolicy default/limits")
                && w.contains("spec.loadBalancer")
                && w.contains("not applied")),
        "{w:?}"
    );
}

#[test]
fn shadowed_rules_unknowable_headers_empty_keys_and_unused_backends_warn() {
    assert!(
        warnings(&base(ONE_RULE)).is_empty(),
        "a clean config has no warnings"
    );
    let twice = format!("{ONE_RULE}\n{ONE_RULE}");
    let w = warnings(&base(&twice));
    assert!(
        w.iter().any(|w| w.contains("spec.rules[1].matches[0]")
            && w.contains("never applies")
            && w.contains("default/r/rule/0")),
        "{w:?}"
    );
    // A narrower match after a broader one is shadowed too; a broader one after a narrower is not.
    let narrower = "    - matches: [{headers: [{name: x-ai-eg-model, value: m}]}]\n      backendRefs: [{name: b}]\n    - matches: [{headers: [{name: x-ai-eg-model, value: m}, {name: x-tenant, value: t}]}]\n      backendRefs: [{name: b}]";
    assert_eq!(warnings(&base(narrower)).len(), 1);
    let broader = "    - matches: [{headers: [{name: x-ai-eg-model, value: m}, {name: x-tenant, value: t}]}]\n      backendRefs: [{name: b}]\n    - matches: [{headers: [{name: x-ai-eg-model, value: m}]}]\n      backendRefs: [{name: b}]";
    assert!(warnings(&base(broader)).is_empty());

    for (name, warned) in [
        ("authorization", true),
        ("x-envoy-retry-on", true),
        ("x-ai-eg-backend", true),
        ("x-tenant", false),
    ] {
        let rule = format!("    - matches: [{{headers: [{{name: x-ai-eg-model, value: m}}, {{name: {name}, value: v}}]}}]\n      backendRefs: [{{name: b}}]");
        let w = warnings(&base(&rule));
        assert_eq!(
            w.iter()
                .any(|w| w.contains("headers[1].name") && w.contains("disagree")),
            warned,
            "{name}: {w:?}"
        );
    }

    let unused = format!(
        "{}---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: forgotten}}\nspec:\n  endpoints: [{{ip: {{address: 10.0.0.1, port: 80}}}}]\n",
        base(ONE_RULE)
    );
    let w = warnings(&unused);
    assert!(
        w.iter()
            .any(|w| w.contains("no rule reaches Backend default/forgotten")),
        "{w:?}"
    );

    let empty_key = format!(
        "{}---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: BackendSecurityPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{name: b, kind: AIServiceBackend, group: aigateway.envoyproxy.io}}]\n  type: APIKey\n  apiKey: {{secretRef: {{name: k}}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: k}}\nstringData: {{apiKey: \"\"}}\n",
        base(ONE_RULE)
    );
    let w = warnings(&empty_key);
    assert!(w.iter().any(|w| w.contains("the key is empty")), "{w:?}");
}

fn security_policy(spec: &str) -> String {
    format!(
        "{}---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: {{name: sp}}\nspec:\n{spec}\n",
        base(ONE_RULE)
    )
}

#[test]
fn security_policies_apply_cors_and_refuse_the_rest() {
    let cors = security_policy(
        "  targetRefs: [{kind: HTTPRoute, name: r}]\n  cors:\n    allowOrigins: [\"https://*.app.example\"]\n    allowMethods: [POST]\n    maxAge: 10m",
    );
    let c = compile(&cors).unwrap().cors.expect("cors");
    assert_eq!(c.allow_origins, [r"https://.*\.app\.example"]);
    assert_eq!(c.max_age, Some(std::time::Duration::from_secs(600)));

    let oidc = security_policy("  targetRefs: [{kind: Gateway, name: g}]\n  oidc: {provider: {}}");
    assert!(errors(&oidc)
        .iter()
        .any(|e| e.contains("spec.oidc") && e.contains("not applied")));
    let elsewhere = security_policy(
        "  targetRefs: [{kind: HTTPRoute, name: other}]\n  cors: {allowOrigins: [\"*\"]}",
    );
    assert!(errors(&elsewhere)
        .iter()
        .any(|e| e.contains("spec.targetRefs[0]")));
    let two = format!(
        "{cors}---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: {{name: sp2}}\nspec:\n  targetRefs: [{{kind: Gateway, name: g}}]\n  cors: {{allowOrigins: [\"*\"]}}\n"
    );
    assert!(errors(&two)
        .iter()
        .any(|e| e.contains("one CORS policy applies to all")));
}

#[test]
fn a_reload_that_empties_a_file_of_routes_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    std::fs::write(&a, base(ONE_RULE)).unwrap();
    let other = base(ONE_RULE)
        .replace("name: r}", "name: r2}")
        .replace("value: m}", "value: m2}")
        .replace("{name: b}", "{name: b2}")
        .replace("name: be", "name: be2");
    std::fs::write(&b, other).unwrap();
    let paths = vec![a.clone(), b.clone()];
    let before = load(&paths, &CompileOptions::default()).unwrap();
    std::fs::write(&b, "").unwrap();
    let after = load(&paths, &CompileOptions::default()).unwrap();
    assert_eq!(emptied_files(&before, &after), [b]);
    assert!(emptied_files(&after, &before).is_empty());
}
