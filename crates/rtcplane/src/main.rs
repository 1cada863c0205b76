//! The `rtcplane` binary: it only composes. Parse the CLI, load and validate the whole config (exit 2 naming
//! the key on any problem), then run the command. Everything with behaviour lives in the crates it wires.

mod admin;
mod cli;
mod config;
mod http;
mod readiness;
mod serve;
mod subsystems;
mod telemetry;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Config;

/// Exit code for a configuration or usage error (clap uses 2 for usage errors too).
const EXIT_CONFIG: u8 = 2;
/// Exit code for a runtime failure (database unreachable, port taken, …).
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "rtcplane: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::CheckConfig = cli.command {
        let mut out = std::io::stdout();
        let _ = write!(out, "{}", config.to_redacted_toml());
        let _ = writeln!(std::io::stderr(), "rtcplane: configuration is valid");
        return ExitCode::SUCCESS;
    }

    telemetry::init_logging(&config.log);
    // One worker thread: the current-thread scheduler (no work stealing, no cross-thread wake-ups).
    let mut builder = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if config.worker_threads > 1 {
        builder.worker_threads(config.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve::serve(config).await,
            Command::Migrate => serve::migrate(&config).await,
            Command::Turn { command } => admin::turn(&config, command).await,
            Command::Hooks { command } => admin::hooks(&config, command).await,
            Command::Sip { admin, command } => admin::sip(&config, admin, command).await,
            Command::CheckConfig => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            let _ = writeln!(std::io::stderr(), "rtcplane: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
