//! Boots: parse the command line, set up logs and traces, hand over to `cli::run`.
#![forbid(unsafe_code)]

use std::num::NonZeroUsize;

use clap::Parser;

use ai_extproc::cli::{run, Cli};
use ai_extproc::telemetry;

/// One worker is a current-thread runtime: every ext_proc message is read, answered and written
/// on one thread, with no cross-thread wake-ups (the cost that dominates beside Envoy on a small
/// machine). More workers are a multi-thread runtime of that size; none given, one per core.
fn runtime(workers: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers.map(NonZeroUsize::get) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = workers.filter(|n| n.get() > 1) {
        builder.worker_threads(n.get());
    }
    builder.enable_all().build()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match runtime(cli.workers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let trace = telemetry::TraceConfig::from_env(
            cli.trace_format,
            cli.trace_max_output_bytes,
            |name| std::env::var(name).ok(),
        );
        let _telemetry = match telemetry::init(
            &cli.log,
            cli.log_format,
            cli.otlp_endpoint.as_deref(),
            trace,
        ) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let global_args = cli.global_args();
        match run(cli.command, global_args).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(failure) => {
                eprintln!("error: {}", failure.0);
                std::process::ExitCode::FAILURE
            }
        }
    })
}
