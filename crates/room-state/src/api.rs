//! The Loop routes, in loop-server's order of checks (body → room token → auth → parameters → ownership),
//! with its statuses, errno values and messages (`loop/routes/{rooms,registration,session,validators}.js`).
//! Every answer goes through [`finish`]: `Timestamp` on 200 and 401, `Server-Authorization` for Hawk
//! callers, CORS for the link-clicker web app.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, post};
use serde_json::{Map, Value, json};

use crate::auth::{Identity, RequestParts};
use crate::reply::{Reply, Result, errno};
use crate::store::{Kind, Participant, Room, Status};
use crate::values::{derived_state, js_len, parse_int, text};
use crate::{Rooms, metrics, ms, now_ms};

/// The routes, at `/` and under `/v0`.
pub(crate) fn router(rooms: Rooms) -> Router {
    let mut r = Router::new();
    for prefix in ["", "/v0"] {
        r = r
            .route(
                &format!("{prefix}/registration"),
                post(registration).delete(unregister).options(preflight),
            )
            .route(
                &format!("{prefix}/session"),
                delete(delete_session).options(preflight),
            )
            .route(
                &format!("{prefix}/rooms"),
                post(create_room)
                    .get(list_rooms)
                    .patch(delete_rooms)
                    .options(preflight),
            )
            .route(
                &format!("{prefix}/rooms/{{token}}"),
                post(room_action)
                    .get(get_room)
                    .patch(update_room)
                    .delete(delete_room)
                    .options(preflight),
            )
            .route(
                &format!("{prefix}/rooms/{{token}}/participants/{{id}}"),
                delete(remove_participant).options(preflight),
            );
    }
    r.route("/v0/{*rest}", any(not_found)).with_state(rooms)
}

/// A request as the handlers see it.
struct Call {
    method: Method,
    resource: String,
    headers: HeaderMap,
    body: Vec<u8>,
    start: tokio::time::Instant,
}

impl Call {
    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: self.method.as_str(),
            resource: &self.resource,
            headers: &self.headers,
            body: &self.body,
        }
    }

    /// The body as loop-server's body parsers leave it: JSON or a form, `{}` when empty; 400 errno 106
    /// for unreadable JSON.
    fn json(&self) -> Result<Map<String, Value>> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if ct.starts_with("application/x-www-form-urlencoded") {
            return Ok(form_urlencoded::parse(&self.body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect());
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Reply::error(
                StatusCode::BAD_REQUEST,
                errno::BADJSON,
                "Request body should be a JSON object.",
            )),
            Err(_) => Err(Reply::error(
                StatusCode::BAD_REQUEST,
                errno::BADJSON,
                "Invalid JSON.",
            )),
        }
    }

    /// `req.accepts("json")`: 406 errno 106 when `Accept` rules JSON out.
    fn accepts_json(&self) -> Result<()> {
        let Some(accept) = self
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(());
        };
        let ok = accept.split(',').any(|t| {
            let t = t.split(';').next().unwrap_or_default().trim();
            t.is_empty() || t == "*/*" || t == "application/*" || t.ends_with("json")
        });
        if ok {
            Ok(())
        } else {
            Err(Reply::error(
                StatusCode::NOT_ACCEPTABLE,
                errno::BADJSON,
                "Request body should be defined as application/json",
            ))
        }
    }
}

/// Reads the request: 413 errno 113 over `rooms.max_body_bytes`.
async fn read(rooms: &Rooms, req: Request) -> std::result::Result<Call, Response> {
    let start = tokio::time::Instant::now();
    let (parts, body) = req.into_parts();
    let resource = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    match axum::body::to_bytes(body, rooms.cfg().max_body_bytes).await {
        Ok(b) => Ok(Call {
            method: parts.method,
            resource,
            headers: parts.headers,
            body: b.to_vec(),
            start,
        }),
        Err(_) => {
            let headers = parts.headers;
            Err(finish(
                rooms,
                &headers,
                "too_large",
                start,
                Reply::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    errno::REQUEST_TOO_LARGE,
                    "Request too large.",
                ),
                None,
            ))
        }
    }
}

/// Turns a reply into the response: JSON body, `Timestamp`, `Server-Authorization`, CORS, metrics.
fn finish(
    rooms: &Rooms,
    req_headers: &HeaderMap,
    action: &'static str,
    start: tokio::time::Instant,
    reply: Reply,
    identity: Option<&Identity>,
) -> Response {
    let body = reply.body.as_ref().map(|v| v.to_string().into_bytes());
    let mut resp = Response::new(Body::from(body.clone().unwrap_or_default()));
    *resp.status_mut() = reply.status;
    let h = resp.headers_mut();
    if body.is_some() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    for (k, v) in reply.headers {
        h.insert(k, v);
    }
    if matches!(reply.status, StatusCode::OK | StatusCode::UNAUTHORIZED)
        && let Ok(v) = HeaderValue::from_str(&(now_ms().div_euclid(1000)).to_string())
    {
        h.insert("timestamp", v);
    }
    if let Some(hawk) = identity.and_then(Identity::hawk)
        && !hawk.method.is_empty()
        && let Ok(v) = HeaderValue::from_str(&hawk.sign(body.as_deref()))
    {
        h.insert("server-authorization", v);
    }
    cors(rooms, req_headers, h);
    ::metrics::counter!(metrics::REQUESTS, "action" => action, "status" => reply.status.as_str().to_owned())
        .increment(1);
    ::metrics::histogram!(metrics::ACTION_SECONDS, "action" => action)
        .record(start.elapsed().as_secs_f64());
    resp
}

const EXPOSED: &str =
    "Hawk-Session-Token, Timestamp, Server-Authorization, WWW-Authenticate, Alert, Retry-After";

/// CORS for the link-clicker web app: any origin (Loop's credentials travel in headers, never cookies).
fn cors(_rooms: &Rooms, req: &HeaderMap, h: &mut HeaderMap) {
    if let Some(origin) = req.get(header::ORIGIN) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
    }
}

async fn preflight(State(rooms): State<Rooms>, headers: HeaderMap) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    cors(&rooms, &headers, resp.headers_mut());
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("Authorization, Content-Type, Accept")),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}

async fn not_found(State(rooms): State<Rooms>, req: Request) -> Response {
    let headers = req.headers().clone();
    finish(
        &rooms,
        &headers,
        "unknown",
        tokio::time::Instant::now(),
        Reply::error(
            StatusCode::NOT_FOUND,
            errno::UNDEFINED,
            "Resource not found.",
        ),
        None,
    )
}

/// Runs a handler body and finishes its reply. The body returns the identity it established (for the
/// signature) and the reply; an early `Err(reply)` is answered as is, signed if Hawk was verified.
macro_rules! handle {
    ($rooms:expr, $req:expr, $action:expr, |$call:ident, $ident:ident| $body:block) => {{
        let rooms: Rooms = $rooms;
        let $call = match read(&rooms, $req).await {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        let mut $ident: Option<Identity> = None;
        let reply: Reply = async { $body }.await.unwrap_or_else(|e: Reply| e);
        finish(
            &rooms,
            &$call.headers,
            $action,
            $call.start,
            reply,
            $ident.as_ref(),
        )
    }};
}

// ---------- registration and session ----------

async fn registration(State(rooms): State<Rooms>, req: Request) -> Response {
    handle!(rooms.clone(), req, "register", |call, ident| {
        let now = now_ms();
        let (who, new_token) = rooms.inner.auth.hawk_or_create(&call.parts(), now).await?;
        ident = Some(who);
        let mut reply = register_urls(&rooms, &call, ident.as_ref()).await?;
        if let Some(token) = new_token {
            reply = reply.with_header("hawk-session-token", &token);
        }
        Ok::<Reply, Reply>(reply)
    })
}

async fn register_urls(rooms: &Rooms, call: &Call, who: Option<&Identity>) -> Result<Reply> {
    let Some(hawk) = who.and_then(Identity::hawk) else {
        return Err(Reply::unauthorized("Hawk", None));
    };
    if !call.body.is_empty() {
        call.accepts_json()?;
    }
    let body = call.json()?;
    let mut urls: Map<String, Value> = match body.get("simplePushURLs") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let legacy = body
        .get("simplePushURL")
        .cloned()
        .or_else(|| query_param(&call.resource, "simplePushURL").map(Value::String))
        .or_else(|| body.get("simple_push_url").cloned());
    if let Some(u) = legacy {
        urls.insert("calls".into(), u);
    }
    let mut valid = Vec::new();
    for (topic, url) in &urls {
        match url {
            Value::String(u) if u.starts_with("http") && u.len() <= 2048 => {
                if topic.len() <= 16 {
                    valid.push((topic.clone(), u.clone()));
                }
            }
            _ => {
                return Err(Reply::invalid(format!(
                    "simplePushURLs.{topic} should be a valid url"
                )));
            }
        }
    }
    if !valid.is_empty() {
        rooms
            .inner
            .store
            .push_set(&hawk.session.id_hash, &hawk.session.user_hash, &valid)
            .await
            .map_err(|e| Reply::backend("storing SimplePush URLs", &e))?;
    }
    Ok(Reply::empty(StatusCode::OK).with_header("access-control-expose-headers", EXPOSED))
}

fn query_param(resource: &str, name: &str) -> Option<String> {
    let q = resource.split_once('?')?.1;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn unregister(State(rooms): State<Rooms>, req: Request) -> Response {
    handle!(rooms.clone(), req, "unregister", |call, ident| {
        let hawk = rooms
            .inner
            .auth
            .require_hawk(&call.parts(), now_ms())
            .await?;
        let id_hash = hawk.session.id_hash.clone();
        ident = Some(Identity::Hawk(Box::new(hawk)));
        rooms
            .inner
            .store
            .push_delete(&id_hash)
            .await
            .map_err(|e| Reply::backend("deleting SimplePush URLs", &e))?;
        Ok::<Reply, Reply>(Reply::empty(StatusCode::NO_CONTENT))
    })
}

async fn delete_session(State(rooms): State<Rooms>, req: Request) -> Response {
    handle!(rooms.clone(), req, "delete_session", |call, ident| {
        let hawk = rooms
            .inner
            .auth
            .require_hawk(&call.parts(), now_ms())
            .await?;
        let id_hash = hawk.session.id_hash.clone();
        ident = Some(Identity::Hawk(Box::new(hawk)));
        rooms
            .inner
            .store
            .session_delete(&id_hash)
            .await
            .map_err(|e| Reply::backend("deleting a Hawk session", &e))?;
        Ok::<Reply, Reply>(Reply::empty(StatusCode::NO_CONTENT))
    })
}

// ---------- room parameters ----------

/// `requireParams`: the missing ones, an either-or pair printed as `a,b`.
fn require(body: &Map<String, Value>, params: &[&[&str]]) -> Result<()> {
    let missing: Vec<String> = params
        .iter()
        .filter(|alts| !alts.iter().any(|p| body.contains_key(*p)))
        .map(|alts| alts.join(","))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        let refs: Vec<&str> = missing.iter().map(String::as_str).collect();
        Err(Reply::missing(&refs))
    }
}

/// The room fields of a create or update request, validated (`validateRoomParams`).
#[derive(Debug, Default)]
struct RoomParams {
    room_name: Option<String>,
    room_owner: Option<String>,
    context: Option<String>,
    expires_in: Option<i64>,
    max_size: Option<i64>,
    deprecated_name: bool,
}

fn room_params(rooms: &Rooms, body: &Map<String, Value>) -> Result<RoomParams> {
    let cfg = rooms.cfg();
    let mut p = RoomParams::default();
    if let Some(v) = body.get("roomName") {
        p.deprecated_name = true;
        let Value::String(name) = v else {
            return Err(Reply::invalid("roomName should be a string"));
        };
        if js_len(name) > cfg.max_room_name_size {
            return Err(Reply::invalid(format!(
                "roomName should be shorter than {} characters",
                cfg.max_room_name_size
            )));
        }
        p.room_name = Some(name.clone());
    }
    if let Some(ctx) = body.get("context") {
        if p.deprecated_name {
            return Err(Reply::invalid(
                "roomName has been deprecated, please store it encrypted inside the context.",
            ));
        }
        match ctx {
            Value::Object(m)
                if m.contains_key("value")
                    && m.contains_key("alg")
                    && m.contains_key("wrappedKey") =>
            {
                p.context = Some(ctx.to_string());
            }
            _ => {
                return Err(Reply::invalid(
                    "context should be an object containing `value`, `alg` and `wrappedKey` properties.",
                ));
            }
        }
    }
    if let Some(v) = body.get("roomOwner") {
        let Value::String(owner) = v else {
            return Err(Reply::invalid("roomOwner should be a string"));
        };
        if js_len(owner) > cfg.max_room_owner_size {
            return Err(Reply::invalid(format!(
                "roomOwner should be shorter than {} characters",
                cfg.max_room_owner_size
            )));
        }
        p.room_owner = Some(owner.clone());
    }
    if let Some(v) = body.get("expiresIn") {
        let max = cfg.max_ttl_hours();
        match parse_int(v) {
            None => return Err(Reply::invalid("expiresIn should be a valid number")),
            Some(n) if n > max => {
                return Err(Reply::invalid(format!(
                    "expiresIn cannot be greater than {max}"
                )));
            }
            Some(n) if n < 1 => return Err(Reply::invalid("expiresIn should be at least 1")),
            Some(n) => p.expires_in = Some(n),
        }
    }
    if let Some(v) = body.get("maxSize") {
        let max = i64::from(cfg.max_size);
        match parse_int(v) {
            None => return Err(Reply::invalid("maxSize should be a valid number")),
            Some(n) if n > max => {
                return Err(Reply::invalid(format!(
                    "maxSize cannot be greater than {max}"
                )));
            }
            Some(n) if n < 1 => return Err(Reply::invalid("maxSize should be at least 1")),
            Some(n) => p.max_size = Some(n),
        }
    }
    Ok(p)
}

const DEPRECATED: &str = "The roomName parameter has been deprecated, you should use context.";

fn hours_ms(h: i64) -> i64 {
    h.saturating_mul(3_600_000)
}

fn default_hours(rooms: &Rooms) -> i64 {
    i64::try_from(rooms.cfg().default_ttl.as_secs() / 3600)
        .unwrap_or(i64::MAX)
        .max(1)
}

/// A room's expiry for `hours` from `now_s` (seconds), in ms; a sub-hour `default_ttl` (tests) is taken as is.
fn expiry(rooms: &Rooms, now: i64, hours: Option<i64>) -> (i64, i64) {
    let now_s = now.div_euclid(1000);
    match hours {
        Some(h) => (h, (now_s.saturating_add(h.saturating_mul(3600))) * 1000),
        None if rooms.cfg().default_ttl < Duration::from_secs(3600) => {
            (1, now_s * 1000 + ms(rooms.cfg().default_ttl))
        }
        None => {
            let h = default_hours(rooms);
            (h, now_s * 1000 + hours_ms(h))
        }
    }
}

// ---------- rooms ----------

async fn create_room(State(rooms): State<Rooms>, req: Request) -> Response {
    handle!(rooms.clone(), req, "create", |call, ident| {
        let now = now_ms();
        let hawk = rooms.inner.auth.require_hawk(&call.parts(), now).await?;
        ident = Some(Identity::Hawk(Box::new(hawk.clone())));
        let body = call.json()?;
        call.accepts_json()?;
        require(
            &body,
            &[&["context", "roomName"], &["roomOwner"], &["maxSize"]],
        )?;
        let p = room_params(&rooms, &body)?;
        let token = new_token(rooms.cfg().token_size);
        let (expires_in, expires_at) = expiry(&rooms, now, p.expires_in);
        let channel = match body.get("channel") {
            Some(Value::String(c)) if !c.is_empty() && c.len() <= 255 => c.clone(),
            _ => "default".to_owned(),
        };
        let now_s = now.div_euclid(1000);
        let room = Room {
            session_id: rooms.inner.media.session_id(&token),
            api_key: rooms.cfg().media_api_key.clone(),
            token,
            owner_hash: hawk.session.user_hash.clone(),
            room_name: p.room_name,
            room_owner: p.room_owner.unwrap_or_default(),
            context: p.context,
            max_size: p.max_size.unwrap_or(i64::from(rooms.cfg().max_size)),
            channel,
            expires_in,
            created_at: now_s * 1000,
            updated_at: now_s * 1000,
            expires_at,
        };
        rooms
            .inner
            .store
            .room_insert(&room)
            .await
            .map_err(|e| Reply::backend("creating a room", &e))?;
        rooms
            .inner
            .notifier
            .notify(&room.owner_hash, now_s, "creation");
        rooms.publish(
            "rooms.room.created",
            &room.token,
            json!({"roomToken": room.token, "roomOwner": room.room_owner, "maxSize": room.max_size,
                   "expiresAt": room.expires_at / 1000, "channel": room.channel}),
        );
        let mut reply = Reply::json(
            StatusCode::CREATED,
            json!({"roomToken": room.token, "roomUrl": rooms.room_url(&room.token), "expiresAt": room.expires_at / 1000}),
        );
        if p.deprecated_name {
            reply = reply.with_header("alert", DEPRECATED);
        }
        Ok::<Reply, Reply>(reply)
    })
}

fn new_token(size: usize) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The live room of a path token, or 404 errno 105.
async fn room_or_404(rooms: &Rooms, token: &str, now: i64) -> Result<Room> {
    if token.is_empty() || token.len() > 128 {
        return Err(Reply::token_not_found());
    }
    rooms
        .inner
        .store
        .room(token, now)
        .await
        .map_err(|e| Reply::backend("reading a room", &e))?
        .ok_or_else(Reply::token_not_found)
}

fn owner_only(room: &Room, who: &Identity) -> Result<()> {
    if who.user() == Some(room.owner_hash.as_str()) {
        Ok(())
    } else {
        Err(Reply::forbidden(
            "Authenticated user is not the owner of this room.",
        ))
    }
}

/// The full room object (`getRoomInfo`).
pub(crate) fn room_info(rooms: &Rooms, room: &Room, participants: &[Participant]) -> Value {
    let client_max = participants
        .iter()
        .map(|p| p.client_max_size)
        .min()
        .map_or(room.max_size, |m| m.min(room.max_size));
    let mut v = json!({
        "roomToken": room.token,
        "roomUrl": rooms.room_url(&room.token),
        "context": context_value(room),
        "roomOwner": room.room_owner,
        "maxSize": room.max_size,
        "clientMaxSize": client_max,
        "creationTime": room.created_at / 1000,
        "expiresAt": room.expires_at / 1000,
        "ctime": room.updated_at / 1000,
        "participants": participants.iter().map(|p| json!({
            "roomConnectionId": p.connection_id,
            "displayName": p.display_name,
            "owner": p.user_hash.as_deref() == Some(room.owner_hash.as_str()),
        })).collect::<Vec<_>>(),
    });
    if let Some(name) = &room.room_name {
        v["roomName"] = json!(name);
    }
    v
}

fn context_value(room: &Room) -> Value {
    room.context
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or(Value::Null)
}

async fn get_room(State(rooms): State<Rooms>, Path(token): Path<String>, req: Request) -> Response {
    handle!(rooms.clone(), req, "get", |call, ident| {
        let now = now_ms();
        let room = room_or_404(&rooms, &token, now).await?;
        let who = rooms
            .inner
            .auth
            .hawk_or_token(&call.parts(), &room.token, now)
            .await?;
        ident = Some(who.clone());
        let Some(me) = who.participant_hash() else {
            let mut v = json!({
                "roomToken": room.token,
                "context": context_value(&room),
                "roomOwner": room.room_owner,
                "roomUrl": rooms.room_url(&room.token),
            });
            if let Some(name) = &room.room_name {
                v["roomName"] = json!(name);
            }
            return Ok(Reply::json(StatusCode::OK, v));
        };
        let participants = rooms
            .inner
            .store
            .participants(&room.token, now)
            .await
            .map_err(|e| Reply::backend("reading participants", &e))?;
        let is_participant = participants.iter().any(|p| p.participant_hash == me);
        if !is_participant && who.user() != Some(room.owner_hash.as_str()) {
            return Err(Reply::forbidden(
                "Authenticated user is neither a participant of the room nor the room owner.",
            ));
        }
        Ok::<Reply, Reply>(Reply::json(
            StatusCode::OK,
            room_info(&rooms, &room, &participants),
        ))
    })
}

async fn update_room(
    State(rooms): State<Rooms>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    handle!(rooms.clone(), req, "update", |call, ident| {
        let now = now_ms();
        let hawk = rooms.inner.auth.require_hawk(&call.parts(), now).await?;
        let who = Identity::Hawk(Box::new(hawk));
        ident = Some(who.clone());
        let body = call.json()?;
        let mut room = room_or_404(&rooms, &token, now).await?;
        let p = room_params(&rooms, &body)?;
        owner_only(&room, &who)?;
        if let Some(n) = p.room_name {
            room.room_name = Some(n);
        }
        if let Some(o) = p.room_owner {
            room.room_owner = o;
        }
        if let Some(c) = p.context {
            room.context = Some(c);
        }
        if let Some(m) = p.max_size {
            room.max_size = m;
        }
        let (expires_in, expires_at) =
            expiry(&rooms, now, Some(p.expires_in.unwrap_or(room.expires_in)));
        room.expires_in = expires_in;
        room.expires_at = expires_at;
        let now_s = now.div_euclid(1000);
        room.updated_at = now_s * 1000;
        rooms
            .inner
            .store
            .room_update(&room)
            .await
            .map_err(|e| Reply::backend("updating a room", &e))?;
        rooms
            .inner
            .notifier
            .notify(&room.owner_hash, now_s, "modification");
        rooms.publish(
            "rooms.room.updated",
            &room.token,
            json!({"roomToken": room.token, "roomOwner": room.room_owner, "maxSize": room.max_size,
                   "expiresAt": room.expires_at / 1000}),
        );
        let mut reply = Reply::json(StatusCode::OK, json!({"expiresAt": room.expires_at / 1000}));
        if p.deprecated_name {
            reply = reply.with_header("alert", DEPRECATED);
        }
        Ok::<Reply, Reply>(reply)
    })
}

async fn delete_room(
    State(rooms): State<Rooms>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    handle!(rooms.clone(), req, "delete", |call, ident| {
        let now = now_ms();
        let hawk = rooms.inner.auth.require_hawk(&call.parts(), now).await?;
        let who = Identity::Hawk(Box::new(hawk));
        ident = Some(who.clone());
        let room = room_or_404(&rooms, &token, now).await?;
        owner_only(&room, &who)?;
        let gone = rooms
            .inner
            .store
            .rooms_delete(
                std::slice::from_ref(&room.token),
                Some(&room.owner_hash),
                now,
            )
            .await
            .map_err(|e| Reply::backend("deleting a room", &e))?;
        rooms
            .inner
            .notifier
            .notify(&room.owner_hash, now.div_euclid(1000), "deletion");
        let live: Vec<Participant> = gone.into_iter().filter(|p| p.expires_at > now).collect();
        rooms.room_deleted(&room.token, "deleted", &live);
        Ok::<Reply, Reply>(Reply::empty(StatusCode::NO_CONTENT))
    })
}

/// `DELETE /rooms/{token}/participants/{roomConnectionId}` (not in Loop): the owner removes a participant
/// now. Its token or session stops working for the room, the owner's devices are pushed, and
/// `rooms.participant.left` carries `reason: "removed"`.
async fn remove_participant(
    State(rooms): State<Rooms>,
    Path((token, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    handle!(rooms.clone(), req, "remove_participant", |call, ident| {
        let now = now_ms();
        let hawk = rooms.inner.auth.require_hawk(&call.parts(), now).await?;
        let who = Identity::Hawk(Box::new(hawk));
        ident = Some(who.clone());
        let room = room_or_404(&rooms, &token, now).await?;
        owner_only(&room, &who)?;
        let store = &rooms.inner.store;
        let Some(p) = store
            .participant_by_connection(&room.token, &id, now)
            .await
            .map_err(|e| Reply::backend("reading a participant", &e))?
        else {
            return Err(Reply::error(
                StatusCode::NOT_FOUND,
                errno::INVALID_TOKEN,
                "Participant not found.",
            ));
        };
        store
            .participant_delete(&room.token, &p.participant_hash)
            .await
            .map_err(|e| Reply::backend("removing a participant", &e))?;
        rooms
            .touch_and_notify(&room, now, "leave")
            .await
            .map_err(|e| Reply::backend("touching a room", &e))?;
        rooms.participant_left(&p, "removed");
        Ok::<Reply, Reply>(Reply::empty(StatusCode::NO_CONTENT))
    })
}

async fn list_rooms(State(rooms): State<Rooms>, req: Request) -> Response {
    handle!(rooms.clone(), req, "list", |call, ident| {
        let now = now_ms();
        let hawk = rooms.inner.auth.require_hawk(&call.parts(), now).await?;
        let user = hawk.session.user_hash.clone();
        ident = Some(Identity::Hawk(Box::new(hawk)));
        let version = query_param(&call.resource, "version")
            .and_then(|v| parse_int(&Value::String(v)))
            .unwrap_or(0);
        let store = &rooms.inner.store;
        let mut mine = store
            .rooms_of(&user, now)
            .await
            .map_err(|e| Reply::backend("listing rooms", &e))?;
        if version != 0 {
            mine.retain(|r| r.updated_at / 1000 >= version);
        }
        let tokens: Vec<String> = mine.iter().map(|r| r.token.clone()).collect();
        let participants = store
            .participants_of(&tokens, now)
            .await
            .map_err(|e| Reply::backend("listing participants", &e))?;
        let mut out: Vec<Value> = mine
            .iter()
            .map(|r| {
                let ps: Vec<Participant> = participants
                    .iter()
                    .filter(|p| p.room_token == r.token)
                    .cloned()
                    .collect();
                room_info(&rooms, r, &ps)
            })
            .collect();
        if version > 0 {
            let deleted = store
                .tombstones(&user, version.saturating_mul(1000))
                .await
                .map_err(|e| Reply::backend("listing deleted rooms", &e))?;
            out.extend(
                deleted
                    .into_iter()
                    .map(|t| json!({"roomToken": t, "deleted": true})),
            );
        }
        Ok::<Reply, Reply>(Reply::json(StatusCode::OK, Value::Array(out)))
    })
}

async fn delete_rooms(State(rooms): State<Rooms>, req: Request) -> Response {
    handle!(rooms.clone(), req, "delete_many", |call, ident| {
        let now = now_ms();
        let hawk = rooms.inner.auth.require_hawk(&call.parts(), now).await?;
        let user = hawk.session.user_hash.clone();
        ident = Some(Identity::Hawk(Box::new(hawk)));
        let body = call.json()?;
        call.accepts_json()?;
        require(&body, &[&["deleteRoomTokens"]])?;
        let Some(Value::Array(asked)) = body.get("deleteRoomTokens") else {
            return Err(Reply::invalid("deleteRoomTokens should be an array."));
        };
        if asked.is_empty() {
            return Err(Reply::invalid("deleteRoomTokens should not be empty."));
        }
        let asked: Vec<String> = asked.iter().map(text).collect();
        let store = &rooms.inner.store;
        let mine = store
            .rooms_of(&user, now)
            .await
            .map_err(|e| Reply::backend("listing rooms", &e))?;
        let to_delete: Vec<String> = mine
            .iter()
            .filter(|r| asked.contains(&r.token))
            .map(|r| r.token.clone())
            .collect();
        let gone = store
            .rooms_delete(&to_delete, Some(&user), now)
            .await
            .map_err(|e| Reply::backend("deleting rooms", &e))?;
        if !to_delete.is_empty() {
            rooms
                .inner
                .notifier
                .notify(&user, now.div_euclid(1000), "deletion");
        }
        for t in &to_delete {
            let live: Vec<Participant> = gone
                .iter()
                .filter(|p| &p.room_token == t && p.expires_at > now)
                .cloned()
                .collect();
            rooms.room_deleted(t, "deleted", &live);
        }
        let mut responses = Map::new();
        for t in &asked {
            let v = if to_delete.contains(t) {
                json!({"code": 200})
            } else {
                json!({"code": 404, "errno": errno::INVALID_TOKEN, "error": "Room not found."})
            };
            responses.insert(t.clone(), v);
        }
        let status = if to_delete.is_empty() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::MULTI_STATUS
        };
        Ok::<Reply, Reply>(Reply::json(status, json!({"responses": responses})))
    })
}

// ---------- POST /rooms/{token}: actions ----------

const ACTIONS: &str = "join, refresh, status, leave, logDomain";

async fn room_action(
    State(rooms): State<Rooms>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    handle!(rooms.clone(), req, "action", |call, ident| {
        let now = now_ms();
        let body = call.json()?;
        let room = room_or_404(&rooms, &token, now).await?;
        let who = rooms
            .inner
            .auth
            .hawk_or_token(&call.parts(), &room.token, now)
            .await?;
        ident = Some(who.clone());
        let action = match body.get("action") {
            Some(Value::String(a)) if ACTIONS.split(", ").any(|x| x == a) => a.clone(),
            Some(_) => {
                return Err(Reply::invalid(format!("action should be one of {ACTIONS}")));
            }
            None => {
                return Err(Reply::error(
                    StatusCode::BAD_REQUEST,
                    errno::MISSING_PARAMETERS,
                    format!("action should be one of {ACTIONS}"),
                ));
            }
        };
        if who.participant_hash().is_none() && action != "join" {
            return Err(Reply::unauthorized("Token,Hawk", None));
        }
        match action.as_str() {
            "join" => join(&rooms, &call, &body, room, &who, now).await,
            "refresh" => refresh(&rooms, &room, &who, now).await,
            "status" => status(&rooms, &body, &room, &who, now).await,
            "leave" => leave(&rooms, &room, &who, now).await,
            _ => log_domain(&rooms, &call, &body, &room, &who, now).await,
        }
    })
}

/// The caller's live participant entry: the one Basic auth just read, else a lookup.
async fn current(
    rooms: &Rooms,
    room: &Room,
    who: &Identity,
    now: i64,
) -> Result<Option<Participant>> {
    if let Identity::Basic { participant, .. } = who {
        return Ok(Some((**participant).clone()));
    }
    rooms
        .inner
        .store
        .participant(&room.token, me(who)?, now)
        .await
        .map_err(|e| Reply::backend("reading a participant", &e))
}

fn me(who: &Identity) -> Result<&str> {
    who.participant_hash()
        .ok_or_else(|| Reply::unauthorized("Token,Hawk", None))
}

async fn join(
    rooms: &Rooms,
    call: &Call,
    body: &Map<String, Value>,
    mut room: Room,
    who: &Identity,
    now: i64,
) -> Result<Reply> {
    call.accepts_json()?;
    require(body, &[&["displayName"], &["clientMaxSize"]])?;
    let Some(client_max) = body.get("clientMaxSize").and_then(parse_int) else {
        return Err(Reply::invalid("clientMaxSize should be a number."));
    };
    let display_name = body.get("displayName").map(text).unwrap_or_default();
    if js_len(&display_name) > 255 {
        return Err(Reply::invalid(
            "displayName should be shorter than 255 characters",
        ));
    }
    let store = &rooms.inner.store;
    let cfg = rooms.cfg();
    // A room made under another media API key gets a new session first (Loop: a changed TokBox key).
    if room.api_key != cfg.media_api_key {
        room.api_key = cfg.media_api_key.clone();
        room.session_id = rooms.inner.media.session_id(&room.token);
        store
            .room_update(&room)
            .await
            .map_err(|e| Reply::backend("renewing a room's media session", &e))?;
    }
    let user = who.user();
    let is_owner = user == Some(room.owner_hash.as_str());
    let role = if is_owner { "moderator" } else { "publisher" };
    let connection_id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let connection_id = connection_id.hyphenated().to_string();
    let ttl = ms(cfg.participant_ttl);
    let session_token = rooms.inner.media.session_token(
        &room.session_id,
        role,
        &connection_id,
        now.div_euclid(1000),
        ttl.div_euclid(1000).max(1),
    );
    let (participant_hash, kind) = match who {
        Identity::Hawk(h) => (h.session.id_hash.clone(), Kind::Hawk),
        Identity::Basic { token_hash, .. } => (token_hash.clone(), Kind::Link),
        Identity::Anonymous => (rooms.inner.auth.hash(&session_token), Kind::Link),
    };
    let participant = Participant {
        room_token: room.token.clone(),
        participant_hash,
        connection_id: connection_id.clone(),
        user_hash: user.map(str::to_owned),
        kind,
        display_name: display_name.clone(),
        client_max_size: client_max,
        role: role.to_owned(),
        joined_at: now,
        expires_at: now.saturating_add(ttl),
        status: None,
    };
    let owner_hash = room.owner_hash.clone();
    let max_size = room.max_size;
    let check = |participants: &[Participant]| -> Result<()> {
        // The caller's own devices do not count (that is what lets a user rejoin); link-clickers count
        // all.
        let others: Vec<&Participant> = participants
            .iter()
            .filter(|p| user.is_none() || p.user_hash.as_deref() != user)
            .collect();
        let cap = others
            .iter()
            .map(|p| p.client_max_size)
            .min()
            .map_or(max_size, |m| m.min(max_size));
        let mut spare = cap - i64::try_from(others.len()).unwrap_or(i64::MAX);
        let owner_present = others
            .iter()
            .any(|p| p.user_hash.as_deref() == Some(owner_hash.as_str()));
        if !owner_present && !is_owner {
            spare -= 1;
        }
        if spare <= 0 {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                errno::ROOM_FULL,
                "The room is full.",
            ));
        }
        if client_max <= i64::try_from(others.len()).unwrap_or(i64::MAX) {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                errno::CLIENT_REACHED_CAPACITY,
                "Too many participants in the room for you to handle.",
            ));
        }
        Ok(())
    };
    let room_expires = now.saturating_add(ms(cfg.extend_ttl));
    let replaced = match store
        .join(&participant, now, room_expires, check)
        .await
        .map_err(|e| Reply::backend("adding a participant", &e))?
    {
        Err(refused) => return Err(refused),
        Ok(None) => return Err(Reply::token_not_found()),
        Ok(Some(replaced)) => replaced,
    };
    rooms
        .inner
        .notifier
        .notify(&room.owner_hash, now.div_euclid(1000), "join");
    if let Some(old) = replaced {
        rooms.participant_left(&old, "rejoined");
    }
    rooms.publish(
        "rooms.participant.joined",
        &room.token,
        json!({"roomToken": room.token, "roomConnectionId": connection_id, "displayName": display_name,
               "role": role, "owner": is_owner, "kind": if kind == Kind::Hawk { "hawk" } else { "link" },
               "clientMaxSize": client_max}),
    );
    let mut answer = json!({
        "apiKey": room.api_key,
        "sessionId": room.session_id,
        "sessionToken": session_token,
        "expires": cfg.participant_ttl_json(),
    });
    if let Some(ice) = &rooms.inner.ice {
        let servers = ice(&connection_id, cfg.ice_ttl);
        if !servers.is_empty() {
            answer["iceServers"] = json!(servers);
        }
    }
    Ok(Reply::json(StatusCode::OK, answer))
}

async fn refresh(rooms: &Rooms, room: &Room, who: &Identity, now: i64) -> Result<Reply> {
    let me = me(who)?;
    let ttl = ms(rooms.cfg().participant_ttl);
    let ok = rooms
        .inner
        .store
        .participant_touch(&room.token, me, now, now.saturating_add(ttl))
        .await
        .map_err(|e| Reply::backend("refreshing a participant", &e))?;
    if !ok {
        return Err(Reply::error(
            StatusCode::GONE,
            errno::EXPIRED,
            "Participation has expired.",
        ));
    }
    Ok(Reply::json(
        StatusCode::OK,
        json!({"expires": rooms.cfg().participant_ttl_json()}),
    ))
}

async fn status(
    rooms: &Rooms,
    body: &Map<String, Value>,
    room: &Room,
    who: &Identity,
    now: i64,
) -> Result<Reply> {
    for field in [
        "event",
        "state",
        "connections",
        "sendStreams",
        "recvStreams",
    ] {
        if !body.contains_key(field) {
            return Err(Reply::invalid(format!(
                "'{field}' field is missing in body."
            )));
        }
    }
    let mut counts = [0i64; 3];
    for (i, field) in ["connections", "sendStreams", "recvStreams"]
        .into_iter()
        .enumerate()
    {
        match body.get(field).and_then(parse_int) {
            Some(n) if n >= 0 => counts[i] = n,
            _ => return Err(Reply::invalid(format!("Invalid {field} number."))),
        }
    }
    let me = me(who)?;
    let event: String = body
        .get("event")
        .map(text)
        .unwrap_or_default()
        .chars()
        .take(255)
        .collect();
    let state: String = body
        .get("state")
        .map(text)
        .unwrap_or_default()
        .chars()
        .take(255)
        .collect();
    let st = Status {
        event,
        state,
        connections: counts[0],
        send_streams: counts[1],
        recv_streams: counts[2],
        derived_state: derived_state(counts[1], counts[2]).to_owned(),
        at: now,
    };
    let store = &rooms.inner.store;
    let Some(p) = current(rooms, room, who, now).await? else {
        return Err(not_participant());
    };
    if !store
        .participant_status(&room.token, me, &st, now)
        .await
        .map_err(|e| Reply::backend("storing a status", &e))?
    {
        return Err(not_participant());
    }
    rooms.publish(
        "rooms.status",
        &room.token,
        json!({"roomToken": room.token, "roomConnectionId": p.connection_id, "event": st.event,
               "state": st.state, "connections": st.connections, "sendStreams": st.send_streams,
               "recvStreams": st.recv_streams, "derivedState": st.derived_state,
               "previousDerivedState": p.status.map(|s| s.derived_state)}),
    );
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

fn not_participant() -> Reply {
    Reply::error(
        StatusCode::BAD_REQUEST,
        errno::NOT_ROOM_PARTICIPANT,
        "Can't update status for a room you aren't in.",
    )
}

async fn leave(rooms: &Rooms, room: &Room, who: &Identity, now: i64) -> Result<Reply> {
    let me = me(who)?;
    let store = &rooms.inner.store;
    let Some(p) = current(rooms, room, who, now).await? else {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            errno::NOT_ROOM_PARTICIPANT,
            "Unable to leave a room you have not joined.",
        ));
    };
    store
        .participant_delete(&room.token, me)
        .await
        .map_err(|e| Reply::backend("removing a participant", &e))?;
    rooms
        .touch_and_notify(room, now, "leave")
        .await
        .map_err(|e| Reply::backend("touching a room", &e))?;
    rooms.participant_left(&p, "left");
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

async fn log_domain(
    rooms: &Rooms,
    call: &Call,
    body: &Map<String, Value>,
    room: &Room,
    who: &Identity,
    now: i64,
) -> Result<Reply> {
    call.accepts_json()?;
    require(body, &[&["domains"]])?;
    let bad = || {
        Reply::invalid(
            "Domains must be a list of objects with both a ``domain`` and ``count`` property.",
        )
    };
    let Some(Value::Array(domains)) = body.get("domains") else {
        return Err(bad());
    };
    let valid = domains.iter().all(|d| {
        d.as_object()
            .is_some_and(|o| o.contains_key("domain") && o.contains_key("count"))
    });
    if !valid {
        return Err(bad());
    }
    if current(rooms, room, who, now).await?.is_none() {
        return Err(not_participant());
    }
    for d in domains {
        let count = d.get("count").and_then(parse_int).unwrap_or(0).max(0);
        ::metrics::counter!(metrics::SHARED_DOMAINS).increment(count.unsigned_abs());
        tracing::debug!(domain = %d.get("domain").map(text).unwrap_or_default(), count, "rooms: shared domain");
    }
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}
