use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::{load, load_str, CompileOptions, Config};
use crate::contract::BACKEND_HEADER;
use crate::llm::{Chat, Messages};

fn config() -> Arc<Config> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let options = CompileOptions {
        now: 1,
        ..CompileOptions::default()
    };
    Arc::new(
        load(
            &[root.join("basic.yaml"), root.join("fireworks.yaml")],
            &options,
        )
        .unwrap(),
    )
}

fn post(path: &str) -> Headers {
    Headers::from([
        (":method", "POST"),
        (":path", path),
        ("authorization", "Bearer client"),
    ])
}

fn cont(reply: Reply) -> Continue {
    match reply {
        Reply::Continue(c) => c,
        Reply::Immediate(i) => panic!(
            "immediate {} {}",
            i.status,
            String::from_utf8_lossy(&i.body)
        ),
        Reply::Admit => panic!("an admission (no budgets are configured here)"),
    }
}

fn immediate(reply: Reply) -> (u16, serde_json::Value) {
    match reply {
        Reply::Immediate(i) => (i.status, serde_json::from_slice(&i.body).unwrap()),
        Reply::Continue(c) => panic!("continue {c:?}"),
        Reply::Admit => panic!("an admission"),
    }
}

fn header<'a>(c: &'a Continue, name: &str) -> Option<&'a str> {
    c.set_headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn chat_to_fireworks_is_rewritten() {
    let mut s = Stream::new(config());
    assert_eq!(
        cont(
            s.on_request_headers(post("/v1/chat/completions?x=1"), false)
                .unwrap()
        ),
        Continue::default()
    );
    let body = r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#;
    let c = cont(s.on_request_body(Bytes::from(body), true).unwrap());
    assert!(c.clear_route_cache);
    assert_eq!(header(&c, "x-ai-eg-model"), Some("qwen-instruct"));
    assert_eq!(
        header(&c, ":path"),
        Some("/inference/v1/chat/completions?x=1")
    );
    assert_eq!(
        header(&c, "authorization"),
        Some("Bearer fw_YOUR_FIREWORKS_API_KEY_HERE")
    );
    assert_eq!(
        header(&c, BACKEND_HEADER),
        Some("default/envoy-ai-gateway-fireworks")
    );
    let new_body = c.body.clone().unwrap();
    assert_eq!(
        new_body,
        body.replace(
            "qwen-instruct",
            "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"
        )
    );
    assert_eq!(
        header(&c, "content-length"),
        Some(new_body.len().to_string().as_str())
    );
    assert!(c.metadata.contains(&(
        "route_name".into(),
        MetaValue::Str("default/envoy-ai-gateway-fireworks".into())
    )));

    let resp = Headers::from([
        (":status", "200"),
        ("content-type", "application/json; charset=utf-8"),
    ]);
    assert_eq!(
        cont(s.on_response_headers(resp, false).unwrap()).response_body_mode,
        Some(BodyMode::Buffered)
    );
    let usage = r#"{"usage":{"prompt_tokens":10,"total_tokens":46,"completion_tokens":36}}"#;
    let c = cont(s.on_response_body(Bytes::from(usage), true).unwrap());
    assert_eq!(
        c.metadata,
        vec![
            ("prompt_tokens".into(), MetaValue::Num(10.0)),
            ("completion_tokens".into(), MetaValue::Num(36.0)),
            ("total_tokens".into(), MetaValue::Num(46.0)),
        ]
    );
    assert!(s.on_response_body(Bytes::new(), true).is_err());
}

#[test]
fn no_override_keeps_the_body_and_basic_drops_client_auth() {
    let mut s = Stream::new(config());
    cont(
        s.on_request_headers(post("/v1/chat/completions"), false)
            .unwrap(),
    );
    let c = cont(
        s.on_request_body(
            Bytes::from(r#"{"model":"some-cool-self-hosted-model","messages":[{}]}"#),
            true,
        )
        .unwrap(),
    );
    assert_eq!(c.body, None);
    assert_eq!(header(&c, "content-length"), None);
    assert_eq!(header(&c, ":path"), Some("/v1/chat/completions"));
    assert_eq!(c.remove_headers, ["authorization", "x-api-key", "api-key"]);
    // Usage is read for the record even without costs; no cost metadata is written.
    let resp = Headers::from([(":status", "200"), ("content-type", "application/json")]);
    assert_eq!(
        cont(s.on_response_headers(resp, false).unwrap()).response_body_mode,
        Some(BodyMode::Buffered)
    );
    let c = cont(
        s.on_response_body(
            Bytes::from(r#"{"model":"x","usage":{"prompt_tokens":1}}"#),
            true,
        )
        .unwrap(),
    );
    assert_eq!(
        c.metadata,
        vec![("response_model".into(), MetaValue::Str("x".into()))]
    );
}

#[test]
fn response_body_modes() {
    for (status, ct, enc, mode) in [
        ("200", "text/event-stream", None, BodyMode::Streamed),
        (
            "200",
            "text/event-stream; charset=utf-8",
            Some("gzip"),
            BodyMode::Streamed,
        ),
        ("200", "application/json", Some("gzip"), BodyMode::Buffered),
        ("429", "application/json", None, BodyMode::Buffered),
        ("500", "text/plain", None, BodyMode::Buffered),
        ("503", "text/html", Some("br"), BodyMode::Buffered),
        ("200", "application/octet-stream", None, BodyMode::None),
    ] {
        let mut s = Stream::new(config());
        cont(
            s.on_request_headers(post("/v1/completions"), false)
                .unwrap(),
        );
        cont(
            s.on_request_body(
                Bytes::from(r#"{"model":"qwen-instruct","prompt":"Hello!"}"#),
                true,
            )
            .unwrap(),
        );
        let mut h = vec![
            (":status".to_string(), status.to_string()),
            ("content-type".into(), ct.into()),
        ];
        if let Some(e) = enc {
            h.push(("content-encoding".into(), e.into()));
        }
        let got = cont(s.on_response_headers(Headers::new(h), false).unwrap()).response_body_mode;
        assert_eq!(got, Some(mode), "{status} {ct} {enc:?}");
    }
}

#[test]
fn client_errors() {
    let run = |h: Headers, eos: bool, body: Option<&str>| {
        let mut s = Stream::new(config());
        let r = s.on_request_headers(h, eos).unwrap();
        match body {
            None => immediate(r),
            Some(b) => {
                cont(r);
                immediate(s.on_request_body(Bytes::from(b.to_string()), true).unwrap())
            }
        }
    };
    let (st, v) = run(
        post("/v1/chat/completions"),
        false,
        Some(r#"{"model":"nope","messages":[{}]}"#),
    );
    assert_eq!(st, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("`nope`"));
    let (st, v) = run(
        post("/v1/embeddings"),
        false,
        Some(r#"{"model":"qwen-embed"}"#),
    );
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("input")));
    let (st, v) = run(post("/v1/chat/completions"), false, Some("{"));
    assert_eq!(
        (st, v["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    let (st, v) = run(post("/v1/chat/completion"), false, None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("unknown_url"))
    );
    let (st, _) = run(
        Headers::from([(":method", "GET"), (":path", "/v1/chat/completions")]),
        true,
        None,
    );
    assert_eq!(st, 405);
    let (st, v) = run(post("/v1/chat/completions"), true, None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("missing_body"))
    );
}

#[test]
fn models_list() {
    let mut s = Stream::new(config());
    let (st, v) = immediate(
        s.on_request_headers(
            Headers::from([(":method", "GET"), (":path", "/v1/models")]),
            true,
        )
        .unwrap(),
    );
    assert_eq!(st, 200);
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
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
    assert_eq!(
        v["data"][0],
        serde_json::json!({"id":"some-cool-self-hosted-model","object":"model","created":1,"owned_by":"Envoy AI Gateway"})
    );
}

#[test]
fn out_of_order_messages_fail_the_stream() {
    let mut s = Stream::new(config());
    let e = s.on_request_body(Bytes::new(), true).unwrap_err();
    assert!(
        e.to_string().contains("request body") && e.to_string().contains("request headers"),
        "{e}"
    );
    // A response before any request (Envoy's own reply) passes, its body unread.
    let mut s = Stream::new(config());
    let c = cont(
        s.on_response_headers(Headers::from([(":status", "404")]), false)
            .unwrap(),
    );
    assert_eq!(c.response_body_mode, Some(BodyMode::None));
    // A request without :path (CONNECT) is an unknown URL, answered, not a failed stream.
    let mut s = Stream::new(config());
    match s.on_request_headers(Headers::from([(":method", "CONNECT")]), false) {
        Ok(Reply::Immediate(i)) => assert_eq!(i.status, 404),
        other => panic!("{other:?}"),
    }
}

#[test]
fn weighted_backends_and_header_matches() {
    let yaml = r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  rules:
    - matches: [{headers: [{name: x-ai-eg-model, value: m}, {name: x-tenant, value: gold}]}]
      backendRefs: [{name: a}]
    - matches: [{headers: [{name: x-ai-eg-model, value: m}]}]
      backendRefs: [{name: a, weight: 1}, {name: b, weight: 3}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: a}
spec: {schema: {name: OpenAI}, backendRef: {name: x}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: b}
spec: {schema: {name: OpenAI}, backendRef: {name: x}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: x}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: 1}}]}
"#;
    let config = load_str("w.yaml", yaml, &CompileOptions::default()).unwrap();
    let gold = Headers::from([("x-tenant", "gold"), ("x-ai-eg-model", "spoofed")]);
    assert_eq!(
        select(&config, &gold, "m", &Chat, |_| 0).map(|s| s.rule),
        Ok(0)
    );
    let plain = Headers::default();
    let picks: Vec<usize> = (0..4)
        .map(|n| {
            select(&config, &plain, "m", &Chat, |_| n)
                .unwrap()
                .backend_ref
        })
        .collect();
    assert_eq!(picks, [0, 1, 1, 1]);
    assert_eq!(
        select(&config, &plain, "other", &Chat, |_| 0),
        Err(NoRoute::NoRule)
    );
    // No backend of the rule speaks Anthropic's API: refused, naming the schemas.
    assert_eq!(
        select(&config, &plain, "m", &Messages, |_| 0),
        Err(NoRoute::NotServed {
            schemas: vec!["OpenAI"]
        })
    );
}

#[test]
fn every_cost_type_including_cel() {
    let yaml = r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  llmRequestCosts:
    - {metadataKey: in, type: InputToken}
    - {metadataKey: cached, type: CachedInputToken}
    - {metadataKey: out, type: OutputToken}
    - {metadataKey: total, type: TotalToken}
    - {metadataKey: reasoning, type: ReasoningToken}
    - {metadataKey: price, type: CEL, cel: "model == 'm' ? input_tokens * 2u + output_tokens * 8u - cached_input_tokens : 0u"}
  rules:
    - matches: [{headers: [{name: x-ai-eg-model, value: m}]}]
      backendRefs: [{name: a}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: a}
spec: {schema: {name: OpenAI}, backendRef: {name: x}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: x}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: 1}}]}
"#;
    let config = Arc::new(load_str("c.yaml", yaml, &CompileOptions::default()).unwrap());
    let mut s = Stream::new(config);
    cont(
        s.on_request_headers(post("/v1/chat/completions"), false)
            .unwrap(),
    );
    cont(
        s.on_request_body(Bytes::from(r#"{"model":"m","messages":[{}]}"#), true)
            .unwrap(),
    );
    let resp = Headers::from([(":status", "200"), ("content-type", "application/json")]);
    cont(s.on_response_headers(resp, false).unwrap());
    let usage = r#"{"usage":{"prompt_tokens":10,"completion_tokens":4,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":2}}}"#;
    let c = cont(s.on_response_body(Bytes::from(usage), true).unwrap());
    let num = |k: &str| {
        c.metadata
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(num("in"), Some(MetaValue::Num(10.0)));
    assert_eq!(num("cached"), Some(MetaValue::Num(3.0)));
    assert_eq!(num("out"), Some(MetaValue::Num(4.0)));
    assert_eq!(num("total"), Some(MetaValue::Num(14.0)));
    assert_eq!(num("reasoning"), Some(MetaValue::Num(2.0)));
    assert_eq!(num("price"), Some(MetaValue::Num(49.0)));
}

#[test]
fn a_bad_cel_expression_is_a_config_error_naming_the_rule() {
    let yaml = r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  llmRequestCosts:
    - {metadataKey: price, type: CEL, cel: "input_tokens * "}
    - {metadataKey: other, type: CEL, cel: "unknown_var + 1u"}
    - {metadataKey: missing, type: CEL}
  rules: []
"#;
    let errors = load_str("c.yaml", yaml, &CompileOptions::default())
        .unwrap_err()
        .0;
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"spec.llmRequestCosts[0].cel"), "{errors:?}");
    assert!(paths.contains(&"spec.llmRequestCosts[1].cel"), "{errors:?}");
    assert!(paths.contains(&"spec.llmRequestCosts[2].cel"), "{errors:?}");
    assert!(errors
        .iter()
        .all(|e| e.location.object.as_deref() == Some("AIGatewayRoute default/r")));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A chat routed to Fireworks, its 200 JSON response headers (gzip) answered.
fn gzip_response_stream() -> Stream {
    let mut s = Stream::new(config());
    cont(
        s.on_request_headers(post("/v1/chat/completions"), false)
            .unwrap(),
    );
    let body = r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#;
    cont(s.on_request_body(Bytes::from(body), true).unwrap());
    let headers = Headers::from([
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ]);
    let c = cont(s.on_response_headers(headers, false).unwrap());
    assert_eq!(c.response_body_mode, Some(BodyMode::Buffered));
    s
}

/// A provider's (or a man in the middle's) compressed bomb is bounded like a client's: its
/// usage is not read and nothing panics; a large compressed body is decoded off the thread.
#[test]
fn compressed_responses_are_bounded_and_large_ones_decoded_off_thread() {
    let usage = br#"{"usage":{"prompt_tokens":1,"total_tokens":1},"pad":""#;
    let mut bomb = usage.to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 20 * 1024 * 1024));
    bomb.extend(br#""}"#);
    let mut s = gzip_response_stream();
    let c = cont(s.on_response_body(Bytes::from(gzip(&bomb)), true).unwrap());
    assert!(
        !c.metadata.iter().any(|(k, _)| k == "total_tokens"),
        "no usage read from a bomb: {:?}",
        c.metadata
    );

    // 200 KB of hex compresses about 2:1: large, and no bomb.
    let mut large = usage.to_vec();
    let mut x: u64 = 1;
    large.extend((0..200_000).map(|_| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        b"0123456789abcdef"[(x >> 60) as usize]
    }));
    large.extend(br#""}"#);
    let gz = gzip(&large);
    let mut s = gzip_response_stream();
    assert!(s.decodes_large_body(gz.len(), true), "{} bytes", gz.len());
    assert!(
        !s.decodes_large_body(gz.len(), false),
        "only the last part decodes"
    );
    assert!(
        !s.decodes_large_body(100, true),
        "small bodies decode inline"
    );
    let c = cont(s.on_response_body(Bytes::from(gz), true).unwrap());
    assert!(
        c.metadata.iter().any(|(k, _)| k == "total_tokens"),
        "{:?}",
        c.metadata
    );
}

/// Timings come from the stream's clock: exact values, not masked ones.
#[test]
fn time_to_first_token_inter_token_latency_and_duration_are_exact() {
    let clock = Clock::manual();
    let hub = crate::usage::UsageHub::new();
    let mut records = hub.subscribe(4);
    let options = Options {
        clock: clock.clone(),
        usage: Some(hub),
        ..Options::default()
    };
    let ms = std::time::Duration::from_millis;
    let mut s = Stream::with_options(config(), options);
    cont(
        s.on_request_headers(post("/v1/chat/completions"), false)
            .unwrap(),
    );
    let body =
        r#"{"model":"qwen-instruct","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    cont(s.on_request_body(Bytes::from(body), true).unwrap());
    clock.advance(ms(100));
    let headers = Headers::from([(":status", "200"), ("content-type", "text/event-stream")]);
    cont(s.on_response_headers(headers, false).unwrap());
    let event = |delta: &str, usage: &str| {
        Bytes::from(format!(
            "data: {{\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta}}}],\"usage\":{usage}}}\n\n"
        ))
    };
    cont(
        s.on_response_body(event(r#"{"role":"assistant"}"#, "null"), false)
            .unwrap(),
    );
    // Tokens at +250, +300 and +350 ms; usage says 3 output tokens.
    for step in [150, 50, 50] {
        clock.advance(ms(step));
        cont(
            s.on_response_body(event(r#"{"content":"w "}"#, "null"), false)
                .unwrap(),
        );
    }
    cont(
        s.on_response_body(
            event(
                "{}",
                r#"{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}"#,
            ),
            false,
        )
        .unwrap(),
    );
    clock.advance(ms(10));
    let c = cont(
        s.on_response_body(Bytes::from("data: [DONE]\n\n"), true)
            .unwrap(),
    );
    let meta = |key: &str| {
        c.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key} in {:?}", c.metadata))
    };
    assert_eq!(meta("time_to_first_token_ms"), MetaValue::Num(250.0));
    assert_eq!(
        meta("inter_token_latency_ms"),
        MetaValue::Num(50.0),
        "(350 - 250) ms over 3 - 1 gaps"
    );
    let rec = records.try_recv().expect("a usage record");
    assert_eq!(rec.time_to_first_token_ms, 250.0);
    assert_eq!(rec.inter_token_latency_ms, 50.0);
    assert_eq!(rec.duration_ms, 360.0);
}

#[test]
fn internal_headers_are_stripped_and_header_limits_hold() {
    // A client's own routing headers never reach the provider; the gateway's own are set.
    let mut s = Stream::new(config());
    let h = Headers::from([
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("x-ai-eg-backend", "evil"),
        ("x-ai-eg-secret", "x"),
        ("x-user-id", "u"),
    ]);
    cont(s.on_request_headers(h, false).unwrap());
    let c = cont(
        s.on_request_body(
            Bytes::from(r#"{"model":"qwen-instruct","messages":[{}]}"#),
            true,
        )
        .unwrap(),
    );
    // Client credential headers the key does not replace go too.
    assert_eq!(c.remove_headers, ["x-api-key", "api-key", "x-ai-eg-secret"]);
    assert_eq!(
        header(&c, BACKEND_HEADER),
        Some("default/envoy-ai-gateway-fireworks")
    );

    // Headers Envoy adds do not count; pseudo-headers neither; the client's own do.
    let with = |n: usize, value: &str| {
        let mut pairs: Vec<(String, String)> = vec![
            (":method".into(), "POST".into()),
            (":path".into(), "/v1/chat/completions".into()),
        ];
        pairs.extend(crate::contract::ENVOY_ADDED_HEADERS.map(|h| (h.to_string(), "1".into())));
        pairs.extend((0..n).map(|i| (format!("x-h-{i}"), value.to_string())));
        Stream::new(config()).on_request_headers(Headers::new(pairs), false)
    };
    cont(with(crate::contract::MAX_REQUEST_HEADERS, "v").unwrap());
    let (st, v) = immediate(with(crate::contract::MAX_REQUEST_HEADERS + 1, "v").unwrap());
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (431, Some("request_header_fields_too_large"))
    );
    let big = "v".repeat(crate::contract::MAX_REQUEST_HEADER_BYTES / 10);
    let (st, _) = immediate(with(10, &big).unwrap());
    assert_eq!(st, 431);
    cont(with(9, &big).unwrap());
    // The byte bound exactly: names and values of every header count.
    let sized = |total: usize| {
        let fixed = ":method".len() + "POST".len() + ":path".len() + "/v1/models".len();
        let value = "v".repeat(total - fixed - "x-big".len());
        let h = Headers::from([
            (":method", "POST"),
            (":path", "/v1/models"),
            ("x-big", value.as_str()),
        ]);
        Stream::new(config()).on_request_headers(h, true)
    };
    let bound = crate::contract::MAX_REQUEST_HEADER_BYTES;
    assert_eq!(
        immediate(sized(bound).unwrap()).0,
        405,
        "within the bound: on to the method"
    );
    assert_eq!(immediate(sized(bound + 1).unwrap()).0, 431);
}

/// Stream usage is asked of a backend that reports it only when asked, and only then; the
/// client's own request for it is left as sent.
#[test]
fn include_usage_is_asked_only_when_needed() {
    let send = |path: &str, body: &str| {
        let mut s = Stream::new(config());
        cont(s.on_request_headers(post(path), false).unwrap());
        cont(
            s.on_request_body(Bytes::from(body.to_string()), true)
                .unwrap(),
        )
    };
    let basic = "some-cool-self-hosted-model";
    // OpenAI semantics (the basic backend): asked, and the response sent uncompressed.
    let c = send(
        "/v1/chat/completions",
        &format!(r#"{{"model":"{basic}","messages":[{{}}],"stream":true}}"#),
    );
    assert_eq!(
        c.body.as_deref(),
        Some(
            format!(
                r#"{{"stream_options":{{"include_usage":true}},"model":"{basic}","messages":[{{}}],"stream":true}}"#
            )
            .as_bytes()
        )
    );
    assert_eq!(header(&c, "accept-encoding"), Some("identity"));
    let c = send(
        "/v1/completions",
        &format!(r#"{{"model":"{basic}","prompt":"x","stream":true}}"#),
    );
    assert!(c.body.is_some(), "completions streams are asked too");
    // Already asked, not a stream, or an embedding: nothing changes.
    for (path, body) in [
        (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"{basic}","messages":[{{}}],"stream":true,"stream_options":{{"include_usage":true}}}}"#
            ),
        ),
        (
            "/v1/chat/completions",
            format!(r#"{{"model":"{basic}","messages":[{{}}]}}"#),
        ),
        (
            "/v1/embeddings",
            format!(r#"{{"model":"{basic}","input":"x","stream":true}}"#),
        ),
    ] {
        let c = send(path, &body);
        assert_eq!(c.body, None, "{body}");
        assert_eq!(header(&c, "accept-encoding"), None, "{body}");
    }
    // Fireworks reports stream usage unasked: nothing is injected.
    let c = send(
        "/v1/chat/completions",
        r#"{"model":"qwen-thinking","messages":[{}],"stream":true}"#,
    );
    assert_eq!(header(&c, "accept-encoding"), None);
    assert!(!c
        .body
        .unwrap_or_default()
        .windows(14)
        .any(|w| w == b"stream_options"));
}

/// A compressed request body reaches the provider decoded, its encoding header dropped.
#[test]
fn a_gzip_request_is_forwarded_decoded() {
    let mut s = Stream::new(config());
    let h = Headers::from([
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("content-encoding", "gzip"),
    ]);
    cont(s.on_request_headers(h, false).unwrap());
    let body = r#"{"model":"some-cool-self-hosted-model","messages":[{}]}"#;
    let c = cont(
        s.on_request_body(Bytes::from(gzip(body.as_bytes())), true)
            .unwrap(),
    );
    assert_eq!(c.body.as_deref(), Some(body.as_bytes()));
    assert_eq!(
        header(&c, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(c.remove_headers.iter().any(|h| h == "content-encoding"));
}

/// A rule with two priorities (the second with another prefix and model).
const FAILOVER_YAML: &str = r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  rules:
    - matches: [{headers: [{name: x-ai-eg-model, value: m}]}]
      backendRefs:
        - {name: a, modelNameOverride: model-a}
        - {name: b, priority: 1, modelNameOverride: model-b}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: a}
spec: {schema: {name: OpenAI}, backendRef: {name: x}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: b}
spec: {schema: {name: OpenAI, prefix: /b/v1}, backendRef: {name: x}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: x}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: 1}}]}
"#;

/// A rule with two priorities, where Envoy injects keys: the processor routes to the rule,
/// rewrites for the first priority's only backend, and tells Envoy's per-attempt filter where
/// the path suffix and the model are for the others; the response names the backend that served.
#[test]
fn a_rule_that_fails_over_is_left_to_envoys_attempts() {
    let yaml = FAILOVER_YAML;
    let config = Arc::new(load_str("f.yaml", yaml, &CompileOptions::default()).unwrap());
    let hub = crate::usage::UsageHub::new();
    let mut records = hub.subscribe(4);
    let options = Options {
        inject_keys: false,
        usage: Some(hub),
        ..Options::default()
    };
    let mut s = Stream::with_options(config.clone(), options);
    cont(
        s.on_request_headers(post("/v1/chat/completions?q=1"), false)
            .unwrap(),
    );
    let body = r#"{"messages":[{}],"model":"m","stream":true}"#;
    let c = cont(s.on_request_body(Bytes::from(body), true).unwrap());
    assert_eq!(header(&c, "x-ai-eg-model"), Some("m"));
    assert_eq!(
        header(&c, ":path"),
        Some("/v1/chat/completions?q=1"),
        "the first attempt's"
    );
    assert_eq!(header(&c, BACKEND_HEADER), None, "Envoy picks the backend");
    assert_eq!(header(&c, "authorization"), None);
    assert!(c.remove_headers.iter().any(|h| h == "authorization"));
    // include_usage went in first: the span is where the model is in the body Envoy sends.
    let sent = c.body.clone().unwrap();
    let meta = |key: &str| {
        c.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let (Some(MetaValue::Num(start)), Some(MetaValue::Num(end))) =
        (meta("model_start"), meta("model_end"))
    else {
        panic!("{:?}", c.metadata)
    };
    assert_eq!(&sent[start as usize..end as usize], b"\"model-a\"");
    assert_eq!(
        meta("first_backend"),
        None,
        "Envoy's filter knows it from the config"
    );
    assert_eq!(meta("client_model"), Some(MetaValue::Str("\"m\"".into())));
    assert_eq!(
        meta("path_suffix"),
        Some(MetaValue::Str("/chat/completions?q=1".into()))
    );
    assert_eq!(meta("backend_name"), None, "not known before the response");

    // The secondary served after the primary's 503.
    let resp = Headers::from([
        (":status", "200"),
        ("content-type", "text/event-stream"),
        ("x-ai-eg-attempts", "default/a=503;default/b=200"),
    ]);
    let c = cont(s.on_response_headers(resp, false).unwrap());
    assert_eq!(c.remove_headers, ["x-ai-eg-attempts"]);
    for (key, want) in [
        ("attempts", MetaValue::Num(2.0)),
        ("failed_attempts", MetaValue::Str("default/a: 503".into())),
        ("backend_name", MetaValue::Str("default/b".into())),
        ("model_name_override", MetaValue::Str("model-b".into())),
    ] {
        assert!(
            c.metadata.contains(&(key.into(), want.clone())),
            "{key}: {:?}",
            c.metadata
        );
    }
    let done = "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n";
    cont(s.on_response_body(Bytes::from(done), true).unwrap());
    let rec = records.try_recv().unwrap();
    assert_eq!(rec.backend, "default/b");
    assert_eq!(rec.provider_request_model, "model-b");
    assert_eq!((rec.attempts, rec.total_tokens), (2, 3));
    assert_eq!(rec.failed_attempts.len(), 1);

    // Nobody answered (Envoy's own 503): no backend is named, nothing is read from headers.
    let mut s = Stream::with_options(
        config,
        Options {
            inject_keys: false,
            ..Options::default()
        },
    );
    cont(
        s.on_request_headers(post("/v1/chat/completions"), false)
            .unwrap(),
    );
    cont(
        s.on_request_body(Bytes::from(r#"{"model":"m","messages":[{}]}"#), true)
            .unwrap(),
    );
    let c = cont(
        s.on_response_headers(Headers::from([(":status", "503")]), false)
            .unwrap(),
    );
    assert!(
        c.remove_headers.is_empty() && c.metadata.is_empty(),
        "{c:?}"
    );
}

/// A basic-backend chat stream (the gateway asks for usage), its 200 SSE headers answered with
/// `extra` headers.
fn basic_stream(options: Options, extra: &[(&str, &str)]) -> Stream {
    let mut s = Stream::with_options(config(), options);
    cont(
        s.on_request_headers(post("/v1/chat/completions"), false)
            .unwrap(),
    );
    let body = r#"{"model":"some-cool-self-hosted-model","messages":[{}],"stream":true}"#;
    cont(s.on_request_body(Bytes::from(body), true).unwrap());
    let mut headers = vec![(":status", "200"), ("content-type", "text/event-stream")];
    headers.extend_from_slice(extra);
    let pairs = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    cont(s.on_response_headers(Headers::new(pairs), false).unwrap());
    s
}

/// Time to first token and inter-token latency for `tokens` token events 50 ms apart (the
/// first 250 ms after the request), with `output` tokens in the usage.
fn stream_timing(tokens: usize, output: Option<u64>) -> (Option<MetaValue>, Option<MetaValue>) {
    let clock = Clock::manual();
    let ms = std::time::Duration::from_millis;
    let mut s = basic_stream(
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
        &[],
    );
    clock.advance(ms(200));
    for _ in 0..tokens {
        clock.advance(ms(50));
        let event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w\"}}]}\n\n";
        cont(s.on_response_body(Bytes::from(event), false).unwrap());
    }
    if let Some(n) = output {
        let usage = format!(
            "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\n",
            n + 1
        );
        cont(s.on_response_body(Bytes::from(usage), false).unwrap());
    }
    let c = cont(
        s.on_response_body(Bytes::from("data: [DONE]\n\n"), true)
            .unwrap(),
    );
    let meta = |key: &str| {
        c.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    (
        meta("time_to_first_token_ms"),
        meta("inter_token_latency_ms"),
    )
}

#[test]
fn inter_token_latency_counts_output_tokens_else_events() {
    // The usage's output tokens when it gives more than one: (350 - 250) ms over 5 - 1 gaps.
    assert_eq!(
        stream_timing(3, Some(5)),
        (Some(MetaValue::Num(250.0)), Some(MetaValue::Num(25.0)))
    );
    // A usage of one token says nothing of the gaps: the events count, 100 ms over 2.
    assert_eq!(stream_timing(3, Some(1)).1, Some(MetaValue::Num(50.0)));
    assert_eq!(stream_timing(3, None).1, Some(MetaValue::Num(50.0)));
    // One token: a first token, no gap to measure.
    assert_eq!(stream_timing(1, None), (Some(MetaValue::Num(250.0)), None));
    assert_eq!(stream_timing(0, None), (None, None));
}

#[test]
fn a_stream_ending_without_a_blank_line_keeps_its_last_event() {
    let mut s = basic_stream(Options::default(), &[]);
    let event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w\"}}]}\n\n";
    cont(s.on_response_body(Bytes::from(event), false).unwrap());
    // The usage-only chunk the gateway asked for goes; the unterminated end is held, then sent.
    let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n";
    let c = cont(s.on_response_body(Bytes::from(usage), false).unwrap());
    assert!(
        c.body.is_some_and(|b| b.is_empty()),
        "the usage-only chunk is taken out"
    );
    let c = cont(
        s.on_response_body(Bytes::from("data: [DONE]"), true)
            .unwrap(),
    );
    assert_eq!(c.body.as_deref(), Some(&b"data: [DONE]"[..]));
}

#[test]
fn a_stream_in_an_unknown_encoding_passes_as_sent() {
    // Its bytes cannot be read, so nothing is taken out of them.
    let mut s = basic_stream(Options::default(), &[("content-encoding", "zstd")]);
    let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n";
    let c = cont(s.on_response_body(Bytes::from(usage), false).unwrap());
    assert_eq!(c.body, None);
}

#[test]
fn only_large_compressed_bodies_are_decoded_off_thread() {
    let mut s = Stream::new(config());
    cont(
        s.on_request_headers(post("/v1/chat/completions"), false)
            .unwrap(),
    );
    let body = r#"{"model":"qwen-instruct","messages":[{}]}"#;
    cont(s.on_request_body(Bytes::from(body), true).unwrap());
    let headers = Headers::from([(":status", "200"), ("content-type", "application/json")]);
    cont(s.on_response_headers(headers, false).unwrap());
    // Plain bodies are never decoded, however large.
    assert!(!s.decodes_large_body(10 * LARGE_COMPRESSED_BODY, true));
    let mut s = gzip_response_stream();
    assert!(!s.decodes_large_body(LARGE_COMPRESSED_BODY, true));
    assert!(!s.decodes_large_body(LARGE_COMPRESSED_BODY + 1, false));
    assert!(s.decodes_large_body(LARGE_COMPRESSED_BODY + 1, true));
    cont(
        s.on_response_body(Bytes::from(vec![0u8; 10]), false)
            .unwrap(),
    );
    assert!(s.decodes_large_body(LARGE_COMPRESSED_BODY - 9, true));
}

#[test]
fn a_success_that_is_not_json_becomes_a_502_in_openai_shape() {
    let mut s = Stream::new(config());
    cont(
        s.on_request_headers(post("/v1/chat/completions"), false)
            .unwrap(),
    );
    let body = r#"{"model":"qwen-instruct","messages":[{}]}"#;
    cont(s.on_request_body(Bytes::from(body), true).unwrap());
    let headers = Headers::from([(":status", "200"), ("content-type", "application/json")]);
    cont(s.on_response_headers(headers, false).unwrap());
    let c = cont(
        s.on_response_body(Bytes::from(r#"{"usage":{"prompt_tokens":3"#), true)
            .unwrap(),
    );
    let body = c.body.clone().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    assert_eq!(header(&c, ":status"), Some("502"));
    assert_eq!(header(&c, "content-type"), Some("application/json"));
    assert_eq!(
        header(&c, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(c.remove_headers, ["content-encoding"]);
    assert!(
        c.metadata.iter().all(|(k, _)| k != "prompt_tokens"),
        "not charged"
    );
}

#[test]
fn a_provider_text_error_is_quoted_up_to_a_character_boundary() {
    let mut s = Stream::new(config());
    cont(
        s.on_request_headers(post("/v1/chat/completions"), false)
            .unwrap(),
    );
    let body = r#"{"model":"qwen-instruct","messages":[{}]}"#;
    cont(s.on_request_body(Bytes::from(body), true).unwrap());
    let headers = Headers::from([(":status", "500"), ("content-type", "text/html")]);
    cont(s.on_response_headers(headers, false).unwrap());
    // Byte 1,024 falls inside a two-byte character: the quote stops before it.
    let page = format!("x{}", "é".repeat(1000));
    let c = cont(s.on_response_body(Bytes::from(page), true).unwrap());
    let v: serde_json::Value = serde_json::from_slice(&c.body.unwrap()).unwrap();
    assert_eq!(
        v["error"]["message"],
        format!("The provider answered 500: x{}", "é".repeat(511))
    );
    assert_eq!(v["error"]["type"], "server_error");
}

#[test]
fn one_backend_needs_no_draw_and_draws_cover_every_weight() {
    let c = config();
    // A rule with one backend never draws (the draw would panic here).
    let sel = select(&c, &Headers::default(), "qwen-instruct", &Chat, |_| {
        panic!("no draw for one backend")
    });
    assert!(sel.is_ok());
    let mut seen = [false; 4];
    for _ in 0..1000 {
        let n = route::random_pick(4);
        assert!(n < 4);
        seen[n as usize] = true;
    }
    assert_eq!(seen, [true; 4]);
}

#[test]
fn a_large_compressed_request_is_decoded_off_thread() {
    let mut s = Stream::new(config());
    let h = Headers::from([
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("content-encoding", "gzip"),
    ]);
    cont(s.on_request_headers(h, false).unwrap());
    assert!(!s.decodes_large_body(LARGE_COMPRESSED_BODY, true));
    assert!(s.decodes_large_body(LARGE_COMPRESSED_BODY + 1, true));
    assert!(!s.decodes_large_body(LARGE_COMPRESSED_BODY + 1, false));
    // A plain request body is never decoded.
    let mut s = Stream::new(config());
    cont(
        s.on_request_headers(post("/v1/chat/completions"), false)
            .unwrap(),
    );
    assert!(!s.decodes_large_body(10 * LARGE_COMPRESSED_BODY, true));
    assert_eq!(LARGE_COMPRESSED_BODY, 64 * 1024, "the README's 64 KiB");
}

#[test]
fn a_stream_ended_early_still_leaves_a_usage_record() {
    let hub = crate::usage::UsageHub::new();
    let mut records = hub.subscribe(4);
    let options = Options {
        usage: Some(hub),
        ..Options::default()
    };
    let mut s = basic_stream(options, &[]);
    let event = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n";
    cont(s.on_response_body(Bytes::from(event), false).unwrap());
    assert!(records.try_recv().is_err(), "not before the end");
    drop(s);
    let rec = records
        .try_recv()
        .expect("a record when the stream is dropped");
    assert_eq!((rec.status, rec.total_tokens), (200, 7));
}

/// Where the model is in the body Envoy sends, whatever the gateway changed before or after it.
#[test]
fn the_model_span_follows_the_edits_around_it() {
    let config = Arc::new(load_str("f.yaml", FAILOVER_YAML, &CompileOptions::default()).unwrap());
    let sent = |body: &str| {
        let options = Options {
            inject_keys: false,
            ..Options::default()
        };
        let mut s = Stream::with_options(config.clone(), options);
        cont(
            s.on_request_headers(post("/v1/chat/completions"), false)
                .unwrap(),
        );
        let c = cont(
            s.on_request_body(Bytes::from(body.to_string()), true)
                .unwrap(),
        );
        let num = |key: &str| match c.metadata.iter().find(|(k, _)| k == key) {
            Some((_, MetaValue::Num(n))) => *n as usize,
            other => panic!("{key}: {other:?}"),
        };
        let sent = c.body.clone().unwrap();
        String::from_utf8(sent[num("model_start")..num("model_end")].to_vec()).unwrap()
    };
    // `stream_options` replaced before the model (longer), after it, or inserted first.
    for body in [
        r#"{"stream_options":{"include_usage":false},"model":"m","messages":[{}],"stream":true}"#,
        r#"{"model":"m","messages":[{}],"stream":true,"stream_options":{"include_usage":false}}"#,
        r#"{"model":"m","messages":[{}],"stream":true}"#,
    ] {
        assert_eq!(sent(body), "\"model-a\"", "{body}");
    }
}

/// Where Envoy injects keys but the rule has one priority, the processor rewrites as ever.
#[test]
fn one_priority_is_routed_by_the_processor_whoever_injects_keys() {
    let options = Options {
        inject_keys: false,
        ..Options::default()
    };
    let mut s = Stream::with_options(config(), options);
    cont(
        s.on_request_headers(post("/v1/chat/completions"), false)
            .unwrap(),
    );
    let body = r#"{"model":"qwen-instruct","messages":[{}]}"#;
    let c = cont(s.on_request_body(Bytes::from(body), true).unwrap());
    assert_eq!(header(&c, ":path"), Some("/inference/v1/chat/completions"));
    assert_eq!(
        header(&c, BACKEND_HEADER),
        Some("default/envoy-ai-gateway-fireworks")
    );
    assert_eq!(header(&c, "authorization"), None, "Envoy puts the key on");
    assert!(c.metadata.iter().all(|(k, _)| k != "path_suffix"));
}
