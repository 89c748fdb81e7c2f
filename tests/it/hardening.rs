//! Bad input through real Envoy + ai-extproc: each case's status and OpenAI-style error, and
//! that nothing a client sends can pick a backend, leak into the provider, or pass unchecked.

use std::io::Write;

use ai_extproc::upstreams::FAKE_FIREWORKS_FAULT_HEADER as FAULT;
use serde_json::Value;

use crate::harness::{Gateway, GUIDE_KEY};

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// The error's `code` or `param` to find, for errors.
    expect: Option<&'static str>,
}

/// Paths of the Anthropic API, whose errors take Anthropic's envelope.
fn is_anthropic(path: &str) -> bool {
    path.starts_with("/anthropic/") || path.starts_with("/v1/messages")
}

fn chat(body: &str) -> Vec<u8> {
    body.as_bytes().to_vec()
}

fn case(
    name: &'static str,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    expect: Option<&'static str>,
) -> Case {
    Case {
        name,
        method: "POST",
        path,
        headers: vec![("content-type", "application/json".into())],
        body,
        status,
        expect,
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn cases() -> Vec<Case> {
    const C: &str = "/v1/chat/completions";
    const E: &str = "/v1/embeddings";
    const P: &str = "/v1/completions";
    let ok = r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#;
    let deep = format!(
        r#"{{"model":"qwen-instruct","messages":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_tools = format!(
        r#"{{"model":"qwen-instruct","messages":[{{"role":"user","content":"Hi"}}],"tools":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let long_model = format!(r#"{{"model":"{}","messages":[{{}}]}}"#, "m".repeat(10_000));
    let too_big = format!(
        r#"{{"model":"qwen-instruct","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(17 * 1024 * 1024)
    );
    let vision = format!(
        r#"{{"model":"qwen-thinking","messages":[{{"role":"user","content":[{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{}"}}}}]}}]}}"#,
        "A".repeat(9 * 1024 * 1024)
    );
    let mut v = vec![
        case("not JSON", C, chat("hello"), 400, None),
        case(
            "truncated JSON",
            C,
            chat(r#"{"model":"qwen-instruct","messages":[{"#),
            400,
            None,
        ),
        case("JSON array", C, chat(r#"["qwen-instruct"]"#), 400, None),
        case("JSON string", C, chat(r#""qwen-instruct""#), 400, None),
        case("JSON number", C, chat("42"), 400, None),
        case(
            "model missing",
            C,
            chat(r#"{"messages":[{}]}"#),
            400,
            Some("model"),
        ),
        case(
            "model null",
            C,
            chat(r#"{"model":null,"messages":[{}]}"#),
            400,
            Some("model"),
        ),
        case(
            "model a number",
            C,
            chat(r#"{"model":7,"messages":[{}]}"#),
            400,
            Some("model"),
        ),
        case(
            "model empty",
            C,
            chat(r#"{"model":"","messages":[{}]}"#),
            400,
            Some("model"),
        ),
        case(
            "model 10 KB long",
            C,
            long_model.into_bytes(),
            400,
            Some("model"),
        ),
        case(
            "model with a newline",
            C,
            chat(r#"{"model":"qwen\ninstruct","messages":[{}]}"#),
            400,
            Some("model"),
        ),
        case(
            "messages missing",
            C,
            chat(r#"{"model":"qwen-instruct"}"#),
            400,
            Some("messages"),
        ),
        case(
            "messages a string",
            C,
            chat(r#"{"model":"qwen-instruct","messages":"hi"}"#),
            400,
            Some("messages"),
        ),
        case(
            "messages empty",
            C,
            chat(r#"{"model":"qwen-instruct","messages":[]}"#),
            400,
            Some("messages"),
        ),
        case(
            "embeddings input missing",
            E,
            chat(r#"{"model":"qwen-embed"}"#),
            400,
            Some("input"),
        ),
        case(
            "embeddings input a number",
            E,
            chat(r#"{"model":"qwen-embed","input":3}"#),
            400,
            Some("input"),
        ),
        case(
            "completions prompt missing",
            P,
            chat(r#"{"model":"qwen-instruct"}"#),
            400,
            Some("prompt"),
        ),
        case(
            "completions prompt an object",
            P,
            chat(r#"{"model":"qwen-instruct","prompt":{}}"#),
            400,
            Some("prompt"),
        ),
        case(
            "stream not a boolean",
            C,
            chat(r#"{"model":"qwen-instruct","stream":"yes","messages":[{}]}"#),
            400,
            Some("stream"),
        ),
        case(
            "invalid UTF-8",
            C,
            b"{\"model\":\"qwen-\xff\",\"messages\":[{}]}".to_vec(),
            400,
            None,
        ),
        case("10,000-deep nesting", C, deep.into_bytes(), 400, None),
        case(
            "10,000-deep nesting in a field the gateway does not read (tools)",
            C,
            deep_tools.into_bytes(),
            400,
            None,
        ),
        case(
            "duplicate model keys",
            C,
            chat(r#"{"model":"qwen-instruct","model":"gpt-5","messages":[{}]}"#),
            400,
            None,
        ),
        case(
            "body over the limit",
            C,
            too_big.clone().into_bytes(),
            413,
            Some("request_too_large"),
        ),
        case(
            "messages body over the limit (Envoy's 413 in Anthropic's envelope)",
            "/v1/messages",
            too_big.into_bytes(),
            413,
            Some("request_too_large"),
        ),
        case(
            "messages without max_tokens",
            "/anthropic/v1/messages",
            chat(r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hi"}]}"#),
            400,
            Some("invalid_request_error"),
        ),
        case(
            "count_tokens for an unknown model",
            "/v1/messages/count_tokens",
            chat(r#"{"model":"no-such-model","messages":[{"role":"user","content":"Hi"}]}"#),
            404,
            Some("not_found_error"),
        ),
        case(
            "rerank without documents",
            "/v1/rerank",
            chat(r#"{"model":"qwen-instruct","query":"q"}"#),
            400,
            Some("documents"),
        ),
        case(
            "image generation with a prompt that is not a string",
            "/v1/images/generations",
            chat(r#"{"model":"qwen-instruct","prompt":["a"]}"#),
            400,
            Some("prompt"),
        ),
        case("9 MB vision body", C, vision.into_bytes(), 200, None),
        case(
            "unknown model",
            C,
            chat(r#"{"model":"no-such-model","messages":[{}]}"#),
            404,
            Some("model_not_found"),
        ),
        case(
            "unknown path",
            "/v1/audio/speech",
            chat(ok),
            404,
            Some("unknown_url"),
        ),
        case(
            "POST on /v1/models",
            "/v1/models",
            chat(ok),
            405,
            Some("method_not_allowed"),
        ),
        case("no body", C, Vec::new(), 400, Some("missing_body")),
    ];
    let mut gz = case(
        "gzip request body (decoded)",
        C,
        gzip(ok.as_bytes()),
        200,
        None,
    );
    gz.headers.push(("content-encoding", "gzip".into()));
    v.push(gz);
    let mut zstd = case(
        "unsupported content-encoding",
        C,
        chat(ok),
        415,
        Some("unsupported_encoding"),
    );
    zstd.headers.push(("content-encoding", "zstd".into()));
    v.push(zstd);
    let mut corrupt = case("corrupt gzip body", C, chat(ok), 400, Some("bad_encoding"));
    corrupt.headers.push(("content-encoding", "gzip".into()));
    v.push(corrupt);
    let mut no_ct = case("no content-type (JSON accepted)", C, chat(ok), 200, None);
    no_ct.headers.clear();
    v.push(no_ct);
    let mut text_ct = case(
        "text/plain content-type (JSON accepted)",
        C,
        chat(ok),
        200,
        None,
    );
    text_ct.headers = vec![("content-type", "text/plain".into())];
    v.push(text_ct);
    let mut get = case(
        "GET on a POST endpoint",
        C,
        Vec::new(),
        405,
        Some("method_not_allowed"),
    );
    get.method = "GET";
    v.push(get);
    v
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let gw = Gateway::start().await;
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for c in &cases {
        let mut req = gw
            .http
            .request(c.method.parse().unwrap(), format!("{}{}", gw.base, c.path))
            .body(c.body.clone());
        for (n, v) in &c.headers {
            req = req.header(*n, v);
        }
        // The fake records it: what reached the provider is found by case, not by content.
        req = req.header(CASE_HEADER, c.name);
        let before = gw.fireworks().len();
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap_or("").to_string())
        };
        let ct = header("content-type").unwrap_or_default();
        let allow = header("allow");
        let text = r.text().await.unwrap();
        let mut problem = None;
        if status != c.status {
            problem = Some(format!("status {status}, want {}", c.status));
        } else if c.status >= 400 && is_anthropic(c.path) {
            // Anthropic's envelope; `expect` is the error's type.
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if !ct.starts_with("application/json")
                || v["type"] != "error"
                || !v["error"]["message"].is_string()
                || Some(v["error"]["type"].as_str().unwrap_or("")) != c.expect
            {
                problem = Some(format!(
                    "not Anthropic's error of type {:?} ({ct}): {}",
                    c.expect,
                    &text[..text.len().min(200)]
                ));
            }
            if gw.fireworks().len() != before {
                problem = Some("a refused request reached the provider".into());
            }
        } else if c.status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let err = &v["error"];
            if !ct.starts_with("application/json")
                || !err["message"].is_string()
                || !err["type"].is_string()
            {
                problem = Some(format!(
                    "not an OpenAI error ({ct}): {}",
                    &text[..text.len().min(200)]
                ));
            } else if err["type"] != "invalid_request_error" {
                problem = Some(format!("type {} for a client error: {v}", err["type"]));
            } else if let Some(want) = c.expect {
                if err["code"] != want && err["param"] != want {
                    problem = Some(format!("error names neither code nor param {want:?}: {v}"));
                }
            }
            let want_allow = (c.status == 405).then(|| {
                if c.path == "/v1/models" {
                    "GET, HEAD"
                } else {
                    "POST"
                }
            });
            if allow.as_deref() != want_allow {
                problem = Some(format!("allow {allow:?}, want {want_allow:?}"));
            }
            if gw.fireworks().len() != before {
                problem = Some("a refused request reached the provider".into());
            }
        }
        if let Some(p) = problem {
            failures.push(format!("{}: {p}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // The gzip case reached the provider decoded, with the override applied.
    let gzip_case = gw
        .fireworks()
        .all()
        .into_iter()
        .find(|r| r.header(CASE_HEADER) == Some("gzip request body (decoded)"))
        .expect("the gzip case reached the provider");
    assert_eq!(
        gzip_case.header("content-encoding"),
        None,
        "decoded, so no encoding"
    );
    let v = gzip_case.json().expect("plain JSON");
    assert_eq!(v["messages"][0]["content"], "Hello!");
    assert_eq!(
        v["model"],
        "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"
    );
}

/// A request header naming the case, which the fake records.
const CASE_HEADER: &str = "x-test-case";

/// 60 KB of gzip that inflates to 60 MB, and a body just past the ratio bound.
#[tokio::test]
async fn decompression_bombs_are_refused_early_without_stalling_other_requests() {
    let gw = Gateway::start_with(crate::harness::Setup {
        processor_process: true,
        ..crate::harness::Setup::default()
    })
    .await;
    let ok = r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#;
    let bomb = {
        let mut json =
            br#"{"model":"qwen-instruct","messages":[{"role":"user","content":""#.to_vec();
        json.extend(std::iter::repeat_n(b'a', 60 * 1024 * 1024));
        json.extend(br#""}]}"#);
        gzip(&json)
    };
    assert!(bomb.len() < 100 * 1024, "{} bytes", bomb.len());
    let send_bomb = |bomb: Vec<u8>| {
        gw.http
            .post(format!("{}/v1/chat/completions", gw.base))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(bomb)
            .send()
    };
    let r = send_bomb(bomb.clone()).await.unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_too_large", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("inflates"),
        "{v}"
    );
    assert!(gw.fireworks().is_empty(), "a bomb reached the provider");

    // Eight bombs a second for two seconds, while a client chats: its requests are not held up
    // (they were, by seconds, when bombs inflated in full on the thread answering Envoy).
    let bombs = async {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(125));
        let mut sent = Vec::new();
        for _ in 0..16 {
            tick.tick().await;
            sent.push(tokio::spawn(send_bomb(bomb.clone())));
        }
        for s in sent {
            assert_eq!(s.await.unwrap().unwrap().status(), 413);
        }
    };
    let chats = async {
        let mut slowest = std::time::Duration::ZERO;
        for _ in 0..20 {
            let t = std::time::Instant::now();
            let r = gw.post("/v1/chat/completions", ok, &[]).await;
            assert_eq!(r.status, 200, "{}", r.text);
            slowest = slowest.max(t.elapsed());
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        slowest
    };
    let ((), slowest) = tokio::join!(bombs, chats);
    assert!(
        slowest < std::time::Duration::from_secs(1),
        "a chat took {slowest:?} while bombs were refused"
    );
}

#[tokio::test]
async fn client_headers_cannot_steer_or_leak() {
    let gw = Gateway::start().await;
    let body = r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#;
    let r = gw
        .post(
            "/v1/chat/completions",
            body,
            &[
                ("x-ai-eg-model", "some-cool-self-hosted-model"),
                (
                    "x-ai-eg-backend",
                    "default/envoy-ai-gateway-basic-testupstream",
                ),
                ("x-ai-eg-original-path", "/evil"),
                ("authorization", "Bearer sk-client-secret"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        gw.test_upstream().is_empty(),
        "spoofed headers picked a backend"
    );
    let seen = gw.fireworks().last().unwrap();
    assert_eq!(
        seen.json().unwrap()["model"],
        "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct",
        "the body wins"
    );
    assert_eq!(
        seen.header("x-ai-eg-model"),
        None,
        "the routing header stays inside"
    );
    assert_eq!(seen.header("x-ai-eg-backend"), None);
    assert_eq!(
        seen.header("x-ai-eg-original-path"),
        None,
        "internal headers are stripped"
    );
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {GUIDE_KEY}").as_str())
    );
    assert!(!seen
        .headers
        .iter()
        .any(|(_, v)| v.contains("sk-client-secret")));
}

#[tokio::test]
async fn a_malformed_event_in_a_long_stream_passes_and_usage_is_still_read() {
    let gw = Gateway::start().await;
    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model":"qwen-instruct","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#,
            &[(FAULT, "sse-malformed")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text.matches("data: ").count(),
        102,
        "every event passes, the broken one too"
    );
    assert!(r.text.contains("\"broken\""));
    let entries = gw.access_log_entries(1).await;
    assert_eq!(entries[0]["total_tokens"], 106);
    assert_eq!(entries[0]["completion_tokens"], 99);
}
