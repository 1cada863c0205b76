//! The rooms admin API (admin listener): every live room, one room with its participants and their last
//! status, delete a room, remove a participant (an owner's kick, which Loop lacked). Errors use the
//! project's `{"error": {"code", "message"}}`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::{Participant, Room};
use crate::{Rooms, now_ms};

pub(crate) fn router(rooms: Rooms) -> Router {
    Router::new()
        .route("/api/v1/rooms", get(list))
        .route("/api/v1/rooms/{token}", get(show).delete(remove))
        .route("/api/v1/rooms/{token}/participants/{id}", delete(kick))
        .with_state(rooms)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn internal(context: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "rooms admin: {context}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log",
    )
}

fn room_view(rooms: &Rooms, room: &Room, participants: &[Participant]) -> Value {
    let mut v = crate::api::room_info(rooms, room, participants);
    v["channel"] = json!(room.channel);
    v["sessionId"] = json!(room.session_id);
    v["participants"] = json!(
        participants
            .iter()
            .map(|p| json!({
                "roomConnectionId": p.connection_id,
                "displayName": p.display_name,
                "owner": p.user_hash.as_deref() == Some(room.owner_hash.as_str()),
                "role": p.role,
                "kind": if p.kind == crate::store::Kind::Hawk { "hawk" } else { "link" },
                "clientMaxSize": p.client_max_size,
                "joinedAt": p.joined_at / 1000,
                "expiresAt": p.expires_at / 1000,
                "status": p.status,
            }))
            .collect::<Vec<_>>()
    );
    v
}

/// `?limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Most rooms to list (default 100, at most 1000).
    limit: Option<i64>,
}

/// Live rooms, newest first (`limit`, default 100, at most 1000), with their participants.
#[utoipa::path(get, path = "/api/v1/rooms", tag = "rooms", params(ListQuery),
    responses((status = 200, description = "`{rooms: [room]}`: Loop's full room object plus `channel`, `sessionId` and per participant `role`, `kind`, `joinedAt`, `expiresAt`, `status`")))]
pub async fn list(
    State(rooms): State<Rooms>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let now = now_ms();
    let limit = q
        .ok()
        .and_then(|Query(q)| q.limit)
        .unwrap_or(100)
        .clamp(1, 1000);
    let store = &rooms.inner.store;
    let all = match store.rooms_all(now, limit).await {
        Ok(r) => r,
        Err(e) => return internal("listing rooms", &e),
    };
    let tokens: Vec<String> = all.iter().map(|r| r.token.clone()).collect();
    let ps = match store.participants_of(&tokens, now).await {
        Ok(p) => p,
        Err(e) => return internal("listing participants", &e),
    };
    let out: Vec<Value> = all
        .iter()
        .map(|r| {
            let mine: Vec<Participant> = ps
                .iter()
                .filter(|p| p.room_token == r.token)
                .cloned()
                .collect();
            room_view(&rooms, r, &mine)
        })
        .collect();
    Json(json!({"rooms": out})).into_response()
}

/// One room, its participants and their last reported status.
#[utoipa::path(get, path = "/api/v1/rooms/{token}", tag = "rooms", params(("token" = String, Path)),
    responses((status = 200, description = "the room"), (status = 404)))]
pub async fn show(State(rooms): State<Rooms>, Path(token): Path<String>) -> Response {
    let now = now_ms();
    let store = &rooms.inner.store;
    match store.room(&token, now).await {
        Ok(Some(room)) => match store.participants(&token, now).await {
            Ok(ps) => Json(room_view(&rooms, &room, &ps)).into_response(),
            Err(e) => internal("listing participants", &e),
        },
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no room {token:?}"),
        ),
        Err(e) => internal("reading a room", &e),
    }
}

/// Deletes a room as its owner would (tombstone, owner notified, events).
#[utoipa::path(delete, path = "/api/v1/rooms/{token}", tag = "rooms", params(("token" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404)))]
pub async fn remove(State(rooms): State<Rooms>, Path(token): Path<String>) -> Response {
    let now = now_ms();
    let store = &rooms.inner.store;
    let room = match store.room(&token, now).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no room {token:?}"),
            );
        }
        Err(e) => return internal("reading a room", &e),
    };
    match store
        .rooms_delete(
            std::slice::from_ref(&room.token),
            Some(&room.owner_hash),
            now,
        )
        .await
    {
        Ok(gone) => {
            rooms
                .inner
                .notifier
                .notify(&room.owner_hash, now.div_euclid(1000), "deletion");
            let live: Vec<Participant> = gone.into_iter().filter(|p| p.expires_at > now).collect();
            rooms.room_deleted(&room.token, "deleted", &live);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => internal("deleting a room", &e),
    }
}

/// Removes one participant (by `roomConnectionId`) now: its token stops working, the owner is notified,
/// `rooms.participant.left` carries `reason: "removed"`.
#[utoipa::path(delete, path = "/api/v1/rooms/{token}/participants/{id}", tag = "rooms",
    params(("token" = String, Path), ("id" = String, Path, description = "roomConnectionId")),
    responses((status = 204, description = "removed"), (status = 404)))]
pub async fn kick(
    State(rooms): State<Rooms>,
    Path((token, id)): Path<(String, String)>,
) -> Response {
    let now = now_ms();
    let store = &rooms.inner.store;
    let room = match store.room(&token, now).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no room {token:?}"),
            );
        }
        Err(e) => return internal("reading a room", &e),
    };
    let p = match store.participant_by_connection(&token, &id, now).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no participant {id:?} in room {token:?}"),
            );
        }
        Err(e) => return internal("reading a participant", &e),
    };
    if let Err(e) = store.participant_delete(&token, &p.participant_hash).await {
        return internal("removing a participant", &e);
    }
    if let Err(e) = rooms.touch_and_notify(&room, now, "leave").await {
        return internal("touching a room", &e);
    }
    rooms.participant_left(&p, "removed");
    StatusCode::NO_CONTENT.into_response()
}
