//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// rtcplane: the control plane of a real-time communications deployment: TURN relay, SIP registration agent,
/// media-server hook gateway and rooms service in one binary, sharing one event bus and one store.
#[derive(Debug, Parser)]
#[command(name = "rtcplane", version, about, long_about = None)]
pub(crate) struct Cli {
    /// TOML config file (defaults are built in; `RTCPLANE__SECTION__KEY` overrides either).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "RTCPLANE_CONFIG",
        value_name = "FILE"
    )]
    pub(crate) config: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the enabled subsystems and the HTTP listeners until SIGINT or SIGTERM.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Validate the configuration and print it, secrets hidden; exits 2 on any error.
    CheckConfig,
}
