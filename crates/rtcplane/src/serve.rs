//! `serve` and `migrate`: connect, migrate, start, listen, wait for a signal, drain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rtcplane_event_bus::{Backend, Bus, BusConfig};
use rtcplane_storage::{ConnectOptions, NodeRecord, Redis, Storage};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BusBackend, Config};
use crate::http;
use crate::readiness::{Probe, Readiness, probe};
use crate::subsystems::{self, Context};
use crate::telemetry;

const VERSION: &str = env!("CARGO_PKG_VERSION");

async fn connect_storage(config: &Config) -> anyhow::Result<Storage> {
    let options = ConnectOptions {
        url: config.storage.url.clone(),
        max_connections: config.storage.max_connections,
        connect_timeout: config.storage.connect_timeout,
    };
    Ok(Storage::connect(&options).await?)
}

/// Connects and brings the schema up to date (for commands that use the store directly).
pub(crate) async fn connect_migrated(config: &Config) -> anyhow::Result<Storage> {
    let storage = connect_storage(config).await?;
    storage.migrate().await?;
    Ok(storage)
}

/// `rtcplane migrate`.
pub(crate) async fn migrate(config: &Config) -> anyhow::Result<()> {
    let storage = connect_storage(config).await?;
    let report = storage.migrate().await?;
    if report.applied_now.is_empty() {
        tracing::info!(target = %storage.target(), version = ?report.current, "schema already up to date");
    } else {
        tracing::info!(target = %storage.target(), applied = ?report.applied_now, version = ?report.current, "migrations applied");
    }
    storage.close().await;
    Ok(())
}

/// `rtcplane serve`.
pub(crate) async fn serve(config: Config) -> anyhow::Result<()> {
    let metrics = telemetry::metrics();
    let config = Arc::new(config);
    let node = config.node_id.clone();
    tracing::info!(node = %node, version = VERSION, "rtcplane starting");

    let storage = connect_storage(&config).await?;
    if config.storage.migrate_on_start {
        let report = storage.migrate().await?;
        if !report.applied_now.is_empty() {
            tracing::info!(applied = ?report.applied_now, "migrations applied");
        }
    } else {
        storage.ensure_current().await?;
    }

    let redis = if config.redis.url.is_empty() {
        None
    } else {
        Some(Redis::connect_lazy(
            &config.redis.url,
            config.redis.timeout,
        )?)
    };

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let bus = Bus::start(
        BusConfig {
            node: node.clone(),
            capacity: config.bus.capacity,
            backend: match config.bus.backend {
                BusBackend::Memory => Backend::Memory,
                BusBackend::Redis => Backend::Redis {
                    url: config.redis.url.clone(),
                    channel: config.bus.channel.clone(),
                    timeout: config.redis.timeout,
                    ping_interval: config.bus.ping_interval,
                },
            },
        },
        shutdown.child_token(),
    )?;

    // The sinks stop after the subsystems, so the events published while those drain are still stored.
    let sinks_shutdown = CancellationToken::new();
    let sinks_tasks = TaskTracker::new();
    let sinks = rtcplane_event_bus::sinks::start(
        &config.events,
        &config.webhooks,
        rtcplane_event_bus::sinks::SinksContext {
            bus: &bus,
            storage: &storage,
            redis: redis.as_ref(),
            shutdown: sinks_shutdown.clone(),
            tasks: sinks_tasks.clone(),
        },
    )
    .await
    .context("cannot start the event sinks")?;

    let ctx = Context {
        bus: bus.clone(),
        storage: storage.clone(),
        redis: redis.clone(),
        shutdown: shutdown.child_token(),
        tasks: tasks.clone(),
    };
    let started = subsystems::start_enabled(&config, &ctx).await?;
    let readiness = Readiness::new(checks(&storage, redis.as_ref(), &bus, &started));

    // Bind both listeners before announcing anything, so a taken port fails start-up cleanly.
    let admin_addr = config.http.admin_listen;
    let public_addr = config.http.public_listen;
    let admin_listener = TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("cannot listen on http.admin_listen = {admin_addr}"))?;
    let public_listener = TcpListener::bind(public_addr)
        .await
        .with_context(|| format!("cannot listen on http.public_listen = {public_addr}"))?;
    let admin_bound = admin_listener.local_addr()?;
    let public_bound = public_listener.local_addr()?;

    let admin_app = http::admin::router(
        http::admin::AdminState {
            config: config.clone(),
            storage: storage.clone(),
            bus: bus.clone(),
            readiness: readiness.clone(),
            metrics,
            shutdown: shutdown.clone(),
            sinks: sinks.clone(),
        },
        &started,
    );
    let public_app = http::public::router(&started, &config.http);
    let admin_server = tokio::spawn(
        axum::serve(admin_listener, admin_app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    let public_server = tokio::spawn(
        // Hook handlers identify a media server by the address it calls from.
        axum::serve(
            public_listener,
            public_app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future(),
    );

    metrics::gauge!(telemetry::BUILD_INFO, "version" => VERSION, "storage" => storage.backend().as_str(), "bus" => bus.health().backend)
        .set(1.0);
    let record = NodeRecord {
        node_id: node.clone(),
        version: VERSION.into(),
        admin_listen: admin_bound.to_string(),
        started_at: chrono::Utc::now().timestamp_millis(),
        last_seen: 0,
    };
    tasks.spawn(heartbeat(
        storage.clone(),
        record.clone(),
        config.storage.heartbeat_interval,
        shutdown.clone(),
    ));
    let cluster = bus.publisher("cluster");
    let _ = cluster.publish(
        "cluster.node.started",
        Some(node.clone()),
        json!({"node": node, "version": VERSION, "admin_listen": admin_bound.to_string(),
               "public_listen": public_bound.to_string(), "subsystems": started.iter().map(|s| s.name).collect::<Vec<_>>()}),
    );
    tracing::info!(admin = %admin_bound, public = %public_bound, storage = %storage.target(), bus = bus.health().backend, "rtcplane is serving");

    let signal = wait_for_signal().await;
    tracing::info!(signal, grace = ?config.shutdown_grace, "shutting down");
    readiness.start_draining();
    let _ = cluster.publish(
        "cluster.node.stopped",
        Some(node.clone()),
        json!({"node": node, "signal": signal}),
    );
    // Let the bus hand the last event to Redis before its tasks stop.
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.cancel();
    tasks.close();
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        let _ = admin_server.await;
        let _ = public_server.await;
        tasks.wait().await;
        sinks_shutdown.cancel();
        sinks_tasks.close();
        sinks_tasks.wait().await;
    })
    .await;
    if let Ok(Err(e)) | Err(e) =
        tokio::time::timeout(Duration::from_secs(2), storage.nodes().remove(&node))
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .map(|r| r.map_err(anyhow::Error::from))
    {
        tracing::warn!(error = %e, "could not remove this node from the node registry");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), storage.close()).await;
    match drained {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Err(_) => anyhow::bail!(
            "shutdown did not finish within shutdown_grace = {:?}",
            config.shutdown_grace
        ),
    }
}

fn checks(
    storage: &Storage,
    redis: Option<&Redis>,
    bus: &Bus,
    started: &[subsystems::Started],
) -> Vec<(String, Probe)> {
    let mut checks: Vec<(String, Probe)> = Vec::new();
    let s = storage.clone();
    checks.push((
        "storage".into(),
        probe(move || {
            let s = s.clone();
            async move {
                s.ping(Duration::from_secs(1))
                    .await
                    .map_err(|e| e.to_string())
            }
        }),
    ));
    if let Some(r) = redis {
        let r = r.clone();
        checks.push((
            "redis".into(),
            probe(move || {
                let r = r.clone();
                async move { r.ping().await.map_err(|e| e.to_string()) }
            }),
        ));
    }
    if bus.health().backend != "memory" {
        let b = bus.clone();
        checks.push((
            "bus".into(),
            probe(move || {
                let h = b.health();
                async move {
                    if h.connected {
                        Ok(())
                    } else {
                        Err(h.error.unwrap_or_else(|| "Redis link down".into()))
                    }
                }
            }),
        ));
    }
    for s in started {
        checks.push((s.name.to_owned(), s.ready.clone()));
    }
    checks
}

/// Records this node in the registry every `every`, and the pool's state in metrics.
async fn heartbeat(
    storage: Storage,
    mut record: NodeRecord,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_up = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        record.last_seen = chrono::Utc::now().timestamp_millis();
        let ok = match tokio::time::timeout(every, storage.nodes().heartbeat(&record)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                if was_up {
                    tracing::warn!(error = %e, "storage heartbeat failed");
                }
                false
            }
            Err(_) => {
                if was_up {
                    tracing::warn!("storage heartbeat timed out");
                }
                false
            }
        };
        if ok && !was_up {
            tracing::info!("storage is reachable again");
        }
        was_up = ok;
        let (size, idle) = storage.pool_stats();
        metrics::gauge!(telemetry::STORAGE_UP).set(if ok { 1.0 } else { 0.0 });
        metrics::gauge!(telemetry::STORAGE_CONNECTIONS, "state" => "idle").set(f64::from(idle));
        metrics::gauge!(telemetry::STORAGE_CONNECTIONS, "state" => "busy")
            .set(f64::from(size.saturating_sub(idle)));
    }
}

/// Resolves on SIGINT or SIGTERM, naming which.
async fn wait_for_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                () = ctrl_c => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                ctrl_c.await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        "SIGINT"
    }
}
