//! The storage crate's one error type.

use std::time::Duration;

/// What went wrong in storage. Messages never carry a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `storage.url` names no backend we support.
    #[error("unsupported storage URL {0:?}: use sqlite:PATH, postgres://… or mysql://…")]
    UnsupportedUrl(String),
    /// The URL's options could not be parsed.
    #[error("invalid storage URL {url:?}: {source}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// Why sqlx rejected it.
        #[source]
        source: sqlx::Error,
    },
    /// The directory for an SQLite file could not be created.
    #[error("cannot create the directory {path:?} for the SQLite database: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No connection could be made before the connect timeout.
    #[error("cannot connect to {backend} at {target} within {after:?}: {source}")]
    Connect {
        /// Backend name.
        backend: &'static str,
        /// The URL, redacted.
        target: String,
        /// How long we tried.
        after: Duration,
        /// The last error.
        #[source]
        source: sqlx::Error,
    },
    /// The database holds migrations this binary does not know: it was migrated by a newer rtcplane.
    #[error(
        "the database schema is newer than this binary: it has migration(s) {unknown:?} but this rtcplane knows up to {known_latest}; run a newer rtcplane (refusing to start so nothing is damaged)"
    )]
    SchemaTooNew {
        /// Applied versions this binary does not have.
        unknown: Vec<i64>,
        /// The newest version this binary has.
        known_latest: i64,
    },
    /// The database lacks migrations and we were told not to apply them.
    #[error(
        "the database schema is out of date: migration(s) {pending:?} not applied; run `rtcplane migrate`"
    )]
    SchemaOutdated {
        /// Versions not yet applied.
        pending: Vec<i64>,
    },
    /// Applying migrations failed.
    #[error("migrating the {backend} database failed: {source}")]
    Migrate {
        /// Backend name.
        backend: &'static str,
        /// What sqlx reported.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("storage {op} failed: {source}")]
    Query {
        /// The operation, e.g. `ping` or `nodes.heartbeat`.
        op: &'static str,
        /// What the database reported.
        #[source]
        source: sqlx::Error,
    },
    /// The Redis URL is not usable.
    #[error("invalid Redis URL {url:?}: {source}")]
    RedisUrl {
        /// The URL, redacted.
        url: String,
        /// Why redis rejected it.
        #[source]
        source: ::redis::RedisError,
    },
    /// A Redis command failed.
    #[error("redis {op} failed: {source}")]
    Redis {
        /// The operation.
        op: &'static str,
        /// What Redis (or the connection) reported.
        #[source]
        source: ::redis::RedisError,
    },
    /// An operation took longer than allowed.
    #[error("storage {op} timed out after {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The limit.
        after: Duration,
    },
}
