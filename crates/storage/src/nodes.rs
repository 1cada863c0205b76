//! The cluster's node registry (`rtcplane_nodes`): each serving node upserts its row on a heartbeat and
//! removes it on clean shutdown; `last_seen` tells which nodes are alive.

use serde::Serialize;
use sqlx::Row;

use crate::{Backend, Error, Storage, with_pool};

/// One node as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    /// The node's id (`node_id` in config; the host name by default).
    pub node_id: String,
    /// The rtcplane version it runs.
    pub version: String,
    /// Its admin listener address.
    pub admin_listen: String,
    /// When it started, unix milliseconds.
    pub started_at: i64,
    /// Its last heartbeat, unix milliseconds.
    pub last_seen: i64,
}

/// Queries on `rtcplane_nodes`.
#[derive(Debug)]
pub struct Nodes<'a> {
    storage: &'a Storage,
}

impl<'a> Nodes<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Inserts or refreshes a node's row.
    pub async fn heartbeat(&self, node: &NodeRecord) -> Result<(), Error> {
        let sql = match self.storage.backend() {
            Backend::Sqlite | Backend::Postgres => {
                "INSERT INTO rtcplane_nodes (node_id, version, admin_listen, started_at, last_seen) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (node_id) DO UPDATE SET version = excluded.version, admin_listen = excluded.admin_listen, \
                 started_at = excluded.started_at, last_seen = excluded.last_seen"
            }
            Backend::MySql => {
                "INSERT INTO rtcplane_nodes (node_id, version, admin_listen, started_at, last_seen) VALUES (?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE version = VALUES(version), admin_listen = VALUES(admin_listen), \
                 started_at = VALUES(started_at), last_seen = VALUES(last_seen)"
            }
        };
        let sql = self.storage.sql(sql);
        with_pool!(self.storage, p => sqlx::query(sql)
            .bind(&node.node_id)
            .bind(&node.version)
            .bind(&node.admin_listen)
            .bind(node.started_at)
            .bind(node.last_seen)
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(|source| Error::Query {
            op: "nodes.heartbeat",
            source,
        })
    }

    /// Every node, ordered by id.
    pub async fn list(&self) -> Result<Vec<NodeRecord>, Error> {
        let sql = "SELECT node_id, version, admin_listen, started_at, last_seen FROM rtcplane_nodes ORDER BY node_id";
        let records = with_pool!(self.storage, p => {
            let rows = sqlx::query(sql).fetch_all(p).await;
            rows.and_then(|rows| rows.iter().map(|r| Ok(NodeRecord {
                node_id: r.try_get("node_id")?,
                version: r.try_get("version")?,
                admin_listen: r.try_get("admin_listen")?,
                started_at: r.try_get("started_at")?,
                last_seen: r.try_get("last_seen")?,
            })).collect::<Result<Vec<_>, sqlx::Error>>())
        });
        records.map_err(|source| Error::Query {
            op: "nodes.list",
            source,
        })
    }

    /// Removes a node's row; true if there was one.
    pub async fn remove(&self, node_id: &str) -> Result<bool, Error> {
        let sql = self
            .storage
            .sql("DELETE FROM rtcplane_nodes WHERE node_id = ?");
        with_pool!(self.storage, p => sqlx::query(sql).bind(node_id).execute(p).await.map(|r| r.rows_affected() > 0))
            .map_err(|source| Error::Query { op: "nodes.remove", source })
    }
}
