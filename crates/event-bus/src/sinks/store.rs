//! Every SQL statement of the event log and the webhook outbox, written once with `?` placeholders for the
//! three backends (see `rtcplane_storage::Storage::sql`). Timestamps are unix milliseconds.

use std::sync::Arc;

use rtcplane_storage::{Backend, Storage, with_pool};
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use crate::Event;

/// A delivery waiting for its first attempt, a retry, or a leased delivery retried later.
pub(crate) const PENDING: &str = "pending";
/// Leased by a node that is attempting it now.
pub(crate) const DELIVERING: &str = "delivering";
/// The endpoint answered 2xx.
pub(crate) const DELIVERED: &str = "delivered";
/// Given up after `max_attempts` or `max_age`.
pub(crate) const DEAD: &str = "dead";

/// Rows per multi-row INSERT (placeholders stay far below every backend's limit).
const ROWS_PER_INSERT: usize = 400;

/// A webhook endpoint as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct EndpointRecord {
    /// Its id.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// `whsec_…`.
    #[serde(skip)]
    pub secret: String,
    /// Type globs; empty for all.
    pub events: Vec<String>,
    /// Delivering to it.
    pub enabled: bool,
    /// Deliveries in flight at once.
    pub max_in_flight: u32,
    /// `config` or `api`.
    pub origin: String,
    /// Free text.
    pub description: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// One delivery as stored: the delivery log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeliveryRecord {
    /// Its id.
    pub id: i64,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event (also the `webhook-id` header).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The event's subject (first 255 characters).
    pub subject: Option<String>,
    /// `pending`, `delivering`, `delivered` or `dead`.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// Unix ms.
    pub created_at: i64,
    /// When the next attempt is due (unix ms), while pending.
    pub next_attempt_at: i64,
    /// Unix ms of the last attempt.
    pub last_attempt_at: Option<i64>,
    /// HTTP status of the last attempt, if a response came.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Latency of the last attempt.
    pub last_latency_ms: Option<i64>,
    /// When it was delivered or dead-lettered (unix ms).
    pub finished_at: Option<i64>,
    /// The delivery this one replays.
    pub replay_of: Option<i64>,
}

/// One attempt of a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct AttemptRecord {
    /// 1 for the first.
    pub attempt: i64,
    /// Unix ms.
    pub started_at: i64,
    /// HTTP status, if a response came.
    pub status: Option<i64>,
    /// Until the response head (or the failure).
    pub latency_ms: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// The node that made it.
    pub node: String,
}

/// A due delivery with what is needed to attempt it.
#[derive(Clone, Debug)]
pub(crate) struct Due {
    pub(crate) id: i64,
    pub(crate) event_id: String,
    pub(crate) attempts: i64,
    pub(crate) created_at: i64,
    /// The envelope; `None` if the event left the log.
    pub(crate) body: Option<String>,
}

/// How an attempt ended, as written.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// The lease the attempt was made under: a late outcome of an expired lease changes nothing.
    pub(crate) lease_until: i64,
    pub(crate) state: &'static str,
    pub(crate) attempt: i64,
    pub(crate) started_at: i64,
    pub(crate) status: Option<i64>,
    pub(crate) latency_ms: i64,
    pub(crate) error: Option<String>,
    pub(crate) next_attempt_at: i64,
    pub(crate) finished_at: Option<i64>,
}

/// A new delivery to insert.
#[derive(Clone, Debug)]
pub(crate) struct NewDelivery<'a> {
    pub(crate) endpoint_id: &'a str,
    pub(crate) event_id: String,
    pub(crate) event_type: &'a str,
    pub(crate) subject: Option<String>,
    pub(crate) replay_of: Option<i64>,
}

/// Statements over the main store.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    storage: Storage,
}

/// The first `chars` characters, without NUL (which PostgreSQL refuses in text).
fn truncate(s: &str, chars: usize) -> String {
    s.chars().filter(|c| *c != '\0').take(chars).collect()
}

fn endpoint_from_row<R: Row>(r: &R) -> Result<EndpointRecord, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'c> String: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> i64: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
{
    let events: String = r.try_get("events")?;
    Ok(EndpointRecord {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        secret: r.try_get("secret")?,
        events: serde_json::from_str(&events).map_err(|e| sqlx::Error::ColumnDecode {
            index: "events".into(),
            source: Box::new(e),
        })?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        max_in_flight: u32::try_from(r.try_get::<i64, _>("max_in_flight")?).unwrap_or(1),
        origin: r.try_get("origin")?,
        description: r.try_get("description")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn delivery_from_row<R: Row>(r: &R) -> Result<DeliveryRecord, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'c> String: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> i64: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> Option<String>: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> Option<i64>: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
{
    Ok(DeliveryRecord {
        id: r.try_get("id")?,
        endpoint_id: r.try_get("endpoint_id")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        subject: r.try_get("subject")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_attempt_at: r.try_get("last_attempt_at")?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        last_latency_ms: r.try_get("last_latency_ms")?,
        finished_at: r.try_get("finished_at")?,
        replay_of: r.try_get("replay_of")?,
    })
}

impl Store {
    pub(crate) fn new(storage: Storage) -> Self {
        Self { storage }
    }

    // ----- the event log -----

    /// Stores events and the deliveries they owe, in one transaction.
    pub(crate) async fn record(
        &self,
        events: &[Arc<Event>],
        deliveries: &[NewDelivery<'_>],
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let s = &self.storage;
        with_pool!(s, p => async {
            let mut tx = p.begin().await?;
            for chunk in events.chunks(ROWS_PER_INSERT) {
                let sql = s.sql_rows(
                    "INSERT INTO rtcplane_events (id, time_ms, type, subject, node, body) VALUES ",
                    "(?, ?, ?, ?, ?, ?)",
                    chunk.len(),
                );
                let mut q = sqlx::query(sql);
                for e in chunk {
                    q = q
                        .bind(e.id.to_string())
                        .bind(e.time.timestamp_millis())
                        .bind(e.ty.clone())
                        .bind(e.subject.as_deref().map(|s| truncate(s, 255)))
                        .bind(truncate(&e.node, 255))
                        .bind(e.to_json());
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in deliveries.chunks(ROWS_PER_INSERT) {
                let sql = s.sql_rows(
                    "INSERT INTO rtcplane_webhook_deliveries (endpoint_id, event_id, event_type, subject, state, attempts, created_at, next_attempt_at, replay_of) VALUES ",
                    "(?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                    chunk.len(),
                );
                let mut q = sqlx::query(sql);
                for d in chunk {
                    q = q
                        .bind(d.endpoint_id.to_owned())
                        .bind(d.event_id.clone())
                        .bind(d.event_type.to_owned())
                        .bind(d.subject.as_deref().map(|s| truncate(s, 255)))
                        .bind(now)
                        .bind(now)
                        .bind(d.replay_of);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await
        }.await)
    }

    /// The log position of an event, if stored.
    pub(crate) async fn seq_of(&self, id: &str) -> Result<Option<i64>, sqlx::Error> {
        let sql = self
            .storage
            .sql("SELECT seq FROM rtcplane_events WHERE id = ?");
        with_pool!(self.storage, p => sqlx::query_scalar::<_, i64>(sql).bind(id).fetch_optional(p).await)
    }

    /// The position just before the first event at or after `time_ms`, and whether older events are gone.
    pub(crate) async fn seq_before_time(&self, time_ms: i64) -> Result<i64, sqlx::Error> {
        let sql = self
            .storage
            .sql("SELECT MIN(seq) FROM rtcplane_events WHERE time_ms >= ?");
        let first: Option<i64> = with_pool!(self.storage, p => sqlx::query_scalar(sql).bind(time_ms).fetch_one(p).await)?;
        match first {
            Some(seq) => Ok(seq - 1),
            None => {
                let sql = self.storage.sql("SELECT MAX(seq) FROM rtcplane_events");
                let last: Option<i64> =
                    with_pool!(self.storage, p => sqlx::query_scalar(sql).fetch_one(p).await)?;
                Ok(last.unwrap_or(0))
            }
        }
    }

    /// Stored events after position `seq`, in order: `(seq, envelope JSON)`.
    pub(crate) async fn after(
        &self,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, sqlx::Error> {
        let sql = self
            .storage
            .sql("SELECT seq, body FROM rtcplane_events WHERE seq > ? ORDER BY seq LIMIT ?");
        with_pool!(self.storage, p => {
            let rows = sqlx::query(sql).bind(seq).bind(limit).fetch_all(p).await?;
            rows.iter().map(|r| Ok((r.try_get("seq")?, r.try_get("body")?))).collect()
        })
    }

    /// Events stored between two times, in order: `(id, type, subject)`, at most `limit`.
    pub(crate) async fn between(
        &self,
        since_ms: i64,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, String, Option<String>)>, sqlx::Error> {
        let sql = self.storage.sql(
            "SELECT id, type, subject FROM rtcplane_events WHERE time_ms >= ? AND time_ms <= ? ORDER BY seq LIMIT ?",
        );
        with_pool!(self.storage, p => {
            let rows = sqlx::query(sql).bind(since_ms).bind(until_ms).bind(limit).fetch_all(p).await?;
            rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("type")?, r.try_get("subject")?))).collect()
        })
    }

    /// Deletes finished deliveries (and their attempts) finished before `cutoff`, then events older than
    /// `cutoff` that no unfinished delivery still needs. Returns `(events, deliveries)` deleted.
    pub(crate) async fn sweep(&self, cutoff: i64) -> Result<(u64, u64), sqlx::Error> {
        let s = &self.storage;
        let attempts = s.sql(
            "DELETE FROM rtcplane_webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM rtcplane_webhook_deliveries WHERE finished_at IS NOT NULL AND finished_at < ?)",
        );
        let deliveries = s.sql(
            "DELETE FROM rtcplane_webhook_deliveries WHERE finished_at IS NOT NULL AND finished_at < ?",
        );
        let events = s.sql(
            "DELETE FROM rtcplane_events WHERE time_ms < ? AND NOT EXISTS \
             (SELECT 1 FROM rtcplane_webhook_deliveries d WHERE d.event_id = rtcplane_events.id AND d.finished_at IS NULL)",
        );
        let orphans = s.sql(
            "UPDATE rtcplane_webhook_deliveries SET state = 'dead', finished_at = ?, lease_owner = NULL, lease_until = NULL, \
             last_error = 'endpoint deleted' WHERE finished_at IS NULL AND endpoint_id NOT IN (SELECT id FROM rtcplane_webhook_endpoints)",
        );
        let now = chrono::Utc::now().timestamp_millis();
        with_pool!(s, p => async {
            sqlx::query(orphans).bind(now).execute(p).await?;
            sqlx::query(attempts).bind(cutoff).execute(p).await?;
            let d = sqlx::query(deliveries).bind(cutoff).execute(p).await?.rows_affected();
            let e = sqlx::query(events).bind(cutoff).execute(p).await?.rows_affected();
            Ok((e, d))
        }.await)
    }

    // ----- endpoints -----

    pub(crate) async fn endpoints(&self) -> Result<Vec<EndpointRecord>, sqlx::Error> {
        let sql = self.storage.sql(
            "SELECT id, url, secret, events, enabled, max_in_flight, origin, description, created_at, updated_at \
             FROM rtcplane_webhook_endpoints ORDER BY created_at, id",
        );
        with_pool!(self.storage, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter().map(endpoint_from_row).collect()
        })
    }

    pub(crate) async fn endpoint(&self, id: &str) -> Result<Option<EndpointRecord>, sqlx::Error> {
        let sql = self.storage.sql(
            "SELECT id, url, secret, events, enabled, max_in_flight, origin, description, created_at, updated_at \
             FROM rtcplane_webhook_endpoints WHERE id = ?",
        );
        with_pool!(self.storage, p => {
            let row = sqlx::query(sql).bind(id).fetch_optional(p).await?;
            row.as_ref().map(endpoint_from_row).transpose()
        })
    }

    pub(crate) async fn insert_endpoint(&self, e: &EndpointRecord) -> Result<(), sqlx::Error> {
        let sql = self.storage.sql(
            "INSERT INTO rtcplane_webhook_endpoints (id, url, secret, events, enabled, max_in_flight, origin, description, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        let events = serde_json::to_string(&e.events).unwrap_or_else(|_| "[]".into());
        with_pool!(self.storage, p => sqlx::query(sql)
            .bind(&e.id).bind(&e.url).bind(&e.secret).bind(events).bind(i64::from(e.enabled))
            .bind(i64::from(e.max_in_flight)).bind(&e.origin).bind(&e.description)
            .bind(e.created_at).bind(e.updated_at)
            .execute(p).await.map(|_| ()))
    }

    pub(crate) async fn update_endpoint(&self, e: &EndpointRecord) -> Result<(), sqlx::Error> {
        let sql = self.storage.sql(
            "UPDATE rtcplane_webhook_endpoints SET url = ?, secret = ?, events = ?, enabled = ?, max_in_flight = ?, \
             origin = ?, description = ?, updated_at = ? WHERE id = ?",
        );
        let events = serde_json::to_string(&e.events).unwrap_or_else(|_| "[]".into());
        with_pool!(self.storage, p => sqlx::query(sql)
            .bind(&e.url).bind(&e.secret).bind(events).bind(i64::from(e.enabled))
            .bind(i64::from(e.max_in_flight)).bind(&e.origin).bind(&e.description)
            .bind(e.updated_at).bind(&e.id)
            .execute(p).await.map(|_| ()))
    }

    /// Deletes an endpoint with its deliveries and their attempts; true if it existed.
    pub(crate) async fn delete_endpoint(&self, id: &str) -> Result<bool, sqlx::Error> {
        let s = &self.storage;
        let attempts = s.sql(
            "DELETE FROM rtcplane_webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM rtcplane_webhook_deliveries WHERE endpoint_id = ?)",
        );
        let deliveries = s.sql("DELETE FROM rtcplane_webhook_deliveries WHERE endpoint_id = ?");
        let endpoint = s.sql("DELETE FROM rtcplane_webhook_endpoints WHERE id = ?");
        with_pool!(s, p => async {
            let mut tx = p.begin().await?;
            sqlx::query(attempts).bind(id).execute(&mut *tx).await?;
            sqlx::query(deliveries).bind(id).execute(&mut *tx).await?;
            let n = sqlx::query(endpoint).bind(id).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(n > 0)
        }.await)
    }

    // ----- deliveries -----

    /// Deliveries of `endpoint_id` that can be attempted now, oldest first: pending and due, or leased by a
    /// node whose lease ran out. Of one subject only the oldest unfinished delivery is a candidate, so one
    /// subject's events reach an endpoint in order. (The head of each subject comes from one uncorrelated
    /// `GROUP BY`, which every planner runs in one pass whatever its statistics say; a correlated
    /// `NOT EXISTS` went quadratic on PostgreSQL with fresh tables.)
    pub(crate) async fn due(
        &self,
        endpoint_id: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Due>, sqlx::Error> {
        let sql = self.storage.sql(
            "SELECT d.id, d.event_id, d.attempts, d.created_at, e.body \
             FROM rtcplane_webhook_deliveries d LEFT JOIN rtcplane_events e ON e.id = d.event_id \
             WHERE d.endpoint_id = ? \
             AND ((d.state = 'pending' AND d.next_attempt_at <= ?) OR (d.state = 'delivering' AND d.lease_until < ?)) \
             AND (d.subject IS NULL OR d.id IN (SELECT MIN(o.id) FROM rtcplane_webhook_deliveries o \
                 WHERE o.endpoint_id = ? AND o.subject IS NOT NULL AND (o.state = 'pending' OR o.state = 'delivering') \
                 GROUP BY o.subject)) \
             ORDER BY d.id LIMIT ?",
        );
        with_pool!(self.storage, p => {
            let rows = sqlx::query(sql).bind(endpoint_id).bind(now).bind(now).bind(endpoint_id).bind(limit)
                .fetch_all(p).await?;
            rows.iter().map(|r| Ok(Due {
                id: r.try_get("id")?,
                event_id: r.try_get("event_id")?,
                attempts: r.try_get("attempts")?,
                created_at: r.try_get("created_at")?,
                body: r.try_get("body")?,
            })).collect()
        })
    }

    /// Leases due deliveries to `node` until `lease_until`, in one statement; returns the ids it got (another
    /// node may have taken some first).
    pub(crate) async fn claim(
        &self,
        ids: &[i64],
        node: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<Vec<i64>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let s = &self.storage;
        // Still due when claimed: another node may have attempted it (and set a later retry) meanwhile.
        const HEAD: &str = "UPDATE rtcplane_webhook_deliveries SET state = 'delivering', lease_owner = ?, lease_until = ? \
             WHERE ((state = 'pending' AND next_attempt_at <= ?) OR (state = 'delivering' AND lease_until < ?)) AND id IN (";
        match s.backend() {
            Backend::MySql => {
                let update = s.sql_list(HEAD, ids.len(), ")");
                let check = s.sql_list(
                    "SELECT id FROM rtcplane_webhook_deliveries WHERE state = 'delivering' AND lease_owner = ? \
                     AND lease_until = ? AND id IN (",
                    ids.len(),
                    ")",
                );
                with_pool!(s, p => async {
                    let mut q = sqlx::query(update).bind(node).bind(lease_until).bind(now).bind(now);
                    for id in ids {
                        q = q.bind(id);
                    }
                    q.execute(p).await?;
                    let mut q = sqlx::query_scalar::<_, i64>(check).bind(node).bind(lease_until);
                    for id in ids {
                        q = q.bind(id);
                    }
                    q.fetch_all(p).await
                }.await)
            }
            Backend::Sqlite | Backend::Postgres => {
                let sql = s.sql_list(HEAD, ids.len(), ") RETURNING id");
                with_pool!(s, p => {
                    let mut q = sqlx::query_scalar::<_, i64>(sql).bind(node).bind(lease_until).bind(now).bind(now);
                    for id in ids {
                        q = q.bind(id);
                    }
                    q.fetch_all(p).await
                })
            }
        }
    }

    /// Records attempts and the deliveries' new states in one transaction (for leases `node` still holds).
    pub(crate) async fn finish(
        &self,
        node: &str,
        outcomes: &[(i64, Outcome)],
    ) -> Result<(), sqlx::Error> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let s = &self.storage;
        with_pool!(s, p => async {
            let mut tx = p.begin().await?;
            for (id, o) in outcomes {
                let update = s.sql(
                    "UPDATE rtcplane_webhook_deliveries SET state = ?, attempts = ?, next_attempt_at = ?, last_attempt_at = ?, \
                     last_status = ?, last_error = ?, last_latency_ms = ?, finished_at = ?, lease_owner = NULL, lease_until = NULL \
                     WHERE id = ? AND state = 'delivering' AND lease_owner = ? AND lease_until = ?",
                );
                sqlx::query(update)
                    .bind(o.state).bind(o.attempt).bind(o.next_attempt_at).bind(o.started_at)
                    .bind(o.status).bind(o.error.as_deref()).bind(o.latency_ms).bind(o.finished_at)
                    .bind(*id).bind(node).bind(o.lease_until)
                    .execute(&mut *tx).await?;
            }
            for chunk in outcomes.chunks(ROWS_PER_INSERT) {
                let insert = s.sql_rows(
                    "INSERT INTO rtcplane_webhook_attempts (delivery_id, attempt, started_at, status, latency_ms, error, node) VALUES ",
                    "(?, ?, ?, ?, ?, ?, ?)",
                    chunk.len(),
                );
                let mut q = sqlx::query(insert);
                for (id, o) in chunk {
                    q = q.bind(*id).bind(o.attempt).bind(o.started_at).bind(o.status).bind(o.latency_ms)
                        .bind(o.error.clone()).bind(node.to_owned());
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await
        }.await)
    }

    /// Gives a lease back untried (shutdown): the delivery is due again at once.
    pub(crate) async fn release(&self, id: i64, node: &str) -> Result<(), sqlx::Error> {
        let sql = self.storage.sql(
            "UPDATE rtcplane_webhook_deliveries SET state = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE id = ? AND state = 'delivering' AND lease_owner = ?",
        );
        with_pool!(self.storage, p => sqlx::query(sql).bind(id).bind(node).execute(p).await.map(|_| ()))
    }

    /// Gives back every lease `node` holds (a restart after a crash); returns how many.
    pub(crate) async fn release_all(&self, node: &str) -> Result<u64, sqlx::Error> {
        let sql = self.storage.sql(
            "UPDATE rtcplane_webhook_deliveries SET state = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE state = 'delivering' AND lease_owner = ?",
        );
        with_pool!(self.storage, p => sqlx::query(sql).bind(node).execute(p).await.map(|r| r.rows_affected()))
    }

    /// The delivery log of an endpoint, newest first, optionally of one state, before id `before`.
    pub(crate) async fn deliveries(
        &self,
        endpoint_id: &str,
        state: Option<&str>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, sqlx::Error> {
        let sql = self.storage.sql(
            "SELECT id, endpoint_id, event_id, event_type, subject, state, attempts, created_at, next_attempt_at, \
             last_attempt_at, last_status, last_error, last_latency_ms, finished_at, replay_of \
             FROM rtcplane_webhook_deliveries WHERE endpoint_id = ? AND id < ? AND (? = '' OR state = ?) \
             ORDER BY id DESC LIMIT ?",
        );
        let state = state.unwrap_or_default();
        with_pool!(self.storage, p => {
            let rows = sqlx::query(sql).bind(endpoint_id).bind(before).bind(state).bind(state).bind(limit)
                .fetch_all(p).await?;
            rows.iter().map(delivery_from_row).collect()
        })
    }

    /// One delivery of an endpoint with its attempts, oldest first.
    pub(crate) async fn delivery(
        &self,
        endpoint_id: &str,
        id: i64,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, sqlx::Error> {
        let one = self.storage.sql(
            "SELECT id, endpoint_id, event_id, event_type, subject, state, attempts, created_at, next_attempt_at, \
             last_attempt_at, last_status, last_error, last_latency_ms, finished_at, replay_of \
             FROM rtcplane_webhook_deliveries WHERE endpoint_id = ? AND id = ?",
        );
        let attempts = self.storage.sql(
            "SELECT attempt, started_at, status, latency_ms, error, node FROM rtcplane_webhook_attempts \
             WHERE delivery_id = ? ORDER BY id",
        );
        with_pool!(self.storage, p => {
            let Some(row) = sqlx::query(one).bind(endpoint_id).bind(id).fetch_optional(p).await? else {
                return Ok(None);
            };
            let d = delivery_from_row(&row)?;
            let rows = sqlx::query(attempts).bind(id).fetch_all(p).await?;
            let list = rows.iter().map(|r| Ok(AttemptRecord {
                attempt: r.try_get("attempt")?,
                started_at: r.try_get("started_at")?,
                status: r.try_get("status")?,
                latency_ms: r.try_get("latency_ms")?,
                error: r.try_get("error")?,
                node: r.try_get("node")?,
            })).collect::<Result<Vec<_>, sqlx::Error>>()?;
            Ok(Some((d, list)))
        })
    }

    /// Inserts one delivery and returns its id.
    pub(crate) async fn insert_delivery(
        &self,
        d: &NewDelivery<'_>,
        now: i64,
    ) -> Result<i64, sqlx::Error> {
        let s = &self.storage;
        let subject = d.subject.as_deref().map(|s| truncate(s, 255));
        match s.backend() {
            Backend::MySql => {
                let sql = s.sql(
                    "INSERT INTO rtcplane_webhook_deliveries (endpoint_id, event_id, event_type, subject, state, attempts, created_at, next_attempt_at, replay_of) \
                     VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                );
                let rtcplane_storage::Pool::MySql(p) = s.pool() else {
                    return Err(sqlx::Error::Protocol("backend mismatch".into()));
                };
                let r = sqlx::query(sql)
                    .bind(d.endpoint_id)
                    .bind(&d.event_id)
                    .bind(d.event_type)
                    .bind(subject)
                    .bind(now)
                    .bind(now)
                    .bind(d.replay_of)
                    .execute(p)
                    .await?;
                i64::try_from(r.last_insert_id())
                    .map_err(|e| sqlx::Error::Protocol(format!("insert id: {e}")))
            }
            Backend::Sqlite | Backend::Postgres => {
                let sql = s.sql(
                    "INSERT INTO rtcplane_webhook_deliveries (endpoint_id, event_id, event_type, subject, state, attempts, created_at, next_attempt_at, replay_of) \
                     VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?) RETURNING id",
                );
                with_pool!(s, p => sqlx::query_scalar::<_, i64>(sql)
                    .bind(d.endpoint_id).bind(&d.event_id).bind(d.event_type).bind(subject)
                    .bind(now).bind(now).bind(d.replay_of)
                    .fetch_one(p).await)
            }
        }
    }

    /// Outbox depth (unfinished deliveries) and the creation time of the oldest.
    pub(crate) async fn backlog(&self) -> Result<(i64, Option<i64>), sqlx::Error> {
        let sql = self.storage.sql(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM rtcplane_webhook_deliveries \
             WHERE state = 'pending' OR state = 'delivering'",
        );
        with_pool!(self.storage, p => {
            let row = sqlx::query(sql).fetch_one(p).await?;
            Ok((row.try_get("n")?, row.try_get("oldest")?))
        })
    }
}
