//! rtcplane's storage layer: one [`Storage`] handle over a sqlx pool for SQLite (the embedded default),
//! PostgreSQL or MySQL/MariaDB, chosen by the URL's scheme; the migrations of each backend, embedded in the
//! binary; the repositories shared by subsystems (for now, the cluster's node registry); and the shared
//! [`Redis`] connection of `[redis] url`.
//!
//! Subsystem crates write their own queries against [`Storage::pool`] with [`with_pool!`], using `?`
//! placeholders that [`Storage::sql`] rewrites for PostgreSQL. This crate knows no subsystem and owns no
//! business rule beyond "the schema must be one this binary knows".

mod connect;
mod error;
mod migrate;
mod nodes;
mod redis;
mod url;

#[cfg(feature = "testing")]
pub mod testing;

use std::borrow::Cow;
use std::time::Duration;

pub use connect::ConnectOptions;
pub use error::Error;
pub use migrate::{MigrationReport, SchemaStatus};
pub use nodes::{NodeRecord, Nodes};
pub use redis::Redis;
pub use url::redact_url;

/// Which database server a pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite, embedded (file or memory).
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
}

impl Backend {
    /// Lowercase name, as used in metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }

    /// The backend a `storage.url` names, from its scheme.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::MySql),
            _ => Err(Error::UnsupportedUrl(redact_url(url))),
        }
    }
}

/// A sqlx pool of one of the three backends.
#[derive(Clone, Debug)]
pub enum Pool {
    /// SQLite.
    Sqlite(sqlx::SqlitePool),
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
    /// MySQL or MariaDB.
    MySql(sqlx::MySqlPool),
}

/// Runs an expression against whichever typed pool a [`Storage`] holds: the expression is compiled once per
/// backend with `$p` bound to `&SqlitePool`, `&PgPool` or `&MySqlPool`.
///
/// ```text
/// let n: i64 = with_pool!(storage, p => sqlx::query_scalar(&sql).fetch_one(p).await)?;
/// ```
#[macro_export]
macro_rules! with_pool {
    ($storage:expr, $p:ident => $body:expr) => {
        match $storage.pool() {
            $crate::Pool::Sqlite($p) => $body,
            $crate::Pool::Postgres($p) => $body,
            $crate::Pool::MySql($p) => $body,
        }
    };
}

/// The handle every subsystem gets: cheap to clone.
#[derive(Clone, Debug)]
pub struct Storage {
    pool: Pool,
    target: String,
}

impl Storage {
    /// Connects (see [`ConnectOptions`]), retrying until its `connect_timeout` has passed.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, Error> {
        connect::connect(options).await
    }

    /// The backend behind this handle.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
            Pool::MySql(_) => Backend::MySql,
        }
    }

    /// The typed pool, for queries (see [`with_pool!`]).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The storage URL with any password hidden, for logs and messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Rewrites `?` placeholders to `$1, $2, …` on PostgreSQL; other backends take `?` as is. Write
    /// queries with `?` and no literal question marks. Only `'static` text is accepted, so what reaches the
    /// database is always a query written in the source, never one assembled from input.
    pub fn sql(&self, query: &'static str) -> sqlx::AssertSqlSafe<Cow<'static, str>> {
        sqlx::AssertSqlSafe(placeholders(self.backend(), query))
    }

    /// A multi-row statement: `head` followed by `rows` copies of `row` separated by commas (`INSERT INTO t
    /// (a, b) VALUES ` + `(?, ?)` × n), placeholders rewritten as in [`Storage::sql`]. The text is still made
    /// only of fragments written in the source. Keep `rows` × placeholders per row under 30000.
    pub fn sql_rows(
        &self,
        head: &'static str,
        row: &'static str,
        rows: usize,
    ) -> sqlx::AssertSqlSafe<Cow<'static, str>> {
        let mut text = String::with_capacity(head.len() + (row.len() + 2) * rows);
        text.push_str(head);
        for i in 0..rows {
            if i > 0 {
                text.push_str(", ");
            }
            text.push_str(row);
        }
        if self.backend() == Backend::Postgres {
            text = placeholders(Backend::Postgres, &text).into_owned();
        }
        sqlx::AssertSqlSafe(Cow::Owned(text))
    }

    /// A statement with a list of `n` placeholders: `head` + `?, ?, …` + `tail` (`… WHERE id IN (` … `)`),
    /// rewritten as in [`Storage::sql`]. Keep `n` under 30000.
    pub fn sql_list(
        &self,
        head: &'static str,
        n: usize,
        tail: &'static str,
    ) -> sqlx::AssertSqlSafe<Cow<'static, str>> {
        let mut text = String::with_capacity(head.len() + 3 * n + tail.len());
        text.push_str(head);
        for i in 0..n {
            text.push_str(if i == 0 { "?" } else { ", ?" });
        }
        text.push_str(tail);
        if self.backend() == Backend::Postgres {
            text = placeholders(Backend::Postgres, &text).into_owned();
        }
        sqlx::AssertSqlSafe(Cow::Owned(text))
    }

    /// One round trip to the database, bounded by `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), Error> {
        let q =
            async { with_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ())) };
        match tokio::time::timeout(timeout, q).await {
            Ok(r) => r.map_err(|source| Error::Query { op: "ping", source }),
            Err(_) => Err(Error::Timeout {
                op: "ping",
                after: timeout,
            }),
        }
    }

    /// Connections open now and of those, idle: `(size, idle)`.
    pub fn pool_stats(&self) -> (u32, u32) {
        match &self.pool {
            Pool::Sqlite(p) => (p.size(), p.num_idle() as u32),
            Pool::Postgres(p) => (p.size(), p.num_idle() as u32),
            Pool::MySql(p) => (p.size(), p.num_idle() as u32),
        }
    }

    /// The cluster's node registry.
    pub fn nodes(&self) -> Nodes<'_> {
        Nodes::new(self)
    }

    /// Closes every connection; waits for those in use to be returned.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
            Pool::MySql(p) => p.close().await,
        }
    }
}

fn placeholders(backend: Backend, query: &str) -> Cow<'_, str> {
    if backend != Backend::Postgres || !query.contains('?') {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len() + 8);
    let mut n = 0;
    for c in query.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_per_backend() {
        let q = "SELECT a FROM t WHERE b = ? AND c = ?";
        assert_eq!(
            placeholders(Backend::Postgres, q),
            "SELECT a FROM t WHERE b = $1 AND c = $2"
        );
        assert_eq!(placeholders(Backend::MySql, q), q);
        assert_eq!(placeholders(Backend::Sqlite, q), q);
    }

    #[test]
    fn backend_from_url() {
        assert_eq!(
            Backend::from_url("sqlite:./data/x.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("mysql://root@h/db").ok(),
            Some(Backend::MySql)
        );
        assert_eq!(
            Backend::from_url("MariaDB://root@h/db").ok(),
            Some(Backend::MySql)
        );
        let err = Backend::from_url("oracle://scott:tiger@h/db").expect_err("unsupported");
        assert!(!err.to_string().contains("tiger"), "{err}");
    }
}
