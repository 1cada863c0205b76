//! The SEMS tables: subscriptions read with the configurable `joined_query`, status written to
//! `registrations_table`, accounts managed in `subscribers` by the admin API.
//!
//! SEMS keeps `last_registration` and `expiry` as `DATETIME` in the database server's local time (`NOW()`).
//! To read and write the same columns the agent measures the server's clock against its own once at start
//! (`clock offset`) and converts both ways, so a SEMS database keeps working unchanged.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use rtcplane_storage::{Backend, Pool, Storage};
use sqlx::mysql::MySqlRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row};

/// A subscription as the joined query returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// subscriber_id.
    pub subscriber_id: i64,
    /// user.
    pub user: String,
    /// pass.
    pub pass: String,
    /// realm.
    pub realm: String,
    /// contact (when selected).
    pub contact: Option<String>,
    /// registration_status (NULL: no registrations row yet).
    pub status: Option<i64>,
    /// expiry, unix seconds.
    pub expiry: Option<i64>,
    /// last_registration, unix seconds.
    pub last_registration: Option<i64>,
}

/// The status row of one subscriber, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRow {
    /// subscriber_id.
    pub subscriber_id: i64,
    /// registration_status.
    pub status: i16,
    /// last_code.
    pub last_code: Option<i16>,
    /// last_reason.
    pub last_reason: Option<String>,
    /// last_registration, unix seconds.
    pub last_registration: Option<i64>,
    /// expiry, unix seconds.
    pub expiry: Option<i64>,
    /// contacts.
    pub contacts: Option<String>,
}

/// A database error with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("sip_agent database ({op}): {source}")]
pub struct DbError {
    /// The operation.
    pub op: &'static str,
    /// The cause.
    #[source]
    pub source: sqlx::Error,
}

fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
    move |source| DbError { op, source }
}

trait RowExt {
    fn int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn time(&self, col: &str) -> Result<Option<NaiveDateTime>, sqlx::Error>;
}

fn parse_time(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .or_else(|| DateTime::parse_from_rfc3339(s).ok().map(|d| d.naive_utc()))
}

fn absent(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::ColumnNotFound(_))
}

macro_rules! row_ext {
    ($row:ty, [$($int:ty),*]) => {
        impl RowExt for $row {
            fn int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                let mut first: Option<sqlx::Error> = None;
                $(
                    match self.try_get::<Option<$int>, _>(col) {
                        Ok(v) => return Ok(v.and_then(|v| i64::try_from(v).ok())),
                        Err(e) if absent(&e) => return Err(e),
                        Err(e) => {
                            if first.is_none() {
                                first = Some(e);
                            }
                        }
                    }
                )*
                match self.try_get::<Option<bool>, _>(col) {
                    Ok(v) => Ok(v.map(i64::from)),
                    Err(e) => Err(first.unwrap_or(e)),
                }
            }
            fn text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                match self.try_get::<Option<String>, _>(col) {
                    Ok(v) => Ok(v),
                    Err(e) if absent(&e) => Err(e),
                    Err(e) => self
                        .try_get::<Option<Vec<u8>>, _>(col)
                        .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                        .map_err(|_| e),
                }
            }
            fn time(&self, col: &str) -> Result<Option<NaiveDateTime>, sqlx::Error> {
                match self.try_get::<Option<NaiveDateTime>, _>(col) {
                    Ok(v) => Ok(v),
                    Err(e) if absent(&e) => Err(e),
                    Err(e) => match self.text(col) {
                        Ok(v) => Ok(v.as_deref().and_then(parse_time)),
                        Err(_) => Err(e),
                    },
                }
            }
        }
    };
}
row_ext!(PgRow, [i64, i32, i16]);
row_ext!(MySqlRow, [i64, i32, i16, i8, u32, u16, u8]);
row_ext!(SqliteRow, [i64]);

/// The agent's view of its database: the pool plus the statements built from config.
#[derive(Clone, Debug)]
pub struct Db {
    storage: Storage,
    joined_query: String,
    table: String,
    backend: Backend,
    save_contacts: bool,
    insert_missing: String,
    /// Database local time minus UTC.
    offset: TimeDelta,
}

fn pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

impl Db {
    /// Prepares the statements for `table` and measures the database clock.
    pub async fn new(
        storage: Storage,
        joined_query: &str,
        table: &str,
        save_contacts: bool,
    ) -> Result<Self, DbError> {
        let backend = storage.backend();
        let fix = |s: String| {
            if backend == Backend::Postgres {
                pg_placeholders(&s)
            } else {
                s
            }
        };
        let insert_missing = fix(match backend {
            Backend::MySql => format!("INSERT IGNORE INTO {table} (subscriber_id) VALUES (?)"),
            _ => format!("INSERT INTO {table} (subscriber_id) VALUES (?) ON CONFLICT DO NOTHING"),
        });
        let mut this = Self {
            storage,
            joined_query: joined_query.trim().trim_end_matches(';').to_string(),
            table: table.to_string(),
            backend,
            save_contacts,
            insert_missing,
            offset: TimeDelta::zero(),
        };
        this.offset = this.measure_offset().await?;
        Ok(this)
    }

    /// The storage behind.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    async fn measure_offset(&self) -> Result<TimeDelta, DbError> {
        let before = Utc::now();
        let db_now: NaiveDateTime = match self.storage.pool() {
            Pool::Sqlite(p) => {
                let s: String = sqlx::query_scalar("SELECT datetime('now')")
                    .fetch_one(p)
                    .await
                    .map_err(db("clock"))?;
                parse_time(&s).unwrap_or_else(|| before.naive_utc())
            }
            Pool::Postgres(p) => sqlx::query_scalar("SELECT LOCALTIMESTAMP(0)")
                .fetch_one(p)
                .await
                .map_err(db("clock"))?,
            Pool::MySql(p) => sqlx::query_scalar("SELECT NOW()")
                .fetch_one(p)
                .await
                .map_err(db("clock"))?,
        };
        let raw = db_now - before.naive_utc();
        // Time zones are whole quarter hours; anything else is clock skew, kept as measured.
        let quarter = 900;
        let rounded = ((raw.num_seconds() as f64 / quarter as f64).round() as i64) * quarter;
        Ok(if (raw.num_seconds() - rounded).abs() <= 2 {
            TimeDelta::seconds(rounded)
        } else {
            TimeDelta::seconds(raw.num_seconds())
        })
    }

    fn to_unix(&self, t: Option<NaiveDateTime>) -> Option<i64> {
        t.map(|t| (t - self.offset).and_utc().timestamp())
    }

    fn to_db(&self, unix: Option<i64>) -> Option<NaiveDateTime> {
        unix.and_then(|u| DateTime::from_timestamp(u, 0))
            .map(|t| t.naive_utc() + self.offset)
    }

    /// Every subscription (the joined query).
    pub async fn load(&self, read_contact: bool) -> Result<Vec<Subscription>, DbError> {
        let q = AssertSqlSafe(self.joined_query.clone());
        macro_rules! read {
            ($p:expr) => {{
                let rows = sqlx::query(q)
                    .fetch_all($p)
                    .await
                    .map_err(db("joined_query"))?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    out.push(
                        self.subscription(row, read_contact)
                            .map_err(db("joined_query row"))?,
                    );
                }
                out
            }};
        }
        Ok(match self.storage.pool() {
            Pool::Sqlite(p) => read!(p),
            Pool::Postgres(p) => read!(p),
            Pool::MySql(p) => read!(p),
        })
    }

    fn subscription<R: RowExt>(
        &self,
        row: &R,
        read_contact: bool,
    ) -> Result<Subscription, sqlx::Error> {
        let need = |v: Option<String>, col: &str| {
            v.ok_or_else(|| sqlx::Error::Decode(format!("{col} is NULL").into()))
        };
        Ok(Subscription {
            subscriber_id: row
                .int("subscriber_id")?
                .ok_or_else(|| sqlx::Error::Decode("subscriber_id is NULL".into()))?,
            user: need(row.text("user")?, "user")?,
            pass: row.text("pass")?.unwrap_or_default(),
            realm: need(row.text("realm")?, "realm")?,
            contact: if read_contact {
                match row.text("contact") {
                    Ok(c) => c.filter(|c| !c.trim().is_empty()),
                    Err(e) if absent(&e) => None,
                    Err(e) => return Err(e),
                }
            } else {
                None
            },
            status: row.int("registration_status")?,
            expiry: self.to_unix(row.time("expiry")?),
            last_registration: self.to_unix(row.time("last_registration")?),
        })
    }

    /// Creates missing status rows (SEMS creates one when it first sees a subscriber).
    pub async fn ensure_rows(&self, ids: &[i64]) -> Result<(), DbError> {
        macro_rules! run {
            ($p:expr) => {{
                let mut tx = $p.begin().await.map_err(db("begin"))?;
                for id in ids {
                    sqlx::query(AssertSqlSafe(self.insert_missing.as_str()))
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("insert registration"))?;
                }
                tx.commit().await.map_err(db("commit"))
            }};
        }
        if ids.is_empty() {
            return Ok(());
        }
        match self.storage.pool() {
            Pool::Sqlite(p) => run!(p),
            Pool::Postgres(p) => run!(p),
            Pool::MySql(p) => run!(p),
        }
    }

    /// `INSERT … ON CONFLICT/DUPLICATE KEY UPDATE` for `n` rows: one statement writes a whole chunk (a row
    /// that does not exist yet is created, as SEMS does after an UPDATE that matched nothing).
    fn upsert_sql(&self, n: usize) -> String {
        let mut cols = vec![
            "subscriber_id",
            "registration_status",
            "last_code",
            "last_reason",
            "last_registration",
            "expiry",
        ];
        if self.save_contacts {
            cols.push("contacts");
        }
        let one = format!("({})", vec!["?"; cols.len()].join(", "));
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.table,
            cols.join(", "),
            vec![one.as_str(); n].join(", ")
        );
        let set: Vec<String> = cols[1..]
            .iter()
            .map(|c| match self.backend {
                Backend::MySql => format!("{c} = VALUES({c})"),
                _ => format!("{c} = excluded.{c}"),
            })
            .collect();
        match self.backend {
            Backend::MySql => sql.push_str(" ON DUPLICATE KEY UPDATE "),
            _ => sql.push_str(" ON CONFLICT (subscriber_id) DO UPDATE SET "),
        }
        sql.push_str(&set.join(", "));
        if self.backend == Backend::Postgres {
            sql = pg_placeholders(&sql);
        }
        sql
    }

    fn delete_sql(&self, n: usize) -> String {
        let sql = format!(
            "DELETE FROM {} WHERE subscriber_id IN ({})",
            self.table,
            vec!["?"; n].join(", ")
        );
        if self.backend == Backend::Postgres {
            pg_placeholders(&sql)
        } else {
            sql
        }
    }

    /// Writes status rows and deletions in one transaction, a chunk of rows per statement.
    pub async fn write(&self, rows: &[StatusRow], deletes: &[i64]) -> Result<(), DbError> {
        const CHUNK: usize = 500;
        let upserts: Vec<(String, &[StatusRow])> = rows
            .chunks(CHUNK)
            .map(|c| (self.upsert_sql(c.len()), c))
            .collect();
        let removals: Vec<(String, &[i64])> = deletes
            .chunks(CHUNK)
            .map(|c| (self.delete_sql(c.len()), c))
            .collect();
        macro_rules! run {
            ($p:expr) => {{
                let mut tx = $p.begin().await.map_err(db("begin"))?;
                for (sql, chunk) in &upserts {
                    let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
                    for r in chunk.iter() {
                        q = q
                            .bind(r.subscriber_id)
                            .bind(r.status)
                            .bind(r.last_code)
                            .bind(r.last_reason.as_deref())
                            .bind(self.to_db(r.last_registration))
                            .bind(self.to_db(r.expiry));
                        if self.save_contacts {
                            q = q.bind(r.contacts.as_deref());
                        }
                    }
                    q.execute(&mut *tx)
                        .await
                        .map_err(db("write registrations"))?;
                }
                for (sql, chunk) in &removals {
                    let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
                    for id in chunk.iter() {
                        q = q.bind(*id);
                    }
                    q.execute(&mut *tx)
                        .await
                        .map_err(db("delete registrations"))?;
                }
                tx.commit().await.map_err(db("commit"))
            }};
        }
        match self.storage.pool() {
            Pool::Sqlite(p) => run!(p),
            Pool::Postgres(p) => run!(p),
            Pool::MySql(p) => run!(p),
        }
    }

    /// Adds a subscriber (id chosen by the database when `None`); returns its id.
    pub async fn insert_subscriber(
        &self,
        id: Option<i64>,
        user: &str,
        pass: &str,
        realm: &str,
        contact: &str,
    ) -> Result<i64, DbError> {
        let s = &self.storage;
        let op = "insert subscriber";
        match (s.pool(), id) {
            (Pool::Postgres(p), Some(id)) => sqlx::query(
                "INSERT INTO subscribers (subscriber_id, \"user\", pass, realm, contact) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id as i32)
            .bind(user).bind(pass).bind(realm).bind(contact)
            .execute(p).await.map(|_| id).map_err(db(op)),
            (Pool::Postgres(p), None) => sqlx::query_scalar::<_, i32>(
                "INSERT INTO subscribers (\"user\", pass, realm, contact) VALUES ($1, $2, $3, $4) RETURNING subscriber_id",
            )
            .bind(user).bind(pass).bind(realm).bind(contact)
            .fetch_one(p).await.map(i64::from).map_err(db(op)),
            (Pool::Sqlite(p), _) => sqlx::query(
                "INSERT INTO subscribers (subscriber_id, user, pass, realm, contact) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(id).bind(user).bind(pass).bind(realm).bind(contact)
            .execute(p).await.map(|r| id.unwrap_or(r.last_insert_rowid())).map_err(db(op)),
            (Pool::MySql(p), _) => sqlx::query(
                "INSERT INTO subscribers (subscriber_id, user, pass, realm, contact) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(id).bind(user).bind(pass).bind(realm).bind(contact)
            .execute(p).await.map(|r| id.unwrap_or(r.last_insert_id() as i64)).map_err(db(op)),
        }
    }

    /// Changes a subscriber; false if there is none with this id.
    pub async fn update_subscriber(
        &self,
        id: i64,
        user: &str,
        pass: &str,
        realm: &str,
        contact: &str,
    ) -> Result<bool, DbError> {
        let op = "update subscriber";
        match self.storage.pool() {
            Pool::Postgres(p) => sqlx::query(
                "UPDATE subscribers SET \"user\" = $1, pass = $2, realm = $3, contact = $4 WHERE subscriber_id = $5",
            )
            .bind(user).bind(pass).bind(realm).bind(contact).bind(id as i32)
            .execute(p).await.map(|r| r.rows_affected() > 0).map_err(db(op)),
            Pool::Sqlite(p) => sqlx::query(
                "UPDATE subscribers SET user = ?, pass = ?, realm = ?, contact = ? WHERE subscriber_id = ?",
            )
            .bind(user).bind(pass).bind(realm).bind(contact).bind(id)
            .execute(p).await.map(|r| r.rows_affected() > 0).map_err(db(op)),
            Pool::MySql(p) => sqlx::query(
                "UPDATE subscribers SET user = ?, pass = ?, realm = ?, contact = ? WHERE subscriber_id = ?",
            )
            .bind(user).bind(pass).bind(realm).bind(contact).bind(id)
            .execute(p).await.map(|r| r.rows_affected() > 0).map_err(db(op)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_times() {
        assert_eq!(pg_placeholders("a = ? AND b = ?"), "a = $1 AND b = $2");
        assert!(parse_time("2026-11-23 10:00:00").is_some());
        assert!(parse_time("2026-11-23T10:00:00.5").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
