//! Renders the Envoy bootstrap. Built as JSON values (Envoy reads YAML and JSON alike) and
//! written as YAML; every string is serialized by serde, never spliced into text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::credentials::{upstream_filters, Credentials, Plan, PlannedCluster};
use super::{auth, failover, local_reply};
use crate::config::{CaSource, Cluster, Config, Endpoint, HeaderMatch};
use crate::contract::{
    ATTEMPT_LOG_KEY, ATTEMPT_LOG_NAMESPACE, BACKEND_HEADER, ENVOY_MAX_REQUEST_HEADERS,
    ENVOY_MAX_REQUEST_HEADERS_KB, METADATA_NAMESPACE, MODEL_HEADER, PINNED_HEADER,
};

/// Name of the processor's cluster.
pub const PROCESSOR_CLUSTER: &str = "ai_extproc";
/// The cluster of the catch-all route: deliberately absent, so Envoy answers 404.
const NO_ROUTE_CLUSTER: &str = "ai_gateway_no_route";

/// Where Envoy reaches the processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessorAddress {
    /// `host:port`; a DNS name (a compose service) is resolved by Envoy.
    Tcp { host: String, port: u16 },
    /// `unix:/path`.
    Unix(PathBuf),
}

/// Points a Backend at another address (like curl's `--resolve`) and/or another CA bundle,
/// keeping its host name for SNI, certificate check and Host header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendOverride {
    /// Backend name (`name` or `namespace/name`).
    pub backend: String,
    pub address: Option<HostPort>,
    pub ca_file: Option<PathBuf>,
}

/// An address by IP or DNS name (a compose service, say), with its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl From<SocketAddr> for HostPort {
    fn from(a: SocketAddr) -> Self {
        Self {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

impl std::str::FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected host:port"))?;
        let port = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
        let host = host.trim_matches(['[', ']']);
        if host.is_empty() {
            return Err(format!("{s:?}: empty host"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

/// Rendering choices that are not in the CRDs.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Client-facing listener.
    pub listen: SocketAddr,
    /// Envoy admin interface.
    pub admin: SocketAddr,
    /// The processor.
    pub processor: ProcessorAddress,
    /// Access log file (`/dev/stdout` by default).
    pub access_log: String,
    /// Largest request or response body Envoy buffers (413 beyond).
    pub max_body_bytes: u32,
    /// CA bundle for `wellKnownCACertificates: System`.
    pub system_ca_file: PathBuf,
    /// Per-backend address and CA overrides.
    pub overrides: Vec<BackendOverride>,
    /// Per-message timeout of the ext_proc filter.
    pub message_timeout: Duration,
    /// Who puts provider keys on requests: the processor, or Envoy (keeping them out of its logs).
    pub credentials: Credentials,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            processor: ProcessorAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 50051,
            },
            access_log: "/dev/stdout".into(),
            max_body_bytes: crate::contract::DEFAULT_MAX_BODY_BYTES,
            system_ca_file: system_ca_file(),
            overrides: Vec::new(),
            message_timeout: Duration::from_secs(10),
            credentials: Credentials::default(),
        }
    }
}

/// The first CA bundle found among the usual places (Debian, RHEL, Alpine/macOS).
pub fn system_ca_file() -> PathBuf {
    const CANDIDATES: [&str; 3] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ];
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(CANDIDATES[0]))
}

/// The bootstrap as YAML text.
pub fn render_yaml(config: &Config, options: &EnvoyOptions) -> String {
    let header = "# Envoy bootstrap rendered by `ai-extproc envoy-config`; do not edit by hand.\n";
    format!(
        "{header}{}",
        serde_yaml::to_string(&render(config, options)).unwrap_or_default()
    )
}

/// The bootstrap as a JSON value.
pub fn render(config: &Config, options: &EnvoyOptions) -> Value {
    let plan = Plan::new(config, options.credentials);
    let mut clusters = vec![processor_cluster(options)];
    clusters.extend(
        plan.clusters
            .iter()
            .map(|planned| backend_cluster(&config.clusters[planned.cluster], planned, options)),
    );
    clusters.extend(
        config
            .rules
            .iter()
            .filter(|r| r.fails_over())
            .map(|rule| failover::cluster(config, rule, options)),
    );
    if let Some(a) = &config.auth {
        clusters.extend(auth::clusters(a, options));
    }
    json!({
        "admin": {"address": socket(&options.admin)},
        // A bound on downstream connections keeps a flood from exhausting file descriptors.
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": 50_000
            }
        }]},
        "layered_runtime": {"layers": [{
            "name": "static",
            // Off, and said so: with it on, Envoy 1.40 crashes (SIGSEGV) when a client leaves
            // a request whose ext_proc stream has been open for about 50 s or more (a slow body,
            // a hung provider, a long stream). Finished streams end with RST_STREAM instead,
            // which the processor treats as the normal end. Regression test: tests/it/long.rs.
            "static_layer": {"envoy.reloadable_features.ext_proc_graceful_grpc_close": false}
        }]},
        "static_resources": static_resources(
            listener(config, &plan, options),
            clusters,
            plan.secrets(options.credentials),
        )
    })
}

fn static_resources(listener: Value, clusters: Vec<Value>, secrets: Vec<Value>) -> Value {
    let mut resources = json!({"listeners": [listener], "clusters": clusters});
    if !secrets.is_empty() {
        resources["secrets"] = Value::Array(secrets);
    }
    resources
}

fn socket(addr: &SocketAddr) -> Value {
    json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
}

pub(super) fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

fn listener(config: &Config, plan: &Plan, options: &EnvoyOptions) -> Value {
    json!({
        "name": "ai_gateway",
        "address": socket(&options.listen),
        "per_connection_buffer_limit_bytes": options.max_body_bytes,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "ai_gateway",
                "codec_type": "AUTO",
                // An edge proxy: the peer's address is the client's, no client is trusted to
                // set x-envoy-* headers (Envoy strips them), and a client's x-request-id is
                // replaced by one Envoy generates (a chosen id could merge billing records);
                // the client gets that id back.
                "use_remote_address": true,
                "internal_address_config": {"cidr_ranges": []},
                "always_set_request_id_in_response": true,
                // Generations and streams run for minutes.
                "stream_idle_timeout": "300s",
                "access_log": [access_log(config, options)],
                "local_reply_config": local_reply::config(options.max_body_bytes),
                "common_http_protocol_options": {"max_headers_count": ENVOY_MAX_REQUEST_HEADERS},
                "max_request_headers_kb": ENVOY_MAX_REQUEST_HEADERS_KB,
                "http_filters": http_filters(config, options),
                "route_config": {
                    "name": "ai_gateway",
                    // The catch-all route names a cluster that does not exist (see routes()).
                    "validate_clusters": false,
                    "virtual_hosts": [{
                        "name": "ai_gateway",
                        "domains": ["*"],
                        "routes": routes(config, plan),
                        "typed_per_filter_config": per_filter_config(config)
                    }]
                }
            }
        }]}]
    })
}

/// The ext_proc filter's name; disabled on the listener, enabled on the virtual host.
const EXT_PROC_FILTER: &str = "envoy.filters.http.ext_proc";
const CORS_FILTER: &str = "envoy.filters.http.cors";

/// CORS (when a SecurityPolicy sets it) first, so preflights are answered before the
/// processor; then client authentication (a SecurityPolicy's apiKeyAuth, jwt); then ext_proc;
/// then the router, which sends no x-envoy-* headers to providers.
fn http_filters(config: &Config, options: &EnvoyOptions) -> Vec<Value> {
    let mut filters = Vec::new();
    if config.cors.is_some() {
        filters.push(json!({
            "name": CORS_FILTER,
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}
        }));
    }
    if let Some(a) = &config.auth {
        filters.extend(auth::filters(a));
    }
    filters.push(ext_proc_filter(options));
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "suppress_envoy_headers": true
        }
    }));
    filters
}

/// The virtual host's per-filter config: ext_proc enabled (it is disabled on the listener, so
/// what Envoy refuses before routing, such as bad framing, HTTP/1.0 or oversized headers, is
/// answered by Envoy at once: through the processor such replies were lost), and the CORS policy.
fn per_filter_config(config: &Config) -> Value {
    let mut per_filter = json!({EXT_PROC_FILTER: {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": {}
    }});
    if let Some(cors) = &config.cors {
        let origins: Vec<Value> = cors
            .allow_origins
            .iter()
            .map(|re| json!({"safe_regex": {"regex": re}}))
            .collect();
        let mut policy = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": origins,
            "allow_methods": cors.allow_methods.join(", "),
            "allow_headers": cors.allow_headers.join(", "),
            "expose_headers": cors.expose_headers.join(", "),
            "allow_credentials": cors.allow_credentials,
        });
        if let Some(age) = cors.max_age {
            policy["max_age"] = json!(age.as_secs().to_string());
        }
        per_filter[CORS_FILTER] = policy;
    }
    per_filter
}

fn ext_proc_filter(options: &EnvoyOptions) -> Value {
    json!({
        "name": EXT_PROC_FILTER,
        "disabled": true,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": PROCESSOR_CLUSTER}},
            "failure_mode_allow": false,
            // The processor picks the response body mode per response (JSON buffered, else none).
            "allow_mode_override": true,
            "message_timeout": seconds(options.message_timeout),
            "processing_mode": {
                "request_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_header_mode": "SEND",
                "response_body_mode": "BUFFERED",
                "response_trailer_mode": "SKIP"
            },
            "metadata_options": {"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}}
        }
    })
}

fn access_log(config: &Config, options: &EnvoyOptions) -> Value {
    let meta = |key: &str| format!("%DYNAMIC_METADATA({METADATA_NAMESPACE}:{key})%");
    let mut fields = serde_json::Map::new();
    for (name, value) in [
        ("start_time", "%START_TIME%".to_string()),
        ("method", "%REQ(:METHOD)%".into()),
        // The client's path (the processor rewrites :path for the provider).
        ("path", meta("original_path")),
        ("upstream_path", "%REQ(:PATH)%".into()),
        ("status", "%RESPONSE_CODE%".into()),
        ("response_flags", "%RESPONSE_FLAGS%".into()),
        ("duration_ms", "%DURATION%".into()),
        ("upstream_host", "%UPSTREAM_HOST%".into()),
        ("request_id", "%REQ(X-REQUEST-ID)%".into()),
        ("model", meta("requested_model")),
        ("route_name", meta("route_name")),
        ("backend", meta("backend_name")),
        ("provider_model", meta("model_name_override")),
        ("response_model", meta("response_model")),
        ("time_to_first_token_ms", meta("time_to_first_token_ms")),
        ("inter_token_latency_ms", meta("inter_token_latency_ms")),
        // Rules that fail over: each attempt's backend and status (empty: no answer), and
        // why the last connection failed, if one did.
        (
            "attempts",
            format!("%DYNAMIC_METADATA({ATTEMPT_LOG_NAMESPACE}:{ATTEMPT_LOG_KEY})%"),
        ),
        (
            "upstream_failure",
            "%UPSTREAM_TRANSPORT_FAILURE_REASON%".into(),
        ),
    ] {
        fields.insert(name.into(), Value::String(value));
    }
    for route in &config.routes {
        for cost in &route.costs {
            fields.insert(
                cost.metadata_key.clone(),
                Value::String(meta(&cost.metadata_key)),
            );
        }
    }
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": options.access_log,
            "log_format": {"json_format": fields}
        }
    })
}

/// One route per backend that keeps stored responses, for the requests the processor pins to
/// it ([`PINNED_HEADER`]); one per (rule, match, backend), in rule order; then a JSON 404 for
/// anything else.
fn routes(config: &Config, plan: &Plan) -> Vec<Value> {
    let mut routes = Vec::new();
    for (id, backend) in config.backends.iter().enumerate() {
        let Some(rule) = config
            .rules
            .iter()
            .find(|r| r.backends.iter().any(|b| b.backend == id))
        else {
            continue;
        };
        if !crate::providers::serves(backend.schema, &crate::llm::Responses) {
            continue;
        }
        let planned = plan.cluster_of(id);
        let mut action = json!({
            "cluster": planned.name,
            "timeout": seconds(rule.request_timeout),
        });
        if let Some(idle) = rule.idle_timeout {
            action["idle_timeout"] = json!(seconds(idle));
        }
        if let Some(host) = config.clusters[planned.cluster].host() {
            action["host_rewrite_literal"] = json!(host);
        }
        routes.push(model_route(
            &format!("pinned:{}", backend.name),
            vec![json!({"name": PINNED_HEADER, "string_match": {"exact": backend.name}})],
            action,
        ));
    }
    for rule in &config.rules {
        let name = rule.name(config);
        if rule.fails_over() {
            // Envoy chooses the backend per attempt: one route per match, to the rule's cluster.
            for m in &rule.matches {
                routes.push(model_route(
                    &name,
                    m.headers.iter().map(header_matcher).collect(),
                    failover::route_action(config, rule),
                ));
            }
            continue;
        }
        let retry = rule.retry(config);
        for m in &rule.matches {
            for target in &rule.backends {
                let backend = &config.backends[target.backend];
                let planned = plan.cluster_of(target.backend);
                let cluster = &config.clusters[planned.cluster];
                let mut headers: Vec<Value> = m.headers.iter().map(header_matcher).collect();
                if rule.backends.len() > 1 {
                    headers.push(
                        json!({"name": BACKEND_HEADER, "string_match": {"exact": backend.name}}),
                    );
                }
                let mut action = json!({
                    "cluster": planned.name,
                    "timeout": seconds(rule.request_timeout),
                });
                if let Some(idle) = rule.idle_timeout {
                    action["idle_timeout"] = json!(seconds(idle));
                }
                if let Some(host) = cluster.host() {
                    action["host_rewrite_literal"] = json!(host);
                }
                // Retries of a request the processor routed to one backend stay with it.
                if let Some(retry) = &retry {
                    action["retry_policy"] =
                        failover::retry_policy(retry, rule.idle_timeout, false);
                }
                routes.push(model_route(&name, headers, action));
            }
        }
    }
    // What no model route takes: every request at first (the processor sets the model header
    // from the body, then Envoy routes again). A route entry, not a direct response, so that
    // the CORS filter sees a route for preflights and browser requests; its cluster does not
    // exist, so a request that really ends here gets a 404 (mapped to OpenAI JSON).
    routes.push(json!({
        "name": "not_found",
        "match": {"prefix": "/"},
        "route": {"cluster": NO_ROUTE_CLUSTER, "cluster_not_found_response_code": "NOT_FOUND"}
    }));
    routes
}

/// A route of a rule: its header match, its action, and the headers the provider gets: the
/// client's, its model and key, and nothing of the gateway's own (not the routing headers, and
/// a forwarded-for that is the client's real address, not whatever the client claimed).
fn model_route(name: &str, headers: Vec<Value>, action: Value) -> Value {
    json!({
        "name": name,
        "match": {"prefix": "/", "headers": headers},
        "route": action,
        "request_headers_to_remove": [MODEL_HEADER, BACKEND_HEADER, PINNED_HEADER, "x-envoy-external-address", "x-envoy-internal"],
        "request_headers_to_add": [{
            "header": {
                "key": "x-forwarded-for",
                "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
            },
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
        }],
    })
}

fn header_matcher(h: &HeaderMatch) -> Value {
    match h {
        HeaderMatch::Exact { name, value } => {
            json!({"name": name, "string_match": {"exact": value}})
        }
        HeaderMatch::Regex { name, regex } => {
            // Compiled as ^(?:re)$; Envoy's safe_regex already matches the whole value.
            let source = regex.as_str();
            let inner = source
                .strip_prefix("^(?:")
                .and_then(|s| s.strip_suffix(")$"))
                .unwrap_or(source);
            json!({"name": name, "string_match": {"safe_regex": {"regex": inner}}})
        }
    }
}

fn processor_cluster(options: &EnvoyOptions) -> Value {
    let (kind, address) = match &options.processor {
        ProcessorAddress::Tcp { host, port } => {
            let kind = if host.parse::<std::net::IpAddr>().is_ok() {
                "STATIC"
            } else {
                "STRICT_DNS"
            };
            (
                kind,
                json!({"socket_address": {"address": host, "port_value": port}}),
            )
        }
        ProcessorAddress::Unix(path) => ("STATIC", json!({"pipe": {"path": path}})),
    };
    json!({
        "name": PROCESSOR_CLUSTER,
        "type": kind,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": PROCESSOR_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]
        },
        // ext_proc is gRPC: HTTP/2 only, with windows that fit buffered bodies.
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    "initial_stream_window_size": 4 * 1024 * 1024,
                    "initial_connection_window_size": 16 * 1024 * 1024
                }}
            }
        }
    })
}

fn override_for<'a>(cluster: &Cluster, options: &'a EnvoyOptions) -> Option<&'a BackendOverride> {
    let short = cluster
        .name
        .split_once('/')
        .map_or(cluster.name.as_str(), |(_, n)| n);
    options
        .overrides
        .iter()
        .find(|o| o.backend == cluster.name || o.backend == short)
}

/// Where a Backend's traffic goes (its address, or the override's), and the cluster type that
/// resolves it.
pub(super) fn address(cluster: &Cluster, options: &EnvoyOptions) -> (&'static str, String, u16) {
    let over = override_for(cluster, options);
    match (over.and_then(|o| o.address.clone()), &cluster.endpoint) {
        (Some(a), _) if a.host.parse::<std::net::IpAddr>().is_ok() => ("STATIC", a.host, a.port),
        (Some(a), _) => ("LOGICAL_DNS", a.host, a.port),
        (None, Endpoint::Fqdn { hostname, port }) => ("LOGICAL_DNS", hostname.clone(), *port),
        (None, Endpoint::Ip { address, port }) => ("STATIC", address.clone(), *port),
    }
}

/// The upstream TLS socket of a Backend with a BackendTLSPolicy (SNI, SANs, trusted CAs).
pub(super) fn tls_socket(cluster: &Cluster, options: &EnvoyOptions) -> Option<Value> {
    let tls = cluster.tls.as_ref()?;
    let over = override_for(cluster, options);
    let trusted_ca = match (over.and_then(|o| o.ca_file.as_ref()), &tls.ca) {
        (Some(file), _) => json!({"filename": file}),
        (None, CaSource::System) => json!({"filename": options.system_ca_file}),
        (None, CaSource::Pem(pem)) => json!({"inline_string": pem}),
    };
    let sans: Vec<Value> = tls
        .subject_alt_names
        .iter()
        .map(|san| json!({"san_type": "DNS", "matcher": {"exact": san}}))
        .collect();
    Some(json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": tls.hostname,
            "common_tls_context": {"validation_context": {
                "trusted_ca": trusted_ca,
                "match_typed_subject_alt_names": sans
            }}
        }
    }))
}

/// HTTP/1.1 to providers, with `filters` as the upstream filter chain when given.
pub(super) fn http_protocol_options(filters: Option<Value>) -> Value {
    let mut options = json!({
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http_protocol_options": {}}
    });
    if let Some(filters) = filters {
        options["http_filters"] = filters;
    }
    json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options})
}

fn backend_cluster(cluster: &Cluster, planned: &PlannedCluster, options: &EnvoyOptions) -> Value {
    let (kind, host, port) = address(cluster, options);
    let mut value = json!({
        "name": planned.name,
        "type": kind,
        "connect_timeout": "10s",
        "dns_lookup_family": "V4_PREFERRED",
        "per_connection_buffer_limit_bytes": options.max_body_bytes,
        "load_assignment": {
            "cluster_name": planned.name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": port}
            }}}]}]
        },
        "typed_extension_protocol_options": http_protocol_options(
            planned.key.as_ref().map(|(key, _)| upstream_filters(key))
        ),
        "circuit_breakers": failover::circuit_breakers()
    });
    if let Some(socket) = tls_socket(cluster, options) {
        value["transport_socket"] = socket;
    }
    value
}
