//! The Redis sink: every event of this node is published on `<prefix><type>` and appended to a capped
//! Redis Stream, in batches pipelined on the shared connection. While Redis is down the batch is retried
//! with backoff and new events queue behind it (up to `events.queue_capacity`, then counted as dropped), so
//! a short outage loses nothing; a retried batch may be seen twice by consumers (at least once).

use std::sync::Arc;
use std::time::Duration;

use rtcplane_storage::Redis;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::EventsConfig;
use super::metrics as m;
use crate::Event;

const BATCH: usize = 256;

pub(crate) async fn run(
    redis: Redis,
    config: EventsConfig,
    mut rx: mpsc::Receiver<Arc<Event>>,
    shutdown: CancellationToken,
) {
    let mut batch: Vec<Arc<Event>> = Vec::with_capacity(BATCH);
    loop {
        let stopping = tokio::select! {
            biased;
            () = shutdown.cancelled() => true,
            e = rx.recv() => match e {
                Some(e) => { batch.push(e); false }
                None => return,
            },
        };
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            return;
        }
        let mut delay = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            match send(&redis, &config, &batch).await {
                Ok(()) => {
                    metrics::counter!(m::REDIS_SINK_PUBLISHED).increment(batch.len() as u64);
                    if failures > 0 {
                        tracing::info!(failures, "publishing events to Redis works again");
                    }
                    break;
                }
                Err(e) => {
                    metrics::counter!(m::REDIS_SINK_ERRORS).increment(1);
                    if failures == 0 {
                        tracing::warn!(error = %e, "cannot publish events to Redis; retrying (they stay queued)");
                    }
                    failures += 1;
                    if stopping || shutdown.is_cancelled() {
                        metrics::counter!(m::EVENTS_LOST).increment(batch.len() as u64);
                        return;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
        if stopping && rx.is_empty() {
            return;
        }
    }
}

async fn send(redis: &Redis, config: &EventsConfig, batch: &[Arc<Event>]) -> Result<(), String> {
    let mut pipe = redis::pipe();
    for e in batch {
        let json = e.to_json();
        pipe.cmd("PUBLISH")
            .arg(format!("{}{}", config.redis_channel_prefix, e.ty))
            .arg(&json)
            .ignore();
        pipe.cmd("XADD")
            .arg(&config.redis_stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(config.redis_stream_maxlen)
            .arg("*")
            .arg("type")
            .arg(&e.ty)
            .arg("id")
            .arg(e.id.to_string())
            .arg("event")
            .arg(json)
            .ignore();
    }
    let mut conn = redis.connection();
    match tokio::time::timeout(Duration::from_secs(5), pipe.query_async::<()>(&mut conn)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}
