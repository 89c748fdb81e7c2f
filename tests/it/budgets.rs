//! Token budgets (BackendTrafficPolicy rateLimit rules) through real Envoy and the fake
//! Fireworks: per-user Distinct budgets, the 429 and its headers, charging at the end of a JSON
//! response, of a stream and of a cancelled stream, and concurrent streams that cannot overshoot.

use std::time::Duration;

use ai_extproc::app::BudgetStore;
use ai_extproc::envoy::BackendOverride;
use ai_extproc::upstreams::{self, TestOptions, UpstreamKind};
use serde_json::Value;

use crate::harness::{examples, root, Gateway, Setup};

/// Output tokens per user and hour on the guide's Fireworks route (`completion_tokens`), and
/// requests per user and hour on every route (`x-tier: free` only).
const POLICY: &str = r#"
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: budgets, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: envoy-ai-gateway-fireworks}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors: [{headers: [{name: x-user-id, type: Distinct}]}]
          limit: {requests: LIMIT, unit: Hour}
          cost:
            request: {from: Number, number: 0}
            response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: completion_tokens}}
        - clientSelectors: [{headers: [{name: x-tier, type: Exact, value: free}, {name: x-user-id, type: Distinct}]}]
          limit: {requests: 3, unit: Hour}
"#;

async fn start(limit: u64) -> (Gateway, tempfile::TempDir) {
    start_with(limit, BudgetStore::Memory).await
}

/// A gateway with the budgets above, counted in `store`.
pub async fn start_with(limit: u64, store: BudgetStore) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("budgets.yaml");
    std::fs::write(&policy, POLICY.replace("LIMIT", &limit.to_string())).unwrap();
    let mut config = examples();
    config.push(policy);
    let gw = Gateway::start_with(Setup {
        config,
        stream_interval: Duration::from_millis(20),
        budget_store: store,
        ..Setup::default()
    })
    .await;
    (gw, dir)
}

pub fn chat(max_tokens: u64, stream: bool) -> String {
    serde_json::json!({
        "model": "qwen-instruct",
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": "Tell me a long story about the sea."}],
    })
    .to_string()
}

fn usage_records(gw: &Gateway) -> Vec<Value> {
    gw.inner_usage_log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub async fn records(gw: &Gateway, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let r = usage_records(gw);
        if r.len() >= count {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {count} usage records: {:?}", usage_records(gw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_token_budget_is_charged_at_the_end_and_then_refuses() {
    let (gw, _dir) = start(12).await;
    let alice = [("x-user-id", "alice")];
    // Alice's first answer uses 5 output tokens of her 12: the headers say what is left once
    // it is reserved (5, its max_tokens), and the record what it was charged.
    let r = gw
        .post("/v1/chat/completions", &chat(5, false), &alice)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("12"));
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("7"));
    let reset = r.header("x-ratelimit-reset-tokens").unwrap();
    assert!(reset.ends_with('s') && reset.contains('m'), "{reset}");
    let used = r.json()["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(used, 5);
    let rec = &records(&gw, 1).await[0];
    assert_eq!(rec["budget_charges"]["default/budgets#0"], 5);
    // A stream, charged at its end.
    let r = gw
        .post("/v1/chat/completions", &chat(5, true), &alice)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("2"));
    let rec = &records(&gw, 2).await[1];
    assert_eq!(rec["budget_charges"]["default/budgets#0"], 5, "{rec}");
    // 2 left: admitted (anything left admits), its reservation capped at 2; it uses 5.
    let r = gw
        .post("/v1/chat/completions", &chat(5, false), &alice)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("0"));
    records(&gw, 3).await;
    // Nothing left: 429 in OpenAI's shape, and the provider never sees it.
    let seen = gw.fireworks().len();
    let r = gw
        .post("/v1/chat/completions", &chat(5, false), &alice)
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    let e = r.json();
    assert_eq!(e["error"]["type"], "rate_limit_exceeded");
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("default/budgets#0"));
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("0"));
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("12"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(gw.fireworks().len(), seen);
    // Bob's budget is his own.
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(5, false),
            &[("x-user-id", "bob")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Without the Distinct header no budget applies.
    let r = gw.post("/v1/chat/completions", &chat(5, false), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("x-ratelimit-limit-tokens").is_none());
    // The metrics count the refusal and the charges by budget, never by user: Alice's 15 and
    // Bob's 5.
    records(&gw, 5).await;
    let metrics = gw
        .http
        .get(format!("{}/metrics", gw.admin_base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ai_extproc_budget_refused_total{budget="default/budgets#0"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ai_extproc_budget_charged_units_total{budget="default/budgets#0"} 20"#),
        "{metrics}"
    );
    assert!(!metrics.contains("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_budget_counts_requests_of_the_selected_clients() {
    let (gw, _dir) = start(1_000_000).await;
    let free = [("x-user-id", "carol"), ("x-tier", "free")];
    for i in 0..3 {
        let r = gw
            .post("/v1/chat/completions", &chat(2, false), &free)
            .await;
        assert_eq!(r.status, 200, "{i}: {}", r.text);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"), "{i}");
        let left = (2 - i).to_string();
        assert_eq!(
            r.header("x-ratelimit-remaining-requests"),
            Some(left.as_str())
        );
    }
    let r = gw
        .post("/v1/chat/completions", &chat(2, false), &free)
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.header("x-ratelimit-remaining-requests").is_some());
    // Not on the free tier: the request budget does not apply.
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(2, false),
            &[("x-user-id", "carol"), ("x-tier", "pro")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_cannot_overshoot_and_a_cancelled_one_is_charged_what_it_streamed() {
    // 20 concurrent streams of at most 10 output tokens each against 50: with reservations at
    // most 5 get in, and together they cannot spend more than 50.
    let (gw, _dir) = start(50).await;
    let dave = [("x-user-id", "dave")];
    let body = chat(10, true);
    let replies = futures_util::future::join_all(
        (0..20).map(|_| gw.post("/v1/chat/completions", &body, &dave)),
    )
    .await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(ok + refused, 20);
    assert!(ok >= 1 && refused >= 10, "{ok} admitted, {refused} refused");
    let charged: u64 = records(&gw, ok)
        .await
        .iter()
        .map(|r| r["budget_charges"]["default/budgets#0"].as_u64().unwrap())
        .sum();
    assert!(charged <= 50, "charged {charged}");

    // A stream Erin cancels after a few events is charged what it streamed, not its estimate.
    let erin = [("x-user-id", "erin")];
    let before = usage_records(&gw).len();
    let mut resp = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .header("content-type", "application/json")
        .header("x-user-id", "erin")
        .body(chat(40, true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = 0;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        events += chunk.windows(6).filter(|w| w == b"data: ").count();
        if events >= 4 {
            break;
        }
    }
    drop(resp);
    let rec = records(&gw, before + 1).await[before].clone();
    let charge = rec["budget_charges"]["default/budgets#0"].as_u64().unwrap();
    assert!(
        (1..40).contains(&charge),
        "cancelled stream charged {charge}: {rec}"
    );
    // What was reserved and not used is free again: Erin still has 50 - charge.
    let r = gw
        .post("/v1/chat/completions", &chat(1, false), &erin)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let left: u64 = r
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(left, 50 - charge - 1);
}

/// Envoy AI Gateway's `token_ratelimit` example, unchanged (its current `x-tenant-id` version,
/// and the earlier `x-user-id` one from envoyproxy/ai-gateway f92f8f4d6), its backend pointed at
/// the test upstream (5 input tokens per answer): ten input tokens per tenant (user) and hour,
/// so a tenant's third request is refused and another tenant's is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ai_gateways_token_ratelimit_example_limits() {
    let up = upstreams::spawn(
        UpstreamKind::Test(TestOptions::default()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    for (file, header) in [
        ("token_ratelimit.yaml", "x-tenant-id"),
        ("token_ratelimit-x-user-id.yaml", "x-user-id"),
    ] {
        let gw = Gateway::start_with(Setup {
            config: vec![root()
                .join("tests/fixtures/ai-gateway-examples/token_ratelimit")
                .join(file)],
            fake: false,
            test_upstream: false,
            overrides: vec![BackendOverride {
                backend: "envoy-ai-gateway-token-ratelimit-testupstream".into(),
                address: Some(up.addr.into()),
                ca_file: None,
            }],
            ..Setup::default()
        })
        .await;
        let body =
            r#"{"model":"rate-limit-funky-model","messages":[{"role":"user","content":"Hi"}]}"#;
        let tenant = [(header, "acme")];
        for i in 0..2 {
            let r = gw.post("/v1/chat/completions", body, &tenant).await;
            assert_eq!(r.status, 200, "{file} {i}: {}", r.text);
            records(&gw, i + 1).await;
        }
        let r = gw.post("/v1/chat/completions", body, &tenant).await;
        assert_eq!(r.status, 429, "{file}: {}", r.text);
        assert_eq!(r.json()["error"]["type"], "rate_limit_exceeded");
        let rec = &records(&gw, 2).await[1];
        assert_eq!(
            rec["budget_charges"]["default/envoy-ai-gateway-token-ratelimit-policy#0"], 5,
            "{file}: {rec}"
        );
        let r = gw
            .post("/v1/chat/completions", body, &[(header, "globex")])
            .await;
        assert_eq!(r.status, 200, "{file}: {}", r.text);
    }
}
