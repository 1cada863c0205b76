//! `[turn]`: the relay's configuration, with coturn's option names where one exists.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::IpRange;

/// The largest `listen_udp_buffer`: the kernel takes the size as a C int and doubles it.
const MAX_UDP_BUFFER: usize = i32::MAX as usize / 2;

/// The TURN relay's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run the TURN/STUN relay.
    pub enabled: bool,
    /// The realm of long-term credentials (coturn `realm`).
    pub realm: String,
    /// UDP listeners (coturn `listening-ip` + `listening-port`).
    #[serde(deserialize_with = "addr_list")]
    pub listen_udp: Vec<SocketAddr>,
    /// Receive and send buffer asked for on each UDP listener, bytes; 0 = the OS default. One socket takes
    /// every client's datagrams, so a burst that outruns the relay for a moment queues here instead of being
    /// dropped. coturn asks for 2 MiB on its listeners. The kernel caps it at `net.core.rmem_max` /
    /// `net.core.wmem_max` (a warning at start says so).
    pub listen_udp_buffer: usize,
    /// TCP listeners (RFC 8656 stream framing).
    #[serde(deserialize_with = "addr_list")]
    pub listen_tcp: Vec<SocketAddr>,
    /// TLS listeners (coturn `tls-listening-port`); need `tls_cert` and `tls_key`.
    #[serde(deserialize_with = "addr_list")]
    pub listen_tls: Vec<SocketAddr>,
    /// PEM certificate chain for TLS listeners.
    pub tls_cert: String,
    /// PEM private key for TLS listeners.
    pub tls_key: String,
    /// Address relay sockets bind to (coturn `relay-ip`); empty: the host's primary address.
    pub relay_ip: String,
    /// IPv6 address for IPv6 relays (REQUESTED-ADDRESS-FAMILY); empty: IPv6 relays are refused (440).
    pub relay_ip6: String,
    /// Address announced in XOR-RELAYED-ADDRESS when behind 1:1 NAT (coturn `external-ip`); empty: relay_ip.
    pub external_ip: String,
    /// Lowest relay port (coturn `min-port`).
    pub min_port: u16,
    /// Highest relay port (coturn `max-port`).
    pub max_port: u16,
    /// Static users, `name:password` or `name:0x<hex key>` (coturn `user=`).
    #[serde(deserialize_with = "string_list")]
    pub static_users: Vec<String>,
    /// TURN REST API shared secrets (coturn `static-auth-secret`); several for rotation.
    #[serde(deserialize_with = "string_list")]
    pub static_auth_secrets: Vec<String>,
    /// Concurrent allocations per user (coturn `user-quota`); 0 = unlimited. Beyond it: 486.
    pub user_quota: u32,
    /// Concurrent allocations on this node (coturn `total-quota`); 0 = unlimited. Beyond it: 486.
    pub total_quota: u32,
    /// Bytes per second an allocation may relay, each direction separately (coturn `max-bps`); 0 = unlimited.
    /// Excess packets are dropped and counted.
    pub max_bps: u64,
    /// Bytes per second over all allocations of one user, each direction; 0 = unlimited.
    pub user_max_bps: u64,
    /// coturn's Redis statistics (coturn `redis-statsdb`): a `redis://` URL or coturn's
    /// `ip=… port=… dbname=… password=…`; empty: off.
    pub redis_statsdb: String,
    /// Ask this URL who may allocate (POST JSON, see docs); empty: off. Asked after the other sources.
    pub auth_callout_url: String,
    /// Sent as `Authorization: Bearer …` to the callout URL; empty: none.
    pub auth_callout_secret: String,
    /// How long to wait for the callout before refusing (500).
    #[serde(with = "humantime_serde")]
    pub auth_callout_timeout: Duration,
    /// How long a callout answer is reused for the same user.
    #[serde(with = "humantime_serde")]
    pub auth_callout_cache: Duration,
    /// When the callout fails: `deny` (500 Server Error), or `stale` (reuse the user's last answer however
    /// old, else deny).
    pub auth_callout_on_error: String,
    /// API keys for `GET /api/v1/turn/credentials` on the public listener (header `X-API-Key` or
    /// `Authorization: Bearer`); empty: the endpoint is off. Needs `static_auth_secrets`.
    #[serde(deserialize_with = "string_list")]
    pub rest_api_keys: Vec<String>,
    /// Validity of issued credentials when the request asks for none.
    #[serde(with = "humantime_serde")]
    pub rest_ttl: Duration,
    /// Longest validity a request may ask for.
    #[serde(with = "humantime_serde")]
    pub rest_max_ttl: Duration,
    /// URIs returned with credentials; empty: built from external_ip (else relay_ip) and the listeners' ports.
    #[serde(deserialize_with = "string_list")]
    pub rest_uris: Vec<String>,
    /// Users from the `turn_users` table of the main store (managed with `rtcplane turn user …`).
    pub database_users: bool,
    /// Allow relaying to 127.0.0.0/8 and ::1 (coturn `allow-loopback-peers`).
    pub allow_loopback_peers: bool,
    /// Peer addresses always allowed, CIDR, single address or `a-b` range (coturn `allowed-peer-ip`).
    #[serde(deserialize_with = "string_list")]
    pub allowed_peer_ip: Vec<String>,
    /// Peer addresses denied in addition to the built-in ranges (coturn `denied-peer-ip`).
    #[serde(deserialize_with = "string_list")]
    pub denied_peer_ip: Vec<String>,
    /// Allocation lifetime when the client asks for less or none (RFC 8656: 600 s).
    #[serde(with = "humantime_serde")]
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted (coturn `max-allocate-lifetime`).
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// How long a nonce stays valid before 438 Stale Nonce (coturn `stale-nonce`).
    #[serde(with = "humantime_serde")]
    pub nonce_lifetime: Duration,
    /// SOFTWARE attribute sent in responses; empty to send none.
    pub software: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            realm: "rtcplane".into(),
            listen_udp: vec![SocketAddr::from(([0, 0, 0, 0], 3478))],
            listen_udp_buffer: 2 << 20,
            listen_tcp: vec![SocketAddr::from(([0, 0, 0, 0], 3478))],
            listen_tls: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            relay_ip: String::new(),
            relay_ip6: String::new(),
            external_ip: String::new(),
            min_port: 49152,
            max_port: 65535,
            static_users: Vec::new(),
            static_auth_secrets: Vec::new(),
            user_quota: 0,
            total_quota: 0,
            max_bps: 0,
            user_max_bps: 0,
            redis_statsdb: String::new(),
            auth_callout_url: String::new(),
            auth_callout_secret: String::new(),
            auth_callout_timeout: Duration::from_secs(2),
            auth_callout_cache: Duration::from_secs(30),
            auth_callout_on_error: "deny".into(),
            rest_api_keys: Vec::new(),
            rest_ttl: Duration::from_secs(24 * 3600),
            rest_max_ttl: Duration::from_secs(7 * 24 * 3600),
            rest_uris: Vec::new(),
            database_users: true,
            allow_loopback_peers: false,
            allowed_peer_ip: Vec::new(),
            denied_peer_ip: Vec::new(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
            software: format!("rtcplane {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A list of strings; blank entries (an empty environment variable reads as one) are dropped.
fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let mut raw = Vec::<String>::deserialize(d)?;
    raw.retain(|s| !s.trim().is_empty());
    Ok(raw)
}

/// A list of socket addresses; empty entries (an empty environment variable) are skipped.
fn addr_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a socket address (ip:port, [ipv6]:port)"
                ))
            })
        })
        .collect()
}

/// A problem with `[turn]`, naming the key (relative to the section).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key under `[turn]`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        message: message.into(),
    }
}

fn parse_ip(key: &'static str, s: &str) -> Result<Option<IpAddr>, ConfigError> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| err(key, format!("{s:?} is not an IP address")))
}

impl Config {
    /// Checks what types alone cannot (only meaningful when enabled).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.realm.is_empty() || self.realm.len() > 763 {
            return Err(err("realm", "must be 1 to 763 bytes"));
        }
        if self.listen_udp.is_empty() && self.listen_tcp.is_empty() && self.listen_tls.is_empty() {
            return Err(err(
                "listen_udp",
                "no listener: set listen_udp, listen_tcp or listen_tls",
            ));
        }
        if self.listen_udp_buffer > MAX_UDP_BUFFER {
            return Err(err(
                "listen_udp_buffer",
                format!("at most {MAX_UDP_BUFFER} bytes (0 = the OS default)"),
            ));
        }
        if !self.listen_tls.is_empty() && (self.tls_cert.is_empty() || self.tls_key.is_empty()) {
            return Err(err("tls_cert", "listen_tls needs tls_cert and tls_key"));
        }
        if let Some(ip) = parse_ip("relay_ip", &self.relay_ip)?
            && !ip.is_ipv4()
        {
            return Err(err(
                "relay_ip",
                "must be an IPv4 address (use relay_ip6 for IPv6)",
            ));
        }
        if let Some(ip) = parse_ip("relay_ip6", &self.relay_ip6)?
            && !ip.is_ipv6()
        {
            return Err(err("relay_ip6", "must be an IPv6 address"));
        }
        parse_ip("external_ip", &self.external_ip)?;
        if self.min_port == 0 || self.min_port > self.max_port {
            return Err(err(
                "min_port",
                format!("{}..={} is not a port range", self.min_port, self.max_port),
            ));
        }
        for u in &self.static_users {
            match u.split_once(':') {
                Some((name, pass)) if !name.is_empty() && !pass.is_empty() => {
                    if pass.starts_with("0x") && crate::stun::LongTermKey::from_hex(pass).is_none()
                    {
                        return Err(err(
                            "static_users",
                            format!("user {name:?}: 0x key must be 32 or 64 hex digits"),
                        ));
                    }
                }
                _ => {
                    return Err(err(
                        "static_users",
                        "each entry is `name:password` or `name:0x<hex key>`",
                    ));
                }
            }
        }
        if self.static_auth_secrets.iter().any(String::is_empty) {
            return Err(err("static_auth_secrets", "secrets must not be empty"));
        }
        if !self.rest_api_keys.is_empty() && self.static_auth_secrets.is_empty() {
            return Err(err(
                "rest_api_keys",
                "the credentials endpoint signs with static_auth_secrets, which is empty",
            ));
        }
        if self.rest_api_keys.iter().any(|k| k.len() < 16) {
            return Err(err(
                "rest_api_keys",
                "each key must be at least 16 characters",
            ));
        }
        if self.rest_ttl < Duration::from_secs(1) || self.rest_ttl > self.rest_max_ttl {
            return Err(err(
                "rest_ttl",
                "must be at least 1s and at most rest_max_ttl",
            ));
        }
        for u in &self.rest_uris {
            if !(u.starts_with("turn:") || u.starts_with("turns:") || u.starts_with("stun:")) {
                return Err(err(
                    "rest_uris",
                    format!("{u:?} is not a turn:, turns: or stun: URI"),
                ));
            }
        }
        for (key, list) in [
            ("allowed_peer_ip", &self.allowed_peer_ip),
            ("denied_peer_ip", &self.denied_peer_ip),
        ] {
            for entry in list {
                IpRange::parse(entry).map_err(|m| err(key, m))?;
            }
        }
        if self.default_lifetime.is_zero() || self.max_lifetime < self.default_lifetime {
            return Err(err(
                "max_lifetime",
                "must be at least default_lifetime, which must be more than 0s",
            ));
        }
        if !self.redis_statsdb.is_empty() {
            crate::coturn_redis::url(&self.redis_statsdb).map_err(|m| err("redis_statsdb", m))?;
        }
        let callout = &self.auth_callout_url;
        if !(callout.is_empty()
            || callout.starts_with("http://")
            || callout.starts_with("https://"))
        {
            return Err(err(
                "auth_callout_url",
                format!(
                    "{:?} is not an http:// or https:// URL",
                    self.auth_callout_url
                ),
            ));
        }
        if self.auth_callout_timeout < Duration::from_millis(10)
            || self.auth_callout_timeout > Duration::from_secs(60)
        {
            return Err(err("auth_callout_timeout", "must be 10ms to 60s"));
        }
        if !matches!(self.auth_callout_on_error.as_str(), "deny" | "stale") {
            return Err(err(
                "auth_callout_on_error",
                format!(
                    "{:?}: expected \"deny\" or \"stale\"",
                    self.auth_callout_on_error
                ),
            ));
        }
        if self.nonce_lifetime < Duration::from_secs(1) {
            return Err(err("nonce_lifetime", "must be at least 1s"));
        }
        if self.software.len() > 763 {
            return Err(err("software", "at most 763 bytes"));
        }
        Ok(())
    }
}
