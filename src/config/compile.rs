//! Raw objects -> [`Config`]: resolves every reference, checks every value, and collects all
//! problems with their place.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine;

use super::error::{ConfigError, Location};
use super::load::{Obj, Object};
use super::raw::{
    AIGatewayRouteSpec, AIServiceBackendSpec, BackendSecurityPolicySpec, BackendSpec,
    BackendTlsPolicySpec, BackendTrafficPolicySpec, DataObject, ObjectRefSpec, SecurityPolicySpec,
};
use super::runtime::{BackendId, ClusterId, Config};
use super::{checks, cors};

mod auth;
mod backend;
mod cluster;
mod ratelimit;
mod retry;
mod route;

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
    traffic_policies: Vec<&'a Obj<BackendTrafficPolicySpec>>,
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
    c.auth();
    c.unused_objects();
    c.retries();
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
        traffic_policies: Vec::new(),
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
            Object::TrafficPolicy(o) => index.traffic_policies.push(o),
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
