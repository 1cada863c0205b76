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
    /// TURN relay administration (like coturn's turnadmin).
    Turn {
        #[command(subcommand)]
        command: TurnCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TurnCommand {
    /// Long-term credential users stored in the database.
    User {
        #[command(subcommand)]
        command: TurnUserCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TurnUserCommand {
    /// Add a user, or change its password.
    Add {
        /// User name.
        name: String,
        /// Password (visible to other local users in the process list; prefer --password-stdin).
        #[arg(
            long,
            short = 'p',
            conflicts_with = "password_stdin",
            required_unless_present = "password_stdin"
        )]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Realm (default: turn.realm).
        #[arg(long, short = 'r')]
        realm: Option<String>,
    },
    /// Remove a user.
    Del {
        /// User name.
        name: String,
        /// Realm (default: turn.realm).
        #[arg(long, short = 'r')]
        realm: Option<String>,
    },
    /// List users (of one realm with --realm).
    List {
        /// Only this realm.
        #[arg(long, short = 'r')]
        realm: Option<String>,
    },
}
