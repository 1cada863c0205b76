//! The HTTP callout provider: the relay asks an operator's backend who may allocate.
//!
//! `POST <turn.auth_callout_url>` with JSON `{username, realm, method, client, transport, algorithm}` (and
//! `Authorization: Bearer <turn.auth_callout_secret>` when set). Answers:
//! - `200` `{"password": "…"}` (or `{"key": "<32 hex>"}`, coturn's HA1, for MD5 clients, and/or
//!   `{"sha256_key": "<64 hex>"}`), optionally with `quota`, `max_bps`, `user_max_bps` for this user;
//! - `401`, `403` or `404`: not authorized (the client gets 401); `429`: quota reached (486);
//! - anything else, a malformed body, or no answer within `turn.auth_callout_timeout`: the backend is
//!   unavailable. Fail-closed: the client gets 500 Server Error, unless `auth_callout_on_error = "stale"`
//!   and an earlier answer for the user is remembered, which is then used however old.
//!
//! Answers are cached per user for `turn.auth_callout_cache`; concurrent requests for the same user share
//! one call. The request waits while every other client is served (the decision is deferred).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde::Deserialize;
use tokio::time::Instant;

use crate::allocation::Transport;
use crate::observer::{AuthDecision, AuthProvider, AuthRequest, Grant, UserLimits};
use crate::stun::{LongTermKey, PasswordAlgorithm};

/// What the backend said about a user.
#[derive(Clone, Debug)]
enum Answer {
    Allow {
        password: Option<String>,
        md5_key: Option<LongTermKey>,
        sha256_key: Option<LongTermKey>,
        limits: UserLimits,
    },
    Deny,
    Quota,
}

type Fetch = Shared<BoxFuture<'static, Result<Answer, String>>>;

#[derive(Debug, Deserialize)]
struct Body {
    password: Option<String>,
    key: Option<String>,
    sha256_key: Option<String>,
    quota: Option<u32>,
    max_bps: Option<u64>,
    user_max_bps: Option<u64>,
}

/// The provider.
pub(crate) struct Callout {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
    ttl: Duration,
    stale_on_error: bool,
    cache: Mutex<HashMap<String, (Instant, Answer)>>,
    inflight: Mutex<HashMap<String, Fetch>>,
}

impl Callout {
    pub(crate) fn new(
        url: &str,
        secret: &str,
        timeout: Duration,
        ttl: Duration,
        stale_on_error: bool,
    ) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("rtcplane/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                url: url.to_owned(),
                secret: (!secret.is_empty()).then(|| secret.to_owned()),
                ttl,
                stale_on_error,
                cache: Mutex::new(HashMap::new()),
                inflight: Mutex::new(HashMap::new()),
            }),
        })
    }
}

fn key_from_hex(hex: Option<&str>, len: usize) -> Result<Option<LongTermKey>, String> {
    match hex {
        None => Ok(None),
        Some(h) => {
            let h = h.trim();
            let h = h.strip_prefix("0x").unwrap_or(h);
            LongTermKey::from_hex(&format!("0x{h}"))
                .filter(|k| k.as_bytes().len() == len)
                .map(Some)
                .ok_or_else(|| format!("a key of {len} bytes in hex was expected"))
        }
    }
}

fn transport_name(t: Transport) -> &'static str {
    t.as_str()
}

impl Inner {
    async fn call(self: Arc<Self>, body: serde_json::Value) -> Result<Answer, String> {
        let mut req = self.client.post(&self.url).json(&body);
        if let Some(s) = &self.secret {
            req = req.bearer_auth(s);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                format!("{e}")
            }
        })?;
        match resp.status().as_u16() {
            200 => {
                let body: Body = resp
                    .json()
                    .await
                    .map_err(|e| format!("unreadable 200 body: {e}"))?;
                let md5_key = key_from_hex(body.key.as_deref(), 16)?;
                let sha256_key = key_from_hex(body.sha256_key.as_deref(), 32)?;
                if body.password.is_none() && md5_key.is_none() && sha256_key.is_none() {
                    return Err("200 without password, key or sha256_key".into());
                }
                Ok(Answer::Allow {
                    password: body.password,
                    md5_key,
                    sha256_key,
                    limits: UserLimits {
                        quota: body.quota,
                        max_bps: body.max_bps,
                        user_max_bps: body.user_max_bps,
                    },
                })
            }
            401 | 403 | 404 => Ok(Answer::Deny),
            429 => Ok(Answer::Quota),
            s => Err(format!("status {s}")),
        }
    }

    fn cached(&self, user: &str, fresh_only: bool) -> Option<Answer> {
        let cache = self.cache.lock().ok()?;
        let (at, answer) = cache.get(user)?;
        (!fresh_only || at.elapsed() < self.ttl).then(|| answer.clone())
    }

    fn remember(&self, user: &str, answer: &Answer) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 100_000 {
                let ttl = self.ttl;
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            cache.insert(user.to_owned(), (Instant::now(), answer.clone()));
        }
    }
}

fn decide(
    answer: Answer,
    username: &str,
    realm: &str,
    algorithm: PasswordAlgorithm,
) -> AuthDecision {
    match answer {
        Answer::Deny => AuthDecision::NotAuthorized,
        Answer::Quota => AuthDecision::QuotaReached,
        Answer::Allow {
            password,
            md5_key,
            sha256_key,
            limits,
        } => {
            let mut keys = Vec::with_capacity(2);
            if let Some(p) = &password {
                keys.push(LongTermKey::derive(algorithm, username, realm, p));
            }
            match algorithm {
                PasswordAlgorithm::Md5 => keys.extend(md5_key),
                PasswordAlgorithm::Sha256 => keys.extend(sha256_key),
            }
            if keys.is_empty() {
                // The backend gave a key for the other algorithm only.
                return AuthDecision::NotAuthorized;
            }
            AuthDecision::Authorized(Grant { keys, limits })
        }
    }
}

impl AuthProvider for Callout {
    fn name(&self) -> &'static str {
        "http_callout"
    }

    fn authenticate(&self, r: &AuthRequest<'_>) -> AuthDecision {
        let (username, realm, algorithm) = (r.username.to_owned(), r.realm.to_owned(), r.algorithm);
        if let Some(answer) = self.inner.cached(&username, true) {
            return decide(answer, &username, &realm, algorithm);
        }
        let body = serde_json::json!({
            "username": r.username, "realm": r.realm, "method": r.method,
            "client": SocketAddr::to_string(&r.client), "transport": transport_name(r.transport),
            "algorithm": match r.algorithm { PasswordAlgorithm::Md5 => "MD5", PasswordAlgorithm::Sha256 => "SHA-256" },
        });
        let inner = self.inner.clone();
        let fetch: Fetch = {
            let Ok(mut inflight) = inner.inflight.lock() else {
                return AuthDecision::Unavailable;
            };
            inflight
                .entry(username.clone())
                .or_insert_with(|| inner.clone().call(body).boxed().shared())
                .clone()
        };
        AuthDecision::Deferred(Box::pin(async move {
            let result = fetch.await;
            if let Ok(mut inflight) = inner.inflight.lock() {
                inflight.remove(&username);
            }
            match result {
                Ok(answer) => {
                    inner.remember(&username, &answer);
                    decide(answer, &username, &realm, algorithm)
                }
                Err(e) => {
                    crate::metrics::callout_error();
                    tracing::warn!(error = %e, user = %username, "turn: auth callout failed");
                    match inner
                        .stale_on_error
                        .then(|| inner.cached(&username, false))
                        .flatten()
                    {
                        Some(answer) => decide(answer, &username, &realm, algorithm),
                        None => AuthDecision::Unavailable,
                    }
                }
            }
        }))
    }
}
