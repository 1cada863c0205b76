//! The admin listener: health, readiness, metrics, the event stream, the cluster's nodes, the OpenAPI
//! document, and subsystems' admin routers under `/api/v1/…`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use rtcplane_event_bus::Bus;
use rtcplane_event_bus::sinks::Sinks;
use rtcplane_storage::{NodeRecord, Storage};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::ApiError;
use crate::config::Config;
use crate::readiness::{Readiness, Report};
use crate::subsystems::Started;

/// What admin handlers share.
#[derive(Clone, Debug)]
pub(crate) struct AdminState {
    pub(crate) config: Arc<Config>,
    pub(crate) storage: Storage,
    pub(crate) bus: Bus,
    pub(crate) readiness: Readiness,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) shutdown: CancellationToken,
    pub(crate) sinks: Sinks,
}

/// The admin application.
pub(crate) fn router(state: AdminState, started: &[Started]) -> Router {
    let http = state.config.http.clone();
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/events",
            get(super::sse::events).post(super::sse::publish),
        )
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/openapi.json", get(super::openapi::document))
        .merge(super::webhooks::router())
        .with_state(state);
    for s in started {
        if let Some(r) = &s.admin {
            app = app.merge(r.clone());
        }
    }
    super::finish(app, "admin", &http)
}

/// Liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok` while the process can answer.
    status: &'static str,
    /// This node's id.
    node: String,
    /// The rtcplane version.
    version: &'static str,
}

/// Liveness: 200 while the process answers at all.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub(crate) async fn healthz(State(s): State<AdminState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        node: s.config.node_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Readiness: 200 when storage, Redis (if configured), the bus and every enabled subsystem are up; 503
/// naming what is down (or that the node is draining) otherwise.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Report), (status = 503, body = Report, description = "something is down or the node is draining")))]
pub(crate) async fn readyz(State(s): State<AdminState>) -> Response {
    let report = s.readiness.report().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// Prometheus text exposition of every `rtcplane_*` series.
#[utoipa::path(get, path = "/metrics", tag = "observability",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
pub(crate) async fn metrics(State(s): State<AdminState>) -> Response {
    let body = crate::telemetry::render(&s.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// One node of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeView {
    node_id: String,
    version: String,
    admin_listen: String,
    /// Unix milliseconds.
    started_at: i64,
    /// Unix milliseconds of the last heartbeat.
    last_seen: i64,
    /// Heard from within three heartbeat intervals.
    alive: bool,
}

/// The cluster's nodes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodesResponse {
    nodes: Vec<NodeView>,
}

/// Nodes sharing this database, from their heartbeats.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "cluster",
    responses((status = 200, body = NodesResponse), (status = 500, body = super::error::ErrorBody)))]
pub(crate) async fn nodes(State(s): State<AdminState>) -> Result<Json<NodesResponse>, ApiError> {
    let records = s
        .storage
        .nodes()
        .list()
        .await
        .map_err(|e| ApiError::internal("listing nodes", &e))?;
    let horizon = s.config.storage.heartbeat_interval.as_millis() as i64 * 3;
    let now = chrono::Utc::now().timestamp_millis();
    let nodes = records
        .into_iter()
        .map(|n: NodeRecord| NodeView {
            alive: now - n.last_seen <= horizon,
            node_id: n.node_id,
            version: n.version,
            admin_listen: n.admin_listen,
            started_at: n.started_at,
            last_seen: n.last_seen,
        })
        .collect();
    Ok(Json(NodesResponse { nodes }))
}
