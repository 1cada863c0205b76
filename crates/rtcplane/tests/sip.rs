//! The SIP registration agent against the real Kamailio registrar of `fixtures/kamailio` (MD5 and SHA-256
//! digest, 423 Min-Expires, 503 Retry-After, dropped requests), on SQLite, PostgreSQL and MariaDB; and
//! against a scripted registrar socket for what Kamailio cannot be made to do (garbage, wrong Call-ID,
//! unknown transactions, TCP).
//!
//! The fixture listens on the fixed address 127.0.0.1:5070, so the tests that use it take turns
//! ([`KAMAILIO`]); each (re)starts it in the mode it needs.

// Tests spawn real processes (Kamailio, kamcmd) and poll real servers with std time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rtcplane_storage::Backend;
use rtcplane_storage::testing::TestDb;
use serde_json::{Value, json};
use support::{Server, client, fixtures, free_port};
use tokio::net::UdpSocket;

const REGISTRAR: &str = "sip:127.0.0.1:5070";
const CTL: &str = "unix:/tmp/kamailio-fixture/kamailio_ctl";

/// Which Kamailio runs (mode flags), shared by the tests of this file.
static KAMAILIO: tokio::sync::Mutex<Option<&'static str>> = tokio::sync::Mutex::const_new(None);

/// Holds the registrar for one test; `mode` is "" (MD5) or "WITH_SHA256".
async fn kamailio(mode: &'static str) -> tokio::sync::MutexGuard<'static, Option<&'static str>> {
    let mut guard = KAMAILIO.lock().await;
    if *guard != Some(mode) {
        let dir = fixtures().join("kamailio");
        let _ = Command::new("bash")
            .arg(dir.join("stop-kamailio.sh"))
            .output();
        let mut cmd = Command::new("bash");
        cmd.arg(dir.join("run-kamailio.sh"));
        if !mode.is_empty() {
            cmd.args(["-A", mode]);
        }
        let out = cmd
            .output()
            .expect("run-kamailio.sh (apt-get install kamailio)");
        assert!(
            out.status.success(),
            "kamailio did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        *guard = Some(mode);
    }
    guard
}

fn kamcmd(args: &[&str]) -> String {
    let out = Command::new("kamcmd")
        .arg("-s")
        .arg(CTL)
        .args(args)
        .output()
        .expect("kamcmd (apt-get install kamailio)");
    assert!(
        out.status.success(),
        "kamcmd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// REGISTER requests the registrar has received so far (retransmissions included).
fn registers_received() -> u64 {
    kamcmd(&["stats.get_statistics", "all"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("core:rcv_requests_register = "))
        .and_then(|n| n.trim().parse().ok())
        .expect("core:rcv_requests_register in kamcmd stats")
}

/// The registrar's bindings: AoR → contact addresses.
fn bindings() -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut aor = None;
    for line in kamcmd(&["ul.dump"]).lines() {
        let line = line.trim();
        if let Some(a) = line.strip_prefix("AoR: ") {
            aor = Some(a.to_string());
            out.entry(a.to_string()).or_default();
        } else if let (Some(addr), Some(a)) = (line.strip_prefix("Address: "), aor.as_ref()) {
            out.entry(a.clone()).or_default().push(addr.to_string());
        }
    }
    out
}

fn agent_env(sip_port: u16) -> Vec<(&'static str, String)> {
    vec![
        (
            "RTCPLANE__SIP_AGENT__LISTEN",
            format!("127.0.0.1:{sip_port}"),
        ),
        ("RTCPLANE__SIP_AGENT__OUTBOUND_PROXY", REGISTRAR.into()),
        ("RTCPLANE__SIP_AGENT__EXPIRES", "300".into()),
    ]
}

async fn start(db: &str, env: &[(&'static str, String)], toml: &str) -> anyhow::Result<Server> {
    let mut b = Server::builder().storage(db).config(toml);
    for (k, v) in env {
        b = b.env(k, v.clone());
    }
    b.start().await
}

async fn api(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = client().request(method, server.admin_url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn rpc(server: &Server, method: &str, params: Value) -> anyhow::Result<Value> {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    Ok(client()
        .post(server.admin_url("/rpc"))
        .json(&body)
        .send()
        .await?
        .json()
        .await?)
}

/// Polls one registration until `pred` holds.
async fn wait_for(
    server: &Server,
    id: i64,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let until = Instant::now() + within;
    let mut last = Value::Null;
    while Instant::now() < until {
        let (code, v) = api(
            server,
            reqwest::Method::GET,
            &format!("/api/v1/sip/registrations/{id}"),
            None,
        )
        .await?;
        if code == 200 && pred(&v) {
            return Ok(v);
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "registration {id}: {what} not reached within {within:?}; last {last}\n{}",
        server.log()
    )
}

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or_default()
}

/// Rows of the registrations table, straight from the database.
async fn db_rows(
    url: &str,
) -> anyhow::Result<BTreeMap<i64, (i64, Option<i64>, Option<String>, bool)>> {
    use sqlx::Row;
    let q = "SELECT subscriber_id, registration_status, last_code, last_reason, expiry FROM registrations";
    let mut out = BTreeMap::new();
    match Backend::from_url(url)? {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await?;
            for r in sqlx::query(q).fetch_all(&pool).await? {
                let expiry: Option<String> = r.try_get(4)?;
                out.insert(
                    r.try_get(0)?,
                    (
                        r.try_get(1)?,
                        r.try_get(2)?,
                        r.try_get(3)?,
                        expiry.is_some(),
                    ),
                );
            }
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await?;
            for r in sqlx::query(q).fetch_all(&pool).await? {
                let id: i32 = r.try_get(0)?;
                let st: i16 = r.try_get(1)?;
                let code: Option<i16> = r.try_get(2)?;
                let expiry: Option<chrono::NaiveDateTime> = r.try_get(4)?;
                out.insert(
                    i64::from(id),
                    (
                        i64::from(st),
                        code.map(i64::from),
                        r.try_get(3)?,
                        expiry.is_some(),
                    ),
                );
            }
        }
        Backend::MySql => {
            let pool = sqlx::MySqlPool::connect(url).await?;
            for r in sqlx::query(q).fetch_all(&pool).await? {
                let id: i32 = r.try_get(0)?;
                let st: i8 = r.try_get(1)?;
                let code: Option<i16> = r.try_get(2)?;
                let expiry: Option<chrono::NaiveDateTime> = r.try_get(4)?;
                out.insert(
                    i64::from(id),
                    (
                        i64::from(st),
                        code.map(i64::from),
                        r.try_get(3)?,
                        expiry.is_some(),
                    ),
                );
            }
        }
    }
    Ok(out)
}

/// Inserts SEMS subscribers directly, as an operator's provisioning does.
async fn insert_subscribers(url: &str, rows: &[(i64, &str, &str)]) -> anyhow::Result<()> {
    let backend = Backend::from_url(url)?;
    let sql = match backend {
        Backend::Postgres => {
            "INSERT INTO subscribers (subscriber_id, \"user\", pass, realm, contact) VALUES ($1, $2, $3, 'example.org', '')"
        }
        _ => {
            "INSERT INTO subscribers (subscriber_id, user, pass, realm, contact) VALUES (?, ?, ?, 'example.org', '')"
        }
    };
    macro_rules! run {
        ($pool:expr, $id:ty) => {{
            let pool = $pool;
            let mut tx = pool.begin().await?;
            for (id, user, pass) in rows {
                sqlx::query(sql)
                    .bind(*id as $id)
                    .bind(*user)
                    .bind(*pass)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }};
    }
    match backend {
        Backend::Sqlite => run!(sqlx::SqlitePool::connect(url).await?, i64),
        Backend::Postgres => run!(sqlx::PgPool::connect(url).await?, i32),
        Backend::MySql => run!(sqlx::MySqlPool::connect(url).await?, i32),
    }
    Ok(())
}

fn migrate(dir: &Path, url: &str) {
    let out = support::run(
        dir,
        &["migrate"],
        &[("RTCPLANE__STORAGE__URL", url.to_string())],
    );
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// REST create → REGISTER with MD5 digest → ACTIVE with the binding at Kamailio; REST delete → de-REGISTER →
/// REMOVED (4) and the binding gone. SQLite.
#[tokio::test]
async fn registers_and_removes_through_rest_md5() -> anyhow::Result<()> {
    let _k = kamailio("").await;
    let port = free_port();
    let server = start(
        &TestDb::new(Backend::Sqlite).await.url,
        &agent_env(port),
        "",
    )
    .await?;
    let mut events =
        support::SseReader::connect(&server.admin_url("/api/v1/events?types=sip.*")).await?;
    let (code, created) = api(
        &server,
        reqwest::Method::POST,
        "/api/v1/sip/registrations",
        Some(json!({"user": "alice", "pass": "alicepw", "realm": "example.org"})),
    )
    .await?;
    assert_eq!(code, 201, "{created}");
    let id = created["subscriber_id"].as_i64().context("subscriber_id")?;
    let v = wait_for(&server, id, Duration::from_secs(10), "active", |v| {
        status(v) == "active"
    })
    .await?;
    assert_eq!(v["registration_status"], 2);
    assert_eq!(v["last_code"], 200);
    let contact = format!("sip:alice@127.0.0.1:{port}");
    assert_eq!(v["contact"], contact.as_str());
    assert!(
        v["contacts"]
            .as_str()
            .unwrap_or_default()
            .contains(&contact),
        "{v}"
    );
    assert!(
        bindings()
            .get("alice")
            .is_some_and(|c| c.contains(&contact)),
        "{:?}",
        bindings()
    );
    // sip.registration.changed: inactive -> active (as in SEMS, no status is written while the request is
    // under way; the API shows it as in_flight).
    let e = events
        .next_of("sip.registration.changed", Duration::from_secs(5))
        .await?;
    assert_eq!(e["subject"], "alice@example.org", "{e}");
    assert_eq!(e["data"]["subscriber_id"], id, "{e}");
    assert_eq!(
        (e["data"]["previous"].as_str(), e["data"]["status"].as_str()),
        (Some("inactive"), Some("active")),
        "{e}"
    );

    let (code, body) = api(
        &server,
        reqwest::Method::DELETE,
        &format!("/api/v1/sip/registrations/{id}"),
        None,
    )
    .await?;
    assert_eq!(code, 202, "{body}");
    let v = wait_for(&server, id, Duration::from_secs(10), "removed", |v| {
        status(v) == "removed"
    })
    .await?;
    assert_eq!(v["registration_status"], 4);
    assert!(
        !bindings()
            .get("alice")
            .is_some_and(|c| c.contains(&contact)),
        "binding still there: {:?}",
        bindings()
    );

    // Bad input gets clear errors.
    let (code, body) = api(
        &server,
        reqwest::Method::POST,
        "/api/v1/sip/registrations",
        Some(json!({"user": "a b", "pass": "x", "realm": "example.org"})),
    )
    .await?;
    assert_eq!(code, 400, "{body}");
    let (code, _) = api(
        &server,
        reqwest::Method::GET,
        "/api/v1/sip/registrations/999",
        None,
    )
    .await?;
    assert_eq!(code, 404);
    let (code, body) = api(
        &server,
        reqwest::Method::GET,
        "/api/v1/sip/registrations?status=bogus",
        None,
    )
    .await?;
    assert_eq!(code, 400, "{body}");
    let metrics = client()
        .get(server.admin_url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("rtcplane_sip_registrations{status=\"removed\"} 1"),
        "{metrics}"
    );
    Ok(())
}

/// Accounts already in the database (PostgreSQL) are registered at start with SHA-256 digest; the status
/// columns are written as SEMS writes them.
#[tokio::test]
async fn registers_database_accounts_sha256_postgres() -> anyhow::Result<()> {
    let _k = kamailio("WITH_SHA256").await;
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir()?;
    migrate(dir.path(), &db.url);
    insert_subscribers(
        &db.url,
        &[
            (1, "alice", "alicepw"),
            (2, "bob", "bobpw"),
            (3, "bob", "wrong"),
        ],
    )
    .await?;
    let server = start(&db.url, &agent_env(free_port()), "").await?;
    wait_for(&server, 1, Duration::from_secs(10), "active", |v| {
        status(v) == "active"
    })
    .await?;
    wait_for(&server, 2, Duration::from_secs(10), "active", |v| {
        status(v) == "active"
    })
    .await?;
    let v = wait_for(&server, 3, Duration::from_secs(10), "failed", |v| {
        status(v) == "failed"
    })
    .await?;
    assert_eq!(v["last_code"], 403, "{v}");
    // Written through the batching writer: poll the table itself.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = db_rows(&db.url).await?;
        let ok = rows
            .get(&1)
            .is_some_and(|r| r.0 == 2 && r.1 == Some(200) && r.3)
            && rows.get(&3).is_some_and(|r| r.0 == 3 && r.1 == Some(403));
        if ok {
            break;
        }
        assert!(Instant::now() < until, "registrations table: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// SEMS's DI functions over JSON-RPC on MariaDB: create, update of an unknown id (creates), refresh,
/// remove; errors as JSON-RPC errors.
#[tokio::test]
async fn json_rpc_di_functions_mariadb() -> anyhow::Result<()> {
    let _k = kamailio("").await;
    let db = TestDb::new(Backend::MySql).await;
    let server = start(&db.url, &agent_env(free_port()), "").await?;
    let r = rpc(
        &server,
        "createRegistration",
        json!([10, "alice", "alicepw", "example.org"]),
    )
    .await?;
    assert_eq!(r["result"]["subscriber_id"], 10, "{r}");
    let r = rpc(
        &server,
        "updateRegistration",
        json!({"subscriber_id": 11, "user": "bob", "pass": "bobpw", "realm": "example.org"}),
    )
    .await?;
    assert!(r.get("error").is_none(), "{r}");
    wait_for(&server, 10, Duration::from_secs(10), "active", |v| {
        status(v) == "active"
    })
    .await?;
    wait_for(&server, 11, Duration::from_secs(10), "active", |v| {
        status(v) == "active"
    })
    .await?;
    // SEMS's generic DI call shape.
    let before = registers_received();
    let r = rpc(
        &server,
        "di",
        json!(["db_reg_agent", "refreshRegistration", 10]),
    )
    .await?;
    assert!(r.get("error").is_none(), "{r}");
    let until = Instant::now() + Duration::from_secs(5);
    while registers_received() < before + 2 {
        assert!(Instant::now() < until, "refresh sent no REGISTER");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = rpc(&server, "removeRegistration", json!([11])).await?;
    assert!(r.get("error").is_none(), "{r}");
    wait_for(&server, 11, Duration::from_secs(10), "removed", |v| {
        status(v) == "removed"
    })
    .await?;
    assert!(
        !bindings().contains_key("bob") || bindings()["bob"].is_empty(),
        "{:?}",
        bindings()
    );
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = db_rows(&db.url).await?;
        if rows.get(&10).is_some_and(|r| r.0 == 2) && rows.get(&11).is_some_and(|r| r.0 == 4) {
            break;
        }
        assert!(Instant::now() < until, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Errors.
    assert_eq!(
        rpc(&server, "refreshRegistration", json!([999])).await?["error"]["code"],
        -32004
    );
    assert_eq!(
        rpc(&server, "createRegistration", json!([1, "x"])).await?["error"]["code"],
        -32602
    );
    assert_eq!(
        rpc(&server, "nope", json!([])).await?["error"]["code"],
        -32601
    );
    let raw = client()
        .post(server.admin_url("/rpc"))
        .body("{not json")
        .send()
        .await?
        .json::<Value>()
        .await?;
    assert_eq!(raw["error"]["code"], -32700);
    Ok(())
}

/// 423 → retried with Min-Expires; 503 → FAILED and retried after Retry-After; a dropped request → 408 after
/// Timer F; an unreachable TCP proxy → 480 "unable to send request".
#[tokio::test]
async fn registrar_errors_are_recorded_and_retried() -> anyhow::Result<()> {
    let _k = kamailio("").await;
    let mut env = agent_env(free_port());
    env.push(("RTCPLANE__SIP_AGENT__EXPIRES", "10".into()));
    env.push(("RTCPLANE__SIP_AGENT__TIMER_T1", "40ms".into()));
    let server = start(&TestDb::new(Backend::Sqlite).await.url, &env, "").await?;
    for (id, user, pass) in [
        (1, "bob", "bobpw"),
        (2, "busy503", "busypw"),
        (3, "slow", "slowpw"),
    ] {
        let r = rpc(
            &server,
            "createRegistration",
            json!([id, user, pass, "example.org"]),
        )
        .await?;
        assert!(r.get("error").is_none(), "{r}");
    }
    let v = wait_for(
        &server,
        1,
        Duration::from_secs(10),
        "active after 423",
        |v| status(v) == "active",
    )
    .await?;
    let expiry = chrono::DateTime::parse_from_rfc3339(v["expiry"].as_str().unwrap_or_default())?;
    let granted = (expiry.timestamp() - chrono::Utc::now().timestamp()).abs();
    assert!(
        (50..=61).contains(&granted),
        "granted {granted} s, want Min-Expires 60: {v}"
    );
    let v = wait_for(&server, 2, Duration::from_secs(10), "failed 503", |v| {
        v["last_code"] == 503
    })
    .await?;
    assert_eq!(status(&v), "failed");
    assert!(
        v["next_action_in"].as_u64().is_some_and(|s| s <= 5),
        "503 retried after Retry-After 5: {v}"
    );
    let v = wait_for(&server, 3, Duration::from_secs(10), "timeout", |v| {
        v["last_code"] == 408
    })
    .await?;
    assert_eq!(status(&v), "failed");

    // TCP to a port where nothing listens.
    let closed = free_port();
    let env = vec![
        (
            "RTCPLANE__SIP_AGENT__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "RTCPLANE__SIP_AGENT__OUTBOUND_PROXY",
            format!("sip:127.0.0.1:{closed};transport=tcp"),
        ),
    ];
    let server = start(&TestDb::new(Backend::Sqlite).await.url, &env, "").await?;
    rpc(
        &server,
        "createRegistration",
        json!([1, "alice", "alicepw", "example.org"]),
    )
    .await?;
    let v = wait_for(&server, 1, Duration::from_secs(10), "480", |v| {
        v["last_code"] == 480
    })
    .await?;
    assert_eq!(v["last_reason"], "unable to send request");
    assert_eq!(status(&v), "failed");
    Ok(())
}

/// 1,000 ACTIVE accounts, the agent restarted: no REGISTER reaches the registrar in the first refresh window,
/// and every account is still ACTIVE.
#[tokio::test]
async fn restart_sends_nothing_for_valid_bindings() -> anyhow::Result<()> {
    let _k = kamailio("").await;
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir()?;
    migrate(dir.path(), &db.url);
    let names: Vec<String> = (0..1000).map(|i| format!("load{i}")).collect();
    let rows: Vec<(i64, &str, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i as i64 + 1, n.as_str(), "loadpw"))
        .collect();
    insert_subscribers(&db.url, &rows).await?;
    let mut env = agent_env(free_port());
    env.push(("RTCPLANE__SIP_AGENT__EXPIRES", "3600".into()));
    env.push(("RTCPLANE__SIP_AGENT__RATELIMIT_RATE", "500".into()));
    let mut server = start(&db.url, &env, "").await?;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = api(
            &server,
            reqwest::Method::GET,
            "/api/v1/sip/registrations?status=active&limit=1",
            None,
        )
        .await?;
        if v["total"] == 1000 {
            break;
        }
        assert!(
            Instant::now() < until,
            "not all active: {v}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the writer store the last rows, then stop (SIGTERM: graceful).
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.terminate(Duration::from_secs(15)).await?;
    let before = registers_received();
    let server = start(&db.url, &env, "").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = registers_received();
    assert_eq!(
        after, before,
        "REGISTERs sent after restart for still-valid bindings"
    );
    let (_, v) = api(
        &server,
        reqwest::Method::GET,
        "/api/v1/sip/registrations?status=active&limit=1",
        None,
    )
    .await?;
    assert_eq!(v["total"], 1000, "{v}");
    Ok(())
}

/// A scripted registrar: garbage, a response with a wrong Call-ID, one for an unknown transaction and a
/// stray request are ignored (the process stays up); the right 200 completes the registration.
#[tokio::test]
async fn ignores_malformed_and_unmatched_responses() -> anyhow::Result<()> {
    let registrar = UdpSocket::bind("127.0.0.1:0").await?;
    let env = vec![
        (
            "RTCPLANE__SIP_AGENT__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "RTCPLANE__SIP_AGENT__OUTBOUND_PROXY",
            format!("sip:{}", registrar.local_addr()?),
        ),
    ];
    let mut server = start(&TestDb::new(Backend::Sqlite).await.url, &env, "").await?;
    rpc(
        &server,
        "createRegistration",
        json!([1, "alice", "pw", "example.org"]),
    )
    .await?;
    let mut buf = vec![0u8; 65535];
    let (n, from) =
        tokio::time::timeout(Duration::from_secs(5), registrar.recv_from(&mut buf)).await??;
    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
    let header = |name: &str| -> String {
        request
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .to_string()
    };
    let (via, call_id, cseq, from_h, to) = (
        header("Via"),
        header("Call-ID"),
        header("CSeq"),
        header("From"),
        header("To"),
    );
    let reply = |code: &str, via: &str, call_id: &str| {
        format!(
            "SIP/2.0 {code}\r\nVia: {via}\r\nFrom: {from_h}\r\nTo: {to};tag=x\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContact: <sip:alice@{}>;expires=120\r\nContent-Length: 0\r\n\r\n",
            from
        )
    };
    let junk: Vec<Vec<u8>> = vec![
        b"\x00\x01garbage".to_vec(),
        b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
        b"SIP/2.0 999999 Nope\r\nVia: x\r\n\r\n".to_vec(),
        reply("200 OK", &via, "someone-else").into_bytes(),
        reply(
            "200 OK",
            "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKunknown",
            &call_id,
        )
        .into_bytes(),
        b"OPTIONS sip:alice@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\n\r\n"
            .to_vec(),
        vec![b'A'; 65_000],
    ];
    for j in &junk {
        registrar.send_to(j, from).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = api(
        &server,
        reqwest::Method::GET,
        "/api/v1/sip/registrations/1",
        None,
    )
    .await?;
    assert_eq!(
        status(&v),
        "inactive",
        "junk must not complete or fail the transaction: {v}"
    );
    assert_eq!(v["in_flight"], true, "{v}");
    registrar
        .send_to(reply("200 OK", &via, &call_id).as_bytes(), from)
        .await?;
    let v = wait_for(&server, 1, Duration::from_secs(5), "active", |v| {
        status(v) == "active"
    })
    .await?;
    assert_eq!(v["last_code"], 200);
    assert!(server.alive(), "the process died");
    let metrics = client()
        .get(server.admin_url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("rtcplane_sip_stray_responses_total 2"),
        "{metrics}"
    );
    Ok(())
}

/// Over TCP: the REGISTER arrives framed on a connection and the 200 comes back on it.
#[tokio::test]
async fn registers_over_tcp() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let env = vec![
        (
            "RTCPLANE__SIP_AGENT__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "RTCPLANE__SIP_AGENT__OUTBOUND_PROXY",
            format!("sip:{};transport=tcp", listener.local_addr()?),
        ),
    ];
    let server = start(&TestDb::new(Backend::Sqlite).await.url, &env, "").await?;
    rpc(
        &server,
        "createRegistration",
        json!([5, "carol", "pw", "example.org"]),
    )
    .await?;
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await??;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    let request = String::from_utf8_lossy(&buf).into_owned();
    assert!(
        request.starts_with("REGISTER sip:example.org SIP/2.0\r\n"),
        "{request}"
    );
    assert!(request.contains("Via: SIP/2.0/TCP "), "{request}");
    let header = |name: &str| {
        request
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .to_string()
    };
    // Two responses in one segment, the first a 100 Trying, with a CRLF keep-alive between.
    let resp = format!(
        "SIP/2.0 100 Trying\r\nVia: {via}\r\nCall-ID: {cid}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n\r\n\r\nSIP/2.0 200 OK\r\nVia: {via}\r\nCall-ID: {cid}\r\nCSeq: {cseq}\r\nExpires: 90\r\nContent-Length: 0\r\n\r\n",
        via = header("Via"),
        cid = header("Call-ID"),
        cseq = header("CSeq")
    );
    conn.write_all(resp.as_bytes()).await?;
    let v = wait_for(&server, 5, Duration::from_secs(5), "active", |v| {
        status(v) == "active"
    })
    .await?;
    assert_eq!(v["last_code"], 200);
    Ok(())
}

/// `rtcplane sip account …` drives a running server through its admin API.
#[tokio::test]
async fn cli_manages_accounts() -> anyhow::Result<()> {
    let _k = kamailio("").await;
    let server = start(
        &TestDb::new(Backend::Sqlite).await.url,
        &agent_env(free_port()),
        "",
    )
    .await?;
    let admin = format!("http://{}", server.admin);
    let cli = |args: &[&str]| {
        let mut all = vec!["sip", "--admin", admin.as_str(), "account"];
        all.extend_from_slice(args);
        support::run(server.dir.path(), &all, &[])
    };
    let out = cli(&[
        "add",
        "--user",
        "bob",
        "--realm",
        "example.org",
        "--pass",
        "bobpw",
        "--id",
        "42",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    wait_for(&server, 42, Duration::from_secs(10), "active", |v| {
        status(v) == "active"
    })
    .await?;
    let out = cli(&["list", "--status", "active"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("42\tbob@example.org\tactive\t200\tOK"),
        "{text}"
    );
    let out = cli(&["show", "42"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"registration_status\": 2"));
    let out = cli(&[
        "add",
        "--user",
        "bob",
        "--realm",
        "example.org",
        "--pass",
        "bobpw",
        "--id",
        "42",
    ]);
    assert!(!out.status.success(), "a second add of id 42 must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["del", "42"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(&server, 42, Duration::from_secs(10), "removed", |v| {
        status(v) == "removed"
    })
    .await?;
    let out = cli(&["refresh", "7"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = support::run(
        server.dir.path(),
        &["sip", "--admin", "http://127.0.0.1:1", "account", "list"],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin API"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A scripted registrar that asks for proxy credentials (407), then says the nonce is stale (401
/// stale=true): each challenge is answered with a correct digest for ITS nonce, CSeq goes up, Call-ID stays.
#[tokio::test]
async fn answers_407_and_stale_challenges() -> anyhow::Result<()> {
    use md5::Digest as _;
    let registrar = UdpSocket::bind("127.0.0.1:0").await?;
    let env = vec![
        (
            "RTCPLANE__SIP_AGENT__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "RTCPLANE__SIP_AGENT__OUTBOUND_PROXY",
            format!("sip:{}", registrar.local_addr()?),
        ),
    ];
    let server = start(&TestDb::new(Backend::Sqlite).await.url, &env, "").await?;
    rpc(
        &server,
        "createRegistration",
        json!([1, "alice", "pw", "example.org"]),
    )
    .await?;
    let mut buf = vec![0u8; 65535];
    let mut recv = async || -> anyhow::Result<(String, std::net::SocketAddr)> {
        let (n, from) =
            tokio::time::timeout(Duration::from_secs(5), registrar.recv_from(&mut buf)).await??;
        Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    };
    let header = |req: &str, name: &str| -> String {
        req.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .to_string()
    };
    let md5 = |s: String| {
        md5::Md5::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let param = |value: &str, key: &str| -> String {
        value
            .split(',')
            .filter_map(|p| p.trim().trim_start_matches("Digest ").split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let reply = |req: &str, status: &str, extra: &str| {
        format!(
            "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=r\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            header(req, "Via"),
            header(req, "From"),
            header(req, "To"),
            header(req, "Call-ID"),
            header(req, "CSeq")
        )
    };
    let check = |auth: &str, nonce: &str| {
        assert_eq!(param(auth, "nonce"), nonce, "{auth}");
        let ha1 = md5("alice:example.org:pw".into());
        let ha2 = md5("REGISTER:sip:example.org".into());
        let (nc, cnonce) = (param(auth, "nc"), param(auth, "cnonce"));
        let want = md5(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        assert_eq!(param(auth, "response"), want, "{auth}");
    };
    let (r1, from) = recv().await?;
    assert!(
        header(&r1, "Authorization").is_empty() && header(&r1, "Proxy-Authorization").is_empty()
    );
    registrar
        .send_to(
            reply(
                &r1,
                "407 Proxy Authentication Required",
                "Proxy-Authenticate: Digest realm=\"example.org\", nonce=\"n1\", qop=\"auth\"\r\n",
            )
            .as_bytes(),
            from,
        )
        .await?;
    let (r2, _) = recv().await?;
    check(&header(&r2, "Proxy-Authorization"), "n1");
    registrar
        .send_to(reply(&r2, "401 Unauthorized", "WWW-Authenticate: Digest realm=\"example.org\", nonce=\"n2\", qop=\"auth\", stale=true\r\n").as_bytes(), from)
        .await?;
    let (r3, _) = recv().await?;
    check(&header(&r3, "Authorization"), "n2");
    let cseqs: Vec<u32> = [&r1, &r2, &r3]
        .iter()
        .map(|r| {
            header(r, "CSeq")
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    assert!(cseqs[0] < cseqs[1] && cseqs[1] < cseqs[2], "{cseqs:?}");
    assert!(header(&r1, "Call-ID") == header(&r3, "Call-ID"));
    registrar
        .send_to(reply(&r3, "200 OK", "Expires: 120\r\n").as_bytes(), from)
        .await?;
    wait_for(&server, 1, Duration::from_secs(5), "active", |v| {
        status(v) == "active"
    })
    .await?;
    // A second non-stale 401 after credentials is a failure, recorded, not a loop.
    rpc(&server, "refreshRegistration", json!([1])).await?;
    let (r4, _) = recv().await?;
    registrar
        .send_to(
            reply(
                &r4,
                "401 Unauthorized",
                "WWW-Authenticate: Digest realm=\"example.org\", nonce=\"n3\"\r\n",
            )
            .as_bytes(),
            from,
        )
        .await?;
    let (r5, _) = recv().await?;
    registrar
        .send_to(
            reply(
                &r5,
                "401 Unauthorized",
                "WWW-Authenticate: Digest realm=\"example.org\", nonce=\"n4\"\r\n",
            )
            .as_bytes(),
            from,
        )
        .await?;
    let v = wait_for(&server, 1, Duration::from_secs(5), "failed 401", |v| {
        status(v) == "failed"
    })
    .await?;
    assert_eq!(v["last_code"], 401, "{v}");
    Ok(())
}

/// No outbound proxy: the realm's `_sip._udp` SRV record (from a DNS server of the test's own) says where
/// the registrar is; the target name resolves from /etc/hosts.
#[tokio::test]
async fn finds_the_registrar_by_dns_srv() -> anyhow::Result<()> {
    let registrar = UdpSocket::bind("127.0.0.1:0").await?;
    let registrar_port = registrar.local_addr()?.port();
    let dns = UdpSocket::bind("127.0.0.1:0").await?;
    let dns_addr = dns.local_addr()?;
    let queries = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = queries.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = dns.recv_from(&mut buf).await {
            if let Some((name, reply)) = srv_answer(&buf[..n], "_sip._udp.sip.test", registrar_port)
            {
                seen.lock().map(|mut q| q.push(name)).ok();
                let _ = dns.send_to(&reply, from).await;
            }
        }
    });
    let env = vec![
        (
            "RTCPLANE__SIP_AGENT__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        ("RTCPLANE__SIP_AGENT__DNS_SERVERS", dns_addr.to_string()),
    ];
    let server = start(&TestDb::new(Backend::Sqlite).await.url, &env, "").await?;
    rpc(
        &server,
        "createRegistration",
        json!([1, "alice", "pw", "sip.test"]),
    )
    .await?;
    let mut buf = vec![0u8; 65535];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), registrar.recv_from(&mut buf))
        .await
        .with_context(|| {
            format!(
                "no REGISTER at the SRV target; DNS queries {:?}\n{}",
                queries.lock().map(|q| q.clone()).unwrap_or_default(),
                server.log()
            )
        })??;
    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        req.starts_with("REGISTER sip:sip.test SIP/2.0\r\n"),
        "{req}"
    );
    let header = |name: &str| {
        req.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .to_string()
    };
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nExpires: 120\r\nContent-Length: 0\r\n\r\n",
        header("Via"),
        header("Call-ID"),
        header("CSeq")
    );
    registrar.send_to(ok.as_bytes(), from).await?;
    wait_for(&server, 1, Duration::from_secs(5), "active", |v| {
        status(v) == "active"
    })
    .await?;
    assert!(
        queries
            .lock()
            .map(|q| q.iter().any(|n| n == "_sip._udp.sip.test"))
            .unwrap_or(false)
    );
    Ok(())
}

/// A DNS answer to an SRV query for `name`: `10 5 <port> localhost.`; other names get NXDOMAIN.
fn srv_answer(query: &[u8], name: &str, port: u16) -> Option<(String, Vec<u8>)> {
    if query.len() < 12 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    while i < query.len() && query[i] != 0 {
        let len = query[i] as usize;
        labels.push(String::from_utf8_lossy(query.get(i + 1..i + 1 + len)?).to_ascii_lowercase());
        i += 1 + len;
    }
    let qname = labels.join(".");
    let end = i + 5; // root label, qtype, qclass
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    let mut out = query[..2].to_vec();
    let found = qname == name && qtype == 33;
    out.extend_from_slice(&[0x81, if found { 0x80 } else { 0x83 }]);
    out.extend_from_slice(&[0, 1, 0, u8::from(found), 0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..end)?);
    if found {
        let mut rdata = vec![0, 10, 0, 5];
        rdata.extend_from_slice(&port.to_be_bytes());
        rdata.extend_from_slice(b"\x09localhost\x00");
        out.extend_from_slice(&[0xc0, 0x0c, 0, 33, 0, 1, 0, 0, 0, 60]);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some((qname, out))
}
