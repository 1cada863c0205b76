//! rtcplane's rooms service: the Mozilla Loop rooms API (loop-server 0.22), compatible with Loop's desktop
//! client (Hawk) and its link-clicker web app (Basic with the media session token), backed by the main
//! store instead of Redis, with bus events, a sweeper for participant and room expiry, SimplePush
//! notifications to room owners, and what Loop lacked: owner kicks, server-issued media tokens, TURN
//! credentials in the join answer and a server-side reading of client status reports.
//!
//! Public routes (also under `/v0/`): `POST|DELETE /registration`, `DELETE /session`, `POST|GET|PATCH
//! /rooms`, `GET|PATCH|DELETE|POST /rooms/{token}`, and the owner's `DELETE
//! /rooms/{token}/participants/{id}` ([`api`]). Admin routes: `GET /api/v1/rooms`,
//! `GET|DELETE /api/v1/rooms/{token}`, `DELETE /api/v1/rooms/{token}/participants/{id}` ([`admin`]).
//!
//! It is not: a media server (it hands out credentials only), a Firefox Accounts/BrowserID verifier, or the
//! Loop "calls" API.

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod hawk;
pub mod ice;
pub mod media;
mod metrics;
pub mod push;
pub mod reply;
pub mod store;
pub mod values;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rtcplane_event_bus::{Bus, Publisher};
use rtcplane_storage::Storage;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use ice::{IceServer, IceServers};

use crate::auth::Authenticator;
use crate::media::Media;
use crate::push::Notifier;
use crate::store::{Participant, Room, Store};

/// The running rooms service.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms").finish_non_exhaustive()
    }
}

struct Inner {
    config: Config,
    store: Store,
    auth: Authenticator,
    notifier: Notifier,
    media: Media,
    events: Publisher,
    ice: Option<IceServers>,
    shutdown: CancellationToken,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[error("rooms: {0}")]
pub struct StartError(String);

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Starts the service: its store and the sweeper task. `ice` hands out TURN credentials for joins (the
/// binary builds it from the TURN relay's config); None leaves `iceServers` out of the join answer.
pub async fn start(
    config: Config,
    bus: &Bus,
    storage: &Storage,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    ice: Option<IceServers>,
) -> Result<Rooms, StartError> {
    config
        .validate()
        .map_err(|e| StartError(format!("rooms.{}: {}", e.key, e.message)))?;
    metrics::describe();
    let store = Store::new(storage.clone());
    let origin = if config.public_origin.is_empty() {
        None
    } else {
        hawk::Origin::parse(&config.public_origin)
    };
    let rooms = Rooms {
        inner: Arc::new(Inner {
            auth: Authenticator::new(
                store.clone(),
                &config.hawk_id_secret,
                origin,
                config.hawk_skew,
                config.hawk_session_duration,
            ),
            notifier: Notifier::new(store.clone(), tasks.clone(), config.push_timeout),
            media: Media::new(&config.media_session_id, &config.media_secret),
            events: bus.publisher("rooms"),
            store,
            ice,
            shutdown: shutdown.clone(),
            config,
        }),
    };
    let r = rooms.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(r.inner.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => r.sweep().await,
            }
        }
    });
    Ok(rooms)
}

impl Rooms {
    /// Ready while not shutting down.
    pub fn ready(&self) -> Result<(), String> {
        if self.inner.shutdown.is_cancelled() {
            Err("shutting down".into())
        } else {
            Ok(())
        }
    }

    /// The Loop routes (public listener), at `/` and `/v0/`.
    pub fn public_router(&self) -> Router {
        api::router(self.clone())
    }

    /// The rooms admin API (admin listener).
    pub fn admin_router(&self) -> Router {
        admin::router(self.clone())
    }

    fn cfg(&self) -> &Config {
        &self.inner.config
    }

    /// `roomUrl` of a token.
    pub(crate) fn room_url(&self, token: &str) -> String {
        self.cfg().web_app_url.replace("{token}", token)
    }

    /// Publishes a `rooms.*` event (never fails the request).
    pub(crate) fn publish(&self, ty: &str, subject: &str, data: serde_json::Value) {
        if let Err(e) = self
            .inner
            .events
            .publish(ty, Some(subject.to_owned()), data)
        {
            tracing::warn!(error = %e, "rooms: event not published");
        }
    }

    pub(crate) fn participant_left(&self, p: &Participant, reason: &str) {
        self.publish(
            "rooms.participant.left",
            &p.room_token,
            json!({
                "roomToken": p.room_token,
                "roomConnectionId": p.connection_id,
                "displayName": p.display_name,
                "reason": reason,
            }),
        );
    }

    pub(crate) fn room_deleted(&self, token: &str, reason: &str, gone: &[Participant]) {
        for p in gone {
            self.participant_left(p, reason);
        }
        self.publish(
            "rooms.room.deleted",
            token,
            json!({"roomToken": token, "reason": reason}),
        );
    }

    /// Touches a room (ctime = now, expiry = now + extend_ttl) and notifies its owner with the new ctime.
    pub(crate) async fn touch_and_notify(
        &self,
        room: &Room,
        now: i64,
        reason: &'static str,
    ) -> Result<(), store::Error> {
        let expires = now.saturating_add(ms(self.cfg().extend_ttl));
        if self
            .inner
            .store
            .room_touch(&room.token, now, expires)
            .await?
        {
            self.inner
                .notifier
                .notify(&room.owner_hash, now.div_euclid(1000), reason);
        }
        Ok(())
    }

    /// One sweep: expired participants (owner notified, `left` events), expired rooms, old tombstones and
    /// sessions, stale nonces.
    pub async fn sweep(&self) {
        let now = now_ms();
        let store = &self.inner.store;
        match store.sweep_participants(now, 1000).await {
            Ok(gone) => {
                for p in &gone {
                    ::metrics::counter!(metrics::EXPIRED, "kind" => "participant").increment(1);
                    self.participant_left(p, "expired");
                    if let Ok(Some(room)) = store.room(&p.room_token, now).await
                        && let Err(e) = self.touch_and_notify(&room, now, "leave").await
                    {
                        tracing::warn!(error = %e, "rooms: touching a room after an expiry");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "rooms: sweeping participants"),
        }
        match store.sweep_rooms(now, 1000).await {
            Ok(gone) => {
                for r in &gone {
                    ::metrics::counter!(metrics::EXPIRED, "kind" => "room").increment(1);
                    self.room_deleted(&r.token, "expired", &[]);
                }
            }
            Err(e) => tracing::warn!(error = %e, "rooms: sweeping rooms"),
        }
        let tomb_before = now.saturating_sub(ms(self.cfg().deleted_ttl));
        if let Err(e) = store.sweep_rest(now, tomb_before).await {
            tracing::warn!(error = %e, "rooms: sweeping tombstones and sessions");
        }
        self.inner.auth.sweep_nonces(now);
    }
}
