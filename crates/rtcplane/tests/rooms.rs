//! The rooms service against Loop's own expectations: the black-box behaviours of loop-server's
//! `test/rooms_test.js` (and the Hawk/Basic cases of `auth_test.js`, the registration cases of
//! `functional_test.js`, the header case of `index_test.js`), ported to real HTTP against the real binary,
//! with loop-server's test settings (`config/test.json`: maxSize 3, maxTTL 10 h, room name ≤ 15 and owner
//! ≤ 10 characters) and SimplePush captured by a local stub. Each ported case is marked `LS:` with the
//! name it has there.
//!
//! The Hawk client here is written from the Hawk specification and Loop's token derivation (HKDF by hand
//! over HMAC-SHA256), independently of the server's verifier in `crates/room-state/src/hawk.rs`.

// Tests poll real servers with std time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Server, SseReader};

// ---------- an independent Hawk client ----------

type HmacSha256 = hmac::Hmac<Sha256>;

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// RFC 5869 HKDF-SHA256 with an empty salt, written out.
fn hkdf(ikm: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let prk = hmac256(&[0u8; 32], ikm);
    let mut okm = Vec::new();
    let mut t: Vec<u8> = Vec::new();
    let mut i = 1u8;
    while okm.len() < len {
        let mut input = t.clone();
        input.extend_from_slice(info);
        input.push(i);
        t = hmac256(&prk, &input);
        okm.extend_from_slice(&t);
        i += 1;
    }
    okm.truncate(len);
    okm
}

/// Hawk credentials as Firefox derives them from a `Hawk-Session-Token`.
#[derive(Clone, Debug)]
struct Creds {
    id: String,
    key: String,
}

impl Creds {
    fn from_session_token(token: &str) -> Self {
        let bytes: Vec<u8> = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16).expect("hex token"))
            .collect();
        let okm = hkdf(&bytes, b"identity.mozilla.com/picl/v1/sessionToken", 64);
        Self {
            id: to_hex(&okm[..32]),
            key: to_hex(&okm[32..]),
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

struct HawkOpts<'a> {
    ts: i64,
    nonce: String,
    /// Overrides the payload hash sent (None: the body's real hash, if there is a body).
    hash: Option<&'a str>,
    key: Option<&'a str>,
}

fn hawk_header(
    c: &Creds,
    method: &str,
    url: &reqwest::Url,
    body: Option<&[u8]>,
    o: &HawkOpts<'_>,
) -> String {
    let resource = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let hash = match (o.hash, body) {
        (Some(h), _) => Some(h.to_owned()),
        (None, Some(b)) => {
            let mut d = Sha256::new();
            d.update(b"hawk.1.payload\napplication/json\n");
            d.update(b);
            d.update(b"\n");
            Some(STANDARD.encode(d.finalize()))
        }
        (None, None) => None,
    };
    let normalized = format!(
        "hawk.1.header\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n\n",
        o.ts,
        o.nonce,
        method,
        resource,
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(80),
        hash.clone().unwrap_or_default()
    );
    let key = o.key.unwrap_or(&c.key);
    let mac = STANDARD.encode(hmac256(key.as_bytes(), normalized.as_bytes()));
    match hash {
        Some(h) => format!(
            "Hawk id=\"{}\", ts=\"{}\", nonce=\"{}\", hash=\"{h}\", mac=\"{mac}\"",
            c.id, o.ts, o.nonce
        ),
        None => format!(
            "Hawk id=\"{}\", ts=\"{}\", nonce=\"{}\", mac=\"{mac}\"",
            c.id, o.ts, o.nonce
        ),
    }
}

fn nonce() -> String {
    URL_SAFE_NO_PAD.encode(rand_bytes())
}

fn rand_bytes() -> [u8; 9] {
    let mut b = [0u8; 9];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let h = Sha256::digest(format!("{seed}:{n}").as_bytes());
    b.copy_from_slice(&h[..9]);
    b
}

// ---------- the test fixture ----------

enum Auth<'a> {
    None,
    Hawk(&'a Creds),
    /// A Hawk header with options (wrong key, stale ts, replayed nonce, bad hash).
    HawkWith(&'a Creds, HawkOpts<'a>),
    Basic(&'a str),
    Raw(&'a str),
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// loop-server's `expectFormattedError`.
    #[track_caller]
    fn error(&self, code: u16, errno: u64, message: &str) {
        assert_eq!(self.status, code, "{self:?}");
        assert_eq!(
            self.body,
            json!({"code": code, "errno": errno, "error": message}),
            "{self:?}"
        );
    }
}

/// SimplePush endpoints that record what they are sent.
struct PushStub {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl PushStub {
    async fn start() -> Self {
        let got: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
        let g = got.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let g = g.clone();
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_owned();
                let body = axum::body::to_bytes(req.into_body(), 4096)
                    .await
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                g.lock().expect("lock").push((method, path, body));
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Lets pushes still under way arrive, then forgets everything received.
    async fn clear(&self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.got.lock().expect("lock").clear();
    }

    /// Waits a moment for fire-and-forget pushes, then returns `(path, version)` of each.
    async fn settle(&self) -> Vec<(String, i64)> {
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.got
            .lock()
            .expect("lock")
            .iter()
            .map(|(m, p, b)| {
                assert_eq!(m, "PUT", "SimplePush uses PUT");
                let v = b
                    .strip_prefix("version=")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("body {b:?} is not version=<n>"));
                (p.clone(), v)
            })
            .collect()
    }
}

/// loop-server's `config/test.json` values.
const TEST_CONFIG: &str = r#"
[rooms]
max_size = 3
max_ttl = "10h"
default_ttl = "8h"
max_room_name_size = 15
max_room_owner_size = 10
participant_ttl = "10s"
sweep_interval = "100ms"
web_app_url = "http://localhost:3000/content/{token}"
"#;

struct Loop {
    server: Server,
    client: reqwest::Client,
}

impl Loop {
    async fn start() -> Self {
        Self::start_with("", TEST_CONFIG).await
    }

    async fn start_with(storage: &str, toml: &str) -> Self {
        Self::start_env(storage, toml, &[]).await
    }

    async fn start_env(storage: &str, toml: &str, env: &[(&str, &str)]) -> Self {
        let mut b = Server::builder().config(toml);
        for (k, v) in env {
            b = b.env(k, *v);
        }
        if !storage.is_empty() {
            b = b.storage(storage);
        }
        let server = b.start().await.expect("rtcplane starts");
        Self {
            server,
            client: support::client(),
        }
    }

    async fn call(&self, method: &str, path: &str, auth: &Auth<'_>, body: Option<&Value>) -> Resp {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.call_raw(method, path, auth, bytes.as_deref(), "application/json")
            .await
    }

    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        auth: &Auth<'_>,
        body: Option<&[u8]>,
        content_type: &str,
    ) -> Resp {
        let url = reqwest::Url::parse(&self.server.public_url(path)).expect("url");
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(m, url.clone());
        if let Some(b) = body {
            req = req.header("content-type", content_type).body(b.to_vec());
        }
        req = match auth {
            Auth::None => req,
            Auth::Hawk(c) => req.header(
                "authorization",
                hawk_header(
                    c,
                    method,
                    &url,
                    body,
                    &HawkOpts {
                        ts: now_secs(),
                        nonce: nonce(),
                        hash: None,
                        key: None,
                    },
                ),
            ),
            Auth::HawkWith(c, o) => {
                req.header("authorization", hawk_header(c, method, &url, body, o))
            }
            Auth::Basic(token) => req.basic_auth(token, Some("")),
            Auth::Raw(v) => req.header("authorization", *v),
        };
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    /// `POST /registration` without credentials: a new Hawk session.
    async fn session(&self) -> Creds {
        let r = self.call("POST", "/registration", &Auth::None, None).await;
        assert_eq!(r.status, 200, "{r:?}");
        let token = r.header("hawk-session-token").expect("Hawk-Session-Token");
        Creds::from_session_token(token)
    }

    /// A session whose `rooms` SimplePush URL is `url` (LS `register`).
    async fn registered(&self, url: &str) -> Creds {
        let c = self.session().await;
        let r = self
            .call(
                "POST",
                "/registration",
                &Auth::Hawk(&c),
                Some(&json!({"simplePushURLs": {"calls": format!("{url}/calls"), "rooms": url}})),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        c
    }

    /// LS `createRoom` with its default body.
    async fn create_room(&self, c: &Creds) -> String {
        self.create_room_with(
            c,
            json!({"roomOwner": "Alexis", "roomName": "UX discussion", "maxSize": "3", "expiresIn": "10"}),
        )
        .await
    }

    async fn create_room_with(&self, c: &Creds, body: Value) -> String {
        let r = self
            .call("POST", "/rooms", &Auth::Hawk(c), Some(&body))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        r.body["roomToken"].as_str().expect("roomToken").to_owned()
    }

    async fn join(&self, token: &str, auth: &Auth<'_>, name: &str, client_max: i64) -> Resp {
        self.call(
            "POST",
            &format!("/rooms/{token}"),
            auth,
            Some(&json!({"action": "join", "displayName": name, "clientMaxSize": client_max})),
        )
        .await
    }

    async fn action(&self, token: &str, auth: &Auth<'_>, body: Value) -> Resp {
        self.call("POST", &format!("/rooms/{token}"), auth, Some(&body))
            .await
    }

    async fn get_room(&self, token: &str, auth: &Auth<'_>) -> Resp {
        self.call("GET", &format!("/rooms/{token}"), auth, None)
            .await
    }
}

fn status_body() -> Value {
    json!({"action": "status", "event": "Session.connectionCreated", "state": "init",
           "connections": 2, "sendStreams": 1, "recvStreams": 1})
}

// ---------- registration, sessions, Hawk ----------

#[tokio::test]
async fn registration_issues_hawk_sessions_and_stores_push_urls() {
    let l = Loop::start().await;
    // LS index_test: the Hawk-Session-Token header is there and 64 characters.
    let r = l.call("POST", "/registration", &Auth::None, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text, "", "empty body");
    let token = r.header("hawk-session-token").expect("header").to_owned();
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(r.header("timestamp").is_some(), "Timestamp on a 200");
    let c = Creds::from_session_token(&token);

    // LS functional: registering with Hawk and push URLs; legacy names; invalid URLs.
    let r = l
        .call(
            "POST",
            "/registration",
            &Auth::Hawk(&c),
            Some(
                &json!({"simplePushURLs": {"calls": "http://x/calls", "rooms": "https://x/rooms"}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("hawk-session-token").is_none(), "no new session");
    assert!(
        r.header("server-authorization").is_some(),
        "Hawk answers are signed"
    );
    let r = l
        .call(
            "POST",
            "/registration",
            &Auth::Hawk(&c),
            Some(&json!({"simple_push_url": "http://x/old"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = l
        .call(
            "POST",
            "/registration",
            &Auth::Hawk(&c),
            Some(&json!({"simplePushURLs": {"rooms": "ftp://x"}})),
        )
        .await;
    r.error(400, 107, "simplePushURLs.rooms should be a valid url");
    let r = l
        .call(
            "POST",
            "/registration",
            &Auth::Hawk(&c),
            Some(&json!({"simplePushURL": "not-a-url"})),
        )
        .await;
    r.error(400, 107, "simplePushURLs.calls should be a valid url");

    // An unknown scheme.
    let r = l
        .call("POST", "/registration", &Auth::Raw("Foo bar"), None)
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["errno"], 110);

    // DELETE /registration and DELETE /session need Hawk; after /session the credentials are gone.
    let r = l.call("DELETE", "/registration", &Auth::None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Hawk"));
    let r = l
        .call("DELETE", "/registration", &Auth::Hawk(&c), None)
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = l.call("DELETE", "/session", &Auth::Hawk(&c), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = l.call("GET", "/rooms", &Auth::Hawk(&c), None).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"]["message"], "Unknown credentials");

    // Every route is also under /v0; unknown /v0 paths are 404 errno 999.
    let c = l.session().await;
    let r = l.call("GET", "/v0/rooms", &Auth::Hawk(&c), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!([]));
    let r = l.call("GET", "/v0/nothing-here", &Auth::None, None).await;
    r.error(404, 999, "Resource not found.");
}

#[tokio::test]
async fn hawk_is_checked_like_loop_and_stricter() {
    let l = Loop::start().await;
    let c = l.session().await;
    let ok = |ts: i64, n: &str| HawkOpts {
        ts,
        nonce: n.to_owned(),
        hash: None,
        key: None,
    };
    // LS auth_test: valid Hawk accepted, signed, Timestamp header.
    let r = l.call("GET", "/rooms", &Auth::Hawk(&c), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("timestamp").is_some());
    let sa = r
        .header("server-authorization")
        .expect("Server-Authorization");
    assert!(sa.starts_with("Hawk mac=\""), "{sa}");

    // LS auth_test: invalid credentials (wrong key) → 401 errno 110 "Bad mac".
    let wrong = "0".repeat(64);
    let r = l
        .call(
            "GET",
            "/rooms",
            &Auth::HawkWith(
                &c,
                HawkOpts {
                    key: Some(&wrong),
                    ..ok(now_secs(), "n1")
                },
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["errno"], 110);
    assert_eq!(r.body["error"]["message"], "Bad mac");
    assert_eq!(r.header("www-authenticate"), Some("Hawk error=\"Bad mac\""));
    assert!(r.header("timestamp").is_some(), "Timestamp on a 401");

    // The raw 32 bytes as key are not Loop's key (the key is the hex text).
    let unknown = Creds {
        id: "f".repeat(64),
        key: c.key.clone(),
    };
    let r = l.call("GET", "/rooms", &Auth::Hawk(&unknown), None).await;
    assert_eq!(r.body["error"]["message"], "Unknown credentials", "{r:?}");

    // A stale timestamp: 401 with the server time and its tsm, which checks out with the key.
    let r = l
        .call(
            "GET",
            "/rooms",
            &Auth::HawkWith(&c, ok(now_secs() - 3600, "n2")),
            None,
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"]["message"], "Stale timestamp");
    let wa = r.header("www-authenticate").expect("challenge").to_owned();
    let ts: i64 = wa
        .split("ts=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .expect("ts");
    assert!((ts - now_secs()).abs() <= 2);
    let tsm = STANDARD.encode(hmac256(
        c.key.as_bytes(),
        format!("hawk.1.ts\n{ts}\n").as_bytes(),
    ));
    assert!(wa.contains(&format!("tsm=\"{tsm}\"")), "{wa}");
    assert!(wa.ends_with("error=\"Stale timestamp\""), "{wa}");
    // Within the skew is fine.
    let r = l
        .call(
            "GET",
            "/rooms",
            &Auth::HawkWith(&c, ok(now_secs() - 30, "n3")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    // A replayed nonce is refused.
    let t = now_secs();
    let r = l
        .call("GET", "/rooms", &Auth::HawkWith(&c, ok(t, "same")), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = l
        .call("GET", "/rooms", &Auth::HawkWith(&c, ok(t, "same")), None)
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"]["message"], "Invalid nonce");

    // A payload hash that does not match the body is refused; no hash at all is accepted (Loop).
    let body = json!({"roomOwner": "A", "roomName": "n", "maxSize": 2});
    let bad = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let r = l
        .call(
            "POST",
            "/rooms",
            &Auth::HawkWith(
                &c,
                HawkOpts {
                    hash: Some(bad),
                    ..ok(now_secs(), "n4")
                },
            ),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"]["message"], "Bad payload hash");

    // Missing or malformed headers.
    let r = l.call("GET", "/rooms", &Auth::None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["errno"], 110);
    assert_eq!(r.header("www-authenticate"), Some("Hawk"));
    let r = l
        .call("GET", "/rooms", &Auth::Raw("Hawk id=\"x\""), None)
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body["errno"], 110);
    // Basic on a Hawk-only route is a challenge.
    let r = l.call("GET", "/rooms", &Auth::Basic("abc"), None).await;
    assert_eq!(r.status, 401);
}

// ---------- POST /rooms and validators ----------

#[tokio::test]
async fn creating_rooms_validates_like_loop() {
    let l = Loop::start().await;
    let push = PushStub::start().await;
    let c = l.registered(&push.url("/alexis")).await;
    let post = |body: Value| {
        let l = &l;
        let c = &c;
        async move { l.call("POST", "/rooms", &Auth::Hawk(c), Some(&body)).await }
    };
    // LS: missing parameters, with the exact messages.
    post(json!({"roomOwner": "Alexis", "maxSize": "3"}))
        .await
        .error(400, 108, "Missing: context,roomName");
    post(json!({"roomName": "UX", "maxSize": "3"}))
        .await
        .error(400, 108, "Missing: roomOwner");
    post(json!({"roomName": "UX", "roomOwner": "Alexis"}))
        .await
        .error(400, 108, "Missing: maxSize");
    post(json!({}))
        .await
        .error(400, 108, "Missing: context,roomName, roomOwner, maxSize");
    // LS validators: too long name, owner; expiresIn and maxSize over the server's maxima.
    post(json!({"roomOwner": "Alexis", "roomName": "This is too long for loop", "maxSize": "3"}))
        .await
        .error(400, 107, "roomName should be shorter than 15 characters");
    post(json!({"roomOwner": "Alexis has a name that's too long", "roomName": "UX discussion", "maxSize": "3"}))
        .await
        .error(400, 107, "roomOwner should be shorter than 10 characters");
    post(json!({"roomOwner": "Alexis", "roomName": "UX discussion", "maxSize": "3", "expiresIn": "11"}))
        .await
        .error(400, 107, "expiresIn cannot be greater than 10");
    post(json!({"roomOwner": "Alexis", "roomName": "UX discussion", "maxSize": "4", "expiresIn": "10"}))
        .await
        .error(400, 107, "maxSize cannot be greater than 3");
    post(json!({"roomName": "UX Discussion", "context": {"value": "Toto", "alg": "foobar", "wrappedKey": "foobar"},
                "expiresIn": "5", "roomOwner": "Alexis", "maxSize": 2}))
        .await
        .error(400, 107, "roomName has been deprecated, please store it encrypted inside the context.");
    post(json!({"context": {"alg": "foobar", "wrappedKey": "foobar"}, "expiresIn": "5", "roomOwner": "Alexis", "maxSize": 2}))
        .await
        .error(400, 107, "context should be an object containing `value`, `alg` and `wrappedKey` properties.");
    // LS: bad JSON is a 400 (errno 106 here), never a 500.
    let r = l
        .call_raw(
            "POST",
            "/rooms",
            &Auth::Hawk(&c),
            Some(b"{bad json]"),
            "application/json",
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body["errno"], 106);
    // Not JSON-accepting clients get 406.
    let r = {
        let url = reqwest::Url::parse(&l.server.public_url("/rooms")).expect("url");
        let body = json!({"roomOwner": "A", "roomName": "n", "maxSize": 2}).to_string();
        let h = hawk_header(
            &c,
            "POST",
            &url,
            Some(body.as_bytes()),
            &HawkOpts {
                ts: now_secs(),
                nonce: nonce(),
                hash: None,
                key: None,
            },
        );
        l.client
            .post(url)
            .header("authorization", h)
            .header("content-type", "application/json")
            .header("accept", "text/html")
            .body(body)
            .send()
            .await
            .expect("send")
    };
    assert_eq!(r.status().as_u16(), 406);
    push.clear().await;

    // LS: create with roomName: 201, roomUrl from the template, expiresAt = now + expiresIn h, one push.
    let before = now_secs();
    let r = post(json!({"roomOwner": "Alexis", "roomName": "UX discussion", "maxSize": "3", "expiresIn": "10"})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let token = r.body["roomToken"].as_str().expect("token").to_owned();
    assert_eq!(token.len(), 11);
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert_eq!(
        r.body["roomUrl"],
        format!("http://localhost:3000/content/{token}")
    );
    let expires = r.body["expiresAt"].as_i64().expect("expiresAt");
    assert!((expires - (before + 36000)).abs() <= 2, "{expires}");
    assert_eq!(
        r.header("alert"),
        Some("The roomName parameter has been deprecated, you should use context.")
    );
    let pushes = push.settle().await;
    assert_eq!(pushes.len(), 1, "exactly one push: {pushes:?}");
    assert_eq!(pushes[0].0, "/alexis");
    assert!(pushes[0].1 >= before);
    // LS: the stored record has maxSize as a number, the channel "default" (admin view).
    let admin: Value = support::get(l.server.admin_url(&format!("/api/v1/rooms/{token}")))
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(admin["maxSize"], 3);
    assert_eq!(admin["channel"], "default");

    // LS: with context; the context is stored; a channel is honoured.
    let ctx = json!({"value": "abc", "alg": "AES-GCM", "wrappedKey": "secret"});
    let r =
        post(json!({"roomOwner": "Alexis", "context": ctx, "maxSize": 2, "channel": "nightly"}))
            .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.header("alert").is_none());
    let token2 = r.body["roomToken"].as_str().expect("token").to_owned();
    let admin: Value = support::get(l.server.admin_url(&format!("/api/v1/rooms/{token2}")))
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(admin["context"], ctx);
    assert_eq!(admin["channel"], "nightly");
    // LS validators: expiresIn defaults to defaultTTL (8 h here).
    let expires = r.body["expiresAt"].as_i64().expect("expiresAt");
    assert!((expires - (now_secs() + 8 * 3600)).abs() <= 2, "{expires}");
}

// ---------- GET /rooms/{token} ----------

#[tokio::test]
async fn getting_a_room_shows_what_the_caller_may_see() {
    let l = Loop::start().await;
    let owner = l.session().await;
    let other = l.session().await;
    let token = l.create_room(&owner).await;

    // 404 first, whoever asks.
    l.get_room("notAToken00", &Auth::None)
        .await
        .error(404, 105, "Token not found.");
    l.get_room("notAToken00", &Auth::Hawk(&owner))
        .await
        .error(404, 105, "Token not found.");

    // LS: anonymous → the public subset (context null).
    let r = l.get_room(&token, &Auth::None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        json!({"roomToken": token, "roomName": "UX discussion", "context": null, "roomOwner": "Alexis",
               "roomUrl": format!("http://localhost:3000/content/{token}")})
    );
    // LS: with context and no roomName.
    let ctx = json!({"value": "v", "alg": "a", "wrappedKey": "w"});
    let t2 = l
        .create_room_with(
            &owner,
            json!({"roomOwner": "Alexis", "context": ctx, "maxSize": 2}),
        )
        .await;
    let r = l.get_room(&t2, &Auth::None).await;
    assert_eq!(r.body["context"], ctx);
    assert!(r.body.get("roomName").is_none(), "{r:?}");

    // LS: authenticated but neither participant nor owner → 403 errno 999.
    l.get_room(&token, &Auth::Hawk(&other)).await.error(
        403,
        999,
        "Authenticated user is neither a participant of the room nor the room owner.",
    );
    // LS: owner → full object, clientMaxSize = maxSize, participants [].
    let r = l.get_room(&token, &Auth::Hawk(&owner)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let b = &r.body;
    assert_eq!(b["maxSize"], 3);
    assert_eq!(b["clientMaxSize"], 3);
    assert_eq!(b["participants"], json!([]));
    assert_eq!(b["roomOwner"], "Alexis");
    assert_eq!(b["roomName"], "UX discussion");
    assert_eq!(b["context"], Value::Null);
    for k in ["creationTime", "expiresAt", "ctime"] {
        assert!(b[k].as_i64().is_some(), "{k}: {b}");
    }
    assert!(r.header("server-authorization").is_some());

    // LS: after joins → 36-character roomConnectionId, owner true/false, no internal fields,
    // clientMaxSize the smallest of the participants'.
    assert_eq!(
        l.join(&token, &Auth::Hawk(&owner), "Alexis", 2)
            .await
            .status,
        200
    );
    assert_eq!(
        l.join(&token, &Auth::Hawk(&other), "Natim", 3).await.status,
        200
    );
    // LS: a participant may read it.
    let r = l.get_room(&token, &Auth::Hawk(&other)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["clientMaxSize"], 2);
    let ps = r.body["participants"]
        .as_array()
        .expect("participants")
        .clone();
    assert_eq!(ps.len(), 2);
    for p in &ps {
        assert_eq!(
            p["roomConnectionId"].as_str().map(str::len),
            Some(36),
            "{p}"
        );
        let keys: Vec<&String> = p.as_object().expect("object").keys().collect();
        assert_eq!(
            keys.len(),
            3,
            "only roomConnectionId, displayName, owner: {p}"
        );
        assert!(!r.text.contains("hawkIdHmac") && !r.text.contains("userMac"));
    }
    assert_eq!(ps[0]["displayName"], "Alexis");
    assert_eq!(ps[0]["owner"], true);
    assert_eq!(ps[1]["owner"], false);
}

// ---------- PATCH and DELETE /rooms/{token} ----------

#[tokio::test]
async fn updating_and_deleting_rooms() {
    let l = Loop::start().await;
    let push = PushStub::start().await;
    let owner = l.registered(&push.url("/owner")).await;
    let other = l.session().await;
    let token = l.create_room(&owner).await;
    let path = format!("/rooms/{token}");
    let before = l.get_room(&token, &Auth::Hawk(&owner)).await.body;
    push.clear().await;

    // LS isRoomOwner: a non-owner gets 403.
    l.call(
        "PATCH",
        &path,
        &Auth::Hawk(&other),
        Some(&json!({"roomName": "x"})),
    )
    .await
    .error(
        403,
        999,
        "Authenticated user is not the owner of this room.",
    );
    // LS: no values keeps everything.
    let r = l
        .call("PATCH", &path, &Auth::Hawk(&owner), Some(&json!({})))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["expiresAt"].as_i64().is_some());
    let after = l.get_room(&token, &Auth::Hawk(&owner)).await.body;
    for k in ["roomName", "roomOwner", "maxSize", "creationTime"] {
        assert_eq!(after[k], before[k], "{k}");
    }
    // LS: a full update applies.
    let r = l
        .call("PATCH", &path, &Auth::Hawk(&owner),
              Some(&json!({"roomName": "New name", "roomOwner": "Natim", "maxSize": "2", "expiresIn": "5"})))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let exp = r.body["expiresAt"].as_i64().expect("expiresAt");
    assert!((exp - (now_secs() + 5 * 3600)).abs() <= 2);
    let after = l.get_room(&token, &Auth::Hawk(&owner)).await.body;
    assert_eq!(after["roomName"], "New name");
    assert_eq!(after["roomOwner"], "Natim");
    assert_eq!(after["maxSize"], 2);
    assert_eq!(after["expiresAt"], exp);
    // LS: context null → 400; a context is stored.
    l.call(
        "PATCH",
        &path,
        &Auth::Hawk(&owner),
        Some(&json!({"context": null})),
    )
    .await
    .error(
        400,
        107,
        "context should be an object containing `value`, `alg` and `wrappedKey` properties.",
    );
    let t2 = l
        .create_room_with(&owner, json!({"roomOwner": "A", "context": {"value": "1", "alg": "a", "wrappedKey": "w"}, "maxSize": 2}))
        .await;
    push.clear().await;
    let ctx = json!({"value": "2", "alg": "a", "wrappedKey": "w2"});
    let r = l
        .call(
            "PATCH",
            &format!("/rooms/{t2}"),
            &Auth::Hawk(&owner),
            Some(&json!({"context": ctx})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(l.get_room(&t2, &Auth::None).await.body["context"], ctx);
    // LS: exactly one push per PATCH.
    assert_eq!(push.settle().await.len(), 1);
    // 404 for an unknown token.
    l.call(
        "PATCH",
        "/rooms/unknownRoom",
        &Auth::Hawk(&owner),
        Some(&json!({})),
    )
    .await
    .error(404, 105, "Token not found.");

    // DELETE: a participant is in; a non-owner gets 403; the owner 204, participants cleared, 404 after,
    // exactly one push, a tombstone for ?version.
    assert_eq!(
        l.join(&token, &Auth::Hawk(&other), "Natim", 2).await.status,
        200
    );
    l.call("DELETE", &path, &Auth::Hawk(&other), None)
        .await
        .error(
            403,
            999,
            "Authenticated user is not the owner of this room.",
        );
    push.clear().await;
    let t0 = now_secs();
    let r = l.call("DELETE", &path, &Auth::Hawk(&owner), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(push.settle().await.len(), 1);
    l.get_room(&token, &Auth::None)
        .await
        .error(404, 105, "Token not found.");
    l.call("DELETE", &path, &Auth::Hawk(&owner), None)
        .await
        .error(404, 105, "Token not found.");
    // The participant's next action finds no room.
    l.action(&token, &Auth::Hawk(&other), json!({"action": "refresh"}))
        .await
        .error(404, 105, "Token not found.");
    let r = l
        .call(
            "GET",
            &format!("/rooms?version={t0}"),
            &Auth::Hawk(&owner),
            None,
        )
        .await;
    let list = r.body.as_array().expect("array").clone();
    assert!(
        list.contains(&json!({"roomToken": token, "deleted": true})),
        "{list:?}"
    );
}

// ---------- join ----------

#[tokio::test]
async fn joining_with_hawk() {
    let l = Loop::start().await;
    let push = PushStub::start().await;
    let owner = l.registered(&push.url("/owner")).await;
    let token = l.create_room(&owner).await;
    let path = format!("/rooms/{token}");

    // LS: action missing / invalid.
    l.action(&token, &Auth::Hawk(&owner), json!({}))
        .await
        .error(
            400,
            108,
            "action should be one of join, refresh, status, leave, logDomain",
        );
    l.action(&token, &Auth::Hawk(&owner), json!({"action": "dance"}))
        .await
        .error(
            400,
            107,
            "action should be one of join, refresh, status, leave, logDomain",
        );
    // LS: missing parameters.
    l.action(&token, &Auth::Hawk(&owner), json!({"action": "join"}))
        .await
        .error(400, 108, "Missing: displayName, clientMaxSize");
    l.action(
        &token,
        &Auth::Hawk(&owner),
        json!({"action": "join", "displayName": "A", "clientMaxSize": "many"}),
    )
    .await
    .error(400, 107, "clientMaxSize should be a number.");
    // Unknown room.
    l.join("unknownRoom", &Auth::Hawk(&owner), "A", 2)
        .await
        .error(404, 105, "Token not found.");

    // LS: the answer's exact keys.
    let before = l.get_room(&token, &Auth::Hawk(&owner)).await.body;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    push.clear().await;
    let join_time = now_secs();
    let r = l.join(&token, &Auth::Hawk(&owner), "Alexis", 10).await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut keys: Vec<&String> = r.body.as_object().expect("object").keys().collect();
    keys.sort();
    assert_eq!(keys, ["apiKey", "expires", "sessionId", "sessionToken"]);
    assert_eq!(r.body["apiKey"], "rtcplane");
    assert_eq!(r.body["expires"], 10);
    assert!(
        r.body["sessionToken"]
            .as_str()
            .is_some_and(|t| t.starts_with("T1=="))
    );
    // LS: the owner gets the moderator role.
    assert_eq!(token_claims(&r.body)["role"], "moderator");
    // LS: every owner device is pushed with version ≥ the join time.
    let pushes = push.settle().await;
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert!(pushes[0].1 >= join_time);
    // LS: ctime and expiresAt are extended.
    let after = l.get_room(&token, &Auth::Hawk(&owner)).await.body;
    assert!(
        after["ctime"].as_i64() > before["ctime"].as_i64(),
        "{before} {after}"
    );
    assert!(after["expiresAt"].as_i64() > before["expiresAt"].as_i64());
    assert_eq!(after["creationTime"], before["creationTime"]);

    // LS: CLIENT_REACHED_CAPACITY — a joiner whose clientMaxSize ≤ the participants already there.
    let julie = l.session().await;
    l.join(&token, &Auth::Hawk(&julie), "Julie", 1).await.error(
        400,
        121,
        "Too many participants in the room for you to handle.",
    );
    // LS: a publisher role for others.
    let natim = l.session().await;
    let r = l.join(&token, &Auth::Hawk(&natim), "Natim", 2).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(token_claims(&r.body)["role"], "publisher");
    // LS: ROOM_FULL — two participants with clientMaxSize 2 fill a room of size 3.
    l.join(&token, &Auth::Hawk(&julie), "Julie", 3)
        .await
        .error(400, 202, "The room is full.");
    // LS: a participant may rejoin.
    assert_eq!(
        l.join(&token, &Auth::Hawk(&natim), "Natim", 2).await.status,
        200
    );
    let ps = l.get_room(&token, &Auth::Hawk(&owner)).await.body["participants"].clone();
    assert_eq!(
        ps.as_array().map(Vec::len),
        Some(2),
        "a rejoin replaces: {ps}"
    );
    let _ = path;
}

fn token_claims(join: &Value) -> Value {
    let t = join["sessionToken"].as_str().expect("sessionToken");
    let payload = t
        .strip_prefix("T1==")
        .and_then(|r| r.split('.').next())
        .expect("T1== payload.sig");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

#[tokio::test]
async fn the_owner_slot_and_rejoins() {
    let l = Loop::start().await;
    let owner = l.session().await;
    let room = json!({"roomOwner": "Alexis", "roomName": "UX discussion", "maxSize": "2", "expiresIn": "10"});
    // LS: a spot is kept for the owner in a room of size 2.
    let token = l.create_room_with(&owner, room.clone()).await;
    let u1 = l.session().await;
    let u2 = l.session().await;
    assert_eq!(
        l.join(&token, &Auth::Hawk(&u1), "user1", 2).await.status,
        200
    );
    assert_eq!(
        l.join(&token, &Auth::Hawk(&u2), "user2", 2).await.status,
        400
    );
    assert_eq!(
        l.join(&token, &Auth::Hawk(&owner), "Alexis", 2)
            .await
            .status,
        200
    );
    // LS: the owner may rejoin.
    let token = l.create_room_with(&owner, room.clone()).await;
    assert_eq!(
        l.join(&token, &Auth::Hawk(&owner), "Alexis", 2)
            .await
            .status,
        200
    );
    assert_eq!(
        l.join(&token, &Auth::Hawk(&u1), "user1", 2).await.status,
        200
    );
    assert_eq!(
        l.join(&token, &Auth::Hawk(&owner), "Alexis", 2)
            .await
            .status,
        200
    );
    // LS: a user can join after the room owner.
    let token = l.create_room_with(&owner, room).await;
    assert_eq!(
        l.join(&token, &Auth::Hawk(&owner), "Alexis", 2)
            .await
            .status,
        200
    );
    assert_eq!(
        l.join(&token, &Auth::Hawk(&u2), "user2", 2).await.status,
        200
    );
}

#[tokio::test]
async fn a_changed_media_api_key_renews_the_session_id() {
    // LS: "should refresh the sessionId in case it is obsolete" (Hawk and guest).
    let db = rtcplane_storage::testing::TestDb::new(rtcplane_storage::Backend::Sqlite).await;
    let l = Loop::start_with(&db.url, TEST_CONFIG).await;
    let owner = l.session().await;
    let token = l.create_room(&owner).await;
    let first = l.join(&token, &Auth::Hawk(&owner), "Alexis", 3).await.body;
    let again = l.join(&token, &Auth::Hawk(&owner), "Alexis", 3).await.body;
    assert_eq!(
        first["sessionId"], again["sessionId"],
        "same key, same session"
    );
    drop(l);
    let l = Loop::start_with(
        &db.url,
        &format!("{TEST_CONFIG}media_api_key = \"newkey\"\n"),
    )
    .await;
    let r = l.join(&token, &Auth::None, "Guest", 3).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["apiKey"], "newkey");
    assert_ne!(r.body["sessionId"], first["sessionId"]);
    // The Hawk session survived the restart, and sees the new session too.
    let r2 = l.join(&token, &Auth::Hawk(&owner), "Alexis", 3).await;
    assert_eq!(r2.body["sessionId"], r.body["sessionId"]);
}

// ---------- refresh, status, leave, logDomain (Hawk) ----------

#[tokio::test]
async fn refresh_status_leave_and_log_domain_with_hawk() {
    let l = Loop::start().await;
    let push = PushStub::start().await;
    let owner = l.registered(&push.url("/owner")).await;
    let natim = l.session().await;
    let token = l.create_room(&owner).await;
    assert_eq!(
        l.join(&token, &Auth::Hawk(&natim), "Natim", 2).await.status,
        200
    );
    let before = l.get_room(&token, &Auth::Hawk(&owner)).await.body;

    // LS refresh: touches the participant, returns the next expiration, creationTime unchanged.
    let r = l
        .action(&token, &Auth::Hawk(&natim), json!({"action": "refresh"}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!({"expires": 10}));
    let after = l.get_room(&token, &Auth::Hawk(&owner)).await.body;
    assert_eq!(after["creationTime"], before["creationTime"]);
    // Refresh by a non-participant: 410 errno 111.
    l.action(&token, &Auth::Hawk(&owner), json!({"action": "refresh"}))
        .await
        .error(410, 111, "Participation has expired.");
    // Unauthenticated refresh: 401 Token,Hawk.
    let r = l
        .action(&token, &Auth::None, json!({"action": "refresh"}))
        .await;
    r.error(401, 110, "Unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Token,Hawk"));

    // LS status: 204 with an empty body.
    let r = l.action(&token, &Auth::Hawk(&natim), status_body()).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.text, "");
    // LS status: an unknown state is accepted ("hello world").
    let mut b = status_body();
    b["state"] = json!("hello world");
    b["event"] = json!("Session.whatever");
    assert_eq!(l.action(&token, &Auth::Hawk(&natim), b).await.status, 204);
    // LS status: not joined → 400/203.
    l.action(&token, &Auth::Hawk(&owner), status_body())
        .await
        .error(400, 203, "Can't update status for a room you aren't in.");
    // LS status: each missing field and each invalid counter, with its message.
    for field in [
        "event",
        "state",
        "connections",
        "sendStreams",
        "recvStreams",
    ] {
        let mut b = status_body();
        b.as_object_mut().expect("object").remove(field);
        l.action(&token, &Auth::Hawk(&natim), b).await.error(
            400,
            107,
            &format!("'{field}' field is missing in body."),
        );
    }
    l.action(&token, &Auth::Hawk(&natim), json!({"action": "status"}))
        .await
        .error(400, 107, "'event' field is missing in body.");
    for field in ["connections", "sendStreams", "recvStreams"] {
        for bad in [json!("abc"), json!(-1)] {
            let mut b = status_body();
            b[field] = bad;
            l.action(&token, &Auth::Hawk(&natim), b).await.error(
                400,
                107,
                &format!("Invalid {field} number."),
            );
        }
    }
    // parseInt semantics: "3abc" is 3.
    let mut b = status_body();
    b["connections"] = json!("3abc");
    b["sendStreams"] = json!(1);
    b["recvStreams"] = json!("0");
    assert_eq!(l.action(&token, &Auth::Hawk(&natim), b).await.status, 204);
    // The last status is stored with the server's derived state (admin view).
    let admin: Value = support::get(l.server.admin_url(&format!("/api/v1/rooms/{token}")))
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    let st = &admin["participants"][0]["status"];
    assert_eq!(st["connections"], 3, "{admin}");
    assert_eq!(st["derived_state"], "sending");

    // LS logDomain: 204; missing and malformed domains; not joined.
    let r = l
        .action(
            &token,
            &Auth::Hawk(&natim),
            json!({"action": "logDomain", "domains": [{"domain": "mozilla.org", "count": 4}]}),
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.text, "");
    l.action(&token, &Auth::Hawk(&natim), json!({"action": "logDomain"}))
        .await
        .error(400, 108, "Missing: domains");
    let msg = "Domains must be a list of objects with both a ``domain`` and ``count`` property.";
    l.action(
        &token,
        &Auth::Hawk(&natim),
        json!({"action": "logDomain", "domains": [{"count": 4}]}),
    )
    .await
    .error(400, 107, msg);
    l.action(
        &token,
        &Auth::Hawk(&natim),
        json!({"action": "logDomain", "domains": [{"domain": "a"}]}),
    )
    .await
    .error(400, 107, msg);
    l.action(
        &token,
        &Auth::Hawk(&owner),
        json!({"action": "logDomain", "domains": [{"domain": "a", "count": 1}]}),
    )
    .await
    .error(400, 203, "Can't update status for a room you aren't in.");
    let metrics = support::get(l.server.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("rtcplane_rooms_shared_domains_total 4"),
        "{metrics}"
    );

    // LS leave: not joined → 400/203; a participant is removed, the owner pushed, 204.
    l.action(&token, &Auth::Hawk(&owner), json!({"action": "leave"}))
        .await
        .error(400, 203, "Unable to leave a room you have not joined.");
    push.clear().await;
    let r = l
        .action(&token, &Auth::Hawk(&natim), json!({"action": "leave"}))
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(push.settle().await.len(), 1);
    assert_eq!(
        l.get_room(&token, &Auth::Hawk(&owner)).await.body["participants"],
        json!([])
    );
    // Leaving twice: not a participant any more.
    l.action(&token, &Auth::Hawk(&natim), json!({"action": "leave"}))
        .await
        .error(400, 203, "Unable to leave a room you have not joined.");
}

// ---------- link-clickers (Basic) ----------

#[tokio::test]
async fn link_clickers_join_with_no_auth_and_continue_with_basic() {
    let l = Loop::start().await;
    let push = PushStub::start().await;
    let owner = l.registered(&push.url("/owner")).await;
    let token = l.create_room(&owner).await;

    // LS Token: action missing; join params missing.
    l.action(&token, &Auth::None, json!({})).await.error(
        400,
        108,
        "action should be one of join, refresh, status, leave, logDomain",
    );
    l.action(&token, &Auth::None, json!({"action": "join"}))
        .await
        .error(400, 108, "Missing: displayName, clientMaxSize");
    // LS Token: a join returns the participant information; one push.
    push.clear().await;
    let r = l.join(&token, &Auth::None, "Natim", 10).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(token_claims(&r.body)["role"], "publisher");
    let t1 = r.body["sessionToken"].as_str().expect("token").to_owned();
    assert_eq!(
        push.settle().await.len(),
        1,
        "owner notified of a guest join"
    );
    // Basic with `token:` and with `token` both work (the standalone client sends no colon).
    let r = l.get_room(&token, &Auth::Basic(&t1)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["participants"][0]["owner"], false);
    let bare = format!("Basic {}", STANDARD.encode(&t1));
    assert_eq!(l.get_room(&token, &Auth::Raw(&bare)).await.status, 200);
    // LS auth_test: invalid token → 401 with the Basic challenge.
    let r = l.get_room(&token, &Auth::Basic("not-a-token")).await;
    r.error(401, 110, "Invalid token; it may have expired.");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic error=\"Invalid token; it may have expired.\"")
    );
    // An unsupported scheme.
    let r = l.get_room(&token, &Auth::Raw("Digest abc")).await;
    r.error(401, 110, "Unsupported");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic,Hawk error=\"Unsupported\"")
    );
    // A token of another room does not open this one.
    let other_room = l.create_room(&owner).await;
    assert_eq!(l.get_room(&other_room, &Auth::Basic(&t1)).await.status, 401);

    // LS Token: refresh works with Basic; status too.
    let r = l
        .action(&token, &Auth::Basic(&t1), json!({"action": "refresh"}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!({"expires": 10}));
    assert_eq!(
        l.action(&token, &Auth::Basic(&t1), status_body())
            .await
            .status,
        204
    );

    // LS Token: CLIENT_REACHED_CAPACITY and ROOM_FULL for guests.
    let r = l.join(&token, &Auth::None, "Julie", 1).await;
    r.error(
        400,
        121,
        "Too many participants in the room for you to handle.",
    );
    let r = l.join(&token, &Auth::None, "Julie", 2).await;
    assert_eq!(r.status, 200, "{r:?}");
    let t2 = r.body["sessionToken"].as_str().expect("token").to_owned();
    let r = l.join(&token, &Auth::None, "Max", 3).await;
    r.error(400, 202, "The room is full.");

    // LS Token: leave removes the participant and pushes the owner; afterwards Basic fails with 401.
    push.clear().await;
    let r = l
        .action(&token, &Auth::Basic(&t2), json!({"action": "leave"}))
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(push.settle().await.len(), 1);
    let r = l.get_room(&token, &Auth::Basic(&t2)).await;
    assert_eq!(r.status, 401, "a Basic user who has left: {r:?}");
    let r = l
        .action(&token, &Auth::Basic(&t2), json!({"action": "refresh"}))
        .await;
    assert_eq!(r.status, 401);
}

// ---------- expiry ----------

#[tokio::test]
async fn participants_expire_and_the_owner_is_told() {
    let l = Loop::start_with(
        "",
        &TEST_CONFIG.replace("participant_ttl = \"10s\"", "participant_ttl = \"600ms\""),
    )
    .await;
    let push = PushStub::start().await;
    let owner = l.registered(&push.url("/owner")).await;
    let natim = l.session().await;
    let token = l.create_room(&owner).await;
    let mut sse = SseReader::connect(
        &l.server
            .admin_url("/api/v1/events?types=rooms.participant.*"),
    )
    .await
    .expect("sse");
    let r = l.join(&token, &Auth::Hawk(&natim), "Natim", 3).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["expires"], 0.6);
    let guest = l.join(&token, &Auth::None, "Guest", 3).await.body;
    let guest_token = guest["sessionToken"].as_str().expect("token").to_owned();
    let joined = sse
        .next_of("rooms.participant.joined", Duration::from_secs(5))
        .await
        .expect("joined event");
    assert_eq!(joined["data"]["displayName"], "Natim");
    push.clear().await;
    // LS: "should expire participants automatically" and "notify the room owner when a participant expires".
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        l.get_room(&token, &Auth::Hawk(&owner)).await.body["participants"],
        json!([])
    );
    let pushes = push.settle().await;
    assert!(
        !pushes.is_empty(),
        "the owner is pushed when participants expire"
    );
    let left = sse
        .next_of("rooms.participant.left", Duration::from_secs(5))
        .await
        .expect("left event");
    assert_eq!(left["data"]["reason"], "expired");
    // LS refresh: an expired Hawk participant gets 410/111; an expired link-clicker 401.
    l.action(&token, &Auth::Hawk(&natim), json!({"action": "refresh"}))
        .await
        .error(410, 111, "Participation has expired.");
    let r = l
        .action(
            &token,
            &Auth::Basic(&guest_token),
            json!({"action": "refresh"}),
        )
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn rooms_expire_and_sliding_expiry_keeps_busy_rooms() {
    // A sub-hour default_ttl (tests only) is used as is; extend_ttl slides it on join and leave.
    let l = Loop::start_with(
        "",
        &TEST_CONFIG.replace(
            "default_ttl = \"8h\"",
            "default_ttl = \"1s\"\nextend_ttl = \"2s\"",
        ),
    )
    .await;
    let owner = l.session().await;
    let quiet = l
        .create_room_with(
            &owner,
            json!({"roomOwner": "A", "roomName": "quiet", "maxSize": 2}),
        )
        .await;
    let busy = l
        .create_room_with(
            &owner,
            json!({"roomOwner": "A", "roomName": "busy", "maxSize": 2}),
        )
        .await;
    assert_eq!(l.join(&busy, &Auth::Hawk(&owner), "A", 2).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // An expired room is 404/105, not 410.
    l.get_room(&quiet, &Auth::None)
        .await
        .error(404, 105, "Token not found.");
    assert_eq!(l.get_room(&busy, &Auth::None).await.status, 200);
    let r = l.call("GET", "/rooms", &Auth::Hawk(&owner), None).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1), "{r:?}");
}

// ---------- GET /rooms and PATCH /rooms ----------

#[tokio::test]
async fn listing_rooms_with_versions_and_tombstones() {
    let l = Loop::start().await;
    let owner = l.session().await;
    let natim = l.session().await;
    let a = l.create_room(&owner).await;
    assert_eq!(
        l.join(&a, &Auth::Hawk(&natim), "Natim", 2).await.status,
        200
    );
    // Someone else's room is not listed.
    let _theirs = l.create_room(&natim).await;

    // LS: the list includes participants and hides internal fields.
    let r = l.call("GET", "/rooms", &Auth::Hawk(&owner), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let list = r.body.as_array().expect("array").clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["roomToken"], a);
    assert_eq!(list[0]["participants"][0]["displayName"], "Natim");
    assert!(
        !r.text.contains("Hmac") && !r.text.contains("owner_hash") && !r.text.contains("sessionId")
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let version = now_secs();
    let b = l.create_room(&owner).await;
    let c = l.create_room(&owner).await;
    assert_eq!(
        l.call("DELETE", &format!("/rooms/{c}"), &Auth::Hawk(&owner), None)
            .await
            .status,
        204
    );

    // LS: only rooms with ctime ≥ version, and tombstones with a version.
    let r = l
        .call(
            "GET",
            &format!("/rooms?version={version}"),
            &Auth::Hawk(&owner),
            None,
        )
        .await;
    let list = r.body.as_array().expect("array").clone();
    let tokens: Vec<&str> = list
        .iter()
        .filter_map(|x| x["roomToken"].as_str())
        .collect();
    assert!(
        tokens.contains(&b.as_str()) && !tokens.contains(&a.as_str()),
        "{list:?}"
    );
    assert!(
        list.contains(&json!({"roomToken": c, "deleted": true})),
        "{list:?}"
    );
    // LS: no tombstones without a version.
    let r = l.call("GET", "/rooms", &Auth::Hawk(&owner), None).await;
    assert!(!r.text.contains("deleted"), "{}", r.text);
    assert_eq!(r.body.as_array().map(Vec::len), Some(2));
    // A join moves ctime, so the room is listed again for a later version.
    assert_eq!(l.join(&a, &Auth::Hawk(&owner), "A", 2).await.status, 200);
    let r = l
        .call(
            "GET",
            &format!("/rooms?version={version}"),
            &Auth::Hawk(&owner),
            None,
        )
        .await;
    assert!(r.text.contains(&a), "{}", r.text);
}

#[tokio::test]
async fn batch_delete_answers_per_token() {
    let l = Loop::start().await;
    let push = PushStub::start().await;
    let owner = l.registered(&push.url("/owner")).await;
    let other = l.session().await;
    let a = l.create_room(&owner).await;
    let b = l.create_room(&owner).await;
    let theirs = l.create_room(&other).await;
    assert_eq!(l.join(&a, &Auth::Hawk(&other), "x", 2).await.status, 200);

    let del = |tokens: Value| {
        let l = &l;
        let owner = &owner;
        async move {
            l.call(
                "PATCH",
                "/rooms",
                &Auth::Hawk(owner),
                Some(&json!({"deleteRoomTokens": tokens})),
            )
            .await
        }
    };
    // LS: 400 when the list is empty; 108 when absent.
    del(json!([]))
        .await
        .error(400, 107, "deleteRoomTokens should not be empty.");
    l.call("PATCH", "/rooms", &Auth::Hawk(&owner), Some(&json!({})))
        .await
        .error(400, 108, "Missing: deleteRoomTokens");
    // LS: 404 with the per-token map when none is the caller's.
    let r = del(json!([theirs, "unknown"])).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        r.body,
        json!({"responses": {
            theirs.clone(): {"code": 404, "errno": 105, "error": "Room not found."},
            "unknown": {"code": 404, "errno": 105, "error": "Room not found."}}})
    );
    assert_eq!(
        l.get_room(&theirs, &Auth::None).await.status,
        200,
        "not deleted"
    );
    // LS: 207 when some are found; participants cleared, rooms gone, one push.
    push.clear().await;
    let r = del(json!([a, b, "unknown"])).await;
    assert_eq!(r.status, 207, "{r:?}");
    assert_eq!(r.body["responses"][&a], json!({"code": 200}));
    assert_eq!(r.body["responses"][&b], json!({"code": 200}));
    assert_eq!(r.body["responses"]["unknown"]["code"], 404);
    assert_eq!(push.settle().await.len(), 1);
    for t in [&a, &b] {
        l.get_room(t, &Auth::None)
            .await
            .error(404, 105, "Token not found.");
    }
}

// ---------- bodies, limits, events, CORS, admin ----------

#[tokio::test]
async fn bad_bodies_and_unknown_things_get_loop_errors_never_a_500() {
    let l = Loop::start().await;
    let owner = l.session().await;
    let token = l.create_room(&owner).await;
    let path = format!("/rooms/{token}");
    // Oversized body: 413 errno 113.
    let big = vec![b'a'; 70 * 1024];
    let r = l
        .call_raw("POST", &path, &Auth::None, Some(&big), "application/json")
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.body["errno"], 113);
    // Not JSON, not an object, garbage types.
    for body in [&b"{"[..], b"[1,2]", b"\"join\"", b"\xff\xfe"] {
        let r = l
            .call_raw("POST", &path, &Auth::None, Some(body), "application/json")
            .await;
        assert_eq!(r.status, 400, "{body:?}: {r:?}");
        assert_eq!(r.body["errno"], 106);
    }
    for body in [
        json!({"action": 5}),
        json!({"action": ["join"]}),
        json!({"action": "join", "displayName": {"a": 1}, "clientMaxSize": [1]}),
        json!({"action": "join", "displayName": null, "clientMaxSize": null}),
        json!({"action": "status", "event": 1, "state": null, "connections": {}, "sendStreams": 1, "recvStreams": 1}),
    ] {
        let r = l.action(&token, &Auth::Hawk(&owner), body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
    }
    for body in [
        json!({"roomName": 5, "roomOwner": "a", "maxSize": 2}),
        json!({"roomName": "a", "roomOwner": null, "maxSize": 2}),
        json!({"roomName": "a", "roomOwner": "a", "maxSize": "abc"}),
        json!({"roomName": "a", "roomOwner": "a", "maxSize": 0}),
        json!({"roomName": "a", "roomOwner": "a", "maxSize": 2, "expiresIn": "soon"}),
        json!({"context": "x", "roomOwner": "a", "maxSize": 2}),
    ] {
        let r = l
            .call("POST", "/rooms", &Auth::Hawk(&owner), Some(&body))
            .await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert_eq!(r.body["errno"], 107, "{body}");
    }
    // A form-encoded join works as in loop-server (body-parser urlencoded).
    let r = l
        .call_raw(
            "POST",
            &path,
            &Auth::None,
            Some(b"action=join&displayName=Form&clientMaxSize=3"),
            "application/x-www-form-urlencoded",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Very long path tokens are simply unknown.
    let long = "a".repeat(400);
    l.get_room(&long, &Auth::None)
        .await
        .error(404, 105, "Token not found.");
    // CORS for the link-clicker app.
    let r = l
        .client
        .request(reqwest::Method::OPTIONS, l.server.public_url(&path))
        .header("origin", "https://hello.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://hello.example")
    );
}

#[tokio::test]
async fn events_and_the_admin_api() {
    let l = Loop::start().await;
    let mut sse = SseReader::connect(&l.server.admin_url("/api/v1/events?types=rooms.*"))
        .await
        .expect("sse");
    // The admin routes are in the OpenAPI document.
    let doc: Value = support::get(l.server.admin_url("/api/v1/openapi.json"))
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    for p in [
        "/api/v1/rooms",
        "/api/v1/rooms/{token}",
        "/api/v1/rooms/{token}/participants/{id}",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} not documented");
    }
    let owner = l.session().await;
    let token = l.create_room(&owner).await;
    let ev = sse
        .next_of("rooms.room.created", Duration::from_secs(5))
        .await
        .expect("created");
    assert_eq!(ev["subject"], token);
    assert_eq!(ev["data"]["maxSize"], 3);
    let r = l
        .call(
            "PATCH",
            &format!("/rooms/{token}"),
            &Auth::Hawk(&owner),
            Some(&json!({"roomOwner": "B"})),
        )
        .await;
    assert_eq!(r.status, 200);
    sse.next_of("rooms.room.updated", Duration::from_secs(5))
        .await
        .expect("updated");
    let guest = l.join(&token, &Auth::None, "Guest", 3).await.body;
    let guest_token = guest["sessionToken"].as_str().expect("token").to_owned();
    let ev = sse
        .next_of("rooms.participant.joined", Duration::from_secs(5))
        .await
        .expect("joined");
    assert_eq!(ev["data"]["role"], "publisher");
    let id = ev["data"]["roomConnectionId"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        l.action(&token, &Auth::Basic(&guest_token), status_body())
            .await
            .status,
        204
    );
    let ev = sse
        .next_of("rooms.status", Duration::from_secs(5))
        .await
        .expect("status");
    assert_eq!(ev["data"]["derivedState"], "sendrecv");
    assert_eq!(ev["data"]["state"], "init");

    // Admin: list, show, kick (the guest's token stops working), delete.
    let list: Value = support::get(l.server.admin_url("/api/v1/rooms"))
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["rooms"][0]["roomToken"], token);
    let r = support::client()
        .delete(
            l.server
                .admin_url(&format!("/api/v1/rooms/{token}/participants/{id}")),
        )
        .send()
        .await
        .expect("kick");
    assert_eq!(r.status().as_u16(), 204);
    let ev = sse
        .next_of("rooms.participant.left", Duration::from_secs(5))
        .await
        .expect("left");
    assert_eq!(ev["data"]["reason"], "removed");
    assert_eq!(
        l.get_room(&token, &Auth::Basic(&guest_token)).await.status,
        401
    );
    let r = support::client()
        .delete(
            l.server
                .admin_url(&format!("/api/v1/rooms/{token}/participants/{id}")),
        )
        .send()
        .await
        .expect("kick again");
    assert_eq!(r.status().as_u16(), 404);
    let r = support::client()
        .delete(l.server.admin_url(&format!("/api/v1/rooms/{token}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 204);
    let ev = sse
        .next_of("rooms.room.deleted", Duration::from_secs(5))
        .await
        .expect("deleted");
    assert_eq!(ev["data"]["reason"], "deleted");
    let r = support::get(l.server.admin_url(&format!("/api/v1/rooms/{token}")))
        .await
        .expect("show");
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn joins_carry_turn_credentials_when_the_relay_has_a_secret() {
    let port = support::free_port();
    let l = Loop::start_env(
        "",
        &format!(
            "{TEST_CONFIG}\n[turn]\nenabled = true\nlisten_udp = [\"127.0.0.1:{port}\"]\nlisten_tcp = []\nstatic_auth_secrets = [\"s3cret\"]\n"
        ),
        &[("RTCPLANE__TURN__ENABLED", "true")],
    )
    .await;
    let owner = l.session().await;
    let token = l.create_room(&owner).await;
    let r = l.join(&token, &Auth::Hawk(&owner), "A", 2).await;
    assert_eq!(r.status, 200, "{r:?}");
    let ice = &r.body["iceServers"][0];
    let username = ice["username"].as_str().expect("username");
    let (expiry, user) = username.split_once(':').expect("<expiry>:<user>");
    assert!(expiry.parse::<i64>().expect("expiry") > now_secs() + 3600);
    assert_eq!(user.len(), 36, "the roomConnectionId");
    let want = STANDARD.encode({
        let mut m = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(b"s3cret").expect("key");
        m.update(username.as_bytes());
        m.finalize().into_bytes()
    });
    assert_eq!(ice["credential"], want);
    assert!(
        ice["urls"][0]
            .as_str()
            .is_some_and(|u| u.starts_with("turn:")),
        "{ice}"
    );
}

// ---------- the other backends ----------

async fn smoke(backend: rtcplane_storage::Backend) {
    let db = rtcplane_storage::testing::TestDb::new(backend).await;
    let l = Loop::start_with(&db.url, TEST_CONFIG).await;
    let push = PushStub::start().await;
    let owner = l.registered(&push.url("/o")).await;
    let token = l.create_room(&owner).await;
    assert_eq!(
        l.join(&token, &Auth::Hawk(&owner), "Alexis", 2)
            .await
            .status,
        200
    );
    let guest = l.join(&token, &Auth::None, "Guest", 3).await;
    assert_eq!(guest.status, 200, "{guest:?}");
    let gt = guest.body["sessionToken"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        l.action(&token, &Auth::Basic(&gt), status_body())
            .await
            .status,
        204
    );
    assert_eq!(
        l.action(&token, &Auth::Basic(&gt), json!({"action": "refresh"}))
            .await
            .status,
        200
    );
    let r = l.get_room(&token, &Auth::Hawk(&owner)).await;
    assert_eq!(
        r.body["participants"].as_array().map(Vec::len),
        Some(2),
        "{r:?}"
    );
    assert_eq!(r.body["clientMaxSize"], 2);
    l.join(&token, &Auth::None, "Third", 3)
        .await
        .error(400, 202, "The room is full.");
    assert_eq!(
        l.action(&token, &Auth::Basic(&gt), json!({"action": "leave"}))
            .await
            .status,
        204
    );
    let t0 = now_secs();
    let r = l
        .call(
            "PATCH",
            "/rooms",
            &Auth::Hawk(&owner),
            Some(&json!({"deleteRoomTokens": [token]})),
        )
        .await;
    assert_eq!(r.status, 207, "{r:?}");
    let r = l
        .call(
            "GET",
            &format!("/rooms?version={t0}"),
            &Auth::Hawk(&owner),
            None,
        )
        .await;
    assert_eq!(r.body, json!([{"roomToken": token, "deleted": true}]));
    assert!(push.settle().await.len() >= 3);
    // The sweeper's statements ran (every 100 ms) without a database error.
    let log = l.server.log();
    assert!(!log.contains("rooms: sweeping"), "{log}");
}

#[tokio::test]
async fn the_flow_works_on_postgres() {
    smoke(rtcplane_storage::Backend::Postgres).await;
}

#[tokio::test]
async fn the_flow_works_on_mariadb() {
    smoke(rtcplane_storage::Backend::MySql).await;
}

/// LS: "should return a 503 in case of storage error" (status, logDomain, batch delete, GET /rooms): here
/// the database link is really cut.
#[tokio::test]
async fn a_lost_database_is_503_errno_201_with_retry_after() {
    let db = rtcplane_storage::testing::TestDb::new(rtcplane_storage::Backend::Postgres).await;
    let target: SocketAddr = "127.0.0.1:5432".parse().expect("addr");
    let proxy = support::Proxy::start(target).await.expect("proxy");
    let proxied = db
        .url
        .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(proxied, db.url, "test database URL must use 127.0.0.1:5432");
    let l = Loop::start_with(&proxied, TEST_CONFIG).await;
    let owner = l.session().await;
    let token = l.create_room(&owner).await;
    assert_eq!(
        l.join(&token, &Auth::Hawk(&owner), "A", 2).await.status,
        200
    );
    proxy.cut();
    for r in [
        l.call("GET", "/rooms", &Auth::Hawk(&owner), None).await,
        l.action(&token, &Auth::None, status_body()).await,
        l.call(
            "PATCH",
            "/rooms",
            &Auth::Hawk(&owner),
            Some(&json!({"deleteRoomTokens": [token]})),
        )
        .await,
    ] {
        r.error(503, 201, "Service Unavailable");
        assert!(r.header("retry-after").is_some(), "{r:?}");
    }
    proxy.restore();
    let mut ok = false;
    for _ in 0..50 {
        if l.call("GET", "/rooms", &Auth::Hawk(&owner), None)
            .await
            .status
            == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "back once the database is");
}

#[tokio::test]
async fn the_owner_removes_a_participant() {
    let l = Loop::start().await;
    let owner = l.session().await;
    let natim = l.session().await;
    let token = l.create_room(&owner).await;
    assert_eq!(
        l.join(&token, &Auth::Hawk(&natim), "Natim", 3).await.status,
        200
    );
    let guest = l.join(&token, &Auth::None, "Guest", 3).await.body;
    let gt = guest["sessionToken"].as_str().expect("token").to_owned();
    let ps = l.get_room(&token, &Auth::Hawk(&owner)).await.body["participants"].clone();
    let id_of = |name: &str| {
        ps.as_array()
            .and_then(|a| a.iter().find(|p| p["displayName"] == name))
            .and_then(|p| p["roomConnectionId"].as_str())
            .expect("participant")
            .to_owned()
    };
    let (natim_id, guest_id) = (id_of("Natim"), id_of("Guest"));
    // Only the owner may.
    l.call(
        "DELETE",
        &format!("/rooms/{token}/participants/{guest_id}"),
        &Auth::Hawk(&natim),
        None,
    )
    .await
    .error(
        403,
        999,
        "Authenticated user is not the owner of this room.",
    );
    let r = l
        .call(
            "DELETE",
            &format!("/rooms/{token}/participants/{guest_id}"),
            &Auth::Hawk(&owner),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(l.get_room(&token, &Auth::Basic(&gt)).await.status, 401);
    let r = l
        .call(
            "DELETE",
            &format!("/v0/rooms/{token}/participants/{natim_id}"),
            &Auth::Hawk(&owner),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    l.action(&token, &Auth::Hawk(&natim), json!({"action": "refresh"}))
        .await
        .error(410, 111, "Participation has expired.");
    l.call(
        "DELETE",
        &format!("/rooms/{token}/participants/{natim_id}"),
        &Auth::Hawk(&owner),
        None,
    )
    .await
    .error(404, 105, "Participant not found.");
}

/// Concurrent joins never overfill a room: the capacity check and the insert are one transaction.
async fn concurrent_joins(storage: &str) {
    let l = Arc::new(Loop::start_with(storage, TEST_CONFIG).await);
    let owner = l.session().await;
    let token = l.create_room(&owner).await;
    let joins: Vec<_> = (0..12)
        .map(|i| {
            let l = l.clone();
            let token = token.clone();
            tokio::spawn(async move {
                l.join(&token, &Auth::None, &format!("g{i}"), 3)
                    .await
                    .status
            })
        })
        .collect();
    let mut ok = 0;
    for j in joins {
        let status = j.await.expect("join task");
        assert!(status == 200 || status == 400, "{status}");
        if status == 200 {
            ok += 1;
        }
    }
    // maxSize 3 with a slot kept for the owner: two guests.
    assert_eq!(ok, 2, "joins that succeeded");
    let r = l.get_room(&token, &Auth::Hawk(&owner)).await;
    assert_eq!(r.body["participants"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn concurrent_joins_never_overfill_a_room_on_sqlite() {
    concurrent_joins("").await;
}

#[tokio::test]
async fn concurrent_joins_never_overfill_a_room_on_postgres() {
    let db = rtcplane_storage::testing::TestDb::new(rtcplane_storage::Backend::Postgres).await;
    concurrent_joins(&db.url).await;
}

#[tokio::test]
async fn concurrent_joins_never_overfill_a_room_on_mariadb() {
    let db = rtcplane_storage::testing::TestDb::new(rtcplane_storage::Backend::MySql).await;
    concurrent_joins(&db.url).await;
}
