//! The [`Bus`] handle: publish, subscribe, health.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::event::{Event, EventError};
use crate::filter::TypeFilter;
use crate::{Error, metrics as m, redis_backend};

/// Which transport carries events between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// In this process only.
    Memory,
    /// Also over Redis pub/sub, to and from every node on the same channel.
    Redis {
        /// `redis://[user:pass@]host:port[/db]` (or `rediss://`); RESP3 is forced on.
        url: String,
        /// Pub/sub channel shared by the cluster.
        channel: String,
        /// Timeout for each Redis command and connection attempt.
        timeout: Duration,
        /// How often the link is checked with PING (which also drives reconnection).
        ping_interval: Duration,
    },
}

/// How to build a bus.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// This node's id, stamped on every event it publishes.
    pub node: String,
    /// Events buffered per local subscriber (and towards Redis) before the oldest are dropped.
    pub capacity: usize,
    /// The transport.
    pub backend: Backend,
}

/// A cheap, cloneable handle to the bus.
#[derive(Clone, Debug)]
pub struct Bus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) node: String,
    pub(crate) local: broadcast::Sender<Arc<Event>>,
    redis: Option<RedisLink>,
    /// Queues of the durable sinks (event log, Redis sink): every event this node publishes, in order.
    taps: RwLock<Vec<Tap>>,
}

#[derive(Debug)]
struct Tap {
    name: &'static str,
    tx: mpsc::Sender<Arc<Event>>,
}

#[derive(Debug)]
struct RedisLink {
    outbound: mpsc::Sender<Arc<Event>>,
    state: Arc<redis_backend::LinkState>,
}

/// The bus's view of its own transport, for readiness checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// False while the Redis link is down (always true in memory).
    pub connected: bool,
    /// The last transport error, if down.
    pub error: Option<String>,
}

impl Bus {
    /// Starts the bus. With the Redis backend this spawns the link tasks, which stop when `shutdown` fires; it
    /// does not wait for Redis to be reachable (the link keeps retrying, and [`Bus::health`] tells).
    pub fn start(config: BusConfig, shutdown: CancellationToken) -> Result<Self, Error> {
        m::describe();
        let capacity = config.capacity.max(1);
        let (local, _) = broadcast::channel(capacity);
        let redis = match config.backend {
            Backend::Memory => None,
            Backend::Redis {
                url,
                channel,
                timeout,
                ping_interval,
            } => {
                let (outbound, rx) = mpsc::channel(capacity);
                let state = Arc::new(redis_backend::LinkState::default());
                redis_backend::spawn(
                    redis_backend::LinkConfig {
                        url,
                        channel,
                        timeout,
                        ping_interval,
                        node: config.node.clone(),
                        capacity,
                    },
                    local.clone(),
                    rx,
                    state.clone(),
                    shutdown,
                )?;
                Some(RedisLink { outbound, state })
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                node: config.node,
                local,
                redis,
                taps: RwLock::new(Vec::new()),
            }),
        })
    }

    /// A bus that lives only in this process (tests, single-node defaults).
    pub fn memory(node: &str, capacity: usize) -> Self {
        Self::start(
            BusConfig {
                node: node.to_owned(),
                capacity,
                backend: Backend::Memory,
            },
            CancellationToken::new(),
        )
        .unwrap_or_else(|_| unreachable!("the memory backend cannot fail to start"))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// A publisher that stamps `source` with this node and `subsystem`.
    pub fn publisher(&self, subsystem: &str) -> Publisher {
        Publisher {
            bus: self.clone(),
            subsystem: subsystem.to_owned(),
        }
    }

    /// Publishes an event. Never blocks and never fails: if a buffer is full the event is dropped for that
    /// consumer and counted in `rtcplane_bus_events_dropped_total`.
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        metrics::counter!(m::PUBLISHED).increment(1);
        // No local subscriber is not an error: the event still goes to Redis.
        let _ = self.inner.local.send(event.clone());
        if let Ok(taps) = self.inner.taps.read() {
            for tap in taps.iter() {
                if tap.tx.try_send(event.clone()).is_err() {
                    metrics::counter!(m::DROPPED, "reason" => "sink_queue_full", "sink" => tap.name)
                        .increment(1);
                }
            }
        }
        if let Some(link) = &self.inner.redis
            && link.outbound.try_send(event).is_err()
        {
            metrics::counter!(m::DROPPED, "reason" => "redis_queue_full").increment(1);
        }
    }

    /// A queue of every event published through this handle (this node's own events, not those received
    /// from other nodes), in publish order, for a durable sink. Unlike a [`Subscription`] it has its own
    /// buffer of `capacity`: when the sink falls that far behind, new events are dropped for it and counted
    /// in `rtcplane_bus_events_dropped_total{reason="sink_queue_full"}`; publishing still never blocks.
    pub fn tap(&self, name: &'static str, capacity: usize) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        match self.inner.taps.write() {
            Ok(mut taps) => taps.push(Tap { name, tx }),
            Err(poisoned) => poisoned.into_inner().push(Tap { name, tx }),
        }
        rx
    }

    /// Subscribes to events whose type passes `filter`, from now on.
    pub fn subscribe(&self, filter: TypeFilter) -> Subscription {
        metrics::gauge!(m::SUBSCRIBERS).increment(1.0);
        Subscription {
            rx: self.inner.local.subscribe(),
            filter,
            lost: 0,
        }
    }

    /// The transport's state.
    pub fn health(&self) -> Health {
        match &self.inner.redis {
            None => Health {
                backend: "memory",
                connected: true,
                error: None,
            },
            Some(link) => Health {
                backend: "redis",
                connected: link.state.connected.load(Ordering::Relaxed),
                error: link.state.last_error(),
            },
        }
    }
}

/// Publishes events of one subsystem.
#[derive(Clone, Debug)]
pub struct Publisher {
    bus: Bus,
    subsystem: String,
}

impl Publisher {
    /// Builds and publishes an event; fails only if `ty` is not a valid event type.
    pub fn publish(
        &self,
        ty: &str,
        subject: Option<String>,
        data: serde_json::Value,
    ) -> Result<(), EventError> {
        let event = Event::new(self.bus.node(), &self.subsystem, ty, subject, data)?;
        self.bus.publish(event);
        Ok(())
    }

    /// The bus behind this publisher.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }
}

/// A live subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
    filter: TypeFilter,
    lost: u64,
}

impl Subscription {
    /// The next matching event, or `None` once the bus is gone. If this subscriber fell behind, the events it
    /// missed are counted (see [`Subscription::take_lost`]) and it continues with the oldest one still kept.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        loop {
            match self.rx.recv().await {
                Ok(event) if self.filter.matches(&event.ty) => return Some(event),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics::counter!(m::DROPPED, "reason" => "lagged").increment(n);
                    self.lost += n;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next matching event already buffered, without waiting; `None` when nothing is buffered.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        loop {
            match self.rx.try_recv() {
                Ok(event) if self.filter.matches(&event.ty) => return Some(event),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    metrics::counter!(m::DROPPED, "reason" => "lagged").increment(n);
                    self.lost += n;
                }
                Err(_) => return None,
            }
        }
    }

    /// Events this subscriber lost since the last call (of any type: the filter runs after the buffer).
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        metrics::gauge!(m::SUBSCRIBERS).decrement(1.0);
    }
}

/// Shared flag for "the link is up", with the last error for `/readyz`.
pub(crate) fn set_flag(flag: &AtomicBool, up: bool) -> bool {
    flag.swap(up, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn delivers_to_every_matching_subscriber() {
        let bus = Bus::memory("n1", 16);
        let mut all = bus.subscribe(TypeFilter::all());
        let mut turn = bus.subscribe(TypeFilter::parse("turn.*").expect("filter"));
        let p = bus.publisher("sip");
        p.publish(
            "sip.registration.changed",
            Some("7".into()),
            json!({"status": 1}),
        )
        .expect("publish");
        bus.publisher("turn")
            .publish("turn.allocation.created", None, json!({}))
            .expect("publish");
        assert_eq!(
            all.recv().await.expect("event").ty,
            "sip.registration.changed"
        );
        assert_eq!(
            all.recv().await.expect("event").ty,
            "turn.allocation.created"
        );
        let t = turn.recv().await.expect("event");
        assert_eq!(t.ty, "turn.allocation.created");
        assert_eq!(t.source, "/rtcplane/n1/turn");
    }

    #[tokio::test]
    async fn slow_subscriber_loses_oldest_and_counts_publisher_never_blocks() {
        let bus = Bus::memory("n1", 4);
        let mut slow = bus.subscribe(TypeFilter::all());
        let p = bus.publisher("test");
        for i in 0..10 {
            p.publish("test.tick", Some(i.to_string()), json!(i))
                .expect("publish");
        }
        let first = slow.recv().await.expect("event");
        // 10 published, 4 kept: the 6 oldest are gone and counted.
        assert_eq!(first.subject.as_deref(), Some("6"));
        assert_eq!(slow.take_lost(), 6);
        assert_eq!(slow.take_lost(), 0);
        for want in 7..10 {
            assert_eq!(
                slow.recv().await.expect("event").subject,
                Some(want.to_string())
            );
        }
    }

    #[tokio::test]
    async fn invalid_type_is_refused() {
        let bus = Bus::memory("n1", 4);
        assert!(
            bus.publisher("x")
                .publish("Bad Type", None, json!(null))
                .is_err()
        );
        assert_eq!(bus.health().backend, "memory");
        assert!(bus.health().connected);
    }
}
