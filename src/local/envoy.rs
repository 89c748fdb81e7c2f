//! Envoy under `run`: started, hot-restarted when the config changes its bootstrap, and
//! restarted (with backoff) when it dies on its own, so one crash never takes the gateway down
//! for good.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::backoff::Backoff;
use super::{io, LocalError};
use crate::config::Config;
use crate::envoy::{admin, render_yaml, EnvoyOptions};

/// Envoy as the supervisor last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvoyState {
    /// Serving, as process `pid`; `restarts` times restarted after it died on its own.
    Running { pid: u32, restarts: u32 },
    /// Died on its own (`reason`); being restarted.
    Down { reason: String, restarts: u32 },
}

impl EnvoyState {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Running { pid, .. } => Some(*pid),
            Self::Down { .. } => None,
        }
    }

    pub fn restarts(&self) -> u32 {
        match self {
            Self::Running { restarts, .. } | Self::Down { restarts, .. } => *restarts,
        }
    }
}

/// How to start (and restart) Envoy.
pub(super) struct Envoy {
    pub bin: PathBuf,
    pub state_dir: PathBuf,
    pub admin: SocketAddr,
    pub log_level: String,
    pub args: Vec<String>,
    /// Shared-memory id of the running Envoy family (hot restarts need it).
    base_id: Option<String>,
    /// `--restart-epoch` of the running Envoy.
    epoch: u32,
}

impl Envoy {
    pub fn new(
        bin: PathBuf,
        state_dir: PathBuf,
        admin: SocketAddr,
        log_level: String,
        args: Vec<String>,
    ) -> Self {
        Self {
            bin,
            state_dir,
            admin,
            log_level,
            args,
            base_id: None,
            epoch: 0,
        }
    }

    pub fn config_path(&self, epoch: u32) -> PathBuf {
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

    /// A fresh Envoy (epoch 0, a new base id): at start, and after one died.
    pub async fn start(&mut self, yaml: &str) -> Result<Child, LocalError> {
        let path = self.config_path(0);
        write_private(&path, yaml)?;
        let base_id_path = self.state_dir.join("envoy.base-id");
        let mut child = self
            .command(&path)
            .arg("--use-dynamic-base-id")
            .arg("--base-id-path")
            .arg(&base_id_path)
            .spawn()
            .map_err(io(format!("starting Envoy ({})", self.bin.display())))?;
        wait_ready(&mut child, self.admin, 0, Duration::from_secs(30)).await?;
        self.epoch = 0;
        self.base_id = std::fs::read_to_string(&base_id_path)
            .ok()
            .map(|s| s.trim().to_string());
        Ok(child)
    }

    /// A new Envoy that takes the listeners over from the running one, which drains and exits.
    async fn hot_restart(&mut self, yaml: &str) -> Result<Child, LocalError> {
        let Some(base_id) = self.base_id.clone() else {
            return Err(LocalError::EnvoyExited(
                "no base id recorded for a hot restart".into(),
            ));
        };
        let epoch = self.epoch + 1;
        let path = self.config_path(epoch);
        write_private(&path, yaml)?;
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

/// What the supervisor reports.
pub(super) struct Reports {
    /// Hot restarts done.
    pub hot_restarts: watch::Sender<u32>,
    pub state: watch::Sender<EnvoyState>,
}

/// Keeps Envoy running and in step with the config: on each applied reload, re-renders the
/// bootstrap and hot-restarts Envoy when it changed; when Envoy dies, starts a new one after a
/// backoff (taking the latest config), and says why in the log and in [`EnvoyState`].
pub(super) async fn supervise(
    mut envoy: Envoy,
    child: Child,
    mut yaml: String,
    options: EnvoyOptions,
    mut reloads: mpsc::UnboundedReceiver<Arc<Config>>,
    reports: Reports,
) {
    let mut child = Some(child);
    let mut started = Instant::now();
    let mut restarts = 0;
    let mut hot_restarts = 0;
    let mut backoff = Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(30),
        Duration::from_secs(60),
    );
    let mut pause = Duration::ZERO;
    let mut draining: Vec<JoinHandle<()>> = Vec::new();
    loop {
        draining.retain(|t| !t.is_finished());
        let Some(running) = child.as_mut() else {
            // Down: wait out the backoff (taking config changes meanwhile), then a fresh Envoy.
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                Some(config) = reloads.recv() => {
                    yaml = render_yaml(&config, &options);
                    continue;
                }
            }
            match envoy.start(&yaml).await {
                Ok(c) => {
                    restarts += 1;
                    started = Instant::now();
                    let pid = c.id().unwrap_or(0);
                    tracing::warn!(pid, restarts, "Envoy restarted");
                    let _ = reports.state.send(EnvoyState::Running { pid, restarts });
                    child = Some(c);
                }
                Err(e) => {
                    pause = backoff.after_failure();
                    tracing::error!(error = %e, retry_in = ?pause, "Envoy did not restart");
                    let _ = reports.state.send(EnvoyState::Down {
                        reason: e.to_string(),
                        restarts,
                    });
                }
            }
            continue;
        };
        tokio::select! {
            status = running.wait() => {
                let reason = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                pause = backoff.after(started.elapsed());
                tracing::error!(%reason, restart_in = ?pause, "Envoy exited; restarting it");
                let _ = reports.state.send(EnvoyState::Down { reason, restarts });
                child = None;
            }
            Some(config) = reloads.recv() => {
                let new_yaml = render_yaml(&config, &options);
                if new_yaml == yaml {
                    continue;
                }
                match envoy.hot_restart(&new_yaml).await {
                    Ok(new_child) => {
                        let pid = new_child.id().unwrap_or(0);
                        if let Some(old) = child.replace(new_child) {
                            // The old Envoy drains and exits by itself; reap it.
                            draining.push(tokio::spawn(reap(old)));
                        }
                        started = Instant::now();
                        yaml = new_yaml;
                        hot_restarts += 1;
                        let _ = reports.state.send(EnvoyState::Running { pid, restarts });
                        let _ = reports.hot_restarts.send(hot_restarts);
                        tracing::info!(epoch = envoy.epoch, "Envoy hot-restarted with the new routes");
                    }
                    Err(e) => tracing::error!(error = %e, "Envoy hot restart failed; the previous Envoy keeps serving"),
                }
            }
        }
    }
}

/// Writes a bootstrap readable by this user only: it carries the provider keys Envoy injects.
fn write_private(path: &Path, yaml: &str) -> Result<(), LocalError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(yaml.as_bytes()))
        .map_err(io("writing the Envoy bootstrap"))
}

async fn reap(mut child: Child) {
    let _ = child.wait().await;
}

/// Polls Envoy's admin until it is ready at `epoch` (during a hot restart the old Envoy may
/// still answer: wait for the new one).
async fn wait_ready(
    envoy: &mut Child,
    admin_addr: SocketAddr,
    epoch: u32,
    limit: Duration,
) -> Result<(), LocalError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = envoy.try_wait() {
            return Err(LocalError::EnvoyExited(status.to_string()));
        }
        let ready = admin::ready(admin_addr).await.is_ok()
            && (epoch == 0 || admin::restart_epoch(admin_addr).await == Some(epoch));
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(LocalError::EnvoyTimeout(limit));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
