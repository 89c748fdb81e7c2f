//! The Kubernetes deployment under Envoy Gateway's semantics, with real Envoy 1.40: there is no
//! cluster here, so this renders the Envoy config Envoy Gateway programs from
//! `deploy/kubernetes/` (as far as the request path goes) and sends the guide's requests through
//! it, to `ai-extproc serve` started with the Deployment's own arguments and the fake Fireworks.
//!
//! What is Envoy Gateway's, and mirrored here: the EnvoyExtensionPolicy's ext_proc filter sits on
//! the listener *disabled* and is enabled on each route of the routes it applies to, so only a
//! request that matches a rule reaches the processor; the HTTPRoute's rules become routes in
//! Gateway API precedence (more header matches first); a rule with an HTTPRouteFilter direct
//! response answers it; URLRewrite and RequestHeaderModifier filters become the route's host
//! rewrite and header removal; the ext_proc cluster gets HTTP/2 windows of 64 KiB / 1 MiB unless
//! the policy's `backendSettings.http2` sets them; the ClientTrafficPolicy's `bufferLimit` is the
//! listener's buffer; the BackendTrafficPolicy's `requestTimeout` the routes' timeout.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use ai_extproc::upstreams::{self, FireworksOptions, UpstreamKind};
use serde_json::{json, Value as Json};
use serde_yaml::Value;

use crate::harness::{envoy_bin, free_port, root, wait_for_200, GUIDE_KEY};

/// Envoy Gateway's HTTP/2 windows for an ext_proc backend without `backendSettings`.
const EG_DEFAULT_STREAM_WINDOW: u64 = 64 * 1024;
const EG_DEFAULT_CONNECTION_WINDOW: u64 = 1024 * 1024;

/// Every object of `deploy/kubernetes/`.
pub(crate) fn manifests() -> Vec<Value> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            serde_yaml::Deserializer::from_str(&text)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .filter(|v: &Value| !v.is_null())
                .collect::<Vec<Value>>()
        })
        .collect()
}

pub(crate) fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes/"))
}

fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter()
        .filter(move |d| d["kind"].as_str() == Some(kind))
}

/// A Kubernetes quantity (`4Mi`, `16Mi`, `50Mi`, `65536`) in bytes.
pub(crate) fn quantity(v: &Value) -> u64 {
    let s = match v {
        Value::Number(n) => return n.as_u64().unwrap(),
        Value::String(s) => s.as_str(),
        other => panic!("not a quantity: {other:?}"),
    };
    for (suffix, factor) in [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * factor;
        }
    }
    s.parse().unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// Where the rendered Envoy sends what the manifests name.
struct Targets {
    listen: SocketAddr,
    admin: SocketAddr,
    processor: SocketAddr,
    fireworks: SocketAddr,
    fireworks_ca: std::path::PathBuf,
}

/// The ext_proc filter Envoy Gateway adds for the EnvoyExtensionPolicy, disabled.
fn ext_proc_filter(policy: &Value, name: &str, cluster: &str) -> Json {
    let ep = &policy["spec"]["extProc"][0];
    let mode = &ep["processingMode"];
    let body = |v: &Value| match v.as_str() {
        Some("Buffered") => "BUFFERED",
        Some("Streamed") => "STREAMED",
        Some("BufferedPartial") => "BUFFERED_PARTIAL",
        _ => "NONE",
    };
    let headers = |v: &Value| if v.is_mapping() { "SEND" } else { "SKIP" };
    // Envoy Gateway names the backend Service as the gRPC authority (the cluster name, its
    // default, is no valid authority).
    let backend = &ep["backendRefs"][0];
    let authority = format!(
        "{}.{}:{}",
        s(&backend["name"]),
        policy["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default"),
        backend["port"].as_u64().unwrap()
    );
    let namespaces: Vec<&str> = ep["metadata"]["writableNamespaces"]
        .as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    json!({
        "name": name,
        "disabled": true,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster, "authority": authority}, "timeout": "10s"},
            "failure_mode_allow": ep["failOpen"].as_bool().unwrap_or(false),
            "allow_mode_override": mode["allowModeOverride"].as_bool().unwrap_or(false),
            "message_timeout": s(&ep["messageTimeout"]),
            "processing_mode": {
                "request_header_mode": headers(&mode["request"]),
                "request_body_mode": body(&mode["request"]["body"]),
                "response_header_mode": headers(&mode["response"]),
                "response_body_mode": body(&mode["response"]["body"]),
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP"
            },
            "metadata_options": {"receiving_namespaces": {"untyped": namespaces}}
        }
    })
}

/// The HTTPRoute's rules as Envoy Gateway orders and translates them.
fn routes(docs: &[Value], ext_proc: &str, timeout: &str) -> Vec<Json> {
    let route = of_kind(docs, "HTTPRoute").next().expect("an HTTPRoute");
    let name = s(&route["metadata"]["name"]);
    let enable = json!({ext_proc: {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": {}
    }});
    let mut rules: Vec<(usize, &Value)> = route["spec"]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .enumerate()
        .collect();
    // Gateway API precedence among equal path matches: more header matches first.
    let header_count = |r: &Value| r["matches"][0]["headers"].as_sequence().map_or(0, Vec::len);
    rules.sort_by_key(|(_, r)| std::cmp::Reverse(header_count(r)));
    let mut out = Vec::new();
    for (i, rule) in rules {
        let headers: Vec<Json> = rule["matches"][0]["headers"]
            .as_sequence()
            .map(|hs| {
                hs.iter()
                    .map(|h| json!({"name": s(&h["name"]), "string_match": {"exact": s(&h["value"])}}))
                    .collect()
            })
            .unwrap_or_default();
        let prefix = rule["matches"][0]["path"]["value"].as_str().unwrap_or("/");
        let mut r = json!({
            "name": format!("httproute/default/{name}/rule/{i}/match/0/*"),
            "match": {"prefix": prefix, "headers": headers},
            "typed_per_filter_config": enable.clone(),
        });
        let mut direct = None;
        let mut host = None;
        let mut remove = Vec::new();
        for f in rule["filters"].as_sequence().into_iter().flatten() {
            match s(&f["type"]) {
                "URLRewrite" => host = f["urlRewrite"]["hostname"].as_str(),
                "RequestHeaderModifier" => remove.extend(
                    f["requestHeaderModifier"]["remove"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .map(s),
                ),
                "ExtensionRef" => {
                    let filter = find(
                        docs,
                        s(&f["extensionRef"]["kind"]),
                        s(&f["extensionRef"]["name"]),
                    );
                    direct = Some(&filter["spec"]["directResponse"]);
                }
                other => panic!("filter {other} is not rendered here"),
            }
        }
        match direct {
            Some(d) => {
                r["direct_response"] = json!({
                    "status": d["statusCode"].as_u64().unwrap(),
                    "body": {"inline_string": s(&d["body"]["inline"])}
                });
                r["response_headers_to_add"] = json!([{
                    "header": {"key": "content-type", "value": s(&d["contentType"])},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
                }]);
            }
            None => {
                let backend = &rule["backendRefs"][0];
                assert_eq!(s(&backend["kind"]), "Backend");
                r["route"] = json!({
                    "cluster": format!("httproute/default/{name}/rule/{i}"),
                    "timeout": timeout,
                });
                if let Some(host) = host {
                    r["route"]["host_rewrite_literal"] = json!(host);
                }
                r["request_headers_to_remove"] = json!(remove);
            }
        }
        out.push(r);
    }
    out
}

/// The Envoy config Envoy Gateway programs for `deploy/kubernetes/`, pointed at test addresses.
fn render(docs: &[Value], t: &Targets) -> Json {
    let policy = of_kind(docs, "EnvoyExtensionPolicy")
        .next()
        .expect("an EnvoyExtensionPolicy");
    let ext_proc_cluster = "envoyextensionpolicy/default/ai-extproc/0";
    let ext_proc_name =
        "envoy.filters.http.ext_proc/envoyextensionpolicy/default/ai-extproc/extproc/0";
    let http2 = &policy["spec"]["extProc"][0]["backendSettings"]["http2"];
    let window = |field: &str, default: u64| {
        if http2[field].is_null() {
            default
        } else {
            quantity(&http2[field])
        }
    };
    let ctp: Vec<&Value> = of_kind(docs, "ClientTrafficPolicy").collect();
    assert_eq!(
        ctp.len(),
        1,
        "Envoy Gateway takes one ClientTrafficPolicy per Gateway"
    );
    let buffer = quantity(&ctp[0]["spec"]["connection"]["bufferLimit"]);
    let timeout = of_kind(docs, "BackendTrafficPolicy")
        .find_map(|p| p["spec"]["timeout"]["http"]["requestTimeout"].as_str())
        .unwrap_or("15s");
    let route_rules = routes(docs, ext_proc_name, timeout);
    let tls = of_kind(docs, "BackendTLSPolicy")
        .next()
        .expect("a BackendTLSPolicy");
    let sni = s(&tls["spec"]["validation"]["hostname"]);
    let mut clusters = vec![json!({
        "name": ext_proc_cluster,
        "type": "STATIC",
        "connect_timeout": "10s",
        "load_assignment": {"cluster_name": ext_proc_cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": t.processor.ip().to_string(), "port_value": t.processor.port()}}}}]}]},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {
                "initial_stream_window_size": window("initialStreamWindowSize", EG_DEFAULT_STREAM_WINDOW),
                "initial_connection_window_size": window("initialConnectionWindowSize", EG_DEFAULT_CONNECTION_WINDOW)
            }}
        }}
    })];
    for r in &route_rules {
        let Some(name) = r["route"]["cluster"].as_str() else {
            continue;
        };
        clusters.push(json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": "10s",
            "per_connection_buffer_limit_bytes": buffer,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": t.fireworks.ip().to_string(), "port_value": t.fireworks.port()}}}}]}]},
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": sni,
                    "common_tls_context": {"validation_context": {
                        "trusted_ca": {"filename": t.fireworks_ca},
                        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": sni}}]
                    }}
                }
            }
        }));
    }
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": t.admin.port()}}},
        "static_resources": {
            "listeners": [{
                "name": "default/envoy-ai-gateway-basic/http",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": t.listen.port()}},
                "per_connection_buffer_limit_bytes": buffer,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "http-80",
                        "use_remote_address": true,
                        "http_filters": [
                            ext_proc_filter(policy, ext_proc_name, ext_proc_cluster),
                            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ],
                        "route_config": {"name": "default/envoy-ai-gateway-basic/http", "virtual_hosts": [{
                            "name": "default/envoy-ai-gateway-basic/http/*",
                            "domains": ["*"],
                            "routes": route_rules
                        }]}
                    }
                }]}]
            }],
            "clusters": clusters
        }
    })
}

/// `ai-extproc serve` as the Deployment runs it: its arguments, with the listeners moved to
/// loopback test ports and the config to the ConfigMap's files written out.
async fn start_processor(
    docs: &[Value],
    dir: &std::path::Path,
    grpc: SocketAddr,
    admin: SocketAddr,
) -> tokio::process::Child {
    let cm = find(docs, "ConfigMap", "ai-extproc-config");
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    for (file, text) in cm["data"].as_mapping().unwrap() {
        std::fs::write(config_dir.join(s(file)), s(text)).unwrap();
    }
    let deployment = find(docs, "Deployment", "ai-extproc");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| s(a).to_string())
        .collect();
    let mount = s(&container["volumeMounts"][0]["mountPath"]);
    for (i, a) in args.clone().iter().enumerate() {
        match a.as_str() {
            "--listen" => args[i + 1] = grpc.to_string(),
            "--admin" => args[i + 1] = admin.to_string(),
            path if path == mount => args[i] = config_dir.display().to_string(),
            _ => {}
        }
    }
    let env = &container["env"][0];
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ai-extproc"))
        .args(["--log", "warn"])
        .args(&args)
        .env(s(&env["name"]), GUIDE_KEY)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn vision(model: &str, image_bytes: usize) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":[{{"type":"text","text":"Describe this image."}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{}"}}}}]}}]}}"#,
        "A".repeat(image_bytes)
    )
}

#[tokio::test]
async fn the_guides_requests_reach_the_processor_under_envoy_gateways_semantics() {
    let docs = manifests();
    let dir = tempfile::tempdir().unwrap();
    let fake = upstreams::spawn(
        UpstreamKind::Fireworks(FireworksOptions {
            api_key: GUIDE_KEY.into(),
            stream_interval: Duration::from_millis(2),
            ..FireworksOptions::default()
        }),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem.clone().unwrap()).unwrap();
    let (grpc, processor_admin) = (free_port(), free_port());
    let _processor = start_processor(&docs, dir.path(), grpc, processor_admin).await;
    let targets = Targets {
        listen: free_port(),
        admin: free_port(),
        processor: grpc,
        fireworks: fake.addr,
        fireworks_ca: ca,
    };
    let bootstrap = dir.path().join("envoy.yaml");
    std::fs::write(
        &bootstrap,
        serde_yaml::to_string(&render(&docs, &targets)).unwrap(),
    )
    .unwrap();
    let _envoy = tokio::process::Command::new(envoy_bin())
        .arg("-c")
        .arg(&bootstrap)
        .args([
            "--use-dynamic-base-id",
            "--log-level",
            "error",
            "--concurrency",
            "1",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://{}", targets.listen);
    let http = reqwest::Client::new();
    wait_for_200(
        "Envoy and the processor",
        &http,
        &format!("{base}/v1/models"),
        None,
    )
    .await;

    let post = |path: &str, body: String| {
        http.post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .header("x-user-id", "user123")
            .body(body)
            .send()
    };
    let chat = |model: &str| {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"Hello!"}}]}}"#)
    };
    // The guide's curls: each reaches the processor (model rewritten, key added) and Fireworks.
    for (path, body, provider_model) in [
        (
            "/v1/chat/completions",
            chat("qwen-instruct"),
            "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct",
        ),
        (
            "/v1/chat/completions",
            chat("qwen-thinking"),
            "accounts/fireworks/models/qwen3-vl-30b-a3b-thinking",
        ),
        (
            "/v1/embeddings",
            r#"{"model":"qwen-embed","input":"The quick brown fox"}"#.to_string(),
            "accounts/fireworks/models/qwen3-embedding-8b",
        ),
        (
            "/v1/completions",
            r#"{"model":"qwen-instruct","prompt":"Hello!"}"#.to_string(),
            "accounts/fireworks/models/qwen3-vl-235b-a22b-instruct",
        ),
    ] {
        let r = post(path, body).await.unwrap();
        let status = r.status();
        let v: Json = r.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(v["model"], provider_model, "{path}");
        let seen = fake.recorder.last().unwrap();
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {GUIDE_KEY}").as_str())
        );
        assert_eq!(
            seen.header("x-ai-eg-model"),
            None,
            "the route removes the routing header"
        );
        assert_eq!(seen.header("host"), Some("api.fireworks.ai"));
    }
    // Answered by the processor itself, as in `make run`.
    let r = http.get(format!("{base}/v1/models")).send().await.unwrap();
    let v: Json = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 4, "{v}");
    let r = post("/v1/chat/completions", chat("no-such-model"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Json>().await.unwrap()["error"]["code"],
        "model_not_found"
    );
    // A stream passes event by event.
    let r = post(
        "/v1/chat/completions",
        r#"{"model":"qwen-instruct","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#.into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // Vision bodies of 9 and 20 MiB, well within the message timeout with the policy's windows.
    for mib in [9, 20] {
        let started = std::time::Instant::now();
        let r = post("/v1/chat/completions", vision("qwen-thinking", mib << 20))
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{mib} MiB: {}", &text[..text.len().min(300)]);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{mib} MiB took {:?}",
            started.elapsed()
        );
    }
}

/// What the test renders is what Envoy accepts, and without the manifests' catch-all rule no
/// request of the guide would reach the processor (Envoy's 404 before ext_proc runs).
#[test]
fn the_rendered_config_is_valid_and_needs_the_catch_all_rule() {
    let docs = manifests();
    let t = Targets {
        listen: "127.0.0.1:1".parse().unwrap(),
        admin: "127.0.0.1:2".parse().unwrap(),
        processor: "127.0.0.1:3".parse().unwrap(),
        fireworks: "127.0.0.1:4".parse().unwrap(),
        fireworks_ca: "/etc/ssl/certs/ca-certificates.crt".into(),
    };
    let rendered = render(&docs, &t);
    crate::envoy_config::validate(&serde_yaml::to_string(&rendered).unwrap());
    let routes = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    let last = routes.last().unwrap();
    assert!(
        last["match"]["headers"].as_array().unwrap().is_empty()
            && last["direct_response"]["status"] == 404,
        "the catch-all comes last and answers 404: {last}"
    );
    assert!(
        routes
            .iter()
            .all(|r| r["typed_per_filter_config"].is_object()),
        "ext_proc is enabled on every route"
    );
    let body: Json = serde_json::from_str(
        last["direct_response"]["body"]["inline_string"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}
