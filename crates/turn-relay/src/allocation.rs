//! Allocations: the 5-tuple table, relayed sockets, permissions, channels, counters, lifetimes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::stun::TransactionId;

/// RFC 8656 §9: permissions last 300 s.
pub(crate) const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: channel bindings last 600 s.
pub(crate) const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

/// Client-side transport of a 5-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// The client side of an allocation: (client address, server address, transport).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's address as seen by the server.
    pub client: SocketAddr,
    /// The listener's address.
    pub server: SocketAddr,
    /// The transport.
    pub transport: Transport,
}

/// Writes towards the client.
#[derive(Clone)]
pub(crate) enum ClientSink {
    /// A datagram on the listener socket.
    Udp {
        socket: Arc<UdpSocket>,
        client: SocketAddr,
    },
    /// A framed message on the client's stream connection.
    Stream(Arc<tokio::sync::Mutex<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>>),
}

impl ClientSink {
    pub(crate) async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Udp { socket, client } => socket.send_to(bytes, client).await.map(|_| ()),
            Self::Stream(w) => {
                let mut w = w.lock().await;
                w.write_all(bytes).await?;
                w.flush().await
            }
        }
    }

    pub(crate) fn is_stream(&self) -> bool {
        matches!(self, Self::Stream(_))
    }
}

/// Traffic counters in both directions (for events and, later, statistics).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Client → peer.
    pub(crate) sent_packets: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    /// Peer → client.
    pub(crate) received_packets: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
}

impl Counters {
    pub(crate) fn sent(&self, bytes: usize) {
        self.sent_packets.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.received_packets.fetch_add(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "sent_packets": self.sent_packets.load(Ordering::Relaxed),
            "sent_bytes": self.sent_bytes.load(Ordering::Relaxed),
            "received_packets": self.received_packets.load(Ordering::Relaxed),
            "received_bytes": self.received_bytes.load(Ordering::Relaxed),
        })
    }
}

/// Permissions and channel bindings of one allocation (its own small lock, never a global one).
#[derive(Debug, Default)]
pub(crate) struct Peers {
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    by_peer: HashMap<SocketAddr, u16>,
}

/// Why a ChannelBind cannot be done.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BindConflict {
    /// The channel is bound to another peer, or the peer to another channel.
    Conflict,
}

impl Peers {
    pub(crate) fn permit(&mut self, ip: IpAddr, now: Instant) {
        self.permissions.insert(ip, now + PERMISSION_LIFETIME);
    }

    pub(crate) fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|&until| until > now)
    }

    pub(crate) fn bind(
        &mut self,
        channel: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), BindConflict> {
        let live = |until: Instant| until > now;
        if let Some(&(bound, until)) = self.channels.get(&channel)
            && bound != peer
            && live(until)
        {
            return Err(BindConflict::Conflict);
        }
        if let Some(&other) = self.by_peer.get(&peer)
            && other != channel
            && self.channels.get(&other).is_some_and(|&(_, u)| live(u))
        {
            return Err(BindConflict::Conflict);
        }
        if let Some((old_peer, _)) = self
            .channels
            .insert(channel, (peer, now + CHANNEL_LIFETIME))
            && old_peer != peer
        {
            self.by_peer.remove(&old_peer);
        }
        self.by_peer.insert(peer, channel);
        self.permit(peer.ip(), now);
        Ok(())
    }

    pub(crate) fn peer_of(&self, channel: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&channel)
            .filter(|(_, until)| *until > now)
            .map(|(p, _)| *p)
    }

    pub(crate) fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let ch = *self.by_peer.get(&peer)?;
        self.channels
            .get(&ch)
            .filter(|(_, until)| *until > now)
            .map(|_| ch)
    }
}

/// One relayed transport address of an allocation.
pub(crate) struct Relay {
    pub(crate) socket: Arc<UdpSocket>,
    /// What the client is told (external address if configured).
    pub(crate) announced: SocketAddr,
}

/// An allocation.
pub(crate) struct Allocation {
    pub(crate) id: u64,
    pub(crate) tuple: FiveTuple,
    pub(crate) username: String,
    pub(crate) realm: String,
    /// One relay (or two, IPv4 and IPv6, for a dual allocation).
    pub(crate) relays: Vec<Relay>,
    expires_at: Mutex<Instant>,
    pub(crate) peers: Mutex<Peers>,
    pub(crate) counters: Counters,
    pub(crate) sink: ClientSink,
    pub(crate) cancel: CancellationToken,
    /// The Allocate transaction, so a retransmission gets the same answer (RFC 8656 §7.2).
    pub(crate) allocate_tid: TransactionId,
    pub(crate) created: Instant,
}

impl Allocation {
    #[allow(clippy::too_many_arguments)] // one constructor, called once, with named fields at the call site
    pub(crate) fn new(
        id: u64,
        tuple: FiveTuple,
        username: String,
        realm: String,
        relays: Vec<Relay>,
        lifetime: Duration,
        sink: ClientSink,
        allocate_tid: TransactionId,
    ) -> Self {
        let now = Instant::now();
        Self {
            id,
            tuple,
            username,
            realm,
            relays,
            expires_at: Mutex::new(now + lifetime),
            peers: Mutex::new(Peers::default()),
            counters: Counters::default(),
            sink,
            cancel: CancellationToken::new(),
            allocate_tid,
            created: now,
        }
    }

    pub(crate) fn expires_at(&self) -> Instant {
        self.expires_at
            .lock()
            .map_or_else(|e| *e.into_inner(), |g| *g)
    }

    pub(crate) fn refresh(&self, lifetime: Duration) {
        if let Ok(mut g) = self.expires_at.lock() {
            *g = Instant::now() + lifetime;
        }
    }

    pub(crate) fn with_peers<T>(&self, f: impl FnOnce(&mut Peers) -> T) -> T {
        match self.peers.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The relay for a peer's address family.
    pub(crate) fn relay_for(&self, peer: SocketAddr) -> Option<&Relay> {
        self.relays
            .iter()
            .find(|r| r.announced.is_ipv4() == peer.is_ipv4())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[tokio::test(start_paused = true)]
    async fn permissions_and_channels_expire() {
        let mut p = Peers::default();
        let now = Instant::now();
        let peer = addr("192.0.2.1:5000");
        assert!(!p.permitted(peer.ip(), now));
        p.bind(0x4000, peer, now).expect("bind");
        assert!(
            p.permitted(peer.ip(), now),
            "a channel installs a permission"
        );
        assert_eq!(p.peer_of(0x4000, now), Some(peer));
        assert_eq!(p.channel_of(peer, now), Some(0x4000));
        // Rebinding the same pair refreshes; other pairs conflict while alive.
        p.bind(0x4000, peer, now).expect("refresh");
        assert_eq!(p.bind(0x4001, peer, now), Err(BindConflict::Conflict));
        assert_eq!(
            p.bind(0x4000, addr("192.0.2.2:5000"), now),
            Err(BindConflict::Conflict)
        );
        let later = now + PERMISSION_LIFETIME + Duration::from_secs(1);
        assert!(!p.permitted(peer.ip(), later));
        assert_eq!(
            p.peer_of(0x4000, later),
            Some(peer),
            "channels outlive permissions"
        );
        let much_later = now + CHANNEL_LIFETIME + Duration::from_secs(1);
        assert_eq!(p.peer_of(0x4000, much_later), None);
        p.bind(0x4001, peer, much_later)
            .expect("expired channel frees the peer");
    }
}
