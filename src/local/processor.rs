//! The processor under `run`: a child process (`ai-extproc serve`) restarted with backoff
//! whenever it exits, so a crash of the data path costs a moment, not the gateway.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::watch;

use super::backoff::Backoff;
use super::{absolute, LocalError, LocalOptions};
use crate::extproc::Listen;

/// The `serve` command line equivalent to `options`: every global flag `run` was given and
/// every processor setting, so the child behaves as the processor `run` describes.
pub(super) fn serve_args(options: &LocalOptions, listen: &Listen) -> Vec<String> {
    let mut args = options.processor_global_args.clone();
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
    args.extend([
        "--envoy-admin".into(),
        options.envoy_options.admin.to_string(),
        "--max-body-bytes".into(),
        options.envoy_options.max_body_bytes.to_string(),
        "--credentials".into(),
        "envoy".into(),
    ]);
    args.extend([
        "--budget-output-estimate".into(),
        options.output_estimate.to_string(),
    ]);
    if let crate::app::BudgetStore::Redis(redis) = &options.budget_store {
        args.extend([
            "--rate-limit-redis".into(),
            redis.url.clone(),
            "--rate-limit-redis-timeout".into(),
            format!("{}ms", redis.timeout.as_millis()),
            "--rate-limit-failure".into(),
            match redis.on_failure {
                crate::budget::OnFailure::Open => "open",
                crate::budget::OnFailure::Closed => "closed",
            }
            .into(),
        ]);
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

/// Keeps the processor child running: restarts it (after a backoff) whenever it exits, and
/// says why.
pub(super) async fn supervise(binary: PathBuf, args: Vec<String>, pid: watch::Sender<Option<u32>>) {
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(10),
        Duration::from_secs(30),
    );
    loop {
        let pause = match Command::new(&binary)
            .args(&args)
            .env(crate::cli::PARENT_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(mut child) => {
                let started = Instant::now();
                let _ = pid.send(child.id());
                let status = child.wait().await;
                let _ = pid.send(None);
                let pause = backoff.after(started.elapsed());
                let reason = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                tracing::error!(%reason, restart_in = ?pause, "the processor exited; restarting it");
                pause
            }
            Err(e) => {
                let pause = backoff.after_failure();
                tracing::error!(error = %e, retry_in = ?pause, "cannot start the processor");
                pause
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// Waits until the processor accepts connections.
pub(super) async fn wait_listening(listen: &Listen, limit: Duration) -> Result<(), LocalError> {
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
