//! Provider keys put on the request by Envoy itself, when ai-extproc renders Envoy's config.
//!
//! Set by the processor (a header mutation), a key shows in Envoy's debug logs twice: in the
//! ext_proc reply ext_proc logs and in the headers the router logs. Set by Envoy's credential
//! injector as an *upstream* filter of the backend's cluster, it appears after the router has
//! logged, and nowhere in Envoy's output even at trace level (checked with Envoy 1.40; a test
//! greps a debug run). The key reaches Envoy as a static secret: inline in a bootstrap that only
//! `run` writes (a private file), or read from the environment variable that overrides the
//! Secret (docker-compose, `envoy-config`), never written into a file someone might commit.
//!
//! Keys belong to AIServiceBackends and clusters to Backends: AIServiceBackends with different
//! keys on one Backend get one cluster each.

use serde_json::{json, Value};

use crate::config::{BackendId, ClusterId, Config, KeyHeader, KeySource};

/// Who puts the backend's key on the request to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Credentials {
    /// The processor, as a header mutation: beside Envoy Gateway, whose clusters ai-extproc does
    /// not render. Envoy's debug logs then show the key.
    #[default]
    Processor,
    /// Envoy, from a secret inline in the bootstrap (`run`: a private file in its state dir).
    EnvoyInline,
    /// Envoy, from the environment variable that overrides the Secret (`envoy-config`).
    EnvoyEnv,
}

/// One Envoy cluster: a Backend, and the key of the AIServiceBackends it carries (when Envoy
/// injects keys).
#[derive(Debug, Clone)]
pub struct PlannedCluster {
    pub name: String,
    pub cluster: ClusterId,
    /// The Secret's source and the key; `None` when nothing is injected.
    pub key: Option<(KeySource, String)>,
}

/// The clusters to render and which one each AIServiceBackend's routes use.
#[derive(Debug, Clone)]
pub struct Plan {
    pub clusters: Vec<PlannedCluster>,
    of_backend: Vec<usize>,
    /// Keys of the backends of rules that fail over: Envoy injects them per attempt, whoever
    /// injects the other keys (envoy/failover.rs).
    failover_keys: Vec<(KeySource, String)>,
}

impl Plan {
    pub fn new(config: &Config, credentials: Credentials) -> Self {
        let mut plan = Self {
            clusters: Vec::new(),
            of_backend: Vec::new(),
            failover_keys: Vec::new(),
        };
        for rule in config.rules.iter().filter(|r| r.fails_over()) {
            for target in &rule.backends {
                let backend = &config.backends[target.backend];
                if let Some(key) = backend
                    .key_source
                    .clone()
                    .zip(backend.api_key.as_ref().map(|k| k.expose().to_string()))
                {
                    plan.failover_keys.push(key);
                }
            }
        }
        if credentials == Credentials::Processor {
            plan.clusters = (0..config.clusters.len())
                .map(|id| PlannedCluster {
                    name: config.clusters[id].name.clone(),
                    cluster: id,
                    key: None,
                })
                .collect();
            plan.of_backend = config.backends.iter().map(|b| b.cluster).collect();
            return plan;
        }
        for backend in &config.backends {
            let key = backend
                .key_source
                .clone()
                .zip(backend.api_key.as_ref().map(|k| k.expose().to_string()));
            let found = plan.clusters.iter().position(|c| {
                c.cluster == backend.cluster
                    && c.key.as_ref().map(|(s, _)| (&s.secret, s.header))
                        == key.as_ref().map(|(s, _)| (&s.secret, s.header))
            });
            let index = found.unwrap_or_else(|| {
                let base = &config.clusters[backend.cluster].name;
                let taken = plan.clusters.iter().any(|c| c.cluster == backend.cluster);
                let name = if taken {
                    format!("{base}#{}", backend.name)
                } else {
                    base.clone()
                };
                plan.clusters.push(PlannedCluster {
                    name,
                    cluster: backend.cluster,
                    key,
                });
                plan.clusters.len() - 1
            });
            plan.of_backend.push(index);
        }
        plan
    }

    /// The Envoy cluster an AIServiceBackend's traffic goes to.
    pub fn cluster_of(&self, backend: BackendId) -> &PlannedCluster {
        &self.clusters[self.of_backend[backend]]
    }

    /// The static secrets the injectors read.
    pub fn secrets(&self, credentials: Credentials) -> Vec<Value> {
        let mut secrets: Vec<Value> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let keys = self.clusters.iter().filter_map(|c| c.key.as_ref());
        for (source, key) in keys.chain(&self.failover_keys) {
            if seen.contains(&source.secret.as_str()) {
                continue;
            }
            seen.push(&source.secret);
            // Only `run` writes a bootstrap that stays private: elsewhere Envoy reads the key
            // from the variable that overrides the Secret.
            let data = match credentials {
                Credentials::EnvoyInline => json!({"inline_string": key}),
                Credentials::EnvoyEnv | Credentials::Processor => {
                    json!({"environment_variable": source.env_var})
                }
            };
            secrets.push(json!({
                "name": secret_name(source),
                "generic_secret": {"secret": data}
            }));
        }
        secrets
    }
}

fn secret_name(source: &KeySource) -> String {
    format!("ai_extproc_key/{}", source.secret)
}

/// The upstream filters of a cluster that injects `key`: the injector, then the codec.
pub fn upstream_filters(key: &KeySource) -> Value {
    json!([injector(key), upstream_codec()])
}

/// The credential injector that puts `key` on a request as its policy says
/// (`Authorization: Bearer`, `x-api-key` or `api-key`).
pub fn injector(key: &KeySource) -> Value {
    let (header, prefix) = match key.header {
        KeyHeader::Bearer => ("authorization", "Bearer "),
        KeyHeader::XApiKey => ("x-api-key", ""),
        KeyHeader::ApiKey => ("api-key", ""),
    };
    json!({
        "name": "envoy.filters.http.credential_injector",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            "overwrite": true,
            "credential": {
                "name": "envoy.http.injected_credentials.generic",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                    "credential": {"name": secret_name(key)},
                    "header": header,
                    "header_value_prefix": prefix
                }
            }
        }
    })
}

/// The last upstream filter of every chain: the one that talks to the provider.
pub fn upstream_codec() -> Value {
    json!({
        "name": "envoy.filters.http.upstream_codec",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}
    })
}
