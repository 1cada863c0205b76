//! The migrations of each backend, embedded at build time, and the rule that a schema newer than the binary
//! is never touched.

use sqlx::migrate::Migrator;

use crate::{Backend, Error, Storage, with_pool};

static SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../../migrations/postgres");
static MYSQL: Migrator = sqlx::migrate!("../../migrations/mysql");

/// Where the database's schema stands relative to this binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Versions recorded as applied in the database.
    pub applied: Vec<i64>,
    /// Versions this binary knows, oldest first.
    pub known: Vec<i64>,
}

impl SchemaStatus {
    /// Applied versions this binary does not know (the database was migrated by a newer rtcplane).
    pub fn unknown(&self) -> Vec<i64> {
        self.applied
            .iter()
            .copied()
            .filter(|v| !self.known.contains(v))
            .collect()
    }

    /// Known versions not yet applied.
    pub fn pending(&self) -> Vec<i64> {
        self.known
            .iter()
            .copied()
            .filter(|v| !self.applied.contains(v))
            .collect()
    }
}

/// What `migrate` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call.
    pub applied_now: Vec<i64>,
    /// The newest version now in the database.
    pub current: Option<i64>,
}

impl Storage {
    fn migrator(&self) -> &'static Migrator {
        match self.backend() {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
            Backend::MySql => &MYSQL,
        }
    }

    /// Reads which migrations the database has, without changing anything.
    pub async fn schema_status(&self) -> Result<SchemaStatus, Error> {
        let known: Vec<i64> = self.migrator().iter().map(|m| m.version).collect();
        let exists_sql = match self.backend() {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
            }
            Backend::MySql => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'"
            }
        };
        let exists: i64 = with_pool!(self, p => sqlx::query_scalar(exists_sql).fetch_one(p).await)
            .map_err(|source| Error::Query {
                op: "schema_status",
                source,
            })?;
        let applied = if exists == 0 {
            Vec::new()
        } else {
            with_pool!(self, p => sqlx::query_scalar::<_, i64>(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version"
            ).fetch_all(p).await)
            .map_err(|source| Error::Query {
                op: "schema_status",
                source,
            })?
        };
        Ok(SchemaStatus { applied, known })
    }

    /// Fails if the database has migrations this binary does not know.
    pub async fn ensure_not_newer(&self) -> Result<SchemaStatus, Error> {
        let status = self.schema_status().await?;
        let unknown = status.unknown();
        if !unknown.is_empty() {
            return Err(Error::SchemaTooNew {
                unknown,
                known_latest: status.known.last().copied().unwrap_or(0),
            });
        }
        Ok(status)
    }

    /// Fails unless the schema is exactly what this binary expects (for `serve` with migration at start off).
    pub async fn ensure_current(&self) -> Result<(), Error> {
        let status = self.ensure_not_newer().await?;
        let pending = status.pending();
        if pending.is_empty() {
            Ok(())
        } else {
            Err(Error::SchemaOutdated { pending })
        }
    }

    /// Applies pending migrations, refusing a schema newer than the binary. Safe to run from several nodes at
    /// once: PostgreSQL and MySQL take sqlx's advisory lock.
    pub async fn migrate(&self) -> Result<MigrationReport, Error> {
        let before = self.ensure_not_newer().await?;
        let backend = self.backend().as_str();
        with_pool!(self, p => self.migrator().run(p).await)
            .map_err(|source| Error::Migrate { backend, source })?;
        let after = self.schema_status().await?;
        let applied_now = after
            .applied
            .iter()
            .copied()
            .filter(|v| !before.applied.contains(v))
            .collect();
        Ok(MigrationReport {
            applied_now,
            current: after.applied.last().copied(),
        })
    }
}
