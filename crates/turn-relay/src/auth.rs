//! Long-term credentials: the built-in [`AuthProvider`]s (static users, TURN REST API secrets, the
//! database), the chain they are asked in, and stateless nonces that expire (438 Stale Nonce).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rtcplane_storage::Storage;
use sha1::Sha1;

use crate::observer::{AuthDecision, AuthProvider, AuthRequest, Grant};
use crate::stun::{LongTermKey, PasswordAlgorithm};
use crate::users;

/// RFC 8489 §9.2: nonce cookie announcing the "Password algorithms" security feature (bit 0 set).
pub(crate) const NONCE_COOKIE: &str = "obMatJos2gAAA";

/// The password algorithms we offer, in preference order (sent in PASSWORD-ALGORITHMS).
pub(crate) const ALGORITHMS: &[PasswordAlgorithm] =
    &[PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5];

#[derive(Clone)]
enum Secret {
    Password(String),
    /// coturn's `0x…` form: a ready MD5 key.
    Md5Key(LongTermKey),
}

/// Realm, nonces, and the providers asked in turn for each user's keys.
#[derive(Clone)]
pub struct Credentials {
    realm: String,
    providers: Vec<Arc<dyn AuthProvider>>,
    nonce_key: [u8; 32],
    nonce_lifetime: Duration,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.providers.iter().map(|p| p.name()).collect();
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("providers", &names)
            .finish_non_exhaustive()
    }
}

/// Is a nonce usable?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    Valid,
    /// Ours but too old: 438 with a fresh one.
    Stale,
    /// Not ours (or for another client address): also 438, which makes the client retry with a fresh one.
    Invalid,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Users of `turn.static_users` (coturn `user=`).
struct StaticUsers {
    users: HashMap<String, Secret>,
}

impl AuthProvider for StaticUsers {
    fn name(&self) -> &'static str {
        "static"
    }

    fn authenticate(&self, r: &AuthRequest<'_>) -> AuthDecision {
        let key = match self.users.get(r.username) {
            None => return AuthDecision::Unknown,
            Some(Secret::Password(p)) => LongTermKey::derive(r.algorithm, r.username, r.realm, p),
            Some(Secret::Md5Key(k)) if r.algorithm == PasswordAlgorithm::Md5 => k.clone(),
            // An MD5 key cannot serve a SHA-256 client.
            Some(Secret::Md5Key(_)) => return AuthDecision::NotAuthorized,
        };
        AuthDecision::Authorized(Grant {
            keys: vec![key],
            ..Grant::default()
        })
    }
}

/// TURN REST API usernames (`<expiry>:<user>`) signed with one of `turn.static_auth_secrets`.
struct RestSecrets {
    secrets: Vec<String>,
}

impl AuthProvider for RestSecrets {
    fn name(&self) -> &'static str {
        "rest_secret"
    }

    fn authenticate(&self, r: &AuthRequest<'_>) -> AuthDecision {
        let Some(expiry) = rest_expiry(r.username) else {
            return AuthDecision::Unknown;
        };
        if expiry < now_secs() {
            return AuthDecision::NotAuthorized;
        }
        let keys = self
            .secrets
            .iter()
            .map(|secret| {
                LongTermKey::derive(
                    r.algorithm,
                    r.username,
                    r.realm,
                    &rest_password(secret, r.username),
                )
            })
            .collect();
        AuthDecision::Authorized(Grant {
            keys,
            ..Grant::default()
        })
    }
}

/// Users of the `turn_users` table (`rtcplane turn user add`).
struct DatabaseUsers {
    storage: Storage,
}

impl AuthProvider for DatabaseUsers {
    fn name(&self) -> &'static str {
        "database"
    }

    fn authenticate(&self, r: &AuthRequest<'_>) -> AuthDecision {
        let (storage, realm, name, algorithm) = (
            self.storage.clone(),
            r.realm.to_owned(),
            r.username.to_owned(),
            r.algorithm,
        );
        AuthDecision::Deferred(Box::pin(async move {
            match users::key(&storage, &realm, &name, algorithm).await {
                Ok(Some(k)) => AuthDecision::Authorized(Grant {
                    keys: vec![k],
                    ..Grant::default()
                }),
                Ok(None) => AuthDecision::Unknown,
                Err(e) => {
                    tracing::warn!(error = %e, "turn: user lookup failed");
                    AuthDecision::Unavailable
                }
            }
        }))
    }
}

impl Credentials {
    /// Builds the built-in sources, asked in this order: static users (`name:password` or
    /// `name:0x<hex key>`, validated), TURN REST secrets, database users, then `extra` (the HTTP callout and
    /// embedders' providers).
    pub fn new(
        realm: &str,
        static_users: &[String],
        rest_secrets: &[String],
        database: Option<Storage>,
        nonce_lifetime: Duration,
    ) -> Self {
        let users: HashMap<String, Secret> = static_users
            .iter()
            .filter_map(|u| u.split_once(':'))
            .map(|(name, secret)| {
                let s = match LongTermKey::from_hex(secret).filter(|k| k.as_bytes().len() == 16) {
                    Some(k) if secret.starts_with("0x") => Secret::Md5Key(k),
                    _ => Secret::Password(secret.to_owned()),
                };
                (name.to_owned(), s)
            })
            .collect();
        let mut providers: Vec<Arc<dyn AuthProvider>> = Vec::new();
        if !users.is_empty() {
            providers.push(Arc::new(StaticUsers { users }));
        }
        if !rest_secrets.is_empty() {
            providers.push(Arc::new(RestSecrets {
                secrets: rest_secrets.to_vec(),
            }));
        }
        if let Some(storage) = database {
            providers.push(Arc::new(DatabaseUsers { storage }));
        }
        Self {
            realm: realm.to_owned(),
            providers,
            nonce_key: rand::random(),
            nonce_lifetime,
        }
    }

    /// Adds providers: `first` are asked before the built-in ones, `last` after them.
    pub fn with_providers(
        mut self,
        first: Vec<Arc<dyn AuthProvider>>,
        last: Vec<Arc<dyn AuthProvider>>,
    ) -> Self {
        let builtin = std::mem::take(&mut self.providers);
        self.providers = first.into_iter().chain(builtin).chain(last).collect();
        self
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The providers, in the order they are asked.
    pub(crate) fn providers(&self) -> &[Arc<dyn AuthProvider>] {
        &self.providers
    }

    /// Candidate keys for `username` from every provider that knows it (tests).
    #[cfg(test)]
    pub(crate) async fn keys(
        &self,
        username: &str,
        algorithm: PasswordAlgorithm,
    ) -> Vec<LongTermKey> {
        let request = AuthRequest {
            username,
            realm: &self.realm,
            algorithm,
            method: "ALLOCATE",
            client: std::net::SocketAddr::from(([192, 0, 2, 1], 5000)),
            transport: crate::allocation::Transport::Udp,
        };
        let mut out = Vec::new();
        for p in &self.providers {
            let mut d = p.authenticate(&request);
            if let AuthDecision::Deferred(f) = d {
                d = f.await;
            }
            if let AuthDecision::Authorized(g) = d {
                out.extend(g.keys);
            }
        }
        out
    }

    /// A fresh nonce for a client address: cookie, issue time, and a MAC binding both to this server.
    pub(crate) fn nonce(&self, client: IpAddr) -> String {
        let ts = now_secs();
        format!("{NONCE_COOKIE}{ts:016x}{}", self.nonce_mac(ts, client))
    }

    fn nonce_mac(&self, ts: u64, client: IpAddr) -> String {
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&self.nonce_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(&ts.to_be_bytes());
        match client {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let tag = mac.finalize().into_bytes();
        tag[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn check_nonce(&self, nonce: &str, client: IpAddr) -> NonceCheck {
        let Some(rest) = nonce.strip_prefix(NONCE_COOKIE) else {
            return NonceCheck::Invalid;
        };
        if rest.len() != 32 || !rest.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (ts_hex, mac_hex) = rest.split_at(16);
        let Ok(ts) = u64::from_str_radix(ts_hex, 16) else {
            return NonceCheck::Invalid;
        };
        // Compare in constant time: the MAC is what proves the nonce is ours.
        let expected = self.nonce_mac(ts, client);
        let same = expected.len() == mac_hex.len()
            && expected
                .bytes()
                .zip(mac_hex.bytes())
                .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return NonceCheck::Invalid;
        }
        if now_secs().saturating_sub(ts) > self.nonce_lifetime.as_secs() {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

/// TURN REST API usernames are `<expiry-unix>:<user>` (coturn's default separator `:`); a bare timestamp is
/// accepted too.
fn rest_expiry(username: &str) -> Option<u64> {
    let ts = username.split(':').next()?;
    if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ts.parse().ok()
}

/// The REST password: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(users: &[&str], secrets: &[&str]) -> Credentials {
        let users: Vec<String> = users.iter().map(|s| (*s).to_owned()).collect();
        let secrets: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
        Credentials::new(
            "example.org",
            &users,
            &secrets,
            None,
            Duration::from_secs(600),
        )
    }

    #[tokio::test]
    async fn static_users_plain_and_hex() {
        let md5 = LongTermKey::derive(PasswordAlgorithm::Md5, "bob", "example.org", "pw");
        let hexkey: String = md5.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let c = creds(&["alice:secret", &format!("bob:0x{hexkey}")], &[]);
        assert_eq!(
            c.keys("alice", PasswordAlgorithm::Md5).await,
            vec![LongTermKey::derive(
                PasswordAlgorithm::Md5,
                "alice",
                "example.org",
                "secret"
            )]
        );
        assert_eq!(c.keys("bob", PasswordAlgorithm::Md5).await, vec![md5]);
        assert!(
            c.keys("bob", PasswordAlgorithm::Sha256).await.is_empty(),
            "an MD5 key cannot serve SHA-256"
        );
        assert!(c.keys("carol", PasswordAlgorithm::Md5).await.is_empty());
    }

    #[tokio::test]
    async fn rest_secrets_rotate_and_expire() {
        let c = creds(&[], &["new", "old"]);
        let future = format!("{}:alice", now_secs() + 3600);
        let keys = c.keys(&future, PasswordAlgorithm::Md5).await;
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys[1],
            LongTermKey::derive(
                PasswordAlgorithm::Md5,
                &future,
                "example.org",
                &rest_password("old", &future)
            )
        );
        let past = format!("{}:alice", now_secs() - 1);
        assert!(
            c.keys(&past, PasswordAlgorithm::Md5).await.is_empty(),
            "expired"
        );
        assert!(
            c.keys("alice", PasswordAlgorithm::Md5).await.is_empty(),
            "not a REST name"
        );
    }

    #[test]
    fn rest_password_matches_coturn() {
        // turnutils_uclient/coturn: base64(HMAC-SHA1(secret, "1700000000:alice")).
        assert_eq!(rest_password("north", "1700000000:alice").len(), 28);
        assert_ne!(
            rest_password("north", "1700000000:alice"),
            rest_password("south", "1700000000:alice")
        );
    }

    #[test]
    fn nonces_expire_and_bind_to_the_client() {
        let c = creds(&[], &[]);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let n = c.nonce(a);
        assert!(n.starts_with(NONCE_COOKIE));
        assert_eq!(c.check_nonce(&n, a), NonceCheck::Valid);
        assert_eq!(c.check_nonce(&n, b), NonceCheck::Invalid);
        assert_eq!(c.check_nonce("garbage", a), NonceCheck::Invalid);
        let old = format!(
            "{NONCE_COOKIE}{:016x}{}",
            now_secs() - 601,
            c.nonce_mac(now_secs() - 601, a)
        );
        assert_eq!(c.check_nonce(&old, a), NonceCheck::Stale);
        let other = creds(&[], &[]);
        assert_eq!(
            other.check_nonce(&n, a),
            NonceCheck::Invalid,
            "another server's nonce"
        );
    }
}
