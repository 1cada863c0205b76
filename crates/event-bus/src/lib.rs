//! rtcplane's event bus: the one CloudEvents-shaped [`Event`] envelope every subsystem publishes, and the
//! [`Bus`] that carries it.
//!
//! Two backends share one API. `memory` keeps everything in the process: a bounded broadcast where a slow
//! subscriber loses the oldest events (and [`metrics`] say how many) while publishers never block. `redis`
//! adds cross-process delivery over Redis pub/sub on one long-lived RESP3 connection that reconnects with
//! backoff and resubscribes by itself; local subscribers still receive local events even while Redis is down.
//!
//! The bus itself is not a durable queue: delivery to subscribers is at most once. Durable fan-out is in
//! [`sinks`]: the stored event log (SSE resume), the webhook outbox (at least once, signed per Standard
//! Webhooks) and the Redis sink, fed by [`Bus::tap`] queues. The crate knows nothing of subsystems beyond the
//! strings they publish.

mod bus;
mod event;
mod filter;
mod metrics;
mod redis_backend;
pub mod sinks;

pub use bus::{Backend, Bus, BusConfig, Health, Publisher, Subscription};
pub use event::{Event, EventError, SPEC_VERSION};
pub use filter::{FilterError, TypeFilter};

/// Errors of the bus itself (not of a single publish, which never fails).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Redis URL could not be parsed or names an unsupported scheme.
    #[error("invalid Redis URL for the bus: {0}")]
    RedisUrl(#[source] redis::RedisError),
    /// Creating the Redis connection manager failed.
    #[error("cannot set up the Redis connection of the bus: {0}")]
    RedisSetup(#[source] redis::RedisError),
}
