//! The shared Redis connection (`[redis] url`): one lazily connected, self-reconnecting multiplexed
//! connection for any subsystem that keeps cluster-wide counters or caches in Redis.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{Error, redact_url};

/// A cloneable handle to the shared Redis connection.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    target: String,
    timeout: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Prepares the connection without waiting for the server: it connects on first use and reconnects with
    /// exponential backoff whenever a command finds it broken. `timeout` bounds each command and connect.
    pub fn connect_lazy(url: &str, timeout: Duration) -> Result<Self, Error> {
        let target = redact_url(url);
        let client = redis::Client::open(url).map_err(|source| Error::RedisUrl {
            url: target.clone(),
            source,
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|source| {
            Error::RedisUrl {
                url: target.clone(),
                source,
            }
        })?;
        Ok(Self {
            conn,
            target,
            timeout,
        })
    }

    /// The URL with any password hidden.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A connection to run commands on (cheap clone of the multiplexed connection).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// PING, bounded by the command timeout (twice, to allow one reconnect).
    pub async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        match tokio::time::timeout(self.timeout * 2, cmd.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Error::Redis { op: "ping", source }),
            Err(_) => Err(Error::Timeout {
                op: "redis ping",
                after: self.timeout * 2,
            }),
        }
    }
}
