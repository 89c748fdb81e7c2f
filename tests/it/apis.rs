//! The rest of the API through real Envoy 1.40: rerank and stored responses on two fake
//! Fireworks (`east`, `west`: each its own key, each keeping its own responses), the Azure OpenAI
//! schema (Envoy AI Gateway's `basic/azure_openai.yaml` with its policy switched to
//! `AzureAPIKey`) against a fake Azure, and the Cohere schema (`basic/cohere.yaml` unchanged)
//! against a fake Cohere. Each case checks what the provider received and what was metered.

use std::path::{Path, PathBuf};

use ai_extproc::envoy::BackendOverride;
use ai_extproc::upstreams::{
    self, FireworksOptions, Speaks, Upstream, UpstreamKind, FAKE_FIREWORKS_FAULT_HEADER,
};
use serde_json::{json, Value};

use crate::budgets::records;
use crate::harness::{root, Gateway, Setup};

const CHAT_MODEL: &str = "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct";

fn key(name: &str) -> String {
    format!("fw-{name}-key")
}

fn config(dir: &Path) -> PathBuf {
    let mut yaml = format!(
        r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: apis, namespace: default}}
spec:
  parentRefs: [{{name: gw, kind: Gateway, group: gateway.networking.k8s.io}}]
  llmRequestCosts:
    - {{metadataKey: input, type: InputToken}}
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: reranker}}]}}]
      backendRefs: [{{name: east, modelNameOverride: fireworks/qwen3-reranker-8b}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: qwen-two}}]}}]
      backendRefs:
        - {{name: east, modelNameOverride: {CHAT_MODEL}}}
        - {{name: west, modelNameOverride: {CHAT_MODEL}}}
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: qwen-failover}}]}}]
      backendRefs:
        - {{name: east, priority: 0, modelNameOverride: {CHAT_MODEL}}}
        - {{name: west, priority: 1, modelNameOverride: {CHAT_MODEL}}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: apis, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: apis}}]
  retry:
    numRetries: 1
    retryOn: {{triggers: [retriable-status-codes], httpStatusCodes: [503]}}
"#
    );
    for name in ["east", "west"] {
        yaml.push_str(&format!(
            r#"---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}, namespace: default}}
spec:
  schema: {{name: OpenAI, prefix: /inference/v1}}
  backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {name}-key, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]
  type: APIKey
  apiKey: {{secretRef: {{name: {name}-key}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}-key, namespace: default}}
stringData: {{apiKey: "{key}"}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}, namespace: default}}
spec:
  endpoints: [{{fqdn: {{hostname: api.fireworks.ai, port: 443}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}-tls, namespace: default}}
spec:
  targetRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: {name}}}]
  validation: {{wellKnownCACertificates: System, hostname: api.fireworks.ai}}
"#,
            key = key(name)
        ));
    }
    let path = dir.join("apis.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A fake provider on loopback with its CA written to `dir`, and the override pointing
/// `backend` at it.
async fn fake(dir: &Path, backend: &str, options: FireworksOptions) -> (Upstream, BackendOverride) {
    let u = upstreams::spawn(
        UpstreamKind::Fireworks(options),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let ca = dir.join(format!("{backend}-ca.pem"));
    std::fs::write(&ca, u.ca_pem.clone().unwrap()).unwrap();
    let o = BackendOverride {
        backend: backend.into(),
        address: Some(u.addr.into()),
        ca_file: Some(ca),
    };
    (u, o)
}

async fn send(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = gw
        .http
        .request(method.parse().unwrap(), format!("{}{path}", gw.base));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerank_and_stored_responses_reach_the_backend_that_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut fakes = Vec::new();
    let mut overrides = Vec::new();
    for name in ["east", "west"] {
        let (u, o) = fake(
            dir.path(),
            name,
            FireworksOptions {
                api_key: key(name),
                name: name.into(),
                ..FireworksOptions::default()
            },
        )
        .await;
        fakes.push(u);
        overrides.push(o);
    }
    let (east, west) = (&fakes[0], &fakes[1]);
    let gw = Gateway::start_with(Setup {
        config: vec![config(dir.path())],
        fake: false,
        test_upstream: false,
        overrides,
        ..Setup::default()
    })
    .await;

    // Rerank: the model rewritten in place, the rest as sent, usage metered as input.
    let body = r#"{"model":"reranker","query":"green tea","documents":["black coffee","green tea leaves","tea"],"top_n":2}"#;
    let r = gw
        .post("/v1/rerank", body, &[("authorization", "Bearer client")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["data"][0]["index"], 1, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let seen = east.recorder.last().unwrap();
    assert_eq!(seen.path, "/inference/v1/rerank");
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        body.replace("\"reranker\"", "\"fireworks/qwen3-reranker-8b\"")
    );
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", key("east")).as_str())
    );
    let rec = &records(&gw, 1).await[0];
    assert_eq!(rec["endpoint"], "rerank", "{rec}");
    assert_eq!(rec["input_tokens"], v["usage"]["prompt_tokens"], "{rec}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let log = gw.access_log_entries(1).await;
    assert_eq!(log.last().unwrap()["input"], v["usage"]["prompt_tokens"]);

    // Responses created on a rule that picks east or west at random: each one's GET, its
    // continuation and its DELETE go to the backend that holds it (the other answers 404).
    let alice = [("x-user-id", "alice")];
    let mut created = Vec::new();
    for i in 0..16 {
        let body = json!({"model": "qwen-two", "input": format!("Hello {i}!")}).to_string();
        let r = gw.post("/v1/responses", &body, &alice).await;
        assert_eq!(r.status, 200, "{}", r.text);
        created.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let (e, w) = (east.recorder.len(), west.recorder.len());
    assert!(
        e > 1 && w > 0,
        "east {e}, west {w}: the rule should use both"
    );
    for id in &created {
        let (status, v) = send(&gw, "GET", &format!("/v1/responses/{id}"), &alice).await;
        assert_eq!(status, 200, "{id}: {v}");
        assert_eq!(v["id"], *id);
        let holder = [east, west]
            .into_iter()
            .find(|f| f.recorder.last().unwrap().path == format!("/inference/v1/responses/{id}"))
            .expect("one fake got the GET");
        let got = holder.recorder.last().unwrap();
        assert_eq!(got.method, "GET");
        assert!(got.header("authorization").unwrap().contains("-key"));
    }
    // Another user does not find alice's responses, nor does an unknown id resolve (two
    // backends serve the Responses API here, so the gateway cannot guess).
    let (status, v) = send(
        &gw,
        "GET",
        &format!("/v1/responses/{}", created[0]),
        &[("x-user-id", "bob")],
    )
    .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "response_not_found", "{v}");
    let (status, v) = send(&gw, "GET", "/v1/responses/resp_unknown", &alice).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("response_not_found"))
    );
    // Continuing each of the first four: to its holder, which knows it.
    for id in &created[..4] {
        let body = json!({"model": "qwen-two", "input": "And then?", "previous_response_id": id})
            .to_string();
        let r = gw.post("/v1/responses", &body, &alice).await;
        assert_eq!(r.status, 200, "continuing {id}: {}", r.text);
    }
    // Deleted at its holder; then the holder no longer has it.
    let id = &created[0];
    let (status, v) = send(&gw, "DELETE", &format!("/v1/responses/{id}"), &alice).await;
    assert_eq!((status, &v["deleted"]), (200, &json!(true)), "{v}");
    let (status, _) = send(&gw, "GET", &format!("/v1/responses/{id}"), &alice).await;
    assert_eq!(status, 404);
    // Records: the stored-response requests are not metered (only creations and
    // continuations are).
    let recs = records(&gw, 21).await;
    assert_eq!(
        recs.iter().filter(|r| r["endpoint"] == "responses").count(),
        20,
        "{recs:?}"
    );

    // A rule that fails over: east answers 503, west creates it; the GET goes to west.
    let body = json!({"model": "qwen-failover", "input": "Fail over"}).to_string();
    let r = gw
        .post(
            "/v1/responses",
            &body,
            &[
                ("x-user-id", "alice"),
                (FAKE_FIREWORKS_FAULT_HEADER, "east=503"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let (status, v) = send(&gw, "GET", &format!("/v1/responses/{id}"), &alice).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        west.recorder.last().unwrap().path,
        format!("/inference/v1/responses/{id}")
    );
}

/// Envoy AI Gateway's `basic/azure_openai.yaml` (ai-gateway c217da8a5) with its policy switched
/// from `AzureCredentials` to `AzureAPIKey` (unchanged it is refused, naming the field), its
/// Backend pointed at a fake Azure OpenAI that wants `api-key`, deployment paths and
/// `api-version`; an image deployment beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_openai_gets_deployment_paths_api_version_and_api_key() {
    let examples = root().join("tests/fixtures/ai-gateway-examples/basic");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ai-extproc"))
        .arg("check")
        .arg(examples.join("azure_openai.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("spec.azureCredentials"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images.yaml");
    std::fs::write(
        &images,
        r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: azure-images, namespace: default}
spec:
  parentRefs: [{name: envoy-ai-gateway-basic, kind: Gateway, group: gateway.networking.k8s.io}]
  llmRequestCosts:
    - {metadataKey: total, type: TotalToken}
  rules:
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: gpt-image-1}]}]
      backendRefs: [{name: envoy-ai-gateway-basic-azure}]
"#,
    )
    .unwrap();
    let (azure, o) = fake(
        dir.path(),
        "envoy-ai-gateway-basic-azure",
        FireworksOptions {
            api_key: "AZURE_API_KEY".into(),
            prefix: String::new(),
            host: "dummy-azure-resource.openai.azure.com".into(),
            extra_chat_models: vec!["gpt-4.5-preview".into(), "gpt-image-1".into()],
            speaks: Speaks::AzureOpenAI,
            ..FireworksOptions::default()
        },
    )
    .await;
    let gw = Gateway::start_with(Setup {
        config: vec![examples.join("azure_openai_apikey.yaml"), images],
        fake: false,
        test_upstream: false,
        overrides: vec![o],
        ..Setup::default()
    })
    .await;
    let client = [
        ("api-key", "client-key"),
        ("authorization", "Bearer client"),
    ];
    let chat = r#"{"model":"gpt-4.5-preview","messages":[{"role":"user","content":"Hi"}]}"#;
    let r = gw.post("/v1/chat/completions", chat, &client).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = azure.recorder.last().unwrap();
    assert_eq!(
        seen.path,
        "/openai/deployments/gpt-4.5-preview/chat/completions?api-version=2025-01-01-preview"
    );
    assert_eq!(seen.header("api-key"), Some("AZURE_API_KEY"));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.body, chat.as_bytes());
    assert_eq!(
        seen.sni.as_deref(),
        Some("dummy-azure-resource.openai.azure.com")
    );
    let usage = r.json()["usage"].clone();
    let rec = &records(&gw, 1).await[0];
    assert_eq!(
        rec["backend"], "default/envoy-ai-gateway-basic-azure",
        "{rec}"
    );
    assert_eq!(rec["input_tokens"], usage["prompt_tokens"]);

    // A stream: usage asked for (Azure reports it only when asked) and read.
    let stream =
        r#"{"model":"gpt-4.5-preview","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let r = gw.post("/v1/chat/completions", stream, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rec = &records(&gw, 2).await[1];
    assert!(rec["output_tokens"].as_u64().unwrap() > 0, "{rec}");

    // The Responses API at /openai/responses, and its stored responses.
    let r = gw
        .post(
            "/v1/responses",
            r#"{"model":"gpt-4.5-preview","input":"Hi"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        azure.recorder.last().unwrap().path,
        "/openai/responses?api-version=2025-01-01-preview"
    );
    let id = r.json()["id"].as_str().unwrap().to_string();
    let (status, v) = send(&gw, "GET", &format!("/v1/responses/{id}"), &[]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        azure.recorder.last().unwrap().path,
        format!("/openai/responses/{id}?api-version=2025-01-01-preview")
    );

    // Images, JSON and streamed, metered from their usage.
    let img = r#"{"model":"gpt-image-1","prompt":"a lighthouse","size":"1024x1024"}"#;
    let r = gw.post("/v1/images/generations", img, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        azure.recorder.last().unwrap().path,
        "/openai/deployments/gpt-image-1/images/generations?api-version=2025-01-01-preview"
    );
    let usage = r.json()["usage"].clone();
    let streamed =
        r#"{"model":"gpt-image-1","prompt":"a lighthouse","stream":true,"partial_images":1}"#;
    let r = gw.post("/v1/images/generations", streamed, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("image_generation.completed"), "{}", r.text);
    let recs = records(&gw, 5).await;
    for rec in &recs[3..5] {
        assert_eq!(rec["endpoint"], "images", "{rec}");
        assert_eq!(rec["input_tokens"], usage["input_tokens"], "{rec}");
        assert_eq!(rec["output_tokens"], usage["output_tokens"], "{rec}");
    }
    let log = gw.access_log_entries(6).await;
    assert_eq!(log.last().unwrap()["total"], usage["total_tokens"]);
    // Families Azure does not serve: refused naming the schema, nothing sent.
    let before = azure.recorder.len();
    let r = gw
        .post(
            "/v1/messages",
            r#"{"model":"gpt-4.5-preview","max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert!(r.text.contains("AzureOpenAI"), "{}", r.text);
    assert_eq!(azure.recorder.len(), before);
}

/// Envoy AI Gateway's `basic/cohere.yaml`, unchanged (ai-gateway c217da8a5), against a fake
/// Cohere: `/cohere/v2/rerank` reaches `/v2/rerank` with the Bearer key, usage from
/// `meta.tokens`; errors on that path in Cohere's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cohere_rerank_through_envoy_ai_gateways_example() {
    const MODEL: &str = "rerank-english-v3.0";
    let dir = tempfile::tempdir().unwrap();
    let (cohere, o) = fake(
        dir.path(),
        "envoy-ai-gateway-basic-cohere",
        FireworksOptions {
            api_key: "COHERE_API_KEY".into(),
            prefix: "/v2".into(),
            host: "api.cohere.com".into(),
            extra_chat_models: vec![MODEL.into()],
            speaks: Speaks::Cohere,
            ..FireworksOptions::default()
        },
    )
    .await;
    let gw = Gateway::start_with(Setup {
        config: vec![root().join("tests/fixtures/ai-gateway-examples/basic/cohere.yaml")],
        fake: false,
        test_upstream: false,
        overrides: vec![o],
        ..Setup::default()
    })
    .await;
    let body = format!(
        r#"{{"model":"{MODEL}","query":"capital of France","documents":["Paris is the capital of France","Berlin"],"top_n":1}}"#
    );
    let r = gw
        .post(
            "/cohere/v2/rerank",
            &body,
            &[("authorization", "Bearer client")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["results"][0]["index"], 0, "{v}");
    let seen = cohere.recorder.last().unwrap();
    assert_eq!(seen.path, "/v2/rerank");
    assert_eq!(seen.header("authorization"), Some("Bearer COHERE_API_KEY"));
    assert_eq!(seen.body, body.as_bytes());
    let rec = &records(&gw, 1).await[0];
    assert_eq!(rec["endpoint"], "cohere_rerank", "{rec}");
    assert_eq!(rec["input_tokens"], v["meta"]["tokens"]["input_tokens"]);
    // The gateway's own refusal on this path is Cohere-shaped.
    let r = gw
        .post(
            "/cohere/v2/rerank",
            &format!(r#"{{"model":"{MODEL}"}}"#),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.json()["message"].as_str().unwrap().contains("query"),
        "{}",
        r.text
    );
    // OpenAI-style rerank for a Cohere-only model: refused, naming the schema.
    let r = gw.post("/v1/rerank", &body, &[]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("Cohere"), "{}", r.text);
}

/// What `make run` loads (the guide's files and `examples/fireworks-apis.yaml`) against the
/// offline fake Fireworks: Responses on a guide model, Anthropic Messages and rerank on the
/// models that file adds, each reaching Fireworks' path for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_runs_config_serves_the_other_apis_offline() {
    let mut config = crate::harness::examples();
    config.push(root().join("examples/fireworks-apis.yaml"));
    let gw = Gateway::start_with(Setup {
        config,
        ..Setup::default()
    })
    .await;
    for (path, body, upstream, check) in [
        (
            "/v1/responses",
            r#"{"model":"qwen-instruct","input":"Hello!"}"#,
            "/inference/v1/responses",
            "output",
        ),
        (
            "/v1/messages",
            r#"{"model":"qwen-claude","max_tokens":32,"messages":[{"role":"user","content":"Hello!"}]}"#,
            "/inference/v1/messages",
            "content",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"qwen-claude","messages":[{"role":"user","content":"Hello!"}]}"#,
            "/inference/v1/chat/completions",
            "choices",
        ),
        (
            "/v1/rerank",
            r#"{"model":"qwen-rerank","query":"tea","documents":["coffee","tea"]}"#,
            "/inference/v1/rerank",
            "data",
        ),
    ] {
        let r = gw.post(path, body, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert!(r.json()[check].is_array(), "{path}: {}", r.text);
        assert_eq!(gw.fireworks().last().unwrap().path, upstream);
    }
    let models = gw.get("/v1/models").await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"qwen-claude") && ids.contains(&"qwen-rerank"),
        "{ids:?}"
    );
}
