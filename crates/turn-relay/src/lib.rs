//! rtcplane's TURN relay subsystem: a coturn replacement speaking RFC 8656 TURN over RFC 8489 STUN.
//!
//! - [`stun`]: the pure codec (bytes in, values out, no I/O, no allocation while decoding).
//! - [`start`]: binds the UDP, TCP and TLS listeners of [`Config`], then relays: long-term credentials
//!   from a chain of [`AuthProvider`]s (static users, TURN REST API secrets, database users, an HTTP
//!   callout, an embedder's own), stateless expiring nonces, allocations with permissions and channels,
//!   quotas and bandwidth limits (with per-user overrides), the peer policy; [`Observer`]s hear every
//!   allocation (the event bus, coturn's Redis statistics, an embedder's own).
//! - The HTTP surface: TURN REST API credentials (public), allocations and users (admin).
//!
//! Not here yet: RFC 6062 TCP relays.

mod allocation;
mod auth;
mod callout;
mod config;
mod coturn_redis;
mod http;
mod metrics;
pub mod observer;
mod policy;
mod server;
mod sockopt;
pub mod stun;
mod tls;
mod udp;
pub mod users;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rtcplane_event_bus::Bus;
use rtcplane_storage::Storage;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::udp::UdpSocket;

pub use allocation::{FiveTuple, Transport};
pub use auth::rest_password;
pub use config::{Config, ConfigError};
pub use observer::{
    AllocationInfo, AuthDecision, AuthProvider, AuthRequest, Grant, Observer, Traffic, UserLimits,
};
pub use policy::{IpRange, PeerPolicy};

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("turn.{0}")]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on turn.{key} = {addr}: {source}")]
    Bind {
        /// `listen_udp`, `listen_tcp` or `listen_tls`.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The running relay.
#[derive(Clone)]
pub struct Turn {
    server: Arc<server::Server>,
    rest: Arc<http::Rest>,
    users: http::UsersState,
    udp: Vec<SocketAddr>,
    tcp: Vec<SocketAddr>,
    tls: Vec<SocketAddr>,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("udp", &self.udp)
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl Turn {
    /// Bound UDP listener addresses.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    /// Bound TCP listener addresses.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// Bound TLS listener addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls
    }

    /// `GET /api/v1/turn/credentials` (TURN REST API credentials, API key), for the public listener.
    pub fn public_router(&self) -> axum::Router {
        http::public_router(self.rest.clone())
    }

    /// `/api/v1/turn/allocations` (list, show, delete) and `/api/v1/turn/users`, for the admin listener.
    pub fn admin_router(&self) -> axum::Router {
        http::admin_router(self.server.clone(), self.users.clone())
    }

    /// TURN REST API credentials for `user`, valid `ttl_secs` (username `<expiry>:<user>`, password
    /// base64(HMAC-SHA1(first static_auth_secret, username))) and the URIs the credentials endpoint
    /// announces; None without `turn.static_auth_secrets`. Other subsystems get this through the binary.
    pub fn rest_credentials(
        &self,
        user: &str,
        ttl_secs: u64,
    ) -> Option<(String, String, Vec<String>)> {
        self.rest.mint(user, ttl_secs)
    }

    /// Active allocations.
    pub fn allocations(&self) -> usize {
        self.server.allocations.len()
    }

    /// Ready while not shutting down.
    pub fn ready(&self) -> Result<(), String> {
        if self.server.shutdown.is_cancelled() {
            Err("shutting down".into())
        } else {
            Ok(())
        }
    }
}

/// Reads `turn_user_limits` into the relay; on a database error the previous overrides stay.
async fn load_overrides(server: &server::Server, storage: &Storage) {
    match tokio::time::timeout(Duration::from_secs(5), users::list_limits(storage, None)).await {
        Ok(Ok(list)) => server.set_overrides(
            list.into_iter()
                .map(|l| ((l.realm, l.name), l.limits))
                .collect(),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "turn: cannot load per-user limits; keeping the previous ones")
        }
        Err(_) => {
            tracing::warn!("turn: loading per-user limits timed out; keeping the previous ones")
        }
    }
}

/// The OpenAPI description of the TURN routes (`GET /api/v1/turn/credentials` and the admin routes).
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::TurnApi as utoipa::OpenApi>::openapi()
}

/// The relay IPv4 address: `relay_ip`, else the address the host would use for outbound traffic, else
/// loopback (with a warning: clients elsewhere could not reach it).
fn resolve_relay_ip(config: &Config) -> IpAddr {
    if let Ok(ip) = config.relay_ip.parse() {
        return ip;
    }
    if let Some(ip) = config
        .listen_udp
        .iter()
        .chain(&config.listen_tcp)
        .map(SocketAddr::ip)
        .find(|ip| ip.is_ipv4() && !ip.is_unspecified())
    {
        return ip;
    }
    // A connected UDP socket reveals the outbound interface; nothing is sent.
    let probed = StdUdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified());
    probed.unwrap_or_else(|| {
        tracing::warn!(
            "turn: no relay_ip set and no outbound interface found; relaying on 127.0.0.1"
        );
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    })
}

/// Sizes a UDP listener's buffers (`listen_udp_buffer`; 0 leaves the OS default). A cap the kernel applies
/// is logged with the sysctls that set it; the listener serves either way.
fn listener_buffers(socket: &UdpSocket, addr: SocketAddr, bytes: usize) {
    if bytes == 0 {
        return;
    }
    match sockopt::set_buffers(socket, bytes) {
        Ok(got) if got.capped(bytes) => tracing::warn!(
            %addr,
            asked = bytes,
            recv = got.recv / 2,
            send = got.send / 2,
            "turn: the kernel capped this UDP listener's buffers (listen_udp_buffer); raise \
             net.core.rmem_max and net.core.wmem_max, or bursts may be dropped"
        ),
        Ok(got) => {
            tracing::debug!(%addr, recv = got.recv / 2, send = got.send / 2, "turn: UDP listener buffers")
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "turn: cannot size this UDP listener's buffers (listen_udp_buffer)")
        }
    }
}

/// Binds TCP listeners for `key`, returning their bound addresses and the listeners.
async fn bind_streams(
    key: &'static str,
    addrs: &[SocketAddr],
) -> Result<(Vec<SocketAddr>, Vec<TcpListener>), StartError> {
    let mut bound = Vec::with_capacity(addrs.len());
    let mut listeners = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { key, addr, source })?;
        bound.push(listener.local_addr().unwrap_or(addr));
        listeners.push(listener);
    }
    Ok((bound, listeners))
}

/// What an embedding application adds to the relay.
#[derive(Default)]
pub struct Extensions {
    /// Asked before the built-in credential sources.
    pub auth_providers: Vec<Arc<dyn AuthProvider>>,
    /// Told about every allocation, after the built-in observers.
    pub observers: Vec<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("auth_providers", &self.auth_providers.len())
            .field("observers", &self.observers.len())
            .finish()
    }
}

/// Binds the listeners and starts relaying until `shutdown`. Tasks are tracked by `tasks`.
pub async fn start(
    config: Config,
    bus: &Bus,
    storage: &Storage,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<Turn, StartError> {
    start_with(config, bus, storage, shutdown, tasks, Extensions::default()).await
}

/// [`start`], with an application's own auth providers and observers.
pub async fn start_with(
    config: Config,
    bus: &Bus,
    storage: &Storage,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    extensions: Extensions,
) -> Result<Turn, StartError> {
    config.validate()?;
    let tls = if config.listen_tls.is_empty() {
        None
    } else {
        Some(tls::acceptor(&config.tls_cert, &config.tls_key)?)
    };
    metrics::describe();
    let mut last: Vec<Arc<dyn AuthProvider>> = Vec::new();
    if !config.auth_callout_url.is_empty() {
        let callout = callout::Callout::new(
            &config.auth_callout_url,
            &config.auth_callout_secret,
            config.auth_callout_timeout,
            config.auth_callout_cache,
            config.auth_callout_on_error == "stale",
        )
        .map_err(|message| ConfigError {
            key: "auth_callout_url",
            message,
        })?;
        last.push(Arc::new(callout));
    }
    let creds = auth::Credentials::new(
        &config.realm,
        &config.static_users,
        &config.static_auth_secrets,
        config.database_users.then(|| storage.clone()),
        config.nonce_lifetime,
    )
    .with_providers(extensions.auth_providers, last);
    let mut observers: Vec<Arc<dyn Observer>> = vec![Arc::new(observer::BusObserver {
        events: bus.publisher("turn"),
    })];
    if !config.redis_statsdb.is_empty() {
        let url = coturn_redis::url(&config.redis_statsdb).map_err(|message| ConfigError {
            key: "redis_statsdb",
            message,
        })?;
        let stats =
            coturn_redis::StatsDb::start(&url, shutdown.clone(), &tasks).map_err(|message| {
                ConfigError {
                    key: "redis_statsdb",
                    message,
                }
            })?;
        observers.push(Arc::new(stats));
    }
    observers.extend(extensions.observers);
    let policy = PeerPolicy::new(
        config.allow_loopback_peers,
        &config.allowed_peer_ip,
        &config.denied_peer_ip,
    )
    .map_err(|message| ConfigError {
        key: "allowed_peer_ip",
        message,
    })?;
    let relay = server::RelaySettings {
        ip4: resolve_relay_ip(&config),
        ip6: config.relay_ip6.parse().ok(),
        external4: config.external_ip.parse().ok(),
        min_port: config.min_port,
        max_port: config.max_port,
    };
    let limits = server::Limits {
        default_lifetime: config.default_lifetime,
        max_lifetime: config.max_lifetime,
        software: config.software.clone(),
        user_quota: config.user_quota as usize,
        total_quota: config.total_quota as usize,
        max_bps: config.max_bps,
        user_max_bps: config.user_max_bps,
        // A deferred answer never waits longer than the callout's own timeout (plus a margin), nor 10 s.
        auth_timeout: (config.auth_callout_timeout + Duration::from_millis(500))
            .max(Duration::from_secs(10)),
    };
    let server = Arc::new(server::Server::new(
        creds,
        policy,
        relay.clone(),
        limits,
        observers,
        tasks.clone(),
        shutdown.clone(),
    ));

    let mut udp = Vec::new();
    let mut udp_sockets = Vec::new();
    for &addr in &config.listen_udp {
        let socket = UdpSocket::bind(addr).map_err(|source| StartError::Bind {
            key: "listen_udp",
            addr,
            source,
        })?;
        let bound = socket.local_addr().unwrap_or(addr);
        listener_buffers(&socket, bound, config.listen_udp_buffer);
        udp.push(bound);
        udp_sockets.push(Arc::new(socket));
    }
    let (tcp, tcp_listeners) = bind_streams("listen_tcp", &config.listen_tcp).await?;
    let (tls_addrs, tls_listeners) = bind_streams("listen_tls", &config.listen_tls).await?;
    // The listener loops have no shutdown branch (polling one per datagram takes a lock each time):
    // one watcher aborts them all at shutdown.
    let listeners = server::AbortOnDrop(
        udp_sockets
            .into_iter()
            .map(|socket| tasks.spawn(server.clone().run_udp(socket)).abort_handle())
            .collect(),
    );
    let stop = shutdown.clone();
    tasks.spawn(async move {
        stop.cancelled().await;
        drop(listeners);
    });
    for listener in tcp_listeners {
        tasks.spawn(server.clone().run_tcp(listener, None));
    }
    if let Some(acceptor) = tls {
        for listener in tls_listeners {
            tasks.spawn(server.clone().run_tcp(listener, Some(acceptor.clone())));
        }
    }
    let sweeper = server.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0_u64;
        loop {
            tokio::select! {
                () = sweeper.shutdown.cancelled() => return,
                _ = tick.tick() => {
                    sweeper.report_traffic();
                    n += 1;
                    if n.is_multiple_of(5) {
                        sweeper.sweep_reservations();
                    }
                }
            }
        }
    });
    tracing::info!(udp = ?udp, tcp = ?tcp, tls = ?tls_addrs, relay_ip = %relay.ip4, realm = %config.realm, "turn: relaying");
    let rest = Arc::new(http::Rest::new(&config, &udp, &tcp, &tls_addrs));
    let limits_changed = Arc::new(tokio::sync::Notify::new());
    // Per-user overrides: loaded before the first client is served, then every 10 s (other nodes and the
    // CLI write the same table) and at once when this node's admin API changes them.
    load_overrides(&server, storage).await;
    {
        let (server, storage, changed) = (server.clone(), storage.clone(), limits_changed.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = server.shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(10)) => {}
                    () = changed.notified() => {}
                }
                load_overrides(&server, &storage).await;
            }
        });
    }
    let users = http::UsersState {
        storage: storage.clone(),
        realm: config.realm.clone(),
        limits_changed,
    };
    Ok(Turn {
        server,
        rest,
        users,
        udp,
        tcp,
        tls: tls_addrs,
    })
}
