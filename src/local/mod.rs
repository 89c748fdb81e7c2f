//! The local gateway: processor, Envoy and (optionally) the offline upstreams, started and
//! supervised together. `ai-extproc run` (and so `make run`) and the end-to-end tests use it.
//!
//! Both Envoy and the processor are supervised: either one that dies is restarted with backoff
//! (`envoy.rs`, `processor.rs`). A config change that alters the rendered bootstrap (a new route
//! or Backend) reaches Envoy by hot restart: a new Envoy process takes over the listeners from
//! the old one, which drains its in-flight requests and exits, so no request is dropped.
//! Changes that only concern the processor (a model override, costs, a key) need no restart.

mod backoff;
mod envoy;
mod lock;
mod processor;
mod upstreams;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use envoy::EnvoyState;
pub use lock::LockError;

use crate::app::{App, AppError, AppOptions};
use crate::config::{self, CompileOptions, ConfigHandle};
use crate::envoy::{render_yaml, Credentials, EnvoyOptions, ProcessorAddress};
use crate::extproc::Listen;
use crate::upstreams::Upstream;
use crate::usage::UsageHub;

/// What to start.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Config files or directories.
    pub config: Vec<PathBuf>,
    /// `secret -> env var` overrides.
    pub secret_env: Vec<(String, String)>,
    /// Envoy binary.
    pub envoy: PathBuf,
    /// Where the rendered bootstrap, socket and CA files go.
    pub state_dir: PathBuf,
    /// Envoy's rendering options (listener, admin, access log, overrides...).
    pub envoy_options: EnvoyOptions,
    /// Backend to replace with the built-in fake Fireworks.
    pub fake_fireworks: Option<String>,
    /// Key the fake accepts; by default the one the config sends to that backend.
    pub fake_fireworks_key: Option<String>,
    /// Pause between the fake's streamed events.
    pub fake_stream_interval: Duration,
    /// Backend to replace with the built-in test upstream.
    pub test_upstream: Option<String>,
    /// Processor listener; a Unix socket in `state_dir` when `None`.
    pub processor_listen: Option<Listen>,
    /// Processor admin endpoint.
    pub processor_admin: Option<SocketAddr>,
    /// Envoy log level.
    pub envoy_log_level: String,
    /// Extra Envoy arguments.
    pub envoy_args: Vec<String>,
    /// Request header naming the user in usage records.
    pub user_header: Option<String>,
    /// JSON-lines usage log.
    pub usage_log: Option<PathBuf>,
    /// How often config files are checked for changes; none to not reload.
    pub reload_interval: Option<Duration>,
    /// Run the processor as a child process of this binary (`serve`), restarted whenever it
    /// exits, instead of inside this process.
    pub processor_binary: Option<PathBuf>,
    /// Runtime workers of the processor child (`--workers`); its default when `None`.
    pub processor_workers: Option<std::num::NonZeroUsize>,
    /// Global flags the processor child gets before `serve` (`--log`, `--log-format`,
    /// `--otlp-endpoint`: what `run` itself was given).
    pub processor_global_args: Vec<String>,
    /// Output tokens reserved on token budgets for a request without an output bound.
    pub output_estimate: u64,
    /// Where budget counters live.
    pub budget_store: crate::app::BudgetStore,
}

/// Why the local gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no Backend named {0:?} in the config (for --fake-fireworks/--test-upstream)")]
    UnknownBackend(String),
    #[error("Envoy exited before it was ready ({0}); run with --envoy-log-level info to see why")]
    EnvoyExited(String),
    #[error("Envoy was not ready within {0:?}")]
    EnvoyTimeout(Duration),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// A running local gateway. Dropping it stops Envoy, the processor and the upstreams.
pub struct LocalGateway {
    /// Client-facing address.
    pub listen: SocketAddr,
    /// The processor, when it runs in this process.
    pub app: Option<App>,
    /// The processor's admin endpoint.
    pub admin_addr: Option<SocketAddr>,
    /// PID of the processor child process (child mode), as it is restarted.
    pub processor_pid: watch::Receiver<Option<u32>>,
    /// The compiled config.
    pub config: ConfigHandle,
    /// The fake Fireworks, when started.
    pub fireworks: Option<Upstream>,
    /// The test upstream, when started.
    pub test_upstream: Option<Upstream>,
    /// The rendered bootstrap.
    pub envoy_config: PathBuf,
    /// Usage records of finished requests (in-process mode).
    pub usage: Option<UsageHub>,
    /// The processor's TCP address, when it listens on TCP.
    pub processor_addr: Option<SocketAddr>,
    /// Envoy hot restarts done (0 = the first Envoy is serving).
    pub envoy_epoch: watch::Receiver<u32>,
    /// Envoy's process, as it is restarted.
    pub envoy: watch::Receiver<EnvoyState>,
    supervisor: JoinHandle<()>,
    processor_supervisor: Option<JoinHandle<()>>,
    _lock: lock::StateLock,
}

impl Drop for LocalGateway {
    fn drop(&mut self) {
        // Aborting the supervisors drops their children, which kills them (kill_on_drop).
        self.supervisor.abort();
        if let Some(p) = &self.processor_supervisor {
            p.abort();
        }
    }
}

impl LocalGateway {
    /// Starts everything and waits until Envoy is ready.
    pub async fn start(mut options: LocalOptions) -> Result<Self, LocalError> {
        // Before anything in the state directory is touched: another run may own it.
        let lock = lock::StateLock::acquire(
            &options.state_dir,
            &format!(
                "pid {}, gateway on {}, Envoy admin on {}",
                std::process::id(),
                options.envoy_options.listen,
                options.envoy_options.admin
            ),
        )?;
        let compiled = config::load(
            &options.config,
            &CompileOptions::from_env(options.secret_env.clone()),
        )?;
        // Envoy puts the keys on requests, from its own bootstrap (a private file in the state
        // directory): they stay out of Envoy's logs at any level.
        options.envoy_options.credentials = Credentials::EnvoyInline;
        let test_upstream = match options.test_upstream.clone() {
            Some(backend) => {
                Some(upstreams::start_test_upstream(&compiled, &backend, &mut options).await?)
            }
            None => None,
        };
        let fireworks = match options.fake_fireworks.clone() {
            Some(backend) => {
                Some(upstreams::start_fake_fireworks(&compiled, &backend, &mut options).await?)
            }
            None => None,
        };

        let listen = options
            .processor_listen
            .clone()
            .unwrap_or_else(|| Listen::Unix(options.state_dir.join("ai-extproc.sock")));
        let bound = listen
            .bind()
            .await
            .map_err(io(format!("binding the processor to {listen:?}")))?;
        let processor_addr = bound.local_addr();
        options.envoy_options.processor = match (&listen, processor_addr) {
            (Listen::Unix(path), _) => ProcessorAddress::Unix(absolute(path)),
            (Listen::Tcp(addr), bound_addr) => {
                let addr = bound_addr.unwrap_or(*addr);
                ProcessorAddress::Tcp {
                    host: addr.ip().to_string(),
                    port: addr.port(),
                }
            }
        };
        let (pid_tx, processor_pid) = watch::channel(None);
        let (app, config, reloads, processor_supervisor) = match options.processor_binary.clone() {
            None => {
                let mut app = App::start(bound, app_options(&options)).await?;
                let config = app.config.clone();
                let reloads =
                    std::mem::replace(&mut app.reloads, tokio::sync::mpsc::unbounded_channel().1);
                (Some(app), config, reloads, None)
            }
            Some(binary) => {
                // The child binds the socket itself; this process only renders Envoy's config.
                drop(bound);
                let handle = ConfigHandle::new(compiled);
                let (tx, reloads) = tokio::sync::mpsc::unbounded_channel();
                if let Some(interval) = options.reload_interval {
                    let (paths, secret_env, h) = (
                        options.config.clone(),
                        options.secret_env.clone(),
                        handle.clone(),
                    );
                    tokio::spawn(config::watch(
                        paths,
                        secret_env,
                        h,
                        interval,
                        move |outcome| {
                            if let config::ReloadOutcome::Applied { config, .. } = outcome {
                                let _ = tx.send(config);
                            }
                        },
                    ));
                }
                let args = processor::serve_args(&options, &listen);
                let supervisor = tokio::spawn(processor::supervise(binary, args, pid_tx));
                processor::wait_listening(&listen, Duration::from_secs(30)).await?;
                (None, handle, reloads, Some(supervisor))
            }
        };
        let mut envoy = envoy::Envoy::new(
            options.envoy.clone(),
            options.state_dir.clone(),
            options.envoy_options.admin,
            options.envoy_log_level.clone(),
            options.envoy_args.clone(),
        );
        let yaml = render_yaml(&config.snapshot(), &options.envoy_options);
        let envoy_config = envoy.config_path(0);
        let child = envoy.start(&yaml).await?;
        let (epoch_tx, envoy_epoch) = watch::channel(0);
        let (state_tx, envoy_state) = watch::channel(EnvoyState::Running {
            pid: child.id().unwrap_or(0),
            restarts: 0,
        });
        let supervisor = tokio::spawn(envoy::supervise(
            envoy,
            child,
            yaml,
            options.envoy_options.clone(),
            reloads,
            envoy::Reports {
                hot_restarts: epoch_tx,
                state: state_tx,
            },
        ));
        Ok(Self {
            listen: options.envoy_options.listen,
            usage: app.as_ref().map(|a| a.usage.clone()),
            admin_addr: app
                .as_ref()
                .map_or(options.processor_admin, |a| a.admin_addr),
            processor_pid,
            processor_supervisor,
            config,
            app,
            fireworks,
            test_upstream,
            envoy_config,
            processor_addr,
            envoy_epoch,
            envoy: envoy_state,
            supervisor,
            _lock: lock,
        })
    }
}

fn app_options(options: &LocalOptions) -> AppOptions {
    AppOptions {
        config: options.config.clone(),
        secret_env: options.secret_env.clone(),
        admin: options.processor_admin,
        envoy_admin: Some(options.envoy_options.admin),
        max_body_bytes: options.envoy_options.max_body_bytes,
        output_estimate: options.output_estimate,
        budget_store: options.budget_store.clone(),
        inject_keys: false,
        user_header: options.user_header.clone(),
        usage_log: options.usage_log.clone(),
        reload_interval: options.reload_interval,
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
