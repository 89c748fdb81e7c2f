//! Reads Kubernetes YAML (files, directories, multi-document streams) into typed objects.
//! Objects of kinds ai-extproc does not use are skipped (a debug line); a kind in an API group
//! ai-extproc reads that it does not know, or a near miss of one of its kinds
//! (`AIGatewayRoutes`), is an error: a typo must not silently drop a route. Every problem is
//! collected with its place.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::{ConfigError, Location};
use super::raw::{
    AIGatewayRouteSpec, AIServiceBackendSpec, BackendSecurityPolicySpec, BackendSpec,
    BackendTlsPolicySpec, BackendTrafficPolicySpec, DataObject, Metadata, SecurityPolicySpec,
};

/// A parsed object with where it came from.
#[derive(Debug, Clone)]
pub struct Obj<T> {
    pub meta: Metadata,
    pub spec: T,
    pub location: Location,
}

/// The objects ai-extproc acts on.
#[derive(Debug, Clone)]
pub enum Object {
    Route(Obj<AIGatewayRouteSpec>),
    ServiceBackend(Obj<AIServiceBackendSpec>),
    BackendSecurityPolicy(Obj<BackendSecurityPolicySpec>),
    Backend(Obj<BackendSpec>),
    TlsPolicy(Obj<BackendTlsPolicySpec>),
    Secret(Obj<DataObject>),
    ConfigMap(Obj<DataObject>),
    SecurityPolicy(Obj<SecurityPolicySpec>),
    TrafficPolicy(Obj<BackendTrafficPolicySpec>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
}

/// Which of our kinds a document is, from its `apiVersion` and `kind`.
enum Dispatch {
    Route,
    ServiceBackend,
    BackendSecurityPolicy,
    Backend,
    TlsPolicy,
    Secret,
    ConfigMap,
    SecurityPolicy,
    TrafficPolicy,
    /// A kind of another tool (Gateway, Deployment...): a debug line.
    Ignore,
    /// A kind ai-extproc should know and does not: an error.
    Unknown(String),
    BadVersion(&'static str),
}

/// The kinds ai-extproc reads.
const OUR_KINDS: [&str; 9] = [
    "AIGatewayRoute",
    "AIServiceBackend",
    "BackendSecurityPolicy",
    "Backend",
    "BackendTLSPolicy",
    "Secret",
    "ConfigMap",
    "SecurityPolicy",
    "BackendTrafficPolicy",
];

/// Envoy Gateway kinds that Envoy Gateway applies, not ai-extproc.
const ENVOY_GATEWAY_KINDS: [&str; 5] = [
    "ClientTrafficPolicy",
    "EnvoyExtensionPolicy",
    "EnvoyPatchPolicy",
    "EnvoyProxy",
    "HTTPRouteFilter",
];

fn dispatch(api_version: &str, kind: &str) -> Dispatch {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    match (group, kind) {
        (
            "aigateway.envoyproxy.io",
            "AIGatewayRoute" | "AIServiceBackend" | "BackendSecurityPolicy",
        ) if !matches!(version, "v1alpha1" | "v1beta1") => {
            Dispatch::BadVersion("aigateway.envoyproxy.io/v1alpha1 or v1beta1")
        }
        ("aigateway.envoyproxy.io", "AIGatewayRoute") => Dispatch::Route,
        ("aigateway.envoyproxy.io", "AIServiceBackend") => Dispatch::ServiceBackend,
        ("aigateway.envoyproxy.io", "BackendSecurityPolicy") => Dispatch::BackendSecurityPolicy,
        ("aigateway.envoyproxy.io", other) => Dispatch::Unknown(format!(
            "kind {other:?} of aigateway.envoyproxy.io is not one ai-extproc applies{} (it reads AIGatewayRoute, AIServiceBackend, BackendSecurityPolicy)",
            near_miss(other).map(|k| format!("; did you mean {k}?")).unwrap_or_default()
        )),
        ("gateway.envoyproxy.io", "Backend" | "SecurityPolicy" | "BackendTrafficPolicy")
            if version != "v1alpha1" =>
        {
            Dispatch::BadVersion("gateway.envoyproxy.io/v1alpha1")
        }
        ("gateway.envoyproxy.io", "Backend") => Dispatch::Backend,
        ("gateway.envoyproxy.io", "SecurityPolicy") => Dispatch::SecurityPolicy,
        ("gateway.envoyproxy.io", "BackendTrafficPolicy") => Dispatch::TrafficPolicy,
        ("gateway.envoyproxy.io", k) if ENVOY_GATEWAY_KINDS.contains(&k) => Dispatch::Ignore,
        ("gateway.envoyproxy.io", other) => Dispatch::Unknown(format!(
            "unknown kind {other:?} of gateway.envoyproxy.io{}",
            near_miss(other).map(|k| format!("; did you mean {k}?")).unwrap_or_default()
        )),
        ("gateway.networking.k8s.io", "BackendTLSPolicy") => Dispatch::TlsPolicy,
        ("", "Secret") if version == "v1" => Dispatch::Secret,
        ("", "ConfigMap") if version == "v1" => Dispatch::ConfigMap,
        (_, other) => match near_miss(other) {
            Some(k) if k != other => Dispatch::Unknown(format!(
                "unknown kind {other:?}; did you mean {k}?"
            )),
            _ => Dispatch::Ignore,
        },
    }
}

/// One of our kinds that `kind` is probably a typo of: case aside, one edit away (a plural, a
/// letter missing or wrong). Further than that, real kinds of other tools come close
/// (`BackendLBPolicy` is two edits from `BackendTLSPolicy`).
fn near_miss(kind: &str) -> Option<&'static str> {
    let lower = kind.to_ascii_lowercase();
    OUR_KINDS
        .iter()
        .copied()
        .find(|k| edit_distance(&lower, &k.to_ascii_lowercase()) <= 1)
}

/// Levenshtein distance (kind names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Loads every `.yaml`/`.yml` file named, or found directly inside a named directory (sorted).
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Object>, Vec<ConfigError>> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        for file in expand(path, &mut errors) {
            match std::fs::read_to_string(&file) {
                Ok(text) => parse_str(&file, &text, &mut objects, &mut errors),
                Err(e) => errors.push(ConfigError::new(
                    &Location {
                        file: file.clone(),
                        doc: 0,
                        object: None,
                    },
                    "",
                    format!("cannot read file: {e}"),
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

fn expand(path: &Path, errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            files.sort();
            files
        }
        Err(e) => {
            errors.push(ConfigError::new(
                &Location {
                    file: path.to_path_buf(),
                    doc: 0,
                    object: None,
                },
                "",
                format!("cannot read directory: {e}"),
            ));
            Vec::new()
        }
    }
}

/// Parses one multi-document YAML text.
pub fn parse_str(
    file: &Path,
    text: &str,
    objects: &mut Vec<Object>,
    errors: &mut Vec<ConfigError>,
) {
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let mut location = Location {
            file: file.to_path_buf(),
            doc: i + 1,
            object: None,
        };
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(v) => v,
            Err(e) => {
                errors.push(ConfigError::new(
                    &location,
                    "",
                    format!("invalid YAML: {e}"),
                ));
                // A syntax error leaves the stream unusable past this point.
                return;
            }
        };
        if value.is_null() {
            continue;
        }
        if let Some(object) = parse_document(value, &mut location, errors) {
            objects.push(object);
        }
    }
}

fn parse_document(
    value: serde_yaml::Value,
    location: &mut Location,
    errors: &mut Vec<ConfigError>,
) -> Option<Object> {
    let type_meta: TypeMeta = match serde_yaml::from_value(value.clone()) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError::new(
                location,
                "",
                format!("not a Kubernetes object: {e}"),
            ));
            return None;
        }
    };
    let (Some(api_version), Some(kind)) = (type_meta.api_version, type_meta.kind) else {
        errors.push(ConfigError::new(
            location,
            "",
            "apiVersion and kind are required",
        ));
        return None;
    };
    let meta: Option<Metadata> = value
        .get("metadata")
        .map(|m| decode(m.clone(), "metadata", location, errors))
        .unwrap_or_else(|| {
            errors.push(ConfigError::new(location, "metadata", "missing"));
            None
        });
    if let Some(meta) = &meta {
        let ns = meta.namespace.as_deref().unwrap_or("default");
        location.object = Some(format!("{kind} {ns}/{}", meta.name));
    }
    let which = dispatch(&api_version, &kind);
    let spec = value.get("spec").cloned();
    let loc = location.clone();
    macro_rules! with_spec {
        ($variant:ident) => {{
            let Some(spec) = spec else {
                errors.push(ConfigError::new(&loc, "spec", "missing"));
                return None;
            };
            let spec = decode(spec, "spec", &loc, errors)?;
            Some(Object::$variant(Obj {
                meta: meta?,
                spec,
                location: loc,
            }))
        }};
    }
    match which {
        Dispatch::Route => with_spec!(Route),
        Dispatch::ServiceBackend => with_spec!(ServiceBackend),
        Dispatch::BackendSecurityPolicy => with_spec!(BackendSecurityPolicy),
        Dispatch::SecurityPolicy => with_spec!(SecurityPolicy),
        Dispatch::TrafficPolicy => with_spec!(TrafficPolicy),
        Dispatch::Backend => with_spec!(Backend),
        Dispatch::TlsPolicy => with_spec!(TlsPolicy),
        Dispatch::Secret | Dispatch::ConfigMap => {
            let data: DataObject = decode(value, "", &loc, errors)?;
            let obj = Obj {
                meta: meta?,
                spec: data,
                location: loc,
            };
            Some(if matches!(which, Dispatch::Secret) {
                Object::Secret(obj)
            } else {
                Object::ConfigMap(obj)
            })
        }
        Dispatch::Ignore => {
            tracing::debug!(file = %loc.file.display(), doc = loc.doc, %api_version, %kind, "ignoring object of a kind ai-extproc does not use");
            None
        }
        Dispatch::Unknown(message) => {
            errors.push(ConfigError::new(&loc, "kind", message));
            None
        }
        Dispatch::BadVersion(expected) => {
            errors.push(ConfigError::new(
                &loc,
                "apiVersion",
                format!("{kind} must be {expected}, found {api_version}"),
            ));
            None
        }
    }
}

/// Deserializes with the failing field's path in the error.
fn decode<T: DeserializeOwned>(
    value: serde_yaml::Value,
    prefix: &str,
    location: &Location,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = match (prefix.is_empty(), inner == ".") {
                (true, _) => inner,
                (false, true) => prefix.to_string(),
                (false, false) => format!("{prefix}.{inner}"),
            };
            errors.push(ConfigError::new(location, path, e.into_inner().to_string()));
            None
        }
    }
}
