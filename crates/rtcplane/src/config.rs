//! The one configuration tree: built-in defaults < TOML file < `RTCPLANE__SECTION__KEY` environment.
//!
//! Every struct denies unknown keys, so a typo is an error naming the key (`turn.enabld`), never a silently
//! ignored setting; a wrong type names the key and the type expected. The whole tree is validated before
//! anything is started or bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment prefix; `RTCPLANE__HTTP__ADMIN_LISTEN` sets `http.admin_listen`.
pub(crate) const ENV_PREFIX: &str = "RTCPLANE";

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// This node's id in events and in the cluster's node registry; defaults to the host name.
    pub(crate) node_id: String,
    /// How long a graceful shutdown may take before the rest is abandoned.
    #[serde(with = "humantime_serde")]
    pub(crate) shutdown_grace: Duration,
    /// Async runtime worker threads; 0 means one per CPU core.
    pub(crate) worker_threads: usize,
    pub(crate) http: HttpConfig,
    pub(crate) storage: StorageConfig,
    pub(crate) redis: RedisConfig,
    pub(crate) bus: BusConfig,
    pub(crate) log: LogConfig,
    pub(crate) turn: rtcplane_turn_relay::Config,
    pub(crate) sip_agent: rtcplane_sip_registrar_agent::Config,
    pub(crate) hooks: rtcplane_hook_gateway::Config,
    pub(crate) rooms: rtcplane_room_state::Config,
    pub(crate) events: rtcplane_event_bus::sinks::EventsConfig,
    pub(crate) webhooks: rtcplane_event_bus::sinks::WebhooksConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: default_node_id(),
            shutdown_grace: Duration::from_secs(10),
            worker_threads: 0,
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            redis: RedisConfig::default(),
            bus: BusConfig::default(),
            log: LogConfig::default(),
            turn: rtcplane_turn_relay::Config::default(),
            sip_agent: rtcplane_sip_registrar_agent::Config::default(),
            hooks: rtcplane_hook_gateway::Config::default(),
            rooms: rtcplane_room_state::Config::default(),
            events: rtcplane_event_bus::sinks::EventsConfig::default(),
            webhooks: rtcplane_event_bus::sinks::WebhooksConfig::default(),
        }
    }
}

fn default_node_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    if host.is_empty() {
        "rtcplane".into()
    } else {
        host
    }
}

/// `[http]`: the two listeners.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HttpConfig {
    /// Public API (Loop rooms, inbound hooks, TURN REST credentials).
    pub(crate) public_listen: SocketAddr,
    /// Admin API, health, metrics, events; keep it on loopback or a private network.
    pub(crate) admin_listen: SocketAddr,
    /// Largest request body accepted, in bytes (413 above).
    pub(crate) max_body_bytes: usize,
    /// Longest a request may take to produce its response (503 after).
    #[serde(with = "humantime_serde")]
    pub(crate) request_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            public_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// `[storage]`: the main database.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StorageConfig {
    /// `sqlite:PATH`, `postgres://…` or `mysql://…` (MySQL and MariaDB).
    pub(crate) url: String,
    /// Most connections in the pool.
    pub(crate) max_connections: u32,
    /// How long to keep trying to connect at start (then exit non-zero).
    #[serde(with = "humantime_serde")]
    pub(crate) connect_timeout: Duration,
    /// Apply pending migrations when `serve` starts (else refuse to start on an old schema).
    pub(crate) migrate_on_start: bool,
    /// How often this node records itself in the node registry.
    #[serde(with = "humantime_serde")]
    pub(crate) heartbeat_interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "sqlite:./data/rtcplane.db".into(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(10),
            migrate_on_start: true,
            heartbeat_interval: Duration::from_secs(10),
        }
    }
}

/// `[redis]`: the shared Redis, optional.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`; empty for none.
    pub(crate) url: String,
    /// Bound on each command and connection attempt.
    #[serde(with = "humantime_serde")]
    pub(crate) timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Which transport the bus uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) enum BusBackend {
    Memory,
    Redis,
}

/// `[bus]`: the event bus.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BusConfig {
    /// `memory` (this process) or `redis` (every node sharing `redis.url`).
    pub(crate) backend: BusBackend,
    /// Events buffered per subscriber before a slow one loses the oldest.
    pub(crate) capacity: usize,
    /// Redis pub/sub channel of the cluster's bus.
    pub(crate) channel: String,
    /// How often the bus checks its Redis link.
    #[serde(with = "humantime_serde")]
    pub(crate) ping_interval: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            backend: BusBackend::Memory,
            capacity: 1024,
            channel: "rtcplane:bus".into(),
            ping_interval: Duration::from_secs(5),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// `[log]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogConfig {
    /// A tracing filter: `info`, `debug`, or per target, `info,rtcplane_event_bus=debug`.
    pub(crate) level: String,
    /// `text` or `json`.
    pub(crate) format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ConfigError {
    /// Dotted key (`turn.enabld`), when the error is about one.
    pub(crate) key: Option<String>,
    message: String,
}

impl ConfigError {
    fn at(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let key = key.into();
        Self {
            message: format!("config key `{key}`: {message}"),
            key: Some(key),
        }
    }

    fn general(message: impl Into<String>) -> Self {
        Self {
            key: None,
            message: message.into(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if any), then the environment, and validates the result.
    pub(crate) fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // `vars_os`, not `vars`: a non-UTF-8 variable elsewhere in the environment must not crash the process;
        // ours are read lossily, and a mangled value then fails validation naming its key.
        let env: Vec<(String, String)> = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        Self::load_from(file, env)
    }

    /// [`Config::load`] with the environment given (tests cannot safely change the process environment).
    pub(crate) fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::general(format!(
                    "config file {} does not exist or is not a file",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(PathBuf::from(path))
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("turn.listen_udp")
                .with_list_parse_key("turn.listen_tcp")
                .with_list_parse_key("turn.listen_tls")
                .with_list_parse_key("turn.static_users")
                .with_list_parse_key("turn.static_auth_secrets")
                .with_list_parse_key("turn.rest_api_keys")
                .with_list_parse_key("turn.rest_uris")
                .with_list_parse_key("turn.allowed_peer_ip")
                .with_list_parse_key("turn.denied_peer_ip")
                .with_list_parse_key("sip_agent.dns_servers")
                .source(Some(env)),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::general(clean_config_crate_error(&e)))?;
        let config: Config = serde_path_to_error::deserialize(raw).map_err(path_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id.trim().is_empty() || self.node_id.len() > 200 {
            return Err(ConfigError::at("node_id", "must be 1 to 200 characters"));
        }
        if self
            .node_id
            .chars()
            .any(|c| c.is_control() || c == '/' || c.is_whitespace())
        {
            return Err(ConfigError::at(
                "node_id",
                "must not contain spaces, control characters or `/`",
            ));
        }
        if self.worker_threads > 1024 {
            return Err(ConfigError::at(
                "worker_threads",
                "at most 1024 (0 means one per CPU core)",
            ));
        }
        if self.shutdown_grace.is_zero() {
            return Err(ConfigError::at("shutdown_grace", "must be more than 0s"));
        }
        if self.http.public_listen == self.http.admin_listen && self.http.public_listen.port() != 0
        {
            return Err(ConfigError::at(
                "http.admin_listen",
                format!(
                    "is the same address as http.public_listen ({})",
                    self.http.public_listen
                ),
            ));
        }
        if self.http.max_body_bytes == 0 {
            return Err(ConfigError::at(
                "http.max_body_bytes",
                "must be more than 0",
            ));
        }
        if self.http.request_timeout.is_zero() {
            return Err(ConfigError::at(
                "http.request_timeout",
                "must be more than 0s",
            ));
        }
        if let Err(e) = rtcplane_storage::Backend::from_url(&self.storage.url) {
            return Err(ConfigError::at("storage.url", e));
        }
        if self.storage.max_connections == 0 {
            return Err(ConfigError::at(
                "storage.max_connections",
                "must be at least 1",
            ));
        }
        if self.storage.heartbeat_interval < Duration::from_secs(1) {
            return Err(ConfigError::at(
                "storage.heartbeat_interval",
                "must be at least 1s",
            ));
        }
        if !self.redis.url.is_empty()
            && !matches!(
                self.redis.url.split(':').next(),
                Some("redis" | "rediss" | "redis+unix" | "unix")
            )
        {
            return Err(ConfigError::at(
                "redis.url",
                format!(
                    "{:?} is not a Redis URL (redis://host:port[/db])",
                    rtcplane_storage::redact_url(&self.redis.url)
                ),
            ));
        }
        if self.bus.backend == BusBackend::Redis && self.redis.url.is_empty() {
            return Err(ConfigError::at(
                "bus.backend",
                "is `redis` but `redis.url` is empty",
            ));
        }
        if self.bus.capacity == 0 {
            return Err(ConfigError::at("bus.capacity", "must be at least 1"));
        }
        if self.bus.channel.is_empty() {
            return Err(ConfigError::at("bus.channel", "must not be empty"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            return Err(ConfigError::at(
                "log.level",
                format!("{e} (try `info`, `debug`, `info,rtcplane=debug`)"),
            ));
        }
        if let Err(e) = self.turn.validate() {
            return Err(ConfigError::at(format!("turn.{}", e.key), e.message));
        }
        if let Err(e) = self.hooks.validate() {
            return Err(ConfigError::at(format!("hooks.{}", e.key), e.message));
        }
        if let Err(e) = self.sip_agent.validate() {
            return Err(ConfigError::at(format!("sip_agent.{}", e.key), e.message));
        }
        if let Err(e) = self.rooms.validate() {
            return Err(ConfigError::at(format!("rooms.{}", e.key), e.message));
        }
        if let Err(e) = self.events.validate(!self.redis.url.is_empty()) {
            return Err(ConfigError::at(format!("events.{}", e.key), e.message));
        }
        if let Err(e) = self.webhooks.validate() {
            return Err(ConfigError::at(format!("webhooks.{}", e.key), e.message));
        }
        Ok(())
    }

    /// The effective configuration as TOML, with every secret hidden.
    pub(crate) fn to_redacted_toml(&self) -> String {
        let mut value = match toml::Value::try_from(self) {
            Ok(v) => v,
            Err(e) => return format!("# cannot render the configuration: {e}\n"),
        };
        redact(&mut value, "");
        toml::to_string_pretty(&value)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

/// Hides values of keys that carry secrets: any key whose name contains `password`, `secret`, `token`,
/// `api_key` or is `static_users` (`name:password` entries) is replaced, and passwords inside `*url`/`*urls` values are masked.
fn redact(value: &mut toml::Value, key: &str) {
    let lower = key.to_ascii_lowercase();
    // `*_param` keys name query parameters (`token_param = "token"`); their values are not secrets.
    let secret = ["password", "secret", "token", "api_key", "apikey"]
        .iter()
        .any(|s| lower.contains(s))
        && !lower.ends_with("_param");
    let url = lower.ends_with("url") || lower.ends_with("urls");
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                redact(v, k);
            }
        }
        toml::Value::Array(items) => {
            for v in items {
                redact(v, key);
            }
        }
        toml::Value::String(s) if secret && !s.is_empty() => *s = "<redacted>".into(),
        toml::Value::String(s) if url => *s = rtcplane_storage::redact_url(s),
        _ => {}
    }
}

/// Turns a serde error with its path into a message naming the dotted key.
fn path_error(e: serde_path_to_error::Error<config::ConfigError>) -> ConfigError {
    let path = e.path().to_string();
    let inner = clean_config_crate_error(e.inner());
    // serde reports an unknown key at its parent: "unknown field `enabld`, expected `enabled`".
    if let Some(rest) = inner.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        // The path already ends at the unknown key when the config crate walked into it.
        let key = if path == "." || path.is_empty() {
            field.to_owned()
        } else if path == field || path.ends_with(&format!(".{field}")) {
            path.clone()
        } else {
            format!("{path}.{field}")
        };
        // serde lists the accepted keys as `a`, `b`, …: suggest the closest one.
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let hint = candidates
            .iter()
            .map(|c| (edit_distance(field, c), *c))
            .filter(|(d, _)| *d <= 2 || field.len() > 4 && *d <= field.len() / 3)
            .min()
            .map(|(_, c)| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        return ConfigError::at(key, format!("unknown key{hint}"));
    }
    if path == "." || path.is_empty() {
        ConfigError::general(inner)
    } else {
        ConfigError::at(path, inner)
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The config crate appends ` for key `x`` to messages; the key is named by us, so drop the repetition.
fn clean_config_crate_error(e: &config::ConfigError) -> String {
    let text = e.to_string();
    match text.rfind(" for key `") {
        Some(i) if text.ends_with('`') => text[..i].to_owned(),
        _ => text,
    }
}

/// Enum keys parse from strings with a message listing the values accepted.
macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                match s.as_str() {
                    $($name => Ok(Self::$variant),)+
                    _ => Err(format!("{s:?} is not one of: {}", [$($name),+].join(", "))),
                }
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                match v { $($ty::$variant => $name.to_owned(),)+ }
            }
        }
    };
}

string_enum!(BusBackend { Memory => "memory", Redis => "redis" });
string_enum!(LogFormat { Text => "text", Json => "json" });

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rtcplane.toml");
        std::fs::write(&path, toml).expect("write");
        Config::load_from(
            Some(&path),
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    fn err(toml: &str, env: &[(&str, &str)]) -> ConfigError {
        load(toml, env).expect_err("must be rejected")
    }

    #[test]
    fn defaults_are_valid_and_local() {
        let c = Config::load_from(None, Vec::new()).expect("defaults");
        assert_eq!(c.http.public_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.http.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.storage.url, "sqlite:./data/rtcplane.db");
        assert_eq!(c.bus.backend, BusBackend::Memory);
        assert!(c.redis.url.is_empty());
        assert!(
            c.turn.enabled,
            "every subsystem that exists is on by default"
        );
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn layers_file_then_env() {
        let c = load(
            "[http]\nadmin_listen = \"127.0.0.1:9191\"\npublic_listen = \"127.0.0.1:8181\"\n[log]\nformat = \"json\"\n",
            &[("RTCPLANE__HTTP__ADMIN_LISTEN", "127.0.0.1:9292"), ("RTCPLANE__STORAGE__MAX_CONNECTIONS", "3"),
              ("RTCPLANE__STORAGE__MIGRATE_ON_START", "false"), ("RTCPLANE__SHUTDOWN_GRACE", "3s"),
              ("RTCPLANE_CONFIG", "ignored: single underscore"), ("OTHER__HTTP__X", "ignored")],
        )
        .expect("valid");
        assert_eq!(
            c.http.admin_listen.to_string(),
            "127.0.0.1:9292",
            "env wins over file"
        );
        assert_eq!(
            c.http.public_listen.to_string(),
            "127.0.0.1:8181",
            "file wins over default"
        );
        assert_eq!(c.storage.max_connections, 3);
        assert!(!c.storage.migrate_on_start);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err("[turn]\nenabld = true\n", &[]);
        assert_eq!(e.key.as_deref(), Some("turn.enabld"), "{e}");
        assert!(e.to_string().contains("turn.enabld"), "{e}");
        assert!(
            e.to_string()
                .ends_with("unknown key; did you mean `enabled`?"),
            "{e}"
        );
        let e = err("[turn]\nzzz = 1\n", &[]);
        assert!(
            e.to_string().ends_with("unknown key"),
            "no far-fetched hint: {e}"
        );
        let e = err("[tunr]\nenabled = false\n", &[]);
        assert!(e.to_string().ends_with("did you mean `turn`?"), "{e}");

        let e = err("", &[("RTCPLANE__HTTP__ADMIN_LISTN", "127.0.0.1:1")]);
        assert_eq!(e.key.as_deref(), Some("http.admin_listn"), "{e}");

        let e = err("colour = \"blue\"\n", &[]);
        assert_eq!(e.key.as_deref(), Some("colour"), "{e}");

        let e = err("[tunr]\nenabled = false\n", &[]);
        assert_eq!(e.key.as_deref(), Some("tunr"), "{e}");
    }

    #[test]
    fn wrong_types_name_key_and_type() {
        let e = err("[storage]\nmax_connections = \"many\"\n", &[]);
        assert_eq!(e.key.as_deref(), Some("storage.max_connections"), "{e}");
        assert!(
            e.to_string().contains("u32") || e.to_string().contains("integer"),
            "{e}"
        );

        let e = err("[http]\nadmin_listen = \"localhost\"\n", &[]);
        assert_eq!(e.key.as_deref(), Some("http.admin_listen"), "{e}");
        assert!(e.to_string().contains("socket address"), "{e}");

        let e = err("[turn]\nenabled = \"yes please\"\n", &[]);
        assert_eq!(e.key.as_deref(), Some("turn.enabled"), "{e}");

        let e = err("shutdown_grace = \"soon\"\n", &[]);
        assert_eq!(e.key.as_deref(), Some("shutdown_grace"), "{e}");

        let e = err("[bus]\nbackend = \"kafka\"\n", &[]);
        assert_eq!(e.key.as_deref(), Some("bus.backend"), "{e}");
        assert!(e.to_string().contains("memory, redis"), "{e}");
        assert!(!e.to_string().contains("for key"), "{e}");
    }

    #[test]
    fn semantic_checks_name_the_key() {
        for (toml, key) in [
            ("[storage]\nurl = \"oracle://x\"\n", "storage.url"),
            ("[bus]\nbackend = \"redis\"\n", "bus.backend"),
            ("[redis]\nurl = \"http://x\"\n", "redis.url"),
            ("[log]\nlevel = \"loud=[\"\n", "log.level"),
            (
                "[http]\npublic_listen = \"127.0.0.1:7000\"\nadmin_listen = \"127.0.0.1:7000\"\n",
                "http.admin_listen",
            ),
            ("node_id = \"a b\"\n", "node_id"),
            (
                "[turn]\nmin_port = 6000\nmax_port = 5000\n",
                "turn.min_port",
            ),
            (
                "[turn]\nstatic_users = [\"nopassword\"]\n",
                "turn.static_users",
            ),
            (
                "[turn]\nallowed_peer_ip = [\"10.0.0.0/99\"]\n",
                "turn.allowed_peer_ip",
            ),
            ("[turn]\nrelay_ip = \"::1\"\n", "turn.relay_ip"),
            ("[sip_agent]\nexpires = 0\n", "sip_agent.expires"),
            (
                "[sip_agent]\noutbound_proxy = \"http://x\"\n",
                "sip_agent.outbound_proxy",
            ),
            ("[sip_agent]\nlisten = \"nowhere\"\n", "sip_agent.listen"),
            (
                "[rooms]\nweb_app_url = \"http://x/\"\n",
                "rooms.web_app_url",
            ),
            ("[rooms]\nmax_size = 1\n", "rooms.max_size"),
        ] {
            let e = err(toml, &[]);
            assert_eq!(e.key.as_deref(), Some(key), "{toml}: {e}");
        }
    }

    #[test]
    fn syntax_errors_and_missing_files_are_reported() {
        let e = err("[http\n", &[]);
        assert!(e.to_string().contains("rtcplane.toml"), "{e}");
        let e = Config::load_from(Some(Path::new("/nonexistent/rtcplane.toml")), Vec::new())
            .expect_err("missing");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    /// `config/default.toml` lists every key (keys with computed defaults as a commented `# key = …` line),
    /// each right after a comment line, with exactly the built-in default values.
    #[test]
    fn default_toml_documents_every_key_with_its_default() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/default.toml"
        ))
        .expect("config/default.toml");
        let mut prev_is_comment = false;
        let mut uncommented = String::new();
        for line in text.lines() {
            let t = line.trim();
            let commented_key = t
                .strip_prefix("# ")
                .filter(|r| r.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')));
            let is_key = commented_key.is_some()
                || (!t.is_empty() && !t.starts_with('#') && !t.starts_with('['));
            if is_key {
                assert!(
                    prev_is_comment,
                    "config/default.toml: `{t}` needs a one-line comment above it"
                );
            }
            prev_is_comment = t.starts_with('#') && commented_key.is_none();
            uncommented.push_str(commented_key.unwrap_or(line));
            uncommented.push('\n');
        }
        let documented: toml::Value = toml::from_str(&uncommented).expect("valid TOML");
        let mut defaults = toml::Value::try_from(Config::default()).expect("serializable");
        let mut documented = documented;
        // Computed defaults: only the key must be there.
        for v in [&mut defaults, &mut documented] {
            if let Some(t) = v.as_table_mut() {
                t.insert("node_id".into(), toml::Value::String("computed".into()));
            }
        }
        assert_eq!(
            flatten(&documented),
            flatten(&defaults),
            "config/default.toml differs from the built-in defaults"
        );
        // And the file as shipped loads.
        Config::load_from(
            Some(Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../config/default.toml"
            ))),
            Vec::new(),
        )
        .expect("default.toml is valid");
    }

    fn flatten(v: &toml::Value) -> std::collections::BTreeMap<String, String> {
        fn walk(
            prefix: &str,
            v: &toml::Value,
            out: &mut std::collections::BTreeMap<String, String>,
        ) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&key, v, out);
                    }
                }
                other => {
                    out.insert(prefix.to_owned(), other.to_string());
                }
            }
        }
        let mut out = std::collections::BTreeMap::new();
        walk("", v, &mut out);
        out
    }

    #[test]
    fn redaction_hides_secrets() {
        let c = load(
            "[storage]\nurl = \"postgres://app:hunter2@db/rtc\"\n[redis]\nurl = \"redis://:sekrit@127.0.0.1:6379\"\n",
            &[],
        )
        .expect("valid");
        let out = c.to_redacted_toml();
        assert!(!out.contains("hunter2") && !out.contains("sekrit"), "{out}");
        assert!(out.contains("postgres://app:***@db/rtc"), "{out}");
        let mut v: toml::Value =
            toml::from_str("[a]\napi_key = \"k\"\nsecrets = [\"s1\", \"s2\"]\nname = \"n\"\n")
                .expect("toml");
        redact(&mut v, "");
        let s = v.to_string();
        assert!(
            !s.contains("\"k\"") && !s.contains("s1") && s.contains("\"n\""),
            "{s}"
        );
    }
}
