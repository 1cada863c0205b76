//! Throw-away databases on the real servers, for tests of any crate (feature `testing`).
//!
//! Each [`TestDb`] is a fresh database (PostgreSQL, MariaDB) or a fresh file (SQLite) with its own URL, so
//! tests run in parallel without seeing each other; it is dropped when the value is. The servers come from
//! `RTCPLANE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`) and
//! `RTCPLANE_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`). A server that is not there fails
//! the test with a message saying which: these tests never skip.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::Connection;

use crate::Backend;

/// The PostgreSQL server tests use.
pub fn postgres_url() -> String {
    std::env::var("RTCPLANE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The MySQL/MariaDB server tests use.
pub fn mysql_url() -> String {
    std::env::var("RTCPLANE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// The shared Redis tests use (`RTCPLANE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("RTCPLANE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A `redis-server` of the test's own on `port`, for tests that stop and restart Redis; killed on drop.
#[derive(Debug)]
pub struct PrivateRedis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: std::process::Child,
}

// Test support: starting a server process and waiting for it to listen is the point here.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
impl PrivateRedis {
    /// Starts `redis-server` (no persistence) and waits until it accepts connections.
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let mut server = Self { port, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                server.stop();
                return Err(std::io::Error::other(format!(
                    "redis-server did not listen on {port}"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    /// Its URL, for `storage.url`.
    pub url: String,
    /// Its backend.
    pub backend: Backend,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Server { admin_url: String, name: String },
    Dir(PathBuf),
}

impl TestDb {
    /// A fresh database of `backend`.
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::server(Backend::Postgres, postgres_url()).await,
            Backend::MySql => Self::server(Backend::MySql, mysql_url()).await,
        }
    }

    /// One fresh database on each of the three backends.
    pub async fn all() -> Vec<Self> {
        vec![
            Self::new(Backend::Sqlite).await,
            Self::new(Backend::Postgres).await,
            Self::new(Backend::MySql).await,
        ]
    }

    fn sqlite() -> Self {
        let dir =
            std::env::temp_dir().join(format!("rtcplane-test-{}", uuid::Uuid::now_v7().simple()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        Self {
            url: format!("sqlite:{}", dir.join("rtcplane.db").display()),
            backend: Backend::Sqlite,
            cleanup: Cleanup::Dir(dir),
        }
    }

    async fn server(backend: Backend, admin_url: String) -> Self {
        let name = format!("rtcplane_t_{}", uuid::Uuid::now_v7().simple());
        let create = match backend {
            Backend::Postgres => format!("CREATE DATABASE \"{name}\""),
            _ => format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"),
        };
        if let Err(e) = admin_exec(backend, &admin_url, &create).await {
            panic!(
                "{} is not usable for tests at {} ({e}); start it (see README) or set RTCPLANE_TEST_{}_URL",
                backend.as_str(),
                crate::redact_url(&admin_url),
                if backend == Backend::Postgres {
                    "POSTGRES"
                } else {
                    "MYSQL"
                },
            );
        }
        Self {
            url: with_database(&admin_url, &name),
            backend,
            cleanup: Cleanup::Server { admin_url, name },
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Server { admin_url, name } => {
                let drop_sql = match self.backend {
                    Backend::Postgres => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                    _ => format!("DROP DATABASE IF EXISTS `{name}`"),
                };
                let (backend, admin_url) = (self.backend, admin_url.clone());
                // Drop runs outside any runtime guarantee: use a private one on a private thread.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    if let Ok(rt) = rt {
                        let _ = rt.block_on(admin_exec(backend, &admin_url, &drop_sql));
                    }
                })
                .join();
            }
        }
    }
}

async fn admin_exec(backend: Backend, url: &str, sql: &str) -> Result<(), sqlx::Error> {
    match backend {
        Backend::Postgres => {
            let mut c =
                sqlx::PgConnection::connect_with(&sqlx::postgres::PgConnectOptions::from_str(url)?)
                    .await?;
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await?;
            c.close().await
        }
        Backend::MySql => {
            let mut c = sqlx::MySqlConnection::connect_with(
                &sqlx::mysql::MySqlConnectOptions::from_str(url)?,
            )
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await?;
            c.close().await
        }
        Backend::Sqlite => Ok(()),
    }
}

/// `scheme://auth@host:port/db?q` → same URL with `db` replaced.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_database() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            super::with_database("mysql://root@h", "x"),
            "mysql://root@h/x"
        );
        assert_eq!(
            super::with_database("postgres://h/t?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }
}
