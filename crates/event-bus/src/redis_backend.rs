//! The Redis transport: one long-lived RESP3 connection (a `redis` ConnectionManager) that both publishes
//! and receives pub/sub pushes, reconnects with exponential backoff, and resubscribes by itself.
//!
//! Three tasks share the connection: `outbound` PUBLISHes local events, `inbound` turns pushes from other
//! nodes into local events (skipping this node's own, which local subscribers already had), and `keeper`
//! subscribes, then PINGs on an interval; a failed PING marks the link down and makes the manager reconnect.
//! No command on this connection has an idle timeout: a quiet bus stays subscribed forever.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::bus::set_flag;
use crate::event::Event;
use crate::{Error, metrics as m};

pub(crate) struct LinkConfig {
    pub(crate) url: String,
    pub(crate) channel: String,
    pub(crate) timeout: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) node: String,
    pub(crate) capacity: usize,
}

#[derive(Debug, Default)]
pub(crate) struct LinkState {
    pub(crate) connected: AtomicBool,
    error: Mutex<Option<String>>,
}

impl LinkState {
    pub(crate) fn last_error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    fn up(&self) {
        if !set_flag(&self.connected, true) {
            metrics::gauge!(m::REDIS_CONNECTED).set(1.0);
            if self.last_error().is_some() {
                metrics::counter!(m::REDIS_RECONNECTS).increment(1);
                tracing::info!("bus: Redis link is back");
            }
            if let Ok(mut e) = self.error.lock() {
                *e = None;
            }
        }
    }

    fn down(&self, why: String) {
        if set_flag(&self.connected, false) {
            tracing::warn!(error = %why, "bus: Redis link is down; local delivery continues");
        }
        metrics::gauge!(m::REDIS_CONNECTED).set(0.0);
        if let Ok(mut e) = self.error.lock() {
            *e = Some(why);
        }
    }
}

pub(crate) fn spawn(
    cfg: LinkConfig,
    local: broadcast::Sender<Arc<Event>>,
    outbound: mpsc::Receiver<Arc<Event>>,
    state: Arc<LinkState>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let info = cfg
        .url
        .as_str()
        .into_connection_info()
        .map_err(Error::RedisUrl)?;
    let redis_settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client =
        redis::Client::open(info.set_redis_settings(redis_settings)).map_err(Error::RedisUrl)?;

    let (push_tx, push_rx) = mpsc::channel::<PushInfo>(cfg.capacity);
    let manager_config = ConnectionManagerConfig::new()
        .set_push_sender(move |push: PushInfo| {
            // Never block the connection's reader: a full queue drops the push and counts it.
            let full = push_tx.try_send(push).is_err();
            if full {
                metrics::counter!(m::DROPPED, "reason" => "redis_queue_full").increment(1);
            }
            Ok::<(), ()>(())
        })
        .set_automatic_resubscription()
        .set_connection_timeout(Some(cfg.timeout))
        .set_response_timeout(Some(cfg.timeout))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2));
    let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
        .map_err(Error::RedisSetup)?;
    state.down("not connected yet".into());

    tokio::spawn(keeper(
        conn.clone(),
        cfg.channel.clone(),
        cfg.ping_interval,
        state.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(publisher(conn, cfg.channel, outbound, shutdown.clone()));
    tokio::spawn(receiver(push_rx, cfg.node, local, state, shutdown));
    Ok(())
}

/// Subscribes (retrying with backoff until it works), then PINGs on an interval to notice a dead link and to
/// drive reconnection; the manager resubscribes automatically after it reconnects.
async fn keeper(
    mut conn: ConnectionManager,
    channel: String,
    ping_interval: Duration,
    state: Arc<LinkState>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    let mut subscribed = false;
    loop {
        let step = async {
            if !subscribed {
                conn.subscribe(&channel).await?;
                subscribed = true;
            } else {
                redis::cmd("PING").query_async::<()>(&mut conn).await?;
            }
            Ok::<(), redis::RedisError>(())
        };
        let wait = tokio::select! {
            () = shutdown.cancelled() => return,
            r = step => match r {
                Ok(()) => {
                    state.up();
                    backoff.reset();
                    ping_interval
                }
                Err(e) => {
                    state.down(e.to_string());
                    backoff.next()
                }
            },
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn publisher(
    mut conn: ConnectionManager,
    channel: String,
    mut outbound: mpsc::Receiver<Arc<Event>>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            e = outbound.recv() => match e { Some(e) => e, None => break },
        };
        let sent = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(event.to_json())
            .query_async::<i64>(&mut conn)
            .await;
        if let Err(e) = sent {
            metrics::counter!(m::DROPPED, "reason" => "redis_unavailable").increment(1);
            tracing::debug!(error = %e, event = %event.id, "bus: event not published to Redis");
        }
    }
    // Flush what is already queued, best effort, so a node's last events (e.g. node.stopped) go out.
    while let Ok(event) = outbound.try_recv() {
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(event.to_json())
                .query_async::<i64>(&mut conn),
        )
        .await;
    }
}

async fn receiver(
    mut pushes: mpsc::Receiver<PushInfo>,
    node: String,
    local: broadcast::Sender<Arc<Event>>,
    state: Arc<LinkState>,
    shutdown: CancellationToken,
) {
    loop {
        let push = tokio::select! {
            () = shutdown.cancelled() => return,
            p = pushes.recv() => match p { Some(p) => p, None => return },
        };
        match push.kind {
            PushKind::Message => {
                let Some(Value::BulkString(payload)) = push.data.get(1) else {
                    continue;
                };
                match Event::from_json(payload) {
                    Ok(event) if event.node == node => {}
                    Ok(event) => {
                        metrics::counter!(m::RECEIVED_REMOTE).increment(1);
                        let _ = local.send(Arc::new(event));
                    }
                    Err(e) => {
                        metrics::counter!(m::DROPPED, "reason" => "malformed").increment(1);
                        tracing::warn!(error = %e, "bus: ignored a malformed event from Redis");
                    }
                }
            }
            PushKind::Disconnection => state.down("connection to Redis lost".into()),
            _ => {}
        }
    }
}

/// Exponential backoff with jitter: 100 ms doubling to 5 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let jitter = rand::random_range(0..=base.as_millis() as u64 / 2);
        base + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn backoff_grows_to_a_ceiling_and_resets() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= Backoff::FIRST && first <= Backoff::FIRST * 3 / 2);
        for _ in 0..20 {
            let d = b.next();
            assert!(d <= Backoff::MAX * 3 / 2, "{d:?}");
        }
        assert!(b.next() >= Backoff::MAX);
        b.reset();
        assert!(b.next() < Backoff::FIRST * 2);
    }

    #[test]
    fn link_state_tracks_errors() {
        let s = LinkState::default();
        s.down("boom".into());
        assert!(!s.connected.load(Ordering::Relaxed));
        assert_eq!(s.last_error().as_deref(), Some("boom"));
        s.up();
        assert!(s.connected.load(Ordering::Relaxed));
        assert_eq!(s.last_error(), None);
    }
}
