//! Hot reload: the config files are polled, and a change is compiled and swapped whole; a bad
//! change keeps the last good config and reports every error.
//!
//! Polling a content fingerprint (every `interval`) rather than inotify is deliberate: it sees
//! Kubernetes ConfigMap updates (an atomic symlink swap), editors that replace files, and files
//! on any filesystem, with one code path and no missed events.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{load, CompileOptions, Config, ConfigErrors, ConfigHandle};

/// What one check found.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The new config is in use, as this generation. `emptied`: files that had routes and
    /// have none now (an editor's truncated save, say), applied all the same and said loudly.
    Applied {
        generation: u64,
        config: std::sync::Arc<Config>,
        emptied: Vec<PathBuf>,
    },
    /// The change had errors; the previous config stays.
    Rejected(ConfigErrors),
}

/// Files that had routes in `old` and have none in `new`.
pub fn emptied_files(old: &Config, new: &Config) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = old
        .routes
        .iter()
        .map(|r| r.location.file.clone())
        .filter(|f| !new.routes.iter().any(|r| &r.location.file == f))
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Logs what compiled but looks wrong.
pub fn log_warnings(config: &Config) {
    for w in &config.warnings {
        tracing::warn!("config: {w}");
    }
}

/// A fingerprint of the files' names and contents (directories expanded like the loader does).
pub fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for path in paths {
        hash_path(path, &mut h);
    }
    h.finish()
}

fn hash_path(path: &Path, h: &mut DefaultHasher) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            if matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                hash_path(&e, h);
            }
        }
        return;
    }
    path.hash(h);
    std::fs::read(path).ok().hash(h);
}

/// Watches `paths` and swaps `handle` on every good change, calling `report` with each outcome.
/// Runs until the task is dropped.
pub async fn watch(
    paths: Vec<PathBuf>,
    secret_env: Vec<(String, String)>,
    handle: ConfigHandle,
    interval: Duration,
    mut report: impl FnMut(ReloadOutcome) + Send,
) {
    let mut last = fingerprint(&paths);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = fingerprint(&paths);
        if now == last {
            continue;
        }
        last = now;
        match load(&paths, &CompileOptions::from_env(secret_env.clone())) {
            Ok(config) => {
                let emptied = emptied_files(&handle.snapshot(), &config);
                let generation = handle.store(config);
                tracing::info!(generation, "config reloaded");
                for file in &emptied {
                    tracing::error!(
                        generation,
                        file = %file.display(),
                        "ROUTES REMOVED: this file had AIGatewayRoutes and has none now; its models answer 404 until it is restored (a truncated save?)"
                    );
                }
                let config = handle.snapshot();
                log_warnings(&config);
                report(ReloadOutcome::Applied {
                    generation,
                    config,
                    emptied,
                });
            }
            Err(errors) => {
                tracing::error!(
                    generation = handle.generation(),
                    "config change rejected, keeping the last good config:\n{errors}"
                );
                report(ReloadOutcome::Rejected(errors));
            }
        }
    }
}
