//! Where events go besides live subscribers (DESIGN.md §Events): the stored event log (SSE resume, webhook
//! payloads, replay), the durable webhook outbox, and the Redis sink.
//!
//! ```text
//! publish ──tap──▶ recorder ──one transaction──▶ rtcplane_events + rtcplane_webhook_deliveries
//!                                                             │
//!                                   dispatcher ◀── lease ─────┘ ──POST (signed)──▶ endpoint
//! publish ──tap──▶ redis sink ──PUBLISH rtcplane:events:<type> + XADD rtcplane:events
//! ```
//!
//! Each node stores and publishes only the events it published itself, so a cluster sharing one database
//! and one Redis stores each event once. An event is in the database before any delivery of it is tried.

mod config;
mod log;
mod metrics;
mod redis_sink;
mod signing;
mod store;
mod webhooks;

use std::time::Duration;

use rtcplane_storage::{Redis, Storage};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ConfigError, EndpointConfig, EventsConfig, WebhooksConfig};
pub use log::{EventLog, LogError, ResumePoint};
pub use signing::{SECRET_PREFIX, Secret};
pub use store::{AttemptRecord, DeliveryRecord, EndpointRecord};
pub use webhooks::{
    DeliveryDetail, EndpointPatch, NewEndpoint, REPLAY_LIMIT, WebhookError, Webhooks,
};

use crate::Bus;

/// The running sinks.
#[derive(Clone, Debug)]
pub struct Sinks {
    /// The stored event log.
    pub log: EventLog,
    /// Webhooks, when `webhooks.enabled`.
    pub webhooks: Option<Webhooks>,
}

/// What the sinks need at start.
#[derive(Debug)]
pub struct SinksContext<'a> {
    /// The bus whose events are stored.
    pub bus: &'a Bus,
    /// The main store.
    pub storage: &'a Storage,
    /// The shared Redis (`redis.url`), for the Redis sink.
    pub redis: Option<&'a Redis>,
    /// Stops the sinks; cancel it after the subsystems have stopped so their last events are stored.
    pub shutdown: CancellationToken,
    /// Where the sinks' tasks run.
    pub tasks: TaskTracker,
}

/// Starts the sinks. Call before anything publishes: only events published after this are stored.
pub async fn start(
    events: &EventsConfig,
    webhooks_config: &WebhooksConfig,
    ctx: SinksContext<'_>,
) -> Result<Sinks, WebhookError> {
    metrics::describe();
    let store = store::Store::new(ctx.storage.clone());
    let webhooks = if webhooks_config.enabled {
        Some(webhooks::Webhooks::new(webhooks_config.clone(), store.clone(), ctx.bus.node()).await?)
    } else {
        None
    };
    let (log, flush_rx) = log::log_handle(store.clone());
    let recorder = log::Recorder {
        store: store.clone(),
        rx: ctx.bus.tap("event_log", events.queue_capacity),
        flush_rx,
        webhooks: webhooks.clone(),
        batch_max: events.batch_max,
    };
    ctx.tasks.spawn(recorder.run(ctx.shutdown.clone()));
    ctx.tasks.spawn(log::sweeper(
        store.clone(),
        events.retention,
        ctx.shutdown.clone(),
    ));
    if let Some(w) = &webhooks {
        ctx.tasks.spawn(webhooks::dispatcher(
            w.clone(),
            ctx.shutdown.clone(),
            ctx.tasks.clone(),
        ));
        ctx.tasks.spawn(webhooks::backlog_gauges(
            store.clone(),
            Duration::from_secs(5).min(webhooks_config.poll_interval * 5),
            ctx.shutdown.clone(),
        ));
    }
    if events.redis_publish
        && let Some(redis) = ctx.redis
    {
        let rx = ctx.bus.tap("redis", events.queue_capacity);
        ctx.tasks.spawn(redis_sink::run(
            redis.clone(),
            events.clone(),
            rx,
            ctx.shutdown.clone(),
        ));
    }
    Ok(Sinks { log, webhooks })
}
