//! AIServiceBackends and their BackendSecurityPolicies: schema, path prefix, key and where an
//! Envoy that injects the key finds it.

use super::{key, ns, ref_key, secret_env_var, secret_value, Compiler, Key};
use crate::config::load::Obj;
use crate::config::providers::{self, StreamUsage, STREAM_USAGE_ANNOTATION};
use crate::config::raw::{AIServiceBackendSpec, BackendSecurityPolicySpec};
use crate::config::runtime::{BackendId, KeyHeader, KeySource, Schema, ServiceBackend};
use crate::config::secret::SecretString;

impl Compiler<'_> {
    /// Compiles (once) and returns the id of an AIServiceBackend.
    pub(super) fn service_backend(&mut self, k: &Key) -> Option<BackendId> {
        if let Some(id) = self.backend_ids.get(k) {
            return Some(*id);
        }
        let obj = *self.index.service_backends.get(k)?;
        let loc = &obj.location;
        let spec = &obj.spec;
        let name = spec.schema.name.as_str();
        let schema = Schema::from_name(name).unwrap_or_else(|| {
            let message = if Schema::NOT_YET.contains(&name) {
                format!(
                    "schema {name:?} is not supported by ai-extproc yet (supported: {})",
                    Schema::SUPPORTED
                )
            } else {
                format!("unknown schema {name:?} (supported: {})", Schema::SUPPORTED)
            };
            self.err(loc, "spec.schema.name", message);
            Schema::OpenAI
        });
        // Azure's version is its api-version, and its paths are its own (`/openai/...`).
        let api_version = if schema == Schema::AzureOpenAI {
            if spec.schema.prefix.is_some() {
                self.err(
                    loc,
                    "spec.schema.prefix",
                    "AzureOpenAI paths are /openai/deployments/{model}/...; a prefix is not supported",
                );
            }
            if spec.schema.version.is_none() {
                self.err(
                    loc,
                    "spec.schema.version",
                    "AzureOpenAI needs its api-version here (e.g. 2025-01-01-preview)",
                );
            }
            spec.schema.version.clone()
        } else {
            None
        };
        let prefix = match (&spec.schema.prefix, &spec.schema.version) {
            _ if schema == Schema::AzureOpenAI => String::new(),
            (Some(p), _) => p.clone(),
            (None, Some(v)) => format!("/{}", v.trim_start_matches('/')),
            (None, None) => crate::providers::default_prefix(schema).to_string(),
        };
        if !prefix.starts_with('/') && schema != Schema::AzureOpenAI {
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
            schema,
            prefix,
            api_version,
            api_key,
            key_source,
            cluster: cluster.unwrap_or(0),
            stream_usage,
        });
        self.backend_ids.insert(k.clone(), id);
        Some(id)
    }

    /// The backend's key, and where an Envoy that injects it itself finds it.
    pub(super) fn api_key(
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
        let (api, header, field) = match policy.spec.kind.as_str() {
            "APIKey" => (&policy.spec.api_key, KeyHeader::Bearer, "apiKey"),
            "AnthropicAPIKey" => (
                &policy.spec.anthropic_api_key,
                KeyHeader::XApiKey,
                "anthropicAPIKey",
            ),
            "AzureAPIKey" => (&policy.spec.azure_api_key, KeyHeader::ApiKey, "azureAPIKey"),
            "AzureCredentials" => {
                self.err(
                    &policy.location,
                    "spec.azureCredentials",
                    "Entra ID client credentials (a token fetched and refreshed) are not supported yet; use type AzureAPIKey with azureAPIKey.secretRef",
                );
                return None;
            }
            other => {
                self.err(
                    &policy.location,
                    "spec.type",
                    format!(
                        "policy type {other:?} is not supported (supported: APIKey, AnthropicAPIKey, AzureAPIKey)"
                    ),
                );
                return None;
            }
        };
        let Some(api) = api else {
            self.err(
                &policy.location,
                format!("spec.{field}"),
                format!("required for type {}", policy.spec.kind),
            );
            return None;
        };
        if header == KeyHeader::ApiKey && obj.spec.schema.name != "AzureOpenAI" {
            self.err(
                &policy.location,
                "spec.type",
                format!(
                    "AzureAPIKey sends the key as api-key, for backends of schema AzureOpenAI; {}/{} is {}",
                    k.0, k.1, obj.spec.schema.name
                ),
            );
            return None;
        }
        if header == KeyHeader::XApiKey && obj.spec.schema.name != "Anthropic" {
            self.err(
                &policy.location,
                "spec.type",
                format!(
                    "AnthropicAPIKey sends the key as x-api-key, for backends of schema Anthropic; {}/{} is {}",
                    k.0, k.1, obj.spec.schema.name
                ),
            );
            return None;
        }
        let sk = ref_key(&api.secret_ref, ns(policy));
        let Some(secret) = self.index.secrets.get(&sk).copied() else {
            self.err(
                &policy.location,
                format!("spec.{field}.secretRef.name"),
                format!("no Secret {}/{}", sk.0, sk.1),
            );
            return None;
        };
        let source = KeySource {
            secret: format!("{}/{}", sk.0, sk.1),
            env_var: self.secret_env_name(&sk.1),
            header,
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
    pub(super) fn secret_env_name(&self, secret_name: &str) -> String {
        self.options
            .secret_env
            .iter()
            .find(|(name, _)| name == secret_name)
            .map_or_else(|| secret_env_var(secret_name), |(_, var)| var.clone())
    }

    /// The documented override rule: `--secret-env NAME=VAR` first, then
    /// `AI_EXTPROC_SECRET_<NAME>` (upper case, other characters as `_`); set and non-empty wins.
    pub(super) fn secret_override(&self, secret_name: &str) -> Option<String> {
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
}
