//! The relay's HTTP surface: `GET /api/v1/turn/credentials` (public, API key) answering the TURN REST API
//! JSON `{username, password, ttl, uris}` that WebRTC backends hand to browsers, and the admin
//! `/api/v1/turn/allocations` (list, filter by user, show, delete = end it now) and `/api/v1/turn/users` (the
//! database users of `rtcplane turn user`: list, add or change, remove, and their limit overrides). Every
//! handler is described for the OpenAPI document (tag `turn`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::Config;
use crate::server::Server;

/// What the credentials endpoint needs.
#[derive(Debug)]
pub(crate) struct Rest {
    api_keys: Vec<String>,
    secret: Option<String>,
    ttl: u64,
    max_ttl: u64,
    uris: Vec<String>,
}

impl Rest {
    pub(crate) fn new(
        config: &Config,
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
        tls: &[SocketAddr],
    ) -> Self {
        let uris = if config.rest_uris.is_empty() {
            derive_uris(config, udp, tcp, tls)
        } else {
            config.rest_uris.clone()
        };
        Self {
            api_keys: config.rest_api_keys.clone(),
            secret: config.static_auth_secrets.first().cloned(),
            ttl: config.rest_ttl.as_secs(),
            max_ttl: config.rest_max_ttl.as_secs(),
            uris,
        }
    }
}

impl Rest {
    /// Username, password and URIs for `user` (may be empty), valid `ttl` seconds; None without a secret.
    pub(crate) fn mint(&self, user: &str, ttl: u64) -> Option<(String, String, Vec<String>)> {
        let secret = self.secret.as_ref()?;
        let expiry = chrono::Utc::now()
            .timestamp()
            .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        let username = if user.is_empty() {
            expiry.to_string()
        } else {
            format!("{expiry}:{user}")
        };
        let password = crate::auth::rest_password(secret, &username);
        Some((username, password, self.uris.clone()))
    }
}

/// `turn:<host>:<port>?transport=udp|tcp` and `turns:…` from the announced host and the listeners.
fn derive_uris(
    config: &Config,
    udp: &[SocketAddr],
    tcp: &[SocketAddr],
    tls: &[SocketAddr],
) -> Vec<String> {
    let host = [&config.external_ip, &config.relay_ip]
        .into_iter()
        .find(|h| !h.is_empty())
        .cloned()
        .or_else(|| {
            udp.iter()
                .chain(tcp)
                .map(SocketAddr::ip)
                .find(|ip| !ip.is_unspecified())
                .map(|ip| ip.to_string())
        });
    let Some(host) = host else {
        return Vec::new();
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let mut uris = Vec::new();
    let mut push = |u: String| {
        if !uris.contains(&u) {
            uris.push(u);
        }
    };
    for a in udp {
        push(format!("turn:{host}:{}?transport=udp", a.port()));
    }
    for a in tcp {
        push(format!("turn:{host}:{}?transport=tcp", a.port()));
    }
    for a in tls {
        push(format!("turns:{host}:{}?transport=tcp", a.port()));
    }
    uris
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// The query of the credentials endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialsQuery {
    /// The application's user id (no `:`).
    username: Option<String>,
    /// Seconds of validity (default `turn.rest_ttl`, at most `turn.rest_max_ttl`).
    ttl: Option<u64>,
    /// Some clients send `service=turn` (the original draft); accepted and ignored.
    #[allow(dead_code)]
    service: Option<String>,
    /// `key=` as in the draft, for clients that cannot send headers.
    key: Option<String>,
}

/// TURN REST API credentials.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Credentials {
    /// `<expiry>:<user>`.
    username: String,
    /// base64(HMAC-SHA1(secret, username)).
    password: String,
    /// Seconds of validity.
    ttl: u64,
    /// `turn:`/`turns:` URIs of this relay.
    uris: Vec<String>,
}

fn presented_key<'a>(headers: &'a HeaderMap, query_key: Option<&'a str>) -> Option<&'a str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k);
    }
    if let Some(k) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(k);
    }
    query_key
}

/// Constant-time equality of two byte strings (length leaks, content does not).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// TURN REST API credentials (public listener; API key in `X-API-Key` or `Authorization: Bearer`).
#[utoipa::path(get, path = "/api/v1/turn/credentials", tag = "turn", params(CredentialsQuery),
    responses((status = 200, body = Credentials), (status = 400), (status = 401), (status = 404, description = "turn.rest_api_keys is empty")))]
async fn credentials(
    State(rest): State<Arc<Rest>>,
    headers: HeaderMap,
    query: Result<Query<CredentialsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if rest.api_keys.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "disabled",
            "TURN REST credentials are off (turn.rest_api_keys is empty)",
        );
    }
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let Some(key) = presented_key(&headers, q.key.as_deref()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the API key in X-API-Key (or Authorization: Bearer)",
        );
    };
    if !rest
        .api_keys
        .iter()
        .any(|k| same(k.as_bytes(), key.as_bytes()))
    {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key");
    }
    let user = q.username.unwrap_or_default();
    if user.len() > 256 || user.contains(':') || user.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "username must be at most 256 characters, without `:` or control characters",
        );
    }
    let ttl = q.ttl.unwrap_or(rest.ttl);
    if ttl == 0 || ttl > rest.max_ttl {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "ttl must be 1 to {} seconds (turn.rest_max_ttl)",
                rest.max_ttl
            ),
        );
    }
    let Some((username, password, uris)) = rest.mint(&user, ttl) else {
        return error(
            StatusCode::NOT_FOUND,
            "disabled",
            "no turn.static_auth_secrets",
        );
    };
    let mut resp = Json(Credentials {
        username,
        password,
        ttl,
        uris,
    })
    .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// The public routes.
pub(crate) fn public_router(rest: Arc<Rest>) -> Router {
    Router::new()
        .route("/api/v1/turn/credentials", get(credentials))
        .with_state(rest)
}

/// One allocation, as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AllocationView {
    /// Its id (as in `turn.allocation.*` events).
    pub id: String,
    /// The authenticated user.
    pub user: String,
    /// The realm.
    pub realm: String,
    /// Client address as the server sees it.
    pub client: String,
    /// The listener it came in on.
    pub server: String,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// Relayed addresses announced to the client.
    pub relayed: Vec<String>,
    /// Seconds since it was created.
    pub age_secs: u64,
    /// Seconds until it expires unless refreshed.
    pub expires_in_secs: u64,
    /// Packets and bytes both ways, coturn's client-side counts, bandwidth drops.
    #[schema(value_type = Object)]
    pub counters: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    user: Option<String>,
}

/// Live allocations of this node, oldest first.
#[utoipa::path(get, path = "/api/v1/turn/allocations", tag = "turn", params(("user" = Option<String>, Query, description = "only this user")),
    responses((status = 200, description = "{allocations: [AllocationView]}"), (status = 400)))]
async fn list(
    State(server): State<Arc<Server>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let allocations = server.views(q.user.as_deref());
    Json(serde_json::json!({ "allocations": allocations })).into_response()
}

/// One allocation.
#[utoipa::path(get, path = "/api/v1/turn/allocations/{id}", tag = "turn", params(("id" = String, Path)),
    responses((status = 200, body = AllocationView), (status = 404)))]
async fn show(State(server): State<Arc<Server>>, Path(id): Path<String>) -> Response {
    match server.views(None).into_iter().find(|a| a.id == id) {
        Some(a) => Json(a).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no allocation {id:?}"),
        ),
    }
}

/// Ends an allocation now (its relaying stops, `turn.allocation.deleted` with reason `admin`).
#[utoipa::path(delete, path = "/api/v1/turn/allocations/{id}", tag = "turn", params(("id" = String, Path)),
    responses((status = 204), (status = 404)))]
async fn kill(State(server): State<Arc<Server>>, Path(id): Path<String>) -> Response {
    let Ok(n) = id.parse::<u64>() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no allocation {id:?}"),
        );
    };
    if server.kill(n) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no allocation {id:?}"),
        )
    }
}

/// What the users API needs.
#[derive(Clone, Debug)]
pub(crate) struct UsersState {
    pub(crate) storage: rtcplane_storage::Storage,
    pub(crate) realm: String,
    /// Woken when overrides change, so the relay reloads them at once.
    pub(crate) limits_changed: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RealmQuery {
    realm: Option<String>,
}

/// A user to add, or whose password changes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    name: String,
    password: String,
    /// Default: turn.realm.
    #[serde(default)]
    realm: Option<String>,
}

fn users_error(e: &crate::users::UserError) -> Response {
    match e {
        crate::users::UserError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid", m.clone()),
        crate::users::UserError::Query { .. } => {
            tracing::error!(error = %e, "turn users");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log",
            )
        }
    }
}

/// Database users (keys are never shown).
#[utoipa::path(get, path = "/api/v1/turn/users", tag = "turn", params(("realm" = Option<String>, Query)),
    responses((status = 200, description = "{users: [{realm, name, created_at}]}"), (status = 400)))]
async fn list_users(
    State(s): State<UsersState>,
    query: Result<Query<RealmQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    match crate::users::list(&s.storage, q.realm.as_deref()).await {
        Ok(users) => Json(serde_json::json!({ "users": users })).into_response(),
        Err(e) => users_error(&e),
    }
}

/// Adds a database user or changes its password.
#[utoipa::path(post, path = "/api/v1/turn/users", tag = "turn", request_body = NewUser,
    responses((status = 201), (status = 400)))]
async fn add_user(
    State(s): State<UsersState>,
    body: Result<Json<NewUser>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(u) = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), "bad_request", e.body_text()),
    };
    let realm = u.realm.unwrap_or_else(|| s.realm.clone());
    match crate::users::add(&s.storage, &realm, &u.name, &u.password).await {
        Ok(()) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"realm": realm, "name": u.name})),
        )
            .into_response(),
        Err(e) => users_error(&e),
    }
}

/// Removes a database user.
#[utoipa::path(delete, path = "/api/v1/turn/users/{name}", tag = "turn", params(("name" = String, Path), ("realm" = Option<String>, Query)),
    responses((status = 204), (status = 404)))]
async fn delete_user(
    State(s): State<UsersState>,
    Path(name): Path<String>,
    query: Result<Query<RealmQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let realm = q.realm.unwrap_or_else(|| s.realm.clone());
    match crate::users::delete(&s.storage, &realm, &name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no user {name:?} in realm {realm:?}"),
        ),
        Err(e) => users_error(&e),
    }
}

fn limits_realm(
    s: &UsersState,
    query: Result<Query<RealmQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<String, String> {
    match query {
        Ok(Query(q)) => Ok(q.realm.unwrap_or_else(|| s.realm.clone())),
        Err(e) => Err(e.body_text()),
    }
}

/// A user's limit overrides.
#[utoipa::path(get, path = "/api/v1/turn/users/{name}/limits", tag = "turn", params(("name" = String, Path), ("realm" = Option<String>, Query)),
    responses((status = 200, body = crate::users::StoredLimits), (status = 404)))]
async fn get_limits(
    State(s): State<UsersState>,
    Path(name): Path<String>,
    query: Result<Query<RealmQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let realm = match limits_realm(&s, query) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_request", m),
    };
    match crate::users::get_limits(&s.storage, &realm, &name).await {
        Ok(Some(l)) => Json(l).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no limits for {name:?} in realm {realm:?}"),
        ),
        Err(e) => users_error(&e),
    }
}

/// Sets a user's limit overrides (quota, max_bps, user_max_bps; absent or null: the configured value, 0:
/// unlimited). New allocations of the user get them; the relay reloads at once.
#[utoipa::path(put, path = "/api/v1/turn/users/{name}/limits", tag = "turn", params(("name" = String, Path), ("realm" = Option<String>, Query)),
    request_body = crate::users::UserLimits,
    responses((status = 200, body = crate::users::StoredLimits), (status = 400)))]
async fn put_limits(
    State(s): State<UsersState>,
    Path(name): Path<String>,
    query: Result<Query<RealmQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<crate::users::UserLimits>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let realm = match limits_realm(&s, query) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_request", m),
    };
    let Json(limits) = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), "bad_request", e.body_text()),
    };
    if let Err(e) = crate::users::set_limits(&s.storage, &realm, &name, &limits).await {
        return users_error(&e);
    }
    s.limits_changed.notify_one();
    match crate::users::get_limits(&s.storage, &realm, &name).await {
        Ok(Some(l)) => Json(l).into_response(),
        Ok(None) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the limits were set but cannot be read back",
        ),
        Err(e) => users_error(&e),
    }
}

/// Removes a user's limit overrides.
#[utoipa::path(delete, path = "/api/v1/turn/users/{name}/limits", tag = "turn", params(("name" = String, Path), ("realm" = Option<String>, Query)),
    responses((status = 204), (status = 404)))]
async fn delete_limits(
    State(s): State<UsersState>,
    Path(name): Path<String>,
    query: Result<Query<RealmQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let realm = match limits_realm(&s, query) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_request", m),
    };
    match crate::users::delete_limits(&s.storage, &realm, &name).await {
        Ok(true) => {
            s.limits_changed.notify_one();
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no limits for {name:?} in realm {realm:?}"),
        ),
        Err(e) => users_error(&e),
    }
}

/// Every limit override (of one realm with `?realm=`).
#[utoipa::path(get, path = "/api/v1/turn/limits", tag = "turn", params(("realm" = Option<String>, Query)),
    responses((status = 200, description = "{limits: [StoredLimits]}"), (status = 400)))]
async fn list_limits(
    State(s): State<UsersState>,
    query: Result<Query<RealmQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    match crate::users::list_limits(&s.storage, q.realm.as_deref()).await {
        Ok(limits) => Json(serde_json::json!({ "limits": limits })).into_response(),
        Err(e) => users_error(&e),
    }
}

/// The OpenAPI description of every TURN route (public and admin), merged by the binary into its document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(credentials, list, show, kill, list_users, add_user, delete_user, get_limits, put_limits, delete_limits, list_limits),
    components(schemas(Credentials, AllocationView, NewUser, crate::users::UserLimits, crate::users::StoredLimits)),
    tags((name = "turn", description = "TURN relay: REST credentials, allocations, users and their limits"))
)]
pub(crate) struct TurnApi;

/// The admin routes.
pub(crate) fn admin_router(server: Arc<Server>, users: UsersState) -> Router {
    Router::new()
        .route("/api/v1/turn/allocations", get(list))
        .route("/api/v1/turn/allocations/{id}", get(show).delete(kill))
        .with_state(server)
        .merge(
            Router::new()
                .route("/api/v1/turn/users", get(list_users).post(add_user))
                .route(
                    "/api/v1/turn/users/{name}",
                    axum::routing::delete(delete_user),
                )
                .route(
                    "/api/v1/turn/users/{name}/limits",
                    get(get_limits).put(put_limits).delete(delete_limits),
                )
                .route("/api/v1/turn/limits", get(list_limits))
                .with_state(users),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_from_the_announced_address_and_listeners() {
        let config = Config {
            external_ip: "203.0.113.10".into(),
            ..Config::default()
        };
        let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            derive_uris(
                &config,
                &[a("0.0.0.0:3478")],
                &[a("0.0.0.0:3478")],
                &[a("0.0.0.0:5349")]
            ),
            vec![
                "turn:203.0.113.10:3478?transport=udp",
                "turn:203.0.113.10:3478?transport=tcp",
                "turns:203.0.113.10:5349?transport=tcp"
            ]
        );
        let v6 = Config {
            relay_ip: "2001:db8::1".into(),
            ..Config::default()
        };
        assert_eq!(
            derive_uris(&v6, &[a("[::]:3478")], &[], &[]),
            vec!["turn:[2001:db8::1]:3478?transport=udp"]
        );
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
