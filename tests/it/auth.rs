//! Client authentication (an Envoy Gateway SecurityPolicy's `apiKeyAuth` and `jwt`) through
//! real Envoy 1.40: Envoy's own filters check the credential before the processor, a missing
//! or wrong one gets 401 in OpenAI's shape, the credential never reaches the provider, and the
//! verified identity (not a header the client chose) is what budgets and usage records see.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::budgets::{chat, records};
use crate::harness::{examples, Gateway, Setup, GUIDE_KEY};

/// Output tokens per verified user and hour on the Fireworks route.
const BUDGET: &str = r#"
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: budgets, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: envoy-ai-gateway-fireworks}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors: [{headers: [{name: x-user-id, type: Distinct}]}]
          limit: {requests: 12, unit: Hour}
          cost:
            request: {from: Number, number: 0}
            response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: completion_tokens}}
"#;

const API_KEYS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: gateway-clients, namespace: default}
stringData:
  alice: sk-gw-alice-0123456789
  bob: sk-gw-bob-9876543210
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {name: clients, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: envoy-ai-gateway-basic}]
  apiKeyAuth:
    credentialRefs: [{group: "", kind: Secret, name: gateway-clients}]
    extractFrom: [{headers: [authorization, x-api-key]}]
    forwardClientIDHeader: x-user-id
"#;

async fn start(policy: &str) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = examples();
    for (name, text) in [("budgets.yaml", BUDGET), ("auth.yaml", policy)] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        config.push(path);
    }
    let gw = Gateway::start_with(Setup {
        config,
        ..Setup::default()
    })
    .await;
    (gw, dir)
}

fn assert_401(r: &crate::harness::Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text);
    let e: Value = r.json();
    assert_eq!(e["error"]["type"], "invalid_request_error", "{what}: {e}");
    assert_eq!(e["error"]["code"], "invalid_api_key", "{what}: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_verify_the_client_and_its_id_feeds_budgets_and_records() {
    let (gw, _dir) = start(API_KEYS).await;
    // No key, a wrong key, and a provider's key: 401, and nothing reaches the provider.
    let no_key = gw.post("/v1/chat/completions", &chat(5, false), &[]).await;
    assert_401(&no_key, "no key");
    let wrong = [("authorization", "Bearer sk-gw-alice-wrong")];
    assert_401(
        &gw.post("/v1/chat/completions", &chat(5, false), &wrong)
            .await,
        "wrong key",
    );
    let provider_key = format!("Bearer {GUIDE_KEY}");
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(5, false),
            &[("authorization", &provider_key)],
        )
        .await;
    assert_401(&r, "the provider's key");
    let models = gw.get("/v1/models").await;
    assert_401(&models, "/v1/models without a key");
    assert!(gw.fireworks().is_empty());

    // Alice's key (the OpenAI SDK's `Authorization: Bearer`), with a spoofed x-user-id.
    let alice = [
        ("authorization", "Bearer sk-gw-alice-0123456789"),
        ("x-user-id", "bob"),
    ];
    let r = gw
        .post("/v1/chat/completions", &chat(5, false), &alice)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("7"));
    let seen = gw.fireworks().last().unwrap();
    assert_eq!(seen.header("authorization"), Some(provider_key.as_str()));
    let all: String = format!("{:?}", seen.headers);
    assert!(
        !all.contains("sk-gw-"),
        "the client's key reached the provider: {all}"
    );
    assert!(
        !all.contains("\"bob\""),
        "the spoofed id reached the provider: {all}"
    );
    let rec = &records(&gw, 1).await[0];
    assert_eq!(rec["user"], "alice", "{rec}");
    assert_eq!(rec["identity"], json!({"x-user-id": "alice"}), "{rec}");

    // Bob's key in x-api-key: his own budget, whatever id he claims.
    let bob = [
        ("x-api-key", "sk-gw-bob-9876543210"),
        ("x-user-id", "alice"),
    ];
    let r = gw.post("/v1/chat/completions", &chat(5, false), &bob).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("7"));
    assert!(!format!("{:?}", gw.fireworks().last().unwrap().headers).contains("sk-gw-"));
    // Alice spends the rest, then is refused even when she claims to be someone else.
    for _ in 0..2 {
        let r = gw
            .post("/v1/chat/completions", &chat(5, false), &alice)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    records(&gw, 4).await;
    let spoof = [
        ("authorization", "Bearer sk-gw-alice-0123456789"),
        ("x-user-id", "somebody-else"),
    ];
    let r = gw
        .post("/v1/chat/completions", &chat(5, false), &spoof)
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    // The models list with a key.
    let r = gw
        .http
        .get(format!("{}/v1/models", gw.base))
        .header("authorization", "Bearer sk-gw-bob-9876543210")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An EC P-256 key generated for the test, as a signing key and a JWK.
struct Issuer {
    key: jsonwebtoken::EncodingKey,
    kid: String,
    jwk: Value,
}

impl Issuer {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // The raw public key: 0x04, x, y.
        let raw = pair.public_key_raw();
        assert_eq!((raw.len(), raw[0]), (65, 4));
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
        });
        Self {
            key: jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
            kid: kid.into(),
            jwk,
        }
    }

    fn token(&self, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, aud: &str, exp: u64) -> Value {
    json!({"iss": "https://issuer.test", "sub": sub, "aud": aud, "exp": exp, "iat": now()})
}

/// A key set served over plain HTTP on a free loopback port, for `remoteJWKS`.
async fn serve_jwks(set: Value) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = set.to_string();
    let task = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_verified_against_local_and_remote_key_sets_and_claims_feed_budgets() {
    let local = Issuer::new("local-1");
    let remote = Issuer::new("remote-1");
    let stranger = Issuer::new("local-1");
    let (jwks_addr, jwks_server) = serve_jwks(json!({"keys": [remote.jwk]})).await;
    let inline = json!({"keys": [local.jwk]}).to_string();
    let policy = format!(
        r#"
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {{name: tokens, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: envoy-ai-gateway-basic}}]
  jwt:
    providers:
      - name: local
        issuer: https://issuer.test
        audiences: [ai-gateway]
        localJWKS: {{type: Inline, inline: '{inline}'}}
        claimToHeaders: [{{header: x-user-id, claim: sub}}]
      - name: remote
        issuer: https://issuer.test
        audiences: [ai-gateway]
        remoteJWKS: {{uri: "http://{jwks_addr}/jwks.json", cacheDuration: 5m}}
        claimToHeaders: [{{header: x-user-id, claim: sub}}]
"#
    );
    let (gw, _dir) = start(&policy).await;
    let bearer = |t: &str| format!("Bearer {t}");
    let exp = now() + 600;

    // No token, a token signed by another key, an expired one: 401; the wrong audience: 403.
    assert_401(
        &gw.post("/v1/chat/completions", &chat(5, false), &[]).await,
        "no token",
    );
    let forged = bearer(&stranger.token(claims("carol", "ai-gateway", exp)));
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(5, false),
            &[("authorization", &forged)],
        )
        .await;
    assert_401(&r, "forged");
    let expired = bearer(&local.token(claims("carol", "ai-gateway", now() - 600)));
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(5, false),
            &[("authorization", &expired)],
        )
        .await;
    assert_401(&r, "expired");
    let other_aud = bearer(&local.token(claims("carol", "elsewhere", exp)));
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(5, false),
            &[("authorization", &other_aud)],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.json()["error"]["code"], "permission_denied");
    assert!(gw.fireworks().is_empty());

    // Carol's token (local key set), with a spoofed x-user-id: her `sub` is who she is.
    let carol = bearer(&local.token(claims("carol", "ai-gateway", exp)));
    let headers = [("authorization", carol.as_str()), ("x-user-id", "dave")];
    for _ in 0..3 {
        let r = gw
            .post("/v1/chat/completions", &chat(5, false), &headers)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let seen = gw.fireworks().last().unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {GUIDE_KEY}").as_str())
    );
    let rec = &records(&gw, 3).await[0];
    assert_eq!(rec["user"], "carol", "{rec}");
    assert_eq!(rec["identity"], json!({"x-user-id": "carol"}), "{rec}");
    let r = gw
        .post("/v1/chat/completions", &chat(5, false), &headers)
        .await;
    assert_eq!(r.status, 429, "carol's budget is spent: {}", r.text);
    // A valid token without the claim: the client's own x-user-id must not stand in for it.
    let anonymous = json!({"iss": "https://issuer.test", "aud": "ai-gateway", "exp": exp});
    let anonymous = bearer(&local.token(anonymous));
    let headers = [
        ("authorization", anonymous.as_str()),
        ("x-user-id", "carol"),
    ];
    let r = gw
        .post("/v1/chat/completions", &chat(5, false), &headers)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("x-ratelimit-limit-tokens").is_none(),
        "no verified id, no budget"
    );
    let rec = &records(&gw, 4).await[3];
    assert_eq!(
        (&rec["user"], &rec["identity"]),
        (&json!(""), &json!({})),
        "{rec}"
    );

    // Dave's token (remote key set, fetched by Envoy): his own budget.
    let dave = bearer(&remote.token(claims("dave", "ai-gateway", exp)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = gw
            .post(
                "/v1/chat/completions",
                &chat(5, false),
                &[("authorization", &dave)],
            )
            .await;
        if r.status == 200 {
            assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("7"));
            break;
        }
        // Envoy fetches the key set when it starts; until then a token cannot be verified.
        assert_401(&r, "remote key set not fetched yet");
        assert!(
            std::time::Instant::now() < deadline,
            "the remote key set never loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    jwks_server.abort();
}
