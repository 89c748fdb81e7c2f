//! Boots: parse the command line, set up logs and traces, hand over to `cli::run`.
#![forbid(unsafe_code)]

use clap::Parser;

use ai_extproc::cli::{run, Cli};
use ai_extproc::telemetry;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _telemetry =
            match telemetry::init(&cli.log, cli.log_format, cli.otlp_endpoint.as_deref()) {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("error: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
        match run(cli.command).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(failure) => {
                eprintln!("error: {}", failure.0);
                std::process::ExitCode::FAILURE
            }
        }
    })
}
