//! Allocations: the 5-tuple table, relayed sockets, permissions, channels, counters, lifetimes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::observer::{AllocationInfo, Traffic};
use crate::stun::TransactionId;
use crate::udp::UdpSocket;

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
            // Tried at once; a full send buffer is waited out for a moment (`udp::SEND_WAIT`).
            Self::Udp { socket, client } => socket.send_to(bytes, *client).await.map(|_| ()),
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

/// Traffic counters: application bytes to and from peers (the events' totals), and everything on the
/// client's 5-tuple (coturn's `traffic`), plus the snapshot last reported to observers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Client → peer.
    pub(crate) sent_packets: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    /// Peer → client.
    pub(crate) received_packets: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
    /// Every message from the client (requests, ChannelData, indications), whole.
    client_rx_packets: AtomicU64,
    client_rx_bytes: AtomicU64,
    /// Every message to the client (responses, ChannelData, indications), whole.
    client_tx_packets: AtomicU64,
    client_tx_bytes: AtomicU64,
    /// Packets dropped for exceeding a bandwidth limit (both directions).
    pub(crate) limited_packets: AtomicU64,
    pub(crate) limited_bytes: AtomicU64,
    reported: Mutex<Traffic>,
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

    pub(crate) fn client_rx(&self, bytes: usize) {
        self.client_rx_packets.fetch_add(1, Ordering::Relaxed);
        self.client_rx_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn client_tx(&self, bytes: usize) {
        self.client_tx_packets.fetch_add(1, Ordering::Relaxed);
        self.client_tx_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn limited(&self, bytes: usize) {
        self.limited_packets.fetch_add(1, Ordering::Relaxed);
        self.limited_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Everything counted so far.
    pub(crate) fn traffic(&self) -> Traffic {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Traffic {
            client_rx_packets: l(&self.client_rx_packets),
            client_rx_bytes: l(&self.client_rx_bytes),
            client_tx_packets: l(&self.client_tx_packets),
            client_tx_bytes: l(&self.client_tx_bytes),
            peer_rx_packets: l(&self.received_packets),
            peer_rx_bytes: l(&self.received_bytes),
            peer_tx_packets: l(&self.sent_packets),
            peer_tx_bytes: l(&self.sent_bytes),
        }
    }

    /// The traffic since the last report and the totals, marking them reported; None if fewer than
    /// `at_least` packets moved since (coturn reports every 4096).
    pub(crate) fn report(&self, at_least: u64) -> Option<(Traffic, Traffic)> {
        let now = self.traffic();
        let mut last = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        let delta = now.since(&last);
        if at_least > 0 && delta.packets() < at_least {
            return None;
        }
        *last = now;
        Some((delta, now))
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        let t = self.traffic();
        serde_json::json!({
            "sent_packets": t.peer_tx_packets,
            "sent_bytes": t.peer_tx_bytes,
            "received_packets": t.peer_rx_packets,
            "received_bytes": t.peer_rx_bytes,
            "client": {"rcvp": t.client_rx_packets, "rcvb": t.client_rx_bytes,
                       "sentp": t.client_tx_packets, "sentb": t.client_tx_bytes},
            "bandwidth_dropped_packets": self.limited_packets.load(Ordering::Relaxed),
            "bandwidth_dropped_bytes": self.limited_bytes.load(Ordering::Relaxed),
        })
    }
}

/// A token bucket of bytes per second; holds one second's worth.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    pub(crate) fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec as f64;
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes `n` bytes if there are enough tokens.
    pub(crate) fn take(&self, n: usize, now: Instant) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *st;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.rate);
        *last = now;
        if *tokens >= n as f64 {
            *tokens -= n as f64;
            true
        } else {
            false
        }
    }

    pub(crate) fn refund(&self, n: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = (st.0 + n as f64).min(self.rate);
    }
}

/// Which way a packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    ToPeer,
    ToClient,
}

/// One bucket per direction (coturn's max-bps treats input and output separately).
#[derive(Debug)]
pub(crate) struct Buckets {
    to_peer: Bucket,
    to_client: Bucket,
}

impl Buckets {
    /// None when `bytes_per_sec` is 0 (unlimited).
    pub(crate) fn new(bytes_per_sec: u64) -> Option<Self> {
        (bytes_per_sec > 0).then(|| Self {
            to_peer: Bucket::new(bytes_per_sec),
            to_client: Bucket::new(bytes_per_sec),
        })
    }

    fn get(&self, d: Direction) -> &Bucket {
        match d {
            Direction::ToPeer => &self.to_peer,
            Direction::ToClient => &self.to_client,
        }
    }
}

/// What the allocations of one user share: their count (user quota) and the user-wide bandwidth.
#[derive(Debug)]
pub(crate) struct UserEntry {
    pub(crate) allocations: std::sync::atomic::AtomicUsize,
    pub(crate) buckets: Option<Buckets>,
}

/// Permissions and channel bindings of one allocation (its own small lock, never a global one).
#[derive(Debug, Default)]
pub(crate) struct Peers {
    permissions: FastMap<IpAddr, Instant>,
    channels: FastMap<u16, (SocketAddr, Instant)>,
    by_peer: FastMap<SocketAddr, u16>,
}

/// The data path's maps hash with foldhash (seeded per process), not SipHash: a lookup by address is on
/// every relayed packet, and SipHash of a 5-tuple cost more than the rest of the lookup (callgrind).
pub(crate) type FastHasher = foldhash::quality::RandomState;
pub(crate) type FastMap<K, V> = HashMap<K, V, FastHasher>;

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
    /// Batched receives (`recvmmsg`) on `socket`; None if it could not be set up (read one at a time).
    pub(crate) recv: Option<quinn_udp::UdpSocketState>,
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
    /// The name quotas and user limits count under (a REST username without its expiry).
    pub(crate) account: String,
    /// Shared with the user's other allocations.
    pub(crate) user: Arc<UserEntry>,
    /// This allocation's own bandwidth limit.
    pub(crate) bandwidth: Option<Buckets>,
    /// TLS version and cipher of the client connection (OpenSSL names).
    pub(crate) tls: Option<Arc<(String, String)>>,
}

/// Who the allocation is for and what it may use (the parts of [`Allocation::new`] decided at Allocate).
pub(crate) struct Owner {
    pub(crate) username: String,
    pub(crate) realm: String,
    pub(crate) account: String,
    pub(crate) user: Arc<UserEntry>,
    pub(crate) bandwidth: Option<Buckets>,
    pub(crate) tls: Option<Arc<(String, String)>>,
}

impl Allocation {
    pub(crate) fn new(
        id: u64,
        tuple: FiveTuple,
        owner: Owner,
        relays: Vec<Relay>,
        lifetime: Duration,
        sink: ClientSink,
        allocate_tid: TransactionId,
    ) -> Self {
        let now = Instant::now();
        Self {
            id,
            tuple,
            username: owner.username,
            realm: owner.realm,
            relays,
            expires_at: Mutex::new(now + lifetime),
            peers: Mutex::new(Peers::default()),
            counters: Counters::default(),
            sink,
            cancel: CancellationToken::new(),
            allocate_tid,
            created: now,
            account: owner.account,
            user: owner.user,
            bandwidth: owner.bandwidth,
            tls: owner.tls,
        }
    }

    /// May `n` bytes go `dir` within this allocation's and its user's bandwidth? Counted when not.
    pub(crate) fn admit(&self, dir: Direction, n: usize) -> bool {
        if self.bandwidth.is_none() && self.user.buckets.is_none() {
            return true;
        }
        let now = Instant::now();
        let own = self.bandwidth.as_ref().map(|b| b.get(dir));
        if let Some(b) = own
            && !b.take(n, now)
        {
            self.counters.limited(n);
            return false;
        }
        if let Some(b) = self.user.buckets.as_ref().map(|b| b.get(dir))
            && !b.take(n, now)
        {
            if let Some(o) = own {
                o.refund(n);
            }
            self.counters.limited(n);
            return false;
        }
        true
    }

    /// The allocation as observers see it.
    pub(crate) fn info(&self) -> AllocationInfo {
        AllocationInfo {
            id: self.id,
            username: self.username.clone(),
            realm: self.realm.clone(),
            transport: self.tuple.transport,
            client: self.tuple.client,
            server: self.tuple.server,
            relayed: self.relays.iter().map(|r| r.announced).collect(),
            tls: self.tls.as_deref().cloned(),
            age: self.created.elapsed(),
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
