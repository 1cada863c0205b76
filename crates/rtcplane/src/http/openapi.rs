//! `GET /api/v1/openapi.json`: the admin API described with utoipa from the handlers themselves.

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "rtcplane admin API", description = "Health, readiness, metrics, events, webhooks, cluster state, streams and rooms of an rtcplane node."),
    paths(
        super::admin::healthz,
        super::admin::readyz,
        super::admin::metrics,
        super::admin::nodes,
        super::sse::events,
        super::sse::publish,
        super::webhooks::list,
        super::webhooks::create,
        super::webhooks::show,
        super::webhooks::update,
        super::webhooks::remove,
        super::webhooks::deliveries,
        super::webhooks::delivery,
        super::webhooks::replay_one,
        super::webhooks::replay_range,
        rtcplane_hook_gateway::list_streams,
        rtcplane_hook_gateway::show_stream,
        rtcplane_hook_gateway::kick,
        rtcplane_hook_gateway::list_keys,
        rtcplane_sip_registrar_agent::http::list,
        rtcplane_sip_registrar_agent::http::show,
        rtcplane_sip_registrar_agent::http::create,
        rtcplane_sip_registrar_agent::http::update,
        rtcplane_sip_registrar_agent::http::remove,
        rtcplane_sip_registrar_agent::http::refresh,
        rtcplane_sip_registrar_agent::http::rpc,
        rtcplane_room_state::admin::list,
        rtcplane_room_state::admin::show,
        rtcplane_room_state::admin::remove,
        rtcplane_room_state::admin::kick,
        document,
    ),
    components(schemas(super::error::ErrorBody, super::error::ErrorDetail, crate::readiness::Report, crate::readiness::CheckResult, rtcplane_sip_registrar_agent::BindingView, rtcplane_sip_registrar_agent::Status)),
    tags((name = "health"), (name = "observability"), (name = "events"), (name = "cluster"), (name = "webhooks"), (name = "hooks"), (name = "sip"), (name = "rooms"), (name = "meta"))
)]
pub(crate) struct AdminApi;

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = AdminApi::openapi();
    doc.merge(rtcplane_turn_relay::openapi());
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    Json(doc)
}
