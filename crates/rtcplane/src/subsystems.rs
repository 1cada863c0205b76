//! The subsystem contract (DESIGN.md §Subsystem contract), owned by the binary.
//!
//! Each subsystem crate exposes a `Config` (serde, `deny_unknown_fields`, defaults, `enabled`), a start
//! function taking that config, the bus, the storage and a shutdown token, and, where it serves HTTP, axum
//! routers. The binary adapts each into a [`Started`]: routers to mount and a readiness probe. Only enabled
//! subsystems are started; a disabled one opens no port and spawns no task, because its start function is
//! never called.
//!
//! Landed: the TURN relay (`turn`), the SIP registration agent (`sip_agent`), the hook gateway (`hooks`) and the
//! rooms service (`rooms`): every subsystem of DESIGN.md.

use rtcplane_event_bus::Bus;
use rtcplane_storage::{Redis, Storage};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::readiness::Probe;

/// What the binary hands a subsystem at start.
#[derive(Clone, Debug)]
pub(crate) struct Context {
    pub(crate) bus: Bus,
    pub(crate) storage: Storage,
    #[allow(dead_code)] // for subsystems that keep cluster-wide state in Redis
    pub(crate) redis: Option<Redis>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// A running subsystem, as the binary sees it.
pub(crate) struct Started {
    /// Its name, as in its config section (`turn`, `sip_agent`, …); also its readiness check's name.
    pub(crate) name: &'static str,
    /// Routes for the public listener.
    pub(crate) public: Option<axum::Router>,
    /// Routes for the admin listener (under `/api/v1/<name>/…` or `/rpc`).
    pub(crate) admin: Option<axum::Router>,
    /// Its readiness.
    pub(crate) ready: Probe,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Starts every enabled subsystem, in a fixed order, under `ctx.shutdown`.
pub(crate) async fn start_enabled(config: &Config, ctx: &Context) -> anyhow::Result<Vec<Started>> {
    let mut started = Vec::new();
    let mut ice: Option<rtcplane_room_state::IceServers> = None;
    if config.turn.enabled {
        let turn = rtcplane_turn_relay::start(
            config.turn.clone(),
            &ctx.bus,
            &ctx.storage,
            ctx.shutdown.clone(),
            ctx.tasks.clone(),
        )
        .await?;
        // Rooms hand out TURN REST credentials in their join answer (the crates stay independent).
        if !config.turn.static_auth_secrets.is_empty() {
            let t = turn.clone();
            ice = Some(std::sync::Arc::new(
                move |user: &str, ttl: std::time::Duration| {
                    t.rest_credentials(user, ttl.as_secs().max(1))
                        .filter(|(_, _, uris)| !uris.is_empty())
                        .map(
                            |(username, credential, urls)| rtcplane_room_state::IceServer {
                                urls,
                                username,
                                credential,
                            },
                        )
                        .into_iter()
                        .collect()
                },
            ));
        }
        started.push(Started {
            name: "turn",
            public: Some(turn.public_router()),
            admin: Some(turn.admin_router()),
            ready: crate::readiness::probe(move || {
                let r = turn.ready();
                async move { r }
            }),
        });
    }
    if config.hooks.enabled {
        let gateway = rtcplane_hook_gateway::start(
            config.hooks.clone(),
            &ctx.bus,
            &ctx.storage,
            ctx.shutdown.clone(),
            ctx.tasks.clone(),
        )
        .await?;
        let ready = gateway.clone();
        started.push(Started {
            name: "hooks",
            public: Some(gateway.public_router()),
            admin: Some(gateway.admin_router()),
            ready: crate::readiness::probe(move || {
                let r = ready.ready();
                async move { r }
            }),
        });
    }
    if config.sip_agent.enabled {
        let agent = rtcplane_sip_registrar_agent::start(
            config.sip_agent.clone(),
            &ctx.bus,
            &ctx.storage,
            ctx.shutdown.clone(),
            ctx.tasks.clone(),
        )
        .await?;
        let ready = agent.clone();
        started.push(Started {
            name: "sip_agent",
            public: None,
            admin: Some(agent.admin_router()),
            ready: crate::readiness::probe(move || {
                let r = ready.ready();
                async move { r }
            }),
        });
    }
    if config.rooms.enabled {
        let rooms = rtcplane_room_state::start(
            config.rooms.clone(),
            &ctx.bus,
            &ctx.storage,
            ctx.shutdown.clone(),
            ctx.tasks.clone(),
            ice,
        )
        .await?;
        let ready = rooms.clone();
        started.push(Started {
            name: "rooms",
            public: Some(rooms.public_router()),
            admin: Some(rooms.admin_router()),
            ready: crate::readiness::probe(move || {
                let r = ready.ready();
                async move { r }
            }),
        });
    }
    // Config validation has refused `enabled = true` for every subsystem not in this build.
    Ok(started)
}
