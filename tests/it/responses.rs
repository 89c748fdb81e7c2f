//! The OpenAI Responses API and model lookup (`GET /v1/models/{id}`) through real Envoy 1.40 and
//! the fake Fireworks: routed by the body's model like chat, the model rewritten and every other
//! byte kept, usage (JSON and typed SSE events) in the usage record and the access log, and the
//! real `openai` SDK's `responses.create` (streamed and not) and `models.retrieve`.

use serde_json::Value;

use crate::budgets::records;
use crate::harness::{Gateway, GUIDE_KEY};
use crate::sdk::python;

const PROVIDER_MODEL: &str = "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_routed_metered_and_served_to_the_openai_sdk() {
    let gw = Gateway::start().await;
    // A body of our own: only the model changes on the way to the provider.
    let body = r#"{"model":"qwen-instruct","input":[{"role":"user","content":"Hello!"}],"instructions":"Be brief.","max_output_tokens":64,"store":false}"#;
    let r = gw
        .post("/v1/responses", body, &[("x-user-id", "ivy")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let answer = r.json();
    assert_eq!(answer["object"], "response");
    let seen = gw.fireworks().last().unwrap();
    assert_eq!(seen.path, "/inference/v1/responses");
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        body.replace("\"qwen-instruct\"", &format!("\"{PROVIDER_MODEL}\""))
    );
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {GUIDE_KEY}").as_str())
    );
    let usage = &answer["usage"];
    let rec = &records(&gw, 1).await[0];
    assert_eq!(rec["endpoint"], "responses", "{rec}");
    assert_eq!(rec["user"], "ivy");
    assert_eq!(rec["provider_model"], PROVIDER_MODEL);
    assert_eq!(rec["input_tokens"], usage["input_tokens"], "{rec}");
    assert_eq!(rec["output_tokens"], usage["output_tokens"]);
    assert_eq!(rec["total_tokens"], usage["total_tokens"]);
    assert_eq!(
        rec["costs"]["total_tokens"].as_f64(),
        usage["total_tokens"].as_f64()
    );
    let entries = gw.access_log_entries(1).await;
    assert_eq!(entries[0]["total_tokens"], usage["total_tokens"]);
    assert_eq!(entries[0]["response_model"], PROVIDER_MODEL);

    // Bad input in OpenAI's shape, and nothing reaches the provider.
    let seen_before = gw.fireworks().len();
    let r = gw
        .post(
            "/v1/responses",
            r#"{"model":"qwen-instruct","input":5}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = gw
        .post("/v1/responses", r#"{"model":"nope","input":"Hi"}"#, &[])
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    let r = gw.get("/v1/responses").await;
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(gw.fireworks().len(), seen_before);

    // Model lookup: configured ids (with slashes, raw or encoded) and 404 otherwise.
    let r = gw.get("/v1/models/qwen-instruct").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["id"], "qwen-instruct");
    let r = gw.get("/v1/models/no%2Fsuch").await;
    assert_eq!(r.status, 404, "{}", r.text);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("no/such"), "{message}");

    // The real SDK: not streamed, streamed (typed events), model lookup.
    let out = python(
        "openai_responses.py",
        &[&gw.base, "qwen-instruct", PROVIDER_MODEL],
    )
    .await;
    let out: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let recs = records(&gw, 3).await;
    let (json_rec, stream_rec) = (&recs[1], &recs[2]);
    assert_eq!(json_rec["stream"], false);
    assert_eq!(stream_rec["stream"], true);
    for (rec, usage) in [
        (json_rec, &out["json_usage"]),
        (stream_rec, &out["stream_usage"]),
    ] {
        assert_eq!(rec["endpoint"], "responses");
        assert_eq!(rec["input_tokens"], usage["input_tokens"], "{rec} {usage}");
        assert_eq!(rec["output_tokens"], usage["output_tokens"]);
        assert_eq!(rec["total_tokens"], usage["total_tokens"]);
        assert_eq!(rec["usage_seen"], true);
    }
    // One token event per streamed piece of text.
    assert!(
        stream_rec["time_to_first_token_ms"].as_f64().unwrap() > 0.0,
        "{stream_rec}"
    );
    assert_eq!(out["model_id"], "qwen-instruct");
}
