//! Failover through real Envoy: one rule, three fake providers at priorities 0, 1 and 2, each
//! with its own key, path prefix and model name (they refuse another's key or prefix), and a
//! Backend that refuses connections. Each case checks what the client got, what every fake
//! saw (exactly its own model, key and path), and what the access log and the usage record say.

use std::path::Path;
use std::time::Duration;

use ai_extproc::envoy::BackendOverride;
use ai_extproc::upstreams::{
    self, FireworksOptions, Upstream, UpstreamKind, FAKE_FIREWORKS_FAULT_HEADER as FAULT,
};
use serde_json::Value;

use crate::harness::{free_port, Gateway, Setup};
use crate::otlp::Receiver;

/// The three fakes: name, path prefix, model the rule sends them (`None`: the client's).
const FAKES: [(&str, &str, Option<&str>); 3] = [
    (
        "primary",
        "/inference/v1",
        Some("accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"),
    ),
    (
        "secondary",
        "/secondary/v1",
        Some("accounts/fireworks/models/qwen3-vl-30b-a3b-thinking"),
    ),
    ("tertiary", "/tertiary/v1", None),
];
/// The client's model: also what the tertiary gets (no override).
const MODEL: &str = "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct";

fn key(name: &str) -> String {
    format!("key-{name}")
}

/// The config: rule 0 fails over primary -> secondary -> tertiary (BackendTrafficPolicy:
/// two retries, one attempt per priority); rule 1 has a Backend that refuses connections
/// first; rule 2 has primary and secondary weighted 3:1 at priority 0, tertiary at 1.
fn config(dir: &Path) -> std::path::PathBuf {
    let mut yaml = String::from(
        r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: failover, namespace: default}
spec:
  parentRefs: [{name: gw, kind: Gateway, group: gateway.networking.k8s.io}]
  rules:
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: "MODEL"}]}]
      timeouts: {request: 30s}
      streamIdleTimeout: 2s
      backendRefs:
        - {name: primary, priority: 0, modelNameOverride: "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"}
        - {name: secondary, priority: 1, modelNameOverride: "accounts/fireworks/models/qwen3-vl-30b-a3b-thinking"}
        - {name: tertiary, priority: 2}
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: refused-first}]}]
      backendRefs:
        - {name: refused, priority: 0}
        - {name: secondary, priority: 1, modelNameOverride: "accounts/fireworks/models/qwen3-vl-30b-a3b-thinking"}
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: weighted}]}]
      backendRefs:
        - {name: primary, weight: 3, modelNameOverride: "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"}
        - {name: secondary, weight: 1, modelNameOverride: "accounts/fireworks/models/qwen3-vl-30b-a3b-thinking"}
        - {name: tertiary, priority: 1}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: failover, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: failover}]
  retry:
    numRetries: 2
    numAttemptsPerPriority: 1
    retryOn:
      triggers: [connect-failure, reset, retriable-status-codes]
      httpStatusCodes: [429, 503]
    perRetry:
      backOff: {baseInterval: 10ms, maxInterval: 50ms}
"#,
    )
    .replace("MODEL", MODEL);
    let prefixes = FAKES
        .iter()
        .map(|(n, p, _)| (*n, *p))
        .chain([("refused", "/refused/v1")]);
    for (name, prefix) in prefixes {
        yaml.push_str(&format!(
            r#"---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}, namespace: default}}
spec:
  schema: {{name: OpenAI, prefix: "{prefix}"}}
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
    let path = dir.join("failover.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

struct Fakes {
    up: Vec<Upstream>,
    _dir: tempfile::TempDir,
}

impl Fakes {
    fn get(&self, name: &str) -> &Upstream {
        let i = FAKES.iter().position(|(n, _, _)| *n == name).unwrap();
        &self.up[i]
    }

    fn counts(&self) -> Vec<usize> {
        self.up.iter().map(|u| u.recorder.len()).collect()
    }

    /// Every request a fake got carries its own key, path and model, and nothing of another's.
    fn check_each_saw_its_own(&self) {
        for ((name, prefix, model), up) in FAKES.iter().zip(&self.up) {
            for r in up.recorder.all() {
                let auth = format!("Bearer {}", key(name));
                assert_eq!(r.header("authorization"), Some(auth.as_str()), "{name}");
                assert!(r.path.starts_with(prefix), "{name}: {}", r.path);
                assert_eq!(
                    r.json().unwrap()["model"].as_str(),
                    Some(model.unwrap_or(MODEL)),
                    "{name}"
                );
                assert_eq!(r.header("host"), Some("api.fireworks.ai"), "{name}");
                assert_eq!(r.sni.as_deref(), Some("api.fireworks.ai"), "{name}");
                for (n, v) in &r.headers {
                    assert!(
                        !n.starts_with("x-ai-eg-") && !n.starts_with("x-envoy-"),
                        "{name} got {n}"
                    );
                    for (other, _, _) in FAKES.iter().filter(|(o, _, _)| o != name) {
                        assert!(!v.contains(&key(other)), "{name} got {other}'s key in {n}");
                    }
                }
            }
        }
    }
}

async fn start() -> (Gateway, Fakes) {
    start_traced(None).await
}

/// With `otlp`, the processor runs as its own process exporting spans there.
async fn start_traced(otlp: Option<&str>) -> (Gateway, Fakes) {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Vec::new();
    let mut overrides = Vec::new();
    for (name, prefix, _) in FAKES {
        let u = upstreams::spawn(
            UpstreamKind::Fireworks(FireworksOptions {
                api_key: key(name),
                prefix: prefix.into(),
                name: name.into(),
                stream_interval: Duration::from_millis(2),
                ..FireworksOptions::default()
            }),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, u.ca_pem.clone().unwrap()).unwrap();
        overrides.push(BackendOverride {
            backend: name.into(),
            address: Some(u.addr.into()),
            ca_file: Some(ca),
        });
        up.push(u);
    }
    // Nothing listens there: connections are refused.
    overrides.push(BackendOverride {
        backend: "refused".into(),
        address: Some(free_port().into()),
        ca_file: None,
    });
    let gw = Gateway::start_with(Setup {
        config: vec![config(dir.path())],
        fake: false,
        test_upstream: false,
        overrides,
        processor_process: otlp.is_some(),
        processor_global_args: otlp
            .map(|e| vec!["--otlp-endpoint".to_string(), e.to_string()])
            .unwrap_or_default(),
        ..Setup::default()
    })
    .await;
    (gw, Fakes { up, _dir: dir })
}

fn chat(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Hello!"}],
        "stream": stream,
    })
    .to_string()
}

/// The usage records written so far (JSON lines).
fn records(gw: &Gateway) -> Vec<Value> {
    gw.inner_usage_log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn last_record(gw: &Gateway, count: usize) -> Value {
    for _ in 0..100 {
        let r = records(gw);
        if r.len() >= count {
            return r[count - 1].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no usage record {count}: {:?}", records(gw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_fails_over_with_each_attempt_rewritten_for_its_backend() {
    let (gw, fakes) = start().await;
    let mut seen = 0;
    let mut logged = 0;

    // The primary answers: nothing else is tried.
    let r = gw
        .post("/v1/chat/completions", &chat(MODEL, false), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(fakes.counts(), [1, 0, 0]);
    assert!(r.header("x-ai-eg-attempts").is_none());
    seen += 1;
    let rec = last_record(&gw, seen).await;
    assert_eq!(rec["backend"], "default/primary");
    assert_eq!(rec["attempts"], 1);
    assert_eq!(rec["failed_attempts"], serde_json::json!([]));

    // 503, 429 and a connection closed unanswered on the primary: the secondary answers, with
    // its own model in the client's body; nothing of the primary's reaches it.
    for fault in ["503", "429", "drop"] {
        let before = fakes.counts();
        let r = gw
            .post(
                "/v1/chat/completions",
                &chat(MODEL, false),
                &[(FAULT, &format!("primary={fault}"))],
            )
            .await;
        assert_eq!(r.status, 200, "{fault}: {}", r.text);
        assert_eq!(
            r.json()["model"],
            "accounts/fireworks/models/qwen3-vl-30b-a3b-thinking",
            "{fault}"
        );
        assert_eq!(
            fakes.counts(),
            [before[0] + 1, before[1] + 1, before[2]],
            "{fault}"
        );
        seen += 1;
        let rec = last_record(&gw, seen).await;
        assert_eq!(rec["backend"], "default/secondary", "{fault}");
        assert_eq!(rec["attempts"], 2, "{fault}");
        let reason = if fault == "drop" { "no answer" } else { fault };
        assert_eq!(
            rec["failed_attempts"],
            serde_json::json!([{"backend": "default/primary", "reason": reason}]),
            "{fault}"
        );
        // The usage is the secondary's, charged to it.
        assert!(rec["total_tokens"].as_u64().unwrap() > 0, "{fault}");
    }
    logged += 4;
    let log = gw.access_log_entries(logged).await;
    let entry = &log[logged - 1];
    assert_eq!(entry["backend"], "default/secondary");
    assert_eq!(entry["attempts"], "default/primary=;default/secondary=200");

    // Primary and secondary fail: the tertiary gets the client's own model under its prefix.
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(MODEL, false),
            &[(FAULT, "primary=503,secondary=503")],
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "{} {:?}",
        r.text,
        fakes.get("tertiary").recorder.all()
    );
    assert_eq!(fakes.get("tertiary").recorder.len(), 1);
    seen += 1;
    let rec = last_record(&gw, seen).await;
    assert_eq!(rec["backend"], "default/tertiary");
    assert_eq!(rec["attempts"], 3);

    // Everything fails: retries stop at numRetries (2: one attempt each), and the client gets
    // the last status in OpenAI's shape.
    let before = fakes.counts();
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(MODEL, false),
            &[(FAULT, "primary=503,secondary=503,tertiary=503")],
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.json()["error"]["message"].is_string(), "{}", r.text);
    let after = fakes.counts();
    assert_eq!(
        after,
        [before[0] + 1, before[1] + 1, before[2] + 1],
        "one attempt per priority, then stop"
    );
    seen += 1;
    let rec = last_record(&gw, seen).await;
    assert_eq!(rec["backend"], "default/tertiary");
    assert_eq!(rec["attempts"], 3);
    assert_eq!(rec["total_tokens"], 0, "an error is never charged");

    // A 400 is the request's fault: never retried.
    let before = fakes.counts();
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(MODEL, false),
            &[(FAULT, "primary=echo-json")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(fakes.counts(), [before[0] + 1, before[1], before[2]]);
    seen += 1;

    // A stream fails over before its first byte, and the client sees one clean stream.
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(MODEL, true),
            &[(FAULT, "primary=503")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("data: [DONE]"), "{}", r.text);
    assert!(
        r.text
            .contains("accounts/fireworks/models/qwen3-vl-30b-a3b-thinking"),
        "{}",
        r.text
    );
    seen += 1;
    let rec = last_record(&gw, seen).await;
    assert_eq!(
        (rec["backend"].as_str(), rec["stream"].as_bool()),
        (Some("default/secondary"), Some(true))
    );
    assert!(rec["output_tokens"].as_u64().unwrap() > 0);

    // A primary that accepts and then says nothing: given up after the rule's
    // streamIdleTimeout (2 s), and the secondary answers.
    let started = std::time::Instant::now();
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(MODEL, false),
            &[(FAULT, "primary=hang")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    seen += 1;
    let rec = last_record(&gw, seen).await;
    assert_eq!(rec["backend"], "default/secondary");

    // A Backend that refuses connections: the next priority answers.
    let r = gw
        .post("/v1/chat/completions", &chat("refused-first", false), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    seen += 1;
    let rec = last_record(&gw, seen).await;
    assert_eq!(rec["backend"], "default/secondary");
    assert_eq!(
        rec["failed_attempts"],
        serde_json::json!([{"backend": "default/refused", "reason": "no answer"}])
    );

    // Many at once: every one fails over (Envoy bounds retries at once per cluster; at its
    // default of 3 the rest got 503s).
    let fault = [(FAULT, "primary=503")];
    let body = chat(MODEL, false);
    let many = (0..24).map(|_| gw.post("/v1/chat/completions", &body, &fault));
    for r in futures_util::future::join_all(many).await {
        assert_eq!(r.status, 200, "{}", r.text);
    }

    fakes.check_each_saw_its_own();
}

/// Weights choose within the serving priority; the next priority gets nothing while it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_hold_within_a_priority() {
    let (gw, fakes) = start().await;
    const N: usize = 200;
    for _ in 0..N {
        let r = gw
            .post("/v1/chat/completions", &chat("weighted", false), &[])
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let [primary, secondary, tertiary] = fakes.counts()[..] else {
        unreachable!()
    };
    assert_eq!(primary + secondary, N);
    assert_eq!(tertiary, 0);
    // 3:1 expects 150 of 200; a fair split (100) or everything on one is far outside.
    assert!((125..=175).contains(&primary), "primary {primary} of {N}");
    fakes.check_each_saw_its_own();
}

/// Envoy AI Gateway's `provider_fallback` example, its Bedrock backend replaced by an
/// OpenAI-schema one (tests/fixtures/ai-gateway-examples): as its README says, the primary
/// speaks plain HTTP where TLS is expected, the handshake fails, and the AWS-hosted fallback
/// (here a fake with that host's certificate) answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ai_gateways_provider_fallback_example_fails_over() {
    const AWS: &str = "bedrock-runtime.us-east-1.amazonaws.com";
    const EXAMPLE_MODEL: &str = "us.amazon.nova-micro-v1:0";
    let dir = tempfile::tempdir().unwrap();
    let fallback = upstreams::spawn(
        UpstreamKind::Fireworks(FireworksOptions {
            api_key: "fallback-key".into(),
            prefix: "/v1".into(),
            host: AWS.into(),
            extra_chat_models: vec![EXAMPLE_MODEL.into()],
            ..FireworksOptions::default()
        }),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let ca = dir.path().join("aws-ca.pem");
    std::fs::write(&ca, fallback.ca_pem.clone().unwrap()).unwrap();
    // Plain HTTP where the example's BackendTLSPolicy makes Envoy speak TLS.
    let plain = upstreams::spawn(
        UpstreamKind::Test(Default::default()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let example =
        crate::harness::root().join("tests/fixtures/ai-gateway-examples/provider_fallback");
    let gw = Gateway::start_with(Setup {
        config: vec![example.join("base.yaml"), example.join("fallback.yaml")],
        fake: false,
        test_upstream: false,
        overrides: vec![
            BackendOverride {
                backend: "provider-fallback-always-failing-upstream".into(),
                address: Some(plain.addr.into()),
                ca_file: None,
            },
            BackendOverride {
                backend: "provider-fallback-aws".into(),
                address: Some(fallback.addr.into()),
                ca_file: Some(ca),
            },
        ],
        ..Setup::default()
    })
    .await;
    let r = gw
        .post("/v1/chat/completions", &chat(EXAMPLE_MODEL, false), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["model"], EXAMPLE_MODEL);
    assert!(
        plain.recorder.is_empty(),
        "TLS never got through to the plain upstream"
    );
    let seen = fallback.recorder.all();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].sni.as_deref(), Some(AWS));
    assert_eq!(seen[0].header("authorization"), Some("Bearer fallback-key"));
    let rec = last_record(&gw, 1).await;
    assert_eq!(rec["backend"], "default/provider-fallback-aws");
    assert_eq!(
        rec["failed_attempts"],
        serde_json::json!([{"backend": "default/provider-fallback-always-failing-upstream", "reason": "no answer"}])
    );
    let log = gw.access_log_entries(1).await;
    assert_eq!(
        log[0]["attempts"],
        "default/provider-fallback-always-failing-upstream=;default/provider-fallback-aws=200"
    );
    assert_eq!(log[0]["backend"], "default/provider-fallback-aws");
}

/// A request that failed over is one span, each attempt an `attempt` event: the backend that
/// failed and its status, then the one that answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_over_request_is_one_span_with_its_attempts_as_events() {
    let (receiver, endpoint) = Receiver::start().await;
    let (gw, _fakes) = start_traced(Some(&endpoint)).await;
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(MODEL, false),
            &[(FAULT, "primary=503")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let spans = receiver
        .wait_for("a ChatCompletion span", |spans| {
            spans.iter().any(|s| s.name == "ChatCompletion")
        })
        .await;
    let span = spans
        .iter()
        .find(|s| s.name == "ChatCompletion")
        .unwrap_or_else(|| panic!("no ChatCompletion span: {spans:?}"));
    let attempts: Vec<(&str, &str, &str)> = span
        .events
        .iter()
        .filter(|(name, _)| name == "attempt")
        .map(|(_, a)| {
            (
                a["attempt"].as_str(),
                a["backend"].as_str(),
                a["status"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            ("1", "default/primary", "503"),
            ("2", "default/secondary", "200")
        ],
        "{span:?}"
    );
    assert_eq!(span.attrs["ai_gateway.backend"], "default/secondary");
    assert!(!span.error, "{span:?}");
}
