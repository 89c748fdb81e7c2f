//! The edge: what Envoy itself answers or forwards, through real Envoy 1.40 + ai-extproc. Its own
//! errors reach the client in OpenAI's shape, what a client claims about the proxy path or the
//! request id is not taken as the gateway's word, and browsers get CORS when the config allows.

use crate::harness::{examples, free_port, raw_http, Gateway, Setup};

/// A rule whose Backend nobody listens on.
fn unreachable_backend(dir: &std::path::Path) -> std::path::PathBuf {
    let port = free_port().port();
    let yaml = format!(
        r#"apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: unreachable, namespace: default}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: unreachable-model}}]}}]
      backendRefs: [{{name: unreachable}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: unreachable, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: unreachable, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: unreachable, namespace: default}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]
"#
    );
    let file = dir.join("unreachable.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

/// What Envoy refuses or fails by itself reaches the client, with its status and an OpenAI
/// body (these replies used to be lost, empty, or reported as the provider's).
#[tokio::test]
async fn envoys_own_errors_reach_the_client_in_openai_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = examples();
    config.push(unreachable_backend(dir.path()));
    let gw = Gateway::start_with(Setup {
        config,
        ..Setup::default()
    })
    .await;
    let addr = gw.inner.listen;
    let chat = r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hi"}]}"#;
    let post = |extra: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{chat}",
            chat.len()
        )
        .into_bytes()
    };
    let headers = |n: usize| -> String { (0..n).map(|i| format!("x-h{i}: v\r\n")).collect() };
    let failures = std::cell::RefCell::new(Vec::new());
    let check = |name: &str, r: crate::harness::RawReply, status: u16, code: &str| {
        if r.status != status {
            failures
                .borrow_mut()
                .push(format!("{name}: status {} want {status}: {r:?}", r.status));
        } else if status != 200 {
            let e = r.error();
            if e["code"] != code {
                failures
                    .borrow_mut()
                    .push(format!("{name}: code {} want {code}", e["code"]));
            }
        }
    };
    check(
        "HTTP/1.0",
        raw_http(addr, b"GET /v1/models HTTP/1.0\r\nHost: gw\r\n\r\n").await,
        426,
        "http_version_not_supported",
    );
    check(
        "Content-Length and Transfer-Encoding",
        raw_http(addr, b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await,
        400,
        "bad_request",
    );
    let big = format!("x-big: {}\r\n", "a".repeat(61 * 1024));
    check(
        "a 61 KB header",
        raw_http(addr, &post(&big)).await,
        431,
        "request_header_fields_too_large",
    );
    let huge = format!("x-big: {}\r\n", "a".repeat(100 * 1024));
    check(
        "a 100 KB header (Envoy's own limit)",
        raw_http(addr, &post(&huge)).await,
        431,
        "request_header_fields_too_large",
    );
    for n in [85, 88, 92, 95] {
        check(
            &format!("{n} extra headers (the processor's own fit)"),
            raw_http(addr, &post(&headers(n))).await,
            200,
            "",
        );
    }
    for n in [101, 130] {
        check(
            &format!("{n} extra headers"),
            raw_http(addr, &post(&headers(n))).await,
            431,
            "request_header_fields_too_large",
        );
    }
    check(
        "CONNECT",
        raw_http(
            addr,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        )
        .await,
        404,
        "not_found",
    );
    let head = raw_http(
        addr,
        b"HEAD /v1/models HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    if head.status != 200 || !head.body.is_empty() {
        failures
            .borrow_mut()
            .push(format!("HEAD /v1/models: {head:?}"));
    }
    let options = raw_http(addr, b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n\r\n").await;
    if options.header("allow") != Some("POST") {
        failures
            .borrow_mut()
            .push(format!("OPTIONS without CORS config: {options:?}"));
    }
    check(
        "OPTIONS without CORS config",
        options,
        405,
        "method_not_allowed",
    );
    // The gateway cannot reach a provider: said as such, never as the provider's answer.
    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model":"unreachable-model","messages":[{"role":"user","content":"Hi"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"]["code"], "upstream_unavailable", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("The gateway could not get an answer from the provider"),
        "{v}"
    );
    assert!(!message.contains("provider answered"), "{v}");
    let failures = failures.into_inner();
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Envoy's edge settings: what a client claims about the proxy path or the request id is not
/// taken as the gateway's word, and identities in usage records are bounded.
#[tokio::test]
async fn forwarding_headers_request_ids_and_identities_are_the_gateways() {
    let gw = Gateway::start().await;
    let mut records = gw.inner.usage.as_ref().unwrap().subscribe(8);
    let long_user = "u".repeat(50 * 1024);
    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model":"qwen-instruct","messages":[{"role":"user","content":"Hello!"}]}"#,
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-envoy-upstream-rq-timeout-ms", "1"),
                ("x-envoy-retry-on", "5xx"),
                ("x-envoy-internal", "true"),
                ("x-envoy-external-address", "6.6.6.6"),
                ("x-request-id", "chosen-by-the-client"),
                ("x-user-id", &long_user),
            ],
        )
        .await;
    assert_eq!(
        r.status, 200,
        "a 1 ms timeout from the client is not obeyed: {}",
        r.text
    );
    let seen = gw.fireworks().last().unwrap();
    let envoy_headers: Vec<_> = seen
        .headers
        .iter()
        .filter(|(n, _)| n.starts_with("x-envoy-") || n.starts_with("x-ai-eg-"))
        .collect();
    assert!(
        envoy_headers.is_empty(),
        "internal headers reached the provider: {envoy_headers:?}"
    );
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "the real peer, only"
    );
    // The id the gateway logged is its own, and the client gets it back.
    let id = r
        .header("x-request-id")
        .expect("the id comes back")
        .to_string();
    assert_ne!(id, "chosen-by-the-client");
    assert_eq!(seen.header("x-request-id"), Some(id.as_str()));
    let rec = tokio::time::timeout(std::time::Duration::from_secs(5), records.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.request_id, id);
    assert!(
        rec.user.len() <= 256 && rec.user.starts_with("uuu"),
        "{}",
        rec.user.len()
    );
    let entries = gw.access_log_entries(1).await;
    assert_eq!(entries[0]["request_id"], id.as_str());
    assert_eq!(entries[0]["model"], "qwen-instruct");
}

/// A SecurityPolicy with CORS for one origin, on the Gateway.
fn cors_policy(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("cors.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {name: browsers, namespace: default}
spec:
  targetRefs:
    - {group: gateway.networking.k8s.io, kind: Gateway, name: envoy-ai-gateway-basic}
  cors:
    allowOrigins: ["https://app.example", "https://*.tools.example"]
    allowMethods: [GET, POST]
    allowHeaders: [content-type, authorization]
    exposeHeaders: [x-request-id]
    maxAge: 1h
"#,
    )
    .unwrap();
    file
}

#[tokio::test]
async fn browsers_get_cors_when_a_security_policy_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = examples();
    config.push(cors_policy(dir.path()));
    let gw = Gateway::start_with(Setup {
        config,
        ..Setup::default()
    })
    .await;
    let preflight = |origin: &str| {
        format!("OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n").into_bytes()
    };
    for origin in ["https://app.example", "https://ui.tools.example"] {
        let r = raw_http(gw.inner.listen, &preflight(origin)).await;
        assert_eq!(r.status, 200, "{origin}: {r:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(origin),
            "{r:?}"
        );
        assert!(r
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST")));
        assert_eq!(r.header("access-control-max-age"), Some("3600"));
    }
    // Another origin's preflight is not answered by the CORS policy: refused cleanly.
    let r = raw_http(gw.inner.listen, &preflight("https://evil.example")).await;
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.error()["code"], "method_not_allowed");
    assert!(
        gw.fireworks().is_empty(),
        "no preflight reached the provider"
    );

    // The real request and the processor's own errors carry the headers a browser needs.
    for (model, status) in [("qwen-instruct", 200), ("no-such-model", 404)] {
        let r = gw
            .post(
                "/v1/chat/completions",
                &format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"Hi"}}]}}"#),
                &[("origin", "https://app.example")],
            )
            .await;
        assert_eq!(r.status, status, "{}", r.text);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example"),
            "{model}"
        );
        assert_eq!(
            r.header("access-control-expose-headers"),
            Some("x-request-id")
        );
    }
}
