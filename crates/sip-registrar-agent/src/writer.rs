//! The status writer: coalesces status rows per subscriber and writes them in batched transactions, so
//! 20,000 registrations cost a few hundred commits, not 20,000. A failing database is retried with backoff;
//! rows keep coalescing meanwhile (the latest state of each subscriber wins), so nothing is lost and nothing
//! is written twice. It stops after its sender is dropped and everything pending is written (or the
//! database has failed for `give_up`).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::db::{Db, StatusRow};
use crate::metrics as m;

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Write this row (created if missing).
    Row(StatusRow),
    /// Delete the subscriber's status row.
    Delete(i64),
}

const BATCH: usize = 2000;
const LINGER: Duration = Duration::from_millis(50);

/// Runs the writer until `rx` closes and the backlog is written.
pub async fn run(
    db: Db,
    mut rx: mpsc::UnboundedReceiver<WriteOp>,
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut pending: HashMap<i64, WriteOp> = HashMap::new();
    let mut closed = false;
    let mut backoff = Duration::from_millis(200);
    let mut failing_since: Option<Instant> = None;
    loop {
        if pending.is_empty() {
            if closed {
                return;
            }
            match rx.recv().await {
                Some(op) => add(&mut pending, op),
                None => return,
            }
        }
        // Linger briefly so that a burst becomes one transaction.
        let until = Instant::now() + LINGER;
        while !closed && pending.len() < BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(op)) => add(&mut pending, op),
                Ok(None) => closed = true,
                Err(_) => break,
            }
        }
        let mut rows = Vec::new();
        let mut deletes = Vec::new();
        for op in pending.values() {
            match op {
                WriteOp::Row(r) => rows.push(r.clone()),
                WriteOp::Delete(id) => deletes.push(*id),
            }
        }
        rows.sort_by_key(|r| r.subscriber_id);
        deletes.sort_unstable();
        let started = Instant::now();
        match db.write(&rows, &deletes).await {
            Ok(()) => {
                metrics::histogram!(m::WRITE_SECONDS).record(started.elapsed().as_secs_f64());
                metrics::counter!(m::ROWS_WRITTEN).increment((rows.len() + deletes.len()) as u64);
                pending.clear();
                backoff = Duration::from_millis(200);
                failing_since = None;
                healthy.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                metrics::counter!(m::WRITE_ERRORS).increment(1);
                healthy.store(false, std::sync::atomic::Ordering::Relaxed);
                let since = *failing_since.get_or_insert_with(Instant::now);
                tracing::warn!(error = %e, rows = pending.len(), "sip status write failed; retrying");
                if closed && since.elapsed() > Duration::from_secs(10) {
                    tracing::error!(
                        rows = pending.len(),
                        "sip status not saved at shutdown: database unavailable"
                    );
                    return;
                }
                // Keep taking new rows while waiting.
                let until = Instant::now() + backoff;
                while !closed {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(op)) => add(&mut pending, op),
                        Ok(None) => closed = true,
                        Err(_) => break,
                    }
                }
                if closed {
                    tokio::time::sleep_until(until).await;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn add(pending: &mut HashMap<i64, WriteOp>, op: WriteOp) {
    let id = match &op {
        WriteOp::Row(r) => r.subscriber_id,
        WriteOp::Delete(id) => *id,
    };
    pending.insert(id, op);
}
