//! `[events]` (the stored event log and the Redis sink) and `[webhooks]` (outbound webhooks).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::signing::Secret;
use crate::TypeFilter;

/// `[events]`: where this node's events go besides live subscribers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// How long stored events (and finished webhook deliveries) are kept. SSE clients can resume with
    /// `Last-Event-ID` and webhooks can be replayed within this window. Events still owed to an endpoint are
    /// kept until delivered or dead.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Events buffered between publishing and the database; beyond this, while the database is slow or down,
    /// new events are dropped and counted in `rtcplane_bus_events_dropped_total{reason="sink_queue_full"}`.
    pub queue_capacity: usize,
    /// Most events written in one transaction.
    pub batch_max: usize,
    /// Also publish every event of this node to Redis (`redis.url`): `PUBLISH <redis_channel_prefix><type>`
    /// and `XADD <redis_stream>`.
    pub redis_publish: bool,
    /// Prefix of the per-type pub/sub channels.
    pub redis_channel_prefix: String,
    /// The Redis Stream consumers read with XREAD/XREADGROUP to catch up.
    pub redis_stream: String,
    /// Approximate cap of the stream's length (`XADD … MAXLEN ~ N`).
    pub redis_stream_maxlen: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(72 * 3600),
            queue_capacity: 65536,
            batch_max: 500,
            redis_publish: false,
            redis_channel_prefix: "rtcplane:events:".into(),
            redis_stream: "rtcplane:events".into(),
            redis_stream_maxlen: 100_000,
        }
    }
}

/// `[webhooks]`: outbound webhooks with a durable outbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Deliver events to webhook endpoints (those below and those created with `/api/v1/webhooks`).
    pub enabled: bool,
    /// Endpoints defined here; they are read-only in the API.
    pub endpoints: Vec<EndpointConfig>,
    /// Longest one delivery attempt may take (connect, send, response).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Deliveries in flight at once per endpoint, unless the endpoint sets its own.
    pub max_in_flight: u32,
    /// Wait before the first retry; doubled after each failure (with jitter) up to `retry_max_interval`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max_interval: Duration,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// Age after which a delivery still failing is dead-lettered.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How often the outbox is checked for due retries (new events are dispatched at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often endpoints are re-read from the database (changes made on other nodes of a cluster).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            endpoints: Vec::new(),
            timeout: Duration::from_secs(10),
            max_in_flight: 4,
            retry_initial: Duration::from_secs(5),
            retry_max_interval: Duration::from_secs(3600),
            max_attempts: 20,
            max_age: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(10),
        }
    }
}

/// One `[[webhooks.endpoints]]` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Stable id in the API and the delivery log; default `cfg-` and a hash of the URL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `http://` or `https://` URL events are POSTed to.
    pub url: String,
    /// Signing secret in the Standard Webhooks form `whsec_<base64 of 24 to 64 random bytes>`.
    pub secret: String,
    /// Event type globs (`turn.*`, `sip.registration.changed`); empty for every event.
    #[serde(default)]
    pub events: Vec<String>,
    /// Deliver to this endpoint.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Deliveries in flight at once; `webhooks.max_in_flight` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Free text shown in the API.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn yes() -> bool {
    true
}

/// A configuration problem in `[events]` or `[webhooks]`, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// Dotted key below the section (`endpoints[0].secret`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

impl EventsConfig {
    /// Checks what types alone cannot; `redis_configured` says whether `redis.url` is set.
    pub fn validate(&self, redis_configured: bool) -> Result<(), ConfigError> {
        if self.retention < Duration::from_secs(1) {
            return Err(err("retention", "must be at least 1s"));
        }
        if self.queue_capacity == 0 {
            return Err(err("queue_capacity", "must be at least 1"));
        }
        if self.batch_max == 0 || self.batch_max > 10_000 {
            return Err(err("batch_max", "must be 1 to 10000"));
        }
        if self.redis_publish && !redis_configured {
            return Err(err("redis_publish", "is true but `redis.url` is empty"));
        }
        if self.redis_stream.is_empty() {
            return Err(err("redis_stream", "must not be empty"));
        }
        if self.redis_stream_maxlen == 0 {
            return Err(err("redis_stream_maxlen", "must be at least 1"));
        }
        Ok(())
    }
}

impl WebhooksConfig {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, d) in [
            ("timeout", self.timeout),
            ("retry_initial", self.retry_initial),
            ("retry_max_interval", self.retry_max_interval),
            ("max_age", self.max_age),
            ("poll_interval", self.poll_interval),
            ("refresh_interval", self.refresh_interval),
        ] {
            if d < Duration::from_millis(10) {
                return Err(err(key, "must be at least 10ms"));
            }
        }
        if self.retry_max_interval < self.retry_initial {
            return Err(err(
                "retry_max_interval",
                "must not be shorter than retry_initial",
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 1000 {
            return Err(err("max_in_flight", "must be 1 to 1000"));
        }
        if self.max_attempts == 0 {
            return Err(err("max_attempts", "must be at least 1"));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = |k: &str| format!("endpoints[{i}].{k}");
            validate_url(&e.url).map_err(|m| err(at("url"), m))?;
            Secret::parse(&e.secret).map_err(|m| err(at("secret"), m))?;
            TypeFilter::from_patterns(&e.events).map_err(|m| err(at("events"), m.to_string()))?;
            if let Some(n) = e.max_in_flight
                && (n == 0 || n > 1000)
            {
                return Err(err(at("max_in_flight"), "must be 1 to 1000"));
            }
            if !e.id.is_empty() {
                validate_id(&e.id).map_err(|m| err(at("id"), m))?;
            }
            if e.description.len() > 1024 {
                return Err(err(at("description"), "is longer than 1024 bytes"));
            }
            if e.secret.len() > 255 {
                return Err(err(at("secret"), "is longer than 255 bytes"));
            }
            if !ids.insert(e.effective_id()) {
                return Err(err(
                    at("id"),
                    format!(
                        "two endpoints have the id {:?} (the same URL twice needs explicit ids)",
                        e.effective_id()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl EndpointConfig {
    /// `id`, or `cfg-` and the first 12 hex digits of SHA-256 of the URL, so it survives reordering.
    pub fn effective_id(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.url.as_bytes());
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("cfg-{hex}")
    }
}

/// An endpoint URL: absolute `http` or `https` with a host, at most 2048 bytes, no credentials.
pub fn validate_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("is longer than 2048 bytes".into());
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} must be an http:// or https:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials; the signature authenticates rtcplane".into());
    }
    Ok(())
}

/// Endpoint ids: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "{id:?} is not a valid id: use 1 to 64 letters, digits, `.`, `_` or `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> EndpointConfig {
        EndpointConfig {
            id: String::new(),
            url: url.into(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            events: vec!["turn.*".into()],
            enabled: true,
            max_in_flight: None,
            description: String::new(),
        }
    }

    #[test]
    fn endpoint_errors_name_the_key() {
        let mut c = WebhooksConfig::default();
        c.endpoints.push(endpoint("ftp://x"));
        assert_eq!(c.validate().expect_err("scheme").key, "endpoints[0].url");
        c.endpoints[0] = endpoint("http://127.0.0.1:1/hook");
        c.endpoints[0].secret = "hunter2".into();
        assert_eq!(c.validate().expect_err("secret").key, "endpoints[0].secret");
        c.endpoints[0] = endpoint("http://127.0.0.1:1/hook");
        c.endpoints[0].events = vec!["turn allocation".into()];
        assert_eq!(c.validate().expect_err("glob").key, "endpoints[0].events");
        c.endpoints[0] = endpoint("http://127.0.0.1:1/hook");
        c.endpoints.push(endpoint("http://127.0.0.1:1/hook"));
        assert_eq!(c.validate().expect_err("dup").key, "endpoints[1].id");
        c.endpoints[1].id = "second".into();
        c.validate().expect("valid");
        assert!(c.endpoints[0].effective_id().starts_with("cfg-"));
        assert_eq!(c.endpoints[0].effective_id().len(), 16);
    }

    #[test]
    fn urls() {
        assert!(validate_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(validate_url("http://[::1]:8080/").is_ok());
        assert!(validate_url("http://user:pw@example.com/").is_err());
        assert!(validate_url("/relative").is_err());
        assert!(validate_url("javascript:alert(1)").is_err());
    }
}
