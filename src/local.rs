//! The local gateway: processor, Envoy and (optionally) the offline upstreams, started and
//! supervised together. `ai-extproc run` (and so `make run`) and the end-to-end tests use it.
//!
//! A config change that alters the rendered bootstrap (a new route or Backend) reaches Envoy by
//! hot restart: a new Envoy process takes over the listeners from the old one, which drains its
//! in-flight requests and exits, so no request is dropped. Changes that only concern the
//! processor (a model override, costs, a key) need no restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{App, AppError, AppOptions};
use crate::config::{self, CompileOptions, Config, ConfigHandle};
use crate::envoy::{render_yaml, BackendOverride, EnvoyOptions, ProcessorAddress};
use crate::extproc::Listen;
use crate::upstreams::{self, FireworksOptions, TestOptions, Upstream, UpstreamKind};
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
}

/// Why the local gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
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
    /// Set when the serving Envoy exits on its own.
    envoy_exit: watch::Receiver<Option<String>>,
    supervisor: JoinHandle<()>,
    processor_supervisor: Option<JoinHandle<()>>,
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
        std::fs::create_dir_all(&options.state_dir).map_err(io("creating the state directory"))?;
        let compiled = config::load(
            &options.config,
            &CompileOptions::from_env(options.secret_env.clone()),
        )?;
        let test_upstream = match options.test_upstream.clone() {
            Some(backend) => Some(start_test_upstream(&compiled, &backend, &mut options).await?),
            None => None,
        };
        let fireworks = match options.fake_fireworks.clone() {
            Some(backend) => Some(start_fake(&compiled, &backend, &mut options).await?),
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
                let args = serve_args(&options, &listen);
                let supervisor = tokio::spawn(supervise_processor(binary, args, pid_tx));
                wait_listening(&listen, Duration::from_secs(30)).await?;
                (None, handle, reloads, Some(supervisor))
            }
        };
        let mut envoy = Envoy {
            bin: options.envoy.clone(),
            state_dir: options.state_dir.clone(),
            admin: options.envoy_options.admin,
            log_level: options.envoy_log_level.clone(),
            args: options.envoy_args.clone(),
            base_id: None,
            epoch: 0,
        };
        let yaml = render_yaml(&config.snapshot(), &options.envoy_options);
        let envoy_config = envoy.config_path(0);
        let child = envoy.start(&yaml).await?;
        let (epoch_tx, envoy_epoch) = watch::channel(0);
        let (exit_tx, envoy_exit) = watch::channel(None);
        let supervisor = tokio::spawn(supervise(
            envoy,
            child,
            yaml,
            options.envoy_options.clone(),
            reloads,
            epoch_tx,
            exit_tx,
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
            envoy_exit,
            supervisor,
        })
    }

    /// Waits until the serving Envoy exits on its own; returns how.
    pub async fn wait_envoy(&mut self) -> String {
        loop {
            if let Some(how) = self.envoy_exit.borrow().clone() {
                return how;
            }
            if self.envoy_exit.changed().await.is_err() {
                return "supervisor stopped".into();
            }
        }
    }
}

fn app_options(options: &LocalOptions) -> AppOptions {
    AppOptions {
        config: options.config.clone(),
        secret_env: options.secret_env.clone(),
        admin: options.processor_admin,
        user_header: options.user_header.clone(),
        usage_log: options.usage_log.clone(),
        reload_interval: options.reload_interval,
    }
}

/// The `serve` command line equivalent to `options`.
fn serve_args(options: &LocalOptions, listen: &Listen) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(n) = options.processor_workers {
        args.extend(["--workers".to_string(), n.to_string()]);
    }
    args.push("serve".to_string());
    args.extend(options.config.iter().map(|p| p.display().to_string()));
    args.push("--listen".into());
    args.push(match listen {
        Listen::Tcp(a) => a.to_string(),
        Listen::Unix(p) => format!("unix:{}", absolute(p).display()),
    });
    for (name, var) in &options.secret_env {
        args.push("--secret-env".into());
        args.push(format!("{name}={var}"));
    }
    if let Some(admin) = options.processor_admin {
        args.extend(["--admin".into(), admin.to_string()]);
    }
    if let Some(h) = &options.user_header {
        args.extend(["--user-header".into(), h.clone()]);
    }
    if let Some(p) = &options.usage_log {
        args.extend(["--usage-log".into(), p.display().to_string()]);
    }
    let reload = options
        .reload_interval
        .map_or("0s".to_string(), |d| format!("{}ms", d.as_millis()));
    args.extend([
        "--reload-interval".into(),
        reload,
        "--drain-grace".into(),
        "0s".into(),
    ]);
    args
}

/// Keeps the processor child running: restarts it (after a short pause) whenever it exits.
async fn supervise_processor(binary: PathBuf, args: Vec<String>, pid: watch::Sender<Option<u32>>) {
    loop {
        match Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(mut child) => {
                let _ = pid.send(child.id());
                let status = child.wait().await;
                let _ = pid.send(None);
                tracing::error!(?status, "the processor exited; restarting it");
            }
            Err(e) => tracing::error!(error = %e, "cannot start the processor; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the processor accepts connections.
async fn wait_listening(listen: &Listen, limit: Duration) -> Result<(), LocalError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let up = match listen {
            Listen::Tcp(a) => tokio::net::TcpStream::connect(a).await.is_ok(),
            Listen::Unix(p) => tokio::net::UnixStream::connect(p).await.is_ok(),
        };
        if up {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(LocalError::Io {
                what: "waiting for the processor".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("not listening on {listen:?}"),
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keeps Envoy running and in step with the config: on each applied reload, re-renders the
/// bootstrap and hot-restarts Envoy when it changed.
async fn supervise(
    mut envoy: Envoy,
    mut child: Child,
    mut yaml: String,
    options: EnvoyOptions,
    mut reloads: tokio::sync::mpsc::UnboundedReceiver<Arc<Config>>,
    epoch_tx: watch::Sender<u32>,
    exit_tx: watch::Sender<Option<String>>,
) {
    let mut parents: Vec<JoinHandle<()>> = Vec::new();
    loop {
        tokio::select! {
            status = child.wait() => {
                let how = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::error!(%how, "Envoy exited");
                let _ = exit_tx.send(Some(how));
                return;
            }
            Some(config) = reloads.recv() => {
                let new_yaml = render_yaml(&config, &options);
                if new_yaml == yaml {
                    continue;
                }
                match envoy.hot_restart(&new_yaml).await {
                    Ok(new_child) => {
                        let old = std::mem::replace(&mut child, new_child);
                        // The old Envoy drains and exits by itself; reap it.
                        parents.push(tokio::spawn(reap(old)));
                        yaml = new_yaml;
                        let _ = epoch_tx.send(envoy.epoch);
                        tracing::info!(epoch = envoy.epoch, "Envoy hot-restarted with the new routes");
                    }
                    Err(e) => tracing::error!(error = %e, "Envoy hot restart failed; the previous Envoy keeps serving"),
                }
            }
        }
    }
}

async fn reap(mut child: Child) {
    let _ = child.wait().await;
}

/// How to start (and restart) Envoy.
struct Envoy {
    bin: PathBuf,
    state_dir: PathBuf,
    admin: SocketAddr,
    log_level: String,
    args: Vec<String>,
    base_id: Option<String>,
    epoch: u32,
}

impl Envoy {
    fn config_path(&self, epoch: u32) -> PathBuf {
        if epoch == 0 {
            self.state_dir.join("envoy.yaml")
        } else {
            self.state_dir.join(format!("envoy.{epoch}.yaml"))
        }
    }

    fn command(&self, config: &Path) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("-c")
            .arg(config)
            .args([
                "--log-level",
                &self.log_level,
                "--drain-time-s",
                "5",
                "--parent-shutdown-time-s",
                "10",
            ])
            .args(&self.args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    async fn start(&mut self, yaml: &str) -> Result<Child, LocalError> {
        let path = self.config_path(0);
        std::fs::write(&path, yaml).map_err(io("writing the Envoy bootstrap"))?;
        let base_id_path = self.state_dir.join("envoy.base-id");
        let mut child = self
            .command(&path)
            .arg("--use-dynamic-base-id")
            .arg("--base-id-path")
            .arg(&base_id_path)
            .spawn()
            .map_err(io(format!("starting Envoy ({})", self.bin.display())))?;
        wait_ready(&mut child, self.admin, 0, Duration::from_secs(30)).await?;
        self.base_id = std::fs::read_to_string(&base_id_path)
            .ok()
            .map(|s| s.trim().to_string());
        Ok(child)
    }

    async fn hot_restart(&mut self, yaml: &str) -> Result<Child, LocalError> {
        let Some(base_id) = self.base_id.clone() else {
            return Err(LocalError::EnvoyExited(
                "no base id recorded for a hot restart".into(),
            ));
        };
        let epoch = self.epoch + 1;
        let path = self.config_path(epoch);
        std::fs::write(&path, yaml).map_err(io("writing the Envoy bootstrap"))?;
        let mut child = self
            .command(&path)
            .args(["--base-id", &base_id, "--restart-epoch", &epoch.to_string()])
            .spawn()
            .map_err(io("starting the new Envoy"))?;
        wait_ready(&mut child, self.admin, epoch, Duration::from_secs(30)).await?;
        self.epoch = epoch;
        Ok(child)
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn matching_backend(config: &Config, backend: &str) -> Result<(), LocalError> {
    let known = config
        .clusters
        .iter()
        .any(|c| c.name == backend || c.name.split_once('/').is_some_and(|(_, n)| n == backend));
    if known {
        Ok(())
    } else {
        Err(LocalError::UnknownBackend(backend.to_string()))
    }
}

async fn start_test_upstream(
    config: &Config,
    backend: &str,
    options: &mut LocalOptions,
) -> Result<Upstream, LocalError> {
    matching_backend(config, backend)?;
    let up = upstreams::spawn(
        UpstreamKind::Test(TestOptions::default()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .map_err(io("starting the test upstream"))?;
    tracing::info!(%backend, addr = %up.addr, "backend served by the built-in test upstream");
    options.envoy_options.overrides.push(BackendOverride {
        backend: backend.to_string(),
        address: Some(up.addr.into()),
        ca_file: None,
    });
    Ok(up)
}

async fn start_fake(
    config: &Config,
    backend: &str,
    options: &mut LocalOptions,
) -> Result<Upstream, LocalError> {
    matching_backend(config, backend)?;
    // The fake accepts the key the config sends to that backend (the guide's placeholder if unset).
    let configured = config
        .backends
        .iter()
        .filter(|b| {
            let c = &config.clusters[b.cluster].name;
            c == backend || c.split_once('/').is_some_and(|(_, n)| n == backend)
        })
        .find_map(|b| b.api_key.as_ref().map(|k| k.expose().to_string()))
        .unwrap_or_default();
    let api_key = options.fake_fireworks_key.clone().unwrap_or(configured);
    let kind = UpstreamKind::Fireworks(FireworksOptions {
        api_key,
        stream_interval: options.fake_stream_interval,
    });
    let up = upstreams::spawn(kind, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(io("starting the fake Fireworks"))?;
    let ca_file = absolute(&options.state_dir.join("fake-fireworks-ca.pem"));
    std::fs::write(&ca_file, up.ca_pem.clone().unwrap_or_default())
        .map_err(io("writing the test CA"))?;
    tracing::info!(%backend, addr = %up.addr, ca = %ca_file.display(), "backend served by the built-in fake Fireworks");
    options.envoy_options.overrides.push(BackendOverride {
        backend: backend.to_string(),
        address: Some(up.addr.into()),
        ca_file: Some(ca_file),
    });
    Ok(up)
}

/// Polls Envoy's admin until it is ready at `epoch` (the admin refuses HTTP/1.0 with 426).
async fn wait_ready(
    envoy: &mut Child,
    admin: SocketAddr,
    epoch: u32,
    limit: Duration,
) -> Result<(), LocalError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = envoy.try_wait() {
            return Err(LocalError::EnvoyExited(status.to_string()));
        }
        if admin_ready(admin, epoch).await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(LocalError::EnvoyTimeout(limit));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_get(admin: SocketAddr, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: envoy-admin\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.starts_with("HTTP/1.1 200").then_some(text)
}

async fn admin_ready(admin: SocketAddr, epoch: u32) -> bool {
    if admin_get(admin, "/ready").await.is_none() {
        return false;
    }
    if epoch == 0 {
        return true;
    }
    // During a hot restart the old Envoy may still answer: wait for the new one.
    admin_get(admin, "/server_info")
        .await
        .is_some_and(|t| t.contains(&format!("\"restart_epoch\": {epoch}")))
}
