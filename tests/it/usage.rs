//! Token usage end to end through real Envoy: streams with and without include_usage, gzip
//! bodies, provider errors; checked in the access log, the usage export API and the JSONL log.

use std::io::Read;
use std::time::{Duration, Instant};

use ai_extproc::upstreams::FAKE_FIREWORKS_FAULT_HEADER as FAULT;
use ai_extproc::usage::pb::usage_export_client::UsageExportClient;
use ai_extproc::usage::pb::{SubscribeRequest, UsageRecord};
use serde_json::Value;
use tonic::Streaming;

use crate::harness::{Gateway, Setup};

async fn start() -> (Gateway, Streaming<UsageRecord>) {
    let gw = Gateway::start_with(Setup {
        processor_tcp: true,
        stream_interval: Duration::from_millis(2),
        ..Setup::default()
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

#[tokio::test]
async fn provider_errors_pass_through_uncharged() {
    let (gw, mut records) = start().await;
    let body = r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#;

    let r = gw
        .post("/v1/chat/completions", body, &[(FAULT, "429")])
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json()["error"]["message"],
        "rate limit exceeded, please try again later"
    );
    let rec = next(&mut records).await;
    assert_eq!(
        (rec.status, rec.usage_seen, rec.total_tokens),
        (429, false, 0)
    );
    assert!(rec.costs.is_empty());

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

    let entries = gw.access_log_entries(2).await;
    assert_eq!(entries.len(), 2);
    for e in &entries {
        assert!(
            e["total_tokens"].is_null(),
            "no usage is charged for errors: {e}"
        );
    }
}
