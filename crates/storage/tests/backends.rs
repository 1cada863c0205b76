//! Storage against the three real servers: migrations, the schema guard, the node registry, reconnects.

// Tests spawn real processes and poll real servers with std time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::time::Duration;

use rtcplane_storage::testing::TestDb;
use rtcplane_storage::{Backend, ConnectOptions, Error, NodeRecord, Storage, with_pool};

async fn connect(db: &TestDb) -> Storage {
    Storage::connect(&ConnectOptions::new(&db.url))
        .await
        .expect("connects")
}

fn node(id: &str, seen: i64) -> NodeRecord {
    NodeRecord {
        node_id: id.into(),
        version: "0.1.0".into(),
        admin_listen: "127.0.0.1:9090".into(),
        started_at: 1_000,
        last_seen: seen,
    }
}

#[tokio::test]
async fn migrate_is_idempotent_on_every_backend() {
    for db in TestDb::all().await {
        let s = connect(&db).await;
        assert_eq!(s.backend(), db.backend);
        let before = s.schema_status().await.expect("status");
        assert!(
            before.applied.is_empty(),
            "{:?}: fresh database",
            db.backend
        );
        assert_eq!(before.pending(), before.known);
        assert!(matches!(
            s.ensure_current().await,
            Err(Error::SchemaOutdated { .. })
        ));

        let first = s.migrate().await.expect("migrate");
        assert_eq!(first.applied_now, before.known, "{:?}", db.backend);
        let second = s.migrate().await.expect("migrate again");
        assert!(second.applied_now.is_empty());
        assert_eq!(second.current, before.known.last().copied());
        s.ensure_current().await.expect("current");
        s.ping(Duration::from_secs(2)).await.expect("ping");
        s.close().await;
    }
}

#[tokio::test]
async fn refuses_a_schema_newer_than_the_binary() {
    for db in TestDb::all().await {
        let s = connect(&db).await;
        s.migrate().await.expect("migrate");
        // A newer rtcplane applied migration 9999 to this database.
        let sql = s.sql(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (?, ?, ?, ?, ?)",
        );
        with_pool!(s, p => sqlx::query(sql)
            .bind(9999_i64).bind("from the future").bind(true).bind(vec![0_u8; 48]).bind(1_i64)
            .execute(p).await.map(|_| ()))
        .expect("insert future migration");
        let nodes_before = s.nodes().list().await.expect("list");

        let err = s.migrate().await.expect_err("must refuse");
        assert!(
            matches!(&err, Error::SchemaTooNew { unknown, .. } if unknown == &vec![9999]),
            "{:?}: {err}",
            db.backend
        );
        assert!(err.to_string().contains("newer than this binary"), "{err}");
        assert!(matches!(
            s.ensure_current().await,
            Err(Error::SchemaTooNew { .. })
        ));
        // Nothing was touched.
        assert_eq!(s.nodes().list().await.expect("list"), nodes_before);
        s.close().await;
    }
}

#[tokio::test]
async fn node_registry_on_every_backend() {
    for db in TestDb::all().await {
        let s = connect(&db).await;
        s.migrate().await.expect("migrate");
        let nodes = s.nodes();
        assert!(nodes.list().await.expect("list").is_empty());
        nodes.heartbeat(&node("b", 10)).await.expect("insert");
        nodes.heartbeat(&node("a", 20)).await.expect("insert");
        nodes.heartbeat(&node("b", 30)).await.expect("upsert");
        let listed = nodes.list().await.expect("list");
        assert_eq!(
            listed,
            vec![node("a", 20), node("b", 30)],
            "{:?}",
            db.backend
        );
        // Values round-trip exactly, including large timestamps and non-ASCII ids.
        let big = NodeRecord {
            node_id: "nœud-ü".into(),
            last_seen: 1_790_000_000_123,
            ..node("x", 0)
        };
        nodes.heartbeat(&big).await.expect("insert");
        assert!(nodes.list().await.expect("list").contains(&big));
        assert!(nodes.remove("a").await.expect("remove"));
        assert!(!nodes.remove("a").await.expect("remove again"));
        assert_eq!(nodes.list().await.expect("list").len(), 2);
        s.close().await;
    }
}

#[tokio::test]
async fn sqlite_file_is_created_with_wal() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = connect(&db).await;
    let path = db.url.trim_start_matches("sqlite:");
    assert!(std::path::Path::new(path).exists());
    let mode: String =
        with_pool!(s, p => sqlx::query_scalar("PRAGMA journal_mode").fetch_one(p).await)
            .expect("pragma");
    assert_eq!(mode, "wal");
    s.close().await;
}

#[tokio::test]
async fn unreachable_database_fails_after_the_connect_timeout() {
    // Nothing listens on port 1.
    let opts = ConnectOptions {
        url: "postgres://postgres:hunter2@127.0.0.1:1/test".into(),
        max_connections: 2,
        connect_timeout: Duration::from_millis(800),
    };
    let started = std::time::Instant::now();
    let err = Storage::connect(&opts).await.expect_err("must fail");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "gave up too early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "took too long: {waited:?}");
    let msg = err.to_string();
    assert!(msg.contains("cannot connect to postgres"), "{msg}");
    assert!(!msg.contains("hunter2"), "password leaked: {msg}");
}

#[tokio::test]
async fn wrong_credentials_fail_at_once_without_leaking() {
    let opts = ConnectOptions {
        url: "mysql://nosuchuser:hunter2@127.0.0.1:3306/test".into(),
        max_connections: 1,
        connect_timeout: Duration::from_secs(30),
    };
    let started = std::time::Instant::now();
    let err = Storage::connect(&opts).await.expect_err("must fail");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "auth errors are not retried"
    );
    assert!(!err.to_string().contains("hunter2"));
}
