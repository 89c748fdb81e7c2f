//! Operating ai-extproc: hot reload under load (processor and Envoy), health transitions,
//! graceful drain, metrics exposition and secret-free logs.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ai_extproc::config::{self, CompileOptions};
use ai_extproc::envoy::{render_yaml, BackendOverride, EnvoyOptions, ProcessorAddress};
use ai_extproc::upstreams::{self, FireworksOptions, UpstreamKind};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::harness::{
    envoy_bin, examples, free_port, get, root, terminate, wait_for_200, wait_for_async, Gateway,
    Setup, GUIDE_KEY,
};

/// `name{labels} value` lines of a Prometheus exposition whose name and labels contain all of `parts`.
pub(crate) fn metric_values(text: &str, name: &str, parts: &[&str]) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn reload_under_load_applies_good_changes_and_rejects_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let basic = dir.path().join("basic.yaml");
    let fireworks = dir.path().join("fireworks.yaml");
    std::fs::copy(root().join("examples/basic.yaml"), &basic).unwrap();
    let original = std::fs::read_to_string(root().join("examples/fireworks.yaml")).unwrap();
    std::fs::write(&fireworks, &original).unwrap();
    let gw = Arc::new(
        Gateway::start_with(Setup {
            config: vec![basic, fireworks.clone()],
            reload_interval: Some(Duration::from_millis(100)),
            ..Setup::default()
        })
        .await,
    );
    let handle = gw.inner.config.clone();
    assert_eq!(handle.generation(), 1);

    // Steady load during every change below; every request must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (gw, stop) = (gw.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = gw
                    .post(
                        "/v1/chat/completions",
                        r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hi"}]}"#,
                        &[],
                    )
                    .await;
                statuses.push(r.status);
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. A good change for the processor: a new override.
    let changed = original.replace(
        "modelNameOverride: accounts/fireworks/models/qwen3-vl-235b-a22b-instruct",
        "modelNameOverride: accounts/fireworks/models/llama-v3p1-8b-instruct",
    );
    assert_ne!(changed, original);
    std::fs::write(&fireworks, &changed).unwrap();
    wait_for("generation 2", || handle.generation() == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = gw.fireworks().last().unwrap().json().unwrap();
    assert_eq!(
        seen["model"],
        "accounts/fireworks/models/llama-v3p1-8b-instruct"
    );

    // 2. A bad change: rejected, the last good config stays.
    std::fs::write(&fireworks, changed.replace("type: Exact", "type: Prefix")).unwrap();
    let metrics = gw.admin_base() + "/metrics";
    let mut rejected = 0.0;
    for _ in 0..100 {
        let (_, text) = get(&gw.http, &metrics).await;
        rejected = metric_values(
            &text,
            "ai_extproc_config_reloads_total",
            &["result=\"rejected\""],
        )
        .first()
        .copied()
        .unwrap_or(0.0);
        if rejected > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rejected, 1.0);
    assert_eq!(handle.generation(), 2);

    // 3. A route change: a new model. Envoy is hot-restarted with the new route.
    let with_new_rule = changed.replace(
        "  rules:\n",
        "  rules:\n    - matches:\n        - headers:\n            - type: Exact\n              name: x-ai-eg-model\n              value: qwen-new\n      backendRefs:\n        - name: envoy-ai-gateway-fireworks\n          modelNameOverride: accounts/fireworks/models/qwen3-vl-235b-a22b-instruct\n",
    );
    std::fs::write(&fireworks, &with_new_rule).unwrap();
    wait_for("generation 3", || handle.generation() == 3).await;
    let mut epoch = gw.inner.envoy_epoch.clone();
    tokio::time::timeout(Duration::from_secs(30), epoch.wait_for(|e| *e == 1))
        .await
        .unwrap()
        .unwrap();
    // A new connection reaches the new Envoy (pooled ones finish on the old one while it drains).
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.base))
        .header("content-type", "application/json")
        .body(r#"{"model":"qwen-new","messages":[{"role":"user","content":"Hi"}]}"#)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let statuses = w.await.unwrap();
        total += statuses.len();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "a request failed during a reload: {statuses:?}"
        );
    }
    assert!(total > 30, "load too light to mean anything: {total}");
    let (_, text) = get(&gw.http, &metrics).await;
    assert_eq!(
        metric_values(&text, "ai_extproc_config_generation", &[]),
        [3.0]
    );
    assert_eq!(
        metric_values(
            &text,
            "ai_extproc_config_reloads_total",
            &["result=\"applied\""]
        ),
        [2.0]
    );
}

pub(crate) struct Serve {
    pub(crate) child: tokio::process::Child,
    pub(crate) grpc: std::net::SocketAddr,
    pub(crate) admin: std::net::SocketAddr,
    stderr: Arc<std::sync::Mutex<String>>,
}

pub(crate) async fn start_serve(secret: &str, extra: &[&str]) -> Serve {
    start_serve_on(free_port(), secret, extra).await
}

/// `ai-extproc serve` on a given gRPC address (to restart it where Envoy expects it).
pub(crate) async fn start_serve_on(
    grpc: std::net::SocketAddr,
    secret: &str,
    extra: &[&str],
) -> Serve {
    let admin = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ai-extproc"))
        .current_dir(root())
        .args([
            "--log",
            "info,ai_extproc=debug",
            "serve",
            "examples/basic.yaml",
            "examples/fireworks.yaml",
        ])
        .args([
            "--secret-env",
            "envoy-ai-gateway-fireworks-apikey=TEST_FW_KEY",
        ])
        .args([
            "--listen",
            &grpc.to_string(),
            "--admin",
            &admin.to_string(),
            "--drain-grace",
            "1s",
            "--drain-timeout",
            "20s",
        ])
        .args(extra)
        .env("TEST_FW_KEY", secret)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = Arc::new(std::sync::Mutex::new(String::new()));
    let mut pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    Serve {
        child,
        grpc,
        admin,
        stderr,
    }
}

async fn health(grpc: std::net::SocketAddr) -> Option<i32> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let r = client
        .check(HealthCheckRequest {
            service: "envoy.service.ext_proc.v3.ExternalProcessor".into(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

#[tokio::test]
async fn serve_health_metrics_logs_and_graceful_drain() {
    let secret = "fw_this_key_must_never_be_logged";
    let mut serve = start_serve(secret, &["--workers", "3"]).await;
    let http = reqwest::Client::new();
    let admin = format!("http://{}", serve.admin);
    wait_for_async("processor health SERVING", || async {
        health(serve.grpc).await == Some(ServingStatus::Serving as i32)
    })
    .await;
    assert_eq!(get(&http, &format!("{admin}/readyz")).await.0, 200);
    assert_eq!(get(&http, &format!("{admin}/healthz")).await.0, 200);

    let stack = Stack::start(&serve, secret).await;
    let base = stack.base.clone();
    let chat = |model: &str, stream: bool| {
        format!(
            r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"Hello!"}}]}}"#
        )
    };
    wait_for_200("Envoy listening", &http, &format!("{base}/v1/models"), None).await;

    // Traffic whose numbers the metrics must show.
    let mut input_tokens = 0;
    for _ in 0..3 {
        let r = http
            .post(format!("{base}/v1/chat/completions"))
            .header("x-user-id", "u1")
            .body(chat("qwen-instruct", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        input_tokens += v["usage"]["prompt_tokens"].as_u64().unwrap();
    }
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .body(chat("no-such-model", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (_, text) = get(&http, &format!("{admin}/metrics")).await;
    assert_eq!(
        metric_values(&text, "ai_extproc_runtime_workers", &[]),
        [3.0],
        "--workers sizes the runtime: {text}"
    );
    let labels = [
        "gen_ai_token_type=\"input\"",
        "gen_ai_original_model=\"qwen-instruct\"",
        "gen_ai_request_model=\"accounts/fireworks/models/qwen3-vl-235b-a22b-instruct\"",
        "gen_ai_operation_name=\"chat\"",
    ];
    assert_eq!(
        metric_values(&text, "gen_ai_client_token_usage_sum", &labels),
        [input_tokens as f64],
        "{text}"
    );
    assert_eq!(
        metric_values(&text, "gen_ai_client_token_usage_count", &labels),
        [3.0]
    );
    assert_eq!(
        metric_values(
            &text,
            "gen_ai_server_request_duration_seconds_count",
            &["gen_ai_original_model=\"qwen-instruct\""]
        ),
        [3.0]
    );
    assert_eq!(
        metric_values(
            &text,
            "ai_extproc_immediate_responses_total",
            &["status=\"404\""]
        ),
        [1.0]
    );
    assert!(metric_values(&text, "ai_extproc_streams_total", &[])[0] >= 5.0);
    assert!(!text.contains(secret), "the key reached the metrics");

    // A slow stream in flight when SIGTERM arrives completes; health flips; the process exits 0.
    let mut stream = http
        .post(format!("{base}/v1/chat/completions"))
        .body(chat("qwen-thinking", true))
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    terminate(serve.child.id().unwrap());
    wait_for_async("health NOT_SERVING", || async {
        health(serve.grpc).await == Some(ServingStatus::NotServing as i32)
    })
    .await;
    assert_eq!(get(&http, &format!("{admin}/readyz")).await.0, 503);
    let mut rest = first.to_vec();
    while let Some(c) = stream.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream was cut: {text}"
    );
    let status = tokio::time::timeout(Duration::from_secs(25), serve.child.wait())
        .await
        .expect("exits after draining")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // Logs: structured, a request id on the stream's lines, never the key.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = serve.stderr.lock().unwrap().clone();
    assert!(
        logs.contains("draining") && logs.contains("drained"),
        "{logs}"
    );
    assert!(logs.contains("request_id="), "{logs}");
    // The key this process loaded (from TEST_FW_KEY) and sent with every request above.
    assert!(
        !logs.contains(secret),
        "the provider key reached a log line"
    );
}

/// Envoy in front of a separately running processor, with the fake Fireworks.
pub(crate) struct Stack {
    pub(crate) base: String,
    pub(crate) fake: upstreams::Upstream,
    _envoy: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub(crate) async fn start(serve: &Serve, secret: &str) -> Self {
        Self::start_with(serve, secret, Duration::from_millis(100)).await
    }

    /// With the fake streaming events `interval` apart.
    pub(crate) async fn start_with(serve: &Serve, secret: &str, interval: Duration) -> Self {
        let fake = upstreams::spawn(
            UpstreamKind::Fireworks(FireworksOptions {
                api_key: secret.into(),
                stream_interval: interval,
                ..FireworksOptions::default()
            }),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, fake.ca_pem.clone().unwrap()).unwrap();
        let listen = free_port();
        let options = EnvoyOptions {
            listen,
            admin: free_port(),
            processor: ProcessorAddress::Tcp {
                host: "127.0.0.1".into(),
                port: serve.grpc.port(),
            },
            access_log: dir.path().join("access.log").display().to_string(),
            overrides: vec![BackendOverride {
                backend: "envoy-ai-gateway-fireworks".into(),
                address: Some(fake.addr.into()),
                ca_file: Some(ca),
            }],
            ..EnvoyOptions::default()
        };
        let config = config::load(&examples(), &CompileOptions::default()).unwrap();
        let bootstrap = dir.path().join("envoy.yaml");
        std::fs::write(&bootstrap, render_yaml(&config, &options)).unwrap();
        let envoy = tokio::process::Command::new(envoy_bin())
            .arg("-c")
            .arg(&bootstrap)
            .args([
                "--use-dynamic-base-id",
                "--log-level",
                "error",
                "--concurrency",
                "1",
            ])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://{listen}");
        let http = reqwest::Client::new();
        wait_for_200("Envoy listening", &http, &format!("{base}/v1/models"), None).await;
        Self {
            base,
            fake,
            _envoy: envoy,
            _dir: dir,
        }
    }
}

#[tokio::test]
async fn traces_are_exported_and_context_reaches_the_provider() {
    let (collector, endpoint) = crate::otlp::Receiver::start().await;
    let secret = "fw_trace_test_key";
    let mut serve = start_serve(secret, &["--otlp-endpoint", &endpoint]).await;
    wait_for_async("processor health SERVING", || async {
        health(serve.grpc).await == Some(ServingStatus::Serving as i32)
    })
    .await;
    let stack = Stack::start(&serve, secret).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", stack.base))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = stack.fake.recorder.last().unwrap();
    let traceparent = seen
        .header("traceparent")
        .expect("trace context reaches the provider");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], trace_id, "same trace");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the processor's span is the new parent"
    );

    // Exported on shutdown at the latest.
    terminate(serve.child.id().unwrap());
    tokio::time::timeout(Duration::from_secs(20), serve.child.wait())
        .await
        .unwrap()
        .unwrap();
    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == trace_id && s.name == "ChatCompletion"),
        "no ChatCompletion span (the request's LLM span) of the client's trace among {spans:?}"
    );
}

/// An editor's truncated save: the file's routes go, the rest stays, and it is said loudly
/// (an error line and a metric); restoring the file brings them back.
#[tokio::test]
async fn a_reload_that_empties_a_file_of_its_routes_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let basic = dir.path().join("basic.yaml");
    let fireworks = dir.path().join("fireworks.yaml");
    std::fs::copy(root().join("examples/basic.yaml"), &basic).unwrap();
    let original = std::fs::read_to_string(root().join("examples/fireworks.yaml")).unwrap();
    std::fs::write(&fireworks, &original).unwrap();
    let gw = Gateway::start_with(Setup {
        config: vec![basic, fireworks.clone()],
        reload_interval: Some(Duration::from_millis(100)),
        ..Setup::default()
    })
    .await;
    let chat = r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hi"}]}"#;
    assert_eq!(gw.post("/v1/chat/completions", chat, &[]).await.status, 200);
    let metrics = gw.admin_base() + "/metrics";
    let emptied = || async {
        let (_, text) = get(&gw.http, &metrics).await;
        metric_values(&text, "ai_extproc_config_files_emptied_total", &[])
            .first()
            .copied()
            .unwrap_or(-1.0)
    };
    assert_eq!(emptied().await, 0.0);
    std::fs::write(&fireworks, "").unwrap();
    wait_for_async("the truncated file counted", || async {
        emptied().await == 1.0
    })
    .await;
    let r = gw.post("/v1/chat/completions", chat, &[]).await;
    assert_eq!(r.status, 404, "applied: {}", r.text);
    std::fs::write(&fireworks, &original).unwrap();
    let handle = gw.inner.config.clone();
    wait_for("restored", || handle.generation() == 3).await;
    assert_eq!(gw.post("/v1/chat/completions", chat, &[]).await.status, 200);
}

/// A second `run` in the same state directory stops before it touches the first one's socket,
/// CA or bootstrap, and names the running one.
#[tokio::test]
async fn a_second_run_in_the_same_directory_refuses_to_start() {
    let gw = Gateway::start().await;
    let setup = Setup::default();
    let second = ai_extproc::local::LocalGateway::start(crate::harness::local_options(
        &setup,
        gw.state_dir(),
        &gw.state_dir().join("second-access.log"),
    ))
    .await;
    let Err(e) = second else {
        panic!("a second gateway started in the same state directory");
    };
    let text = e.to_string();
    assert!(text.contains("another ai-extproc run is using"), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id()))
            && text.contains(&gw.inner.listen.to_string()),
        "names the running one: {text}"
    );
    assert!(
        gw.state_dir().join("ai-extproc.sock").exists(),
        "the socket is untouched"
    );
    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hi"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "the first still serves: {}", r.text);
}

/// In `run`, Envoy puts the key on requests with its credential injector, after its router has
/// logged the headers: at debug level Envoy's log never shows it (with the processor's header
/// mutation it showed twice per request).
#[tokio::test]
async fn keys_never_reach_envoys_debug_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("envoy.log");
    let setup = Setup {
        processor_process: true,
        ..Setup::default()
    };
    let state = tempfile::tempdir().unwrap();
    let mut options =
        crate::harness::local_options(&setup, state.path(), &dir.path().join("access.log"));
    options.envoy_log_level = "debug".into();
    options
        .envoy_args
        .extend(["--log-path".to_string(), log.display().to_string()]);
    let gw = ai_extproc::local::LocalGateway::start(options)
        .await
        .unwrap();
    let base = format!("http://{}", gw.listen);
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/v1/chat/completions",
            r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"qwen-thinking","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#,
        ),
        ("/v1/embeddings", r#"{"model":"qwen-embed","input":"hi"}"#),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .header("authorization", "Bearer sk-client-key")
            .body(body)
            .send()
            .await
            .unwrap();
        // The fake accepts only the configured key: Envoy put it on the request.
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let seen = gw.fireworks.as_ref().unwrap().recorder.last().unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {GUIDE_KEY}").as_str())
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("router decoding headers"),
        "a debug log: {} bytes",
        text.len()
    );
    assert!(
        !text.contains(GUIDE_KEY),
        "the provider key is in Envoy's debug log"
    );
    assert!(
        !seen
            .headers
            .iter()
            .any(|(_, v)| v.contains("sk-client-key")),
        "the client's key reached the provider"
    );
    // The bootstrap carrying the key is private to this user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&gw.envoy_config)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{:o}", mode);
}
