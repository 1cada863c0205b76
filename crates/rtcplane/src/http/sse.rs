//! `GET /api/v1/events`: the bus as Server-Sent Events, filtered with `?types=turn.*,sip.*`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use rtcplane_event_bus::TypeFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiError;
use super::admin::AdminState;

/// Query of the event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Comma-separated globs over event types (`turn.*,sip.registration.changed`); all events if absent.
    types: Option<String>,
}

/// Live events: each SSE message has `id` (the event id), `event` (its type) and `data` (the CloudEvents JSON
/// envelope). If this client falls behind, a `bus.lagged` message says how many events it lost.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, content_type = "text/event-stream", body = String,
               description = "a stream of CloudEvents envelopes"),
              (status = 400, body = super::error::ErrorBody)))]
pub(crate) async fn events(
    State(s): State<AdminState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = TypeFilter::parse(query.types.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let sub = s.bus.subscribe(filter);
    let shutdown = s.shutdown.clone();
    let events = stream::unfold((sub, shutdown), |(mut sub, shutdown)| async move {
        let event = tokio::select! {
            () = shutdown.cancelled() => return None,
            e = sub.recv() => e?,
        };
        let mut out = Vec::with_capacity(2);
        let lost = sub.take_lost();
        if lost > 0 {
            out.push(
                SseEvent::default()
                    .event("bus.lagged")
                    .data(format!("{{\"lost\":{lost}}}")),
            );
        }
        out.push(
            SseEvent::default()
                .id(event.id.to_string())
                .event(event.ty.as_str())
                .data(event.to_json()),
        );
        Some((stream::iter(out.into_iter().map(Ok)), (sub, shutdown)))
    })
    .flatten();
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
