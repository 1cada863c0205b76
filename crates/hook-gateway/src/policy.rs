//! The policy: ordered rules over app/vhost/stream globs, actions and source CIDRs; the first match decides
//! with allow, deny, a token check, a stream-key lookup or a forward to upstream hook servers.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use globset::{Glob, GlobSet, GlobSetBuilder};
use hmac::{KeyInit, Mac};
use ipnet::IpNet;

use crate::config::{Config, Rule, Then, Verdict};
use crate::keys::Keys;
use crate::model::{Action, Decision, HookRequest, Role, ServerKind};

/// The request as received, for forwarding it unchanged.
#[derive(Clone, Copy, Debug)]
pub struct Raw<'a> {
    /// The body (or, for nginx-rtmp GET notifies, the query).
    pub body: &'a [u8],
    /// Its content type.
    pub content_type: &'a str,
}

/// A rule ready to match.
#[derive(Debug)]
pub struct CompiledRule {
    pub(crate) name: String,
    apps: Option<GlobSet>,
    vhosts: Option<GlobSet>,
    streams: Option<GlobSet>,
    actions: Vec<Action>,
    cidrs: Vec<IpNet>,
    then: Then,
    token_keys: Vec<Vec<u8>>,
    forward_urls: Vec<reqwest::Url>,
    timeout: Duration,
    fail_open: bool,
}

fn globs(
    key: &'static str,
    patterns: &[String],
) -> Result<Option<GlobSet>, (&'static str, String)> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // `*` must not cross `/`, so `live/*` matches `live/a` but not `live/a/b`.
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .or_else(|_| Glob::new(p))
            .map_err(|e| (key, format!("{p:?} is not a valid glob: {e}")))?;
        b.add(glob);
    }
    b.build().map(Some).map_err(|e| (key, e.to_string()))
}

impl CompiledRule {
    /// Validates and compiles a rule; errors name the key inside the rule.
    pub fn compile(rule: &Rule) -> Result<Self, (&'static str, String)> {
        let cidrs = rule
            .source_cidrs
            .iter()
            .map(|c| {
                parse_cidr(c).ok_or_else(|| {
                    (
                        "source_cidrs",
                        format!("{c:?} is not an address or CIDR range"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let token_keys: Vec<Vec<u8>> = rule
            .token_keys
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        match rule.then {
            Then::Token if token_keys.is_empty() => {
                return Err((
                    "token_keys",
                    "`then = \"token\"` needs at least one key".into(),
                ));
            }
            Then::Token if token_keys.iter().any(|k| k.len() < 16) => {
                return Err(("token_keys", "each key must be at least 16 bytes".into()));
            }
            Then::Forward if rule.forward_urls.is_empty() => {
                return Err((
                    "forward_urls",
                    "`then = \"forward\"` needs at least one URL".into(),
                ));
            }
            _ => {}
        }
        if !matches!(rule.then, Then::Token) && !rule.token_keys.is_empty() {
            return Err(("token_keys", "only used with `then = \"token\"`".into()));
        }
        if !matches!(rule.then, Then::Forward) && !rule.forward_urls.is_empty() {
            return Err(("forward_urls", "only used with `then = \"forward\"`".into()));
        }
        let forward_urls = rule
            .forward_urls
            .iter()
            .map(|u| {
                reqwest::Url::parse(u)
                    .ok()
                    .filter(|p| matches!(p.scheme(), "http" | "https"))
                    .ok_or_else(|| ("forward_urls", format!("{u:?} is not an http(s) URL")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if rule.timeout_ms == 0 || rule.timeout_ms > 60_000 {
            return Err(("timeout_ms", "must be 1 to 60000".into()));
        }
        // A token or a stream key is about a stream: without explicit actions such rules apply to what names
        // one (not connect, which has no stream yet, nor the api).
        let actions = match (rule.actions.is_empty(), rule.then) {
            (true, Then::Token) => vec![Action::Publish, Action::Play, Action::Update],
            (true, Then::StreamKey) => vec![Action::Publish],
            _ => rule.actions.clone(),
        };
        Ok(Self {
            name: rule.name.clone(),
            apps: globs("apps", &rule.apps)?,
            vhosts: globs("vhosts", &rule.vhosts)?,
            streams: globs("streams", &rule.streams)?,
            actions,
            cidrs,
            then: rule.then,
            token_keys,
            forward_urls,
            timeout: Duration::from_millis(rule.timeout_ms),
            fail_open: rule.fail_open,
        })
    }

    fn matches(&self, req: &HookRequest) -> bool {
        let glob = |set: &Option<GlobSet>, v: &str| set.as_ref().is_none_or(|s| s.is_match(v));
        glob(&self.apps, &req.app)
            && glob(&self.vhosts, &req.vhost)
            && glob(&self.streams, &req.stream)
            && (self.actions.is_empty() || self.actions.contains(&req.action))
            && (self.cidrs.is_empty() || req.ip.is_some_and(|ip| contains(&self.cidrs, ip)))
    }
}

/// `10.0.0.0/8`, or a single address.
pub fn parse_cidr(c: &str) -> Option<IpNet> {
    c.parse::<IpNet>()
        .ok()
        .or_else(|| c.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// Whether `ip` is in one of `nets` (v4-mapped v6 addresses match v4 ranges).
pub fn contains(nets: &[IpNet], ip: std::net::IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// `::ffff:1.2.3.4` as `1.2.3.4`, so IPv4 ranges match mapped addresses.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// The action a token is signed for: `publish` or `play` (updates by role; connect accepts either).
fn token_actions(req: &HookRequest) -> &'static [&'static str] {
    match (req.action, req.role) {
        (Action::Publish, _) | (Action::Update, Some(Role::Publisher)) => &["publish"],
        (Action::Play, _) | (Action::Update, Some(Role::Player)) => &["play"],
        _ => &["publish", "play"],
    }
}

/// The token for `action` on `app/stream` until `expires` (unix seconds): base64url (no padding) of
/// HMAC-SHA256(key, "<action>:<app>/<stream>:<expires>"). Carry it as `?token=…&expires=…`.
pub fn sign_token(key: &[u8], action: &str, app: &str, stream: &str, expires: i64) -> String {
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("{action}:{app}/{stream}:{expires}").as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn verify_token(
    keys: &[Vec<u8>],
    action: &str,
    req: &HookRequest,
    token: &[u8],
    expires: i64,
) -> bool {
    keys.iter().any(|key| {
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
            return false;
        };
        mac.update(format!("{action}:{}/{}:{expires}", req.app, req.stream).as_bytes());
        // Constant-time comparison.
        mac.verify_slice(token).is_ok()
    })
}

/// A decision with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// The answer.
    pub decision: Decision,
    /// The rule that made it (`default`, `notification`, a rule's name or `rules[i]`).
    pub rule: String,
    /// When a stream key was the stream name: the public name and the key's fingerprint.
    pub public_stream: Option<(String, String)>,
}

impl Decided {
    fn new(decision: Decision, rule: &str) -> Self {
        Self {
            decision,
            rule: rule.to_owned(),
            public_stream: None,
        }
    }
}

/// The whole policy.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<CompiledRule>,
    default: Verdict,
    token_param: String,
    expires_param: String,
    key_param: String,
    client: reqwest::Client,
}

impl Policy {
    /// The HTTP client of forward rules, also used for the SRS kick API.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Compiles the configured rules (already validated).
    pub fn new(config: &Config) -> Result<Self, String> {
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                CompiledRule::compile(r).map_err(|(k, m)| format!("hooks.rules[{i}].{k}: {m}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rtcplane-hooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the forward client: {e}"))?;
        Ok(Self {
            rules,
            default: config.default_action,
            token_param: config.token_param.clone(),
            expires_param: config.expires_param.clone(),
            key_param: config.key_param.clone(),
            client,
        })
    }

    /// Decides a request: the first matching rule, else the default. Returns the decision, the name of the
    /// rule that made it (`default` when none matched) and, when a stream key was used as the stream name,
    /// the public name with the key's fingerprint (so the key itself is never shown).
    pub async fn decide(&self, req: &HookRequest, raw: Raw<'_>, keys: &Keys) -> Decided {
        let matching = self.rules.iter().enumerate().find(|(_, r)| r.matches(req));
        if !req.action.is_decided() {
            // Notifications are never denied; a forward rule still passes them on (its answer is not needed).
            if let Some((_, rule)) = matching
                && rule.then == Then::Forward
            {
                self.forward_notification(rule, raw);
            }
            return Decided::new(Decision::Allow, "notification");
        }
        let Some((i, rule)) = matching else {
            let d = match self.default {
                Verdict::Allow => Decision::Allow,
                Verdict::Deny => {
                    Decision::Deny("no rule matched and hooks.default_action = deny".into())
                }
            };
            return Decided::new(d, "default");
        };
        let name = if rule.name.is_empty() {
            format!("rules[{i}]")
        } else {
            rule.name.clone()
        };
        let mut public = None;
        let decision = match rule.then {
            Then::Allow => Decision::Allow,
            Then::Deny => Decision::Deny(format!("denied by {name}")),
            Then::Token => self.token(rule, req),
            Then::StreamKey => {
                let (d, p) = self.stream_key(req, keys).await;
                public = p;
                d
            }
            Then::Forward => self.forward(rule, req, raw).await,
        };
        Decided {
            decision,
            rule: name,
            public_stream: public,
        }
    }

    fn forward_notification(&self, rule: &CompiledRule, raw: Raw<'_>) {
        let client = self.client.clone();
        let urls = rule.forward_urls.clone();
        let body = raw.body.to_vec();
        let content_type = raw.content_type.to_owned();
        let timeout = rule.timeout;
        tokio::spawn(async move {
            for url in urls {
                let sent = client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                    .timeout(timeout)
                    .body(body.clone())
                    .send()
                    .await;
                if let Err(e) = sent {
                    metrics::counter!(crate::metrics::FORWARD_ERRORS).increment(1);
                    tracing::debug!(upstream = %url, error = %e, "forwarding a notification failed");
                }
            }
        });
    }

    fn token(&self, rule: &CompiledRule, req: &HookRequest) -> Decision {
        let (Some(token), Some(expires)) =
            (req.param(&self.token_param), req.param(&self.expires_param))
        else {
            return Decision::Deny(format!(
                "missing `{}` or `{}` in the stream URL query",
                self.token_param, self.expires_param
            ));
        };
        let Ok(expires) = expires.parse::<i64>() else {
            return Decision::Deny(format!("`{}` is not unix seconds", self.expires_param));
        };
        let Ok(token) = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')) else {
            return Decision::Deny("token is not base64url".into());
        };
        if !token_actions(req)
            .iter()
            .any(|a| verify_token(&rule.token_keys, a, req, &token, expires))
        {
            return Decision::Deny("invalid token".into());
        }
        // A running publisher or player is not dropped when its token's validity ends (only a kick does that).
        if req.action != Action::Update && expires < chrono::Utc::now().timestamp() {
            return Decision::Deny("token expired".into());
        }
        Decision::Allow
    }

    async fn stream_key(
        &self,
        req: &HookRequest,
        keys: &Keys,
    ) -> (Decision, Option<(String, String)>) {
        let given = req.param(&self.key_param);
        let key = given.unwrap_or(req.stream.as_str());
        match keys.lookup(key).await {
            Err(e) => {
                tracing::warn!(error = %e, "stream key lookup failed; denying");
                (Decision::Deny("stream key lookup failed".into()), None)
            }
            Ok(None) => (Decision::Deny("unknown stream key".into()), None),
            Ok(Some(k)) if k.app != req.app => {
                (Decision::Deny("stream key is for another app".into()), None)
            }
            Ok(Some(k)) if given.is_some() => {
                // `…/<stream>?key=…`: the key must belong to that stream.
                if k.stream == req.stream {
                    (Decision::Allow, None)
                } else {
                    (
                        Decision::Deny("stream key is for another stream".into()),
                        None,
                    )
                }
            }
            Ok(Some(k)) if k.stream == req.stream => (Decision::Allow, None),
            Ok(Some(k)) => {
                // The stream name is the secret key: nginx-rtmp is told to publish under the public name;
                // the others publish under the key, which the registry and events still never show.
                let public = Some((k.stream.clone(), k.fingerprint.clone()));
                if req.server == ServerKind::NginxRtmp && req.action == Action::Publish {
                    (Decision::Redirect(k.stream), public)
                } else {
                    (Decision::Allow, public)
                }
            }
        }
    }

    async fn forward(&self, rule: &CompiledRule, req: &HookRequest, raw: Raw<'_>) -> Decision {
        for url in &rule.forward_urls {
            let sent = self
                .client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, raw.content_type)
                .timeout(rule.timeout)
                .body(raw.body.to_vec())
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    metrics::counter!(crate::metrics::FORWARD_ERRORS).increment(1);
                    tracing::warn!(upstream = %url, error = %e, fail_open = rule.fail_open, "upstream hook server unreachable");
                    if rule.fail_open {
                        continue;
                    }
                    return Decision::Deny(format!("upstream {url} unreachable (fail closed)"));
                }
            };
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let decision = match req.server {
                ServerKind::Srs => {
                    let body = resp.bytes().await.unwrap_or_default();
                    if crate::adapters::srs::upstream_allows(status, &body) {
                        Decision::Allow
                    } else {
                        Decision::Deny(format!("upstream {url} refused"))
                    }
                }
                ServerKind::NginxRtmp => {
                    crate::adapters::nginx_rtmp::upstream_decision(status, location.as_deref())
                }
                ServerKind::Mediamtx => {
                    if (200..300).contains(&status) {
                        Decision::Allow
                    } else {
                        Decision::Deny(format!("upstream {url} answered {status}"))
                    }
                }
            };
            match decision {
                Decision::Allow => {}
                other => return other,
            }
        }
        Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServerKind;

    fn req(
        action: Action,
        app: &str,
        stream: &str,
        ip: &str,
        query: &[(&str, &str)],
    ) -> HookRequest {
        HookRequest {
            server: ServerKind::Srs,
            server_id: "s".into(),
            action,
            role: None,
            client_id: Some("1".into()),
            ip: ip.parse().ok(),
            vhost: "__defaultVhost__".into(),
            app: app.into(),
            stream: stream.into(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            protocol: None,
            user: None,
            password: None,
        }
    }

    fn rule(then: Then) -> Rule {
        Rule {
            name: String::new(),
            apps: vec![],
            vhosts: vec![],
            streams: vec![],
            actions: vec![],
            source_cidrs: vec![],
            then,
            token_keys: vec![],
            forward_urls: vec![],
            timeout_ms: 3000,
            fail_open: false,
        }
    }

    #[test]
    fn matching_by_globs_actions_and_cidrs() {
        let mut r = rule(Then::Deny);
        r.apps = vec!["live".into()];
        r.streams = vec!["cam*".into()];
        r.actions = vec![Action::Publish];
        r.source_cidrs = vec!["10.0.0.0/8".into(), "192.0.2.1".into()];
        let c = CompiledRule::compile(&r).expect("compile");
        assert!(c.matches(&req(Action::Publish, "live", "cam1", "10.1.2.3", &[])));
        assert!(c.matches(&req(
            Action::Publish,
            "live",
            "cam1",
            "::ffff:10.1.2.3",
            &[]
        )));
        assert!(c.matches(&req(Action::Publish, "live", "cam1", "192.0.2.1", &[])));
        assert!(!c.matches(&req(Action::Play, "live", "cam1", "10.1.2.3", &[])));
        assert!(!c.matches(&req(Action::Publish, "vod", "cam1", "10.1.2.3", &[])));
        assert!(!c.matches(&req(Action::Publish, "live", "mic1", "10.1.2.3", &[])));
        assert!(!c.matches(&req(Action::Publish, "live", "cam1", "172.16.0.1", &[])));
        assert!(!c.matches(&req(Action::Publish, "live", "cam1", "", &[])));
    }

    #[test]
    fn rule_errors_name_the_key() {
        let mut r = rule(Then::Token);
        assert_eq!(
            CompiledRule::compile(&r).expect_err("no keys").0,
            "token_keys"
        );
        r.token_keys = vec!["short".into()];
        assert_eq!(
            CompiledRule::compile(&r).expect_err("short").0,
            "token_keys"
        );
        let mut r = rule(Then::Forward);
        assert_eq!(
            CompiledRule::compile(&r).expect_err("no urls").0,
            "forward_urls"
        );
        r.forward_urls = vec!["ftp://x".into()];
        assert_eq!(
            CompiledRule::compile(&r).expect_err("scheme").0,
            "forward_urls"
        );
        let mut r = rule(Then::Allow);
        r.source_cidrs = vec!["10.0.0.0/33".into()];
        assert_eq!(
            CompiledRule::compile(&r).expect_err("cidr").0,
            "source_cidrs"
        );
        let mut r = rule(Then::Allow);
        r.streams = vec!["[".into()];
        assert_eq!(CompiledRule::compile(&r).expect_err("glob").0, "streams");
    }

    #[tokio::test]
    async fn tokens_with_expiry_and_rotation() {
        let mut r = rule(Then::Token);
        r.token_keys = vec!["new-key-0123456789".into(), "old-key-0123456789".into()];
        let config = Config {
            rules: vec![r],
            ..Config::default()
        };
        let policy = Policy::new(&config).expect("policy");
        let keys = Keys::disabled();
        let raw = Raw {
            body: b"",
            content_type: "application/json",
        };
        let future = chrono::Utc::now().timestamp() + 3600;
        let past = chrono::Utc::now().timestamp() - 1;
        let exp = future.to_string();
        for key in ["new-key-0123456789", "old-key-0123456789"] {
            let t = sign_token(key.as_bytes(), "publish", "live", "cam1", future);
            let r = req(
                Action::Publish,
                "live",
                "cam1",
                "127.0.0.1",
                &[("token", &t), ("expires", &exp)],
            );
            assert_eq!(
                policy.decide(&r, raw, &keys).await.decision,
                Decision::Allow,
                "{key}"
            );
        }
        let t = sign_token(b"new-key-0123456789", "publish", "live", "cam1", future);
        // Another stream, another action, a foreign key, a changed expiry, an expired token, none at all.
        for (action, stream, token, expires) in [
            (Action::Publish, "cam2", t.clone(), exp.clone()),
            (Action::Play, "cam1", t.clone(), exp.clone()),
            (
                Action::Publish,
                "cam1",
                sign_token(b"other-key-0123456789", "publish", "live", "cam1", future),
                exp.clone(),
            ),
            (Action::Publish, "cam1", t.clone(), (future + 1).to_string()),
            (
                Action::Publish,
                "cam1",
                sign_token(b"new-key-0123456789", "publish", "live", "cam1", past),
                past.to_string(),
            ),
        ] {
            let r = req(
                action,
                "live",
                stream,
                "127.0.0.1",
                &[("token", &token), ("expires", &expires)],
            );
            assert!(
                matches!(
                    policy.decide(&r, raw, &keys).await.decision,
                    Decision::Deny(_)
                ),
                "{action:?} {stream}"
            );
        }
        let r = req(Action::Publish, "live", "cam1", "127.0.0.1", &[]);
        assert!(matches!(
            policy.decide(&r, raw, &keys).await.decision,
            Decision::Deny(_)
        ));
    }

    #[tokio::test]
    async fn first_match_decides_then_default() {
        let mut deny_bad = rule(Then::Deny);
        deny_bad.streams = vec!["bad*".into()];
        let mut allow_live = rule(Then::Allow);
        allow_live.apps = vec!["live".into()];
        let config = Config {
            default_action: Verdict::Deny,
            rules: vec![deny_bad, allow_live],
            ..Config::default()
        };
        let p = Policy::new(&config).expect("policy");
        let keys = Keys::disabled();
        let raw = Raw {
            body: b"",
            content_type: "application/json",
        };
        for (action, app, stream, allowed) in [
            (Action::Publish, "live", "bad1", false),
            (Action::Publish, "live", "ok", true),
            (Action::Publish, "vod", "ok", false),
            // Notifications are never denied.
            (Action::Unpublish, "vod", "ok", true),
        ] {
            let r = req(action, app, stream, "127.0.0.1", &[]);
            let d = p.decide(&r, raw, &keys).await.decision;
            assert_eq!(
                d == Decision::Allow,
                allowed,
                "{action:?} {app}/{stream}: {d:?}"
            );
        }
    }
}
