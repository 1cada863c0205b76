//! Control (handlers public for the binary's OpenAPI document): JSON-RPC 2.0 on `/rpc` with SEMS's DI functions, and REST on `/api/v1/sip/registrations`.
//!
//! JSON-RPC methods: `createRegistration(subscriber_id, user, pass, realm[, contact])`,
//! `updateRegistration(…same…)`, `refreshRegistration(subscriber_id)`, `removeRegistration(subscriber_id)`,
//! with positional or named params, and the same through SEMS's generic `di` call
//! (`["db_reg_agent", "createRegistration", …]`). Batches and notifications as the spec says. As in SEMS,
//! the RPC functions act on the agent only; REST `POST`/`PUT` also write the `subscribers` row, so the
//! account survives a restart.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::{Account, BindingView, ControlError, ListFilter};
use crate::{Agent, Status};

pub(crate) fn router(agent: Agent) -> Router {
    Router::new()
        .route("/rpc", post(rpc))
        .route("/api/v1/sip/registrations", get(list).post(create))
        .route(
            "/api/v1/sip/registrations/{id}",
            get(show).put(update).delete(remove),
        )
        .route("/api/v1/sip/registrations/{id}/refresh", post(refresh))
        .with_state(agent)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn control_error(e: &ControlError) -> Response {
    match e {
        ControlError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        ControlError::Invalid(_) => error(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
        ControlError::Stopping => error(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string()),
    }
}

fn body_error(e: &JsonRejection) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_json", e.body_text())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// Query of the list.
pub struct ListQuery {
    status: Option<String>,
    user: Option<String>,
    realm: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

fn parse_status(s: &str) -> Option<Status> {
    if let Ok(n) = s.parse::<i64>() {
        return Status::from_code(n);
    }
    Status::ALL
        .into_iter()
        .find(|st| st.name().eq_ignore_ascii_case(s))
}

#[utoipa::path(get, path = "/api/v1/sip/registrations", tag = "sip",
    params(("status" = Option<String>, Query, description = "0-5 or a name"), ("user" = Option<String>, Query), ("realm" = Option<String>, Query), ("limit" = Option<usize>, Query), ("offset" = Option<usize>, Query)),
    responses((status = 200, description = "{total, registrations: [BindingView]}"), (status = 400)))]
pub async fn list(
    State(agent): State<Agent>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "query parameters: status, user, realm, limit, offset",
        );
    };
    let status = match q.status.as_deref().map(|s| (s, parse_status(s))) {
        None => None,
        Some((_, Some(st))) => Some(st),
        Some((s, None)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!(
                    "unknown status {s:?} (0-5 or inactive, pending, active, failed, removed, to_be_removed)"
                ),
            );
        }
    };
    let filter = ListFilter {
        status,
        user: q.user,
        realm: q.realm,
        limit: Some(q.limit.unwrap_or(1000).min(100_000)),
        offset: q.offset,
    };
    match agent.list(filter).await {
        Ok((total, items)) => Json(json!({"total": total, "registrations": items})).into_response(),
        Err(e) => control_error(&e),
    }
}

#[utoipa::path(get, path = "/api/v1/sip/registrations/{id}", tag = "sip", params(("id" = i64, Path)),
    responses((status = 200, body = BindingView), (status = 404)))]
pub async fn show(State(agent): State<Agent>, Path(id): Path<i64>) -> Response {
    match agent.get(id).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => control_error(&ControlError::NotFound(id)),
        Err(e) => control_error(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// Body of a create.
pub struct AccountBody {
    subscriber_id: Option<i64>,
    user: String,
    pass: String,
    realm: String,
    #[serde(default)]
    contact: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/sip/registrations", tag = "sip",
    request_body(description = "{subscriber_id?, user, pass, realm, contact?}", content_type = "application/json"),
    responses((status = 201, body = BindingView), (status = 400), (status = 409)))]
pub async fn create(
    State(agent): State<Agent>,
    body: Result<Json<AccountBody>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return body_error(&e),
    };
    let mut account = Account {
        subscriber_id: body.subscriber_id.unwrap_or(0),
        user: body.user,
        pass: body.pass,
        realm: body.realm,
        contact: body.contact.filter(|c| !c.is_empty()),
    };
    if let Err(e) = account.validate() {
        return control_error(&e);
    }
    if let Some(id) = body.subscriber_id
        && matches!(agent.get(id).await, Ok(Some(_)))
    {
        return error(
            StatusCode::CONFLICT,
            "exists",
            format!("subscriber {id} exists; PUT changes it"),
        );
    }
    let id = match agent
        .db()
        .insert_subscriber(
            body.subscriber_id,
            &account.user,
            &account.pass,
            &account.realm,
            account.contact.as_deref().unwrap_or(""),
        )
        .await
    {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "cannot add subscriber");
            return error(
                StatusCode::CONFLICT,
                "not_stored",
                format!("the subscriber could not be stored: {}", e.source),
            );
        }
    };
    account.subscriber_id = id;
    if let Err(e) = agent.create(account).await {
        return control_error(&e);
    }
    match agent.get(id).await {
        Ok(Some(v)) => (StatusCode::CREATED, Json(v)).into_response(),
        _ => (StatusCode::CREATED, Json(json!({"subscriber_id": id}))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// Body of an update.
pub struct UpdateBody {
    user: String,
    pass: String,
    realm: String,
    #[serde(default)]
    contact: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/sip/registrations/{id}", tag = "sip", params(("id" = i64, Path)),
    request_body(description = "{user, pass, realm, contact?}", content_type = "application/json"),
    responses((status = 200, body = BindingView), (status = 400), (status = 409)))]
pub async fn update(
    State(agent): State<Agent>,
    Path(id): Path<i64>,
    body: Result<Json<UpdateBody>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return body_error(&e),
    };
    let account = Account {
        subscriber_id: id,
        user: body.user,
        pass: body.pass,
        realm: body.realm,
        contact: body.contact.filter(|c| !c.is_empty()),
    };
    if let Err(e) = account.validate() {
        return control_error(&e);
    }
    let contact = account.contact.as_deref().unwrap_or("");
    let stored = match agent
        .db()
        .update_subscriber(id, &account.user, &account.pass, &account.realm, contact)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => agent
            .db()
            .insert_subscriber(
                Some(id),
                &account.user,
                &account.pass,
                &account.realm,
                contact,
            )
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        return error(
            StatusCode::CONFLICT,
            "not_stored",
            format!("the subscriber could not be stored: {}", e.source),
        );
    }
    if let Err(e) = agent.update(account).await {
        return control_error(&e);
    }
    match agent.get(id).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => control_error(&ControlError::NotFound(id)),
        Err(e) => control_error(&e),
    }
}

#[utoipa::path(delete, path = "/api/v1/sip/registrations/{id}", tag = "sip", params(("id" = i64, Path)),
    responses((status = 202, description = "de-REGISTER queued; status to_be_removed"), (status = 404)))]
pub async fn remove(State(agent): State<Agent>, Path(id): Path<i64>) -> Response {
    match agent.remove(id).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"subscriber_id": id, "status": Status::ToBeRemoved})),
        )
            .into_response(),
        Err(e) => control_error(&e),
    }
}

#[utoipa::path(post, path = "/api/v1/sip/registrations/{id}/refresh", tag = "sip", params(("id" = i64, Path)),
    responses((status = 202, description = "REGISTER queued"), (status = 404)))]
pub async fn refresh(State(agent): State<Agent>, Path(id): Path<i64>) -> Response {
    match agent.refresh(id).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"subscriber_id": id, "refresh": "queued"})),
        )
            .into_response(),
        Err(e) => control_error(&e),
    }
}

// ---- JSON-RPC 2.0 ----

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const NOT_FOUND: i64 = -32004;
const UNAVAILABLE: i64 = -32003;

fn rpc_error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "error": {"code": code, "message": message.into()}, "id": id})
}

#[utoipa::path(post, path = "/rpc", tag = "sip",
    request_body(description = "JSON-RPC 2.0 call or batch: createRegistration, updateRegistration, refreshRegistration, removeRegistration, di", content_type = "application/json"),
    responses((status = 200, description = "JSON-RPC response(s)"), (status = 204, description = "notifications only")))]
pub async fn rpc(State(agent): State<Agent>, body: axum::body::Bytes) -> Response {
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Json(rpc_error(
                Value::Null,
                PARSE_ERROR,
                format!("parse error: {e}"),
            ))
            .into_response();
        }
    };
    match parsed {
        Value::Array(calls) if calls.is_empty() => {
            Json(rpc_error(Value::Null, INVALID_REQUEST, "empty batch")).into_response()
        }
        Value::Array(calls) => {
            let mut out = Vec::new();
            for call in calls.into_iter().take(1000) {
                if let Some(r) = one_call(&agent, call).await {
                    out.push(r);
                }
            }
            if out.is_empty() {
                StatusCode::NO_CONTENT.into_response()
            } else {
                Json(Value::Array(out)).into_response()
            }
        }
        call => match one_call(&agent, call).await {
            Some(r) => Json(r).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    }
}

/// One call; `None` for a notification.
async fn one_call(agent: &Agent, call: Value) -> Option<Value> {
    let Value::Object(obj) = call else {
        return Some(rpc_error(
            Value::Null,
            INVALID_REQUEST,
            "a call must be an object",
        ));
    };
    let id = obj.get("id").cloned();
    let respond_id = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(rpc_error(
            respond_id,
            INVALID_REQUEST,
            "jsonrpc must be \"2.0\"",
        ));
    }
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return Some(rpc_error(
            respond_id,
            INVALID_REQUEST,
            "method must be a string",
        ));
    };
    let params = obj
        .get("params")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let result = dispatch(agent, method, params).await;
    let id = id?;
    Some(match result {
        Ok(v) => json!({"jsonrpc": "2.0", "result": v, "id": id}),
        Err((code, message)) => rpc_error(id, code, message),
    })
}

type RpcResult = Result<Value, (i64, String)>;

async fn dispatch(agent: &Agent, method: &str, params: Value) -> RpcResult {
    // SEMS's generic DI call: di("db_reg_agent", "<function>", args…).
    if method == "di" {
        let Value::Array(mut args) = params else {
            return Err((
                INVALID_PARAMS,
                "di takes [\"db_reg_agent\", function, args…]".into(),
            ));
        };
        if args.len() < 2 || args[0].as_str() != Some("db_reg_agent") {
            return Err((
                INVALID_PARAMS,
                "di: the first argument must be \"db_reg_agent\"".into(),
            ));
        }
        let rest = args.split_off(2);
        let Some(function) = args[1].as_str() else {
            return Err((INVALID_PARAMS, "di: the function must be a string".into()));
        };
        return Box::pin(dispatch(agent, function, Value::Array(rest))).await;
    }
    let control = |r: Result<(), ControlError>, id: i64| match r {
        Ok(()) => Ok(json!({"subscriber_id": id})),
        Err(e @ ControlError::NotFound(_)) => Err((NOT_FOUND, e.to_string())),
        Err(e @ ControlError::Invalid(_)) => Err((INVALID_PARAMS, e.to_string())),
        Err(e @ ControlError::Stopping) => Err((UNAVAILABLE, e.to_string())),
    };
    match method {
        "createRegistration" | "updateRegistration" => {
            let account = account_params(&params)?;
            let id = account.subscriber_id;
            let r = if method == "createRegistration" {
                agent.create(account).await
            } else {
                agent.update(account).await
            };
            control(r, id)
        }
        "refreshRegistration" | "removeRegistration" => {
            let id = id_param(&params)?;
            let r = if method == "refreshRegistration" {
                agent.refresh(id).await
            } else {
                agent.remove(id).await
            };
            control(r, id)
        }
        _ => Err((
            METHOD_NOT_FOUND,
            format!(
                "method {method:?} not found (createRegistration, updateRegistration, refreshRegistration, removeRegistration, di)"
            ),
        )),
    }
}

fn as_id(v: Option<&Value>) -> Result<i64, (i64, String)> {
    match v {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or((INVALID_PARAMS, "subscriber_id must be an integer".into()))
}

fn as_text(v: Option<&Value>, name: &str) -> Result<String, (i64, String)> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err((INVALID_PARAMS, format!("{name} must be a string"))),
    }
}

fn id_param(params: &Value) -> Result<i64, (i64, String)> {
    match params {
        Value::Array(a) => as_id(a.first()),
        Value::Object(o) => as_id(o.get("subscriber_id")),
        _ => Err((
            INVALID_PARAMS,
            "params must be an array or an object".into(),
        )),
    }
}

fn account_params(params: &Value) -> Result<Account, (i64, String)> {
    let get = |i: usize, name: &str| match params {
        Value::Array(a) => a.get(i).cloned(),
        Value::Object(o) => o.get(name).cloned(),
        _ => None,
    };
    if !matches!(params, Value::Array(_) | Value::Object(_)) {
        return Err((
            INVALID_PARAMS,
            "params must be an array or an object".into(),
        ));
    }
    let contact = match get(4, "contact") {
        None | Some(Value::Null) => None,
        Some(v) => Some(as_text(Some(&v), "contact")?).filter(|c| !c.is_empty()),
    };
    let account = Account {
        subscriber_id: as_id(get(0, "subscriber_id").as_ref())?,
        user: as_text(get(1, "user").as_ref(), "user")?,
        pass: as_text(get(2, "pass").as_ref(), "pass")?,
        realm: as_text(get(3, "realm").as_ref(), "realm")?,
        contact,
    };
    account
        .validate()
        .map_err(|e| (INVALID_PARAMS, e.to_string()))?;
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_positional_and_named_params() {
        let a = account_params(&json!([7, "alice", "pw", "example.org"])).expect("positional");
        assert_eq!(
            (a.subscriber_id, a.user.as_str(), a.contact),
            (7, "alice", None)
        );
        let a = account_params(&json!({"subscriber_id": "8", "user": "bob", "pass": "x", "realm": "example.org", "contact": "sip:bob@10.0.0.1"})).expect("named");
        assert_eq!(
            (a.subscriber_id, a.contact.as_deref()),
            (8, Some("sip:bob@10.0.0.1"))
        );
        assert_eq!(
            account_params(&json!([7, "alice"])).map_err(|e| e.0),
            Err(INVALID_PARAMS)
        );
        assert_eq!(
            account_params(&json!(["x", "a", "b", "c"])).map_err(|e| e.0),
            Err(INVALID_PARAMS)
        );
        assert_eq!(
            account_params(&json!([1, "a b", "p", "example.org"])).map_err(|e| e.0),
            Err(INVALID_PARAMS)
        );
        assert_eq!(id_param(&json!([3])), Ok(3));
        assert_eq!(id_param(&json!({"subscriber_id": 4})), Ok(4));
        assert!(id_param(&json!("x")).is_err());
        assert_eq!(parse_status("2"), Some(Status::Active));
        assert_eq!(parse_status("TO_BE_REMOVED"), Some(Status::ToBeRemoved));
        assert_eq!(parse_status("9"), None);
    }
}
