//! A SecurityPolicy's `apiKeyAuth` and `jwt`: what compiles into client authentication, and
//! what ai-extproc cannot honour refused with its place.

use super::tests_diagnostics::{base, compile, errors, ONE_RULE};
use super::*;

const KEYS: &str = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: clients}\nstringData: {alice: sk-a, bob: sk-b}\n";

fn policy(targets: &str, spec: &str) -> String {
    format!(
        "{}{KEYS}---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: {{name: sp}}\nspec:\n  targetRefs: {targets}\n{spec}\n",
        base(ONE_RULE)
    )
}

const GATEWAY: &str = "[{kind: Gateway, name: g}]";
const API_KEYS: &str = "  apiKeyAuth:\n    credentialRefs: [{name: clients}]\n    extractFrom: [{headers: [Authorization]}, {params: [key]}]\n    forwardClientIDHeader: X-User-Id";
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b"}]}"#;

#[test]
fn api_keys_and_tokens_compile_into_one_authentication() {
    let jwt = format!("  jwt:\n    optional: true\n    providers:\n      - name: a\n        issuer: https://i\n        audiences: [x]\n        localJWKS: {{type: Inline, inline: '{JWKS}'}}\n        claimToHeaders: [{{header: X-Tenant, claim: org}}]\n        extractFrom: {{headers: [{{name: x-token, valuePrefix: 'Token '}}]}}\n      - name: b\n        remoteJWKS: {{uri: 'https://login.example:8443/keys', cacheDuration: 5m}}");
    let c = compile(&policy(GATEWAY, &format!("{API_KEYS}\n{jwt}"))).unwrap();
    let auth = c.auth.expect("auth");
    assert_eq!(auth.policy, "default/sp");
    let keys = auth.api_keys.as_ref().unwrap();
    let creds: Vec<(&str, &str)> = keys
        .credentials
        .iter()
        .map(|(c, k)| (c.as_str(), k.expose()))
        .collect();
    assert_eq!(creds, [("alice", "sk-a"), ("bob", "sk-b")]);
    assert_eq!(
        keys.sources,
        [
            CredentialSource::Header("authorization".into()),
            CredentialSource::Query("key".into())
        ]
    );
    let jwt = auth.jwt.as_ref().unwrap();
    assert!(jwt.optional);
    assert_eq!(
        jwt.providers[0].claim_to_headers,
        [("x-tenant".to_string(), "org".to_string())]
    );
    assert_eq!(
        jwt.providers[0].from_headers,
        [("x-token".to_string(), Some("Token ".to_string()))]
    );
    match &jwt.providers[1].jwks {
        Jwks::Remote {
            host,
            port,
            tls,
            cache,
            ..
        } => {
            assert_eq!((host.as_str(), *port, *tls), ("login.example", 8443, true));
            assert_eq!(*cache, Some(std::time::Duration::from_secs(300)));
        }
        Jwks::Local(_) => panic!("local"),
    }
    assert_eq!(auth.identity_headers(), ["x-tenant", "x-user-id"]);
    // Every route targeted one by one is the same as the Gateway.
    assert!(compile(&policy("[{kind: HTTPRoute, name: r}]", API_KEYS)).is_ok());
    // A ConfigMap's `jwks` entry.
    let by_ref = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: keys}}\ndata: {{jwks: '{JWKS}'}}\n",
        policy(GATEWAY, "  jwt:\n    providers: [{name: a, localJWKS: {type: ValueRef, valueRef: {kind: ConfigMap, name: keys}}}]")
    );
    assert!(matches!(
        compile(&by_ref)
            .unwrap()
            .auth
            .unwrap()
            .jwt
            .unwrap()
            .providers[0]
            .jwks,
        Jwks::Local(_)
    ));
}

#[test]
fn what_cannot_be_honoured_is_an_error_naming_it() {
    let cases = [
        // Some routes only: authentication runs before the body picks the route.
        (
            policy("[{kind: HTTPRoute, name: r}]", API_KEYS) + "---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\nmetadata: {name: r2}\nspec:\n  rules:\n    - matches: [{headers: [{name: x-ai-eg-model, value: m2}]}]\n      backendRefs: [{name: b}]\n",
            "spec.targetRefs",
            "missing: default/r2",
        ),
        (
            policy(GATEWAY, &format!("{API_KEYS}\n    sanitize: false")),
            "spec.apiKeyAuth.sanitize",
            "never goes past the gateway",
        ),
        (
            policy(GATEWAY, "  apiKeyAuth: {credentialRefs: [{name: nobody}], extractFrom: [{headers: [x-api-key]}]}"),
            "spec.apiKeyAuth.credentialRefs[0]",
            "not found",
        ),
        (
            policy(GATEWAY, "  apiKeyAuth: {credentialRefs: [{name: clients}], extractFrom: [{}]}"),
            "spec.apiKeyAuth.extractFrom[0]",
            "at least one",
        ),
        (
            policy(GATEWAY, &format!("  jwt: {{providers: [{{name: a, remoteJWKS: {{uri: 'https://k/x'}}, localJWKS: {{type: Inline, inline: '{JWKS}'}}}}]}}")),
            "spec.jwt.providers[0]",
            "exactly one",
        ),
        (
            policy(GATEWAY, "  jwt: {providers: [{name: a, remoteJWKS: {uri: 'ftp://k/x'}}]}"),
            "spec.jwt.providers[0].remoteJWKS.uri",
            "http or https",
        ),
        (
            policy(GATEWAY, "  jwt: {providers: [{name: a, remoteJWKS: {uri: 'https://k/x', backendRefs: [{name: k}]}}]}"),
            "remoteJWKS.backendRefs",
            "not applied",
        ),
        (
            policy(GATEWAY, "  jwt: {providers: [{name: a, recomputeRoute: true, localJWKS: {type: Inline, inline: '{\"keys\":[]}'}}]}"),
            "spec.jwt.providers[0].recomputeRoute",
            "not applied",
        ),
        (
            policy(GATEWAY, "  jwt: {providers: [{name: a, localJWKS: {type: Inline, inline: 'not json'}}]}"),
            "spec.jwt.providers[0].localJWKS",
            "not a JSON Web Key Set",
        ),
        (
            policy(GATEWAY, "  jwt: {providers: [{name: a, remoteJWKS: {uri: 'https://k/x'}, claimToHeaders: [{header: 'bad header', claim: sub}]}]}"),
            "claimToHeaders[0].header",
            "not a header name",
        ),
        (
            policy(GATEWAY, API_KEYS) + "---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: {name: sp2}\nspec:\n  targetRefs: [{kind: Gateway, name: g}]\n  jwt: {providers: [{name: a, remoteJWKS: {uri: 'https://k/x'}}]}\n",
            "default/sp",
            "already set",
        ),
    ];
    for (text, place, message) in cases {
        let e = errors(&text);
        assert!(
            e.iter().any(|e| e.contains(place) && e.contains(message)),
            "{place} / {message}: {e:?}"
        );
    }
}
