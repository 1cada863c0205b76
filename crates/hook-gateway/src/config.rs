//! `[hooks]`: the hook gateway's configuration, its policy rules included.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Action;

/// `[hooks]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve `/hooks/srs`, `/hooks/nginx-rtmp/{call}` and `/hooks/mediamtx` on the public listener.
    pub enabled: bool,
    /// What happens when no rule matches: `allow` (so a fresh install works) or `deny`.
    pub default_action: Verdict,
    /// Ordered rules; the first match decides.
    pub rules: Vec<Rule>,
    /// Registry entries of a media server that has not called for this long are dropped (and their
    /// `…unpublished` / `…stopped` / `…disconnected` events published).
    #[serde(with = "humantime_serde")]
    pub registry_ttl: Duration,
    /// SRS HTTP API (`http://127.0.0.1:1985`), used to kick SRS clients from `/api/v1/streams`; empty: no kick.
    pub srs_api_url: String,
    /// Name of the query parameter carrying a token (`then = "token"`).
    pub token_param: String,
    /// Name of the query parameter carrying the token's expiry, unix seconds.
    pub expires_param: String,
    /// Addresses allowed to call the hook routes (the media servers), CIDRs or addresses; empty: any. Others
    /// get 403.
    pub allowed_sources: Vec<String>,
    /// Name of the query parameter that may carry a stream key (`then = "stream_key"`); without it the stream
    /// name itself is the key and nginx-rtmp is told to rename the stream to its public name.
    pub key_param: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            default_action: Verdict::Allow,
            rules: Vec::new(),
            registry_ttl: Duration::from_secs(300),
            srs_api_url: String::new(),
            allowed_sources: Vec::new(),
            token_param: "token".into(),
            expires_param: "expires".into(),
            key_param: "key".into(),
        }
    }
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Then {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
    /// Require a valid HMAC-SHA256 token with an expiry in the query (`rtcplane hooks token`).
    Token,
    /// Require a stream key stored in the database (`rtcplane hooks key add`).
    StreamKey,
    /// Ask upstream hook servers, in order; all must accept.
    Forward,
}

/// One `[[hooks.rules]]` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Optional name, shown in logs and decision metrics.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// App globs (`live`, `live/*`); empty matches every app.
    #[serde(default)]
    pub apps: Vec<String>,
    /// Vhost globs (SRS); empty matches every vhost.
    #[serde(default)]
    pub vhosts: Vec<String>,
    /// Stream globs; empty matches every stream.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Actions (connect, publish, play, update, …); empty matches every decided action.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// Source address ranges (`10.0.0.0/8`, `::1/128`); empty matches every source.
    #[serde(default)]
    pub source_cidrs: Vec<String>,
    /// What the rule does.
    pub then: Then,
    /// Keys for `then = "token"`, `secret:` any text; the first signs new tokens, all verify (rotation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_keys: Vec<String>,
    /// Upstream hook URLs for `then = "forward"`, called in order with the request as received.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_urls: Vec<String>,
    /// Timeout of each upstream call.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// When an upstream cannot be reached or times out: true allows, false (default) denies.
    #[serde(default)]
    pub fail_open: bool,
}

fn default_timeout_ms() -> u64 {
    3000
}

/// A configuration problem under `[hooks]`, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// The key below `[hooks]` (`rules[0].token_keys`).
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

impl Config {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.registry_ttl < Duration::from_secs(1) {
            return Err(err("registry_ttl", "must be at least 1s"));
        }
        if !self.srs_api_url.is_empty()
            && reqwest::Url::parse(&self.srs_api_url)
                .ok()
                .is_none_or(|u| !matches!(u.scheme(), "http" | "https"))
        {
            return Err(err(
                "srs_api_url",
                format!("{:?} is not an http(s) URL", self.srs_api_url),
            ));
        }
        for (key, v) in [
            ("token_param", &self.token_param),
            ("expires_param", &self.expires_param),
            ("key_param", &self.key_param),
        ] {
            if v.is_empty() {
                return Err(err(key, "must not be empty"));
            }
        }
        for (i, c) in self.allowed_sources.iter().enumerate() {
            if crate::policy::parse_cidr(c).is_none() {
                return Err(err(
                    format!("allowed_sources[{i}]"),
                    format!("{c:?} is not an address or CIDR range"),
                ));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            crate::policy::CompiledRule::compile(rule)
                .map_err(|(k, m)| err(format!("rules[{i}].{k}"), m))?;
        }
        Ok(())
    }
}
