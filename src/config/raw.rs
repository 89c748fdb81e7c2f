//! The Kubernetes custom resources ai-extproc reads, as written in YAML. Strict: a field we do not
//! know in a `spec` is an error (it names a feature we would otherwise silently ignore), while
//! `metadata` keeps Kubernetes' open shape (labels, annotations, ...).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `metadata` of any object: only name and namespace matter here.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Object name; references use it.
    pub name: String,
    /// Kubernetes namespace; `default` when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// RFC 3339 creation time; the `created` of `/v1/models` entries when set.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    /// Annotations; `ai-extproc.io/*` ones tune ai-extproc (see `config/providers.rs`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `aigateway.envoyproxy.io` `AIGatewayRoute` (v1alpha1 and v1beta1).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AIGatewayRouteSpec {
    /// Gateways this route attaches to; one listener here, so only accepted.
    #[serde(default)]
    pub parent_refs: Vec<serde_yaml::Value>,
    /// Older v1alpha1 spelling of `parentRefs`; accepted and ignored likewise.
    #[serde(default)]
    pub target_refs: Vec<serde_yaml::Value>,
    /// Older v1alpha1 input schema (`{name: OpenAI}`); only OpenAI is served.
    #[serde(default)]
    pub schema: Option<SchemaSpec>,
    /// Host names the route answers for; Envoy's virtual host takes every host.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Rules in match order.
    pub rules: Vec<RuleSpec>,
    /// Token costs written into dynamic metadata.
    #[serde(default)]
    pub llm_request_costs: Vec<CostSpec>,
}

/// One rule of an `AIGatewayRoute`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// Matches (OR); each one's header conditions are ANDed.
    #[serde(default)]
    pub matches: Vec<MatchSpec>,
    /// Backends (AIServiceBackend names) with weights.
    #[serde(default)]
    pub backend_refs: Vec<BackendRefSpec>,
    /// Gateway API `HTTPRouteTimeouts`.
    #[serde(default)]
    pub timeouts: Option<TimeoutsSpec>,
    /// Idle time allowed between upstream bytes.
    #[serde(default)]
    pub stream_idle_timeout: Option<String>,
    /// `owned_by` of this rule's models in `/v1/models`.
    #[serde(default)]
    pub models_owned_by: Option<String>,
    /// RFC 3339 `created` of this rule's models in `/v1/models`.
    #[serde(default)]
    pub models_created_at: Option<String>,
}

/// Gateway API `HTTPRouteTimeouts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutsSpec {
    /// Whole request, streamed response included.
    #[serde(default)]
    pub request: Option<String>,
    /// One try to the backend.
    #[serde(default)]
    pub backend_request: Option<String>,
}

/// One match of a rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchSpec {
    /// Header conditions, all of which must hold.
    #[serde(default)]
    pub headers: Vec<HeaderMatchSpec>,
}

/// A header condition.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatchSpec {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Header name, case-insensitive.
    pub name: String,
    /// Value or RE2 expression (whole-value match).
    pub value: String,
}

/// A rule's reference to an `AIServiceBackend`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRefSpec {
    /// AIServiceBackend name.
    pub name: String,
    /// Its namespace; the route's when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Only the AIServiceBackend default (absent) is supported.
    #[serde(default)]
    pub group: Option<String>,
    /// Only the AIServiceBackend default (absent) is supported.
    #[serde(default)]
    pub kind: Option<String>,
    /// Share of traffic among the rule's backends (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// Failover priority (default 0): the lowest serves; higher ones take over when an attempt
    /// at a lower one fails.
    #[serde(default)]
    pub priority: Option<u32>,
    /// Model id sent to this backend instead of the client's.
    #[serde(default)]
    pub model_name_override: Option<String>,
}

/// An `llmRequestCosts` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CostSpec {
    /// Key in the `io.envoy.ai_gateway` metadata namespace.
    pub metadata_key: String,
    /// `InputToken`, `CachedInputToken`, `OutputToken`, `TotalToken`, `ReasoningToken` or `CEL`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Expression for `CEL` costs.
    #[serde(default)]
    pub cel: Option<String>,
}

/// API schema of a backend (or of a v1alpha1 route's input).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchemaSpec {
    /// Schema name; `OpenAI` is supported.
    pub name: String,
    /// Older spelling of the path version (`v1` means prefix `/v1`).
    #[serde(default)]
    pub version: Option<String>,
    /// Path prefix of the provider's OpenAI-compatible API (default `/v1`).
    #[serde(default)]
    pub prefix: Option<String>,
}

/// `AIServiceBackend`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AIServiceBackendSpec {
    /// The provider's API schema.
    pub schema: SchemaSpec,
    /// The Envoy Gateway `Backend` that carries the traffic.
    pub backend_ref: ObjectRefSpec,
    /// Older v1alpha1 link to a BackendSecurityPolicy.
    #[serde(default)]
    pub backend_security_policy_ref: Option<ObjectRefSpec>,
}

/// A reference to another object by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRefSpec {
    /// Object name.
    pub name: String,
    /// Its namespace; the referrer's when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// API group, checked where the kind is ambiguous.
    #[serde(default)]
    pub group: Option<String>,
    /// Object kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// Gateway API section name; accepted and ignored.
    #[serde(default)]
    pub section_name: Option<String>,
}

/// `BackendSecurityPolicy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendSecurityPolicySpec {
    /// The AIServiceBackends it applies to.
    #[serde(default)]
    pub target_refs: Vec<ObjectRefSpec>,
    /// `APIKey`, `AnthropicAPIKey` and `AzureAPIKey` are supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The key's Secret, for type `APIKey`.
    #[serde(default)]
    pub api_key: Option<ApiKeySpec>,
    /// The key's Secret, for type `AnthropicAPIKey` (sent as `x-api-key`).
    #[serde(default, rename = "anthropicAPIKey")]
    pub anthropic_api_key: Option<ApiKeySpec>,
    /// The key's Secret, for type `AzureAPIKey` (sent as `api-key`).
    #[serde(default, rename = "azureAPIKey")]
    pub azure_api_key: Option<ApiKeySpec>,
    /// Type `AzureCredentials` (Entra ID client credentials): read so that the error names it,
    /// not supported.
    #[serde(default)]
    pub azure_credentials: Option<serde_yaml::Value>,
}

/// `apiKey` of a BackendSecurityPolicy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeySpec {
    /// Secret whose `apiKey` entry holds the key.
    pub secret_ref: ObjectRefSpec,
}

/// `gateway.envoyproxy.io` `Backend`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendSpec {
    /// Endpoints; the first one is used.
    pub endpoints: Vec<EndpointSpec>,
    /// Application protocols; accepted, HTTP/1.1 is spoken upstream.
    #[serde(default)]
    pub app_protocols: Vec<String>,
}

/// One endpoint of a Backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSpec {
    /// DNS name and port.
    #[serde(default)]
    pub fqdn: Option<HostPortSpec>,
    /// IP address and port.
    #[serde(default)]
    pub ip: Option<IpPortSpec>,
}

/// `fqdn` endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPortSpec {
    /// DNS name.
    pub hostname: String,
    /// TCP port.
    pub port: u16,
}

/// `ip` endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPortSpec {
    /// IPv4 or IPv6 address.
    pub address: String,
    /// TCP port.
    pub port: u16,
}

/// Gateway API `BackendTLSPolicy` (v1alpha3 and v1).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTlsPolicySpec {
    /// The Backends it applies to.
    pub target_refs: Vec<ObjectRefSpec>,
    /// How the server certificate is checked.
    pub validation: TlsValidationSpec,
    /// TLS options; accepted and ignored.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `validation` of a BackendTLSPolicy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsValidationSpec {
    /// `System`: the machine's CA bundle.
    #[serde(default, rename = "wellKnownCACertificates")]
    pub well_known_ca_certificates: Option<String>,
    /// ConfigMaps or Secrets with a `ca.crt` entry.
    #[serde(default)]
    pub ca_certificate_refs: Vec<ObjectRefSpec>,
    /// SNI and the name the certificate must carry.
    pub hostname: String,
    /// Extra names the certificate may carry instead.
    #[serde(default)]
    pub subject_alt_names: Vec<SubjectAltNameSpec>,
}

/// One `subjectAltNames` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectAltNameSpec {
    /// `Hostname` or `URI`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `Hostname`.
    #[serde(default)]
    pub hostname: Option<String>,
    /// For `URI`.
    #[serde(default)]
    pub uri: Option<String>,
}

/// A core/v1 `Secret` or `ConfigMap` body (both are string maps at the top level).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataObject {
    /// Plain values.
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
    /// Base64 values for a Secret, plain values for a ConfigMap.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// `gateway.envoyproxy.io` `SecurityPolicy`: CORS is what ai-extproc applies (on its one virtual
/// host); every other policy it cannot honour is a config error naming the field.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityPolicySpec {
    /// The Gateway or the AIGatewayRoutes (HTTPRoutes of the same name) it applies to.
    #[serde(default)]
    pub target_refs: Vec<ObjectRefSpec>,
    /// Older singular spelling of `targetRefs`.
    #[serde(default)]
    pub target_ref: Option<ObjectRefSpec>,
    /// Cross-origin requests from browsers.
    #[serde(default)]
    pub cors: Option<Box<CorsSpec>>,
    /// Not applied by ai-extproc: an error when set.
    #[serde(default)]
    pub target_selectors: Option<Box<serde_yaml::Value>>,
    /// JSON Web Tokens verified by Envoy's `jwt_authn` filter.
    #[serde(default)]
    pub jwt: Option<Box<JwtSpec>>,
    /// Not applied by ai-extproc: an error when set.
    #[serde(default)]
    pub oidc: Option<Box<serde_yaml::Value>>,
    /// API keys checked by Envoy's `api_key_auth` filter.
    #[serde(default)]
    pub api_key_auth: Option<Box<ApiKeyAuthSpec>>,
    /// Not applied by ai-extproc: an error when set.
    #[serde(default)]
    pub basic_auth: Option<Box<serde_yaml::Value>>,
    /// Not applied by ai-extproc: an error when set.
    #[serde(default)]
    pub ext_auth: Option<Box<serde_yaml::Value>>,
    /// Not applied by ai-extproc: an error when set.
    #[serde(default)]
    pub authorization: Option<Box<serde_yaml::Value>>,
}

/// `apiKeyAuth` of a SecurityPolicy: Secrets map client ids to keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyAuthSpec {
    /// Secrets whose every entry is `client id: key`.
    pub credential_refs: Vec<ObjectRefSpec>,
    /// Where the key is read.
    pub extract_from: Vec<ExtractFromSpec>,
    /// Header that carries the verified client id to the processor (and budgets).
    #[serde(default, rename = "forwardClientIDHeader")]
    pub forward_client_id_header: Option<String>,
    /// Remove the key before the request goes on (ai-extproc always does).
    #[serde(default)]
    pub sanitize: Option<bool>,
}

/// Where an API key is read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtractFromSpec {
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub params: Vec<String>,
    #[serde(default)]
    pub cookies: Vec<String>,
}

/// `jwt` of a SecurityPolicy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtSpec {
    pub providers: Vec<JwtProviderSpec>,
    /// A request without a token passes (one with a bad token does not).
    #[serde(default)]
    pub optional: Option<bool>,
}

/// One token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtProviderSpec {
    pub name: String,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, rename = "remoteJWKS")]
    pub remote_jwks: Option<RemoteJwksSpec>,
    #[serde(default, rename = "localJWKS")]
    pub local_jwks: Option<LocalJwksSpec>,
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeaderSpec>,
    #[serde(default)]
    pub extract_from: Option<JwtExtractFromSpec>,
    /// Not applied (the route is chosen from the body, after authentication): an error when set.
    #[serde(default)]
    pub recompute_route: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteJwksSpec {
    pub uri: String,
    /// How long a fetched key set is used (Envoy's default: 10 minutes).
    #[serde(default)]
    pub cache_duration: Option<String>,
    /// Not applied: an error when set.
    #[serde(default)]
    pub backend_refs: Option<serde_yaml::Value>,
    /// Not applied: an error when set.
    #[serde(default)]
    pub backend_settings: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalJwksSpec {
    /// `Inline` or `ValueRef` (a ConfigMap whose `jwks` entry is the key set).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub inline: Option<String>,
    #[serde(default)]
    pub value_ref: Option<ObjectRefSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeaderSpec {
    pub header: String,
    pub claim: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtExtractFromSpec {
    #[serde(default)]
    pub headers: Vec<JwtHeaderSpec>,
    #[serde(default)]
    pub cookies: Vec<String>,
    #[serde(default)]
    pub params: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeaderSpec {
    pub name: String,
    #[serde(default)]
    pub value_prefix: Option<String>,
}

/// `cors` of a SecurityPolicy (Envoy Gateway v1 shape).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsSpec {
    /// Origins allowed, exact (`https://app.example`) or with `*` wildcards (`https://*.example`).
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Methods allowed in cross-origin requests.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Request headers allowed.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a preflight answer may be cached (a duration, `1h`).
    #[serde(default)]
    pub max_age: Option<String>,
    /// Whether credentials (cookies, `Authorization`) may be sent.
    #[serde(default)]
    pub allow_credentials: Option<bool>,
}

/// Envoy Gateway `BackendTrafficPolicy`: ai-extproc applies its `retry` in the Envoy config it
/// renders; its other settings (rate limits, load balancing...) are Envoy Gateway's, named in a
/// warning.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendTrafficPolicySpec {
    /// The Gateway or the HTTPRoutes (named after AIGatewayRoutes) it applies to.
    #[serde(default)]
    pub target_refs: Vec<ObjectRefSpec>,
    /// Older singular spelling of `targetRefs`.
    #[serde(default)]
    pub target_ref: Option<ObjectRefSpec>,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// Everything else, by field name.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// `BackendTrafficPolicy.spec.retry`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Retries after the first attempt (Envoy Gateway's default: 2).
    #[serde(default)]
    pub num_retries: Option<u32>,
    /// Attempts at one priority level before the next is tried.
    #[serde(default)]
    pub num_attempts_per_priority: Option<u32>,
    #[serde(default)]
    pub retry_on: Option<RetryOnSpec>,
    #[serde(default)]
    pub per_retry: Option<PerRetrySpec>,
}

/// `retry.retryOn`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryOnSpec {
    #[serde(default)]
    pub triggers: Vec<String>,
    #[serde(default)]
    pub http_status_codes: Vec<u16>,
}

/// `retry.perRetry`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PerRetrySpec {
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub back_off: Option<BackOffSpec>,
}

/// `retry.perRetry.backOff`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackOffSpec {
    #[serde(default)]
    pub base_interval: Option<String>,
    #[serde(default)]
    pub max_interval: Option<String>,
}

/// `BackendTrafficPolicy.spec.rateLimit`: budgets ai-extproc enforces itself (src/budget).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSpec {
    /// `Global` (shared by every replica, through Redis when configured) or `Local`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub global: Option<RateLimitRulesSpec>,
    #[serde(default)]
    pub local: Option<RateLimitRulesSpec>,
}

/// `rateLimit.global` / `rateLimit.local`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitRulesSpec {
    #[serde(default)]
    pub rules: Vec<RateLimitRuleSpec>,
}

/// One budget.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitRuleSpec {
    #[serde(default)]
    pub client_selectors: Vec<ClientSelectorSpec>,
    pub limit: LimitSpec,
    #[serde(default)]
    pub cost: Option<RateLimitCostSpec>,
    /// Envoy Gateway's sharing of one budget across the routes of a Gateway target.
    #[serde(default)]
    pub shared: Option<bool>,
}

/// `clientSelectors[]`: who the budget applies to. Only `headers` are honoured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientSelectorSpec {
    #[serde(default)]
    pub headers: Vec<HeaderSelectorSpec>,
    /// `sourceCIDR`, `methods`, `path`, `queryParams`...: refused by name.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// `clientSelectors[].headers[]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderSelectorSpec {
    pub name: String,
    /// `Exact` (default), `RegularExpression` or `Distinct`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub invert: Option<bool>,
}

/// `limit`: this many units per `unit`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitSpec {
    pub requests: u64,
    pub unit: String,
}

/// `cost`: what a request is charged on its way in and when its response is known.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitCostSpec {
    #[serde(default)]
    pub request: Option<CostSourceSpec>,
    #[serde(default)]
    pub response: Option<CostSourceSpec>,
}

/// `cost.request` / `cost.response`: a number, or a dynamic metadata value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CostSourceSpec {
    pub from: String,
    #[serde(default)]
    pub number: Option<u64>,
    #[serde(default)]
    pub metadata: Option<MetadataSourceSpec>,
}

/// `cost.*.metadata`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataSourceSpec {
    pub namespace: String,
    pub key: String,
}
