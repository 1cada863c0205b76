//! The stored event log: a recorder task writes every event this node publishes to the database (with the
//! webhook deliveries each one owes, in the same transaction), a sweeper applies `events.retention`, and
//! [`EventLog`] reads it back for SSE resume.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::metrics as m;
use super::store::{NewDelivery, Store};
use super::webhooks::Webhooks;
use crate::Event;

/// Reading the stored log.
#[derive(Clone, Debug)]
pub struct EventLog {
    store: Store,
    flush: mpsc::Sender<oneshot::Sender<()>>,
}

/// Where a resumed stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    /// Replay events stored after this log position.
    pub after: i64,
    /// False when the given event is no longer stored (older than `events.retention`) and the position
    /// was found from the time inside its UUIDv7 instead: some events may be missing.
    pub exact: bool,
}

/// Errors reading the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The id is not one this log could have issued.
    #[error("{0:?} is not an event id (a UUID this server sent)")]
    InvalidId(String),
    /// The database failed.
    #[error("reading the event log: {0}")]
    Storage(#[from] sqlx::Error),
}

impl EventLog {
    /// Waits until every event this node published before the call is stored (or `timeout` passes; false).
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.flush.send(tx).await.ok()?;
            rx.await.ok()
        };
        matches!(tokio::time::timeout(timeout, asked).await, Ok(Some(())))
    }

    /// Where to resume after the event `last_event_id` (an SSE `Last-Event-ID`).
    pub async fn resume_point(&self, last_event_id: &str) -> Result<ResumePoint, LogError> {
        let id = Uuid::parse_str(last_event_id.trim())
            .map_err(|_| LogError::InvalidId(last_event_id.to_owned()))?;
        if let Some(seq) = self.store.seq_of(&id.to_string()).await? {
            return Ok(ResumePoint {
                after: seq,
                exact: true,
            });
        }
        let Some(ts) = id.get_timestamp().filter(|_| id.get_version_num() == 7) else {
            return Err(LogError::InvalidId(last_event_id.to_owned()));
        };
        let (secs, nanos) = ts.to_unix();
        let ms = i64::try_from(secs)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000)
            + i64::from(nanos / 1_000_000);
        Ok(ResumePoint {
            after: self.store.seq_before_time(ms).await?,
            exact: false,
        })
    }

    /// Up to `limit` stored events after position `after`, in log order, with their positions.
    pub async fn read_after(&self, after: i64, limit: i64) -> Result<Vec<(i64, Event)>, LogError> {
        let rows = self.store.after(after, limit).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, body)| match Event::from_json(body.as_bytes()) {
                Ok(e) => Some((seq, e)),
                Err(e) => {
                    tracing::warn!(seq, error = %e, "skipping an unreadable stored event");
                    None
                }
            })
            .collect())
    }
}

pub(crate) struct Recorder {
    pub(crate) store: Store,
    pub(crate) rx: mpsc::Receiver<Arc<Event>>,
    pub(crate) flush_rx: mpsc::Receiver<oneshot::Sender<()>>,
    pub(crate) webhooks: Option<Webhooks>,
    pub(crate) batch_max: usize,
}

pub(crate) fn log_handle(store: Store) -> (EventLog, mpsc::Receiver<oneshot::Sender<()>>) {
    let (flush, flush_rx) = mpsc::channel(64);
    (EventLog { store, flush }, flush_rx)
}

/// Shortest time between two recorder transactions while events keep coming.
const BATCH_INTERVAL: Duration = Duration::from_millis(10);

impl Recorder {
    /// Runs until `shutdown`, then stores what is already queued and stops.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut batch: Vec<Arc<Event>> = Vec::with_capacity(self.batch_max);
        // At most one transaction per BATCH_INTERVAL while events keep coming: an event that arrives after
        // a quiet spell is stored at once, but under load (thousands per second) they queue for the rest of
        // the interval and go in one transaction instead of one each.
        let mut last_store: Option<tokio::time::Instant> = None;
        loop {
            let mut waiters = Vec::new();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    self.drain_and_store(&mut batch, None).await;
                    tracing::debug!("event recorder stopped");
                    return;
                }
                ev = self.rx.recv() => match ev {
                    Some(e) => batch.push(e),
                    None => return,
                },
                req = self.flush_rx.recv() => {
                    if let Some(r) = req {
                        waiters.push(r);
                    }
                }
            }
            if let Some(last) = last_store
                && waiters.is_empty()
                && batch.len() < self.batch_max
            {
                let due = last + BATCH_INTERVAL;
                if due > tokio::time::Instant::now() {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
            }
            self.drain_and_store(&mut batch, Some(&shutdown)).await;
            last_store = Some(tokio::time::Instant::now());
            for w in waiters {
                let _ = w.send(());
            }
        }
    }

    /// Stores `batch` and everything queued behind it, in batches of `batch_max`.
    async fn drain_and_store(
        &mut self,
        batch: &mut Vec<Arc<Event>>,
        shutdown: Option<&CancellationToken>,
    ) {
        loop {
            while batch.len() < self.batch_max {
                match self.rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.store_batch(batch, shutdown).await;
            batch.clear();
        }
    }

    /// Writes one batch, retrying with backoff while the database is unreachable (events keep queueing
    /// behind it). A batch the database refuses (a constraint or data error, which no retry fixes) is split
    /// and stored event by event, so one bad event is dropped (logged, counted) instead of stopping the log.
    /// After a failed commit whose outcome is unknown, the batch is not written twice.
    async fn store_batch(&self, batch: &[Arc<Event>], shutdown: Option<&CancellationToken>) {
        let mut delay = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            match self.try_store(batch).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(failures, "storing events works again");
                    }
                    return;
                }
                Err(sqlx::Error::Database(e)) => {
                    metrics::counter!(m::EVENTS_STORE_ERRORS).increment(1);
                    if batch.len() == 1 {
                        metrics::counter!(m::EVENTS_LOST).increment(1);
                        tracing::error!(error = %e, event = %batch[0].id, ty = %batch[0].ty, "the database refuses this event; dropped");
                        return;
                    }
                    tracing::warn!(error = %e, events = batch.len(), "the database refused a batch; storing its events one by one");
                    for one in batch {
                        Box::pin(self.store_batch(std::slice::from_ref(one), shutdown)).await;
                    }
                    return;
                }
                Err(e) => {
                    metrics::counter!(m::EVENTS_STORE_ERRORS).increment(1);
                    if failures == 0 {
                        tracing::warn!(error = %e, events = batch.len(), "cannot store events; retrying (they stay queued)");
                    }
                    failures += 1;
                    // The commit may have happened before the connection broke.
                    if let Ok(Some(_)) = self.store.seq_of(&batch[0].id.to_string()).await {
                        return;
                    }
                    let stopping = shutdown.is_none_or(CancellationToken::is_cancelled);
                    if stopping && failures >= 3 {
                        // Shutting down: a few tries, then the batch is lost (and said so).
                        metrics::counter!(m::EVENTS_LOST).increment(batch.len() as u64);
                        tracing::error!(error = %e, events = batch.len(), "events not stored at shutdown");
                        return;
                    }
                    match shutdown {
                        Some(token) if !stopping => {
                            tokio::select! {
                                () = token.cancelled() => {}
                                () = tokio::time::sleep(delay) => {}
                            }
                        }
                        _ => tokio::time::sleep(delay).await,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One attempt: the events and the deliveries they owe, in one transaction.
    async fn try_store(&self, batch: &[Arc<Event>]) -> Result<(), sqlx::Error> {
        let mut deliveries = Vec::new();
        if let Some(w) = &self.webhooks {
            for e in batch {
                for endpoint_id in w.matching(e) {
                    deliveries.push((endpoint_id, e.clone()));
                }
            }
        }
        let rows: Vec<NewDelivery<'_>> = deliveries
            .iter()
            .map(|(endpoint, e)| NewDelivery {
                endpoint_id: endpoint.as_str(),
                event_id: e.id.to_string(),
                event_type: e.ty.as_str(),
                subject: e.subject.clone(),
                replay_of: None,
            })
            .collect();
        let start = tokio::time::Instant::now();
        let now = chrono::Utc::now().timestamp_millis();
        self.store.record(batch, &rows, now).await?;
        metrics::counter!(m::EVENTS_STORED).increment(batch.len() as u64);
        metrics::histogram!(m::EVENTS_STORE_SECONDS).record(start.elapsed().as_secs_f64());
        if !rows.is_empty()
            && let Some(w) = &self.webhooks
        {
            w.wake();
        }
        Ok(())
    }
}

/// Deletes what `events.retention` no longer keeps, every minute (or every tenth of the retention).
pub(crate) async fn sweeper(store: Store, retention: Duration, shutdown: CancellationToken) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let cutoff = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        match store.sweep(cutoff).await {
            Ok((events, deliveries)) if events + deliveries > 0 => {
                tracing::debug!(events, deliveries, "event log swept");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping the event log failed"),
        }
    }
}
