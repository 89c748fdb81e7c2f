//! The compiled configuration: what the data path and the Envoy renderer read. Built once from
//! the raw objects, immutable afterwards, shared behind an `Arc` and swapped whole.

use std::time::Duration;

use regex::Regex;

use super::cel::CelCost;
use super::error::ConfigError;
use super::providers::StreamUsage;
use super::secret::SecretString;

/// Index of a [`Route`] in [`Config::routes`].
pub type RouteId = usize;
/// Index of a [`ServiceBackend`] in [`Config::backends`].
pub type BackendId = usize;
/// Index of a [`Cluster`] in [`Config::clusters`].
pub type ClusterId = usize;

/// Everything ai-extproc and its Envoy need to know.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// One per AIGatewayRoute, in load order.
    pub routes: Vec<Route>,
    /// Every rule of every route, in match order.
    pub rules: Vec<Rule>,
    /// AIServiceBackends.
    pub backends: Vec<ServiceBackend>,
    /// Envoy Gateway Backends: one Envoy cluster each.
    pub clusters: Vec<Cluster>,
    /// What `/v1/models` lists.
    pub models: Vec<ModelInfo>,
    /// Cross-origin policy for browsers, from a SecurityPolicy.
    pub cors: Option<Cors>,
    /// Token and request budgets (BackendTrafficPolicy `rateLimit` rules), in load order.
    pub budgets: Vec<Budget>,
    /// Client authentication, from a SecurityPolicy (`apiKeyAuth`, `jwt`): Envoy's filters
    /// check it before the processor sees the request.
    pub auth: Option<Auth>,
    /// What compiled but looks wrong (a shadowed rule, an unused Backend...): logged at load,
    /// printed by `check`.
    pub warnings: Vec<ConfigError>,
}

/// Client authentication: every request must pass it (it runs before the body picks a route).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The SecurityPolicy, `namespace/name`.
    pub policy: String,
    pub api_keys: Option<ApiKeyAuth>,
    pub jwt: Option<JwtAuth>,
}

impl Auth {
    /// The headers that carry a verified identity (the client id, claims): only the gateway
    /// sets them; a client's own are removed before authentication.
    pub fn identity_headers(&self) -> Vec<&str> {
        let mut headers: Vec<&str> = Vec::new();
        if let Some(h) = self
            .api_keys
            .as_ref()
            .and_then(|a| a.client_id_header.as_deref())
        {
            headers.push(h);
        }
        for p in self.jwt.iter().flat_map(|j| &j.providers) {
            headers.extend(p.claim_to_headers.iter().map(|(h, _)| h.as_str()));
        }
        headers.sort_unstable();
        headers.dedup();
        headers
    }
}

/// `apiKeyAuth`: keys from Secrets, each naming its client.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    /// `(client id, key)`.
    pub credentials: Vec<(String, SecretString)>,
    pub sources: Vec<CredentialSource>,
    /// Lower-case; set to the verified client id.
    pub client_id_header: Option<String>,
}

/// Where a credential is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Header(String),
    Query(String),
    Cookie(String),
}

/// `jwt`: tokens verified against their issuers' key sets.
#[derive(Debug, Clone)]
pub struct JwtAuth {
    pub providers: Vec<JwtProvider>,
    /// A request without a token passes (one with a bad token never does).
    pub optional: bool,
}

#[derive(Debug, Clone)]
pub struct JwtProvider {
    pub name: String,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub jwks: Jwks,
    /// `(lower-case header, claim)`.
    pub claim_to_headers: Vec<(String, String)>,
    /// Where the token is read: `(header, value prefix)`; none: `Authorization: Bearer`.
    pub from_headers: Vec<(String, Option<String>)>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Jwks {
    /// The key set itself (JSON).
    Local(String),
    /// Fetched by Envoy from `uri` (`https` verified against the system's CAs).
    Remote {
        uri: String,
        host: String,
        port: u16,
        tls: bool,
        cache: Option<Duration>,
    },
}

/// One budget: a BackendTrafficPolicy `rateLimit` rule. Requests of its routes whose headers
/// its selectors match share it (one per distinct value of a `Distinct` header).
#[derive(Debug, Clone)]
pub struct Budget {
    /// `namespace/policy` and the rule's index: `default/p#0`. Metrics label it so.
    pub name: String,
    /// The routes it applies to.
    pub routes: Vec<RouteId>,
    pub selectors: Vec<HeaderSelector>,
    /// Units per window.
    pub limit: u64,
    /// The window (`unit`): counters start again at each multiple of it since the epoch.
    pub window: Duration,
    /// Charged when a request is admitted (`cost.request.number`; 1 without `cost`).
    pub request_cost: u64,
    /// Charged when the response's usage is known: the route's cost of this `metadataKey`.
    pub response_cost: Option<String>,
    /// `Global`: shared by every replica (through Redis when configured); `Local`: this one.
    pub global: bool,
}

/// A `clientSelectors[].headers[]` entry.
#[derive(Debug, Clone)]
pub struct HeaderSelector {
    /// Lowercase header name.
    pub name: String,
    pub matcher: SelectorMatch,
    /// The selector holds when the header does not match (or is absent).
    pub invert: bool,
}

/// How a header selects.
#[derive(Debug, Clone)]
pub enum SelectorMatch {
    Exact(String),
    /// A whole-value regular expression.
    Regex(regex::Regex),
    /// Any value; each value its own budget.
    Distinct,
}

/// A CORS policy (Envoy Gateway SecurityPolicy `cors`), applied to every route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins, as whole-value regular expressions (`*` wildcards expanded).
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<Duration>,
    pub allow_credentials: bool,
}

/// An AIGatewayRoute.
#[derive(Debug, Clone)]
pub struct Route {
    /// `namespace/name`.
    pub name: String,
    /// Where it was read from (a reload that empties a file of its routes is reported).
    pub location: super::error::Location,
    /// Its `llmRequestCosts`.
    pub costs: Vec<Cost>,
    /// How Envoy retries its requests (a BackendTrafficPolicy's `retry`).
    pub retry: Option<Retry>,
}

/// How Envoy retries a request (Envoy Gateway BackendTrafficPolicy `spec.retry`), rendered as
/// the route's retry policy: Envoy owns attempts, backoff and priorities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub num_retries: u32,
    /// Attempts at one priority level before the next level is tried.
    pub attempts_per_priority: u32,
    /// Envoy `retry_on` conditions (`connect-failure`, `reset`, `retriable-status-codes`...).
    pub retry_on: Vec<String>,
    /// Statuses retried under `retriable-status-codes`.
    pub status_codes: Vec<u16>,
    /// Bound on each attempt.
    pub per_try_timeout: Option<Duration>,
    /// Backoff between attempts: base interval, and the cap (Envoy: 10x the base when unset).
    pub backoff: Option<(Duration, Option<Duration>)>,
}

impl Retry {
    /// A rule with several priorities and no policy: once, at the next priority, when the
    /// first attempt could not connect, was reset, or was answered 429 or 503. The next
    /// attempt goes to another provider, so it waits 1 ms (Envoy's own default is 25 ms).
    pub fn failover_default() -> Self {
        Self {
            num_retries: 1,
            attempts_per_priority: 1,
            retry_on: ["connect-failure", "reset", "retriable-status-codes"]
                .map(String::from)
                .to_vec(),
            status_codes: vec![429, 503],
            per_try_timeout: None,
            backoff: Some((Duration::from_millis(1), Some(Duration::from_millis(10)))),
        }
    }
}

/// One `llmRequestCosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    /// Key in the `io.envoy.ai_gateway` namespace.
    pub metadata_key: String,
    /// Which number.
    pub kind: CostKind,
}

/// The token count a cost takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CostKind {
    InputToken,
    CachedInputToken,
    /// Anthropic-style `cache_creation_input_tokens` (0 when the response has none).
    CacheCreationInputToken,
    OutputToken,
    TotalToken,
    ReasoningToken,
    /// An expression over model, backend, route and the token counts.
    Cel(CelCost),
}

/// A rule: when its matches hold, traffic goes to one of its backends.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The AIGatewayRoute it belongs to.
    pub route: RouteId,
    /// Position in its route, for names.
    pub index: usize,
    /// Alternatives; the rule applies when any one holds.
    pub matches: Vec<Match>,
    /// Weighted targets; never empty.
    pub backends: Vec<WeightedBackend>,
    /// Whole-request timeout (Envoy route timeout).
    pub request_timeout: Duration,
    /// Idle timeout between upstream bytes, if set.
    pub idle_timeout: Option<Duration>,
}

/// Header conditions that must all hold.
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub headers: Vec<HeaderMatch>,
}

/// One header condition. Names are lower case.
#[derive(Debug, Clone)]
pub enum HeaderMatch {
    Exact { name: String, value: String },
    Regex { name: String, regex: Regex },
}

/// A backend of a rule with its weight, priority and model override.
#[derive(Debug, Clone)]
pub struct WeightedBackend {
    pub backend: BackendId,
    pub weight: u32,
    /// Failover level: 0 serves; a higher level only when attempts at lower ones failed.
    pub priority: u32,
    /// Model id sent to the provider instead of the client's.
    pub model_name_override: Option<String>,
}

/// An AIServiceBackend: how to speak to one provider.
#[derive(Debug, Clone)]
pub struct ServiceBackend {
    /// `namespace/name`.
    pub name: String,
    /// The API it speaks (`spec.schema.name`).
    pub schema: Schema,
    /// Path prefix replacing `/v1` (e.g. `/inference/v1`), without trailing slash.
    pub prefix: String,
    /// Azure OpenAI's `api-version` (its `spec.schema.version`); `None` for other schemas.
    pub api_version: Option<String>,
    /// API key (sent as its `key_source` says), if a BackendSecurityPolicy applies.
    pub api_key: Option<SecretString>,
    /// Where that key comes from, for an Envoy that injects it itself.
    pub key_source: Option<KeySource>,
    /// The Envoy cluster carrying its traffic.
    pub cluster: ClusterId,
    /// How it reports usage on streams.
    pub stream_usage: StreamUsage,
}

impl ServiceBackend {
    /// Where Envoy finds the backend's key, when it has one to put on.
    pub fn key_for_envoy(&self) -> Option<&KeySource> {
        self.key_source.as_ref().filter(|_| self.api_key.is_some())
    }
}

/// An API schema a backend speaks (`spec.schema.name`); `providers/` has one module each, which
/// also says which API families the schema serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    OpenAI,
    /// Anthropic's Messages API (Anthropic, or an Anthropic-compatible endpoint such as
    /// Fireworks' `/inference/v1/messages`).
    Anthropic,
    /// Azure OpenAI: deployments in the path, `api-version` from `spec.schema.version`.
    AzureOpenAI,
    /// Cohere's v2 API (rerank).
    Cohere,
}

impl Schema {
    /// Schemas Envoy AI Gateway knows that ai-extproc does not serve yet.
    pub const NOT_YET: [&'static str; 4] =
        ["AWSBedrock", "GCPVertexAI", "GCPAnthropic", "AWSAnthropic"];

    /// The names it serves, for messages.
    pub const SUPPORTED: &'static str = "OpenAI, Anthropic, AzureOpenAI, Cohere";

    /// The schema named `name` as the CRD spells it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "OpenAI" => Some(Self::OpenAI),
            "Anthropic" => Some(Self::Anthropic),
            "AzureOpenAI" => Some(Self::AzureOpenAI),
            "Cohere" => Some(Self::Cohere),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAI => "OpenAI",
            Self::Anthropic => "Anthropic",
            Self::AzureOpenAI => "AzureOpenAI",
            Self::Cohere => "Cohere",
        }
    }
}

/// Where a backend's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    /// `namespace/name` of the Secret.
    pub secret: String,
    /// The environment variable that overrides the Secret's value (`--secret-env`, else
    /// `AI_EXTPROC_SECRET_<NAME>`).
    pub env_var: String,
    /// How the key is sent.
    pub header: KeyHeader,
}

/// How a backend's key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>` (a policy of type `APIKey`).
    #[default]
    Bearer,
    /// `x-api-key: <key>` (`AnthropicAPIKey`, Anthropic's own API).
    XApiKey,
    /// `api-key: <key>` (`AzureAPIKey`, Azure OpenAI).
    ApiKey,
}

impl KeyHeader {
    /// The header's name and value for `key`.
    pub fn header(self, key: &str) -> (&'static str, String) {
        match self {
            Self::Bearer => ("authorization", format!("Bearer {key}")),
            Self::XApiKey => ("x-api-key", key.to_string()),
            Self::ApiKey => ("api-key", key.to_string()),
        }
    }
}

/// An Envoy Gateway Backend with its TLS policy: one Envoy cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `namespace/name` of the Backend; also the Envoy cluster name.
    pub name: String,
    /// Where it is.
    pub endpoint: Endpoint,
    /// Upstream TLS, when a BackendTLSPolicy targets it.
    pub tls: Option<Tls>,
}

/// A Backend endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Fqdn { hostname: String, port: u16 },
    Ip { address: String, port: u16 },
}

/// Upstream TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// SNI.
    pub hostname: String,
    /// Names the server certificate may carry (DNS SANs).
    pub subject_alt_names: Vec<String>,
    /// Trusted CAs.
    pub ca: CaSource,
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// The machine's bundle.
    System,
    /// PEM text from a ConfigMap or Secret.
    Pem(String),
}

/// One entry of `/v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    pub owned_by: String,
    /// Unix seconds.
    pub created: i64,
}

impl Cluster {
    /// The Host the provider expects: the TLS name, else the DNS name.
    pub fn host(&self) -> Option<&str> {
        match (&self.tls, &self.endpoint) {
            (Some(tls), _) => Some(&tls.hostname),
            (None, Endpoint::Fqdn { hostname, .. }) => Some(hostname),
            (None, Endpoint::Ip { .. }) => None,
        }
    }
}

impl HeaderMatch {
    pub fn name(&self) -> &str {
        match self {
            HeaderMatch::Exact { name, .. } | HeaderMatch::Regex { name, .. } => name,
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            HeaderMatch::Exact { value: want, .. } => value == want,
            HeaderMatch::Regex { regex, .. } => regex.is_match(value),
        }
    }
}

impl Rule {
    /// `route/rule/N`: how logs and metadata name the rule.
    pub fn name(&self, config: &Config) -> String {
        format!("{}/rule/{}", config.routes[self.route].name, self.index)
    }

    /// Whether Envoy chooses among its backends per attempt (several priority levels): then the
    /// processor routes to the rule, and each attempt is rewritten for its own backend.
    pub fn fails_over(&self) -> bool {
        self.backends
            .iter()
            .any(|b| b.priority != self.backends[0].priority)
    }

    /// The priority that serves first: the lowest of its backends'.
    pub fn first_priority(&self) -> u32 {
        self.backends.iter().map(|b| b.priority).min().unwrap_or(0)
    }

    /// The first attempt's backend, when it is certain: the only one at the first priority.
    pub fn first_backend(&self) -> Option<&WeightedBackend> {
        let level = self.first_priority();
        let mut first = self.backends.iter().filter(|b| b.priority == level);
        match (first.next(), first.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    /// How Envoy retries its requests: its route's policy; else, when it fails over, once at
    /// the next priority ([`Retry::failover_default`]).
    pub fn retry(&self, config: &Config) -> Option<Retry> {
        config.routes[self.route]
            .retry
            .clone()
            .or_else(|| self.fails_over().then(Retry::failover_default))
    }
}
