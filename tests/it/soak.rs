//! Soak: mixed traffic (chat, streams, embeddings, client and provider errors) for
//! `SOAK_SECONDS` (60 in `make test`, 600 in `make soak`) against a separately running
//! processor, sampling its RSS: flat after warm-up, and no error the traffic did not ask for.
//! The minute-long requests of `long.rs` run beside it, so the suite pays that minute once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ai_extproc::upstreams::FAKE_FIREWORKS_FAULT_HEADER as FAULT;

use crate::ops::{start_serve, Stack};

/// One kind of request and the status it must get.
struct Kind {
    path: &'static str,
    body: &'static str,
    fault: Option<&'static str>,
    status: u16,
}

const KINDS: [Kind; 6] = [
    Kind {
        path: "/v1/chat/completions",
        body: r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#,
        fault: None,
        status: 200,
    },
    Kind {
        path: "/v1/chat/completions",
        body: r#"{"model":"qwen-thinking","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#,
        fault: None,
        status: 200,
    },
    Kind {
        path: "/v1/embeddings",
        body: r#"{"model":"qwen-embed","input":["a","b"]}"#,
        fault: None,
        status: 200,
    },
    Kind {
        path: "/v1/chat/completions",
        body: r#"{"model":"no-such-model","messages":[{}]}"#,
        fault: None,
        status: 404,
    },
    Kind {
        path: "/v1/completions",
        body: r#"{"model":"qwen-instruct","prompt":"#,
        fault: None,
        status: 400,
    },
    Kind {
        path: "/v1/chat/completions",
        body: r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hi"}]}"#,
        fault: Some("429"),
        status: 429,
    },
];

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn soak_and_minute_long_requests() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    tokio::join!(
        soak_mixed_traffic_keeps_memory_flat(seconds),
        crate::long::minute_long_requests_leave_envoy_serving()
    );
}

async fn soak_mixed_traffic_keeps_memory_flat(seconds: u64) {
    let secret = "fw_soak_key";
    let serve = start_serve(secret, &["--log", "warn"]).await;
    let pid = serve.child.id().unwrap();
    let stack = Stack::start_with(&serve, secret, Duration::from_millis(2)).await;
    // Stack::start returns once Envoy answers.
    let base = stack.base.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (base, stop) = (base.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut done, mut unexpected) = (0u64, Vec::new());
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let k = &KINDS[i % KINDS.len()];
                i += 1;
                let mut req = http
                    .post(format!("{base}{}", k.path))
                    .header("content-type", "application/json")
                    .body(k.body);
                if let Some(f) = k.fault {
                    req = req.header(FAULT, f);
                }
                let status = match req.send().await {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                done += 1;
                if status != k.status && unexpected.len() < 10 {
                    unexpected.push(format!("{} {} -> {status}", k.path, k.body));
                }
            }
            (done, unexpected)
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(rss_kb(pid));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut total, mut unexpected) = (0, Vec::new());
    for w in workers {
        let (d, u) = w.await.unwrap();
        total += d;
        unexpected.extend(u);
    }
    let quarter = (samples.len() / 4).max(1);
    let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64 / 1024.0;
    let warm = mean(&samples[quarter..2 * quarter]);
    let end = mean(&samples[samples.len() - quarter..]);
    let peak = *samples.iter().max().unwrap() as f64 / 1024.0;
    println!(
        "soak: {seconds}s, {total} requests ({:.0}/s), RSS after warm-up {warm:.1} MB, last quarter {end:.1} MB, peak {peak:.1} MB, unexpected {}",
        total as f64 / seconds as f64,
        unexpected.len()
    );
    assert!(
        unexpected.is_empty(),
        "errors the traffic did not ask for: {unexpected:?}"
    );
    assert!(
        total > seconds * 50,
        "too little traffic to mean anything: {total}"
    );
    assert!(
        end <= warm * 1.2 + 2.0,
        "RSS grew after warm-up: {warm:.1} MB -> {end:.1} MB"
    );
}
