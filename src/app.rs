//! The processor as a running service: config (with hot reload), the ext_proc + usage export +
//! health gRPC server, the admin HTTP endpoint, metrics, and a bounded graceful drain.
//! `serve` runs it alone; `run` and the end-to-end tests run it beside Envoy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::admin::{serve_admin, AdminState, Health, Metrics};
use crate::config::{self, CompileOptions, Config, ConfigErrors, ConfigHandle, ReloadOutcome};
use crate::extproc::{serve_with_health, Bound, Processor};
use crate::gateway::Options;
use crate::usage::{spawn_jsonl_sink, UsageHub};

/// How to run the processor.
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub config: Vec<PathBuf>,
    pub secret_env: Vec<(String, String)>,
    /// Admin HTTP address (`/healthz`, `/readyz`, `/metrics`); none to not serve it.
    pub admin: Option<SocketAddr>,
    /// Envoy's admin address: `/readyz` then also requires that Envoy to be ready.
    pub envoy_admin: Option<SocketAddr>,
    /// Largest request body once decoded (the same bound as Envoy's buffer limit).
    pub max_body_bytes: u32,
    /// Output tokens reserved on token budgets for a request without an output bound.
    pub output_estimate: u64,
    /// Where budget counters live.
    pub budget_store: BudgetStore,
    /// The processor puts backend keys on requests (else Envoy does).
    pub inject_keys: bool,
    pub user_header: Option<String>,
    pub usage_log: Option<PathBuf>,
    /// How often the config files are checked for changes; none to not reload.
    pub reload_interval: Option<Duration>,
}

/// Where budget counters live.
#[derive(Debug, Clone)]
pub enum BudgetStore {
    /// In this process.
    Memory,
    /// In Redis, shared by replicas.
    Redis(crate::budget::RedisOptions),
}

/// Why the processor did not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Budgets(#[from] crate::budget::RedisSetupError),
}

/// A running processor.
pub struct App {
    pub config: ConfigHandle,
    pub usage: UsageHub,
    pub metrics: Arc<Metrics>,
    pub health: Health,
    /// Admin endpoint address, when served.
    pub admin_addr: Option<SocketAddr>,
    /// Every applied reload's new config (for `run`, which re-renders Envoy).
    pub reloads: mpsc::UnboundedReceiver<Arc<Config>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    background: Vec<JoinHandle<()>>,
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in &self.background {
            task.abort();
        }
    }
}

impl App {
    /// Loads the config and serves on `bound`.
    pub async fn start(bound: Bound, options: AppOptions) -> Result<Self, AppError> {
        let compiled = config::load(
            &options.config,
            &CompileOptions::from_env(options.secret_env.clone()),
        )?;
        config::log_warnings(&compiled);
        if options.inject_keys {
            // Beside an Envoy that ai-extproc did not configure (Envoy Gateway), nothing rewrites
            // a retry for another backend: the processor routes to the first priority only.
            for rule in compiled.rules.iter().filter(|r| r.fails_over()) {
                tracing::warn!(
                    rule = %rule.name(&compiled),
                    "backends at several priorities: failover needs the Envoy config ai-extproc renders (run, envoy-config); with --credentials processor only priority 0 serves"
                );
            }
        }
        let handle = ConfigHandle::new(compiled);
        let metrics = Arc::new(Metrics::new());
        metrics.config_generation.set(handle.generation());
        metrics.config_loaded(&handle.snapshot(), 0);
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        metrics
            .runtime_workers
            .set(u64::try_from(workers).unwrap_or(u64::MAX));
        let usage = UsageHub::new();
        let observer = metrics.clone();
        usage.set_observer(Arc::new(move |r| observer.observe(r)));
        if let Some(path) = &options.usage_log {
            spawn_jsonl_sink(&usage, path.clone())
                .await
                .map_err(|source| AppError::Io {
                    what: format!("opening the usage log {}", path.display()),
                    source,
                })?;
        }
        let (health, health_service) = Health::new().await;
        let mut background = Vec::new();
        let admin_addr = match options.admin {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| AppError::Io {
                        what: format!("binding the admin endpoint to {addr}"),
                        source,
                    })?;
                let local = listener.local_addr().ok();
                let state = AdminState {
                    health: health.clone(),
                    metrics: metrics.clone(),
                    usage: Some(usage.clone()),
                    envoy_admin: options.envoy_admin,
                };
                background.push(tokio::spawn(serve_admin(listener, state)));
                local
            }
            None => None,
        };
        let (reload_tx, reloads) = mpsc::unbounded_channel();
        if let Some(interval) = options.reload_interval {
            let (paths, secret_env, h, m) = (
                options.config.clone(),
                options.secret_env.clone(),
                handle.clone(),
                metrics.clone(),
            );
            background.push(tokio::spawn(config::watch(
                paths,
                secret_env,
                h,
                interval,
                move |outcome| match outcome {
                    ReloadOutcome::Applied {
                        generation,
                        config,
                        emptied,
                    } => {
                        m.reload(true);
                        m.config_generation.set(generation);
                        m.config_loaded(&config, emptied.len());
                        let _ = reload_tx.send(config);
                    }
                    ReloadOutcome::Rejected(_) => m.reload(false),
                },
            )));
        }
        let budgets = match &options.budget_store {
            BudgetStore::Memory => crate::budget::Budgets::memory(metrics.budget.clone()),
            BudgetStore::Redis(redis) => {
                crate::budget::Budgets::redis(redis.clone(), metrics.budget.clone())?
            }
        };
        let processor = Processor::with_options(
            handle.clone(),
            Options {
                user_header: options.user_header.clone(),
                usage: Some(usage.clone()),
                max_body_bytes: options.max_body_bytes,
                inject_keys: options.inject_keys,
                clock: crate::gateway::Clock::default(),
                budgets: Some(Arc::new(budgets)),
                default_output_estimate: options.output_estimate,
                pins: Arc::default(),
            },
            metrics.clone(),
        );
        let (stop, stop_rx) = oneshot::channel();
        let server = tokio::spawn(serve_with_health(
            bound,
            processor,
            Some(health_service),
            async {
                let _ = stop_rx.await;
            },
        ));
        health.set_ready().await;
        Ok(Self {
            config: handle,
            usage,
            metrics,
            health,
            admin_addr,
            reloads,
            stop: Some(stop),
            server: Some(server),
            background,
        })
    }

    /// Completes if the gRPC server stops on its own (not by [`App::drain`]): the process is
    /// then no use, and should exit so its supervisor (Kubernetes, `run`, compose) restarts it.
    pub async fn server_stopped(&mut self) -> String {
        let Some(server) = self.server.as_mut() else {
            return std::future::pending().await;
        };
        let why = match server.await {
            Ok(Ok(())) => "it stopped".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        self.server = None;
        why
    }

    /// Graceful shutdown: health goes NOT_SERVING at once and the server keeps serving for
    /// `grace` (so health checkers and load balancers see it and stop sending); then it stops
    /// taking connections and waits for the streams in flight, at most `timeout`. True when
    /// everything finished in time.
    pub async fn drain(mut self, grace: Duration, timeout: Duration) -> bool {
        self.health.start_draining().await;
        let active = self.metrics.streams_active.get();
        tracing::info!(active_streams = active, ?grace, ?timeout, "draining");
        tokio::time::sleep(grace).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(server) = self.server.take() else {
            return true;
        };
        match tokio::time::timeout(timeout, server).await {
            Ok(_) => {
                tracing::info!("drained");
                true
            }
            Err(_) => {
                tracing::warn!(
                    active_streams = self.metrics.streams_active.get(),
                    "drain time over; exiting with streams still open"
                );
                false
            }
        }
    }
}
