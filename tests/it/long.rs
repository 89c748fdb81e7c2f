//! Requests that last a minute, through real Envoy and `run` (the processor a supervised
//! child): a body held half-sent, a provider that never answers, a stream the client abandons.
//! Envoy 1.40 once crashed when such a request ended (the `ext_proc_graceful_grpc_close` flag);
//! afterwards the same Envoy process must still answer. The cases run side by side, and beside
//! the soak (`soak.rs`), so they cost `make test` about one minute in all. Each request is
//! traced: its span must cover the whole minute and say what the request got.

use std::time::{Duration, Instant};

use ai_extproc::local::EnvoyState;
use ai_extproc::upstreams::FAKE_FIREWORKS_FAULT_HEADER as FAULT;
use tokio::io::AsyncWriteExt;

use crate::harness::{Gateway, Setup};
use crate::otlp::{Receiver, Seen};

/// Past the ~50 s at which Envoy used to crash.
const HOLD: Duration = Duration::from_secs(61);
const CHAT: &str = r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#;

/// Each case's client `traceparent` (sampled), by which its span is found.
fn traceparent(case: u8) -> String {
    format!("00-{}-00f067aa0ba902b7-01", trace_id(case))
}

fn trace_id(case: u8) -> String {
    format!("4bf92f3577b34da6a3ce929d0e0e47{case:02x}")
}

/// Headers and part of a body, then nothing for `HOLD`, then the client hangs up.
async fn half_sent_body(gw: &Gateway) {
    let mut s = tokio::net::TcpStream::connect(gw.inner.listen)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\ntraceparent: {}\r\ncontent-length: 500\r\n\r\n{{\"model\":\"qwen-instruct\",",
        traceparent(1)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(HOLD).await;
    drop(s);
}

/// A provider that never answers; the client gives up after `HOLD` (the route allows 300 s).
async fn hung_provider(gw: &Gateway) {
    let started = Instant::now();
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .header(FAULT, "hang")
        .header("traceparent", traceparent(2))
        .timeout(HOLD)
        .body(CHAT)
        .send()
        .await;
    let err = r.expect_err("the provider never answers");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= HOLD);
}

/// A two-minute stream the client reads for `HOLD`, then abandons.
async fn abandoned_stream(gw: &Gateway) {
    let mut r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .header(FAULT, "slow-stream")
        .header("traceparent", traceparent(3))
        .body(r#"{"model":"qwen-instruct","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = tokio::time::Instant::now() + HOLD;
    let mut bytes = 0;
    loop {
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Ok(Ok(Some(c))) => bytes += c.len(),
            Ok(other) => panic!("the stream ended before the client left: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(bytes > 1000, "the stream was flowing: {bytes} bytes");
    drop(r);
}

/// The three long cases at once, then a normal request: answered by the same Envoy process.
pub(crate) async fn minute_long_requests_leave_envoy_serving() {
    let (receiver, otlp) = Receiver::start().await;
    let gw = Gateway::start_with(Setup {
        processor_process: true,
        processor_global_args: vec!["--otlp-endpoint".into(), otlp],
        ..Setup::default()
    })
    .await;
    let before = gw.inner.envoy.borrow().clone();
    assert!(matches!(before, EnvoyState::Running { restarts: 0, .. }));
    tokio::join!(
        half_sent_body(&gw),
        hung_provider(&gw),
        abandoned_stream(&gw)
    );
    // Envoy crashed as these requests ended, not before: give it the moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = gw.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        *gw.inner.envoy.borrow(),
        before,
        "Envoy died while the long requests ended (and was restarted)"
    );
    spans_cover_the_minute(&receiver).await;
}

/// Each long request's span: as long as the request, and with what it got.
async fn spans_cover_the_minute(receiver: &Receiver) {
    let spans = receiver
        .wait_for("the three long requests' spans", |spans| {
            (1..=3).all(|c| spans.iter().any(|s| s.trace_id == trace_id(c)))
        })
        .await;
    // Each is there: `wait_for` returned.
    let span = |case: u8| -> &Seen { spans.iter().find(|s| s.trace_id == trace_id(case)).unwrap() };
    for case in 1..=3 {
        let s = span(case);
        assert_eq!(s.name, "ChatCompletion", "case {case}");
        assert!(
            s.duration >= HOLD - Duration::from_secs(1),
            "case {case}: {:?}",
            s.duration
        );
    }
    // The half-sent body never reached the provider; the hung one was sent and never answered.
    assert!(!span(1).attrs.contains_key("llm.model_name"));
    assert_eq!(
        span(2).attrs["llm.model_name"],
        "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct"
    );
    // The abandoned stream: its first token, and what it had streamed when the client left.
    let stream = span(3);
    assert!(
        stream.events.iter().any(|(name, _)| name == "first_token"),
        "{stream:?}"
    );
    let out = &stream.attrs["output.value"];
    assert!(
        out.starts_with("t0 t1 t2 ") && out.len() > 100,
        "the stream's text so far: {out:?}"
    );
}
