//! Faults, bounded and on loopback: the processor killed under load, an upstream that resets
//! mid-stream or hangs. Clients get a clear status quickly, the processor's stream state is
//! cleaned up, and usage already seen is recorded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ai_extproc::upstreams::FAKE_FIREWORKS_FAULT_HEADER as FAULT;

use crate::harness::{get, root, wait_for_200, wait_for_async, Gateway, Setup};
use crate::ops::{metric_values, start_serve, start_serve_on, Stack};

const CHAT: &str = r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#;

async fn streams_active(gw: &Gateway) -> f64 {
    let (_, text) = get(&gw.http, &(gw.admin_base() + "/metrics")).await;
    metric_values(&text, "ai_extproc_streams_active", &[])[0]
}

#[tokio::test]
async fn upstream_reset_mid_stream_records_the_usage_seen() {
    let gw = Gateway::start().await;
    let mut records = gw.inner.usage.as_ref().unwrap().subscribe(16);
    let resp = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .header(FAULT, "reset")
        .body(r#"{"model":"qwen-instruct","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the stream had started");
    // The client sees the stream break (a transport error, or a chunked body cut short), never
    // a stream that ends as if complete.
    let body = resp.text().await;
    assert!(
        body.is_err(),
        "the reset reached the client as a clean end: {body:?}"
    );
    let rec = tokio::time::timeout(Duration::from_secs(5), records.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(rec.usage_seen, "usage seen before the reset is recorded");
    assert_eq!(
        (rec.input_tokens, rec.output_tokens, rec.total_tokens),
        (7, 2, 9)
    );
    wait_for_async("stream state cleaned up", || async {
        streams_active(&gw).await == 0.0
    })
    .await;
}

#[tokio::test]
async fn upstream_that_hangs_gets_a_timeout_in_openai_shape() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(root().join("examples/fireworks.yaml")).unwrap();
    let with_timeout = yaml.replace(
        "          modelNameOverride: accounts/fireworks/models/qwen3-vl-235b-a22b-instruct\n",
        "          modelNameOverride: accounts/fireworks/models/qwen3-vl-235b-a22b-instruct\n      timeouts:\n        request: 2s\n",
    );
    assert_ne!(yaml, with_timeout);
    let file = dir.path().join("fireworks.yaml");
    std::fs::write(&file, with_timeout).unwrap();
    let gw = Gateway::start_with(Setup {
        config: vec![root().join("examples/basic.yaml"), file],
        ..Setup::default()
    })
    .await;
    let started = Instant::now();
    let r = gw
        .post("/v1/chat/completions", CHAT, &[(FAULT, "hang")])
        .await;
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert!(
        took < Duration::from_secs(10),
        "bounded by the rule's timeout: {took:?}"
    );
    // Envoy's own timeout, said as such: not "the provider answered 504".
    let v = r.json();
    assert_eq!(v["error"]["code"], "upstream_timeout", "{v}");
    assert_eq!(v["error"]["type"], "server_error", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("The provider did not answer in time"),
        "{v}"
    );
    wait_for_async("stream state cleaned up", || async {
        streams_active(&gw).await == 0.0
    })
    .await;
}

#[tokio::test]
async fn processor_killed_under_load_fails_fast_and_recovers() {
    let secret = "fw_fault_key";
    let mut serve = start_serve(secret, &[]).await;
    let grpc = serve.grpc;
    let stack = Stack::start(&serve, secret).await;
    let url = format!("{}/v1/chat/completions", stack.base);

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (url, stop) = (url.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let status = http
                    .post(&url)
                    .body(CHAT)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                seen.push((status, t.elapsed()));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    serve.child.start_kill().unwrap();
    serve.child.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut serve = start_serve_on(grpc, secret, &[]).await;
    wait_for_200(
        "traffic recovers",
        &reqwest::Client::new(),
        &url,
        Some(CHAT),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for w in workers {
        statuses.extend(w.await.unwrap());
    }
    let failures: Vec<_> = statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(!failures.is_empty(), "the outage was not noticed");
    assert!(
        failures.iter().all(|(s, _)| *s == 500),
        "failures are Envoy's 500 (fail closed): {failures:?}"
    );
    let slowest = statuses.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        slowest < Duration::from_secs(2),
        "a request waited {slowest:?} during the outage"
    );
    assert_eq!(statuses.last().unwrap().0, 200, "traffic recovered");
    serve.child.start_kill().unwrap();
}

#[tokio::test]
async fn in_run_mode_a_killed_processor_is_restarted() {
    let gw = Gateway::start_with(Setup {
        processor_process: true,
        ..Setup::default()
    })
    .await;
    let r = gw.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // `LocalOptions::processor_workers` reaches the child: a current-thread runtime.
    let (_, text) = get(&gw.http, &(gw.admin_base() + "/metrics")).await;
    assert_eq!(
        crate::ops::metric_values(&text, "ai_extproc_runtime_workers", &[]),
        [1.0],
        "{text}"
    );
    let mut pid = gw.inner.processor_pid.clone();
    let first = pid.borrow().expect("a processor child");
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap()
        .success());
    // Restarted without anyone asking: a new pid, and traffic flows again.
    tokio::time::timeout(
        Duration::from_secs(10),
        pid.wait_for(|p| p.is_some_and(|p| p != first)),
    )
    .await
    .expect("restarted")
    .unwrap();
    let url = format!("{}/v1/chat/completions", gw.base);
    wait_for_200("traffic recovers", &gw.http, &url, Some(CHAT)).await;
}

#[tokio::test]
async fn in_run_mode_a_killed_envoy_is_restarted_and_readyz_says_so_meanwhile() {
    let gw = Gateway::start_with(Setup {
        processor_process: true,
        ..Setup::default()
    })
    .await;
    let readyz = gw.admin_base() + "/readyz";
    wait_for_async("processor ready", || async {
        get(&gw.http, &readyz).await.0 == 200
    })
    .await;
    let mut envoy = gw.inner.envoy.clone();
    let first = envoy.borrow().pid().expect("Envoy running");
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap()
        .success());
    // While Envoy is down (restarts back off 500 ms first), the processor is not ready, and
    // says why.
    let mut down = None;
    for _ in 0..100 {
        let (status, text) = get(&gw.http, &readyz).await;
        if status == 503 {
            down = Some(text);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let down = down.expect("/readyz never said Envoy was down");
    assert!(down.contains("Envoy is not ready"), "{down}");
    // Restarted without anyone asking: a new process, and traffic flows again.
    tokio::time::timeout(
        Duration::from_secs(20),
        envoy.wait_for(|s| s.restarts() == 1 && s.pid().is_some_and(|p| p != first)),
    )
    .await
    .expect("Envoy restarted")
    .unwrap();
    let url = format!("{}/v1/chat/completions", gw.base);
    wait_for_200("traffic recovers", &gw.http, &url, Some(CHAT)).await;
    assert_eq!(get(&gw.http, &readyz).await.0, 200);
}

#[tokio::test]
async fn a_success_with_a_garbage_body_becomes_a_clear_502() {
    let gw = Gateway::start().await;
    let r = gw
        .post("/v1/chat/completions", CHAT, &[(FAULT, "garbage")])
        .await;
    assert_eq!(r.status, 502, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let entries = gw.access_log_entries(1).await;
    assert!(entries[0]["total_tokens"].is_null());
}
