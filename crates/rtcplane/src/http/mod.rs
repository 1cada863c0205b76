//! The two HTTP listeners. Every router goes through [`finish`], which adds the same stack: request ids
//! (`x-request-id`, made if absent and echoed back), a tracing span per request (path only: queries may carry
//! tokens), a body-size limit (413), a response timeout (503), per-route metrics, and JSON bodies for bare
//! error responses. Errors become responses in exactly one place: [`ApiError`].

pub(crate) mod admin;
mod error;
mod openapi;
pub(crate) mod public;
mod sse;
mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub(crate) use error::ApiError;

use crate::config::HttpConfig;
use crate::telemetry::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS};

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds the common stack to a finished router (all routes and nested routers already added).
pub(crate) fn finish(router: Router, listener: &'static str, http: &HttpConfig) -> Router {
    // axum refuses a route layer on a router without routes (the public one, while no subsystem is enabled).
    let router = if router.has_routes() {
        router.route_layer(middleware::from_fn_with_state(listener, track))
    } else {
        router
    };
    router
        .fallback(move |req: Request| fallback(listener, req))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(move |req: &Request| {
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("http", listener, method = %req.method(), path = %req.uri().path(), request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
                .layer(middleware::map_response(json_for_bare_errors))
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, http.request_timeout))
                .layer(RequestBodyLimitLayer::new(http.max_body_bytes)),
        )
}

/// Records `rtcplane_http_*` for matched routes, labelled by the route template (bounded cardinality).
async fn track(State(listener): State<&'static str>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method()).to_owned();
    let start = tokio::time::Instant::now();
    metrics::gauge!(HTTP_IN_FLIGHT, "listener" => listener).increment(1.0);
    let resp = next.run(req).await;
    metrics::gauge!(HTTP_IN_FLIGHT, "listener" => listener).decrement(1.0);
    record(listener, method, route, resp.status(), start.elapsed());
    resp
}

fn record(
    listener: &'static str,
    method: String,
    route: String,
    status: StatusCode,
    took: Duration,
) {
    let status = status.as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "listener" => listener, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "listener" => listener, "method" => method, "route" => route).record(took.as_secs_f64());
}

/// Methods as metric labels: the standard ones by name, anything a client invents as `other`.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn fallback(listener: &'static str, req: Request) -> ApiError {
    // Unmatched paths are attacker-chosen: count them under one label, never by path or method.
    metrics::counter!(HTTP_REQUESTS, "listener" => listener, "method" => "other", "route" => "unmatched", "status" => "404")
        .increment(1);
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// Layers below the router (body limit, timeout) answer with bare bodies; give them the JSON error shape.
/// Responses that set a content type (including compatible APIs with shapes of their own) pass untouched.
async fn json_for_bare_errors<B>(resp: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let resp = resp.map(axum::body::Body::new);
    let status = resp.status();
    let bare = !resp.headers().contains_key(header::CONTENT_TYPE)
        || resp.headers().get(header::CONTENT_TYPE)
            == Some(&HeaderValue::from_static("text/plain; charset=utf-8"))
            && matches!(
                status,
                StatusCode::PAYLOAD_TOO_LARGE | StatusCode::SERVICE_UNAVAILABLE
            );
    if !(status.is_client_error() || status.is_server_error()) || !bare {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "request body is larger than http.max_body_bytes",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "timeout",
            "the request took longer than http.request_timeout",
        ),
        _ => ("error", status.canonical_reason().unwrap_or("error")),
    };
    ApiError::new(status, code, message).into_response()
}
