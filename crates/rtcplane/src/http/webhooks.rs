//! `/api/v1/webhooks`: webhook endpoints (list, create, show, change, delete), their delivery log, and
//! replay of one delivery or of a time range.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use rtcplane_event_bus::sinks::{
    DeliveryDetail, DeliveryRecord, EndpointPatch, EndpointRecord, NewEndpoint, WebhookError,
    Webhooks,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiError;
use super::admin::AdminState;

pub(crate) fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/webhooks", get(list).post(create))
        .route(
            "/api/v1/webhooks/{id}",
            get(show).patch(update).delete(remove),
        )
        .route("/api/v1/webhooks/{id}/deliveries", get(deliveries))
        .route("/api/v1/webhooks/{id}/deliveries/{delivery}", get(delivery))
        .route(
            "/api/v1/webhooks/{id}/deliveries/{delivery}/replay",
            post(replay_one),
        )
        .route("/api/v1/webhooks/{id}/replay", post(replay_range))
}

fn webhooks(s: &AdminState) -> Result<&Webhooks, ApiError> {
    s.sinks.webhooks.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "disabled",
            "webhooks are disabled on this node (webhooks.enabled = false)",
        )
    })
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::NotFound(m) => ApiError::not_found(m),
            WebhookError::ReadOnly(_) => {
                ApiError::new(StatusCode::CONFLICT, "read_only", e.to_string())
            }
            WebhookError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            WebhookError::Invalid { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string())
            }
            WebhookError::Gone(_) => ApiError::new(StatusCode::GONE, "gone", e.to_string()),
            WebhookError::Storage(ref cause) => ApiError::internal("webhook storage", cause),
        }
    }
}

/// The endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EndpointList {
    endpoints: Vec<EndpointRecord>,
}

/// A created endpoint with its secret (shown only here).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: EndpointRecord,
    /// `whsec_…`: verify `webhook-signature` with it.
    secret: String,
}

/// Webhook endpoints, from the config file (`origin: config`, read-only) and from this API.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = EndpointList), (status = 404, body = super::error::ErrorBody, description = "webhooks disabled")))]
pub(crate) async fn list(State(s): State<AdminState>) -> Result<Json<EndpointList>, ApiError> {
    Ok(Json(EndpointList {
        endpoints: webhooks(&s)?.list().await?,
    }))
}

/// Creates an endpoint. Without `secret` one is generated; the answer is the only place it is shown.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = NewEndpoint,
    responses((status = 201, body = CreatedEndpoint), (status = 400, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody, description = "the id is taken")))]
pub(crate) async fn create(
    State(s): State<AdminState>,
    body: Result<Json<NewEndpoint>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedEndpoint>), ApiError> {
    let Json(new) = body.map_err(ApiError::json)?;
    let (endpoint, secret) = webhooks(&s)?.create(new).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEndpoint { endpoint, secret }),
    ))
}

/// One endpoint.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = EndpointRecord), (status = 404, body = super::error::ErrorBody)))]
pub(crate) async fn show(
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<EndpointRecord>, ApiError> {
    Ok(Json(webhooks(&s)?.get(&id).await?))
}

/// Changes an endpoint created through the API (config endpoints answer 409).
#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    request_body = EndpointPatch,
    responses((status = 200, body = EndpointRecord), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub(crate) async fn update(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Json<EndpointPatch>, JsonRejection>,
) -> Result<Json<EndpointRecord>, ApiError> {
    let Json(patch) = body.map_err(ApiError::json)?;
    Ok(Json(webhooks(&s)?.update(&id, patch).await?))
}

/// Deletes an endpoint created through the API, with its delivery log.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub(crate) async fn remove(
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    webhooks(&s)?.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Filters of the delivery log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveriesQuery {
    /// `pending`, `delivering`, `delivered` or `dead`.
    state: Option<String>,
    /// Only deliveries with an id below this (paging: pass the last id of the previous page).
    before: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<i64>,
}

/// A page of the delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryList {
    deliveries: Vec<DeliveryRecord>,
}

/// The delivery log of an endpoint, newest first: state, attempts, last status, error and latency.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path), DeliveriesQuery),
    responses((status = 200, body = DeliveryList), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
pub(crate) async fn deliveries(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let deliveries = webhooks(&s)?
        .deliveries(&id, q.state.as_deref(), q.before, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(DeliveryList { deliveries }))
}

/// One delivery with every attempt.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries/{delivery}", tag = "webhooks",
    params(("id" = String, Path), ("delivery" = i64, Path)),
    responses((status = 200, body = DeliveryDetail), (status = 404, body = super::error::ErrorBody)))]
pub(crate) async fn delivery(
    State(s): State<AdminState>,
    Path((id, delivery)): Path<(String, i64)>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    Ok(Json(webhooks(&s)?.delivery(&id, delivery).await?))
}

/// Delivers the event of a delivery again, as a new delivery (`replay_of` names the old one).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery}/replay", tag = "webhooks",
    params(("id" = String, Path), ("delivery" = i64, Path)),
    responses((status = 202, body = DeliveryRecord), (status = 404, body = super::error::ErrorBody),
              (status = 410, body = super::error::ErrorBody, description = "the event left the stored log")))]
pub(crate) async fn replay_one(
    State(s): State<AdminState>,
    Path((id, delivery)): Path<(String, i64)>,
) -> Result<(StatusCode, Json<DeliveryRecord>), ApiError> {
    let new = webhooks(&s)?.replay(&id, delivery).await?;
    Ok((StatusCode::ACCEPTED, Json(new)))
}

/// A time: unix milliseconds or RFC 3339 text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum TimeArg {
    /// Unix milliseconds.
    Millis(i64),
    /// RFC 3339, e.g. `2026-11-23T10:00:00Z`.
    Text(String),
}

impl TimeArg {
    fn millis(&self, field: &str) -> Result<i64, ApiError> {
        match self {
            Self::Millis(ms) => Ok(*ms),
            Self::Text(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        format!("{field}: {t:?} is not an RFC 3339 time or unix milliseconds: {e}"),
                    )
                }),
        }
    }
}

/// The stored events to deliver again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRange {
    /// From this time (inclusive).
    since: TimeArg,
    /// To this time (inclusive); now when absent.
    #[serde(default)]
    until: Option<TimeArg>,
}

/// How many deliveries a range replay queued.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Replayed {
    queued: u64,
}

/// Delivers again every stored event in a time range that the endpoint's filter accepts (at most 100000).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/replay", tag = "webhooks",
    params(("id" = String, Path)), request_body = ReplayRange,
    responses((status = 202, body = Replayed), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
pub(crate) async fn replay_range(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Json<ReplayRange>, JsonRejection>,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    let Json(range) = body.map_err(ApiError::json)?;
    let since = range.since.millis("since")?;
    let until = match &range.until {
        Some(t) => t.millis("until")?,
        None => chrono::Utc::now().timestamp_millis(),
    };
    let queued = webhooks(&s)?.replay_range(&id, since, until).await?;
    Ok((StatusCode::ACCEPTED, Json(Replayed { queued })))
}
