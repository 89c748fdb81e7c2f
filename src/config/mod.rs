//! Configuration: Envoy AI Gateway custom resources (YAML) -> raw serde types -> one compiled,
//! immutable [`Config`], shared through [`ConfigHandle`] and swapped whole.

mod cel;
mod checks;
mod compile;
mod cors;
mod error;
mod load;
mod providers;
mod raw;
mod reload;
mod runtime;
mod secret;
mod targets;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use cel::{CelCost, CelInputs};
pub use compile::{
    compile, secret_env_var, CompileOptions, DEFAULT_REQUEST_TIMEOUT, SECRET_ENV_PREFIX,
};
pub use error::{ConfigError, ConfigErrors, Location};
pub use load::{load_paths, parse_str, Object};
pub use providers::{StreamUsage, STREAM_USAGE_ANNOTATION};
pub use reload::{emptied_files, fingerprint, log_warnings, watch, ReloadOutcome};
pub use runtime::{
    ApiKeyAuth, Auth, BackendId, Budget, CaSource, Cluster, ClusterId, Config, Cors, Cost,
    CostKind, CredentialSource, Endpoint, HeaderMatch, HeaderSelector, Jwks, JwtAuth, JwtProvider,
    KeyHeader, KeySource, Match, ModelInfo, Retry, Route, RouteId, Rule, Schema, SelectorMatch,
    ServiceBackend, Tls, WeightedBackend,
};
pub use secret::SecretString;

/// Loads and compiles the given files and directories.
pub fn load(paths: &[PathBuf], options: &CompileOptions) -> Result<Config, ConfigErrors> {
    let objects = load_paths(paths).map_err(ConfigErrors)?;
    compile(&objects, options).map_err(ConfigErrors)
}

/// Compiles one YAML text (tests, fuzzing).
pub fn load_str(name: &str, text: &str, options: &CompileOptions) -> Result<Config, ConfigErrors> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    parse_str(std::path::Path::new(name), text, &mut objects, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    compile(&objects, options).map_err(ConfigErrors)
}

/// The live configuration. Each ext_proc stream takes one snapshot when it opens and keeps it,
/// so a swap never changes a request half-way.
#[derive(Debug, Clone)]
pub struct ConfigHandle {
    current: Arc<ArcSwap<Config>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl ConfigHandle {
    /// Generation 1.
    pub fn new(config: Config) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(config)),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }

    pub fn snapshot(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Swaps the whole config in; returns its generation.
    pub fn store(&self, config: Config) -> u64 {
        self.current.store(Arc::new(config));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl CompileOptions {
    /// Options from this process's environment and clock.
    pub fn from_env(secret_env: Vec<(String, String)>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Self {
            env: std::env::vars().collect(),
            secret_env,
            now,
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_auth;
#[cfg(test)]
mod tests_diagnostics;
#[cfg(test)]
mod tests_ratelimit;
#[cfg(test)]
mod tests_retry;
#[cfg(test)]
mod tests_schemas;
