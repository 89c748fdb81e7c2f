//! Raw objects -> [`Config`]: resolves every reference, checks every value, and collects all
//! problems with their place.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine;
use regex::Regex;

use super::cel::CelCost;
use super::error::{ConfigError, Location};
use super::load::{Obj, Object};
use super::providers::{self, StreamUsage, STREAM_USAGE_ANNOTATION};
use super::raw::{
    AIGatewayRouteSpec, AIServiceBackendSpec, BackendSecurityPolicySpec, BackendSpec,
    BackendTlsPolicySpec, DataObject, ObjectRefSpec, RuleSpec, SecurityPolicySpec,
};
use super::runtime::{
    BackendId, CaSource, Cluster, ClusterId, Config, Cost, CostKind, Endpoint, HeaderMatch,
    KeySource, Match, ModelInfo, Route, Rule, ServiceBackend, Tls, WeightedBackend,
};
use super::secret::SecretString;
use super::{checks, cors};

pub use crate::contract::MODEL_HEADER;
/// Default whole-request timeout: long enough for multi-minute generations.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_OWNED_BY: &str = "Envoy AI Gateway";
/// Prefix of the environment variables that override a Secret's `apiKey`.
pub const SECRET_ENV_PREFIX: &str = "AI_EXTPROC_SECRET_";

/// Inputs of compilation besides the objects.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// The environment (a snapshot, so compilation stays a pure function).
    pub env: BTreeMap<String, String>,
    /// Explicit `secret name -> environment variable` overrides (`--secret-env`).
    pub secret_env: Vec<(String, String)>,
    /// Unix time used for `/v1/models` `created` when nothing in the config gives one.
    pub now: i64,
}

type Key = (String, String);

struct Index<'a> {
    routes: Vec<&'a Obj<AIGatewayRouteSpec>>,
    security_policies: Vec<&'a Obj<SecurityPolicySpec>>,
    /// Known kinds read and not applied, with why.
    skipped: Vec<(&'a Location, &'a str)>,
    service_backends: HashMap<Key, &'a Obj<AIServiceBackendSpec>>,
    policies: Vec<&'a Obj<BackendSecurityPolicySpec>>,
    backends: HashMap<Key, &'a Obj<BackendSpec>>,
    tls_policies: Vec<&'a Obj<BackendTlsPolicySpec>>,
    secrets: HashMap<Key, &'a Obj<DataObject>>,
    config_maps: HashMap<Key, &'a Obj<DataObject>>,
}

struct Compiler<'a> {
    index: Index<'a>,
    options: &'a CompileOptions,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    config: Config,
    backend_ids: HashMap<Key, BackendId>,
    cluster_ids: HashMap<Key, ClusterId>,
}

fn ns<T>(obj: &Obj<T>) -> &str {
    obj.meta.namespace.as_deref().unwrap_or("default")
}

fn key<T>(obj: &Obj<T>) -> Key {
    (ns(obj).to_string(), obj.meta.name.clone())
}

fn ref_key(r: &ObjectRefSpec, default_ns: &str) -> Key {
    (
        r.namespace
            .clone()
            .unwrap_or_else(|| default_ns.to_string()),
        r.name.clone(),
    )
}

/// Compiles loaded objects into a runtime config, or returns every error found.
pub fn compile(objects: &[Object], options: &CompileOptions) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let index = build_index(objects, &mut errors);
    let mut c = Compiler {
        index,
        options,
        errors,
        warnings: Vec::new(),
        config: Config::default(),
        backend_ids: HashMap::new(),
        cluster_ids: HashMap::new(),
    };
    for route in c.index.routes.clone() {
        c.route(route);
    }
    c.config.cors = cors::compile(&c.index.security_policies, &c.index.routes, &mut c.errors);
    c.unused_objects();
    for (location, why) in &c.index.skipped {
        c.warnings
            .push(ConfigError::new(location, "", (*why).to_string()));
    }
    c.warnings.extend(checks::shadowed_matches(&c.config));
    c.config.warnings = std::mem::take(&mut c.warnings);
    if c.config.routes.is_empty() && c.errors.is_empty() {
        c.errors.push(ConfigError {
            location: Location {
                file: "<config>".into(),
                doc: 0,
                object: None,
            },
            path: String::new(),
            message: "no AIGatewayRoute found".into(),
        });
    }
    if c.errors.is_empty() {
        Ok(c.config)
    } else {
        Err(c.errors)
    }
}

fn build_index<'a>(objects: &'a [Object], errors: &mut Vec<ConfigError>) -> Index<'a> {
    let mut index = Index {
        routes: Vec::new(),
        security_policies: Vec::new(),
        skipped: Vec::new(),
        service_backends: HashMap::new(),
        policies: Vec::new(),
        backends: HashMap::new(),
        tls_policies: Vec::new(),
        secrets: HashMap::new(),
        config_maps: HashMap::new(),
    };
    fn insert<'a, T>(
        map: &mut HashMap<Key, &'a Obj<T>>,
        obj: &'a Obj<T>,
        errors: &mut Vec<ConfigError>,
    ) {
        if let Some(first) = map.insert(key(obj), obj) {
            errors.push(ConfigError::new(
                &obj.location,
                "metadata.name",
                format!("duplicate object; first defined in {}", first.location),
            ));
        }
    }
    for object in objects {
        match object {
            Object::Route(o) => index.routes.push(o),
            Object::SecurityPolicy(o) => index.security_policies.push(o),
            Object::Skipped { location, why } => index.skipped.push((location, why)),
            Object::ServiceBackend(o) => insert(&mut index.service_backends, o, errors),
            Object::BackendSecurityPolicy(o) => index.policies.push(o),
            Object::Backend(o) => insert(&mut index.backends, o, errors),
            Object::TlsPolicy(o) => index.tls_policies.push(o),
            Object::Secret(o) => insert(&mut index.secrets, o, errors),
            Object::ConfigMap(o) => insert(&mut index.config_maps, o, errors),
        }
    }
    index
}

impl<'a> Compiler<'a> {
    fn err(&mut self, location: &Location, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(location, path, message));
    }

    fn warn(&mut self, location: &Location, path: impl Into<String>, message: impl Into<String>) {
        self.warnings
            .push(ConfigError::new(location, path, message));
    }

    /// Backends and AIServiceBackends that no rule reaches: probably a typo in a reference.
    fn unused_objects(&mut self) {
        let mut unused: Vec<(&Location, String)> = Vec::new();
        for (k, obj) in &self.index.service_backends {
            if !self.backend_ids.contains_key(k) {
                unused.push((
                    &obj.location,
                    format!("no rule routes to AIServiceBackend {}/{}", k.0, k.1),
                ));
            }
        }
        for (k, obj) in &self.index.backends {
            if !self.cluster_ids.contains_key(k) {
                unused.push((&obj.location, format!("no rule reaches Backend {}/{} (no AIServiceBackend of a rule refers to it)", k.0, k.1)));
            }
        }
        unused.sort_by(|a, b| (&a.0.file, a.0.doc).cmp(&(&b.0.file, b.0.doc)));
        let found: Vec<ConfigError> = unused
            .into_iter()
            .map(|(loc, message)| ConfigError::new(loc, "metadata.name", message))
            .collect();
        self.warnings.extend(found);
    }

    fn route(&mut self, obj: &'a Obj<AIGatewayRouteSpec>) {
        let loc = &obj.location;
        if let Some(schema) = &obj.spec.schema {
            if schema.name != "OpenAI" {
                self.err(
                    loc,
                    "spec.schema.name",
                    format!(
                        "input schema {:?} is not supported (supported: OpenAI)",
                        schema.name
                    ),
                );
            }
        }
        let costs = self.costs(obj);
        let route_id = self.config.routes.len();
        self.config.routes.push(Route {
            name: format!("{}/{}", ns(obj), obj.meta.name),
            location: obj.location.clone(),
            costs,
        });
        if obj.spec.rules.is_empty() {
            self.err(loc, "spec.rules", "at least one rule is required");
        }
        let created_default = obj
            .meta
            .creation_timestamp
            .as_deref()
            .and_then(|t| parse_rfc3339(t).ok())
            .unwrap_or(self.options.now);
        for (i, rule) in obj.spec.rules.iter().enumerate() {
            self.rule(obj, route_id, i, rule, created_default);
        }
    }

    fn costs(&mut self, obj: &Obj<AIGatewayRouteSpec>) -> Vec<Cost> {
        let mut costs = Vec::new();
        for (i, cost) in obj.spec.llm_request_costs.iter().enumerate() {
            let path = format!("spec.llmRequestCosts[{i}]");
            let kind = match cost.kind.as_str() {
                "InputToken" => CostKind::InputToken,
                "CachedInputToken" => CostKind::CachedInputToken,
                "OutputToken" => CostKind::OutputToken,
                "TotalToken" => CostKind::TotalToken,
                "ReasoningToken" => CostKind::ReasoningToken,
                "CEL" => match cost.cel.as_deref().map(CelCost::compile) {
                    Some(Ok(expr)) => CostKind::Cel(expr),
                    Some(Err(e)) => {
                        self.err(&obj.location, format!("{path}.cel"), e);
                        continue;
                    }
                    None => {
                        self.err(
                            &obj.location,
                            format!("{path}.cel"),
                            "required for type CEL",
                        );
                        continue;
                    }
                },
                other => {
                    self.err(
                        &obj.location,
                        format!("{path}.type"),
                        format!("unknown cost type {other:?} (expected InputToken, CachedInputToken, OutputToken, TotalToken, ReasoningToken or CEL)"),
                    );
                    continue;
                }
            };
            if cost.metadata_key.is_empty() {
                self.err(
                    &obj.location,
                    format!("{path}.metadataKey"),
                    "must not be empty",
                );
            } else if costs
                .iter()
                .any(|c: &Cost| c.metadata_key == cost.metadata_key)
            {
                self.err(
                    &obj.location,
                    format!("{path}.metadataKey"),
                    format!("duplicate metadataKey {:?}", cost.metadata_key),
                );
            }
            costs.push(Cost {
                metadata_key: cost.metadata_key.clone(),
                kind,
            });
        }
        costs
    }

    fn rule(
        &mut self,
        obj: &'a Obj<AIGatewayRouteSpec>,
        route: usize,
        index: usize,
        rule: &RuleSpec,
        created_default: i64,
    ) {
        let loc = &obj.location;
        let path = format!("spec.rules[{index}]");
        let matches = self.matches(loc, &path, rule);
        let mut backends = Vec::new();
        if rule.backend_refs.is_empty() {
            self.err(
                loc,
                format!("{path}.backendRefs"),
                "at least one backendRef is required",
            );
        }
        for (j, r) in rule.backend_refs.iter().enumerate() {
            let bpath = format!("{path}.backendRefs[{j}]");
            if r.group.is_some() || r.kind.is_some() {
                self.err(
                    loc,
                    bpath,
                    "only AIServiceBackend references are supported (leave group and kind unset)",
                );
                continue;
            }
            let k = (
                r.namespace.clone().unwrap_or_else(|| ns(obj).to_string()),
                r.name.clone(),
            );
            let Some(backend) = self.service_backend(&k) else {
                self.err(
                    loc,
                    format!("{bpath}.name"),
                    format!("no AIServiceBackend {}/{}", k.0, k.1),
                );
                continue;
            };
            if r.model_name_override.as_deref() == Some("") {
                self.err(
                    loc,
                    format!("{bpath}.modelNameOverride"),
                    "must not be empty",
                );
            }
            backends.push(WeightedBackend {
                backend,
                weight: r.weight.unwrap_or(1),
                model_name_override: r.model_name_override.clone(),
            });
        }
        if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
            self.err(loc, format!("{path}.backendRefs"), "all weights are 0");
        }
        let request_timeout = self
            .duration(
                loc,
                &format!("{path}.timeouts.request"),
                rule.timeouts.as_ref().and_then(|t| t.request.as_deref()),
            )
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let idle_timeout = self.duration(
            loc,
            &format!("{path}.streamIdleTimeout"),
            rule.stream_idle_timeout.as_deref(),
        );
        let owned_by = rule
            .models_owned_by
            .clone()
            .unwrap_or_else(|| DEFAULT_OWNED_BY.into());
        let created = match rule.models_created_at.as_deref().map(parse_rfc3339) {
            None => created_default,
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                self.err(loc, format!("{path}.modelsCreatedAt"), e);
                created_default
            }
        };
        for m in &matches {
            for h in &m.headers {
                if let HeaderMatch::Exact { name, value } = h {
                    if name == MODEL_HEADER && !self.config.models.iter().any(|x| &x.id == value) {
                        self.config.models.push(ModelInfo {
                            id: value.clone(),
                            owned_by: owned_by.clone(),
                            created,
                        });
                    }
                }
            }
        }
        self.config.rules.push(Rule {
            route,
            index,
            matches,
            backends,
            request_timeout,
            idle_timeout,
        });
    }

    fn matches(&mut self, loc: &Location, path: &str, rule: &RuleSpec) -> Vec<Match> {
        if rule.matches.is_empty() {
            // Gateway API: a rule without matches takes every request.
            return vec![Match::default()];
        }
        let mut out = Vec::new();
        for (i, m) in rule.matches.iter().enumerate() {
            let mut headers = Vec::new();
            for (j, h) in m.headers.iter().enumerate() {
                let hpath = format!("{path}.matches[{i}].headers[{j}]");
                let name = h.name.to_ascii_lowercase();
                if name.is_empty() || name.starts_with(':') {
                    self.err(
                        loc,
                        format!("{hpath}.name"),
                        "must be a regular header name",
                    );
                    continue;
                }
                if let Some(why) = checks::unknowable_header(&name) {
                    self.warn(
                        loc,
                        format!("{hpath}.name"),
                        format!("the processor and Envoy may disagree on {name:?}: {why}"),
                    );
                }
                match h.kind.as_deref().unwrap_or("Exact") {
                    "Exact" => headers.push(HeaderMatch::Exact {
                        name,
                        value: h.value.clone(),
                    }),
                    "RegularExpression" => match Regex::new(&format!("^(?:{})$", h.value)) {
                        Ok(regex) => headers.push(HeaderMatch::Regex { name, regex }),
                        Err(e) => self.err(
                            loc,
                            format!("{hpath}.value"),
                            format!("invalid regular expression: {e}"),
                        ),
                    },
                    other => self.err(
                        loc,
                        format!("{hpath}.type"),
                        format!(
                            "unknown match type {other:?} (expected Exact or RegularExpression)"
                        ),
                    ),
                }
            }
            out.push(Match { headers });
        }
        out
    }

    fn duration(&mut self, loc: &Location, path: &str, text: Option<&str>) -> Option<Duration> {
        let text = text?;
        match humantime::parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(loc, path, format!("invalid duration {text:?}: {e}"));
                None
            }
        }
    }

    /// Compiles (once) and returns the id of an AIServiceBackend.
    fn service_backend(&mut self, k: &Key) -> Option<BackendId> {
        if let Some(id) = self.backend_ids.get(k) {
            return Some(*id);
        }
        let obj = *self.index.service_backends.get(k)?;
        let loc = &obj.location;
        let spec = &obj.spec;
        match spec.schema.name.as_str() {
            "OpenAI" => {}
            "AWSBedrock" | "AzureOpenAI" | "GCPVertexAI" | "GCPAnthropic" | "Anthropic"
            | "AWSAnthropic" | "Cohere" => self.err(
                loc,
                "spec.schema.name",
                format!(
                    "schema {:?} is not supported by ai-extproc yet (supported: OpenAI)",
                    spec.schema.name
                ),
            ),
            other => self.err(
                loc,
                "spec.schema.name",
                format!("unknown schema {other:?} (supported: OpenAI)"),
            ),
        }
        let prefix = match (&spec.schema.prefix, &spec.schema.version) {
            (Some(p), _) => p.clone(),
            (None, Some(v)) => format!("/{}", v.trim_start_matches('/')),
            (None, None) => "/v1".to_string(),
        };
        if !prefix.starts_with('/') {
            self.err(loc, "spec.schema.prefix", "must start with '/'");
        }
        let prefix = prefix.trim_end_matches('/').to_string();
        let backend_ref = &spec.backend_ref;
        let cluster = match (backend_ref.group.as_deref(), backend_ref.kind.as_deref()) {
            (None | Some("gateway.envoyproxy.io"), None | Some("Backend")) => {
                let ck = ref_key(backend_ref, &k.0);
                let id = self.cluster(&ck);
                if id.is_none() {
                    self.err(
                        loc,
                        "spec.backendRef.name",
                        format!("no Backend {}/{}", ck.0, ck.1),
                    );
                }
                id
            }
            (g, kind) => {
                self.err(
                    loc,
                    "spec.backendRef",
                    format!(
                        "only gateway.envoyproxy.io Backend references are supported, found {}/{}",
                        g.unwrap_or(""),
                        kind.unwrap_or("")
                    ),
                );
                None
            }
        };
        let (api_key, key_source) = self.api_key(obj, k).unzip();
        let host = cluster.and_then(|c| self.config.clusters[c].host());
        let stream_usage =
            providers::stream_usage(&obj.meta.annotations, host).unwrap_or_else(|e| {
                self.err(
                    loc,
                    format!("metadata.annotations.{STREAM_USAGE_ANNOTATION}"),
                    e,
                );
                StreamUsage::default()
            });
        let id = self.config.backends.len();
        self.config.backends.push(ServiceBackend {
            name: format!("{}/{}", k.0, k.1),
            prefix,
            api_key,
            key_source,
            cluster: cluster.unwrap_or(0),
            stream_usage,
        });
        self.backend_ids.insert(k.clone(), id);
        Some(id)
    }

    /// The backend's key, and where an Envoy that injects it itself finds it.
    fn api_key(
        &mut self,
        obj: &Obj<AIServiceBackendSpec>,
        k: &Key,
    ) -> Option<(SecretString, KeySource)> {
        let policies: Vec<&Obj<BackendSecurityPolicySpec>> = self
            .index
            .policies
            .iter()
            .copied()
            .filter(|p| {
                let targets = p.spec.target_refs.iter().any(|t| {
                    t.kind.as_deref().unwrap_or("AIServiceBackend") == "AIServiceBackend"
                        && ref_key(t, ns(p)) == *k
                });
                let referenced = obj
                    .spec
                    .backend_security_policy_ref
                    .as_ref()
                    .is_some_and(|r| ref_key(r, &k.0) == key(p));
                targets || referenced
            })
            .collect();
        if let Some(r) = &obj.spec.backend_security_policy_ref {
            if policies.is_empty() {
                self.err(
                    &obj.location,
                    "spec.backendSecurityPolicyRef",
                    format!("no BackendSecurityPolicy {}", r.name),
                );
            }
        }
        if policies.len() > 1 {
            self.err(
                &policies[1].location,
                "spec.targetRefs",
                format!(
                    "AIServiceBackend {}/{} already has a BackendSecurityPolicy ({})",
                    k.0, k.1, policies[0].location
                ),
            );
        }
        let policy = policies.first()?;
        if policy.spec.kind != "APIKey" {
            self.err(
                &policy.location,
                "spec.type",
                format!(
                    "policy type {:?} is not supported (supported: APIKey)",
                    policy.spec.kind
                ),
            );
            return None;
        }
        let Some(api) = &policy.spec.api_key else {
            self.err(&policy.location, "spec.apiKey", "required for type APIKey");
            return None;
        };
        let sk = ref_key(&api.secret_ref, ns(policy));
        let Some(secret) = self.index.secrets.get(&sk).copied() else {
            self.err(
                &policy.location,
                "spec.apiKey.secretRef.name",
                format!("no Secret {}/{}", sk.0, sk.1),
            );
            return None;
        };
        let source = KeySource {
            secret: format!("{}/{}", sk.0, sk.1),
            env_var: self.secret_env_name(&sk.1),
        };
        if let Some(value) = self.secret_override(&sk.1) {
            return Some((SecretString::new(value), source));
        }
        let key = match secret_value(&secret.spec, "apiKey") {
            Ok(Some(v)) if v.trim().is_empty() => {
                self.warn(
                    &secret.location,
                    "stringData.apiKey",
                    format!("the key is empty: requests to {}/{} carry no usable key (set {} or --secret-env)", k.0, k.1, secret_env_var(&sk.1)),
                );
                Some(SecretString::new(String::new()))
            }
            Ok(Some(v)) => Some(SecretString::new(v.trim().to_string())),
            Ok(None) => {
                self.err(
                    &secret.location,
                    "stringData.apiKey",
                    "the Secret has no apiKey entry",
                );
                None
            }
            Err(e) => {
                self.err(&secret.location, "data.apiKey", e);
                None
            }
        };
        key.map(|k| (k, source))
    }

    /// The variable that overrides Secret `secret_name`: its `--secret-env` mapping, else
    /// `AI_EXTPROC_SECRET_<NAME>`.
    fn secret_env_name(&self, secret_name: &str) -> String {
        self.options
            .secret_env
            .iter()
            .find(|(name, _)| name == secret_name)
            .map_or_else(|| secret_env_var(secret_name), |(_, var)| var.clone())
    }

    /// The documented override rule: `--secret-env NAME=VAR` first, then
    /// `AI_EXTPROC_SECRET_<NAME>` (upper case, other characters as `_`); set and non-empty wins.
    fn secret_override(&self, secret_name: &str) -> Option<String> {
        let explicit = self
            .options
            .secret_env
            .iter()
            .filter(|(name, _)| name == secret_name)
            .map(|(_, var)| var.clone());
        let generic = std::iter::once(secret_env_var(secret_name));
        explicit.chain(generic).find_map(|var| {
            self.options
                .env
                .get(&var)
                .filter(|v| !v.is_empty())
                .cloned()
        })
    }

    fn cluster(&mut self, k: &Key) -> Option<ClusterId> {
        if let Some(id) = self.cluster_ids.get(k) {
            return Some(*id);
        }
        let obj = *self.index.backends.get(k)?;
        let loc = &obj.location;
        let endpoint = match obj.spec.endpoints.as_slice() {
            [] => {
                self.err(loc, "spec.endpoints", "at least one endpoint is required");
                None
            }
            [e] => match (&e.fqdn, &e.ip) {
                (Some(f), None) => Some(Endpoint::Fqdn {
                    hostname: f.hostname.clone(),
                    port: f.port,
                }),
                (None, Some(ip)) => {
                    if ip.address.parse::<std::net::IpAddr>().is_err() {
                        self.err(
                            loc,
                            "spec.endpoints[0].ip.address",
                            format!("not an IP address: {:?}", ip.address),
                        );
                    }
                    Some(Endpoint::Ip {
                        address: ip.address.clone(),
                        port: ip.port,
                    })
                }
                _ => {
                    self.err(
                        loc,
                        "spec.endpoints[0]",
                        "exactly one of fqdn or ip is required",
                    );
                    None
                }
            },
            _ => {
                self.err(
                    loc,
                    "spec.endpoints",
                    "only one endpoint per Backend is supported",
                );
                None
            }
        };
        let tls = self.tls(k);
        let id = self.config.clusters.len();
        self.config.clusters.push(Cluster {
            name: format!("{}/{}", k.0, k.1),
            endpoint: endpoint.unwrap_or(Endpoint::Ip {
                address: "127.0.0.1".into(),
                port: 0,
            }),
            tls,
        });
        self.cluster_ids.insert(k.clone(), id);
        Some(id)
    }

    fn tls(&mut self, k: &Key) -> Option<Tls> {
        let policy = self.index.tls_policies.iter().copied().find(|p| {
            p.spec.target_refs.iter().any(|t| {
                t.kind.as_deref() == Some("Backend")
                    && t.group.as_deref() == Some("gateway.envoyproxy.io")
                    && ref_key(t, ns(p)) == *k
            })
        })?;
        let loc = &policy.location;
        let v = &policy.spec.validation;
        let ca = match (
            v.well_known_ca_certificates.as_deref(),
            v.ca_certificate_refs.as_slice(),
        ) {
            (Some("System"), []) => CaSource::System,
            (Some(other), []) => {
                self.err(
                    loc,
                    "spec.validation.wellKnownCACertificates",
                    format!("unknown value {other:?} (expected System)"),
                );
                CaSource::System
            }
            (None, refs) if !refs.is_empty() => {
                let mut pem = String::new();
                for (i, r) in refs.iter().enumerate() {
                    match self.ca_ref(r, ns(policy)) {
                        Ok(text) => pem.push_str(&text),
                        Err(e) => {
                            self.err(loc, format!("spec.validation.caCertificateRefs[{i}]"), e)
                        }
                    }
                }
                CaSource::Pem(pem)
            }
            _ => {
                self.err(
                    loc,
                    "spec.validation",
                    "set exactly one of wellKnownCACertificates or caCertificateRefs",
                );
                CaSource::System
            }
        };
        let mut sans: Vec<String> = v
            .subject_alt_names
            .iter()
            .filter_map(|s| s.hostname.clone())
            .collect();
        if sans.is_empty() {
            sans.push(v.hostname.clone());
        }
        Some(Tls {
            hostname: v.hostname.clone(),
            subject_alt_names: sans,
            ca,
        })
    }

    fn ca_ref(&self, r: &ObjectRefSpec, default_ns: &str) -> Result<String, String> {
        let k = ref_key(r, default_ns);
        let (obj, is_secret) = match r.kind.as_deref().unwrap_or("ConfigMap") {
            "ConfigMap" => (self.index.config_maps.get(&k), false),
            "Secret" => (self.index.secrets.get(&k), true),
            other => {
                return Err(format!(
                    "kind {other:?} is not supported (ConfigMap or Secret)"
                ))
            }
        };
        let obj = obj.ok_or_else(|| {
            format!(
                "no {} {}/{}",
                r.kind.as_deref().unwrap_or("ConfigMap"),
                k.0,
                k.1
            )
        })?;
        let value = if is_secret {
            secret_value(&obj.spec, "ca.crt")?
        } else {
            obj.spec.data.get("ca.crt").cloned()
        };
        value.ok_or_else(|| format!("{}/{} has no ca.crt entry", k.0, k.1))
    }
}

/// The environment variable that overrides Secret `name`'s `apiKey`.
pub fn secret_env_var(secret_name: &str) -> String {
    let mut var = String::from(SECRET_ENV_PREFIX);
    var.extend(secret_name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    var
}

/// A Secret entry: `stringData` wins over base64 `data`, as in Kubernetes.
fn secret_value(data: &DataObject, entry: &str) -> Result<Option<String>, String> {
    if let Some(v) = data.string_data.get(entry) {
        return Ok(Some(v.clone()));
    }
    let Some(b64) = data.data.get(entry) else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| format!("data.{entry} is not valid base64"))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| format!("data.{entry} is not UTF-8"))
}

fn parse_rfc3339(text: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("invalid RFC 3339 time {text:?}: {e}"))
}
