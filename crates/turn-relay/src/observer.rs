//! How an application takes part in allocation management — libsourcey's `ServerObserver` (seed 003) in
//! Rust: an [`Observer`] hears allocations being created, refreshed, reporting traffic and removed, and an
//! [`AuthProvider`] answers who may allocate, at once or later ([`AuthDecision::Deferred`]), without holding up
//! any other client.
//!
//! Built-in observers: the event bus (`turn.allocation.*`, `turn.traffic`) and coturn's Redis statistics
//! (`crate::coturn_redis`). Built-in providers (`crate::auth`): static users, TURN REST API secrets, database
//! users, and an HTTP callout (`crate::callout`). Embedders add their own with [`crate::start_with`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use rtcplane_event_bus::Publisher;
use serde_json::json;

use crate::allocation::Transport;
use crate::stun::{LongTermKey, PasswordAlgorithm};
pub use crate::users::UserLimits;

/// An allocation, as observers see it.
#[derive(Clone, Debug)]
pub struct AllocationInfo {
    /// The id, 18 decimal digits (as in coturn's Redis keys and in `turn.allocation.*` events).
    pub id: u64,
    /// The authenticated user name (a TURN REST username keeps its `<expiry>:` prefix).
    pub username: String,
    /// The realm.
    pub realm: String,
    /// The client's transport.
    pub transport: Transport,
    /// The client's address as the server sees it.
    pub client: SocketAddr,
    /// The server address the client talks to.
    pub server: SocketAddr,
    /// Relayed addresses announced to the client (one, or IPv4 and IPv6).
    pub relayed: Vec<SocketAddr>,
    /// For TLS clients, the protocol version and cipher suite (OpenSSL's names, as coturn reports them).
    pub tls: Option<(String, String)>,
    /// Time since it was created, when the callback is made.
    pub age: Duration,
}

/// Traffic of one allocation in coturn's terms: `client_*` counts every message on the client's 5-tuple
/// (requests, responses, ChannelData and indications, headers included), `peer_*` the application bytes
/// exchanged with peers. `rx` is towards the server, `tx` away from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages received from the client.
    pub client_rx_packets: u64,
    /// Bytes received from the client.
    pub client_rx_bytes: u64,
    /// Messages sent to the client.
    pub client_tx_packets: u64,
    /// Bytes sent to the client.
    pub client_tx_bytes: u64,
    /// Datagrams received from peers.
    pub peer_rx_packets: u64,
    /// Bytes received from peers.
    pub peer_rx_bytes: u64,
    /// Datagrams sent to peers.
    pub peer_tx_packets: u64,
    /// Bytes sent to peers.
    pub peer_tx_bytes: u64,
}

impl Traffic {
    /// Field-wise `self - earlier` (counters only grow).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            client_rx_packets: self
                .client_rx_packets
                .saturating_sub(earlier.client_rx_packets),
            client_rx_bytes: self.client_rx_bytes.saturating_sub(earlier.client_rx_bytes),
            client_tx_packets: self
                .client_tx_packets
                .saturating_sub(earlier.client_tx_packets),
            client_tx_bytes: self.client_tx_bytes.saturating_sub(earlier.client_tx_bytes),
            peer_rx_packets: self.peer_rx_packets.saturating_sub(earlier.peer_rx_packets),
            peer_rx_bytes: self.peer_rx_bytes.saturating_sub(earlier.peer_rx_bytes),
            peer_tx_packets: self.peer_tx_packets.saturating_sub(earlier.peer_tx_packets),
            peer_tx_bytes: self.peer_tx_bytes.saturating_sub(earlier.peer_tx_bytes),
        }
    }

    /// Packets in all four directions (coturn reports traffic every 4096 of them).
    pub fn packets(&self) -> u64 {
        self.client_rx_packets
            + self.client_tx_packets
            + self.peer_rx_packets
            + self.peer_tx_packets
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "client": {"rcvp": self.client_rx_packets, "rcvb": self.client_rx_bytes,
                       "sentp": self.client_tx_packets, "sentb": self.client_tx_bytes},
            "peer": {"rcvp": self.peer_rx_packets, "rcvb": self.peer_rx_bytes,
                     "sentp": self.peer_tx_packets, "sentb": self.peer_tx_bytes},
        })
    }
}

/// Hears what happens to allocations. Called on the relay's tasks: return quickly (queue work elsewhere).
pub trait Observer: Send + Sync + 'static {
    /// After an allocation was created and before its success response is sent.
    fn allocation_created(&self, _alloc: &AllocationInfo, _lifetime: Duration) {}
    /// After a Refresh; `lifetime` 0 means the client is deleting it ([`Self::allocation_removed`] follows).
    fn allocation_refreshed(&self, _alloc: &AllocationInfo, _lifetime: Duration) {}
    /// Traffic since the previous report, every 4096 packets or so of a busy allocation.
    fn traffic(&self, _alloc: &AllocationInfo, _delta: &Traffic) {}
    /// Just before an allocation is destroyed (expired, refreshed to 0, its connection closed, ended by the
    /// admin API, server stopping): the traffic not yet reported, and the totals.
    fn allocation_removed(
        &self,
        _alloc: &AllocationInfo,
        _reason: &str,
        _last: &Traffic,
        _totals: &Traffic,
    ) {
    }
}

/// Who is asking, for an [`AuthProvider`].
#[derive(Clone, Copy, Debug)]
pub struct AuthRequest<'a> {
    /// USERNAME of the request.
    pub username: &'a str,
    /// REALM of the request (already checked to be ours).
    pub realm: &'a str,
    /// The key algorithm the client uses (MD5 unless it chose SHA-256).
    pub algorithm: PasswordAlgorithm,
    /// `ALLOCATE`, `REFRESH`, `CREATE_PERMISSION` or `CHANNEL_BIND`.
    pub method: &'static str,
    /// The client's address.
    pub client: SocketAddr,
    /// The client's transport.
    pub transport: Transport,
}

/// What a provider knows about a user.
#[derive(Clone, Debug, Default)]
pub struct Grant {
    /// Candidate long-term keys; the server checks MESSAGE-INTEGRITY with each (several while secrets rotate).
    pub keys: Vec<LongTermKey>,
    /// Limits for this user, if the provider decides them.
    pub limits: UserLimits,
}

/// A provider's answer (libsourcey's `AuthenticationState`).
pub enum AuthDecision {
    /// Not a user this provider knows: ask the next one.
    Unknown,
    /// Known: the request is authentic if its integrity verifies with one of the keys.
    Authorized(Grant),
    /// Refused: 401.
    NotAuthorized,
    /// Refused for quota: 486 Allocation Quota Reached.
    QuotaReached,
    /// The provider cannot answer now (libsourcey's `Authenticating`); the request waits for the future
    /// while every other client is served. A future that errs should answer [`AuthDecision::Unavailable`].
    Deferred(Pin<Box<dyn Future<Output = AuthDecision> + Send>>),
    /// The provider failed (its backend is down or too slow): 500 Server Error, try again later.
    Unavailable,
}

impl std::fmt::Debug for AuthDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown => f.write_str("Unknown"),
            Self::Authorized(g) => f
                .debug_struct("Authorized")
                .field("keys", &g.keys.len())
                .field("limits", &g.limits)
                .finish(),
            Self::NotAuthorized => f.write_str("NotAuthorized"),
            Self::QuotaReached => f.write_str("QuotaReached"),
            Self::Deferred(_) => f.write_str("Deferred"),
            Self::Unavailable => f.write_str("Unavailable"),
        }
    }
}

/// Decides who may use the relay. Providers are asked in order until one knows the user.
pub trait AuthProvider: Send + Sync + 'static {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;
    /// Answers for one request; do not block: return [`AuthDecision::Deferred`] for slow work.
    fn authenticate(&self, request: &AuthRequest<'_>) -> AuthDecision;
}

/// Publishes `turn.allocation.created|refreshed|deleted` and `turn.traffic` on the event bus.
pub(crate) struct BusObserver {
    pub(crate) events: Publisher,
}

impl Observer for BusObserver {
    fn allocation_created(&self, a: &AllocationInfo, lifetime: Duration) {
        let relayed: Vec<String> = a.relayed.iter().map(ToString::to_string).collect();
        let _ = self.events.publish(
            "turn.allocation.created",
            Some(a.id.to_string()),
            json!({
                "id": a.id.to_string(), "user": a.username, "realm": a.realm,
                "transport": a.transport.as_str(),
                "client": a.client.to_string(), "server": a.server.to_string(),
                "relayed": relayed, "lifetime": lifetime.as_secs(),
            }),
        );
    }

    fn allocation_refreshed(&self, a: &AllocationInfo, lifetime: Duration) {
        if lifetime.is_zero() {
            return; // `deleted` follows, with reason "refresh"
        }
        let _ = self.events.publish(
            "turn.allocation.refreshed",
            Some(a.id.to_string()),
            json!({"id": a.id.to_string(), "user": a.username, "realm": a.realm, "lifetime": lifetime.as_secs()}),
        );
    }

    fn traffic(&self, a: &AllocationInfo, delta: &Traffic) {
        let mut data = delta.json();
        if let Some(obj) = data.as_object_mut() {
            obj.insert("id".into(), a.id.to_string().into());
            obj.insert("user".into(), a.username.clone().into());
            obj.insert("realm".into(), a.realm.clone().into());
        }
        let _ = self
            .events
            .publish("turn.traffic", Some(a.id.to_string()), data);
    }

    fn allocation_removed(
        &self,
        a: &AllocationInfo,
        reason: &str,
        _last: &Traffic,
        totals: &Traffic,
    ) {
        let _ = self.events.publish(
            "turn.allocation.deleted",
            Some(a.id.to_string()),
            json!({
                "id": a.id.to_string(), "user": a.username, "realm": a.realm, "reason": reason,
                "client": a.client.to_string(),
                "duration_secs": a.age.as_secs(),
                "totals": {
                    "sent_packets": totals.peer_tx_packets, "sent_bytes": totals.peer_tx_bytes,
                    "received_packets": totals.peer_rx_packets, "received_bytes": totals.peer_rx_bytes,
                    "client": {"rcvp": totals.client_rx_packets, "rcvb": totals.client_rx_bytes,
                               "sentp": totals.client_tx_packets, "sentb": totals.client_tx_bytes},
                },
            }),
        );
    }
}
