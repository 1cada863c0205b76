//! Building a pool from `storage.url`, with retries until the connect timeout.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::{Backend, Error, Pool, Storage, redact_url};

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// `sqlite:PATH` (created with WAL on first use), `postgres://…` or `mysql://…`.
    pub url: String,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long to keep trying at start, and the limit for getting a connection later.
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    /// Options for `url` with defaults for the rest (10 connections, 10 s).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

pub(crate) async fn connect(options: &ConnectOptions) -> Result<Storage, Error> {
    let target = redact_url(&options.url);
    let backend = Backend::from_url(&options.url)?;
    let invalid = |source| Error::InvalidUrl {
        url: target.clone(),
        source,
    };
    let deadline = tokio::time::Instant::now() + options.connect_timeout;
    let mut pause = Duration::from_millis(100);
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let attempt = match backend {
            Backend::Sqlite => {
                let opts = sqlite_options(&options.url).map_err(invalid)?;
                let in_memory = opts.get_filename() == std::path::Path::new(":memory:");
                if !in_memory {
                    create_parent_dir(opts.get_filename())?;
                }
                // An in-memory database lives as long as its one connection.
                let (max, min) = if in_memory {
                    (1, 1)
                } else {
                    (options.max_connections, 0)
                };
                pool_options(max, min, options.connect_timeout, remaining)
                    .connect_with(opts)
                    .await
                    .map(Pool::Sqlite)
            }
            Backend::Postgres => {
                let opts = PgConnectOptions::from_str(&options.url)
                    .map_err(invalid)?
                    .application_name("rtcplane");
                pool_options(
                    options.max_connections,
                    0,
                    options.connect_timeout,
                    remaining,
                )
                .connect_with(opts)
                .await
                .map(Pool::Postgres)
            }
            Backend::MySql => {
                let opts = MySqlConnectOptions::from_str(&options.url)
                    .map_err(invalid)?
                    .charset("utf8mb4");
                pool_options(
                    options.max_connections,
                    0,
                    options.connect_timeout,
                    remaining,
                )
                .connect_with(opts)
                .await
                .map(Pool::MySql)
            }
        };
        match attempt {
            Ok(pool) => {
                tracing::info!(backend = backend.as_str(), target = %target, "storage connected");
                return Ok(Storage { pool, target });
            }
            Err(source)
                if tokio::time::Instant::now() + pause >= deadline || !retryable(&source) =>
            {
                return Err(Error::Connect {
                    backend: backend.as_str(),
                    target,
                    after: options.connect_timeout,
                    source,
                });
            }
            Err(e) => {
                tracing::warn!(backend = backend.as_str(), target = %target, error = %e, "storage not reachable yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn pool_options<DB: sqlx::Database>(
    max: u32,
    min: u32,
    acquire: Duration,
    first: Duration,
) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(max.max(1))
        .min_connections(min)
        // The first connection may use what is left of the start-up budget; later acquires get the full one.
        .acquire_timeout(first.max(Duration::from_millis(100)).min(acquire))
        .test_before_acquire(true)
}

fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5)))
}

fn create_parent_dir(file: &std::path::Path) -> Result<(), Error> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                path: dir.display().to_string(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// Errors worth retrying at start (the server is not up yet), as opposed to wrong credentials or options.
fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // PostgreSQL "the database system is starting up" / "too many connections"; MySQL 1040.
            matches!(
                db.code().as_deref(),
                Some("57P03" | "53300" | "08006" | "1040")
            )
        }
        _ => false,
    }
}
