//! Who is calling: a Hawk session (desktop), a link-clicker's Basic token, or nobody, checked the way
//! loop-server's `auth.js` and express-hawkauth do (same order, statuses, errno and challenges), plus what
//! they left out: the payload hash is checked when the client sent one, and a nonce seen twice within the
//! skew window is refused.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::hawk::{self, Header, Origin, Target};
use crate::reply::{Reply, Result, errno};
use crate::store::{Kind, Participant, Session, Store};

/// The parts of a request authentication looks at.
#[derive(Debug)]
pub struct RequestParts<'a> {
    /// Method.
    pub method: &'a str,
    /// Path and query as sent.
    pub resource: &'a str,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// Body.
    pub body: &'a [u8],
}

/// A verified Hawk request: what is needed to know the caller and sign the answer.
#[derive(Clone, Debug)]
pub struct HawkAuth {
    /// The session.
    pub session: Session,
    /// The request's header (ts and nonce are reused by `Server-Authorization`).
    pub header: Header,
    /// Method.
    pub method: String,
    /// Path and query.
    pub resource: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl HawkAuth {
    /// `Server-Authorization` for an answer with `body` (JSON) or none.
    pub fn sign(&self, body: Option<&[u8]>) -> String {
        let hash = body.map(|b| hawk::payload_hash("application/json", b));
        hawk::server_authorization(
            &self.session.key,
            &self.header,
            &Target {
                method: &self.method,
                resource: &self.resource,
                host: &self.host,
                port: self.port,
            },
            hash.as_deref(),
        )
    }
}

/// The caller.
#[derive(Clone, Debug)]
pub enum Identity {
    /// No Authorization header.
    Anonymous,
    /// A Hawk session.
    Hawk(Box<HawkAuth>),
    /// A link-clicker: the hash of its session token.
    Basic {
        /// Keyed hash of the token, its participant key.
        token_hash: String,
        /// The participant the token belongs to, as read when it was checked.
        participant: Box<Participant>,
    },
}

impl Identity {
    /// Loop's `req.user`: the Hawk user; None for link-clickers and anonymous callers.
    pub fn user(&self) -> Option<&str> {
        match self {
            Self::Hawk(h) => Some(&h.session.user_hash),
            _ => None,
        }
    }

    /// Loop's participant key (`hawkIdHmac || participantTokenHmac`).
    pub fn participant_hash(&self) -> Option<&str> {
        match self {
            Self::Hawk(h) => Some(&h.session.id_hash),
            Self::Basic { token_hash, .. } => Some(token_hash),
            Self::Anonymous => None,
        }
    }

    /// The signature of the answer, for Hawk callers.
    pub fn hawk(&self) -> Option<&HawkAuth> {
        match self {
            Self::Hawk(h) => Some(h),
            _ => None,
        }
    }

    /// Metrics label.
    pub fn user_type(&self) -> &'static str {
        match self {
            Self::Hawk(_) => "Unregistered",
            Self::Basic { .. } => "Link-clicker",
            Self::Anonymous => "Anonymous",
        }
    }
}

/// Verifies callers.
#[derive(Debug)]
pub struct Authenticator {
    store: Store,
    secret: String,
    origin: Option<Origin>,
    skew_ms: i64,
    session_ms: i64,
    nonces: Mutex<HashMap<String, i64>>,
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}invalid"))
}

fn scheme(value: &str) -> &str {
    value.split(' ').next().unwrap_or_default()
}

/// The port a client signed for when `Host` names none: 443 behind a TLS terminator that says so
/// (`X-Forwarded-Proto: https`), else 80.
fn default_port(headers: &HeaderMap) -> u16 {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    if https { 443 } else { 80 }
}

/// How many nonces are remembered at most before old ones are dropped early.
const MAX_NONCES: usize = 200_000;

impl Authenticator {
    /// An authenticator over the rooms store.
    pub fn new(
        store: Store,
        secret: &str,
        origin: Option<Origin>,
        skew: std::time::Duration,
        session: std::time::Duration,
    ) -> Self {
        Self {
            store,
            secret: secret.to_owned(),
            origin,
            skew_ms: i64::try_from(skew.as_millis()).unwrap_or(i64::MAX),
            session_ms: i64::try_from(session.as_millis()).unwrap_or(i64::MAX),
            nonces: Mutex::new(HashMap::new()),
        }
    }

    /// Keyed hash of a Hawk id or a link-clicker token.
    pub fn hash(&self, value: &str) -> String {
        hawk::keyed_hash(&self.secret, value)
    }

    /// Creates a Hawk session; returns its session token (for `Hawk-Session-Token`) and the session.
    pub async fn create_session(&self, now: i64) -> Result<(String, Session)> {
        let token = hawk::new_session_token();
        let Some(creds) = hawk::derive(&token) else {
            return Err(Reply::backend("deriving a session", &"bad token"));
        };
        let id_hash = self.hash(&creds.id);
        let session = Session {
            user_hash: id_hash.clone(),
            id_hash,
            key: creds.key,
            expires_at: now.saturating_add(self.session_ms),
        };
        self.store
            .session_create(&session, now)
            .await
            .map_err(|e| Reply::backend("creating a Hawk session", &e))?;
        ::metrics::counter!(crate::metrics::SESSIONS).increment(1);
        Ok((token, session))
    }

    /// Loop's `requireHawkSession`: a valid Hawk request or an error answer.
    pub async fn require_hawk(&self, req: &RequestParts<'_>, now: i64) -> Result<HawkAuth> {
        let Some(value) = authorization(req.headers) else {
            return Err(Reply::hawk_unauthorized(None, "Hawk"));
        };
        if !scheme(value).eq_ignore_ascii_case("hawk") {
            return Err(Reply::hawk_unauthorized(None, "Hawk"));
        }
        self.verify_hawk(value, req, now).await
    }

    async fn verify_hawk(&self, value: &str, req: &RequestParts<'_>, now: i64) -> Result<HawkAuth> {
        let header = Header::parse(value).map_err(|e| {
            Reply::error(
                StatusCode::BAD_REQUEST,
                errno::INVALID_AUTH_TOKEN,
                serde_json::json!({"statusCode": 400, "error": "Bad Request", "message": e.0}),
            )
        })?;
        let origin = match &self.origin {
            Some(o) => o.clone(),
            None => req
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| Origin::from_host(h, default_port(req.headers)))
                .ok_or_else(|| {
                    Reply::error(
                        StatusCode::BAD_REQUEST,
                        errno::INVALID_AUTH_TOKEN,
                        serde_json::json!({"statusCode": 400, "error": "Bad Request", "message": "Invalid Host header"}),
                    )
                })?,
        };
        let fail = |m: &str| Reply::hawk_unauthorized(Some(m), &format!("Hawk error=\"{m}\""));
        let id_hash = self.hash(&header.id);
        let session = self
            .store
            .session(&id_hash, now)
            .await
            .map_err(|e| Reply::backend("reading a Hawk session", &e))?
            .ok_or_else(|| fail("Unknown credentials"))?;
        let target = Target {
            method: req.method,
            resource: req.resource,
            host: &origin.host,
            port: origin.port,
        };
        let normalized = hawk::normalized("header", &header, &target, header.hash.as_deref());
        if !hawk::verify_mac(&session.key, &normalized, &header.mac) {
            return Err(fail("Bad mac"));
        }
        if let Some(hash) = &header.hash {
            let ct = req
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !hawk::same(hash, &hawk::payload_hash(ct, req.body)) {
                return Err(fail("Bad payload hash"));
            }
        }
        let Some(ts) = header.ts() else {
            return Err(fail("Invalid timestamp"));
        };
        if !self.fresh_nonce(&header, now) {
            return Err(fail("Invalid nonce"));
        }
        let now_secs = now.div_euclid(1000);
        if ts.saturating_mul(1000).abs_diff(now) > self.skew_ms.unsigned_abs() {
            return Err(Reply::hawk_unauthorized(
                Some("Stale timestamp"),
                &hawk::stale_challenge(&session.key, now_secs),
            ));
        }
        // Slide the session (hawkSessionDuration) at most once per hundredth of its length.
        let target_expiry = now.saturating_add(self.session_ms);
        if target_expiry - session.expires_at > self.session_ms / 100 {
            self.store
                .session_touch(&session.id_hash, target_expiry)
                .await
                .map_err(|e| Reply::backend("touching a Hawk session", &e))?;
        }
        Ok(HawkAuth {
            session,
            header: header.clone(),
            method: req.method.to_owned(),
            resource: req.resource.to_owned(),
            host: origin.host,
            port: origin.port,
        })
    }

    /// Records `(id, nonce)`; false if it was seen within the skew window.
    fn fresh_nonce(&self, h: &Header, now: i64) -> bool {
        let key = format!("{}\n{}\n{}", h.id, h.ts, h.nonce);
        let Ok(mut seen) = self.nonces.lock() else {
            return true;
        };
        if seen.len() >= MAX_NONCES {
            seen.retain(|_, until| *until > now);
        }
        let until = now.saturating_add(self.skew_ms.saturating_mul(2));
        !matches!(seen.insert(key, until), Some(prev) if prev > now)
    }

    /// Drops remembered nonces past their window.
    pub fn sweep_nonces(&self, now: i64) {
        if let Ok(mut seen) = self.nonces.lock() {
            seen.retain(|_, until| *until > now);
        }
    }

    /// Loop's `authenticate` for `POST /registration`: Hawk if sent, else a new session (its token is
    /// returned for the `Hawk-Session-Token` header). BrowserID (Firefox Accounts) is not supported.
    pub async fn hawk_or_create(
        &self,
        req: &RequestParts<'_>,
        now: i64,
    ) -> Result<(Identity, Option<String>)> {
        match authorization(req.headers) {
            None => {
                let (token, session) = self.create_session(now).await?;
                Ok((
                    Identity::Hawk(Box::new(HawkAuth {
                        session,
                        header: Header::default(),
                        method: String::new(),
                        resource: String::new(),
                        host: String::new(),
                        port: 0,
                    })),
                    Some(token),
                ))
            }
            Some(v) if scheme(v).eq_ignore_ascii_case("hawk") => Ok((
                Identity::Hawk(Box::new(self.verify_hawk(v, req, now).await?)),
                None,
            )),
            Some(_) => Err(Reply::unauthorized("Hawk", Some("Unsupported"))),
        }
    }

    /// Loop's `authenticateWithHawkOrToken` for `GET|POST /rooms/{token}`: nobody, Hawk, or Basic with a
    /// live link-clicker token of this room.
    pub async fn hawk_or_token(
        &self,
        req: &RequestParts<'_>,
        room_token: &str,
        now: i64,
    ) -> Result<Identity> {
        let Some(value) = authorization(req.headers) else {
            return Ok(Identity::Anonymous);
        };
        let scheme = scheme(value);
        if scheme.eq_ignore_ascii_case("hawk") {
            return Ok(Identity::Hawk(Box::new(
                self.verify_hawk(value, req, now).await?,
            )));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(Reply::unauthorized("Basic,Hawk", Some("Unsupported")));
        }
        let parts: Vec<&str> = value.split(' ').collect();
        if parts.len() != 2 {
            return Err(Reply::unauthorized("Basic", None));
        }
        let decoded = STANDARD
            .decode(parts[1].trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let token = decoded.trim_end_matches(':');
        let invalid = || Reply::unauthorized("Basic", Some("Invalid token; it may have expired."));
        if token.is_empty() || token.len() > 4096 {
            return Err(invalid());
        }
        let token_hash = self.hash(token);
        match self
            .store
            .participant(room_token, &token_hash, now)
            .await
            .map_err(|e| Reply::backend("checking a room access token", &e))?
        {
            Some(p) if p.kind == Kind::Link => Ok(Identity::Basic {
                token_hash,
                participant: Box::new(p),
            }),
            _ => Err(invalid()),
        }
    }
}
