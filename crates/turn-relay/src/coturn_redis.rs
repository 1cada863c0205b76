//! coturn's Redis statistics (`redis-statsdb`), exactly as coturn 4.6 writes them, so an existing consumer
//! cannot tell the difference (seed 000 and the captured output in `fixtures/coturn`; where they differ,
//! the captured server wins):
//!
//! - `SET turn/realm/<realm>/user/<user>/allocation/<id 18 digits>/status` to `new lifetime=N, type=UDP,
//!   local=…, remote=…, ssl=NONE, cipher=NONE`, then `refreshed lifetime=N, …` on each Refresh (no TTL), and
//!   `DEL` when the allocation goes; each value is also `PUBLISH`ed on the key's name, plus `deleted`.
//! - `PUBLISH …/traffic` and `…/traffic/peer` with `rcvp=…, rcvb=…, sentp=…, sentb=…` (counts since the
//!   previous report) every 4096 packets of an allocation and when it goes; then, after `deleted`,
//!   `…/total_traffic` and `…/total_traffic/peer` with the totals.
//!
//! One long-lived connection, written by one task from a bounded queue. Nothing on the relay ever waits
//! for Redis: when the queue is full or Redis is down, commands are dropped and counted
//! (`rtcplane_turn_redis_events_dropped_total`); the task reconnects with backoff and, once back, SETs the
//! status keys of the allocations still alive (a restarted Redis has lost them), without publishing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::allocation::Transport;
use crate::observer::{AllocationInfo, Observer, Traffic};

/// Commands queued before further ones are dropped.
const QUEUE: usize = 65_536;
/// Commands sent in one pipeline.
const BATCH: usize = 512;

enum Cmd {
    Set(String, String),
    Del(String),
    Publish(String, String),
}

/// The `[turn] redis_statsdb` value as a Redis URL: a `redis://`/`rediss://`/`unix://` URL as is, or coturn's
/// own form `ip=127.0.0.1 dbname=0 port=6379 password=secret connect_timeout=30` (copied from
/// turnserver.conf) translated.
pub(crate) fn url(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.starts_with("redis://")
        || value.starts_with("rediss://")
        || value.starts_with("unix://")
    {
        return redis::parse_redis_url(value)
            .map(|_| value.to_owned())
            .ok_or_else(|| format!("{value:?} is not a valid Redis URL"));
    }
    let (mut host, mut port, mut db, mut password, mut user) =
        ("127.0.0.1".to_owned(), 6379_u16, 0_u32, None, None);
    for part in value.split_whitespace() {
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!(
                "{part:?}: expected a redis:// URL or coturn's `ip=… port=… dbname=… password=…`"
            ));
        };
        match k {
            "ip" | "host" => host = v.to_owned(),
            "port" => port = v.parse().map_err(|_| format!("port={v:?} is not a port"))?,
            "dbname" | "database" => {
                db = v
                    .parse()
                    .map_err(|_| format!("dbname={v:?} is not a Redis database number"))?;
            }
            "password" => password = Some(v.to_owned()),
            "user" => user = Some(v.to_owned()),
            "connect_timeout" => {}
            _ => return Err(format!("unknown coturn statsdb option {k:?}")),
        }
    }
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let enc =
        |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>() };
    let auth = match (user, password) {
        (Some(u), Some(p)) => format!("{}:{}@", enc(&u), enc(&p)),
        (None, Some(p)) => format!(":{}@", enc(&p)),
        (Some(u), None) => format!("{}@", enc(&u)),
        (None, None) => String::new(),
    };
    Ok(format!("redis://{auth}{host}:{port}/{db}"))
}

/// coturn's name of a client socket type.
fn type_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS/TCP",
    }
}

/// `turn/realm/<realm>/user/<user>/allocation/<id>/`.
fn prefix(a: &AllocationInfo) -> String {
    format!(
        "turn/realm/{}/user/{}/allocation/{:018}/",
        a.realm, a.username, a.id
    )
}

fn status(word: &str, a: &AllocationInfo, lifetime: Duration) -> String {
    let (ssl, cipher) = a
        .tls
        .as_ref()
        .map_or(("NONE", "NONE"), |(v, c)| (v.as_str(), c.as_str()));
    format!(
        "{word} lifetime={}, type={}, local={}, remote={}, ssl={ssl}, cipher={cipher}",
        lifetime.as_secs(),
        type_name(a.transport),
        a.server,
        a.client
    )
}

fn counters(p: u64, rb: u64, s: u64, sb: u64) -> String {
    format!("rcvp={p}, rcvb={rb}, sentp={s}, sentb={sb}")
}

fn client(t: &Traffic) -> String {
    counters(
        t.client_rx_packets,
        t.client_rx_bytes,
        t.client_tx_packets,
        t.client_tx_bytes,
    )
}

fn peer(t: &Traffic) -> String {
    counters(
        t.peer_rx_packets,
        t.peer_rx_bytes,
        t.peer_tx_packets,
        t.peer_tx_bytes,
    )
}

/// The observer writing coturn's schema; cheap to call from the relay (a queue push per command).
pub(crate) struct StatsDb {
    tx: mpsc::Sender<Cmd>,
    /// Status keys of live allocations and their last value, SET again after a reconnect.
    live: Arc<Mutex<HashMap<String, String>>>,
    dropped: metrics::Counter,
}

impl StatsDb {
    /// Starts the writer task for `url` (already validated); it ends with `shutdown`.
    pub(crate) fn start(
        url: &str,
        shutdown: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let live = Arc::new(Mutex::new(HashMap::new()));
        let dropped = metrics::counter!(crate::metrics::REDIS_DROPPED);
        tasks.spawn(writer(client, rx, live.clone(), dropped.clone(), shutdown));
        Ok(Self { tx, live, dropped })
    }

    fn push(&self, cmd: Cmd) {
        if self.tx.try_send(cmd).is_err() {
            self.dropped.increment(1);
        }
    }

    fn set_status(&self, a: &AllocationInfo, value: String) {
        let key = format!("{}status", prefix(a));
        if let Ok(mut live) = self.live.lock() {
            live.insert(key.clone(), value.clone());
        }
        self.push(Cmd::Set(key.clone(), value.clone()));
        self.push(Cmd::Publish(key, value));
    }

    fn publish_traffic(&self, p: &str, kind: &str, t: &Traffic) {
        self.push(Cmd::Publish(format!("{p}{kind}"), client(t)));
        self.push(Cmd::Publish(format!("{p}{kind}/peer"), peer(t)));
    }
}

impl Observer for StatsDb {
    fn allocation_created(&self, a: &AllocationInfo, lifetime: Duration) {
        self.set_status(a, status("new", a, lifetime));
    }

    fn allocation_refreshed(&self, a: &AllocationInfo, lifetime: Duration) {
        self.set_status(a, status("refreshed", a, lifetime));
    }

    fn traffic(&self, a: &AllocationInfo, delta: &Traffic) {
        self.publish_traffic(&prefix(a), "traffic", delta);
    }

    fn allocation_removed(
        &self,
        a: &AllocationInfo,
        _reason: &str,
        last: &Traffic,
        totals: &Traffic,
    ) {
        // coturn's order: the last usage report, the status gone, then the totals.
        let p = prefix(a);
        self.publish_traffic(&p, "traffic", last);
        let key = format!("{p}status");
        if let Ok(mut live) = self.live.lock() {
            live.remove(&key);
        }
        self.push(Cmd::Del(key.clone()));
        self.push(Cmd::Publish(key, "deleted".into()));
        self.publish_traffic(&p, "total_traffic", totals);
    }
}

/// Connects, with backoff from 100 ms to 5 s; commands arriving meanwhile are dropped and counted.
async fn connect(
    client: &redis::Client,
    rx: &mut mpsc::Receiver<Cmd>,
    dropped: &metrics::Counter,
    shutdown: &CancellationToken,
) -> Option<MultiplexedConnection> {
    let mut backoff = Duration::from_millis(100);
    let mut logged = false;
    loop {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => return Some(conn),
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "turn: redis_statsdb unreachable; statistics are dropped until it is back");
                    logged = true;
                }
            }
        }
        let until = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep_until(until) => break,
                cmd = rx.recv() => match cmd {
                    Some(_) => dropped.increment(1),
                    None => return None,
                },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn writer(
    client: redis::Client,
    mut rx: mpsc::Receiver<Cmd>,
    live: Arc<Mutex<HashMap<String, String>>>,
    dropped: metrics::Counter,
    shutdown: CancellationToken,
) {
    let connected = metrics::gauge!(crate::metrics::REDIS_CONNECTED);
    let written = metrics::counter!(crate::metrics::REDIS_WRITTEN);
    let mut batch = Vec::with_capacity(BATCH);
    'reconnect: loop {
        connected.set(0.0);
        let Some(mut conn) = connect(&client, &mut rx, &dropped, &shutdown).await else {
            return;
        };
        connected.set(1.0);
        // A Redis that restarted lost the status keys: SET those of the allocations still alive.
        let snapshot: Vec<(String, String)> = live
            .lock()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        if !snapshot.is_empty() {
            let mut pipe = redis::pipe();
            for (k, v) in &snapshot {
                pipe.cmd("SET").arg(k).arg(v).ignore();
            }
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                tracing::warn!(error = %e, "turn: redis_statsdb lost while restoring status keys");
                continue 'reconnect;
            }
        }
        tracing::info!(restored = snapshot.len(), "turn: redis_statsdb connected");
        loop {
            batch.clear();
            let n = tokio::select! {
                () = shutdown.cancelled() => {
                    // Flush what is queued (the deletions of a stopping server), then end.
                    rx.close();
                    rx.recv_many(&mut batch, QUEUE).await
                }
                n = rx.recv_many(&mut batch, BATCH) => n,
            };
            if n == 0 {
                return;
            }
            let mut pipe = redis::pipe();
            for cmd in &batch {
                match cmd {
                    Cmd::Set(k, v) => pipe.cmd("SET").arg(k).arg(v).ignore(),
                    Cmd::Del(k) => pipe.cmd("DEL").arg(k).ignore(),
                    Cmd::Publish(k, v) => pipe.cmd("PUBLISH").arg(k).arg(v).ignore(),
                };
            }
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => written.increment(n as u64),
                Err(e) => {
                    dropped.increment(n as u64);
                    tracing::warn!(error = %e, lost = n, "turn: redis_statsdb write failed; reconnecting");
                    if shutdown.is_cancelled() {
                        return;
                    }
                    continue 'reconnect;
                }
            }
            if shutdown.is_cancelled() && rx.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coturn_statsdb_strings_become_urls() {
        assert_eq!(
            url("ip=127.0.0.1 dbname=0 port=6391 connect_timeout=30").as_deref(),
            Ok("redis://127.0.0.1:6391/0")
        );
        assert_eq!(
            url("ip=::1 dbname=3 password=p@ss").as_deref(),
            Ok("redis://:p%40ss@[::1]:6379/3")
        );
        assert_eq!(
            url("redis://127.0.0.1:6379/2").as_deref(),
            Ok("redis://127.0.0.1:6379/2")
        );
        assert!(url("port=x").is_err());
        assert!(url("colour=blue").is_err());
        assert!(url("just-a-host").is_err());
    }

    #[test]
    fn messages_have_coturns_shape() {
        let a = AllocationInfo {
            id: 1_000_000_000_000_002,
            username: "alice".into(),
            realm: "example.org".into(),
            transport: Transport::Udp,
            client: "127.0.0.1:59510".parse().expect("addr"),
            server: "127.0.0.1:34881".parse().expect("addr"),
            relayed: vec![],
            tls: None,
            age: Duration::ZERO,
        };
        assert_eq!(
            prefix(&a),
            "turn/realm/example.org/user/alice/allocation/001000000000000002/"
        );
        assert_eq!(
            status("new", &a, Duration::from_secs(777)),
            "new lifetime=777, type=UDP, local=127.0.0.1:34881, remote=127.0.0.1:59510, ssl=NONE, cipher=NONE"
        );
        let t = Traffic {
            client_rx_packets: 311,
            client_rx_bytes: 38412,
            client_tx_packets: 311,
            client_tx_bytes: 38124,
            peer_rx_packets: 300,
            peer_rx_bytes: 36000,
            peer_tx_packets: 300,
            peer_tx_bytes: 36000,
        };
        assert_eq!(client(&t), "rcvp=311, rcvb=38412, sentp=311, sentb=38124");
        assert_eq!(peer(&t), "rcvp=300, rcvb=36000, sentp=300, sentb=36000");
    }
}
