//! rtcplane's hook gateway: the server media servers call on connect, publish, play and stop, deciding allow
//! or deny. One gateway speaks the three dialects operators run today (SRS HTTP callbacks, nginx-rtmp
//! `on_*` notify, MediaMTX external HTTP auth), reads each into one model ([`model::HookRequest`]), decides
//! with one ordered policy ([`policy`]) and keeps a live registry of who publishes and plays what
//! ([`registry`]), published on the bus as `hooks.*` events.
//!
//! Public routes: `POST /hooks/srs`, `POST|GET /hooks/nginx-rtmp/{call}`, `POST /hooks/mediamtx`.
//! Admin routes: `GET /api/v1/streams`, `GET /api/v1/streams/{id}`, `POST /api/v1/streams/{id}/kick`,
//! `GET /api/v1/hooks/keys`.
//!
//! The adapters are pure functions over bytes; only the policy's `stream_key` (database) and `forward`
//! (HTTP) rules do I/O.

pub mod adapters;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod registry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rtcplane_event_bus::Bus;
use rtcplane_storage::Storage;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use keys::{KeyError, Keys, StreamKey};
pub use model::{Action, Decision, HookRequest, ServerKind};
pub use policy::sign_token;

use crate::model::BadRequest;
use crate::policy::{Policy, Raw};
use crate::registry::{KickPlan, Registry};

/// Largest hook body read (hooks are small; SRS on_hls is the largest at a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// The running gateway.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    allowed_sources: Vec<ipnet::IpNet>,
    policy: Policy,
    keys: Keys,
    registry: Registry,
    shutdown: CancellationToken,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[error("hook gateway: {0}")]
pub struct StartError(String);

/// Starts the gateway: compiles the policy and starts the registry's expiry task.
pub async fn start(
    config: Config,
    bus: &Bus,
    storage: &Storage,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<Gateway, StartError> {
    metrics::describe();
    let policy = Policy::new(&config).map_err(StartError)?;
    let gateway = Gateway {
        inner: Arc::new(Inner {
            registry: Registry::new(bus.publisher("hooks"), config.registry_ttl),
            keys: Keys::new(storage.clone()),
            policy,
            shutdown: shutdown.clone(),
            allowed_sources: config
                .allowed_sources
                .iter()
                .filter_map(|c| policy::parse_cidr(c))
                .collect(),
            config,
        }),
    };
    let g = gateway.clone();
    tasks.spawn(async move {
        let every = (g.inner.config.registry_ttl / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => g.inner.registry.expire(),
            }
        }
    });
    Ok(gateway)
}

impl Gateway {
    /// Ready while not shutting down.
    pub fn ready(&self) -> Result<(), String> {
        if self.inner.shutdown.is_cancelled() {
            Err("shutting down".into())
        } else {
            Ok(())
        }
    }

    /// The stream keys.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The routes media servers call (public listener). The router must be served with
    /// `into_make_service_with_connect_info::<SocketAddr>()` for the caller's address to be known.
    pub fn public_router(&self) -> Router {
        Router::new()
            .route("/hooks/srs", post(srs))
            .route("/hooks/nginx-rtmp/{call}", post(nginx_rtmp).get(nginx_rtmp))
            .route("/hooks/mediamtx", post(mediamtx))
            .with_state(self.clone())
    }

    /// The registry and keys API (admin listener).
    pub fn admin_router(&self) -> Router {
        Router::new()
            .route("/api/v1/streams", get(list_streams))
            .route("/api/v1/streams/{id}", get(show_stream))
            .route("/api/v1/streams/{id}/kick", post(kick))
            .route("/api/v1/hooks/keys", get(list_keys))
            .with_state(self.clone())
    }

    /// Decides one request and updates the registry; also the entry point of benchmarks and tests.
    pub async fn handle(&self, req: &HookRequest, raw: Raw<'_>) -> Decision {
        let start = tokio::time::Instant::now();
        let decided = if req.action == Action::Update && self.inner.registry.is_kicked(req) {
            policy::Decided {
                decision: Decision::Deny("kicked by an operator".into()),
                rule: "kick".to_owned(),
                public_stream: None,
            }
        } else {
            self.inner.policy.decide(req, raw, &self.inner.keys).await
        };
        let policy::Decided {
            decision,
            rule,
            public_stream,
        } = decided;
        if let Decision::Deny(reason) = &decision {
            tracing::info!(server = req.server.as_str(), action = req.action.as_str(), app = %req.app, stream = %req.stream,
                ip = ?req.ip, rule = %rule, reason = %reason, "hook denied");
        }
        self.inner
            .registry
            .apply(req, &decision, public_stream.as_ref());
        ::metrics::counter!(metrics::DECISIONS, "server" => req.server.as_str(), "action" => req.action.as_str(), "result" => decision.as_str())
            .increment(1);
        ::metrics::histogram!(metrics::DECISION_SECONDS, "server" => req.server.as_str())
            .record(start.elapsed().as_secs_f64());
        decision
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn bad_request(server: ServerKind, e: &BadRequest) -> Response {
    ::metrics::counter!(metrics::MALFORMED, "server" => server.as_str()).increment(1);
    error(StatusCode::BAD_REQUEST, "bad_request", e.0.clone())
}

/// A hook request as received: who called, with what body.
struct Call {
    /// The caller's address (the media server's identity when it sends none).
    peer: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Call {
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
    }
}

/// Reads a hook request: 403 unless the caller is in `hooks.allowed_sources` (when set), 413 for a body over
/// `MAX_BODY`.
async fn receive(g: &Gateway, req: Request) -> Result<Call, Response> {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if !g.inner.allowed_sources.is_empty()
        && !ip.is_some_and(|ip| policy::contains(&g.inner.allowed_sources, ip))
    {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this address may not call the hook routes (hooks.allowed_sources)",
        ));
    }
    let peer = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => Ok(Call {
            peer,
            headers: parts.headers,
            body,
        }),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("hook bodies are at most {MAX_BODY} bytes"),
        )),
    }
}

/// `POST /hooks/srs`: answers 200 with `0` (allow) or a non-zero integer (deny); 400 for a malformed body.
/// SRS heartbeats (`heartbeat { url …/hooks/srs; }`) may be sent here too: they keep that SRS's registry
/// entries alive.
async fn srs(State(g): State<Gateway>, req: Request) -> Response {
    let call = match receive(&g, req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(server_id) = adapters::srs::parse_heartbeat(&call.body, &call.peer) {
        g.inner.registry.touch_server(ServerKind::Srs, &server_id);
        return (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "0").into_response();
    }
    let hook = match adapters::srs::parse(&call.body, &call.peer) {
        Ok(h) => h,
        Err(e) => return bad_request(ServerKind::Srs, &e),
    };
    let decision = g
        .handle(
            &hook,
            Raw {
                body: &call.body,
                content_type: call.content_type(),
            },
        )
        .await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        adapters::srs::answer(&decision),
    )
        .into_response()
}

/// `POST|GET /hooks/nginx-rtmp/{call}`: 200 allows, 302 + Location renames or relays, 403 denies.
async fn nginx_rtmp(
    State(g): State<Gateway>,
    Path(hook_name): Path<String>,
    req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or_default().to_owned();
    let is_get = req.method() == Method::GET;
    let call = match receive(&g, req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    // `notify_method get` puts the form in the query.
    let (form, content_type): (&[u8], &str) = if is_get {
        (query.as_bytes(), "application/x-www-form-urlencoded")
    } else {
        (&call.body, call.content_type())
    };
    let hook = match adapters::nginx_rtmp::parse(form, &hook_name, &call.peer) {
        Ok(h) => h,
        Err(e) => return bad_request(ServerKind::NginxRtmp, &e),
    };
    let decision = g
        .handle(
            &hook,
            Raw {
                body: form,
                content_type,
            },
        )
        .await;
    let (status, location) = adapters::nginx_rtmp::answer(&decision);
    let mut resp = StatusCode::from_u16(status)
        .unwrap_or(StatusCode::FORBIDDEN)
        .into_response();
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    resp
}

/// `POST /hooks/mediamtx`: 200 allows, 401 denies.
async fn mediamtx(State(g): State<Gateway>, req: Request) -> Response {
    let call = match receive(&g, req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let hook = match adapters::mediamtx::parse(&call.body, &call.peer) {
        Ok(h) => h,
        Err(e) => return bad_request(ServerKind::Mediamtx, &e),
    };
    let decision = g
        .handle(
            &hook,
            Raw {
                body: &call.body,
                content_type: call.content_type(),
            },
        )
        .await;
    StatusCode::from_u16(adapters::mediamtx::answer(&decision))
        .unwrap_or(StatusCode::UNAUTHORIZED)
        .into_response()
}

/// The live streams.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StreamList {
    streams: Vec<registry::StreamView>,
}

/// Streams publishing or playing now, as the media servers reported them to this node.
#[utoipa::path(get, path = "/api/v1/streams", tag = "hooks", responses((status = 200, body = StreamList)))]
pub async fn list_streams(State(g): State<Gateway>) -> axum::Json<StreamList> {
    axum::Json(StreamList {
        streams: g.inner.registry.streams(),
    })
}

/// One stream.
#[utoipa::path(get, path = "/api/v1/streams/{id}", tag = "hooks", params(("id" = String, Path)),
    responses((status = 200, body = registry::StreamView), (status = 404)))]
pub async fn show_stream(State(g): State<Gateway>, Path(id): Path<String>) -> Response {
    match g.inner.registry.streams().into_iter().find(|s| s.id == id) {
        Some(s) => axum::Json(s).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stream {id:?}"),
        ),
    }
}

/// Drops the publisher of a stream: nginx-rtmp at its next `on_update` (403), SRS through its HTTP API
/// (`hooks.srs_api_url`); MediaMTX cannot be told from its auth hook (409).
#[utoipa::path(post, path = "/api/v1/streams/{id}/kick", tag = "hooks", params(("id" = String, Path)),
    responses((status = 202, description = "kick under way"), (status = 404), (status = 409, description = "this media server cannot be told"),
              (status = 502, description = "the SRS API refused")))]
pub async fn kick(State(g): State<Gateway>, Path(id): Path<String>) -> Response {
    match g.inner.registry.plan_kick(&id, &g.inner.config.srs_api_url) {
        Err(e) if e == "not_found" => error(StatusCode::NOT_FOUND, "not_found", format!("no stream {id:?}")),
        Err(e) => error(StatusCode::CONFLICT, "unsupported", e),
        Ok(KickPlan::NextUpdate) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"method": "next_update", "message": "nginx-rtmp drops the publisher when its next on_update is answered 403 (notify_update_timeout)"})),
        )
            .into_response(),
        Ok(KickPlan::SrsApi(url)) => match g
            .inner
            .policy
            .client()
            .delete(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => (
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({"method": "srs_api", "url": url})),
            )
                .into_response(),
            Ok(r) => error(StatusCode::BAD_GATEWAY, "upstream", format!("SRS API answered {}", r.status())),
            Err(e) => error(StatusCode::BAD_GATEWAY, "upstream", format!("SRS API unreachable: {e}")),
        },
    }
}

/// The stream keys.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct KeyList {
    keys: Vec<StreamKey>,
}

/// Stream keys (fingerprints, never the keys), managed with `rtcplane hooks key add|del|list`.
#[utoipa::path(get, path = "/api/v1/hooks/keys", tag = "hooks", responses((status = 200, body = KeyList)))]
pub async fn list_keys(State(g): State<Gateway>) -> Response {
    match g.inner.keys.list().await {
        Ok(keys) => axum::Json(KeyList { keys }).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "listing stream keys");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log",
            )
        }
    }
}
