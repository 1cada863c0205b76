//! `serve` and `migrate` on PostgreSQL and MariaDB, the newer-schema guard, and a database lost and found
//! while serving.

// Tests spawn real processes and poll real servers with std time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use rtcplane_storage::testing::TestDb;
use rtcplane_storage::{Backend, ConnectOptions, Storage, with_pool};
use support::{Proxy, Server, run};

#[tokio::test]
async fn serves_on_postgres_and_mariadb_and_deregisters_on_stop() -> anyhow::Result<()> {
    for backend in [Backend::Postgres, Backend::MySql] {
        let db = TestDb::new(backend).await;
        let mut server = Server::builder().storage(&db.url).start().await?;
        let ready = server
            .wait_ready_status(200, Duration::from_secs(10))
            .await?;
        assert_eq!(ready["checks"]["storage"]["ok"], true);
        let metrics = support::get(server.admin_url("/metrics"))
            .await?
            .text()
            .await?;
        assert!(
            metrics.contains(&format!("storage=\"{}\"", backend.as_str())),
            "{metrics}"
        );

        let storage = Storage::connect(&ConnectOptions::new(&db.url)).await?;
        let nodes = storage.nodes().list().await?;
        assert_eq!(nodes.len(), 1, "{backend:?}");
        assert_eq!(nodes[0].admin_listen, server.admin.to_string());

        let status = server.terminate(Duration::from_secs(10)).await?;
        assert!(status.success(), "{}", server.log());
        assert!(
            storage.nodes().list().await?.is_empty(),
            "{backend:?}: node must leave the registry on stop"
        );
        storage.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn refuses_to_start_on_a_newer_schema() -> anyhow::Result<()> {
    for db in TestDb::all().await {
        let storage = Storage::connect(&ConnectOptions::new(&db.url)).await?;
        storage.migrate().await?;
        let sql = storage.sql(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (?, ?, ?, ?, ?)",
        );
        with_pool!(storage, p => sqlx::query(sql)
            .bind(20_990_101_i64).bind("future").bind(true).bind(vec![0_u8; 48]).bind(1_i64)
            .execute(p).await.map(|_| ()))?;
        storage.close().await;

        let dir = tempfile::tempdir()?;
        for cmd in ["migrate", "serve"] {
            let o = run(
                dir.path(),
                &[cmd],
                &[
                    ("RTCPLANE__STORAGE__URL", db.url.clone()),
                    (
                        "RTCPLANE__HTTP__ADMIN_LISTEN",
                        format!("127.0.0.1:{}", support::free_port()),
                    ),
                    (
                        "RTCPLANE__HTTP__PUBLIC_LISTEN",
                        format!("127.0.0.1:{}", support::free_port()),
                    ),
                ],
            );
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{:?} {cmd}: {err}", db.backend);
            assert!(
                err.contains("newer than this binary"),
                "{:?} {cmd}: {err}",
                db.backend
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn serve_without_migrating_refuses_an_old_schema() -> anyhow::Result<()> {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir()?;
    let o = run(
        dir.path(),
        &["serve"],
        &[
            ("RTCPLANE__STORAGE__URL", db.url.clone()),
            ("RTCPLANE__STORAGE__MIGRATE_ON_START", "false".into()),
            (
                "RTCPLANE__HTTP__ADMIN_LISTEN",
                format!("127.0.0.1:{}", support::free_port()),
            ),
            (
                "RTCPLANE__HTTP__PUBLIC_LISTEN",
                format!("127.0.0.1:{}", support::free_port()),
            ),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("rtcplane migrate"), "{err}");
    Ok(())
}

#[tokio::test]
async fn database_lost_while_serving_turns_readyz_503_and_recovers() -> anyhow::Result<()> {
    let db = TestDb::new(Backend::Postgres).await;
    // Route rtcplane's connections through a proxy we can cut.
    let target: std::net::SocketAddr = "127.0.0.1:5432".parse()?;
    let proxy = Proxy::start(target).await?;
    let proxied = db
        .url
        .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(proxied, db.url, "test database URL must use 127.0.0.1:5432");
    let mut server = Server::builder().storage(&proxied).start().await?;
    server
        .wait_ready_status(200, Duration::from_secs(10))
        .await?;

    proxy.cut();
    let down = server
        .wait_down(&["storage"], Duration::from_secs(15))
        .await?;
    assert_eq!(down["down"], serde_json::json!(["storage"]), "{down}");
    assert_eq!(down["status"], "unavailable");
    // Liveness is unaffected and the process keeps running.
    assert_eq!(
        support::get(server.admin_url("/healthz")).await?.status(),
        200
    );
    assert!(server.alive());

    proxy.restore();
    let up = server
        .wait_ready_status(200, Duration::from_secs(20))
        .await?;
    assert_eq!(up["checks"]["storage"]["ok"], true);
    assert!(server.alive());
    Ok(())
}
