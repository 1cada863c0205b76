//! `rtcplane serve` as a process: the embedded defaults, the admin surface, env overrides, sockets opened,
//! graceful shutdown.

// Tests spawn real processes and poll real servers with std time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use support::{Server, SseReader, sockets_of};

#[tokio::test]
async fn embedded_defaults_serve_the_admin_surface() -> anyhow::Result<()> {
    let server = Server::builder().start().await?;

    // The default SQLite database is created, in WAL mode, under ./data.
    let db = server.dir.path().join("data/rtcplane.db");
    assert!(db.exists());
    assert!(server.dir.path().join("data/rtcplane.db-wal").exists());

    let health = support::get(server.admin_url("/healthz")).await?;
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    let body: serde_json::Value = health.json().await?;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    let ready = server
        .wait_ready_status(200, Duration::from_secs(5))
        .await?;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["storage"]["ok"], true);
    assert!(
        ready["checks"].get("redis").is_none(),
        "no Redis configured: {ready}"
    );

    let metrics = support::get(server.admin_url("/metrics"))
        .await?
        .text()
        .await?;
    for series in [
        "rtcplane_process_resident_memory_bytes",
        "rtcplane_process_cpu_seconds_total",
        "rtcplane_http_requests_total{",
        "rtcplane_bus_events_published_total",
        "rtcplane_bus_events_dropped_total{reason=\"lagged\"} 0",
        "rtcplane_build_info{",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
    assert!(metrics.contains("route=\"/healthz\""), "{metrics}");
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            line.starts_with("rtcplane_"),
            "series outside the rtcplane_ namespace: {line}"
        );
    }

    // Our own request id is echoed back.
    let client = support::client();
    let r = client
        .get(server.admin_url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await?;
    assert_eq!(r.headers()["x-request-id"], "abc-123");

    // Unknown routes answer the JSON error shape on both listeners.
    for url in [server.admin_url("/nope"), server.public_url("/nope")] {
        let r = support::get(&url).await?;
        assert_eq!(r.status(), 404);
        let body: serde_json::Value = r.json().await?;
        assert_eq!(body["error"]["code"], "not_found");
    }

    // Client-chosen methods and paths never become metric labels (bounded cardinality).
    let weird = reqwest::Method::from_bytes(b"FROBNICATE")?;
    let r = client
        .request(weird, server.admin_url("/healthz"))
        .send()
        .await?;
    assert_eq!(r.status(), 405);
    assert_eq!(
        support::get(server.admin_url("/secret-path-xyz"))
            .await?
            .status(),
        404
    );
    let metrics = support::get(server.admin_url("/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        !metrics.contains("FROBNICATE") && !metrics.contains("secret-path-xyz"),
        "{metrics}"
    );
    assert!(
        metrics.contains("listener=\"admin\",method=\"other\",route=\"unmatched\""),
        "{metrics}"
    );

    // This node is in the registry.
    let nodes: serde_json::Value = support::get(server.admin_url("/api/v1/nodes"))
        .await?
        .json()
        .await?;
    assert_eq!(nodes["nodes"][0]["alive"], true, "{nodes}");
    assert_eq!(nodes["nodes"][0]["admin_listen"], server.admin.to_string());

    // The OpenAPI document describes the admin routes.
    let doc: serde_json::Value = support::get(server.admin_url("/api/v1/openapi.json"))
        .await?
        .json()
        .await?;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/events",
        "/api/v1/nodes",
        "/api/v1/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} not documented");
        let r = support::get(server.admin_url(path)).await?;
        assert_ne!(r.status(), 404, "{path} documented but not served");
    }
    // The TURN routes too (documented always, served when [turn] is enabled; tests/turn.rs calls them).
    for (path, method) in [
        ("/api/v1/turn/allocations", "get"),
        ("/api/v1/turn/allocations/{id}", "delete"),
        ("/api/v1/turn/users", "post"),
        ("/api/v1/turn/users/{name}/limits", "put"),
        ("/api/v1/turn/limits", "get"),
        ("/api/v1/turn/credentials", "get"),
    ] {
        assert!(
            doc["paths"][path].get(method).is_some(),
            "{method} {path} not documented"
        );
    }
    assert!(doc["components"]["schemas"].get("UserLimits").is_some());
    Ok(())
}

#[tokio::test]
async fn env_moves_the_admin_listener() -> anyhow::Result<()> {
    let port = support::free_port();
    let server = Server::builder()
        .config("[http]\nadmin_listen = \"127.0.0.1:1\"\n")
        .env("RTCPLANE__HTTP__ADMIN_LISTEN", format!("127.0.0.1:{port}"))
        .start()
        .await?;
    assert_eq!(server.admin.port(), port);
    let r = support::get(format!("http://127.0.0.1:{port}/healthz")).await?;
    assert_eq!(r.status(), 200);
    Ok(())
}

#[tokio::test]
async fn disabled_subsystems_open_no_port() -> anyhow::Result<()> {
    // TURN is off in every test server; the SIP agent is on (on an ephemeral port) unless switched off.
    let server = Server::builder()
        .env("RTCPLANE__SIP_AGENT__ENABLED", "false")
        .start()
        .await?;
    let sockets = sockets_of(server.pid())?;
    let expected: std::collections::BTreeSet<u16> =
        [server.admin.port(), server.public.port()].into();
    assert_eq!(
        sockets.tcp_listen, expected,
        "only the two HTTP listeners may be open"
    );
    assert!(
        sockets.udp.is_empty(),
        "no UDP socket without TURN or SIP: {:?}",
        sockets.udp
    );
    // Enabled, the SIP agent opens its one UDP socket and no listener.
    let server = Server::builder().start().await?;
    let sockets = sockets_of(server.pid())?;
    assert_eq!(sockets.udp.len(), 1, "{:?}", sockets.udp);
    assert_eq!(sockets.tcp_listen.len(), 2, "{:?}", sockets.tcp_listen);
    Ok(())
}

#[tokio::test]
async fn sse_streams_bus_events_with_filters() -> anyhow::Result<()> {
    let server = Server::builder().start().await?;
    let bad = support::get(server.admin_url("/api/v1/events?types=turn.[")).await?;
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await?;
    assert_eq!(body["error"]["code"], "bad_request");
    let unknown = support::get(server.admin_url("/api/v1/events?typo=x")).await?;
    assert_eq!(unknown.status(), 400);

    // The node's own stop event reaches an unfiltered stream, and not one filtered to `turn.*`.
    let mut all = SseReader::connect(&server.admin_url("/api/v1/events")).await?;
    let mut only_turn =
        SseReader::connect(&server.admin_url("/api/v1/events?types=turn.*")).await?;
    let mut server = server;
    let status = server.terminate(Duration::from_secs(10)).await?;
    assert!(status.success());
    let stopped = all
        .next_of("cluster.node.stopped", Duration::from_secs(5))
        .await?;
    assert_eq!(stopped["type"], "cluster.node.stopped");
    assert_eq!(stopped["specversion"], "1.0");
    assert_eq!(stopped["data"]["signal"], "SIGTERM");
    assert!(
        only_turn
            .next_of("cluster.node.stopped", Duration::from_millis(500))
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_within_the_grace_period() -> anyhow::Result<()> {
    let mut server = Server::builder().start().await?;
    let mut sse = SseReader::connect(&server.admin_url("/api/v1/events")).await?;
    let started = tokio::time::Instant::now();
    let status = server.terminate(Duration::from_secs(10)).await?;
    assert!(status.success(), "exit {status}:\n{}", server.log());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        sse.ends_within(Duration::from_secs(2)).await,
        "the event stream must end on shutdown"
    );
    assert!(server.log().contains("stopped cleanly"), "{}", server.log());
    Ok(())
}

#[tokio::test]
async fn json_logs_when_asked() -> anyhow::Result<()> {
    let mut server = Server::builder()
        .env("RTCPLANE__LOG__FORMAT", "json")
        .start()
        .await?;
    server.terminate(Duration::from_secs(10)).await?;
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{e}: {line}"))?;
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains("\"rtcplane is serving\""), "{log}");
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_get_a_json_413() -> anyhow::Result<()> {
    let server = Server::builder()
        .env("RTCPLANE__HTTP__MAX_BODY_BYTES", "1024")
        .start()
        .await?;
    let r = support::client()
        .post(server.admin_url("/api/v1/nodes"))
        .header("content-length", "4096")
        .body(vec![b'x'; 4096])
        .send()
        .await?;
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["error"]["code"], "payload_too_large");
    Ok(())
}

#[tokio::test]
async fn a_taken_port_fails_start_up_naming_the_key() -> anyhow::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let mut server = Server::builder()
        .env("RTCPLANE__HTTP__PUBLIC_LISTEN", format!("127.0.0.1:{port}"))
        .spawn()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.alive() {
        assert!(tokio::time::Instant::now() < deadline, "should have exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.log().contains("http.public_listen"),
        "{}",
        server.log()
    );
    Ok(())
}
