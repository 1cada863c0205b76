//! The hook gateway against its real callers: every captured nginx-rtmp request replayed, SRS payloads from
//! the seed, MediaMTX auth payloads, malformed bodies, an upstream hook server behind a forward rule, and
//! real nginx-rtmp + ffmpeg end to end.

// Tests spawn real processes and poll real servers with std time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use support::{Server, SseReader, fixtures, free_port, run};

async fn post(
    url: &str,
    content_type: &str,
    body: impl Into<String>,
) -> anyhow::Result<(u16, Option<String>, String)> {
    let resp = support::client()
        .post(url)
        .header("content-type", content_type)
        .body(body.into())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, location, resp.text().await?))
}

async fn streams(server: &Server) -> anyhow::Result<Vec<Value>> {
    let v: Value = support::get(server.admin_url("/api/v1/streams"))
        .await?
        .json()
        .await?;
    Ok(v["streams"].as_array().cloned().unwrap_or_default())
}

// ---------- nginx-rtmp: the real captures ----------

#[tokio::test]
async fn every_captured_nginx_rtmp_request_replays() -> anyhow::Result<()> {
    let captured =
        std::fs::read_to_string(fixtures().join("nginx-rtmp/captured/nginx-rtmp-hooks.jsonl"))
            .context("nginx-rtmp captures")?;
    let server = Server::builder()
        .config(
            r#"
[hooks]
registry_ttl = "2s"

[[hooks.rules]]
name = "deny app"
apps = ["deny"]
actions = ["publish"]
then = "deny"

[[hooks.rules]]
name = "no bad streams"
streams = ["bad"]
actions = ["publish"]
then = "deny"
"#,
        )
        .start()
        .await?;
    let mut sse = SseReader::connect(&server.admin_url("/api/v1/events?types=hooks.*")).await?;
    let mut replayed = 0;
    for line in captured.lines().filter(|l| !l.trim().is_empty()) {
        let rec: Value = serde_json::from_str(line)?;
        let path = rec["path"].as_str().context("path")?;
        let hook = path.rsplit('/').next().context("hook name")?;
        let body = rec["body"].as_str().context("body")?;
        let (status, _, text) = post(
            &server.public_url(&format!("/hooks/nginx-rtmp/{hook}")),
            "application/x-www-form-urlencoded",
            body,
        )
        .await?;
        // Our rules reproduce the logger's rule-based answers (403 for app `deny` and stream `bad`); its
        // path-scripted ones (/status/500, /redirect/…) are not rules here, so those are allowed.
        let name_is_bad = body.contains("&call=publish&name=bad&");
        let want = if path.starts_with("/deny/on_publish") || name_is_bad {
            403
        } else {
            200
        };
        assert_eq!(status, want, "{path}: {body} -> {status} {text}");
        replayed += 1;
    }
    assert_eq!(replayed, 77);
    // The spoofed publish registered as cam3, never as `evil`.
    let published = sse
        .next_of("hooks.stream.published", Duration::from_secs(5))
        .await?;
    assert_eq!(published["data"]["server"], "nginx-rtmp");
    let mut names = Vec::new();
    while let Ok(e) = sse
        .next_of("hooks.stream.published", Duration::from_millis(300))
        .await
    {
        names.push(e["data"]["stream"].as_str().unwrap_or_default().to_owned());
    }
    assert!(names.contains(&"cam3".to_owned()), "{names:?}");
    assert!(!names.contains(&"evil".to_owned()), "{names:?}");
    // Every stream that started also ended, whatever order nginx sent the notifications in, except one: the
    // logger answered `slow/x` after 12 s, so its capture has that publish AFTER the client's disconnect. Its
    // media server then stops calling, and the entry expires.
    let left: Vec<String> = streams(&server)
        .await?
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["app"].as_str().unwrap_or_default(),
                s["stream"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(left, vec!["slow/x".to_owned()]);
    let expired = sse
        .next_of("hooks.stream.unpublished", Duration::from_secs(10))
        .await;
    let mut reason = expired?.get("data").cloned().unwrap_or_default();
    while reason["stream"] != "x" {
        reason = sse
            .next_of("hooks.stream.unpublished", Duration::from_secs(10))
            .await?["data"]
            .clone();
    }
    assert_eq!(reason["reason"], "expired");
    assert!(streams(&server).await?.is_empty());
    let metrics = support::get(server.admin_url("/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(r#"rtcplane_hooks_decisions_total{server="nginx-rtmp",action="publish",result="deny"} 2"#),
        "{metrics}"
    );
    Ok(())
}

// ---------- SRS ----------

#[tokio::test]
async fn srs_callbacks_are_answered_0_or_non_zero_by_policy() -> anyhow::Result<()> {
    // An SRS-style upstream hook server behind a forward rule: accepts `good`, refuses anything else.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_url = format!("http://{}/api/v1/streams", upstream.local_addr()?);
    let app = axum::Router::new().route(
        "/api/v1/streams",
        axum::routing::post(|body: String| async move {
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            if v["stream"] == "good" { "0" } else { "1" }
        }),
    );
    let upstream_task = tokio::spawn(async move {
        let _ = axum::serve(upstream, app).await;
    });
    let dead = format!("http://127.0.0.1:{}/x", free_port());
    let now = chrono::Utc::now().timestamp();
    let server = Server::builder()
        .config(&format!(
            r#"
[[hooks.rules]]
name = "banned"
streams = ["banned*"]
then = "deny"

[[hooks.rules]]
apps = ["secure"]
actions = ["publish", "play"]
then = "token"
token_keys = ["current-key-0123456789", "previous-key-0123456789"]

[[hooks.rules]]
apps = ["keyed"]
actions = ["publish"]
then = "stream_key"

[[hooks.rules]]
apps = ["fwd"]
then = "forward"
forward_urls = ["{upstream_url}"]

[[hooks.rules]]
apps = ["closed"]
then = "forward"
forward_urls = ["{dead}"]
timeout_ms = 500

[[hooks.rules]]
apps = ["open"]
then = "forward"
forward_urls = ["{dead}"]
timeout_ms = 500
fail_open = true
"#
        ))
        .start()
        .await?;
    let url = server.public_url("/hooks/srs");
    let srs = |action: &str, app: &str, stream: &str, param: &str| {
        json!({"server_id": "vid-test", "action": action, "client_id": "c1", "ip": "192.168.1.10",
               "vhost": "__defaultVhost__", "app": app, "stream": stream, "param": param,
               "tcUrl": format!("rtmp://127.0.0.1/{app}")})
        .to_string()
    };
    let mut sse = SseReader::connect(&server.admin_url("/api/v1/events?types=hooks.*")).await?;

    // The seed's payloads, allowed by default.
    for body in [
        r#"{"action":"on_connect","client_id":1985,"ip":"192.168.1.10","vhost":"video.test.com","app":"live","tcUrl":"rtmp://x/x?key=xxx","pageUrl":"http://x/x.html"}"#,
        r#"{"action":"on_publish","client_id":1985,"ip":"192.168.1.10","vhost":"video.test.com","app":"live","stream":"livestream"}"#,
        r#"{"action":"on_play","client_id":1986,"ip":"192.168.1.11","vhost":"video.test.com","app":"live","stream":"livestream"}"#,
    ] {
        assert_eq!(
            post(&url, "application/json", body).await?,
            (200, None, "0".into()),
            "{body}"
        );
    }
    let live = streams(&server).await?;
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["stream"], "livestream");
    assert_eq!(live[0]["publisher"]["client_id"], "1985");
    assert_eq!(live[0]["players"][0]["client_id"], "1986");
    let e = sse
        .next_of("hooks.stream.published", Duration::from_secs(5))
        .await?;
    assert_eq!(e["data"]["vhost"], "video.test.com");
    sse.next_of("hooks.play.started", Duration::from_secs(5))
        .await?;
    // Kicking an SRS client needs hooks.srs_api_url.
    let kick = support::client()
        .post(server.admin_url(&format!(
            "/api/v1/streams/{}/kick",
            live[0]["id"].as_str().unwrap_or_default()
        )))
        .send()
        .await?;
    assert_eq!(kick.status(), 409);
    for body in [
        r#"{"action":"on_stop","client_id":1986,"ip":"192.168.1.11","vhost":"video.test.com","app":"live","stream":"livestream"}"#,
        r#"{"action":"on_unpublish","client_id":1985,"ip":"192.168.1.10","vhost":"video.test.com","app":"live","stream":"livestream"}"#,
        r#"{"action":"on_close","client_id":1985,"ip":"192.168.1.10","vhost":"video.test.com","app":"live"}"#,
    ] {
        assert_eq!(post(&url, "application/json", body).await?.2, "0", "{body}");
    }
    sse.next_of("hooks.play.stopped", Duration::from_secs(5))
        .await?;
    sse.next_of("hooks.stream.unpublished", Duration::from_secs(5))
        .await?;
    sse.next_of("hooks.client.disconnected", Duration::from_secs(5))
        .await?;
    assert!(streams(&server).await?.is_empty());

    // Deny rule: a non-zero integer, still HTTP 200 as SRS expects.
    let (status, _, body) = post(
        &url,
        "application/json",
        srs("on_publish", "live", "banned1", ""),
    )
    .await?;
    assert_eq!(status, 200);
    assert_ne!(body, "0");
    assert!(body.parse::<i64>().is_ok(), "{body}");

    // Tokens: valid (either rotated key), wrong stream, expired, missing.
    let token = |key: &str, stream: &str, expires: i64| {
        rtcplane_hook_gateway::sign_token(key.as_bytes(), "publish", "secure", stream, expires)
    };
    let good = format!(
        "?token={}&expires={}",
        token("current-key-0123456789", "cam", now + 600),
        now + 600
    );
    let old_key = format!(
        "?token={}&expires={}",
        token("previous-key-0123456789", "cam", now + 600),
        now + 600
    );
    let other = format!(
        "?token={}&expires={}",
        token("current-key-0123456789", "cam2", now + 600),
        now + 600
    );
    let expired = format!(
        "?token={}&expires={}",
        token("current-key-0123456789", "cam", now - 5),
        now - 5
    );
    for (param, want) in [
        (good.as_str(), "0"),
        (old_key.as_str(), "0"),
        (other.as_str(), "403"),
        (expired.as_str(), "403"),
        ("", "403"),
    ] {
        let (_, _, body) = post(
            &url,
            "application/json",
            srs("on_publish", "secure", "cam", param),
        )
        .await?;
        assert_eq!(body, want, "{param}");
    }
    // The CLI mints tokens the gateway accepts.
    let out = run(
        server.dir.path(),
        &[
            "hooks",
            "token",
            "--app",
            "secure",
            "--stream",
            "cam",
            "--ttl",
            "10m",
            "--config",
            "rtcplane.toml",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let query = String::from_utf8(out.stdout)?.trim().to_owned();
    let (_, _, body) = post(
        &url,
        "application/json",
        srs("on_publish", "secure", "cam", &format!("?{query}")),
    )
    .await?;
    assert_eq!(body, "0", "{query}");

    // Stream keys from the database, managed by the CLI on the server's store.
    let out = run(
        server.dir.path(),
        &[
            "hooks",
            "key",
            "add",
            "--app",
            "keyed",
            "--stream",
            "show1",
            "--description",
            "test",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)?.trim().to_owned();
    assert!(key.len() >= 16, "{key}");
    for (stream, param, want) in [
        (key.as_str(), "", "0"),
        ("show1", &*format!("?key={key}"), "0"),
        ("show2", &*format!("?key={key}"), "403"),
        ("not-a-key-at-all-0000", "", "403"),
    ] {
        let (_, _, body) = post(
            &url,
            "application/json",
            srs("on_publish", "keyed", stream, param),
        )
        .await?;
        assert_eq!(body, want, "{stream}{param}");
    }
    // SRS publishes under the key, but the registry shows the public name and a fingerprint only.
    let live = streams(&server).await?;
    assert!(live.iter().any(|s| s["stream"] == "show1"), "{live:?}");
    assert!(!serde_json::to_string(&live)?.contains(&key), "{live:?}");
    let keys: Value = support::get(server.admin_url("/api/v1/hooks/keys"))
        .await?
        .json()
        .await?;
    assert_eq!(keys["keys"][0]["stream"], "show1");
    assert!(!keys.to_string().contains(&key), "keys are never shown");
    let out = run(
        server.dir.path(),
        &["hooks", "key", "del", "keyed/show1"],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, _, body) = post(
        &url,
        "application/json",
        srs("on_publish", "keyed", &key, ""),
    )
    .await?;
    assert_eq!(body, "403", "a deleted key no longer publishes");

    // Forward: the upstream decides; unreachable upstreams fail closed unless fail_open.
    for (app, stream, want) in [
        ("fwd", "good", "0"),
        ("fwd", "evil", "403"),
        ("closed", "x", "403"),
        ("open", "x", "0"),
    ] {
        let (_, _, body) =
            post(&url, "application/json", srs("on_publish", app, stream, "")).await?;
        assert_eq!(body, want, "{app}/{stream}");
    }

    // Malformed bodies: 400 with a JSON error, never `0`.
    for bad in [
        "",
        "{",
        "[]",
        r#"{"action":"on_publish","app":"live"}"#,
        r#"{"action":"on_dance","app":"live","stream":"s"}"#,
    ] {
        let (status, _, body) = post(&url, "application/json", bad).await?;
        assert_eq!(status, 400, "{bad}");
        let v: Value = serde_json::from_str(&body)?;
        assert_eq!(v["error"]["code"], "bad_request", "{body}");
    }
    upstream_task.abort();
    Ok(())
}

#[tokio::test]
async fn srs_heartbeats_keep_entries_alive_and_silence_expires_them() -> anyhow::Result<()> {
    let server = Server::builder()
        .config("[hooks]\nregistry_ttl = \"2s\"\n")
        .start()
        .await?;
    let url = server.public_url("/hooks/srs");
    let publish = json!({"server_id": "vid-hb", "action": "on_publish", "client_id": "c9", "ip": "127.0.0.1",
        "vhost": "__defaultVhost__", "app": "live", "stream": "hb"});
    assert_eq!(
        post(&url, "application/json", publish.to_string()).await?.2,
        "0"
    );
    let mut sse =
        SseReader::connect(&server.admin_url("/api/v1/events?types=hooks.stream.*")).await?;
    let heartbeat = json!({"device_id": "my-srs", "ip": "127.0.0.1", "server": "vid-hb", "service": "x", "pid": "1"});
    for _ in 0..8 {
        assert_eq!(
            post(&url, "application/json", heartbeat.to_string())
                .await?
                .0,
            200
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        streams(&server).await?.len(),
        1,
        "heartbeats keep the stream"
    );
    let e = sse
        .next_of("hooks.stream.unpublished", Duration::from_secs(10))
        .await?;
    assert_eq!(e["data"]["reason"], "expired");
    assert!(streams(&server).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn only_allowed_sources_may_call_the_hooks() -> anyhow::Result<()> {
    let server = Server::builder()
        .config("[hooks]\nallowed_sources = [\"10.0.0.0/8\"]\n")
        .start()
        .await?;
    let body = r#"{"action":"on_publish","client_id":1,"ip":"10.1.1.1","vhost":"v","app":"live","stream":"s"}"#;
    let (status, _, text) =
        post(&server.public_url("/hooks/srs"), "application/json", body).await?;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("allowed_sources"), "{text}");
    let allowed = Server::builder()
        .config("[hooks]\nallowed_sources = [\"127.0.0.1\"]\n")
        .start()
        .await?;
    let (status, _, text) =
        post(&allowed.public_url("/hooks/srs"), "application/json", body).await?;
    assert_eq!((status, text.as_str()), (200, "0"));
    Ok(())
}

// ---------- MediaMTX ----------

#[tokio::test]
async fn mediamtx_auth_allows_2xx_and_denies_401() -> anyhow::Result<()> {
    let server = Server::builder()
        .config(
            r#"
[hooks]
default_action = "deny"

[[hooks.rules]]
name = "office publishes"
actions = ["publish"]
source_cidrs = ["10.0.0.0/8"]
then = "allow"

[[hooks.rules]]
name = "anyone reads"
actions = ["play"]
then = "allow"
"#,
        )
        .start()
        .await?;
    let url = server.public_url("/hooks/mediamtx");
    let body = |action: &str, ip: &str| {
        json!({"user": "", "password": "", "token": "", "ip": ip, "action": action, "path": "live/cam1",
               "protocol": "rtsp", "id": "2b4e1c4e-4d2f-4a8e-9c1d-1a2b3c4d5e6f", "query": "", "userAgent": "ffmpeg"})
        .to_string()
    };
    assert_eq!(
        post(&url, "application/json", body("publish", "10.1.2.3"))
            .await?
            .0,
        200
    );
    assert_eq!(
        post(&url, "application/json", body("publish", "192.0.2.1"))
            .await?
            .0,
        401
    );
    assert_eq!(
        post(&url, "application/json", body("read", "192.0.2.1"))
            .await?
            .0,
        200
    );
    assert_eq!(
        post(&url, "application/json", body("api", "192.0.2.1"))
            .await?
            .0,
        401
    );
    assert_eq!(
        post(&url, "application/json", "{\"action\":1}").await?.0,
        400
    );
    let live = streams(&server).await?;
    assert_eq!(live[0]["server"], "mediamtx");
    assert_eq!(live[0]["app"], "live");
    assert_eq!(live[0]["publisher"]["protocol"], "rtsp");
    Ok(())
}

// ---------- fuzzed bodies ----------

#[tokio::test]
async fn random_bodies_are_400_never_allowed() -> anyhow::Result<()> {
    use proptest::strategy::{Strategy, ValueTree};
    let mut server = Server::builder().start().await?;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec(proptest::num::u8::ANY, 0..300)
        .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    for _ in 0..150 {
        let body = strategy
            .new_tree(&mut runner)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .current();
        for (path, ct) in [
            ("/hooks/srs", "application/json"),
            ("/hooks/mediamtx", "application/json"),
            (
                "/hooks/nginx-rtmp/on_publish",
                "application/x-www-form-urlencoded",
            ),
        ] {
            let (status, _, text) = post(&server.public_url(path), ct, body.clone()).await?;
            if status != 400 {
                bail!("{path} answered {status} {text:?} to {body:?}");
            }
        }
    }
    assert!(server.alive());
    Ok(())
}

// ---------- real nginx-rtmp + ffmpeg ----------

struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(hooks: &str) -> anyhow::Result<Nginx> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let on = |call: &str| format!("{hooks}/hooks/nginx-rtmp/on_{call}");
    let conf = format!(
        r#"load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
master_process off;
daemon off;
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        notify_method post;
        on_connect {connect};
        on_disconnect {disconnect};
        application live {{ live on; on_publish {publish}; on_play {play}; on_publish_done {publish_done}; on_play_done {play_done}; on_update {update}; notify_update_timeout 1s; }}
        application secure {{ live on; on_publish {publish}; on_publish_done {publish_done}; }}
        application keyed {{ live on; on_publish {publish}; on_play {play}; on_publish_done {publish_done}; }}
    }}
}}
"#,
        dir = dir.path().display(),
        connect = on("connect"),
        disconnect = on("disconnect"),
        publish = on("publish"),
        play = on("play"),
        publish_done = on("publish_done"),
        play_done = on("play_done"),
        update = on("update"),
    );
    let file = dir.path().join("nginx.conf");
    std::fs::write(&file, conf)?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("nginx (Debian nginx-light + libnginx-mod-rtmp) must be installed")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            bail!(
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Nginx {
        child,
        _dir: dir,
        port,
    })
}

/// Publishes a test pattern for `secs` seconds; true if ffmpeg finished cleanly (the server kept it).
fn ffmpeg_publish(url: &str, secs: u32) -> anyhow::Result<std::process::Child> {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=15",
            "-t",
        ])
        .arg(secs.to_string())
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "15",
            "-f",
            "flv",
            url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("ffmpeg must be installed")
}

fn wait_exit(mut child: std::process::Child, within: Duration) -> anyhow::Result<bool> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("ffmpeg did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn nginx_rtmp_and_ffmpeg_end_to_end() -> anyhow::Result<()> {
    let server = Server::builder()
        .config(
            r#"
[[hooks.rules]]
name = "cam3 is banned"
streams = ["cam3"]
then = "deny"

[[hooks.rules]]
apps = ["secure"]
actions = ["publish"]
then = "token"
token_keys = ["e2e-token-key-0123456789"]

[[hooks.rules]]
apps = ["keyed"]
actions = ["publish"]
then = "stream_key"
"#,
        )
        .start()
        .await?;
    let nginx = start_nginx(&format!("http://{}", server.public))?;
    let rtmp = |path: &str| format!("rtmp://127.0.0.1:{}/{path}", nginx.port);
    let mut sse = SseReader::connect(&server.admin_url("/api/v1/events?types=hooks.*")).await?;

    // Allowed: publishes to the end; the registry saw it start and end.
    let ok = ffmpeg_publish(&rtmp("live/cam1?viewer=x"), 2)?;
    assert!(
        wait_exit(ok, Duration::from_secs(30))?,
        "allowed publish must succeed"
    );
    let e = sse
        .next_of("hooks.stream.published", Duration::from_secs(5))
        .await?;
    assert_eq!(e["data"]["stream"], "cam1");
    let e = sse
        .next_of("hooks.stream.unpublished", Duration::from_secs(10))
        .await?;
    assert_eq!(e["data"]["stream"], "cam1");

    // Denied by name; a spoofed `name=` in the query does not change that.
    let denied = ffmpeg_publish(&rtmp("live/cam3?name=cam1&call=play&addr=10.9.9.9"), 2)?;
    assert!(
        !wait_exit(denied, Duration::from_secs(30))?,
        "denied publish must be dropped"
    );

    // Tokens: expired is dropped, valid publishes.
    let now = chrono::Utc::now().timestamp();
    let sign = |exp: i64| {
        rtcplane_hook_gateway::sign_token(
            b"e2e-token-key-0123456789",
            "publish",
            "secure",
            "cam",
            exp,
        )
    };
    let expired = ffmpeg_publish(
        &rtmp(&format!(
            "secure/cam?token={}&expires={}",
            sign(now - 10),
            now - 10
        )),
        2,
    )?;
    assert!(
        !wait_exit(expired, Duration::from_secs(30))?,
        "expired token must be dropped"
    );
    let valid = ffmpeg_publish(
        &rtmp(&format!(
            "secure/cam?token={}&expires={}",
            sign(now + 600),
            now + 600
        )),
        2,
    )?;
    assert!(
        wait_exit(valid, Duration::from_secs(30))?,
        "valid token must publish"
    );

    // Rename by 302: the secret key publishes as the public name, which a player can play.
    let out = run(
        server.dir.path(),
        &[
            "hooks", "key", "add", "--app", "keyed", "--stream", "public1",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)?.trim().to_owned();
    let publisher = ffmpeg_publish(&rtmp(&format!("keyed/{key}")), 8)?;
    let renamed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(list) = streams(&server).await
                && let Some(s) = list.into_iter().find(|s| s["stream"] == "public1")
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("the renamed stream in the registry")?;
    // The registry (and every event) shows the key's fingerprint, never the key.
    assert!(
        renamed["renamed_from"]
            .as_str()
            .is_some_and(|r| r.starts_with("stream key ") && !r.contains(&key)),
        "{renamed}"
    );
    assert!(
        !streams(&server)
            .await?
            .iter()
            .any(|s| s.to_string().contains(&key))
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let play = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(rtmp("keyed/public1"))
        .args(["-t", "1", "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    assert!(
        wait_exit(play, Duration::from_secs(20))?,
        "the public name plays"
    );
    assert!(wait_exit(publisher, Duration::from_secs(30))?);

    // Kick: the publisher is dropped at its next on_update.
    let long = ffmpeg_publish(&rtmp("live/kickme"), 20)?;
    let id = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(list) = streams(&server).await
                && let Some(s) = list.into_iter().find(|s| s["stream"] == "kickme")
            {
                return s["id"].as_str().unwrap_or_default().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await?;
    let kick = support::client()
        .post(server.admin_url(&format!("/api/v1/streams/{id}/kick")))
        .send()
        .await?;
    assert_eq!(kick.status(), 202);
    let start = std::time::Instant::now();
    let _ = wait_exit(long, Duration::from_secs(15))?;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "kicked long before its 20 s"
    );
    Ok(())
}
