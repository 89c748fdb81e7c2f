//! LLM spans leaving the processor: `ai-extproc run` given the global trace flags (they must
//! reach the processor it starts) exporting to an OTLP receiver run by the test, in
//! OpenTelemetry's GenAI conventions; and the same requests through real Envoy into a real
//! Arize Phoenix (OpenInference), read back from Phoenix's own API.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{envoy_bin, free_port, root, wait_for_200};
use crate::otlp::{Receiver, Seen};

/// The children of `pid`, whichever of its threads started them.
fn children(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Running (a zombie nobody reaps counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// `ai-extproc <global flags> run ...` with the examples, the fake Fireworks and the test
/// upstream, as `make run` starts it; its listen address.
fn start_run(
    dir: &std::path::Path,
    global: &[&str],
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let listen = free_port();
    let admin = free_port();
    let envoy_admin = free_port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ai-extproc"))
        .current_dir(root())
        .args(global)
        .envs(env.iter().copied())
        .args(["run", "examples/basic.yaml", "examples/fireworks.yaml"])
        .args([
            "--envoy-bin",
            envoy_bin().to_str().unwrap(),
            "--state-dir",
            dir.to_str().unwrap(),
            "--fake-fireworks",
            "envoy-ai-gateway-fireworks",
            "--test-upstream",
            "envoy-ai-gateway-basic-testupstream",
            "--listen-address",
            &listen.to_string(),
            "--admin-address",
            &envoy_admin.to_string(),
            "--admin",
            &admin.to_string(),
            "--access-log",
            "/dev/null",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, format!("http://{listen}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_hands_its_trace_flags_to_the_processor_and_spans_follow_genai() {
    let (receiver, endpoint) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start_run(
        dir.path(),
        &[
            "--otlp-endpoint",
            &endpoint,
            "--trace-format",
            "genai",
            "--log",
            "warn",
        ],
        &[],
    );
    let http = reqwest::Client::new();
    wait_for_200("run's Envoy", &http, &format!("{base}/v1/models"), None).await;
    let body = r#"{"model":"qwen-instruct","max_tokens":64,"messages":[{"role":"user","content":"Hello!"}]}"#;
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let stream = r#"{"model":"qwen-instruct","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#;
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .body(stream)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let streamed = r.text().await.unwrap();
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .body(r#"{"model":"no-such-model","messages":[{"role":"user","content":"Hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    receiver
        .wait_for("three chat spans", |spans| {
            spans.iter().filter(|s| s.name.starts_with("chat")).count() >= 3
        })
        .await;
    // `run` killed outright (it cannot stop its children): the processor it started notices
    // and stops by itself instead of holding its socket and log pipe forever.
    let run_pid = child.id().unwrap();
    let processor = children(run_pid)
        .into_iter()
        .find(|p| cmdline(*p).contains(" serve "))
        .expect("run's processor");
    child.kill().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while alive(processor) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphaned processor {processor} still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans: Vec<Seen> = receiver.spans();
    let chat: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.name == "chat qwen-instruct")
        .collect();
    assert_eq!(chat.len(), 2, "{spans:#?}");
    let json = chat
        .iter()
        .find(|s| s.attrs.contains_key("gen_ai.request.max_tokens"))
        .expect("the JSON request's span");
    assert_eq!(json.attrs["gen_ai.operation.name"], "chat");
    assert_eq!(json.attrs["gen_ai.provider.name"], "fireworks");
    assert_eq!(json.attrs["gen_ai.request.model"], "qwen-instruct");
    assert_eq!(json.attrs["gen_ai.request.max_tokens"], "64");
    assert_eq!(
        json.attrs["gen_ai.response.model"],
        answer["model"].as_str().unwrap()
    );
    assert_eq!(
        json.attrs["gen_ai.usage.input_tokens"],
        answer["usage"]["prompt_tokens"].to_string()
    );
    assert_eq!(
        json.attrs["gen_ai.usage.output_tokens"],
        answer["usage"]["completion_tokens"].to_string()
    );
    let output: Value = serde_json::from_str(&json.attrs["gen_ai.output.messages"]).unwrap();
    assert_eq!(
        output[0]["parts"][0]["content"],
        answer["choices"][0]["message"]["content"]
    );
    assert!(!json.error);
    // The stream: its output gathered from the events, its first token an event.
    let stream_span = chat
        .iter()
        .find(|s| !s.attrs.contains_key("gen_ai.request.max_tokens"))
        .unwrap();
    let output: Value = serde_json::from_str(&stream_span.attrs["gen_ai.output.messages"]).unwrap();
    let text = output[0]["parts"][0]["content"].as_str().unwrap();
    assert!(
        !text.is_empty() && streamed.contains(&text[..text.len().min(5)]),
        "{text}"
    );
    assert!(stream_span.events.iter().any(|(e, _)| e == "first_token"));
    // The refusal: an error span with its type.
    let refused = spans
        .iter()
        .find(|s| s.name.starts_with("chat") && s.error)
        .expect("an error span");
    assert_eq!(refused.attrs["error.type"], "invalid_request_error");
    // No key in any span.
    assert!(!format!("{spans:?}").contains("fw_"), "{spans:#?}");
}

/// A real Arize Phoenix (`phoenix serve` from the tests' venv, `make sdk` installs it) on
/// loopback ports with its own working directory; killed when dropped.
struct Phoenix {
    child: tokio::process::Child,
    http: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Phoenix {
    async fn start() -> Self {
        let bin = root().join(".venv/bin/phoenix");
        assert!(
            bin.exists(),
            "{} is missing: `make sdk` installs arize-phoenix",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let (http, grpc) = (free_port(), free_port());
        let mut child = tokio::process::Command::new(bin)
            .arg("serve")
            .env("PHOENIX_WORKING_DIR", dir.path())
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", http.port().to_string())
            .env("PHOENIX_GRPC_PORT", grpc.port().to_string())
            .env("PHOENIX_TELEMETRY_ENABLED", "false")
            .env("DO_NOT_TRACK", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("phoenix.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        loop {
            let up = client
                .get(format!("http://{http}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if up {
                break;
            }
            let log = std::fs::read_to_string(dir.path().join("phoenix.log")).unwrap_or_default();
            assert!(child.try_wait().unwrap().is_none(), "phoenix exited: {log}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "phoenix did not start: {log}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Self {
            child,
            http,
            grpc,
            _dir: dir,
        }
    }

    /// The spans of `project` as Phoenix's REST API gives them, once there are `count`.
    async fn spans(&self, project: &str, count: usize) -> Vec<Value> {
        let client = reqwest::Client::new();
        let url = format!("http://{}/v1/projects/{project}/spans?limit=100", self.http);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = client.get(&url).send().await.unwrap();
            let v: Value = if r.status() == 200 {
                r.json().await.unwrap()
            } else {
                Value::Null
            };
            let spans = v["data"].as_array().cloned().unwrap_or_default();
            if spans.len() >= count {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} spans in phoenix project {project}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// What the test sends: plain chat, a streamed chat with reasoning, a streamed chat with an
/// image and a forced tool call, an embedding; each one's own marker in its user text.
struct Sent {
    plain: Value,
    reasoning_stream: String,
    tool_stream: String,
    embedding: Value,
}

const IMAGE_URL: &str = "https://example.com/cat.png";
const DATA_IMAGE: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

async fn send_all(base: &str) -> Sent {
    let http = reqwest::Client::new();
    wait_for_200("run's Envoy", &http, &format!("{base}/v1/models"), None).await;
    let post = |body: Value, path: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let plain = post(
        serde_json::json!({"model": "qwen-instruct", "max_tokens": 64, "temperature": 0.3,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "plain: Hello!"}]}),
        "/v1/chat/completions",
    )
    .await;
    let reasoning_stream = post(
        serde_json::json!({"model": "qwen-thinking", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "stream: Hello!"}]}),
        "/v1/chat/completions",
    )
    .await;
    let tool_stream = post(
        serde_json::json!({"model": "qwen-instruct", "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}}],
            "tool_choice": "required",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "tool: where is this? what is the weather there?"},
                {"type": "image_url", "image_url": {"url": IMAGE_URL}},
                {"type": "image_url", "image_url": {"url": DATA_IMAGE}}]}]}),
        "/v1/chat/completions",
    )
    .await;
    let embedding = post(
        serde_json::json!({"model": "qwen-embed", "input": "embed: hello world"}),
        "/v1/embeddings",
    )
    .await;
    Sent {
        plain: serde_json::from_str(&plain).unwrap(),
        reasoning_stream,
        tool_stream,
        embedding: serde_json::from_str(&embedding).unwrap(),
    }
}

/// The usage a stream's last chunk reported.
fn stream_usage(sse: &str) -> Value {
    sse.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["usage"].is_object())
        .map(|v| v["usage"].clone())
        .expect("a usage chunk")
}

/// The span whose user text starts with `marker` (or whose input mentions it).
fn span_with<'a>(spans: &'a [Value], marker: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["attributes"].to_string().contains(marker))
        .unwrap_or_else(|| panic!("no span with {marker:?} in {spans:#?}"))
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    let v = &span["attributes"][key];
    assert!(!v.is_null(), "{key} missing from {span:#}");
    v
}

fn tokens(span: &Value, kind: &str) -> u64 {
    attr(span, &format!("llm.token_count.{kind}"))
        .as_u64()
        .unwrap()
}

/// Through real Envoy into real Arize Phoenix: OpenInference spans read back from Phoenix's
/// REST API carry the model, the usage, the input and output messages (a streamed answer's
/// text, reasoning and tool call gathered from its events), the image URLs (a `data:` URL as a
/// placeholder) and the tools; with the privacy switches on, what they hide is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openinference_spans_in_phoenix_with_and_without_the_privacy_switches() {
    let phoenix = Phoenix::start().await;
    let otlp = format!("http://{}", phoenix.grpc);
    let dir = tempfile::tempdir().unwrap();

    let (mut run, base) = start_run(dir.path(), &["--otlp-endpoint", &otlp], &[]);
    let sent = send_all(&base).await;
    let spans = phoenix.spans("default", 4).await;
    run.kill().await.unwrap();

    // Plain chat: operation, kind, provider, model, parameters, messages, usage, answer.
    let plain = span_with(&spans, "plain: Hello!");
    assert_eq!(plain["name"], "ChatCompletion");
    // Phoenix reads `openinference.span.kind` into its own field.
    assert_eq!(plain["span_kind"], "LLM");
    assert_eq!(attr(plain, "llm.system"), "openai");
    assert_eq!(attr(plain, "llm.provider"), "fireworks");
    assert_eq!(attr(plain, "llm.model_name"), &sent.plain["model"]);
    let params: Value =
        serde_json::from_str(attr(plain, "llm.invocation_parameters").as_str().unwrap()).unwrap();
    assert_eq!(params["max_tokens"], 64);
    assert_eq!(params["temperature"], 0.3);
    assert!(params.get("messages").is_none(), "{params}");
    assert_eq!(attr(plain, "llm.input_messages.0.message.role"), "system");
    assert_eq!(
        attr(plain, "llm.input_messages.0.message.content"),
        "Be brief."
    );
    assert_eq!(attr(plain, "llm.input_messages.1.message.role"), "user");
    assert_eq!(
        attr(plain, "llm.output_messages.0.message.content"),
        &sent.plain["choices"][0]["message"]["content"]
    );
    assert_eq!(
        tokens(plain, "prompt"),
        sent.plain["usage"]["prompt_tokens"]
    );
    assert_eq!(
        tokens(plain, "completion"),
        sent.plain["usage"]["completion_tokens"]
    );
    assert_eq!(tokens(plain, "total"), sent.plain["usage"]["total_tokens"]);
    assert_eq!(attr(plain, "input.mime_type"), "application/json");
    assert!(attr(plain, "input.value")
        .as_str()
        .unwrap()
        .contains("plain: Hello!"));
    assert_eq!(plain["status_code"], "UNSET");

    // The streamed answer with reasoning: gathered from the events, usage from the last chunk.
    let stream = span_with(&spans, "stream: Hello!");
    let usage = stream_usage(&sent.reasoning_stream);
    assert_eq!(tokens(stream, "prompt"), usage["prompt_tokens"]);
    assert_eq!(tokens(stream, "completion"), usage["completion_tokens"]);
    assert_eq!(
        tokens(stream, "completion_details.reasoning"),
        usage["completion_tokens_details"]["reasoning_tokens"]
    );
    let text = attr(stream, "llm.output_messages.0.message.content")
        .as_str()
        .unwrap();
    assert!(text.starts_with("Hello!"), "{text}");
    let reasoning = attr(stream, "llm.output_messages.0.message.reasoning_content");
    assert!(reasoning.as_str().unwrap().contains("greet"), "{reasoning}");
    assert!(
        stream["events"].to_string().contains("first_token"),
        "time to first token is an event: {stream:#}"
    );

    // Image and tool call: the URL kept, the data: URL a placeholder, the tool listed, the
    // streamed call reassembled.
    let tool = span_with(&spans, "tool: where is this?");
    let contents = "llm.input_messages.0.message.contents";
    assert_eq!(
        attr(tool, &format!("{contents}.0.message_content.type")),
        "text"
    );
    assert_eq!(
        attr(tool, &format!("{contents}.1.message_content.type")),
        "image"
    );
    assert_eq!(
        attr(
            tool,
            &format!("{contents}.1.message_content.image.image.url")
        ),
        IMAGE_URL
    );
    let placeholder = attr(
        tool,
        &format!("{contents}.2.message_content.image.image.url"),
    );
    assert!(
        placeholder
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,[")
            && !placeholder.as_str().unwrap().contains("iVBOR"),
        "{placeholder}"
    );
    assert!(attr(tool, "llm.tools.0.tool.json_schema")
        .as_str()
        .unwrap()
        .contains("get_weather"));
    let call = "llm.output_messages.0.message.tool_calls.0.tool_call";
    assert_eq!(attr(tool, &format!("{call}.function.name")), "get_weather");
    let args: Value = serde_json::from_str(
        attr(tool, &format!("{call}.function.arguments"))
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args, serde_json::json!({"city": "example"}));
    let usage = stream_usage(&sent.tool_stream);
    assert_eq!(tokens(tool, "completion"), usage["completion_tokens"]);

    // The embedding.
    let embed = span_with(&spans, "embed: hello world");
    assert_eq!(embed["name"], "Embeddings");
    assert_eq!(embed["span_kind"], "EMBEDDING");
    assert_eq!(
        attr(embed, "embedding.model_name"),
        &sent.embedding["model"]
    );
    assert_eq!(
        attr(embed, "embedding.embeddings.0.embedding.text"),
        "embed: hello world"
    );
    assert_eq!(
        tokens(embed, "prompt"),
        sent.embedding["usage"]["prompt_tokens"]
    );

    // The privacy switches: images in inputs and every output hidden, the rest kept. These
    // exports go gzip-compressed (Phoenix takes them as any OTLP/gRPC collector does).
    let dir = tempfile::tempdir().unwrap();
    let (mut run, base) = start_run(
        dir.path(),
        &["--otlp-endpoint", &otlp],
        &[
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OPENINFERENCE_HIDE_INPUT_IMAGES", "true"),
            ("OPENINFERENCE_HIDE_OUTPUTS", "true"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "openinference.project.name=hidden",
            ),
        ],
    );
    let sent = send_all(&base).await;
    let spans = phoenix.spans("hidden", 4).await;
    run.kill().await.unwrap();
    let plain = span_with(&spans, "plain: Hello!");
    assert_eq!(attr(plain, "output.value"), "__REDACTED__");
    assert_eq!(
        attr(plain, "llm.output_messages.0.message.content"),
        "__REDACTED__"
    );
    assert_eq!(
        tokens(plain, "completion"),
        sent.plain["usage"]["completion_tokens"]
    );
    let tool = span_with(&spans, "tool: where is this?");
    for j in [1, 2] {
        assert_eq!(
            attr(
                tool,
                &format!("{contents}.{j}.message_content.image.image.url")
            ),
            "__REDACTED__"
        );
    }
    assert_eq!(
        attr(tool, &format!("{call}.function.arguments")),
        "__REDACTED__"
    );
    let all = serde_json::to_string(&spans).unwrap();
    assert!(
        !all.contains(IMAGE_URL) && !all.contains("Hello! How can I help"),
        "{all}"
    );
    // Neither run's key nor any credential header reached Phoenix.
    assert!(!all.to_ascii_lowercase().contains("authorization") && !all.contains("fw_"));
    drop(phoenix.child);
}
