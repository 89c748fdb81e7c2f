//! The local gateway: processor, Envoy and (optionally) the offline upstreams, started and
//! supervised together. `ai-extproc run` (and so `make run`) and the end-to-end tests use it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::config::{self, CompileOptions, Config, ConfigErrors, ConfigHandle};
use crate::envoy::{render_yaml, BackendOverride, EnvoyOptions, ProcessorAddress};
use crate::extproc::{serve, Listen, Processor};
use crate::gateway::Options;
use crate::upstreams::{self, FireworksOptions, Upstream, UpstreamKind};
use crate::usage::{spawn_jsonl_sink, UsageHub};

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
    /// Envoy log level.
    pub envoy_log_level: String,
    /// Extra Envoy arguments.
    pub envoy_args: Vec<String>,
    /// Request header naming the user in usage records.
    pub user_header: Option<String>,
    /// JSON-lines usage log.
    pub usage_log: Option<PathBuf>,
}

/// Why the local gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
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
    /// The compiled config.
    pub config: ConfigHandle,
    /// The fake Fireworks, when started.
    pub fireworks: Option<Upstream>,
    /// The test upstream, when started.
    pub test_upstream: Option<Upstream>,
    /// The rendered bootstrap.
    pub envoy_config: PathBuf,
    /// Usage records of finished requests.
    pub usage: UsageHub,
    /// The processor's TCP address, when it listens on TCP.
    pub processor_addr: Option<SocketAddr>,
    envoy: Child,
    stop_processor: Option<oneshot::Sender<()>>,
}

impl Drop for LocalGateway {
    fn drop(&mut self) {
        let _ = self.envoy.start_kill();
        if let Some(stop) = self.stop_processor.take() {
            let _ = stop.send(());
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
            Some(backend) => {
                check_backend(&compiled, &backend)?;
                let up =
                    upstreams::spawn(UpstreamKind::Test, SocketAddr::from(([127, 0, 0, 1], 0)))
                        .await
                        .map_err(io("starting the test upstream"))?;
                tracing::info!(%backend, addr = %up.addr, "backend served by the built-in test upstream");
                options.envoy_options.overrides.push(BackendOverride {
                    backend,
                    address: Some(up.addr),
                    ca_file: None,
                });
                Some(up)
            }
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
        options.envoy_options.processor = match (&listen, bound.local_addr()) {
            (Listen::Unix(path), _) => ProcessorAddress::Unix(absolute(path)),
            (Listen::Tcp(_), Some(addr)) => ProcessorAddress::Tcp {
                host: addr.ip().to_string(),
                port: addr.port(),
            },
            (Listen::Tcp(addr), None) => ProcessorAddress::Tcp {
                host: addr.ip().to_string(),
                port: addr.port(),
            },
        };
        let handle = ConfigHandle::new(compiled);
        let (stop_tx, stop_rx) = oneshot::channel();
        let usage = UsageHub::new();
        if let Some(path) = &options.usage_log {
            spawn_jsonl_sink(&usage, path.clone())
                .await
                .map_err(io(format!("opening the usage log {}", path.display())))?;
        }
        let processor = Processor::with_options(
            handle.clone(),
            Options {
                user_header: options.user_header.clone(),
                usage: Some(usage.clone()),
            },
        );
        tokio::spawn(async move {
            if let Err(e) = serve(bound, processor, async {
                let _ = stop_rx.await;
            })
            .await
            {
                tracing::error!(error = %e, "processor stopped");
            }
        });

        let envoy_config = options.state_dir.join("envoy.yaml");
        let yaml = render_yaml(&handle.snapshot(), &options.envoy_options);
        std::fs::write(&envoy_config, yaml).map_err(io("writing the Envoy bootstrap"))?;
        let mut envoy = Command::new(&options.envoy)
            .arg("-c")
            .arg(&envoy_config)
            .args([
                "--use-dynamic-base-id",
                "--log-level",
                &options.envoy_log_level,
            ])
            .args(&options.envoy_args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(io(format!("starting Envoy ({})", options.envoy.display())))?;
        wait_ready(
            &mut envoy,
            options.envoy_options.admin,
            Duration::from_secs(30),
        )
        .await?;
        Ok(Self {
            listen: options.envoy_options.listen,
            config: handle,
            fireworks,
            test_upstream,
            envoy_config,
            usage,
            processor_addr,
            envoy,
            stop_processor: Some(stop_tx),
        })
    }

    /// Waits until Envoy exits (or is killed).
    pub async fn wait_envoy(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.envoy.wait().await
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn check_backend(config: &Config, backend: &str) -> Result<(), LocalError> {
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

async fn start_fake(
    config: &Config,
    backend: &str,
    options: &mut LocalOptions,
) -> Result<Upstream, LocalError> {
    check_backend(config, backend)?;
    // The fake accepts the key the config sends to that backend (the guide's placeholder if unset).
    let api_key = config
        .backends
        .iter()
        .filter(|b| {
            let c = &config.clusters[b.cluster].name;
            c == backend || c.split_once('/').is_some_and(|(_, n)| n == backend)
        })
        .find_map(|b| b.api_key.as_ref().map(|k| k.expose().to_string()))
        .unwrap_or_default();
    let api_key = options.fake_fireworks_key.clone().unwrap_or(api_key);
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
        address: Some(up.addr),
        ca_file: Some(ca_file),
    });
    Ok(up)
}

/// Polls Envoy's admin `/ready` until it answers 200 (the admin refuses HTTP/1.0 with 426).
async fn wait_ready(
    envoy: &mut Child,
    admin: SocketAddr,
    limit: Duration,
) -> Result<(), LocalError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = envoy.try_wait() {
            return Err(LocalError::EnvoyExited(status.to_string()));
        }
        if admin_ready(admin).await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(LocalError::EnvoyTimeout(limit));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_ready(admin: SocketAddr) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(admin).await else {
        return false;
    };
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: envoy-admin\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}
