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
    /// Hook gateway administration: stream keys and tokens.
    Hooks {
        #[command(subcommand)]
        command: HooksCommand,
    },
    /// SIP registration agent: the accounts a running server keeps registered (through its admin API).
    Sip {
        /// Admin API of the running server (default: http://<http.admin_listen>).
        #[arg(long, global = true, value_name = "URL")]
        admin: Option<String>,
        #[command(subcommand)]
        command: SipCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SipCommand {
    /// Accounts (SEMS subscribers) and their registration status.
    Account {
        #[command(subcommand)]
        command: SipAccountCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SipAccountCommand {
    /// Add an account (a `subscribers` row) and register it now; prints its subscriber id.
    Add {
        /// Auth and AOR user.
        #[arg(long)]
        user: String,
        /// Realm (registrar domain).
        #[arg(long)]
        realm: String,
        /// Password (visible in the process list; prefer --pass-stdin).
        #[arg(
            long,
            conflicts_with = "pass_stdin",
            required_unless_present = "pass_stdin"
        )]
        pass: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        pass_stdin: bool,
        /// Contact to register instead of the default.
        #[arg(long)]
        contact: Option<String>,
        /// subscriber_id to use (default: the database picks one).
        #[arg(long)]
        id: Option<i64>,
    },
    /// Change an account (re-registers at once if user, realm or contact change).
    Update {
        /// subscriber_id.
        id: i64,
        /// Auth and AOR user.
        #[arg(long)]
        user: String,
        /// Realm.
        #[arg(long)]
        realm: String,
        /// Password.
        #[arg(
            long,
            conflicts_with = "pass_stdin",
            required_unless_present = "pass_stdin"
        )]
        pass: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        pass_stdin: bool,
        /// Contact to register instead of the default.
        #[arg(long)]
        contact: Option<String>,
    },
    /// De-register an account (status 5, then 4 when the registrar confirms).
    Del {
        /// subscriber_id.
        id: i64,
    },
    /// REGISTER an account now.
    Refresh {
        /// subscriber_id.
        id: i64,
    },
    /// Show one account's registration.
    Show {
        /// subscriber_id.
        id: i64,
    },
    /// List accounts: id, user@realm, status, last code and reason, expiry.
    List {
        /// Only this status (0-5 or a name: inactive, pending, active, failed, removed, to_be_removed).
        #[arg(long)]
        status: Option<String>,
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Only this realm.
        #[arg(long)]
        realm: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum HooksCommand {
    /// Stream keys stored in the database (rules with `then = "stream_key"`).
    Key {
        #[command(subcommand)]
        command: HooksKeyCommand,
    },
    /// Print a stream URL query with a signed token (rules with `then = "token"`).
    Token {
        /// App, e.g. `live`.
        #[arg(long)]
        app: String,
        /// Stream name.
        #[arg(long)]
        stream: String,
        /// `publish` or `play`.
        #[arg(long, default_value = "publish", value_parser = ["publish", "play"])]
        action: String,
        /// How long the token is valid (`1h`, `30m`).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// The token rule whose first key signs (its `name`, or its index in hooks.rules); default: the first
        /// token rule.
        #[arg(long)]
        rule: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum HooksKeyCommand {
    /// Store a key that may publish APP/STREAM; prints the key (random unless --key is given).
    Add {
        /// App the key may publish in.
        #[arg(long)]
        app: String,
        /// Public stream name the key publishes as.
        #[arg(long)]
        stream: String,
        /// Use this key instead of a random one (16 to 512 characters).
        #[arg(long)]
        key: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a key (the key itself or its fingerprint), or every key of APP/STREAM.
    Del {
        /// `app/stream`, a key, or an 8-digit fingerprint.
        selector: String,
    },
    /// List keys (fingerprints only).
    List,
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
    /// Override a user's limits (for a REST username `<expiry>:<user>`, give `<user>`); the relay picks
    /// the change up within 10 s, for new allocations. 0 means unlimited; a flag not given keeps
    /// `[turn]`'s value.
    Limit {
        /// User (account) name.
        name: String,
        /// Concurrent allocations (instead of turn.user_quota).
        #[arg(long, conflicts_with = "clear")]
        quota: Option<u32>,
        /// Bytes per second per allocation, each direction (instead of turn.max_bps).
        #[arg(long, conflicts_with = "clear")]
        max_bps: Option<u64>,
        /// Bytes per second over the user's allocations, each direction (instead of turn.user_max_bps).
        #[arg(long, conflicts_with = "clear")]
        user_max_bps: Option<u64>,
        /// Remove the user's overrides.
        #[arg(long)]
        clear: bool,
        /// Realm (default: turn.realm).
        #[arg(long, short = 'r')]
        realm: Option<String>,
    },
    /// List limit overrides (of one realm with --realm).
    Limits {
        /// Only this realm.
        #[arg(long, short = 'r')]
        realm: Option<String>,
    },
}
