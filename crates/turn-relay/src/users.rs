//! The `turn_users` table: long-term credential users in the main store (coturn's `turnadmin` equivalent).

use rtcplane_storage::{Backend, Storage, with_pool};
use serde::Serialize;
use sqlx::Row;

use crate::stun::{LongTermKey, PasswordAlgorithm};

/// A stored user (keys are not shown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TurnUser {
    /// Realm.
    pub realm: String,
    /// User name.
    pub name: String,
    /// When added or last changed, unix milliseconds.
    pub created_at: i64,
}

/// Errors of the user store.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The database failed.
    #[error("turn_users {op}: {source}")]
    Query {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds a user or changes its password.
pub async fn add(
    storage: &Storage,
    realm: &str,
    name: &str,
    password: &str,
) -> Result<(), UserError> {
    if name.is_empty() || name.len() > 255 || realm.is_empty() || realm.len() > 255 {
        return Err(UserError::Invalid(
            "name and realm must be 1 to 255 bytes".into(),
        ));
    }
    if password.is_empty() {
        return Err(UserError::Invalid("the password must not be empty".into()));
    }
    let md5 = hex(LongTermKey::derive(PasswordAlgorithm::Md5, name, realm, password).as_bytes());
    let sha = hex(LongTermKey::derive(PasswordAlgorithm::Sha256, name, realm, password).as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let sql = match storage.backend() {
        Backend::MySql => storage.sql(
            "INSERT INTO turn_users (realm, name, md5_key, sha256_key, created_at) VALUES (?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE md5_key = VALUES(md5_key), sha256_key = VALUES(sha256_key), created_at = VALUES(created_at)",
        ),
        _ => storage.sql(
            "INSERT INTO turn_users (realm, name, md5_key, sha256_key, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (realm, name) DO UPDATE SET md5_key = excluded.md5_key, sha256_key = excluded.sha256_key, created_at = excluded.created_at",
        ),
    };
    with_pool!(storage, p => sqlx::query(sql).bind(realm).bind(name).bind(&md5).bind(&sha).bind(now).execute(p).await.map(|_| ()))
        .map_err(|source| UserError::Query { op: "add", source })
}

/// Removes a user; true if it existed.
pub async fn delete(storage: &Storage, realm: &str, name: &str) -> Result<bool, UserError> {
    let sql = storage.sql("DELETE FROM turn_users WHERE realm = ? AND name = ?");
    with_pool!(storage, p => sqlx::query(sql).bind(realm).bind(name).execute(p).await.map(|r| r.rows_affected() > 0))
        .map_err(|source| UserError::Query { op: "delete", source })
}

/// Users of `realm` (every realm if `None`), by realm and name.
pub async fn list(storage: &Storage, realm: Option<&str>) -> Result<Vec<TurnUser>, UserError> {
    let rows = match realm {
        Some(r) => {
            let sql = storage.sql("SELECT realm, name, created_at FROM turn_users WHERE realm = ? ORDER BY realm, name");
            with_pool!(storage, p => rows_to_users(sqlx::query(sql).bind(r).fetch_all(p).await))
        }
        None => {
            let sql =
                storage.sql("SELECT realm, name, created_at FROM turn_users ORDER BY realm, name");
            with_pool!(storage, p => rows_to_users(sqlx::query(sql).fetch_all(p).await))
        }
    };
    rows.map_err(|source| UserError::Query { op: "list", source })
}

fn rows_to_users<R: Row>(rows: Result<Vec<R>, sqlx::Error>) -> Result<Vec<TurnUser>, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows?
        .iter()
        .map(|r| {
            Ok(TurnUser {
                realm: r.try_get("realm")?,
                name: r.try_get("name")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// The stored key of `name` in `realm` for `algorithm`.
pub async fn key(
    storage: &Storage,
    realm: &str,
    name: &str,
    algorithm: PasswordAlgorithm,
) -> Result<Option<LongTermKey>, UserError> {
    let sql =
        storage.sql("SELECT md5_key, sha256_key FROM turn_users WHERE realm = ? AND name = ?");
    let row: Option<(String, String)> = with_pool!(storage, p => sqlx::query_as(sql).bind(realm).bind(name).fetch_optional(p).await)
        .map_err(|source| UserError::Query { op: "key", source })?;
    Ok(row.and_then(|(md5, sha)| {
        let hex = match algorithm {
            PasswordAlgorithm::Md5 => md5,
            PasswordAlgorithm::Sha256 => sha,
        };
        LongTermKey::from_hex(&format!("0x{}", hex.trim()))
    }))
}
