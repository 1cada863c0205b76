//! `[sip_agent]`: the registration agent's configuration, with SEMS `db_reg_agent.conf` option names.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sip::uri::ProxyUri;

/// SEMS's `joined_query`, with the subscriber's `contact` column selected too (read only with
/// `db_read_contact = true`).
pub const DEFAULT_JOINED_QUERY: &str = "SELECT subscribers.subscriber_id AS subscriber_id, subscribers.user AS user, \
subscribers.pass AS pass, subscribers.realm AS realm, subscribers.contact AS contact, \
registrations.registration_status AS registration_status, registrations.expiry AS expiry, \
registrations.last_registration AS last_registration \
FROM subscribers LEFT JOIN registrations ON subscribers.subscriber_id = registrations.subscriber_id";

/// `[sip_agent]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run the agent.
    pub enabled: bool,
    /// Local SIP address (UDP, and TCP connections are made from this IP).
    pub listen: SocketAddr,
    /// A separate database holding the SEMS tables (`mysql://…` of an existing SEMS install, or any
    /// backend URL); empty: the main store, whose migrations create `subscribers` and `registrations`.
    pub database_url: String,
    /// The query that returns every subscription joined with its registration status (SEMS `joined_query`).
    /// Columns by name: subscriber_id, user, pass, realm, registration_status, expiry, last_registration and,
    /// with `db_read_contact`, contact.
    pub joined_query: String,
    /// Table the status is written to (SEMS `registrations_table`).
    pub registrations_table: String,
    /// Write the Contact header of positive replies to `registrations.contacts`.
    pub save_contacts: bool,
    /// Register the per-subscriber `contact` column instead of the default contact.
    pub db_read_contact: bool,
    /// host:port of the default contact `sip:<user>@<contact_hostport>`; empty: the `listen` address
    /// (or, when that is 0.0.0.0, the local address that reaches the registrar).
    pub contact_hostport: String,
    /// Requested registration lifetime, seconds (SEMS `expires`).
    pub expires: u32,
    /// A failed REGISTER is retried after this (SEMS `error_retry_interval`); 0: never.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// Earliest point of the refresh window, as a fraction of the granted expiry (SEMS
    /// `minimum_reregister_interval`).
    pub minimum_reregister_interval: f64,
    /// Latest point of the refresh window, as a fraction of the granted expiry (SEMS `reregister_interval`).
    pub reregister_interval: f64,
    /// After a successful de-REGISTER, delete the registrations row instead of keeping it as REMOVED (4).
    pub delete_removed_registrations: bool,
    /// With `delete_removed_registrations`, also delete rows whose de-REGISTER failed.
    pub delete_failed_deregistrations: bool,
    /// Record 401/407 replies that are answered with credentials in last_code/last_reason.
    pub save_auth_replies: bool,
    /// New REGISTER requests (not retransmissions, not the answer to a challenge) per `ratelimit_per`;
    /// 0: no limit. Sends are spaced evenly, not burst.
    pub ratelimit_rate: u32,
    /// The period of `ratelimit_rate`.
    #[serde(with = "humantime_serde")]
    pub ratelimit_per: Duration,
    /// Send every request through this proxy: a SIP URI such as `sip:127.0.0.1:5070` or
    /// `sip:proxy.example.net;transport=tcp`; empty: DNS SRV then A/AAAA of each account's realm.
    pub outbound_proxy: String,
    /// Transport when neither the outbound proxy nor DNS says: `udp` or `tcp`.
    pub transport: Transport,
    /// DNS servers (`ip:port`) for the SRV and A/AAAA lookups of realms; empty: the system's
    /// (`/etc/resolv.conf`). Host names then still come from `/etc/hosts` first.
    pub dns_servers: Vec<SocketAddr>,
    /// RFC 3261 T1 (retransmission start, UDP). Timer F (transaction timeout) is 64 × T1.
    #[serde(with = "humantime_serde")]
    pub timer_t1: Duration,
    /// RFC 3261 T2 (retransmission cap, UDP).
    #[serde(with = "humantime_serde")]
    pub timer_t2: Duration,
    /// At shutdown, how long in-flight transactions may take to finish before status is saved and the
    /// agent stops.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// User-Agent header of every request.
    pub user_agent: String,
    /// The user column holds `user@domain`: the domain is stripped for From/To/Contact (SEMS
    /// `username_with_domain`).
    pub username_with_domain: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 5060)),
            database_url: String::new(),
            joined_query: DEFAULT_JOINED_QUERY.into(),
            registrations_table: "registrations".into(),
            save_contacts: true,
            db_read_contact: false,
            contact_hostport: String::new(),
            expires: 7200,
            retry_interval: Duration::from_secs(300),
            minimum_reregister_interval: 0.5,
            reregister_interval: 0.9,
            delete_removed_registrations: false,
            delete_failed_deregistrations: false,
            save_auth_replies: false,
            ratelimit_rate: 1000,
            ratelimit_per: Duration::from_secs(1),
            outbound_proxy: String::new(),
            transport: Transport::Udp,
            dns_servers: Vec::new(),
            timer_t1: Duration::from_millis(500),
            timer_t2: Duration::from_secs(4),
            shutdown_grace: Duration::from_secs(5),
            user_agent: concat!("rtcplane/", env!("CARGO_PKG_VERSION")).into(),
            username_with_domain: false,
        }
    }
}

/// SIP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP, with Timer E retransmissions.
    Udp,
    /// TCP, one connection per destination.
    Tcp,
}

impl Transport {
    /// As in a Via header.
    pub fn via(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        }
    }
}

/// A config error naming the key under `[sip_agent]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// A SQL identifier as config may name it: letters, digits, `_`, optionally `schema.table`.
pub(crate) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

impl Config {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_identifier(&self.registrations_table) {
            return Err(err(
                "registrations_table",
                "must be a table name (letters, digits, _; optionally schema.table)",
            ));
        }
        let q = self.joined_query.trim_start().to_ascii_lowercase();
        if !(q.starts_with("select") || q.starts_with("with")) {
            return Err(err("joined_query", "must be a SELECT statement"));
        }
        if self.expires == 0 {
            return Err(err("expires", "must be at least 1 second"));
        }
        let (lo, hi) = (self.minimum_reregister_interval, self.reregister_interval);
        if !(hi > 0.0 && hi <= 1.0) {
            return Err(err("reregister_interval", "must be in (0, 1]"));
        }
        if !(lo > 0.0 && lo <= hi) {
            return Err(err(
                "minimum_reregister_interval",
                "must be in (0, reregister_interval]",
            ));
        }
        if self.ratelimit_rate > 0 && self.ratelimit_per.is_zero() {
            return Err(err("ratelimit_per", "must be longer than 0 s"));
        }
        if !self.outbound_proxy.is_empty() {
            ProxyUri::parse(&self.outbound_proxy).map_err(|e| err("outbound_proxy", e))?;
        }
        if !self.contact_hostport.is_empty()
            && (self.contact_hostport.contains(['<', '>', ' ', ';', '@']))
        {
            return Err(err("contact_hostport", "must be host or host:port"));
        }
        if self.timer_t1.is_zero() || self.timer_t2 < self.timer_t1 {
            return Err(err(
                "timer_t2",
                "timer_t1 must be > 0 and timer_t2 >= timer_t1",
            ));
        }
        if self.user_agent.contains(['\r', '\n']) {
            return Err(err("user_agent", "must be one line"));
        }
        if !self.database_url.is_empty()
            && rtcplane_storage::Backend::from_url(&self.database_url).is_err()
        {
            return Err(err(
                "database_url",
                "must be a sqlite:, postgres:// or mysql:// URL",
            ));
        }
        Ok(())
    }

    /// Timer F: how long a non-INVITE transaction may take.
    pub fn timer_f(&self) -> Duration {
        self.timer_t1 * 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("valid");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = Config {
            registrations_table: "x; drop table y".into(),
            ..Config::default()
        };
        assert_eq!(
            c.validate().map_err(|e| e.key),
            Err("registrations_table".into())
        );
        c = Config {
            minimum_reregister_interval: 0.95,
            ..Config::default()
        };
        assert_eq!(
            c.validate().map_err(|e| e.key),
            Err("minimum_reregister_interval".into())
        );
        c = Config {
            outbound_proxy: "http://x".into(),
            ..Config::default()
        };
        assert_eq!(
            c.validate().map_err(|e| e.key),
            Err("outbound_proxy".into())
        );
        assert!(is_identifier("sems.registrations"));
        assert!(!is_identifier("1abc"));
    }
}
