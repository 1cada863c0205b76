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

/// Per-user overrides of `[turn]` limits (`turn_user_limits`); `None`: the configured value applies, 0 means
/// unlimited. The name is the account: a TURN REST username `<expiry>:<user>` counts as `<user>`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct UserLimits {
    /// Concurrent allocations (overrides `turn.user_quota`).
    pub quota: Option<u32>,
    /// Bytes per second per allocation, each direction (overrides `turn.max_bps`).
    pub max_bps: Option<u64>,
    /// Bytes per second over the user's allocations, each direction (overrides `turn.user_max_bps`).
    pub user_max_bps: Option<u64>,
}

/// The largest quota an override may set.
pub const MAX_QUOTA: u32 = 1_000_000;
/// The largest bandwidth an override may set (bytes per second).
pub const MAX_BPS: u64 = 100_000_000_000;

/// A stored override.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StoredLimits {
    /// Realm.
    pub realm: String,
    /// Account name.
    pub name: String,
    /// The overrides.
    #[serde(flatten)]
    pub limits: UserLimits,
    /// When set, unix milliseconds.
    pub updated_at: i64,
}

fn check_names(realm: &str, name: &str) -> Result<(), UserError> {
    if name.is_empty() || name.len() > 255 || realm.is_empty() || realm.len() > 255 {
        return Err(UserError::Invalid(
            "name and realm must be 1 to 255 bytes".into(),
        ));
    }
    Ok(())
}

/// Sets (replaces) the overrides of `name` in `realm`.
pub async fn set_limits(
    storage: &Storage,
    realm: &str,
    name: &str,
    limits: &UserLimits,
) -> Result<(), UserError> {
    check_names(realm, name)?;
    if *limits == UserLimits::default() {
        return Err(UserError::Invalid(
            "set at least one of quota, max_bps, user_max_bps".into(),
        ));
    }
    if limits.quota.is_some_and(|q| q > MAX_QUOTA) {
        return Err(UserError::Invalid(format!(
            "quota must be at most {MAX_QUOTA}"
        )));
    }
    if [limits.max_bps, limits.user_max_bps]
        .iter()
        .flatten()
        .any(|b| *b > MAX_BPS)
    {
        return Err(UserError::Invalid(format!(
            "max_bps and user_max_bps must be at most {MAX_BPS} bytes per second"
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let sql = match storage.backend() {
        Backend::MySql => storage.sql(
            "INSERT INTO turn_user_limits (realm, name, quota, max_bps, user_max_bps, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE quota = VALUES(quota), max_bps = VALUES(max_bps), user_max_bps = VALUES(user_max_bps), updated_at = VALUES(updated_at)",
        ),
        _ => storage.sql(
            "INSERT INTO turn_user_limits (realm, name, quota, max_bps, user_max_bps, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (realm, name) DO UPDATE SET quota = excluded.quota, max_bps = excluded.max_bps, user_max_bps = excluded.user_max_bps, updated_at = excluded.updated_at",
        ),
    };
    // Bounded above, so these fit in i64.
    let quota = limits.quota.map(i64::from);
    let max_bps = limits.max_bps.map(|b| b as i64);
    let user_max_bps = limits.user_max_bps.map(|b| b as i64);
    with_pool!(storage, p => sqlx::query(sql).bind(realm).bind(name).bind(quota).bind(max_bps).bind(user_max_bps).bind(now).execute(p).await.map(|_| ()))
        .map_err(|source| UserError::Query { op: "set limits", source })
}

/// Removes the overrides of `name`; true if there were some.
pub async fn delete_limits(storage: &Storage, realm: &str, name: &str) -> Result<bool, UserError> {
    let sql = storage.sql("DELETE FROM turn_user_limits WHERE realm = ? AND name = ?");
    with_pool!(storage, p => sqlx::query(sql).bind(realm).bind(name).execute(p).await.map(|r| r.rows_affected() > 0))
        .map_err(|source| UserError::Query { op: "delete limits", source })
}

type LimitsRow = (String, String, Option<i64>, Option<i64>, Option<i64>, i64);

fn to_stored(rows: Vec<LimitsRow>) -> Vec<StoredLimits> {
    // Values outside what `set_limits` writes (edited by hand) read as "no override" rather than wrapping.
    rows.into_iter()
        .map(
            |(realm, name, quota, max_bps, user_max_bps, updated_at)| StoredLimits {
                realm,
                name,
                limits: UserLimits {
                    quota: quota.and_then(|q| u32::try_from(q).ok()),
                    max_bps: max_bps.and_then(|b| u64::try_from(b).ok()),
                    user_max_bps: user_max_bps.and_then(|b| u64::try_from(b).ok()),
                },
                updated_at,
            },
        )
        .collect()
}

/// The overrides of `name` in `realm`.
pub async fn get_limits(
    storage: &Storage,
    realm: &str,
    name: &str,
) -> Result<Option<StoredLimits>, UserError> {
    let sql = storage.sql("SELECT realm, name, quota, max_bps, user_max_bps, updated_at FROM turn_user_limits WHERE realm = ? AND name = ?");
    let rows: Vec<LimitsRow> =
        with_pool!(storage, p => sqlx::query_as(sql).bind(realm).bind(name).fetch_all(p).await)
            .map_err(|source| UserError::Query {
                op: "get limits",
                source,
            })?;
    Ok(to_stored(rows).into_iter().next())
}

/// Overrides of `realm` (every realm if `None`), by realm and name.
pub async fn list_limits(
    storage: &Storage,
    realm: Option<&str>,
) -> Result<Vec<StoredLimits>, UserError> {
    let rows: Vec<LimitsRow> = match realm {
        Some(r) => {
            let sql = storage.sql("SELECT realm, name, quota, max_bps, user_max_bps, updated_at FROM turn_user_limits WHERE realm = ? ORDER BY realm, name");
            with_pool!(storage, p => sqlx::query_as(sql).bind(r).fetch_all(p).await)
        }
        None => {
            let sql = storage.sql("SELECT realm, name, quota, max_bps, user_max_bps, updated_at FROM turn_user_limits ORDER BY realm, name");
            with_pool!(storage, p => sqlx::query_as(sql).fetch_all(p).await)
        }
    }
    .map_err(|source| UserError::Query { op: "list limits", source })?;
    Ok(to_stored(rows))
}
