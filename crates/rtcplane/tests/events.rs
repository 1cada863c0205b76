//! Events out: signed webhooks from the durable outbox (retries, restart, dead letter, replay), SSE resume
//! with Last-Event-ID, and the Redis sink — against a real HTTP receiver that verifies Standard Webhooks
//! signatures with its own code, on SQLite, PostgreSQL and MariaDB.

// Tests spawn real processes and poll real servers with std time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use rtcplane_storage::Backend;
use rtcplane_storage::testing::TestDb;
use serde_json::{Value, json};
use support::{PrivateRedis, Server, SseReader, free_port};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// ---------- a Standard Webhooks receiver, written from the specification ----------

/// Verifies `webhook-signature` for `id.timestamp.body` with a `whsec_` secret; the header may carry several
/// space-separated `v1,<base64>` signatures. The timestamp must be within five minutes.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| format!("missing {name}"))
    };
    let (id, ts, sigs) = (
        get("webhook-id")?,
        get("webhook-timestamp")?,
        get("webhook-signature")?,
    );
    let ts: i64 = ts.parse().map_err(|_| "bad timestamp".to_owned())?;
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return Err("timestamp outside tolerance".into());
    }
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .map_err(|e| e.to_string())?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    for sig in sigs.split(' ') {
        if let Some(("v1", value)) = sig.split_once(',')
            && value == expected
        {
            return Ok(());
        }
    }
    Err("no matching v1 signature".into())
}

#[test]
fn the_test_verifier_rejects_tampering() {
    let mut h = HeaderMap::new();
    let now = chrono::Utc::now().timestamp();
    let body = br#"{"a":1}"#;
    let key = STANDARD
        .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .expect("b64");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("msg_1.{now}.").as_bytes());
    mac.update(body);
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    h.insert("webhook-id", "msg_1".parse().expect("hv"));
    h.insert("webhook-timestamp", now.to_string().parse().expect("hv"));
    h.insert(
        "webhook-signature",
        format!("v1,bm90IGl0 v1,{sig}").parse().expect("hv"),
    );
    assert_eq!(verify(SECRET, &h, body), Ok(()));
    assert!(verify(SECRET, &h, br#"{"a":2}"#).is_err());
    h.insert("webhook-id", "msg_2".parse().expect("hv"));
    assert!(verify(SECRET, &h, body).is_err());
}

#[derive(Default)]
struct Received {
    /// Status to answer for the next requests, consumed front first; then 200.
    script: Vec<u16>,
    /// Answer this to everything once the script is used up (200 when None).
    always: Option<u16>,
    /// Every request: (webhook-id, status answered).
    requests: Vec<(String, u16)>,
    /// Accepted events (2xx answered), as received.
    accepted: Vec<Value>,
    bad_signatures: Vec<String>,
}

struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        Self::start_on(free_port()).await
    }

    async fn start_on(port: u16) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(Received::default()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Received) -> T) -> T {
        f(&mut self.state.lock().expect("lock"))
    }

    fn accepted(&self) -> Vec<Value> {
        self.with(|r| r.accepted.clone())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook(
    State(state): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut r = state.lock().expect("lock");
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Err(e) = verify(SECRET, &headers, &body) {
        r.bad_signatures.push(e);
        r.requests.push((id, 401));
        return StatusCode::UNAUTHORIZED;
    }
    let status = if r.script.is_empty() {
        r.always.unwrap_or(200)
    } else {
        r.script.remove(0)
    };
    r.requests.push((id, status));
    if (200..300).contains(&status) {
        r.accepted
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

// ---------- helpers ----------

fn config(receiver_url: &str, extra: &str) -> String {
    format!(
        r#"
[webhooks]
retry_initial = "100ms"
retry_max_interval = "300ms"
poll_interval = "50ms"
timeout = "2s"
{extra}

[[webhooks.endpoints]]
id = "test"
url = "{receiver_url}"
secret = "{SECRET}"
events = ["custom.test.*"]
"#
    )
}

async fn publish(server: &Server, ty: &str, subject: &str) -> anyhow::Result<String> {
    let resp = support::client()
        .post(server.admin_url("/api/v1/events"))
        .json(&json!({"type": ty, "subject": subject, "data": {"n": subject}}))
        .send()
        .await?;
    if resp.status() != 202 {
        bail!("publish {ty}: {} {}", resp.status(), resp.text().await?);
    }
    let v: Value = resp.json().await?;
    Ok(v["id"].as_str().context("id")?.to_owned())
}

async fn eventually<T>(
    what: &str,
    within: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_json(url: &str) -> anyhow::Result<Value> {
    Ok(support::get(url).await?.json().await?)
}

async fn deliveries(server: &Server) -> anyhow::Result<Vec<Value>> {
    let v = get_json(&server.admin_url("/api/v1/webhooks/test/deliveries")).await?;
    Ok(v["deliveries"].as_array().cloned().unwrap_or_default())
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

// ---------- retries: exactly once after N failures, in order per subject ----------

async fn retried_until_accepted_exactly_once(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await?;
    receiver.with(|r| r.script = vec![500, 503, 500]);
    let server = Server::builder()
        .storage(&db.url)
        .config(&config(&receiver.url(), ""))
        .start()
        .await?;
    let id = publish(&server, "custom.test.retry", "s1").await?;
    // Not for this endpoint's filter: never delivered.
    publish(&server, "custom.other", "s1").await?;
    // Same subject, published after: must arrive after the first, even though the first is retrying.
    let second = publish(&server, "custom.test.retry", "s1").await?;

    eventually("both accepted", Duration::from_secs(20), async || {
        (receiver.accepted().len() >= 2).then_some(())
    })
    .await?;
    // Nothing more arrives: exactly once each.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let accepted = receiver.accepted();
    let ids: Vec<&str> = accepted.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, vec![id.as_str(), second.as_str()], "{accepted:?}");
    assert_eq!(accepted[0]["type"], "custom.test.retry");
    assert_eq!(accepted[0]["data"]["n"], "s1");
    assert_eq!(accepted[0]["specversion"], "1.0");
    let (requests, bad) = receiver.with(|r| (r.requests.clone(), r.bad_signatures.clone()));
    assert!(bad.is_empty(), "{bad:?}");
    // Three failures of the first, then its success, then the second (ordered per subject).
    let statuses: Vec<(String, u16)> = requests;
    assert_eq!(
        statuses,
        vec![
            (id.clone(), 500),
            (id.clone(), 503),
            (id.clone(), 500),
            (id.clone(), 200),
            (second.clone(), 200)
        ]
    );

    // The delivery log tells the story.
    let list = deliveries(&server).await?;
    assert_eq!(list.len(), 2, "{list:?}");
    let first = list
        .iter()
        .find(|d| d["event_id"] == id.as_str())
        .context("first")?;
    assert_eq!(first["state"], "delivered");
    assert_eq!(first["attempts"], 4);
    assert_eq!(first["last_status"], 200);
    let detail =
        get_json(&server.admin_url(&format!("/api/v1/webhooks/test/deliveries/{}", first["id"])))
            .await?;
    let statuses: Vec<i64> = detail["attempt_log"]
        .as_array()
        .context("attempts")?
        .iter()
        .filter_map(|a| a["status"].as_i64())
        .collect();
    assert_eq!(statuses, vec![500, 503, 500, 200]);
    assert!(detail["attempt_log"][0]["latency_ms"].as_i64().is_some());

    let metrics = support::get(server.admin_url("/metrics"))
        .await?
        .text()
        .await?;
    assert_eq!(
        metric(
            &metrics,
            "rtcplane_webhook_deliveries_total{result=\"delivered\"}"
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "rtcplane_webhook_deliveries_total{result=\"retry\"}"
        ),
        3.0
    );

    // A subject PostgreSQL cannot store as text (NUL) must neither be lost nor wedge the log.
    let nul = publish(&server, "custom.test.nul", "a\u{0}b").await?;
    let after = publish(&server, "custom.test.after", "x").await?;
    eventually(
        "the NUL event and the next one",
        Duration::from_secs(10),
        async || {
            let a = receiver.accepted();
            (a.iter().any(|e| e["id"] == nul.as_str())
                && a.iter().any(|e| e["id"] == after.as_str()))
            .then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn retried_until_accepted_exactly_once_sqlite() -> anyhow::Result<()> {
    retried_until_accepted_exactly_once(Backend::Sqlite).await
}

#[tokio::test]
async fn retried_until_accepted_exactly_once_postgres() -> anyhow::Result<()> {
    retried_until_accepted_exactly_once(Backend::Postgres).await
}

#[tokio::test]
async fn retried_until_accepted_exactly_once_mariadb() -> anyhow::Result<()> {
    retried_until_accepted_exactly_once(Backend::MySql).await
}

// ---------- a receiver down across a restart of rtcplane ----------

async fn survives_restart_while_receiver_is_down(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(backend).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut server = Server::builder()
        .storage(&db.url)
        .config(&config(&url, ""))
        .start()
        .await?;
    let id = publish(&server, "custom.test.restart", "r").await?;
    // It is stored and failing (nobody listens).
    let failing = eventually("an attempt fails", Duration::from_secs(10), async || {
        let list = deliveries(&server).await.ok()?;
        list.into_iter().find(|d| d["attempts"].as_i64() >= Some(1))
    })
    .await?;
    assert_eq!(failing["state"], "pending");
    assert!(
        failing["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "{failing}"
    );
    assert!(server.terminate(Duration::from_secs(10)).await?.success());

    let receiver = Receiver::start_on(port).await?;
    let server = Server::builder()
        .storage(&db.url)
        .config(&config(&url, ""))
        .start()
        .await?;
    let got = eventually(
        "delivered after restart",
        Duration::from_secs(15),
        async || {
            let a = receiver.accepted();
            (!a.is_empty()).then_some(a)
        },
    )
    .await?;
    assert_eq!(got[0]["id"], id.as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The node's own start/stop events are not for this endpoint; exactly one delivery.
    assert_eq!(receiver.accepted().len(), 1);
    let list = deliveries(&server).await?;
    assert_eq!(list[0]["state"], "delivered");
    Ok(())
}

#[tokio::test]
async fn survives_restart_while_receiver_is_down_sqlite() -> anyhow::Result<()> {
    survives_restart_while_receiver_is_down(Backend::Sqlite).await
}

#[tokio::test]
async fn survives_restart_while_receiver_is_down_postgres() -> anyhow::Result<()> {
    survives_restart_while_receiver_is_down(Backend::Postgres).await
}

#[tokio::test]
async fn survives_restart_while_receiver_is_down_mariadb() -> anyhow::Result<()> {
    survives_restart_while_receiver_is_down(Backend::MySql).await
}

// ---------- dead letter, then replay of one delivery and of a range ----------

async fn dead_letter_then_replay(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await?;
    receiver.with(|r| r.always = Some(500));
    let server = Server::builder()
        .storage(&db.url)
        .config(&config(&receiver.url(), "max_attempts = 3"))
        .start()
        .await?;
    let since = chrono::Utc::now().timestamp_millis();
    let id = publish(&server, "custom.test.dead", "d").await?;
    let dead = eventually("dead-lettered", Duration::from_secs(15), async || {
        let list = deliveries(&server).await.ok()?;
        list.into_iter().find(|d| d["state"] == "dead")
    })
    .await?;
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["last_status"], 500);
    assert_eq!(receiver.with(|r| r.requests.len()), 3);
    let dead_only =
        get_json(&server.admin_url("/api/v1/webhooks/test/deliveries?state=dead")).await?;
    assert_eq!(dead_only["deliveries"].as_array().map(Vec::len), Some(1));
    let metrics = support::get(server.admin_url("/metrics"))
        .await?
        .text()
        .await?;
    assert_eq!(
        metric(
            &metrics,
            "rtcplane_webhook_deliveries_total{result=\"dead\"}"
        ),
        1.0
    );

    // The receiver is fixed: replaying the dead delivery delivers it.
    receiver.with(|r| r.always = None);
    let client = support::client();
    let resp = client
        .post(server.admin_url(&format!(
            "/api/v1/webhooks/test/deliveries/{}/replay",
            dead["id"]
        )))
        .send()
        .await?;
    assert_eq!(resp.status(), 202);
    let replay: Value = resp.json().await?;
    assert_eq!(replay["replay_of"], dead["id"]);
    eventually("replayed", Duration::from_secs(10), async || {
        (receiver.accepted().len() == 1).then_some(())
    })
    .await?;
    assert_eq!(receiver.accepted()[0]["id"], id.as_str());

    // A range replay re-delivers every matching stored event in it.
    let resp = client
        .post(server.admin_url("/api/v1/webhooks/test/replay"))
        .json(&json!({"since": since}))
        .send()
        .await?;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await?;
    assert_eq!(body["queued"], 1, "{body}");
    eventually("range replayed", Duration::from_secs(10), async || {
        (receiver.accepted().len() == 2).then_some(())
    })
    .await?;

    // Bad requests are clear errors.
    let resp = client
        .post(server.admin_url("/api/v1/webhooks/test/replay"))
        .json(&json!({"since": "yesterday"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    let e: Value = resp.json().await?;
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("since")),
        "{e}"
    );
    let resp = client
        .post(server.admin_url("/api/v1/webhooks/test/deliveries/999999/replay"))
        .send()
        .await?;
    assert_eq!(resp.status(), 404);
    Ok(())
}

#[tokio::test]
async fn dead_letter_then_replay_sqlite() -> anyhow::Result<()> {
    dead_letter_then_replay(Backend::Sqlite).await
}

#[tokio::test]
async fn dead_letter_then_replay_postgres() -> anyhow::Result<()> {
    dead_letter_then_replay(Backend::Postgres).await
}

#[tokio::test]
async fn dead_letter_then_replay_mariadb() -> anyhow::Result<()> {
    dead_letter_then_replay(Backend::MySql).await
}

// ---------- the endpoints API ----------

#[tokio::test]
async fn endpoints_api_creates_changes_and_protects_config_endpoints() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let server = Server::builder()
        .config(&config(&receiver.url(), ""))
        .start()
        .await?;
    let client = support::client();
    let url = server.admin_url("/api/v1/webhooks");

    let list = get_json(&url).await?;
    assert_eq!(list["endpoints"][0]["id"], "test");
    assert_eq!(list["endpoints"][0]["origin"], "config");
    assert!(list["endpoints"][0].get("secret").is_none(), "{list}");

    // Config endpoints are read-only here.
    let resp = client
        .patch(server.admin_url("/api/v1/webhooks/test"))
        .json(&json!({"enabled": false}))
        .send()
        .await?;
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.json::<Value>().await?["error"]["code"], "read_only");
    assert_eq!(
        client
            .delete(server.admin_url("/api/v1/webhooks/test"))
            .send()
            .await?
            .status(),
        409
    );

    // Validation names the field.
    for (body, field) in [
        (json!({"url": "ftp://x/"}), "url"),
        (
            json!({"url": "http://127.0.0.1:1/", "secret": "hunter2"}),
            "secret",
        ),
        (
            json!({"url": "http://127.0.0.1:1/", "events": ["turn allocation"]}),
            "events",
        ),
        (
            json!({"url": "http://127.0.0.1:1/", "id": "no spaces"}),
            "id",
        ),
    ] {
        let resp = client.post(&url).json(&body).send().await?;
        assert_eq!(resp.status(), 400, "{body}");
        let e: Value = resp.json().await?;
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(field)),
            "{e}"
        );
    }
    let resp = client
        .post(&url)
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    let resp = client
        .post(&url)
        .json(&json!({"url": "http://x/", "colour": 1}))
        .send()
        .await?;
    assert_eq!(resp.status(), 422);

    // Create with a generated secret, which is shown once.
    let resp = client
        .post(&url)
        .json(&json!({"id": "crm", "url": receiver.url(), "events": ["custom.crm.*"]}))
        .send()
        .await?;
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await?;
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    assert_eq!(created["origin"], "api");
    assert_eq!(
        client
            .post(&url)
            .json(&json!({"id": "crm", "url": receiver.url()}))
            .send()
            .await?
            .status(),
        409
    );

    // It receives its events, signed with its own secret (which this receiver does not know: 401s).
    let resp = client
        .patch(server.admin_url("/api/v1/webhooks/crm"))
        .json(&json!({"secret": SECRET, "description": "CRM"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let changed: Value = resp.json().await?;
    assert_eq!(changed["description"], "CRM");
    let id = publish(&server, "custom.crm.signup", "u1").await?;
    eventually("crm delivery", Duration::from_secs(10), async || {
        receiver
            .accepted()
            .iter()
            .any(|e| e["id"] == id.as_str())
            .then_some(())
    })
    .await?;

    assert_eq!(
        client
            .delete(server.admin_url("/api/v1/webhooks/crm"))
            .send()
            .await?
            .status(),
        204
    );
    assert_eq!(
        support::get(server.admin_url("/api/v1/webhooks/crm"))
            .await?
            .status(),
        404
    );
    assert_eq!(
        support::get(server.admin_url("/api/v1/webhooks/crm/deliveries"))
            .await?
            .status(),
        404
    );
    // Operator events must be custom.*: subsystem types cannot be forged.
    let resp = client
        .post(server.admin_url("/api/v1/events"))
        .json(&json!({"type": "turn.allocation.created"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    Ok(())
}

// ---------- SSE resume ----------

#[tokio::test]
async fn sse_resume_with_last_event_id_loses_nothing_sqlite() -> anyhow::Result<()> {
    sse_resume_with_last_event_id_loses_nothing(Backend::Sqlite).await
}

#[tokio::test]
async fn sse_resume_with_last_event_id_loses_nothing_postgres() -> anyhow::Result<()> {
    sse_resume_with_last_event_id_loses_nothing(Backend::Postgres).await
}

#[tokio::test]
async fn sse_resume_with_last_event_id_loses_nothing_mariadb() -> anyhow::Result<()> {
    sse_resume_with_last_event_id_loses_nothing(Backend::MySql).await
}

async fn sse_resume_with_last_event_id_loses_nothing(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(backend).await;
    let server = Server::builder().storage(&db.url).start().await?;
    let url = server.admin_url("/api/v1/events?types=custom.*");
    let mut first = SseReader::connect(&url).await?;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(publish(&server, "custom.seq", &i.to_string()).await?);
    }
    let mut last = String::new();
    for want in &sent {
        let e = first.next_of("custom.seq", Duration::from_secs(5)).await?;
        assert_eq!(e["id"], want.as_str());
        last = want.clone();
    }
    drop(first);

    // Missed while disconnected.
    let mut missed = Vec::new();
    for i in 3..8 {
        missed.push(publish(&server, "custom.seq", &i.to_string()).await?);
    }
    publish(&server, "custom.other", "filtered-in-too").await?;
    let resumed = support::client()
        .get(&url)
        .header("Last-Event-ID", &last)
        .send()
        .await?;
    assert_eq!(resumed.status(), 200);
    let mut resumed = SseReader::from_response(resumed)?;
    for want in &missed {
        let e = resumed
            .next_of("custom.seq", Duration::from_secs(5))
            .await?;
        assert_eq!(e["id"], want.as_str(), "replayed in order");
    }
    // Then live, without duplicates.
    let live = publish(&server, "custom.seq", "live").await?;
    let e = resumed
        .next_of("custom.seq", Duration::from_secs(5))
        .await?;
    assert_eq!(e["id"], live.as_str());

    // An id no longer stored (an old UUIDv7) resumes from its time and says so.
    let old = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, 1, 0));
    let mut gap = SseReader::connect(&format!("{url}&last_event_id={old}")).await?;
    let notice = gap.next_of("stream.gap", Duration::from_secs(5)).await?;
    assert_eq!(notice["last_event_id"], old.to_string());
    let e = gap.next_of("custom.seq", Duration::from_secs(5)).await?;
    assert_eq!(e["id"], sent[0].as_str(), "everything stored is replayed");

    let bad = support::client()
        .get(&url)
        .header("Last-Event-ID", "not-an-id")
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    Ok(())
}

// ---------- the Redis sink ----------

#[tokio::test]
async fn redis_sink_publishes_and_appends_the_stream() -> anyhow::Result<()> {
    let redis = PrivateRedis::start_on(free_port())?;
    let server = Server::builder()
        .env("RTCPLANE__REDIS__URL", redis.url())
        .env("RTCPLANE__EVENTS__REDIS_PUBLISH", "true")
        .start()
        .await?;
    let client = redis::Client::open(redis.url())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.psubscribe("rtcplane:events:custom.*").await?;
    let id = publish(&server, "custom.redis", "x").await?;

    let msg = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut pubsub.on_message()),
    )
    .await?
    .context("pubsub closed")?;
    assert_eq!(msg.get_channel_name(), "rtcplane:events:custom.redis");
    let payload: String = msg.get_payload()?;
    let v: Value = serde_json::from_str(&payload)?;
    assert_eq!(v["id"], id.as_str());

    // A consumer that connects later catches up from the stream.
    let mut conn = client.get_multiplexed_async_connection().await?;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("rtcplane:events")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await?;
    let field = |fields: &[(String, String)], name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (_, fields) = entries
        .iter()
        .find(|(_, f)| field(f, "id").as_deref() == Some(id.as_str()))
        .context("the event in the stream")?;
    assert_eq!(field(fields, "type").as_deref(), Some("custom.redis"));
    let event: Value = serde_json::from_str(&field(fields, "event").unwrap_or_default())?;
    assert_eq!(event["subject"], "x");
    // The node's own start event went there too.
    assert!(
        entries
            .iter()
            .any(|(_, f)| field(f, "type").as_deref() == Some("cluster.node.started"))
    );
    Ok(())
}

// ---------- per-endpoint concurrency limit ----------

#[tokio::test]
async fn at_most_max_in_flight_attempts_per_endpoint() -> anyhow::Result<()> {
    // A slow receiver that records how many requests it serves at once.
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let (in_flight, peak, served) = (in_flight.clone(), peak.clone(), served.clone());
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let (in_flight, peak, served) = (in_flight.clone(), peak.clone(), served.clone());
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = in_flight.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    in_flight.fetch_sub(1, SeqCst);
                    served.fetch_add(1, SeqCst);
                    StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let server = Server::builder()
        .config(&config(&url, "max_in_flight = 3"))
        .start()
        .await?;
    for i in 0..12 {
        // Distinct subjects: no ordering constraint holds them back.
        publish(&server, "custom.test.slow", &format!("subject-{i}")).await?;
    }
    eventually("all served", Duration::from_secs(20), async || {
        (served.load(std::sync::atomic::Ordering::SeqCst) == 12).then_some(())
    })
    .await?;
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(peak, 3, "attempts in flight at once");
    task.abort();
    Ok(())
}

// ---------- backlog metrics ----------

#[tokio::test]
async fn backlog_metrics_show_depth_and_age() -> anyhow::Result<()> {
    let port = free_port();
    let server = Server::builder()
        .config(&config(&format!("http://127.0.0.1:{port}/hook"), ""))
        .start()
        .await?;
    publish(&server, "custom.test.backlog", "a").await?;
    publish(&server, "custom.test.backlog", "b").await?;
    let text = eventually("backlog gauges", Duration::from_secs(10), async || {
        let text = support::get(server.admin_url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (metric(&text, "rtcplane_webhook_queue_depth") == 2.0
            && metric(&text, "rtcplane_webhook_oldest_pending_age_seconds") > 0.0)
            .then_some(text)
    })
    .await?;
    assert!(
        metric(&text, "rtcplane_events_stored_total") >= 2.0,
        "{text}"
    );
    // The receiver appears: the backlog drains to zero.
    let _receiver = Receiver::start_on(port).await?;
    eventually("backlog drained", Duration::from_secs(10), async || {
        let text = support::get(server.admin_url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (metric(&text, "rtcplane_webhook_queue_depth") == 0.0).then_some(())
    })
    .await?;
    Ok(())
}

// ---------- two nodes sharing one database ----------

#[tokio::test]
async fn two_nodes_on_one_database_deliver_each_event_once() -> anyhow::Result<()> {
    let db = TestDb::new(Backend::Postgres).await;
    let receiver = Receiver::start().await?;
    // The first attempts fail so both nodes' dispatchers compete for the same retries.
    receiver.with(|r| r.script = vec![500; 10]);
    let node = |name: &str| {
        Server::builder()
            .storage(&db.url)
            .env("RTCPLANE__NODE_ID", name)
            .config(&config(&receiver.url(), ""))
    };
    let a = node("node-a").start().await?;
    let b = node("node-b").start().await?;
    let mut ids = Vec::new();
    for i in 0..15 {
        ids.push(publish(&a, "custom.test.cluster", &format!("a{i}")).await?);
        ids.push(publish(&b, "custom.test.cluster", &format!("b{i}")).await?);
    }
    eventually("all delivered", Duration::from_secs(30), async || {
        (receiver.accepted().len() >= ids.len()).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut got: Vec<String> = receiver
        .accepted()
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "each event exactly once across both nodes");
    // Both nodes' events sit in the one log: node b's API lists node a's deliveries too.
    let list = deliveries(&b).await?;
    assert_eq!(list.len(), ids.len());
    Ok(())
}
