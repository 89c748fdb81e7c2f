//! Anthropic's Messages API through real Envoy 1.40: a rule holding the guide's Fireworks
//! backend twice, as the OpenAI schema and as the Anthropic schema (Fireworks serves both under
//! `/inference/v1`), so one model answers chat completions and Claude-style clients; the real
//! `anthropic` SDK (streamed and not); what the provider received; usage in the record; errors
//! in Anthropic's envelope; a model whose backends do not speak the API refused, naming both.

use serde_json::Value;

use crate::budgets::records;
use crate::harness::{examples, Gateway, Setup, GUIDE_KEY};
use crate::sdk::python;

const PROVIDER_MODEL: &str = "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct";

const BOTH: &str = r#"
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: fireworks-both, namespace: default}
spec:
  parentRefs: [{name: envoy-ai-gateway-basic, kind: Gateway, group: gateway.networking.k8s.io}]
  llmRequestCosts:
    - {metadataKey: prompt_tokens, type: InputToken}
    - {metadataKey: completion_tokens, type: OutputToken}
    - {metadataKey: total_tokens, type: TotalToken}
  rules:
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: qwen-both}]}]
      backendRefs:
        - {name: envoy-ai-gateway-fireworks, modelNameOverride: accounts/fireworks/models/qwen3-vl-235b-a22b-instruct}
        - {name: envoy-ai-gateway-fireworks-anthropic, modelNameOverride: accounts/fireworks/models/qwen3-vl-235b-a22b-instruct}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: envoy-ai-gateway-fireworks-anthropic, namespace: default}
spec:
  schema: {name: Anthropic, prefix: /inference/v1}
  backendRef: {name: envoy-ai-gateway-fireworks, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: envoy-ai-gateway-fireworks-anthropic-apikey, namespace: default}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: envoy-ai-gateway-fireworks-anthropic}]
  type: APIKey
  apiKey: {secretRef: {name: envoy-ai-gateway-fireworks-apikey, namespace: default}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_model_serves_chat_and_anthropic_messages_through_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let both = dir.path().join("both.yaml");
    std::fs::write(&both, BOTH).unwrap();
    let mut config = examples();
    config.push(both);
    let gw = Gateway::start_with(Setup {
        config,
        ..Setup::default()
    })
    .await;
    let bearer = format!("Bearer {GUIDE_KEY}");

    // Claude-style: on /v1/messages the rule's Anthropic backend serves, the client's key stays
    // behind, only the model changes.
    let body =
        r#"{"model":"qwen-both","max_tokens":64,"messages":[{"role":"user","content":"Hello!"}]}"#;
    let r = gw
        .post(
            "/v1/messages",
            body,
            &[
                ("x-api-key", "sk-ant-client"),
                ("anthropic-version", "2023-06-01"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["type"], "message");
    let seen = gw.fireworks().last().unwrap();
    assert_eq!(seen.path, "/inference/v1/messages");
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        body.replace("\"qwen-both\"", &format!("\"{PROVIDER_MODEL}\""))
    );
    assert_eq!(seen.header("authorization"), Some(bearer.as_str()));
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    let usage = r.json()["usage"].clone();
    let rec = &records(&gw, 1).await[0];
    assert_eq!(rec["endpoint"], "messages", "{rec}");
    assert_eq!(
        rec["backend"],
        "default/envoy-ai-gateway-fireworks-anthropic"
    );
    assert_eq!(rec["input_tokens"], usage["input_tokens"]);
    assert_eq!(rec["output_tokens"], usage["output_tokens"]);
    // The same model on chat completions goes to the OpenAI backend of the rule.
    let chat = r#"{"model":"qwen-both","messages":[{"role":"user","content":"Hello!"}]}"#;
    let r = gw.post("/v1/chat/completions", chat, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        gw.fireworks().last().unwrap().path,
        "/inference/v1/chat/completions"
    );
    // Envoy AI Gateway's path for the same API.
    let r = gw.post("/anthropic/v1/messages", body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Errors on these paths take Anthropic's envelope; nothing reaches the provider.
    let before = gw.fireworks().len();
    let no_max = r#"{"model":"qwen-both","messages":[{"role":"user","content":"Hi"}]}"#;
    let r = gw.post("/v1/messages", no_max, &[]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let e = r.json();
    assert_eq!(
        (&e["type"], &e["error"]["type"]),
        (&Value::from("error"), &Value::from("invalid_request_error")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{e}"
    );
    // A model whose backends speak only OpenAI's API: refused, naming both.
    let openai_only = body.replace("qwen-both", "qwen-instruct");
    let r = gw.post("/v1/messages", &openai_only, &[]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("qwen-instruct")
            && message.contains("OpenAI")
            && message.contains("/v1/messages"),
        "{message}"
    );
    let r = gw
        .post("/v1/messages", &body.replace("qwen-both", "nope"), &[])
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    assert_eq!(gw.fireworks().len(), before);

    // The real SDK.
    let out = python("anthropic_messages.py", &[&gw.base, "qwen-both"]).await;
    let out: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let recs = records(&gw, 5).await;
    let (json_rec, stream_rec) = (&recs[3], &recs[4]);
    for (rec, usage) in [
        (json_rec, &out["json_usage"]),
        (stream_rec, &out["stream_usage"]),
    ] {
        assert_eq!(rec["endpoint"], "messages", "{rec}");
        assert_eq!(rec["input_tokens"], usage["input_tokens"], "{rec} {usage}");
        assert_eq!(rec["output_tokens"], usage["output_tokens"]);
        assert_eq!(rec["usage_seen"], true);
    }
    assert_eq!(stream_rec["stream"], true);
    assert!(!format!("{:?}", gw.fireworks().all()).contains("sk-ant-client"));
}

/// Envoy AI Gateway's `basic/anthropic.yaml`, unchanged (ai-gateway c217da8a5), its Backend
/// pointed at a stand-in for Anthropic's API (`x-api-key` and `anthropic-version` required, a
/// Bearer key refused): Envoy puts the key on as `x-api-key`, the client's never goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ai_gateways_anthropic_example_reaches_anthropic_with_x_api_key() {
    use ai_extproc::envoy::BackendOverride;
    use ai_extproc::upstreams::{self, FireworksOptions, UpstreamKind};
    const MODEL: &str = "claude-sonnet-4-5";
    let dir = tempfile::tempdir().unwrap();
    let anthropic = upstreams::spawn(
        UpstreamKind::Fireworks(FireworksOptions {
            // The example's Secret holds this placeholder.
            api_key: "ANTHROPIC_API_KEY".into(),
            prefix: "/v1".into(),
            host: "api.anthropic.com".into(),
            extra_chat_models: vec![MODEL.into()],
            speaks: upstreams::Speaks::Anthropic,
            ..FireworksOptions::default()
        }),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let ca = dir.path().join("anthropic-ca.pem");
    std::fs::write(&ca, anthropic.ca_pem.clone().unwrap()).unwrap();
    let gw = Gateway::start_with(Setup {
        config: vec![
            crate::harness::root().join("tests/fixtures/ai-gateway-examples/basic/anthropic.yaml")
        ],
        fake: false,
        test_upstream: false,
        overrides: vec![BackendOverride {
            backend: "envoy-ai-gateway-basic-anthropic".into(),
            address: Some(anthropic.addr.into()),
            ca_file: Some(ca),
        }],
        ..Setup::default()
    })
    .await;
    let body = format!(
        r#"{{"model":"{MODEL}","max_tokens":32,"messages":[{{"role":"user","content":"Hello!"}}]}}"#
    );
    let client = [
        ("x-api-key", "sk-ant-client"),
        ("authorization", "Bearer sk-client"),
        ("anthropic-version", "2023-06-01"),
    ];
    let r = gw.post("/anthropic/v1/messages", &body, &client).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = anthropic.recorder.last().unwrap();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.sni.as_deref(), Some("api.anthropic.com"));
    assert_eq!(seen.header("x-api-key"), Some("ANTHROPIC_API_KEY"));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.body, body.as_bytes());
    // The provider's own refusal (no anthropic-version) passes through in its envelope.
    let r = gw
        .post("/v1/messages", &body, &[("x-api-key", "sk-ant-client")])
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    // Chat completions for a model only Anthropic's API serves: refused, naming both.
    let chat = format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"Hi"}}]}}"#);
    let r = gw.post("/v1/chat/completions", &chat, &[]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let e = r.json();
    assert_eq!(e["error"]["code"], "unsupported_api", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Anthropic"),
        "{e}"
    );
    // The Anthropic SDK, streamed and not.
    let out = python("anthropic_messages.py", &[&gw.base, MODEL, "count"]).await;
    assert!(out.contains("json_usage"), "{out}");
    assert!(!format!("{:?}", anthropic.recorder.all()).contains("sk-ant-client"));
    // Counting tokens (the SDK did above) reaches Anthropic's path with the key, and is not
    // usage: its record has no tokens.
    let counts: Vec<_> = anthropic
        .recorder
        .all()
        .into_iter()
        .filter(|r| r.path == "/v1/messages/count_tokens")
        .collect();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].header("x-api-key"), Some("ANTHROPIC_API_KEY"));
    let mut counted = None;
    for _ in 0..200 {
        counted = records(&gw, 1)
            .await
            .into_iter()
            .find(|r| r["endpoint"] == "count_tokens");
        if counted.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let counted = counted.expect("a record of the count");
    assert!(
        counted["input_tokens"].as_u64().unwrap_or(0) == 0,
        "{counted}"
    );
}
