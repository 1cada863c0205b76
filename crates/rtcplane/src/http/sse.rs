//! `GET /api/v1/events`: the bus as Server-Sent Events, filtered with `?types=turn.*,sip.*`, resumable with
//! `Last-Event-ID` (or `?last_event_id=`) from the stored event log.
//!
//! Resume is gap-free: the live subscription is opened first, then this node's recorder is flushed, then the
//! log is replayed after the given event; live events already replayed are skipped by id.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use rtcplane_event_bus::sinks::{EventLog, LogError};
use rtcplane_event_bus::{Event, Subscription, TypeFilter};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;
use uuid::Uuid;

use super::ApiError;
use super::admin::AdminState;

/// Stored events read per query while replaying.
const REPLAY_PAGE: i64 = 500;

/// Query of the event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Comma-separated globs over event types (`turn.*,sip.registration.changed`); all events if absent.
    types: Option<String>,
    /// Resume after this event id, for clients that cannot send the `Last-Event-ID` header.
    last_event_id: Option<String>,
}

/// Live events: each SSE message has `id` (the event id), `event` (its type) and `data` (the CloudEvents JSON
/// envelope). With `Last-Event-ID` (sent by EventSource when it reconnects) the stream first replays the
/// stored events after that one. If the event is no longer stored (`events.retention`), a `stream.gap`
/// message says so and the replay starts at the time inside its UUIDv7. If this client falls behind the live
/// bus, a `bus.lagged` message says how many events it lost.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id")),
    responses((status = 200, content_type = "text/event-stream", body = String,
               description = "a stream of CloudEvents envelopes"),
              (status = 400, body = super::error::ErrorBody)))]
pub(crate) async fn events(
    State(s): State<AdminState>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = TypeFilter::parse(query.types.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))
        })
        .transpose()?
        .or(query.last_event_id)
        .filter(|v| !v.trim().is_empty());

    // Subscribe before reading the log, so nothing falls between the two.
    let sub = s.bus.subscribe(filter.clone());
    let mut queue = VecDeque::new();
    let phase = match last_event_id {
        None => Phase::Live,
        Some(last) => {
            if !s.sinks.log.flush(Duration::from_secs(2)).await {
                tracing::warn!("the event recorder did not confirm a flush; resuming anyway");
            }
            let point = s.sinks.log.resume_point(&last).await.map_err(|e| match e {
                LogError::InvalidId(_) => ApiError::bad_request(format!("Last-Event-ID: {e}")),
                LogError::Storage(_) => ApiError::internal("reading the event log", &e),
            })?;
            if !point.exact {
                queue.push_back(gap(
                    &last,
                    "that event is no longer stored (events.retention); replaying from its time",
                ));
            }
            Phase::Replay(point.after)
        }
    };
    let state = StreamState {
        sub,
        shutdown: s.shutdown.clone(),
        log: s.sinks.log.clone(),
        filter,
        phase,
        replayed: HashSet::new(),
        // A minute of slack for clocks of other nodes and events queued before the subscription.
        live_horizon: chrono::Utc::now() - chrono::Duration::seconds(60),
        queue,
    };
    let events = stream::unfold(state, |mut st| async move {
        let next = st.next().await?;
        Some((Ok(next), st))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

enum Phase {
    /// Replaying stored events after this log position.
    Replay(i64),
    /// Following the bus.
    Live,
}

struct StreamState {
    sub: Subscription,
    shutdown: CancellationToken,
    log: EventLog,
    filter: TypeFilter,
    phase: Phase,
    /// Ids of recent events sent during the replay, so the same events arriving live are not sent twice.
    /// Only events from around the subscription on can arrive live, so older ones are not kept (bounded).
    replayed: HashSet<Uuid>,
    /// Events older than this cannot come live any more.
    live_horizon: chrono::DateTime<chrono::Utc>,
    queue: VecDeque<SseEvent>,
}

impl StreamState {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.shutdown.is_cancelled() {
                return None;
            }
            match self.phase {
                Phase::Replay(after) => match self.log.read_after(after, REPLAY_PAGE).await {
                    Ok(rows) if rows.is_empty() => self.phase = Phase::Live,
                    Ok(rows) => {
                        self.phase = Phase::Replay(rows.last().map_or(after, |(seq, _)| *seq));
                        for (_, event) in rows {
                            if self.filter.matches(&event.ty) {
                                if event.time >= self.live_horizon {
                                    self.replayed.insert(event.id);
                                }
                                self.queue.push_back(message(&event));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event log replay failed; continuing live");
                        self.queue.push_back(gap(
                            "",
                            "the stored event log could not be read; continuing live",
                        ));
                        self.phase = Phase::Live;
                    }
                },
                Phase::Live => {
                    let event = tokio::select! {
                        () = self.shutdown.cancelled() => return None,
                        e = self.sub.recv() => e?,
                    };
                    let lost = self.sub.take_lost();
                    if lost > 0 {
                        self.queue.push_back(
                            SseEvent::default()
                                .event("bus.lagged")
                                .data(format!("{{\"lost\":{lost}}}")),
                        );
                    }
                    if !self.replayed.is_empty() && self.replayed.remove(&event.id) {
                        continue;
                    }
                    self.queue.push_back(message(&event));
                }
            }
        }
    }
}

fn message(event: &Event) -> SseEvent {
    SseEvent::default()
        .id(event.id.to_string())
        .event(event.ty.as_str())
        .data(event.to_json())
}

fn gap(last_event_id: &str, reason: &str) -> SseEvent {
    SseEvent::default()
        .event("stream.gap")
        .data(serde_json::json!({"last_event_id": last_event_id, "reason": reason}).to_string())
}

/// An operator's event (`POST /api/v1/events`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    /// Must start with `custom.` (subsystem types cannot be forged), e.g. `custom.maintenance.started`.
    #[serde(rename = "type")]
    ty: String,
    /// What it is about.
    #[serde(default)]
    subject: Option<String>,
    /// Any JSON.
    #[serde(default)]
    data: serde_json::Value,
}

/// The published event's id.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Published {
    id: String,
}

/// Publishes an operator event on the bus (source `/rtcplane/<node>/admin`): it reaches SSE clients, the
/// stored log, webhooks and Redis like any other, which makes it the way to test a pipeline end to end.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = PublishRequest,
    responses((status = 202, body = Published), (status = 400, body = super::error::ErrorBody)))]
pub(crate) async fn publish(
    State(s): State<AdminState>,
    body: Result<axum::Json<PublishRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(axum::http::StatusCode, axum::Json<Published>), ApiError> {
    let axum::Json(req) = body.map_err(ApiError::json)?;
    if !req.ty.starts_with("custom.") {
        return Err(ApiError::bad_request(format!(
            "type {:?}: operator events must start with `custom.`",
            req.ty
        )));
    }
    if req.subject.as_ref().is_some_and(|s| s.len() > 1024) {
        return Err(ApiError::bad_request("subject is longer than 1024 bytes"));
    }
    let event = Event::new(s.bus.node(), "admin", &req.ty, req.subject, req.data)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let id = event.id.to_string();
    s.bus.publish(event);
    Ok((
        axum::http::StatusCode::ACCEPTED,
        axum::Json(Published { id }),
    ))
}
