//! Every curl of `examples/FIREWORKS-GUIDE.md` and its troubleshooting cases, through real
//! Envoy + ai-extproc + the fake upstreams.

use serde_json::json;

use crate::harness::{Gateway, Setup, GUIDE_KEY};

const INVICTUS: &str = "I am the master of my fate, I am the captain of my soul.";

fn entry_for<'a>(entries: &'a [serde_json::Value], model: &str) -> &'a serde_json::Value {
    entries
        .iter()
        .find(|e| e["model"] == model)
        .unwrap_or_else(|| panic!("no access log entry for {model}: {entries:#?}"))
}

#[tokio::test]
async fn basic_mock_backend() {
    let gw = Gateway::start().await;
    let body = r#"{
    "model": "some-cool-self-hosted-model",
    "messages": [
      {
        "role": "system",
        "content": "Hi."
      }
    ]
  }"#;
    let r = gw
        .post(
            "/v1/chat/completions",
            body,
            &[("authorization", "Bearer client-own-key")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["choices"][0]["message"],
        json!({"role": "assistant", "content": INVICTUS})
    );

    let seen = gw
        .test_upstream()
        .last()
        .expect("test upstream got the request");
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.body,
        body.as_bytes(),
        "no override: the body goes as sent"
    );
    assert_eq!(
        seen.header("authorization"),
        None,
        "the client's key never reaches a backend"
    );
    for internal in ["x-ai-eg-model", "x-ai-eg-backend"] {
        assert_eq!(
            seen.header(internal),
            None,
            "{internal}: the routing headers stay inside the gateway"
        );
    }
    assert!(gw.fireworks().is_empty());
}

#[tokio::test]
async fn qwen_instruct_chat_reaches_fireworks_rewritten() {
    let gw = Gateway::start().await;
    let body = r#"{
    "model": "qwen-instruct",
    "messages": [
      {
        "role": "user",
        "content": "Hello!"
      }
    ]
  }"#;
    let r = gw
        .post(
            "/v1/chat/completions",
            body,
            &[
                ("x-user-id", "user123"),
                ("authorization", "Bearer client-own-key"),
                ("x-ai-eg-model", "gpt-5"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["model"],
        "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"
    );
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with("Hello! 😊"));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let usage = &v["usage"];
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert!(r.header("x-request-id").is_some());

    let seen = gw.fireworks().last().expect("fireworks got the request");
    assert_eq!(
        seen.sni.as_deref(),
        Some("api.fireworks.ai"),
        "TLS with SNI, validated against the test CA"
    );
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/inference/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {GUIDE_KEY}").as_str())
    );
    assert_eq!(seen.header("host"), Some("api.fireworks.ai"));
    assert_eq!(seen.header("x-user-id"), Some("user123"));
    assert_eq!(
        seen.header("x-ai-eg-model"),
        None,
        "the routing header (the body wins over a spoofed one) stays inside"
    );
    let expected = body.replace(
        "\"qwen-instruct\"",
        "\"accounts/fireworks/models/qwen3-vl-235b-a22b-instruct\"",
    );
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        expected,
        "only the model value changes"
    );
    assert_eq!(
        seen.header("content-length"),
        Some(expected.len().to_string().as_str())
    );

    let entries = gw.access_log_entries(1).await;
    let e = entry_for(&entries, "qwen-instruct");
    assert_eq!(e["status"], 200);
    // Neither key is in the logs the gateway writes (access log, usage log).
    let logs = std::fs::read_to_string(&gw.access_log).unwrap() + &gw.inner_usage_log();
    assert!(!logs.contains(GUIDE_KEY) && !logs.contains("client-own-key"));
    assert_eq!(e["route_name"], "default/envoy-ai-gateway-fireworks");
    assert_eq!(e["backend"], "default/envoy-ai-gateway-fireworks");
    assert_eq!(
        e["provider_model"],
        "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"
    );
    assert_eq!(e["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(e["completion_tokens"], usage["completion_tokens"]);
    assert_eq!(e["total_tokens"], usage["total_tokens"]);
}

#[tokio::test]
async fn qwen_thinking_embed_and_completions() {
    let gw = Gateway::start().await;
    let user = [("x-user-id", "user123")];

    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model": "qwen-thinking", "messages": [{"role": "user", "content": "Hello!"}]}"#,
            &user,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let thinking = r.json();
    assert_eq!(
        thinking["model"],
        "accounts/fireworks/models/qwen3-vl-30b-a3b-thinking"
    );
    assert!(!thinking["choices"][0]["message"]["reasoning_content"]
        .as_str()
        .unwrap()
        .is_empty());
    assert!(
        thinking["usage"]["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    let r = gw
        .post(
            "/v1/embeddings",
            r#"{"model": "qwen-embed", "input": "The quick brown fox jumped over the lazy dog"}"#,
            &user,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let embed = r.json();
    assert_eq!(embed["object"], "list");
    assert_eq!(
        embed["model"],
        "accounts/fireworks/models/qwen3-embedding-8b"
    );
    assert_eq!(embed["data"][0]["object"], "embedding");
    assert!(embed["data"][0]["embedding"].as_array().unwrap().len() > 1);
    assert_eq!(
        embed["usage"]["prompt_tokens"],
        embed["usage"]["total_tokens"]
    );
    let seen = gw.fireworks().last().unwrap();
    assert_eq!(seen.path, "/inference/v1/embeddings");
    assert_eq!(
        seen.json().unwrap()["model"],
        "accounts/fireworks/models/qwen3-embedding-8b"
    );

    let r = gw
        .post(
            "/v1/completions",
            r#"{"model": "qwen-instruct", "prompt": "Hello!"}"#,
            &user,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let completion = r.json();
    assert_eq!(completion["object"], "text_completion");
    assert_eq!(
        completion["model"],
        "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert_eq!(completion["usage"]["completion_tokens"], 16);
    assert_eq!(
        gw.fireworks().last().unwrap().path,
        "/inference/v1/completions"
    );

    let entries = gw.access_log_entries(3).await;
    let t = entry_for(&entries, "qwen-thinking");
    assert_eq!(t["total_tokens"], thinking["usage"]["total_tokens"]);
    let e = entry_for(&entries, "qwen-embed");
    assert_eq!(e["prompt_tokens"], embed["usage"]["prompt_tokens"]);
    assert_eq!(e["completion_tokens"], 0);
    assert_eq!(e["total_tokens"], embed["usage"]["total_tokens"]);
    let c = entries
        .iter()
        .find(|e| e["path"] == "/v1/completions")
        .unwrap();
    assert_eq!(c["completion_tokens"], 16);
}

#[tokio::test]
async fn vision_bodies_pass_intact_up_to_nine_megabytes() {
    let gw = Gateway::start().await;
    let body = r#"{
    "model": "qwen-thinking",
    "messages": [
      {
        "role": "user",
        "content": [
          {
            "type": "text",
            "text": "Can you describe this image?"
          },
          {
            "type": "image_url",
            "image_url": {
              "url": "https://images.unsplash.com/photo-1582538885592-e70a5d7ab3d3"
            }
          }
        ]
      }
    ]
  }"#;
    let r = gw
        .post("/v1/chat/completions", body, &[("x-user-id", "user123")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("image"));
    let seen = gw.fireworks().last().unwrap();
    let expected = body.replace(
        "\"qwen-thinking\"",
        "\"accounts/fireworks/models/qwen3-vl-30b-a3b-thinking\"",
    );
    assert_eq!(std::str::from_utf8(&seen.body).unwrap(), expected);

    // A 9 MB base64 image, as vision clients send.
    let image = "A".repeat(9 * 1024 * 1024);
    let big = format!(
        r#"{{"model":"qwen-thinking","messages":[{{"role":"user","content":[{{"type":"text","text":"What is this?"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{image}"}}}}]}}]}}"#
    );
    let r = gw.post("/v1/chat/completions", &big, &[]).await;
    assert_eq!(r.status, 200, "{}", &r.text[..r.text.len().min(500)]);
    let seen = gw.fireworks().last().unwrap();
    let expected = big.replace(
        "\"qwen-thinking\"",
        "\"accounts/fireworks/models/qwen3-vl-30b-a3b-thinking\"",
    );
    assert_eq!(seen.body.len(), expected.len());
    assert!(seen.body == expected.as_bytes());
}

#[tokio::test]
async fn models_are_listed_in_config_order() {
    let gw = Gateway::start().await;
    let r = gw.get("/v1/models").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v = r.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    // The guide's listing predates its gpt-5 rule; every Exact model match is listed.
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
    for m in data {
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "Envoy AI Gateway");
        assert!(m["created"].as_i64().unwrap() > 1_600_000_000);
    }
    assert!(
        gw.fireworks().is_empty() && gw.test_upstream().is_empty(),
        "answered by the processor"
    );
}

#[tokio::test]
async fn troubleshooting_errors() {
    let gw = Gateway::start().await;

    // A model no rule names: the gateway's own 404.
    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model":"qwen-unknown","messages":[{"role":"user","content":"x"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("qwen-unknown"));

    // gpt-5 is routed, but Fireworks has no such model: its 404 passes through unchanged.
    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model":"gpt-5","messages":[{"role":"user","content":"x"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(
        v["error"]["message"],
        "Model not found, inaccessible, and/or not deployed"
    );
    assert_eq!(v["error"]["code"], "NOT_FOUND");
    assert_eq!(
        gw.fireworks().last().unwrap().json().unwrap()["model"],
        "gpt-5"
    );

    // A file:// image: the provider's download error passes through.
    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model":"qwen-thinking","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"file:///etc/passwd"}}]}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("UnsupportedProtocol"));

    // Bad requests never reach a provider.
    let before = gw.fireworks().len();
    for (path, body, status) in [
        ("/v1/chat/completions", "{not json", 400),
        ("/v1/chat/completions", r#"{"model":"qwen-instruct"}"#, 400),
        (
            "/v1/embeddings",
            r#"{"model":"qwen-embed","messages":[]}"#,
            400,
        ),
        ("/v1/completions", r#"["qwen-instruct"]"#, 400),
        (
            "/v1/chat/completion",
            r#"{"model":"qwen-instruct","messages":[{}]}"#,
            404,
        ),
    ] {
        let r = gw.post(path, body, &[]).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.text);
        let v = r.json();
        assert!(v["error"]["message"].is_string(), "{}", r.text);
        assert!(v["error"]["type"].is_string());
    }
    let r = gw.get("/v1/chat/completions").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(gw.fireworks().len(), before);
}

#[tokio::test]
async fn wrong_key_is_the_providers_401() {
    let gw = Gateway::start_with(Setup {
        fake_key: Some("fw_the_real_key".into()),
        ..Setup::default()
    })
    .await;
    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 401);
    let v = r.json();
    assert_eq!(v["error"]["code"], "UNAUTHORIZED");
    assert_eq!(
        v["error"]["message"],
        "The API key you provided is invalid."
    );
    let entries = gw.access_log_entries(1).await;
    assert!(
        entries[0]["prompt_tokens"].is_null(),
        "no usage is charged for errors"
    );
}

#[tokio::test]
async fn missing_prefix_is_the_providers_path_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        std::fs::read_to_string(crate::harness::root().join("examples/fireworks.yaml")).unwrap();
    let without = yaml.replace("    prefix: /inference/v1\n", "");
    assert_ne!(yaml, without);
    let file = dir.path().join("fireworks.yaml");
    std::fs::write(&file, without).unwrap();
    let gw = Gateway::start_with(Setup {
        config: vec![crate::harness::root().join("examples/basic.yaml"), file],
        ..Setup::default()
    })
    .await;
    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "Path not found: /v1/chat/completions", "code": "NOT_FOUND"}})
    );
}

#[tokio::test]
async fn streams_pass_through() {
    let gw = Gateway::start_with(Setup {
        stream_interval: std::time::Duration::from_millis(5),
        ..Setup::default()
    })
    .await;
    let r = gw
        .post("/v1/chat/completions", r#"{"model":"qwen-thinking","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#, &[])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events: Vec<&str> = r.text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.len() > 5);
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let content: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "Hello! How can I help you today?");
}

/// The guide against the real api.fireworks.ai: `make test-live` with `FIREWORKS_API_KEY` set
/// (never in CI: the machines are offline). Without a key it fails rather than pass unchecked.
#[tokio::test]
#[ignore = "calls api.fireworks.ai: make test-live"]
async fn live_fireworks_when_a_key_is_set() {
    assert!(
        std::env::var("FIREWORKS_API_KEY").is_ok_and(|k| !k.is_empty()),
        "set FIREWORKS_API_KEY to run the live test"
    );
    // What `make run` loads with the key set.
    let mut config = crate::harness::examples();
    config.push(crate::harness::root().join("examples/fireworks-apis.yaml"));
    let gw = Gateway::start_with(Setup {
        config,
        fake: false,
        secret_env: vec![(
            "envoy-ai-gateway-fireworks-apikey".into(),
            "FIREWORKS_API_KEY".into(),
        )],
        ..Setup::default()
    })
    .await;
    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["model"],
        "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"
    );
    let r = gw
        .post(
            "/v1/embeddings",
            r#"{"model":"qwen-embed","input":"The quick brown fox"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let entries = gw.access_log_entries(2).await;
    assert_eq!(
        entries.len(),
        2,
        "one access log entry per request: {entries:#?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["total_tokens"].as_u64().unwrap_or(0) > 0),
        "{entries:#?}"
    );
    // The other APIs `make run` serves (examples/fireworks-apis.yaml), each metered.
    for (path, body) in [
        (
            "/v1/responses",
            r#"{"model":"qwen-instruct","input":"Hello!","max_output_tokens":16}"#,
        ),
        (
            "/v1/messages",
            r#"{"model":"qwen-claude","max_tokens":16,"messages":[{"role":"user","content":"Hello!"}]}"#,
        ),
        (
            "/v1/rerank",
            r#"{"model":"qwen-rerank","query":"tea","documents":["coffee","green tea"]}"#,
        ),
    ] {
        let r = gw.post(path, body, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    let entries = gw.access_log_entries(5).await;
    assert!(
        entries[2..]
            .iter()
            .all(|e| e["prompt_tokens"].as_u64().unwrap_or(0) > 0),
        "{entries:#?}"
    );
}
