//! Outbound webhooks: endpoints (from config and from the API), the dispatcher that leases due deliveries
//! from the outbox and POSTs them signed, retries with exponential backoff and jitter, dead letter, and
//! replay.
//!
//! A delivery is leased (`state = 'delivering'`, `lease_owner`, `lease_until`) with one conditional UPDATE,
//! so on a shared database each delivery is attempted by one node at a time; a lease that runs out (its node
//! died) makes the delivery due again. On shutdown, in-flight attempts are abandoned and their leases given
//! back, so the outbox is left consistent and a restart delivers them at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::ToSchema;

use super::config::{WebhooksConfig, validate_id, validate_url};
use super::metrics as m;
use super::signing::Secret;
use super::store::{
    AttemptRecord, DEAD, DELIVERED, DELIVERING, DeliveryRecord, Due, EndpointRecord, NewDelivery,
    Outcome, PENDING, Store,
};
use crate::{Event, TypeFilter};

/// Most events one range replay re-enqueues.
pub const REPLAY_LIMIT: i64 = 100_000;

/// The handle to webhooks: fan-out for the recorder, management for the API.
#[derive(Clone, Debug)]
pub struct Webhooks {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Store,
    config: WebhooksConfig,
    node: String,
    client: reqwest::Client,
    live: RwLock<Arc<Vec<Arc<Live>>>>,
    wake: Notify,
}

#[derive(Debug)]
struct Live {
    record: EndpointRecord,
    filter: TypeFilter,
    secret: Secret,
    slots: Arc<Semaphore>,
}

/// What the API can get wrong.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No such endpoint or delivery.
    #[error("{0}")]
    NotFound(String),
    /// The endpoint is defined in the config file.
    #[error(
        "endpoint {0:?} is defined in the config file ([[webhooks.endpoints]]); change it there"
    )]
    ReadOnly(String),
    /// A field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The JSON field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An endpoint with this id exists.
    #[error("an endpoint with id {0:?} already exists")]
    Conflict(String),
    /// The event of a delivery left the log (`events.retention`).
    #[error("event {0} is no longer in the stored log (events.retention)")]
    Gone(String),
    /// The database failed.
    #[error("webhook storage: {0}")]
    Storage(#[from] sqlx::Error),
}

/// A new endpoint (`POST /api/v1/webhooks`).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Optional id (1 to 64 of `[A-Za-z0-9._-]`); a UUID when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// `http://` or `https://` URL.
    pub url: String,
    /// `whsec_<base64>`; generated (and returned once) when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// Event type globs; empty or absent for every event.
    #[serde(default)]
    pub events: Vec<String>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Deliveries in flight at once; `webhooks.max_in_flight` when absent.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// Changes to an endpoint (`PATCH /api/v1/webhooks/{id}`); absent fields stay.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    /// New URL.
    #[serde(default)]
    pub url: Option<String>,
    /// New secret (`whsec_…`).
    #[serde(default)]
    pub secret: Option<String>,
    /// New type globs.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Enable or disable.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// New concurrency limit.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A delivery with its attempts.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: DeliveryRecord,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<AttemptRecord>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Webhooks {
    /// Builds the handle: syncs `[[webhooks.endpoints]]` into the database (config endpoints no longer in the
    /// file are removed) and loads every endpoint.
    pub(crate) async fn new(
        config: WebhooksConfig,
        store: Store,
        node: &str,
    ) -> Result<Self, WebhookError> {
        // reqwest's rustls needs a process-wide provider: the workspace's one, ring. Already set is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rtcplane-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Invalid {
                field: "client",
                message: e.to_string(),
            })?;
        let this = Self {
            shared: Arc::new(Shared {
                store,
                config,
                node: node.to_owned(),
                client,
                live: RwLock::new(Arc::new(Vec::new())),
                wake: Notify::new(),
            }),
        };
        this.sync_config().await?;
        this.reload().await?;
        Ok(this)
    }

    async fn sync_config(&self) -> Result<(), WebhookError> {
        let s = &self.shared;
        let now = now_ms();
        let existing: HashMap<String, EndpointRecord> = s
            .store
            .endpoints()
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let mut wanted = std::collections::HashSet::new();
        for c in &s.config.endpoints {
            let id = c.effective_id();
            wanted.insert(id.clone());
            let mut record = EndpointRecord {
                id: id.clone(),
                url: c.url.clone(),
                secret: c.secret.clone(),
                events: c.events.clone(),
                enabled: c.enabled,
                max_in_flight: c.max_in_flight.unwrap_or(s.config.max_in_flight),
                origin: "config".into(),
                description: c.description.clone(),
                created_at: now,
                updated_at: now,
            };
            match existing.get(&id) {
                None => s.store.insert_endpoint(&record).await?,
                Some(old) => {
                    record.created_at = old.created_at;
                    let unchanged = EndpointRecord {
                        updated_at: old.updated_at,
                        ..record.clone()
                    } == *old;
                    if !unchanged {
                        s.store.update_endpoint(&record).await?;
                    }
                }
            }
        }
        for (id, e) in existing {
            if e.origin == "config" && !wanted.contains(&id) {
                tracing::info!(endpoint = %id, "webhook endpoint removed from the config file: deleting it and its deliveries");
                s.store.delete_endpoint(&id).await?;
            }
        }
        Ok(())
    }

    /// Re-reads endpoints from the database.
    pub(crate) async fn reload(&self) -> Result<(), WebhookError> {
        let records = self.shared.store.endpoints().await?;
        let old = self.snapshot();
        let mut live = Vec::with_capacity(records.len());
        for record in records {
            let (Ok(filter), Ok(secret)) = (
                TypeFilter::from_patterns(&record.events),
                Secret::parse(&record.secret),
            ) else {
                tracing::warn!(endpoint = %record.id, "stored webhook endpoint has an invalid filter or secret; skipped");
                continue;
            };
            // Keep the in-flight accounting of an endpoint whose limit did not change.
            let slots = old
                .iter()
                .find(|o| {
                    o.record.id == record.id && o.record.max_in_flight == record.max_in_flight
                })
                .map_or_else(
                    || Arc::new(Semaphore::new(record.max_in_flight.max(1) as usize)),
                    |o| o.slots.clone(),
                );
            live.push(Arc::new(Live {
                record,
                filter,
                secret,
                slots,
            }));
        }
        match self.shared.live.write() {
            Ok(mut guard) => *guard = Arc::new(live),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(live),
        }
        self.wake();
        Ok(())
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Live>>> {
        match self.shared.live.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Ids of the enabled endpoints that want `event`.
    pub(crate) fn matching(&self, event: &Event) -> Vec<String> {
        self.snapshot()
            .iter()
            .filter(|l| l.record.enabled && l.filter.matches(&event.ty))
            .map(|l| l.record.id.clone())
            .collect()
    }

    /// Makes the dispatcher look at the outbox now.
    pub(crate) fn wake(&self) {
        self.shared.wake.notify_one();
    }

    // ----- management (the admin API) -----

    /// Every endpoint.
    pub async fn list(&self) -> Result<Vec<EndpointRecord>, WebhookError> {
        Ok(self.shared.store.endpoints().await?)
    }

    /// One endpoint.
    pub async fn get(&self, id: &str) -> Result<EndpointRecord, WebhookError> {
        self.shared
            .store
            .endpoint(id)
            .await?
            .ok_or_else(|| WebhookError::NotFound(format!("no webhook endpoint {id:?}")))
    }

    /// Creates an endpoint; returns it and its secret.
    pub async fn create(&self, new: NewEndpoint) -> Result<(EndpointRecord, String), WebhookError> {
        let id = match new.id {
            Some(id) => {
                validate_id(&id).map_err(|message| WebhookError::Invalid {
                    field: "id",
                    message,
                })?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        let secret = new.secret.unwrap_or_else(Secret::generate);
        let now = now_ms();
        let record = EndpointRecord {
            id: id.clone(),
            url: new.url,
            secret: secret.clone(),
            events: new.events,
            enabled: new.enabled.unwrap_or(true),
            max_in_flight: new
                .max_in_flight
                .unwrap_or(self.shared.config.max_in_flight),
            origin: "api".into(),
            description: new.description.unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        check(&record)?;
        if self.shared.store.endpoint(&id).await?.is_some() {
            return Err(WebhookError::Conflict(id));
        }
        match self.shared.store.insert_endpoint(&record).await {
            Ok(()) => {}
            // Created concurrently under the same id.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(WebhookError::Conflict(id));
            }
            Err(e) => return Err(e.into()),
        }
        self.reload().await?;
        Ok((record, secret))
    }

    /// Changes an API endpoint.
    pub async fn update(
        &self,
        id: &str,
        patch: EndpointPatch,
    ) -> Result<EndpointRecord, WebhookError> {
        let mut record = self.get(id).await?;
        if record.origin == "config" {
            return Err(WebhookError::ReadOnly(id.to_owned()));
        }
        if let Some(v) = patch.url {
            record.url = v;
        }
        if let Some(v) = patch.secret {
            record.secret = v;
        }
        if let Some(v) = patch.events {
            record.events = v;
        }
        if let Some(v) = patch.enabled {
            record.enabled = v;
        }
        if let Some(v) = patch.max_in_flight {
            record.max_in_flight = v;
        }
        if let Some(v) = patch.description {
            record.description = v;
        }
        record.updated_at = now_ms();
        check(&record)?;
        self.shared.store.update_endpoint(&record).await?;
        self.reload().await?;
        Ok(record)
    }

    /// Deletes an API endpoint and its delivery log.
    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let record = self.get(id).await?;
        if record.origin == "config" {
            return Err(WebhookError::ReadOnly(id.to_owned()));
        }
        self.shared.store.delete_endpoint(id).await?;
        self.reload().await
    }

    /// The delivery log of an endpoint, newest first.
    pub async fn deliveries(
        &self,
        id: &str,
        state: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, WebhookError> {
        self.get(id).await?;
        if let Some(s) = state
            && ![PENDING, DELIVERING, DELIVERED, DEAD].contains(&s)
        {
            return Err(WebhookError::Invalid {
                field: "state",
                message: format!("{s:?} is not one of pending, delivering, delivered, dead"),
            });
        }
        Ok(self
            .shared
            .store
            .deliveries(id, state, before.unwrap_or(i64::MAX), limit.clamp(1, 1000))
            .await?)
    }

    /// One delivery with its attempts.
    pub async fn delivery(&self, id: &str, delivery: i64) -> Result<DeliveryDetail, WebhookError> {
        let (delivery, attempt_log) =
            self.shared
                .store
                .delivery(id, delivery)
                .await?
                .ok_or_else(|| {
                    WebhookError::NotFound(format!("no delivery {delivery} for endpoint {id:?}"))
                })?;
        Ok(DeliveryDetail {
            delivery,
            attempt_log,
        })
    }

    /// Delivers the event of one delivery again, as a new delivery; returns the new one.
    pub async fn replay(&self, id: &str, delivery: i64) -> Result<DeliveryRecord, WebhookError> {
        let old = self.delivery(id, delivery).await?.delivery;
        if self.shared.store.seq_of(&old.event_id).await?.is_none() {
            return Err(WebhookError::Gone(old.event_id));
        }
        let new_id = self
            .shared
            .store
            .insert_delivery(
                &NewDelivery {
                    endpoint_id: id,
                    event_id: old.event_id.clone(),
                    event_type: &old.event_type,
                    subject: old.subject.clone(),
                    replay_of: Some(old.id),
                },
                now_ms(),
            )
            .await?;
        self.wake();
        Ok(self.delivery(id, new_id).await?.delivery)
    }

    /// Delivers again every stored event between two times (unix ms, inclusive) that the endpoint's filter
    /// accepts; returns how many deliveries were queued (at most [`REPLAY_LIMIT`]).
    pub async fn replay_range(
        &self,
        id: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<u64, WebhookError> {
        let record = self.get(id).await?;
        if until_ms < since_ms {
            return Err(WebhookError::Invalid {
                field: "until",
                message: "is before `since`".into(),
            });
        }
        let filter =
            TypeFilter::from_patterns(&record.events).map_err(|e| WebhookError::Invalid {
                field: "events",
                message: e.to_string(),
            })?;
        let events = self
            .shared
            .store
            .between(since_ms, until_ms, REPLAY_LIMIT)
            .await?;
        let rows: Vec<NewDelivery<'_>> = events
            .iter()
            .filter(|(_, ty, _)| filter.matches(ty))
            .map(|(event_id, ty, subject)| NewDelivery {
                endpoint_id: id,
                event_id: event_id.clone(),
                event_type: ty.as_str(),
                subject: subject.clone(),
                replay_of: None,
            })
            .collect();
        self.shared.store.record(&[], &rows, now_ms()).await?;
        self.wake();
        Ok(rows.len() as u64)
    }
}

fn check(record: &EndpointRecord) -> Result<(), WebhookError> {
    validate_url(&record.url).map_err(|message| WebhookError::Invalid {
        field: "url",
        message,
    })?;
    Secret::parse(&record.secret).map_err(|message| WebhookError::Invalid {
        field: "secret",
        message,
    })?;
    TypeFilter::from_patterns(&record.events).map_err(|e| WebhookError::Invalid {
        field: "events",
        message: e.to_string(),
    })?;
    if record.max_in_flight == 0 || record.max_in_flight > 1000 {
        return Err(WebhookError::Invalid {
            field: "max_in_flight",
            message: "must be 1 to 1000".into(),
        });
    }
    if record.secret.len() > 255 {
        return Err(WebhookError::Invalid {
            field: "secret",
            message: "is longer than 255 bytes".into(),
        });
    }
    if record.description.len() > 1024 {
        return Err(WebhookError::Invalid {
            field: "description",
            message: "is longer than 1024 bytes".into(),
        });
    }
    Ok(())
}

// ----- the dispatcher -----

/// Runs the dispatcher until `shutdown`: leases due deliveries and attempts them, at most
/// `max_in_flight` at once per endpoint.
pub(crate) async fn dispatcher(
    webhooks: Webhooks,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let s = webhooks.shared.clone();
    match s.store.release_all(&s.node).await {
        Ok(n) if n > 0 => {
            tracing::info!(
                deliveries = n,
                "took back webhook leases this node held before it stopped"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot release this node's old webhook leases"),
    }
    // Outcomes are written by one task, many per transaction: far fewer commits than one per attempt, which
    // matters most on SQLite (one writer at a time).
    let (outcomes, outcomes_rx) = mpsc::channel::<(i64, Outcome)>(4096);
    tasks.spawn(writer(webhooks.clone(), outcomes_rx));
    let mut poll = tokio::time::interval(s.config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval(s.config.refresh_interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = s.wake.notified() => {}
            _ = poll.tick() => {}
            _ = refresh.tick() => {
                if let Err(e) = webhooks.reload().await {
                    tracing::warn!(error = %e, "cannot re-read webhook endpoints");
                }
            }
        }
        // Keep going while pages come back full and slots are free.
        loop {
            match round(&webhooks, &shutdown, &tasks, &outcomes).await {
                Ok(more) => {
                    if failing {
                        tracing::info!("webhook outbox readable again");
                        failing = false;
                    }
                    if !more || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the webhook outbox; retrying");
                        failing = true;
                    }
                    break;
                }
            }
        }
    }
}

/// One pass over the endpoints; true if some endpoint may have more due work right now.
async fn round(
    webhooks: &Webhooks,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
    outcomes: &mpsc::Sender<(i64, Outcome)>,
) -> Result<bool, sqlx::Error> {
    let s = &webhooks.shared;
    let mut more = false;
    for live in webhooks.snapshot().iter().filter(|l| l.record.enabled) {
        let free = live.slots.available_permits();
        if free == 0 {
            continue;
        }
        let now = now_ms();
        let due = s.store.due(&live.record.id, now, free as i64).await?;
        if due.is_empty() {
            continue;
        }
        let full = due.len() == free;
        let lease_until = now + ms(s.config.timeout) + 30_000;
        let ids: Vec<i64> = due.iter().map(|d| d.id).collect();
        let claimed = s.store.claim(&ids, &s.node, lease_until, now).await?;
        for d in due.into_iter().filter(|d| claimed.contains(&d.id)) {
            let Ok(permit) = live.slots.clone().try_acquire_owned() else {
                // Cannot happen (one dispatcher per node takes permits); give the lease back.
                let _ = s.store.release(d.id, &s.node).await;
                continue;
            };
            let webhooks = webhooks.clone();
            let live = live.clone();
            let shutdown = shutdown.clone();
            let outcomes = outcomes.clone();
            tasks.spawn(async move {
                let outcome = attempt(&webhooks, &live, &d, lease_until, &shutdown).await;
                drop(permit);
                if let Some(o) = outcome {
                    let _ = outcomes.send((d.id, o)).await;
                }
            });
        }
        more |= full;
    }
    Ok(more)
}

/// Writes attempt outcomes, batching whatever is queued into one transaction, then wakes the dispatcher
/// (the next delivery of a subject becomes due once the previous one is recorded). Ends when every sender is
/// gone (the dispatcher and its attempts have stopped), after writing what they sent.
async fn writer(webhooks: Webhooks, mut rx: mpsc::Receiver<(i64, Outcome)>) {
    let s = &webhooks.shared;
    let mut batch = Vec::with_capacity(256);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        // The outcome must not be lost to a passing database error: retry a little, else the leases expire
        // and the deliveries are attempted again (at least once).
        for delay in [50u64, 250, 1000, 0] {
            match s.store.finish(&s.node, &batch).await {
                Ok(()) => break,
                Err(e) if delay == 0 => {
                    tracing::warn!(deliveries = batch.len(), error = %e, "cannot record webhook attempts; those deliveries will be retried when their leases expire");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(delay)).await,
            }
        }
        batch.clear();
        webhooks.wake();
    }
}

/// One attempt of one leased delivery, and its recorded outcome.
async fn attempt(
    webhooks: &Webhooks,
    live: &Live,
    d: &Due,
    lease_until: i64,
    shutdown: &CancellationToken,
) -> Option<Outcome> {
    let s = &webhooks.shared;
    let attempt = d.attempts + 1;
    let started_at = now_ms();
    let clock = tokio::time::Instant::now();
    let (status, error, retry_after) = match &d.body {
        None => (
            None,
            Some("the event is no longer in the stored log (events.retention)".to_owned()),
            None,
        ),
        Some(body) => {
            let timestamp = chrono::Utc::now().timestamp();
            let signature = live.secret.sign(&d.event_id, timestamp, body.as_bytes());
            let request = s
                .client
                .post(&live.record.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("webhook-id", &d.event_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body.clone())
                .send();
            let response = tokio::select! {
                r = request => r,
                () = shutdown.cancelled() => {
                    if let Err(e) = s.store.release(d.id, &s.node).await {
                        tracing::warn!(delivery = d.id, error = %e, "cannot give back a webhook lease at shutdown; it expires by itself");
                    }
                    return None;
                }
            };
            match response {
                Ok(resp) if resp.status().is_success() => {
                    (Some(resp.status().as_u16()), None, None)
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let snippet = body_snippet(resp).await;
                    (
                        Some(status.as_u16()),
                        Some(format!("HTTP {status}{snippet}")),
                        retry_after,
                    )
                }
                Err(e) => (None, Some(describe(&e)), None),
            }
        }
    };
    let latency = clock.elapsed();
    metrics::histogram!(m::WEBHOOK_ATTEMPT_SECONDS).record(latency.as_secs_f64());
    let now = now_ms();
    let (state, next_attempt_at, finished_at, result) = if error.is_none() {
        (DELIVERED, now, Some(now), "delivered")
    } else {
        let wait = backoff(&s.config, attempt, retry_after);
        let next = now + ms(wait);
        let too_old = next > d.created_at.saturating_add(ms(s.config.max_age));
        if d.body.is_none() || attempt >= i64::from(s.config.max_attempts) || too_old {
            (DEAD, now, Some(now), "dead")
        } else {
            (PENDING, next, None, "retry")
        }
    };
    metrics::counter!(m::WEBHOOK_DELIVERIES, "result" => result).increment(1);
    if result == "dead" {
        tracing::warn!(endpoint = %live.record.id, delivery = d.id, attempts = attempt, error = error.as_deref().unwrap_or_default(), "webhook delivery dead-lettered");
    } else if result == "retry" {
        tracing::debug!(endpoint = %live.record.id, delivery = d.id, attempt, error = error.as_deref().unwrap_or_default(), "webhook delivery failed; will retry");
    }
    Some(Outcome {
        lease_until,
        state,
        attempt,
        started_at,
        status: status.map(i64::from),
        latency_ms: ms(latency),
        error,
        next_attempt_at,
        finished_at,
    })
}

/// Exponential backoff with equal jitter, at least `Retry-After`, at most `retry_max_interval`.
fn backoff(config: &WebhooksConfig, attempt: i64, retry_after: Option<Duration>) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = config
        .retry_initial
        .saturating_mul(1u32 << doublings)
        .min(config.retry_max_interval);
    let half = base / 2;
    let jitter = half.mul_f64(rand::random::<f64>());
    let wait = half + jitter;
    match retry_after {
        Some(r) => wait.max(r).min(config.retry_max_interval),
        None => wait,
    }
}

/// The start of an error response's body, for the delivery log.
async fn body_snippet(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < 200 {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(200);
    let text = String::from_utf8_lossy(&buf);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// A transport error with its root cause (`connection refused`, `operation timed out`).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{kind}: {cause}")
}

/// Keeps the backlog gauges current.
pub(crate) async fn backlog_gauges(store: Store, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok((depth, oldest)) = store.backlog().await {
            metrics::gauge!(m::WEBHOOK_QUEUE_DEPTH).set(depth as f64);
            let age = oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
            metrics::gauge!(m::WEBHOOK_OLDEST_PENDING).set(age);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let c = WebhooksConfig {
            retry_initial: Duration::from_secs(4),
            retry_max_interval: Duration::from_secs(60),
            ..WebhooksConfig::default()
        };
        for _ in 0..100 {
            let first = backoff(&c, 1, None);
            assert!(first >= Duration::from_secs(2) && first <= Duration::from_secs(4));
            let third = backoff(&c, 3, None);
            assert!(third >= Duration::from_secs(8) && third <= Duration::from_secs(16));
            let late = backoff(&c, 40, None);
            assert!(late >= Duration::from_secs(30) && late <= Duration::from_secs(60));
            let told = backoff(&c, 1, Some(Duration::from_secs(30)));
            assert_eq!(told, Duration::from_secs(30));
            let capped = backoff(&c, 1, Some(Duration::from_secs(3600)));
            assert_eq!(capped, Duration::from_secs(60));
        }
    }
}
