//! Token usage end to end through real Envoy: streams with and without include_usage, gzip
//! bodies, provider errors; checked in the access log, the usage export API and the JSONL log.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ai_extproc::upstreams::FAKE_FIREWORKS_FAULT_HEADER as FAULT;
use ai_extproc::upstreams::FAKE_FIREWORKS_STREAM_USAGE_HEADER as STREAM_USAGE;
use ai_extproc::usage::pb::usage_export_client::UsageExportClient;
use ai_extproc::usage::pb::{SubscribeRequest, UsageRecord};
use serde_json::Value;
use tonic::Streaming;

use crate::harness::{root, Gateway, Setup, GUIDE_KEY};

async fn start() -> (Gateway, Streaming<UsageRecord>) {
    start_with(Setup {
        stream_interval: Duration::from_millis(2),
        ..Setup::default()
    })
    .await
}

async fn start_with(setup: Setup) -> (Gateway, Streaming<UsageRecord>) {
    let gw = Gateway::start_with(Setup {
        processor_tcp: true,
        ..setup
    })
    .await;
    let addr = gw.inner.processor_addr.expect("tcp processor");
    let mut client = UsageExportClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let records = client
        .subscribe(SubscribeRequest {})
        .await
        .unwrap()
        .into_inner();
    // The subscription is registered when the call returns; records from now on reach it.
    (gw, records)
}

async fn next(records: &mut Streaming<UsageRecord>) -> UsageRecord {
    tokio::time::timeout(Duration::from_secs(5), records.message())
        .await
        .expect("a usage record in time")
        .unwrap()
        .expect("stream open")
}

fn sse_usage(text: &str) -> Value {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["usage"].is_object())
        .last()
        .map(|v| v["usage"].clone())
        .expect("a usage chunk")
}

/// The chunks of an SSE body, as JSON (`[DONE]` and comments left out).
fn chunks(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .collect()
}

#[tokio::test]
async fn fireworks_reports_stream_usage_unasked_so_nothing_is_added() {
    let (gw, mut records) = start().await;
    let body = r#"{"model":"qwen-thinking","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#;
    let r = gw
        .post("/v1/chat/completions", body, &[("x-user-id", "user123")])
        .await;
    assert_eq!(r.status, 200);
    let seen = gw.fireworks().last().unwrap();
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        body.replace(
            "\"qwen-thinking\"",
            "\"accounts/fireworks/models/qwen3-vl-30b-a3b-thinking\""
        ),
        "only the model changes: Fireworks sends usage without stream_options"
    );
    // Fireworks' usage rides on the finishing chunk; every chunk has a choice.
    assert!(chunks(&r.text).iter().all(|c| c["choices"][0].is_object()));
    let usage = sse_usage(&r.text);

    let rec = next(&mut records).await;
    assert_eq!(rec.requested_model, "qwen-thinking");
    assert_eq!(
        rec.provider_model,
        "accounts/fireworks/models/qwen3-vl-30b-a3b-thinking"
    );
    assert_eq!(rec.user, "user123");
    assert_eq!(rec.route, "default/envoy-ai-gateway-fireworks");
    assert_eq!(rec.backend, "default/envoy-ai-gateway-fireworks");
    assert!(rec.stream && rec.usage_seen);
    assert_eq!(rec.status, 200);
    assert_eq!(rec.endpoint, "chat");
    assert_eq!(rec.input_tokens, usage["prompt_tokens"].as_u64().unwrap());
    assert_eq!(
        rec.output_tokens,
        usage["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(rec.total_tokens, usage["total_tokens"].as_u64().unwrap());
    assert_eq!(
        rec.reasoning_tokens,
        usage["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(rec.costs["total_tokens"], rec.total_tokens as f64);
    assert!(!rec.request_id.is_empty());
    assert!(rec.time_to_first_token_ms > 0.0 && rec.time_to_first_token_ms <= rec.duration_ms);

    let entries = gw.access_log_entries(1).await;
    let e = &entries[0];
    assert_eq!(e["total_tokens"], usage["total_tokens"]);
    assert_eq!(e["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(
        e["response_model"],
        "accounts/fireworks/models/qwen3-vl-30b-a3b-thinking"
    );
    assert!(e["time_to_first_token_ms"].as_f64().unwrap() > 0.0);
    assert!(e["inter_token_latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(e["request_id"], rec.request_id.as_str());

    // The JSON-lines log has the same record.
    let log = gw.inner_usage_log();
    let line: Value = serde_json::from_str(log.lines().last().expect("a usage line")).unwrap();
    assert_eq!(line["total_tokens"], rec.total_tokens);
    assert_eq!(line["costs"]["total_tokens"], rec.total_tokens as f64);
    assert_eq!(line["user"], "user123");
}

/// An OpenAI-semantics provider (the test upstream) reports stream usage only when asked: the
/// gateway asks, reads it, and the client that did not ask (or said `false`) never sees the
/// extra `"choices": []` chunk, which would break `chunk.choices[0]`. A client that asked gets it.
#[tokio::test]
async fn usage_asked_for_the_gateway_never_reaches_a_client_that_did_not_ask() {
    let (gw, mut records) = start().await;
    let stream_options = [
        ("", false),
        (r#""stream_options":{"include_usage":false},"#, false),
        (r#""stream_options":{"include_usage":true},"#, true),
    ];
    for (options, asked) in stream_options {
        let body = format!(
            r#"{{"model":"some-cool-self-hosted-model",{options}"stream":true,"messages":[{{"role":"user","content":"Hi"}}]}}"#
        );
        let r = gw.post("/v1/chat/completions", &body, &[]).await;
        assert_eq!(r.status, 200, "{options}");
        let seen = gw.test_upstream().last().unwrap();
        let sent = seen.json().unwrap();
        assert_eq!(sent["stream_options"]["include_usage"], true, "{options}");
        assert_eq!(sent["messages"][0]["content"], "Hi", "the rest as sent");
        if !asked {
            // The chunk is taken out of plain text: the gateway asked for no compression.
            assert_eq!(seen.header("accept-encoding"), Some("identity"));
        }
        let got = chunks(&r.text);
        let usage_chunks = got
            .iter()
            .filter(|c| c["choices"] == serde_json::json!([]))
            .count();
        assert_eq!(usage_chunks, usize::from(asked), "{options}: {}", r.text);
        if !asked {
            assert!(
                got.iter().all(|c| c["choices"][0].is_object()),
                "{}",
                r.text
            );
        }
        assert!(r.text.trim_end().ends_with("data: [DONE]"));
        let rec = next(&mut records).await;
        assert!(rec.usage_seen, "{options}: the gateway read the usage");
        assert_eq!((rec.input_tokens, rec.output_tokens), (5, 8), "{options}");
    }
}

#[tokio::test]
async fn streaming_with_include_usage_and_fireworks_style_usage() {
    let (gw, mut records) = start().await;
    let body = r#"{"model":"qwen-instruct","stream":true,"stream_options":{"include_usage":true},"prompt":"Hello!"}"#;
    let r = gw.post("/v1/completions", body, &[]).await;
    assert_eq!(r.status, 200);
    let seen = gw.fireworks().last().unwrap();
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        body.replace(
            "\"qwen-instruct\"",
            "\"accounts/fireworks/models/qwen3-vl-235b-a22b-instruct\""
        ),
        "already asked: only the model changes"
    );
    let usage = sse_usage(&r.text);
    let rec = next(&mut records).await;
    assert_eq!(rec.endpoint, "completions");
    assert_eq!(
        rec.output_tokens,
        usage["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(rec.output_tokens, 16);

    // The basic route has no costs: nothing is injected, Fireworks-style usage is still read.
    let r = gw
        .post("/v1/chat/completions", r#"{"model":"some-cool-self-hosted-model","messages":[{"role":"user","content":"Hi"}]}"#, &[])
        .await;
    assert_eq!(r.status, 200);
    let rec = next(&mut records).await;
    assert_eq!(
        (rec.input_tokens, rec.output_tokens, rec.total_tokens),
        (5, 14, 19)
    );
    assert!(rec.costs.is_empty());
}

#[tokio::test]
async fn events_reach_the_client_as_they_are_sent() {
    let gw = Gateway::start_with(Setup {
        stream_interval: Duration::from_millis(40),
        ..Setup::default()
    })
    .await;
    let mut resp = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .header("content-type", "application/json")
        .body(r#"{"model":"qwen-instruct","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#)
        .send()
        .await
        .unwrap();
    let start = Instant::now();
    let mut arrivals = Vec::new();
    let mut text = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        arrivals.push(start.elapsed());
        text.extend_from_slice(&chunk);
    }
    let events = String::from_utf8(text).unwrap().matches("data: ").count();
    assert!(events > 10);
    // Nothing is held back: the chunks arrive spread over the stream, not all at its end.
    assert!(
        arrivals.len() >= events / 2,
        "{} chunks for {events} events",
        arrivals.len()
    );
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(
        spread >= Duration::from_millis(40 * (events as u64 - 3)),
        "arrivals {arrivals:?}"
    );
}

#[tokio::test]
async fn gzip_bodies_are_read_and_passed_as_sent() {
    let (gw, mut records) = start().await;
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .body(r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let gz = r.bytes().await.unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .unwrap();
    let v: Value = serde_json::from_str(&json).unwrap();
    let rec = next(&mut records).await;
    assert_eq!(
        rec.total_tokens,
        v["usage"]["total_tokens"].as_u64().unwrap()
    );
    let entries = gw.access_log_entries(1).await;
    assert_eq!(entries[0]["total_tokens"], v["usage"]["total_tokens"]);
}

/// Provider errors pass as sent (or as OpenAI JSON when they are not JSON) and are never
/// charged, even when their bodies carry a `usage` object (the fake's do).
#[tokio::test]
async fn provider_errors_pass_through_uncharged() {
    let (gw, mut records) = start().await;
    let body = r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#;

    for (fault, status) in [("429", 429), ("401", 401), ("503", 503)] {
        let r = gw
            .post("/v1/chat/completions", body, &[(FAULT, fault)])
            .await;
        assert_eq!(r.status, status);
        let v = r.json();
        assert!(v["usage"].is_object(), "the body carries usage: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
        let rec = next(&mut records).await;
        assert_eq!(
            (rec.status, rec.usage_seen, rec.total_tokens),
            (u32::from(status), false, 0),
            "{fault}"
        );
        assert!(rec.costs.is_empty(), "{fault}");
    }
    assert_eq!(
        gw.post("/v1/chat/completions", body, &[(FAULT, "429")])
            .await
            .json()["error"]["message"],
        "rate limit exceeded, please try again later"
    );
    let _ = next(&mut records).await;

    // A non-JSON error becomes OpenAI-style JSON with the same status.
    let r = gw
        .post("/v1/chat/completions", body, &[(FAULT, "500")])
        .await;
    assert_eq!(r.status, 500);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v = r.json();
    assert_eq!(v["error"]["type"], "server_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Internal Server Error"));
    let rec = next(&mut records).await;
    assert_eq!((rec.status, rec.usage_seen), (500, false));

    // Error pages that quote the request's headers (the key among them) reach the client
    // without the key: an HTML page rewritten, a JSON one passed with the key masked.
    for (fault, status) in [("echo", 500), ("echo-json", 400)] {
        let r = gw
            .post("/v1/chat/completions", body, &[(FAULT, fault)])
            .await;
        assert_eq!(r.status, status, "{fault}");
        assert!(!r.text.contains(GUIDE_KEY), "{fault}: {}", r.text);
        assert!(
            r.text.contains("authorization: Bearer ***"),
            "{fault}: {}",
            r.text
        );
        assert_eq!(
            r.header("content-length"),
            Some(r.text.len().to_string().as_str())
        );
        let v = r.json();
        assert!(v["error"]["message"].is_string(), "{v}");
        let rec = next(&mut records).await;
        assert_eq!(
            (rec.status, rec.usage_seen),
            (u32::from(status), false),
            "{fault}"
        );
    }

    let entries = gw.access_log_entries(7).await;
    assert_eq!(entries.len(), 7);
    for e in &entries {
        assert!(
            e["total_tokens"].is_null() && e["prompt_tokens"].is_null(),
            "no usage is charged for errors: {e}"
        );
    }
}

/// A copy of `examples/` with `fireworks.yaml` changed by `edit` (asserted to change it, unless
/// it is `None`).
fn examples_with(dir: &Path, edit: Option<&dyn Fn(&str) -> String>) -> Vec<PathBuf> {
    let basic = dir.join("basic.yaml");
    let fireworks = dir.join("fireworks.yaml");
    std::fs::copy(root().join("examples/basic.yaml"), &basic).unwrap();
    let original = std::fs::read_to_string(root().join("examples/fireworks.yaml")).unwrap();
    let edited = edit.map_or(original.clone(), |edit| edit(&original));
    assert!(
        edit.is_none() || edited != original,
        "the edit changes the config"
    );
    std::fs::write(&fireworks, edited).unwrap();
    vec![basic, fireworks]
}

/// A Fireworks backend annotated as reporting stream usage only on request (OpenAI's
/// semantics), served by a fake that does exactly that: completions and chat streams get
/// `include_usage` injected, the client that did not ask never sees the usage-only chunk, and
/// the usage is recorded and charged.
#[tokio::test]
async fn include_usage_is_injected_for_completions_and_chat_when_the_backend_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = examples_with(
        dir.path(),
        Some(&|yaml: &str| {
            yaml.replace(
                "kind: AIServiceBackend\nmetadata:\n",
                "kind: AIServiceBackend\nmetadata:\n  annotations:\n    ai-extproc.io/stream-usage: on-request\n",
            )
        }),
    );
    let (gw, mut records) = start_with(Setup {
        config,
        ..Setup::default()
    })
    .await;
    let openai_like = [(STREAM_USAGE, "on-request")];
    for (path, body, output_tokens) in [
        (
            "/v1/completions",
            r#"{"model":"qwen-instruct","stream":true,"prompt":"Hello!"}"#,
            16,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"qwen-instruct","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#,
            0,
        ),
    ] {
        let r = gw.post(path, body, &openai_like).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        let seen = gw.fireworks().last().unwrap();
        let sent = seen.json().unwrap();
        assert_eq!(sent["stream_options"]["include_usage"], true, "{path}");
        assert_eq!(seen.header("accept-encoding"), Some("identity"), "{path}");
        let got = chunks(&r.text);
        assert!(
            got.iter()
                .all(|c| c["choices"][0].is_object() && c["usage"].is_null()),
            "{path}: the usage chunk is not the client's: {}",
            r.text
        );
        assert!(r.text.trim_end().ends_with("data: [DONE]"), "{path}");
        let rec = next(&mut records).await;
        assert!(rec.usage_seen, "{path}: the gateway read the usage");
        assert!(rec.output_tokens > 0, "{path}");
        if output_tokens > 0 {
            assert_eq!(rec.output_tokens, output_tokens, "{path}");
        }
        assert_eq!(rec.costs["total_tokens"], rec.total_tokens as f64, "{path}");
    }

    // A client that asked gets the chunk, and the request passes with only its model changed.
    let body = r#"{"model":"qwen-instruct","stream":true,"stream_options":{"include_usage":true},"prompt":"Hello!"}"#;
    let r = gw.post("/v1/completions", body, &openai_like).await;
    let usage = sse_usage(&r.text);
    assert_eq!(usage["completion_tokens"], 16);
    let seen = gw.fireworks().last().unwrap();
    assert_ne!(seen.header("accept-encoding"), Some("identity"));
    let rec = next(&mut records).await;
    assert_eq!(rec.output_tokens, 16);
}

/// Kubernetes mounts a ConfigMap as a directory of symlinks into `..data`, itself a symlink
/// swapped atomically on every update. The swap is seen; a stream in flight keeps the config
/// it started with; a client that leaves mid-stream still gets a usage record.
#[tokio::test]
async fn a_configmap_swap_is_seen_streams_keep_their_snapshot_and_leavers_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("config");
    std::fs::create_dir(&mount).unwrap();
    let version = |n: u32, edit: Option<&dyn Fn(&str) -> String>| {
        let data = mount.join(format!("..2026_11_25_v{n}"));
        std::fs::create_dir(&data).unwrap();
        examples_with(&data, edit);
        let tmp = mount.join("..data_tmp");
        std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, mount.join("..data")).unwrap();
    };
    let doubled = |yaml: &str| {
        yaml.replace(
            "    - metadataKey: total_tokens\n      type: TotalToken\n",
            "    - metadataKey: total_tokens\n      type: CEL\n      cel: \"total_tokens * uint(2)\"\n",
        )
    };
    version(1, None);
    for file in ["basic.yaml", "fireworks.yaml"] {
        std::os::unix::fs::symlink(Path::new("..data").join(file), mount.join(file)).unwrap();
    }
    let (gw, mut records) = start_with(Setup {
        config: vec![mount.clone()],
        reload_interval: Some(Duration::from_millis(100)),
        stream_interval: Duration::from_millis(150),
        ..Setup::default()
    })
    .await;
    let handle = gw.inner.config.clone();
    assert_eq!(handle.generation(), 1);
    let open = |body: &'static str, fault: Option<&'static str>| {
        let mut req = gw
            .http
            .post(format!("{}/v1/chat/completions", gw.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(f) = fault {
            req = req.header(FAULT, f);
        }
        req.send()
    };
    let chat = r#"{"model":"qwen-instruct","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#;
    let mut kept = open(chat, None).await.unwrap();
    let mut leaver = open(chat, Some("slow-stream")).await.unwrap();
    let id = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_string();
    let (kept_id, leaver_id) = (id(&kept), id(&leaver));
    assert!(kept.chunk().await.unwrap().is_some());
    assert!(leaver.chunk().await.unwrap().is_some());

    // The update: the total_tokens cost doubles. Only the processor's config changes.
    version(2, Some(&doubled));
    for _ in 0..100 {
        if handle.generation() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handle.generation(), 2, "the symlink swap was seen");
    assert_eq!(*gw.inner.envoy_epoch.borrow(), 0, "no Envoy restart");

    // The client of the slow stream leaves; its record comes with what was seen.
    drop(leaver);
    let rec = next(&mut records).await;
    assert_eq!(rec.request_id, leaver_id);
    assert_eq!((rec.status, rec.stream, rec.usage_seen), (200, true, false));
    assert_eq!(rec.route, "default/envoy-ai-gateway-fireworks");
    assert!(rec.duration_ms > 0.0 && rec.time_to_first_token_ms > 0.0);

    // The stream that began before the swap ends charged by the config it began with.
    let mut text = Vec::new();
    while let Some(c) = kept.chunk().await.unwrap() {
        text.extend_from_slice(&c);
    }
    let usage = sse_usage(std::str::from_utf8(&text).unwrap());
    let rec = next(&mut records).await;
    assert_eq!(rec.request_id, kept_id);
    assert_eq!(rec.total_tokens, usage["total_tokens"].as_u64().unwrap());
    assert_eq!(rec.costs["total_tokens"], rec.total_tokens as f64);

    // A request after the swap is charged by the new one.
    let r = gw.post("/v1/chat/completions", chat, &[]).await;
    assert_eq!(r.status, 200);
    let rec = next(&mut records).await;
    assert_eq!(rec.costs["total_tokens"], 2.0 * rec.total_tokens as f64);
}
