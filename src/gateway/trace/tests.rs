//! The LLM span of a request, recorded through a traced `Stream` and decoded from the OTLP
//! bytes it is exported as.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use prost::Message as _;

use crate::config::{load, CompileOptions, Config};
use crate::gateway::{Headers, Reply, Stream};
use crate::otlp::{sampler_from_env, Sink, Tracer};
use crate::telemetry::{TraceConfig, TraceFormat, REDACTED};

use super::LlmSpan;

fn config() -> Arc<Config> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    Arc::new(
        load(
            &[
                root.join("basic.yaml"),
                root.join("fireworks.yaml"),
                root.join("fireworks-apis.yaml"),
            ],
            &CompileOptions::default(),
        )
        .unwrap(),
    )
}

/// The spans `f` made with a tracer, decoded.
fn spans(f: impl FnOnce(&Tracer)) -> Vec<Span> {
    let (sink, mut received) = Sink::for_test();
    let tracer = Tracer {
        sink,
        sampler: sampler_from_env(|_| None).unwrap(),
    };
    f(&tracer);
    received
        .spans()
        .iter()
        .map(|b| Span::decode(b.as_slice()).expect("a valid OTLP span"))
        .collect()
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    let mut found = span.attributes.iter().filter(|kv| kv.key == key);
    let first = found.next()?;
    assert!(found.next().is_none(), "{key} written twice");
    first.value.as_ref()?.value.as_ref()
}

fn s(span: &Span, key: &str) -> String {
    match attr(span, key) {
        Some(Any::StringValue(v)) => v.clone(),
        other => panic!("{key}: {other:?} in {:?}", span.attributes),
    }
}

fn i(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Any::IntValue(n)) => *n,
        other => panic!("{key}: {other:?}"),
    }
}

const CHAT: &str = r#"{"model":"qwen-instruct","temperature":0.5,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}],"tools":[{"type":"function","function":{"name":"lookup","parameters":{}}}]}"#;

const ANSWER: &str = r#"{"id":"x","model":"accounts/fireworks/models/qwen3-vl-235b-a22b-instruct","choices":[{"index":0,"message":{"role":"assistant","content":"A cat.","tool_calls":[{"id":"call_1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"cat\"}"}}]}}],"usage":{"prompt_tokens":40,"completion_tokens":3,"total_tokens":43,"prompt_tokens_details":{"cached_tokens":8}}}"#;

/// One request to `path` through a traced stream: its body, then `answer` (JSON or SSE).
fn exchange(
    tracer: &Tracer,
    cfg: &TraceConfig,
    path: &str,
    body: &str,
    content_type: &str,
    answer: &str,
) {
    let mut stream = Stream::new(config());
    stream.trace_with(LlmSpan::start(tracer, &[], cfg.clone()));
    let headers = Headers::from([(":method", "POST"), (":path", path)]);
    stream.on_request_headers(headers, false).unwrap();
    match stream
        .on_request_body(Bytes::from(body.to_string()), true)
        .unwrap()
    {
        Reply::Continue(_) => {}
        Reply::Immediate(i) => {
            stream.trace_refused(i.status, &i.body);
            return;
        }
        Reply::Admit => panic!("no budgets here"),
    }
    let resp = Headers::from([(":status", "200"), ("content-type", content_type)]);
    stream.on_response_headers(resp, false).unwrap();
    stream
        .on_response_body(Bytes::from(answer.to_string()), true)
        .unwrap();
}

/// The span of one chat request.
fn with(cfg: TraceConfig, body: &str, content_type: &str, answer: &str) -> Span {
    at("/v1/chat/completions", cfg, body, content_type, answer)
}

fn at(path: &str, cfg: TraceConfig, body: &str, content_type: &str, answer: &str) -> Span {
    let mut spans = spans(|tracer| exchange(tracer, &cfg, path, body, content_type, answer));
    assert_eq!(spans.len(), 1);
    spans.remove(0)
}

#[test]
fn a_chat_span_in_openinference() {
    let cfg = TraceConfig::default();
    let span = with(cfg, CHAT, "application/json", ANSWER);
    assert_eq!(span.name, "ChatCompletion");
    assert_eq!(s(&span, "openinference.span.kind"), "LLM");
    assert_eq!(s(&span, "llm.system"), "openai");
    assert_eq!(s(&span, "llm.provider"), "fireworks");
    assert_eq!(
        s(&span, "llm.model_name"),
        "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"
    );
    let params: serde_json::Value =
        serde_json::from_str(&s(&span, "llm.invocation_parameters")).unwrap();
    assert_eq!(params["temperature"], 0.5);
    assert!(params.get("messages").is_none() && params.get("tools").is_none());
    assert_eq!(s(&span, "llm.input_messages.0.message.role"), "system");
    assert_eq!(
        s(&span, "llm.input_messages.0.message.content"),
        "Be brief."
    );
    assert_eq!(
        s(
            &span,
            "llm.input_messages.1.message.contents.0.message_content.text"
        ),
        "What is this?"
    );
    let url = s(
        &span,
        "llm.input_messages.1.message.contents.1.message_content.image.image.url",
    );
    assert!(
        url.starts_with("data:image/png;base64,[") && !url.contains("iVBOR"),
        "{url}"
    );
    assert!(s(&span, "llm.tools.0.tool.json_schema").contains("lookup"));
    assert_eq!(s(&span, "input.mime_type"), "application/json");
    // The raw body keeps everything but the image's bytes.
    let input = s(&span, "input.value");
    assert!(
        input.contains("Be brief.") && input.contains("data:image/png;base64,["),
        "{input}"
    );
    assert!(!input.contains("iVBOR"), "{input}");
    assert_eq!(s(&span, "llm.output_messages.0.message.content"), "A cat.");
    assert_eq!(
        s(
            &span,
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name"
        ),
        "lookup"
    );
    assert_eq!(i(&span, "llm.token_count.prompt"), 40);
    assert_eq!(i(&span, "llm.token_count.completion"), 3);
    assert_eq!(i(&span, "llm.token_count.total"), 43);
    assert_eq!(i(&span, "llm.token_count.prompt_details.cache_read"), 8);
    assert!(s(&span, "output.value").contains("A cat."));
    assert!(span.status.is_none(), "{:?}", span.status);
}

#[test]
fn hidden_inputs_and_outputs_are_replaced() {
    let cfg = TraceConfig::from_env(TraceFormat::OpenInference, 1024, |name| {
        matches!(
            name,
            "OPENINFERENCE_HIDE_INPUTS" | "OPENINFERENCE_HIDE_OUTPUTS"
        )
        .then(|| "true".to_string())
    });
    assert!(cfg.hide_inputs && cfg.hide_outputs && !cfg.hide_input_images);
    let span = with(cfg, CHAT, "application/json", ANSWER);
    for key in [
        "input.value",
        "output.value",
        "llm.input_messages.0.message.content",
        "llm.input_messages.1.message.contents.1.message_content.image.image.url",
        "llm.output_messages.0.message.content",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments",
    ] {
        assert_eq!(s(&span, key), REDACTED, "{key}");
    }
    // What is not the conversation stays: tokens, the model.
    assert_eq!(i(&span, "llm.token_count.total"), 43);
    assert!(attr(&span, "llm.model_name").is_some());
    let all = format!("{:?}", span.attributes);
    assert!(
        !all.contains("Be brief") && !all.contains("A cat") && !all.contains("iVBOR"),
        "{all}"
    );

    // Only images hidden: the text stays.
    let cfg = TraceConfig::from_env(TraceFormat::OpenInference, 1024, |name| {
        (name == "OPENINFERENCE_HIDE_INPUT_IMAGES").then(|| "1".to_string())
    });
    let span = with(cfg, CHAT, "application/json", ANSWER);
    assert_eq!(
        s(
            &span,
            "llm.input_messages.1.message.contents.1.message_content.image.image.url"
        ),
        REDACTED
    );
    assert_eq!(
        s(
            &span,
            "llm.input_messages.1.message.contents.0.message_content.text"
        ),
        "What is this?"
    );
    let input = s(&span, "input.value");
    assert!(
        input.contains("What is this?") && !input.contains("data:image"),
        "{input}"
    );
}

#[test]
fn a_stream_is_captured_within_its_cap() {
    let cfg = TraceConfig::from_env(TraceFormat::OpenInference, 8, |_| None);
    let events = concat!(
        "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"reasoning_content\":\"Hmm\"}}]}\n\n",
        "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n",
        "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\" there, friend\"}}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\n",
        "data: [DONE]\n\n"
    );
    let body =
        r#"{"model":"qwen-instruct","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let span = with(cfg, body, "text/event-stream", events);
    let out = s(&span, "output.value");
    assert_eq!(out, format!("Hello{}", super::TRUNCATED));
    assert_eq!(s(&span, "output.mime_type"), "text/plain");
    assert_eq!(
        s(&span, "llm.output_messages.0.message.reasoning_content"),
        "Hmm"
    );
    assert_eq!(i(&span, "llm.token_count.completion"), 3);
    assert!(span.events.iter().any(|e| e.name == "first_token"));
}

#[test]
fn an_unsampled_request_records_nothing_and_hands_its_context_on() {
    let cfg = TraceConfig::default();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
    let spans = spans(|tracer| {
        let unsampled = [("traceparent".to_string(), format!("{parent}-00"))];
        let span = LlmSpan::start(tracer, &unsampled, cfg.clone());
        // Its answer is not kept (the response reader captures nothing for it).
        assert_eq!(span.capture_bytes(), None);
        let context = span.context_headers();
        assert!(context[0]
            .1
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(context[0].1.ends_with("-00"), "{context:?}");
        let sampled = [("traceparent".to_string(), format!("{parent}-01"))];
        let recorded = LlmSpan::start(tracer, &sampled, cfg.clone());
        assert_eq!(recorded.capture_bytes(), Some(cfg.max_output_bytes));
        drop(recorded);
        // A whole unsampled exchange exports nothing.
        let mut stream = Stream::new(config());
        stream.trace_with(LlmSpan::start(tracer, &unsampled, cfg.clone()));
        let headers = Headers::from([(":method", "POST"), (":path", "/v1/chat/completions")]);
        stream.on_request_headers(headers, false).unwrap();
        stream.on_request_body(Bytes::from(CHAT), true).unwrap();
        let resp = Headers::from([(":status", "200"), ("content-type", "application/json")]);
        stream.on_response_headers(resp, false).unwrap();
        stream.on_response_body(Bytes::from(ANSWER), true).unwrap();
    });
    assert_eq!(spans.len(), 1, "only the sampled span is exported");
}

#[test]
fn the_genai_variant_and_a_refusal() {
    let cfg = TraceConfig::from_env(TraceFormat::GenAi, 1024, |_| None);
    let span = with(cfg.clone(), CHAT, "application/json", ANSWER);
    assert_eq!(span.name, "chat qwen-instruct");
    assert_eq!(s(&span, "gen_ai.operation.name"), "chat");
    assert_eq!(s(&span, "gen_ai.provider.name"), "fireworks");
    assert_eq!(s(&span, "gen_ai.request.model"), "qwen-instruct");
    assert_eq!(
        s(&span, "gen_ai.response.model"),
        "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"
    );
    assert_eq!(i(&span, "gen_ai.usage.input_tokens"), 40);
    assert_eq!(i(&span, "gen_ai.usage.output_tokens"), 3);
    let input: serde_json::Value =
        serde_json::from_str(&s(&span, "gen_ai.input.messages")).unwrap();
    assert_eq!(input[0]["parts"][0]["content"], "Be brief.");
    assert!(attr(&span, "llm.model_name").is_none());

    // A refused request: an error span with the error's type.
    let span = with(
        cfg,
        r#"{"model":"no-such-model","messages":[{"role":"user","content":"Hi"}]}"#,
        "application/json",
        "",
    );
    assert_eq!(
        span.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(s(&span, "error.type"), "invalid_request_error");
    assert_eq!(i(&span, "http.response.status_code"), 404);
}

#[test]
fn streamed_tool_calls_keep_their_ids_in_both_apis() {
    let cfg = TraceConfig::default();
    let events = concat!(
        "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_9\",\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":1}\"}}]}}]}\n\n",
        "data: [DONE]\n\n"
    );
    let body =
        r#"{"model":"qwen-instruct","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let span = with(cfg.clone(), body, "text/event-stream", events);
    let call = "llm.output_messages.0.message.tool_calls.0.tool_call";
    assert_eq!(s(&span, &format!("{call}.id")), "call_9");
    assert_eq!(s(&span, &format!("{call}.function.name")), "lookup");
    assert_eq!(
        s(&span, &format!("{call}.function.arguments")),
        r#"{"q":1}"#
    );

    // Anthropic: a text block, then a tool_use block whose input streams as JSON pieces.
    let events = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Looking.\"}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"lookup\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\":\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"2}\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );
    let body = r#"{"model":"qwen-claude","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let span = at("/v1/messages", cfg, body, "text/event-stream", events);
    assert_eq!(span.name, "Messages");
    assert_eq!(
        s(&span, "llm.output_messages.0.message.content"),
        "Looking."
    );
    assert_eq!(s(&span, &format!("{call}.id")), "toolu_1");
    assert_eq!(s(&span, &format!("{call}.function.name")), "lookup");
    assert_eq!(
        s(&span, &format!("{call}.function.arguments")),
        r#"{"q":2}"#
    );
    assert!(attr(
        &span,
        "llm.output_messages.0.message.tool_calls.1.tool_call.id"
    )
    .is_none());
}

#[test]
fn a_huge_conversation_is_bounded_in_its_span() {
    // 2,000 messages of 500 bytes, the cap at 64 bytes: each text is capped, and past the
    // request's budget (16 caps, at least 64 KiB) messages are dropped and counted, never a
    // 400 KB span.
    let cfg = TraceConfig::from_env(TraceFormat::OpenInference, 64, |_| None);
    let messages: Vec<serde_json::Value> = (0..2000)
        .map(|_| serde_json::json!({"role": "user", "content": "x".repeat(500)}))
        .collect();
    let body = serde_json::json!({"model": "qwen-instruct", "messages": messages}).to_string();
    let span = with(cfg, &body, "application/json", ANSWER);
    assert_eq!(
        s(&span, "llm.input_messages.0.message.content"),
        format!("{}{}", "x".repeat(64), super::TRUNCATED)
    );
    assert!(
        span.dropped_attributes_count > 0,
        "{}",
        span.attributes.len()
    );
    assert!(span.encoded_len() < 100 << 10, "{}", span.encoded_len());
    // What the answer said still made it (the answer has a budget of its own).
    assert_eq!(i(&span, "llm.token_count.total"), 43);
    assert!(s(&span, "llm.output_messages.0.message.content").contains("A cat"));
}

#[test]
fn the_models_list_is_a_span_named_after_it() {
    let spans = spans(|tracer| {
        for path in ["/v1/models", "/v1/models/qwen-instruct"] {
            let mut stream = Stream::new(config());
            stream.trace_with(LlmSpan::start(tracer, &[], TraceConfig::default()));
            let headers = Headers::from([(":method", "GET"), (":path", path)]);
            match stream.on_request_headers(headers, true).unwrap() {
                Reply::Immediate(i) => assert_eq!(i.status, 200),
                _ => panic!("{path}: the gateway answers it"),
            }
        }
    });
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ListModels", "GetModel"]);
}
