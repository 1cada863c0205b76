//! The relay: listeners, request handling, and the data path.
//!
//! Packet flow. Client → peer: the listener task reads a datagram (or a framed message on a stream), and if
//! it is ChannelData or a Send indication (the data path) looks the 5-tuple up in a sharded map, checks the
//! permission under the allocation's own lock and sends from the allocation's relay socket, using only the
//! receive buffer: no allocation, no global lock. Requests (Allocate, Refresh, …) go to their own task, so a
//! slow credential lookup never stalls the listener. Peer → client: each relayed socket has one task that
//! reads into its own buffer, checks the permission, and writes ChannelData (channel bound) or a Data
//! indication into a second reused buffer sent on the listener socket (or the client's stream).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::allocation::{
    Allocation, Buckets, ClientSink, Direction, FastHasher, FiveTuple, Owner, Relay, Transport,
    UserEntry,
};
use crate::auth::{self, Credentials, NonceCheck};
use crate::metrics as m;
use crate::observer::{AuthDecision, AuthRequest, Observer, UserLimits};
use crate::policy::PeerPolicy;
use crate::stun::{
    ChannelData, Class, DecodeError, Encoder, ErrorCode, IntegrityError, IntegrityKind,
    LongTermKey, Message, Method, PasswordAlgorithm, TransactionId, attr, frame_len,
};
use crate::udp::UdpSocket;

/// Largest message we handle (a UDP datagram).
const MAX_DATAGRAM: usize = 65536;
/// Datagrams read from a listener per system call. quinn-udp prepares a header for every slot on each
/// call, so a larger batch costs the light loads (one datagram per wake-up) more than it saves the heavy ones.
const RECV_BATCH: usize = if quinn_udp::BATCH_SIZE < 8 {
    quinn_udp::BATCH_SIZE
} else {
    8
};

/// Datagrams read from a relayed socket per system call. Two would do to learn, in the same call, that the
/// queue is empty (see `relay_loop`); four also takes a peer's bursts whole.
const RELAY_BATCH: usize = if quinn_udp::BATCH_SIZE < 4 {
    quinn_udp::BATCH_SIZE
} else {
    4
};

/// Relay addresses and ports.
#[derive(Clone, Debug)]
pub(crate) struct RelaySettings {
    pub(crate) ip4: IpAddr,
    pub(crate) ip6: Option<IpAddr>,
    pub(crate) external4: Option<IpAddr>,
    pub(crate) min_port: u16,
    pub(crate) max_port: u16,
}

/// Lifetimes and the SOFTWARE string.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) default_lifetime: Duration,
    pub(crate) max_lifetime: Duration,
    pub(crate) software: String,
    /// Concurrent allocations per user; 0 = unlimited.
    pub(crate) user_quota: usize,
    /// Concurrent allocations on this node; 0 = unlimited.
    pub(crate) total_quota: usize,
    /// Bytes per second per allocation, each direction; 0 = unlimited.
    pub(crate) max_bps: u64,
    /// Bytes per second over a user's allocations, each direction; 0 = unlimited.
    pub(crate) user_max_bps: u64,
    /// Longest wait for a deferred authentication answer.
    pub(crate) auth_timeout: Duration,
}

/// coturn publishes an allocation's traffic every 4096 packets.
pub(crate) const TRAFFIC_REPORT_PACKETS: u64 = 4096;

/// Shared state of the relay.
pub(crate) struct Server {
    pub(crate) creds: Credentials,
    pub(crate) policy: PeerPolicy,
    pub(crate) relay: RelaySettings,
    pub(crate) limits: Limits,
    pub(crate) allocations: DashMap<FiveTuple, Arc<Allocation>, FastHasher>,
    observers: Vec<Arc<dyn Observer>>,
    /// Per-account allocation counts and user-wide bandwidth.
    users: DashMap<String, Arc<UserEntry>>,
    /// Per-user overrides from the database, by (realm, name).
    overrides: std::sync::RwLock<std::collections::HashMap<(String, String), UserLimits>>,
    data_metrics: m::DataPath,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    next_id: AtomicU64,
    next_port: AtomicU64,
    reservations: DashMap<[u8; 8], (Arc<UdpSocket>, Instant)>,
    /// Allocations by relayed (announced) address, for the in-process fast path.
    by_relayed: DashMap<SocketAddr, std::sync::Weak<Allocation>, FastHasher>,
}

/// A client connection as the request handler sees it.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) tuple: FiveTuple,
    pub(crate) sink: ClientSink,
    /// TLS version and cipher (OpenSSL names) of a TLS client.
    pub(crate) tls: Option<Arc<(String, String)>>,
}

struct Authed {
    username: String,
    key: LongTermKey,
    kind: IntegrityKind,
    /// Limits the provider decided, if any.
    limits: UserLimits,
}

/// The name quotas and per-user limits count under: a TURN REST username `<expiry>:<user>` counts as
/// `<user>` (each credential has a new username), any other as itself.
pub(crate) fn account(username: &str) -> &str {
    match username.split_once(':') {
        Some((ts, user))
            if !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()) && !user.is_empty() =>
        {
            user
        }
        _ => username,
    }
}

/// Holds one allocation of an account's quota until the allocation exists (or gives it back).
struct QuotaSlot<'a> {
    server: &'a Server,
    account: String,
    entry: Arc<UserEntry>,
    armed: bool,
}

impl Drop for QuotaSlot<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.server.release(&self.account, &self.entry);
        }
    }
}

impl Server {
    pub(crate) fn new(
        creds: Credentials,
        policy: PeerPolicy,
        relay: RelaySettings,
        limits: Limits,
        observers: Vec<Arc<dyn Observer>>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let span = u64::from(relay.max_port - relay.min_port) + 1;
        Self {
            creds,
            policy,
            limits,
            allocations: DashMap::with_hasher(FastHasher::default()),
            observers,
            users: DashMap::new(),
            overrides: std::sync::RwLock::new(std::collections::HashMap::new()),
            data_metrics: m::DataPath::new(),
            tasks,
            shutdown,
            next_id: AtomicU64::new(rand::random_range(
                100_000_000_000_000_000..900_000_000_000_000_000,
            )),
            next_port: AtomicU64::new(rand::random_range(0..span)),
            reservations: DashMap::new(),
            by_relayed: DashMap::with_hasher(FastHasher::default()),
            relay,
        }
    }

    // ---------------------------------------------------------------- listeners

    /// Reads datagrams from one UDP listener until shutdown, many per system call: `recvmmsg` (and GRO,
    /// where the kernel coalesces a client's datagrams) through quinn-udp, into buffers allocated once.
    /// Falls back to one `recv_from` at a time if the socket cannot be set up for it.
    pub(crate) async fn run_udp(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let local = match socket.local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        let state = match crate::sockopt::batched_receive(&*socket, local.is_ipv6()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "turn: no batched receive on this socket; reading one datagram at a time");
                return self.run_udp_single(socket, local).await;
            }
        };
        let mut bufs: [Vec<u8>; RECV_BATCH] = std::array::from_fn(|_| vec![0_u8; MAX_DATAGRAM]);
        let mut meta = [quinn_udp::RecvMeta::default(); RECV_BATCH];
        // No shutdown branch: the task is aborted at shutdown (see `start`).
        loop {
            let n = match socket.readable().await {
                Ok(mut ready) => recv_batch(&mut ready, &state, &mut bufs, &mut meta),
                Err(_) => continue,
            };
            for (m, buf) in meta.iter().zip(&bufs).take(n) {
                let from = match m.addr {
                    // A dual-stack socket reports IPv4 clients as mapped IPv6 addresses.
                    SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                        Some(v4) if local.is_ipv4() => SocketAddr::from((v4, v6.port())),
                        _ => m.addr,
                    },
                    a => a,
                };
                let tuple = FiveTuple {
                    client: from,
                    server: local,
                    transport: Transport::Udp,
                };
                for datagram in datagrams(m, buf) {
                    // ChannelData, the bulk of the traffic, needs nothing but the 5-tuple.
                    if ChannelData::looks_like(datagram) {
                        self.channel_data_from_client(datagram, &tuple);
                        continue;
                    }
                    let client = Client {
                        tuple,
                        sink: ClientSink::Udp {
                            socket: socket.clone(),
                            client: from,
                        },
                        tls: None,
                    };
                    self.clone().on_message(datagram, client).await;
                }
            }
        }
    }

    async fn run_udp_single(self: Arc<Self>, socket: Arc<UdpSocket>, local: SocketAddr) {
        let mut buf = vec![0_u8; MAX_DATAGRAM];
        loop {
            let (n, from) = match socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "turn: udp receive error");
                    continue;
                }
            };
            let client = Client {
                tuple: FiveTuple {
                    client: from,
                    server: local,
                    transport: Transport::Udp,
                },
                sink: ClientSink::Udp {
                    socket: socket.clone(),
                    client: from,
                },
                tls: None,
            };
            self.clone().on_message(&buf[..n], client).await;
        }
    }

    /// Accepts TCP connections on one listener until shutdown; with an acceptor, each is a TLS connection.
    pub(crate) async fn run_tcp(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let Ok(local) = listener.local_addr() else {
            return;
        };
        loop {
            let (stream, from) = tokio::select! {
                () = self.shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "turn: accept error");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            // The address this connection reached (the listener's may be a wildcard).
            let local = stream.local_addr().unwrap_or(local);
            let server = self.clone();
            match &tls {
                None => {
                    let (read, write) = stream.into_split();
                    let tuple = FiveTuple {
                        client: from,
                        server: local,
                        transport: Transport::Tcp,
                    };
                    self.tasks
                        .spawn(server.run_stream(read, Box::new(write), tuple, None));
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    self.tasks.spawn(async move {
                        // A client that never finishes the handshake must not hold a task forever.
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(tls_stream)) => {
                                let names = crate::tls::session_names(tls_stream.get_ref().1).map(Arc::new);
                                let (read, write) = tokio::io::split(tls_stream);
                                let tuple = FiveTuple { client: from, server: local, transport: Transport::Tls };
                                server.run_stream(read, Box::new(write), tuple, names).await;
                            }
                            Ok(Err(e)) => {
                                m::dropped("tls_handshake");
                                tracing::debug!(error = %e, client = %from, "turn: TLS handshake failed");
                            }
                            Err(_) => m::dropped("tls_handshake_timeout"),
                        }
                    });
                }
            }
        }
    }

    /// Serves one stream connection (TCP or TLS): framed messages in, responses and data out.
    pub(crate) async fn run_stream<R: AsyncRead + Unpin + Send>(
        self: Arc<Self>,
        mut read: R,
        write: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
        tuple: FiveTuple,
        tls: Option<Arc<(String, String)>>,
    ) {
        let sink = ClientSink::Stream(Arc::new(tokio::sync::Mutex::new(write)));
        let client = Client { tuple, sink, tls };
        let mut buf = vec![0_u8; MAX_DATAGRAM + 8];
        let mut filled = 0;
        'conn: loop {
            // Serve every complete message in the buffer.
            loop {
                match frame_len(&buf[..filled]) {
                    Ok(Some(len)) if len <= filled => {
                        // ChannelData may carry padding after the data; the message is what frame_len says.
                        self.clone().on_message(&buf[..len], client.clone()).await;
                        buf.copy_within(len..filled, 0);
                        filled -= len;
                    }
                    Ok(Some(len)) if len > buf.len() => break 'conn,
                    Ok(_) => break,
                    Err(_) => break 'conn, // cannot frame: the stream is garbage
                }
            }
            let n = tokio::select! {
                () = self.shutdown.cancelled() => break,
                r = read.read(&mut buf[filled..]) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
            };
            filled += n;
        }
        // RFC 8656 §5: a stream's allocation ends with its connection.
        if let Some(alloc) = self.allocations.get(&tuple).map(|a| a.clone()) {
            self.delete(&alloc, "closed");
        }
    }

    // ---------------------------------------------------------------- dispatch

    async fn on_message(self: Arc<Self>, pkt: &[u8], client: Client) {
        if pkt.is_empty() {
            return;
        }
        if ChannelData::looks_like(pkt) {
            self.channel_data_from_client(pkt, &client.tuple);
            return;
        }
        if !Message::looks_like_stun(pkt) {
            m::dropped("not_stun");
            return;
        }
        match Message::decode(pkt) {
            Ok(msg) if msg.class == Class::Indication && msg.method == Method::SEND => {
                self.send_indication(&msg, pkt.len(), &client.tuple);
            }
            Ok(msg) if msg.class == Class::Request => {
                if client.sink.is_stream() {
                    // A stream is served in order; its reads wait for this request anyway.
                    self.request(&msg, &client).await;
                } else {
                    // UDP: answer in a task of its own, so the listener keeps reading. The task owns a copy
                    // of the bytes, so it decodes its own view of them.
                    let owned = pkt.to_vec();
                    let server = self.clone();
                    self.tasks.spawn(async move {
                        if let Ok(msg) = Message::decode(&owned) {
                            server.request(&msg, &client).await;
                        }
                    });
                }
            }
            Ok(_) => m::dropped("unexpected_class"),
            Err(e) => {
                m::dropped("malformed");
                // A request whose header is sound but whose attributes are not gets 400 (RFC 8489 §6.3).
                if matches!(
                    e,
                    DecodeError::AttributeOverrun(_)
                        | DecodeError::TooManyAttributes
                        | DecodeError::BadLength
                ) && let Some(resp) = bare_error(pkt, ErrorCode::BAD_REQUEST)
                {
                    let _ = client.sink.send(&resp).await;
                }
            }
        }
    }

    async fn request(self: &Arc<Self>, msg: &Message<'_>, client: &Client) {
        let started = Instant::now();
        let method = msg.method;
        let resp = self.handle_request(msg, client).await;
        // coturn's client-side traffic counts control messages too.
        if method != Method::BINDING
            && let Some(alloc) = self.allocations.get(&client.tuple)
        {
            alloc.counters.client_rx(msg.raw_len());
            if let Some(r) = &resp {
                alloc.counters.client_tx(r.len());
            }
        }
        let ok = resp.as_deref().is_some_and(|r| {
            r.len() >= 2
                && crate::stun::split_message_type(u16::from_be_bytes([r[0], r[1]])).1
                    == Class::Success
        });
        m::request(method.name().unwrap_or("other"), ok, started.elapsed());
        if let Some(resp) = resp
            && let Err(e) = client.sink.send(&resp).await
        {
            tracing::debug!(error = %e, "turn: cannot answer client");
        }
    }

    async fn handle_request(
        self: &Arc<Self>,
        msg: &Message<'_>,
        client: &Client,
    ) -> Option<Vec<u8>> {
        let unknown: Vec<u16> = msg.unknown_comprehension_required().collect();
        if !unknown.is_empty() {
            return Some(self.error(msg, ErrorCode::UNKNOWN_ATTRIBUTE, None, |e| {
                e.unknown_attributes(&unknown);
            }));
        }
        match msg.method {
            Method::BINDING => Some(self.binding(msg, client)),
            Method::ALLOCATE
            | Method::REFRESH
            | Method::CREATE_PERMISSION
            | Method::CHANNEL_BIND => {
                let auth = match self.authenticate(msg, client).await {
                    Ok(a) => a,
                    Err(resp) => return Some(resp),
                };
                Some(match msg.method {
                    Method::ALLOCATE => self.allocate(msg, client, auth).await,
                    Method::REFRESH => self.refresh(msg, client, auth),
                    Method::CREATE_PERMISSION => self.create_permission(msg, client, auth),
                    _ => self.channel_bind(msg, client, auth),
                })
            }
            // RFC 6062 TCP relays are not offered yet.
            Method::CONNECT | Method::CONNECTION_BIND => {
                Some(self.error(msg, ErrorCode::UNSUPPORTED_TRANSPORT, None, |_| {}))
            }
            _ => Some(self.error(msg, ErrorCode::BAD_REQUEST, None, |_| {})),
        }
    }

    // ---------------------------------------------------------------- responses

    fn response<'b>(&self, buf: &'b mut Vec<u8>, msg: &Message<'_>, class: Class) -> Encoder<'b> {
        let mut e = Encoder::new(buf, msg.method, class, msg.transaction_id);
        if !self.limits.software.is_empty() {
            e.string(attr::SOFTWARE, &self.limits.software);
        }
        e
    }

    fn sign(e: &mut Encoder<'_>, auth: Option<&Authed>) {
        if let Some(a) = auth {
            match a.kind {
                IntegrityKind::Sha1 => e.message_integrity(a.key.as_bytes()),
                IntegrityKind::Sha256 => e.message_integrity_sha256(a.key.as_bytes()),
            };
        }
        e.fingerprint();
    }

    /// A signed success response with `attrs` added after SOFTWARE.
    fn success(
        &self,
        msg: &Message<'_>,
        auth: &Authed,
        attrs: impl FnOnce(&mut Encoder<'_>),
    ) -> Vec<u8> {
        let mut buf = Vec::with_capacity(96);
        let mut e = self.response(&mut buf, msg, Class::Success);
        attrs(&mut e);
        Self::sign(&mut e, Some(auth));
        e.finish().map(<[u8]>::to_vec).unwrap_or_default()
    }

    fn error(
        &self,
        msg: &Message<'_>,
        code: ErrorCode,
        auth: Option<&Authed>,
        extra: impl FnOnce(&mut Encoder<'_>),
    ) -> Vec<u8> {
        m::error(code.code);
        tracing::debug!(
            method = msg.method.name().unwrap_or("other"),
            code = code.code,
            "turn: error response"
        );
        let mut buf = Vec::with_capacity(128);
        let mut e = self.response(&mut buf, msg, Class::Error);
        e.error_code(code);
        extra(&mut e);
        Self::sign(&mut e, auth);
        e.finish().map(<[u8]>::to_vec).unwrap_or_default()
    }

    fn challenge(&self, msg: &Message<'_>, client: &Client, code: ErrorCode) -> Vec<u8> {
        let nonce = self.creds.nonce(client.tuple.client.ip());
        self.error(msg, code, None, |e| {
            e.string(attr::REALM, self.creds.realm())
                .string(attr::NONCE, &nonce)
                .password_algorithms(auth::ALGORITHMS);
        })
    }

    // ---------------------------------------------------------------- authentication

    async fn authenticate(&self, msg: &Message<'_>, client: &Client) -> Result<Authed, Vec<u8>> {
        if !msg.has_integrity() {
            return Err(self.challenge(msg, client, ErrorCode::UNAUTHENTICATED));
        }
        let (Ok(Some(username)), Ok(Some(realm)), Ok(Some(nonce))) =
            (msg.username(), msg.realm(), msg.nonce())
        else {
            tracing::debug!(username = ?msg.username(), realm = ?msg.realm(), nonce = ?msg.nonce(), "turn: credentials incomplete");
            return Err(self.error(msg, ErrorCode::BAD_REQUEST, None, |_| {}));
        };
        match self.creds.check_nonce(nonce, client.tuple.client.ip()) {
            NonceCheck::Valid => {}
            NonceCheck::Stale | NonceCheck::Invalid => {
                m::auth_failure("stale_nonce");
                return Err(self.challenge(msg, client, ErrorCode::STALE_NONCE));
            }
        }
        if realm != self.creds.realm() {
            m::auth_failure("wrong_realm");
            return Err(self.challenge(msg, client, ErrorCode::UNAUTHENTICATED));
        }
        // RFC 8489 §9.2.4: a client that chose an algorithm must echo the list we offered.
        let algorithm = match msg.password_algorithm() {
            Ok(None) => PasswordAlgorithm::Md5,
            Ok(Some(n)) => {
                let offered: Vec<u16> = auth::ALGORITHMS.iter().map(|a| a.number()).collect();
                let echoed: Option<Vec<u16>> = msg
                    .password_algorithms()
                    .ok()
                    .flatten()
                    .map(Iterator::collect);
                match (PasswordAlgorithm::from_number(n), echoed) {
                    (Some(a), Some(list)) if list == offered => a,
                    (_, echoed) => {
                        tracing::debug!(
                            algorithm = n,
                            ?echoed,
                            "turn: PASSWORD-ALGORITHMS not echoed"
                        );
                        return Err(self.error(msg, ErrorCode::BAD_REQUEST, None, |_| {}));
                    }
                }
            }
            Err(_) => return Err(self.error(msg, ErrorCode::BAD_REQUEST, None, |_| {})),
        };
        let request = AuthRequest {
            username,
            realm,
            algorithm,
            method: msg.method.name().unwrap_or("OTHER"),
            client: client.tuple.client,
            transport: client.tuple.transport,
        };
        for provider in self.creds.providers() {
            let mut decision = provider.authenticate(&request);
            if let AuthDecision::Deferred(answer) = decision {
                decision = tokio::time::timeout(self.limits.auth_timeout, answer)
                    .await
                    .unwrap_or(AuthDecision::Unavailable);
            }
            match decision {
                AuthDecision::Unknown | AuthDecision::Deferred(_) => {}
                AuthDecision::Authorized(grant) => {
                    for key in grant.keys {
                        match msg.verify_integrity(key.as_bytes()) {
                            Ok(kind) => {
                                return Ok(Authed {
                                    username: username.to_owned(),
                                    key,
                                    kind,
                                    limits: grant.limits,
                                });
                            }
                            Err(IntegrityError::Mismatch) => {}
                            Err(e) => {
                                tracing::debug!(error = %e, "turn: integrity attribute malformed");
                                return Err(self.error(msg, ErrorCode::BAD_REQUEST, None, |_| {}));
                            }
                        }
                    }
                }
                AuthDecision::NotAuthorized => {
                    m::auth_failure("not_authorized");
                    return Err(self.challenge(msg, client, ErrorCode::UNAUTHENTICATED));
                }
                AuthDecision::QuotaReached => {
                    m::auth_failure("quota");
                    m::quota_rejected("provider");
                    return Err(self.error(msg, ErrorCode::ALLOCATION_QUOTA_REACHED, None, |_| {}));
                }
                AuthDecision::Unavailable => {
                    m::auth_failure("provider_unavailable");
                    tracing::warn!(
                        provider = provider.name(),
                        "turn: authentication unavailable; refusing (500)"
                    );
                    return Err(self.error(msg, ErrorCode::SERVER_ERROR, None, |_| {}));
                }
            }
        }
        m::auth_failure("bad_credentials");
        Err(self.challenge(msg, client, ErrorCode::UNAUTHENTICATED))
    }

    // ---------------------------------------------------------------- methods

    fn binding(&self, msg: &Message<'_>, client: &Client) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64);
        let mut e = self.response(&mut buf, msg, Class::Success);
        e.xor_address(attr::XOR_MAPPED_ADDRESS, client.tuple.client);
        e.fingerprint();
        e.finish().map(<[u8]>::to_vec).unwrap_or_default()
    }

    async fn allocate(
        self: &Arc<Self>,
        msg: &Message<'_>,
        client: &Client,
        auth: Authed,
    ) -> Vec<u8> {
        if let Some(existing) = self.allocations.get(&client.tuple).map(|a| a.clone()) {
            if existing.allocate_tid == msg.transaction_id {
                // A retransmission of the request that created it: the same success again.
                return self.allocate_success(msg, client, &existing, None, None, &auth);
            }
            return self.error(msg, ErrorCode::ALLOCATION_MISMATCH, Some(&auth), |_| {});
        }
        match msg.requested_transport() {
            Ok(Some(attr::TRANSPORT_UDP)) => {}
            Ok(Some(_)) => {
                return self.error(msg, ErrorCode::UNSUPPORTED_TRANSPORT, Some(&auth), |_| {});
            }
            _ => return self.error(msg, ErrorCode::BAD_REQUEST, Some(&auth), |_| {}),
        }
        // Quotas (coturn total-quota / user-quota): 486 Allocation Quota Reached.
        if self.limits.total_quota > 0 && self.allocations.len() >= self.limits.total_quota {
            m::quota_rejected("total");
            return self.error(
                msg,
                ErrorCode::ALLOCATION_QUOTA_REACHED,
                Some(&auth),
                |_| {},
            );
        }
        let (quota, max_bps, user_max_bps) = self.effective_limits(&auth);
        let Some(mut slot) = self.reserve(account(&auth.username), quota, user_max_bps) else {
            m::quota_rejected("user");
            return self.error(
                msg,
                ErrorCode::ALLOCATION_QUOTA_REACHED,
                Some(&auth),
                |_| {},
            );
        };
        // DONT-FRAGMENT (RFC 8656 §7.2): DF on every datagram this allocation sends to peers.
        let dont_fragment = msg.dont_fragment();
        let (Ok(even), Ok(token), Ok(family), Ok(additional)) = (
            msg.even_port(),
            msg.reservation_token(),
            msg.requested_address_family(),
            msg.additional_address_family(),
        ) else {
            return self.error(msg, ErrorCode::BAD_REQUEST, Some(&auth), |_| {});
        };
        if token.is_some() && (even.is_some() || family.is_some())
            || family.is_some() && additional.is_some()
        {
            return self.error(msg, ErrorCode::BAD_REQUEST, Some(&auth), |_| {});
        }
        let v6_only = match family {
            None | Some(attr::FAMILY_IPV4) => false,
            Some(attr::FAMILY_IPV6) => true,
            Some(_) => {
                return self.error(
                    msg,
                    ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                    Some(&auth),
                    |_| {},
                );
            }
        };
        let dual = match additional {
            None => false,
            Some(attr::FAMILY_IPV6) => true,
            Some(_) => return self.error(msg, ErrorCode::BAD_REQUEST, Some(&auth), |_| {}),
        };
        let lifetime = self.granted_lifetime(msg);

        // Relayed sockets: a reserved one, or fresh ones per family.
        let mut sockets = Vec::with_capacity(2);
        let mut reserved = None;
        let mut v6_error = None;
        if let Some(token) = token {
            match self.reservations.remove(&token) {
                Some((_, (socket, until))) if until > Instant::now() => sockets.push(socket),
                _ => return self.error(msg, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth), |_| {}),
            }
        } else {
            let primary_ip = if v6_only {
                match self.relay.ip6 {
                    Some(ip) => ip,
                    None => {
                        return self.error(
                            msg,
                            ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                            Some(&auth),
                            |_| {},
                        );
                    }
                }
            } else {
                self.relay.ip4
            };
            match self.bind_relay(primary_ip, even).await {
                Some((socket, next)) => {
                    sockets.push(socket);
                    reserved = next;
                }
                None => {
                    return self.error(msg, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth), |_| {});
                }
            }
            if dual {
                match self.relay.ip6 {
                    Some(ip6) => match self.bind_relay(ip6, None).await {
                        Some((socket, _)) => sockets.push(socket),
                        None => v6_error = Some(ErrorCode::INSUFFICIENT_CAPACITY),
                    },
                    None => v6_error = Some(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED),
                }
            }
        }
        let mut relays = Vec::with_capacity(sockets.len());
        for socket in sockets {
            match self.relay_for(socket, dont_fragment) {
                Some(r) => relays.push(r),
                // RFC 8656 §7.2: where DF cannot be set, DONT-FRAGMENT is an unknown comprehension-required
                // attribute.
                None => {
                    return self.error(msg, ErrorCode::UNKNOWN_ATTRIBUTE, Some(&auth), |e| {
                        e.unknown_attributes(&[attr::DONT_FRAGMENT]);
                    });
                }
            }
        }
        // EVEN-PORT with R: the next port, kept for the RESERVATION-TOKEN of a later Allocate.
        let reserved_token = reserved.map(|next| {
            let t: [u8; 8] = rand::random();
            self.reservations
                .insert(t, (next, Instant::now() + Duration::from_secs(30)));
            t
        });

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let owner = Owner {
            username: auth.username.clone(),
            realm: self.creds.realm().to_owned(),
            account: slot.account.clone(),
            user: slot.entry.clone(),
            bandwidth: Buckets::new(max_bps),
            tls: client.tls.clone(),
        };
        let alloc = Arc::new(Allocation::new(
            id,
            client.tuple,
            owner,
            relays,
            lifetime,
            client.sink.clone(),
            msg.transaction_id,
        ));
        // Insert unless another request for the same 5-tuple won the race.
        match self.allocations.entry(client.tuple) {
            dashmap::Entry::Occupied(_) => {
                return self.error(msg, ErrorCode::ALLOCATION_MISMATCH, Some(&auth), |_| {});
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(alloc.clone());
            }
        }
        slot.armed = false; // the allocation holds it now; `delete` gives it back
        let mut relay_tasks = Vec::with_capacity(alloc.relays.len());
        for (i, r) in alloc.relays.iter().enumerate() {
            self.by_relayed.insert(r.announced, Arc::downgrade(&alloc));
            relay_tasks.push(
                self.tasks
                    .spawn(self.clone().relay_loop(alloc.clone(), i))
                    .abort_handle(),
            );
        }
        self.tasks.spawn(
            self.clone()
                .expiry_loop(alloc.clone(), AbortOnDrop(relay_tasks)),
        );
        m::allocation_created(self.allocations.len());
        let relayed: Vec<String> = alloc
            .relays
            .iter()
            .map(|r| r.announced.to_string())
            .collect();
        tracing::info!(id, user = %alloc.username, client = %client.tuple.client, relayed = ?relayed, lifetime = lifetime.as_secs(), "turn: allocation created");
        let info = alloc.info();
        for o in &self.observers {
            o.allocation_created(&info, lifetime);
        }
        self.allocate_success(msg, client, &alloc, reserved_token, v6_error, &auth)
    }

    fn allocate_success(
        &self,
        msg: &Message<'_>,
        client: &Client,
        alloc: &Allocation,
        reservation: Option<[u8; 8]>,
        v6_error: Option<ErrorCode>,
        auth: &Authed,
    ) -> Vec<u8> {
        let remaining = alloc.expires_at().saturating_duration_since(Instant::now());
        let mut buf = Vec::with_capacity(160);
        let mut e = self.response(&mut buf, msg, Class::Success);
        for r in &alloc.relays {
            e.xor_address(attr::XOR_RELAYED_ADDRESS, r.announced);
        }
        // Whole seconds, rounded up: a fresh allocation reports exactly what was granted.
        e.lifetime(remaining.as_millis().div_ceil(1000) as u32);
        if let Some(token) = reservation {
            e.reservation_token(token);
        }
        if let Some(code) = v6_error {
            // ADDRESS-ERROR-CODE (RFC 8656 §18.12): family, reserved, then an ERROR-CODE-shaped value.
            let mut v = vec![
                attr::FAMILY_IPV6,
                0,
                (code.code / 100) as u8,
                (code.code % 100) as u8,
            ];
            v.extend_from_slice(code.reason.as_bytes());
            e.attr(attr::ADDRESS_ERROR_CODE, &v);
        }
        e.xor_address(attr::XOR_MAPPED_ADDRESS, client.tuple.client);
        Self::sign(&mut e, Some(auth));
        e.finish().map(<[u8]>::to_vec).unwrap_or_default()
    }

    fn granted_lifetime(&self, msg: &Message<'_>) -> Duration {
        let requested = msg
            .lifetime()
            .ok()
            .flatten()
            .map(|s| Duration::from_secs(u64::from(s)));
        requested
            .unwrap_or(self.limits.default_lifetime)
            .max(self.limits.default_lifetime)
            .min(self.limits.max_lifetime)
    }

    fn refresh(&self, msg: &Message<'_>, client: &Client, auth: Authed) -> Vec<u8> {
        let Some(alloc) = self.allocations.get(&client.tuple).map(|a| a.clone()) else {
            return self.error(msg, ErrorCode::ALLOCATION_MISMATCH, Some(&auth), |_| {});
        };
        if alloc.username != auth.username {
            return self.error(msg, ErrorCode::WRONG_CREDENTIALS, Some(&auth), |_| {});
        }
        if let Ok(Some(family)) = msg.requested_address_family()
            && !alloc
                .relays
                .iter()
                .any(|r| (family == attr::FAMILY_IPV4) == r.announced.is_ipv4())
        {
            return self.error(
                msg,
                ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
                Some(&auth),
                |_| {},
            );
        }
        let requested = msg.lifetime().ok().flatten();
        let lifetime = if requested == Some(0) {
            Duration::ZERO
        } else {
            self.granted_lifetime(msg)
        };
        let resp = self.success(msg, &auth, |e| {
            e.lifetime(lifetime.as_secs() as u32);
        });
        let info = alloc.info();
        for o in &self.observers {
            o.allocation_refreshed(&info, lifetime);
        }
        if lifetime.is_zero() {
            // Counted here: the allocation is gone by the time `request` would count the exchange.
            alloc.counters.client_rx(msg.raw_len());
            alloc.counters.client_tx(resp.len());
            self.delete(&alloc, "refresh");
        } else {
            alloc.refresh(lifetime);
        }
        resp
    }

    fn owned_allocation(
        &self,
        msg: &Message<'_>,
        client: &Client,
        auth: &Authed,
    ) -> Result<Arc<Allocation>, Vec<u8>> {
        let Some(alloc) = self.allocations.get(&client.tuple).map(|a| a.clone()) else {
            return Err(self.error(msg, ErrorCode::ALLOCATION_MISMATCH, Some(auth), |_| {}));
        };
        if alloc.username != auth.username {
            return Err(self.error(msg, ErrorCode::WRONG_CREDENTIALS, Some(auth), |_| {}));
        }
        Ok(alloc)
    }

    fn check_peer(&self, alloc: &Allocation, peer: SocketAddr) -> Result<(), ErrorCode> {
        if alloc.relay_for(peer).is_none() {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if !self.policy.permits(peer.ip()) {
            m::peer_denied();
            return Err(ErrorCode::FORBIDDEN);
        }
        Ok(())
    }

    fn create_permission(&self, msg: &Message<'_>, client: &Client, auth: Authed) -> Vec<u8> {
        let alloc = match self.owned_allocation(msg, client, &auth) {
            Ok(a) => a,
            Err(resp) => return resp,
        };
        let peers: Result<Vec<SocketAddr>, _> = msg.xor_peer_addresses().collect();
        let peers = match peers {
            Ok(p) if !p.is_empty() => p,
            _ => return self.error(msg, ErrorCode::BAD_REQUEST, Some(&auth), |_| {}),
        };
        for p in &peers {
            if let Err(code) = self.check_peer(&alloc, *p) {
                return self.error(msg, code, Some(&auth), |_| {});
            }
        }
        let now = Instant::now();
        alloc.with_peers(|st| peers.iter().for_each(|p| st.permit(p.ip(), now)));
        self.success(msg, &auth, |_| {})
    }

    fn channel_bind(&self, msg: &Message<'_>, client: &Client, auth: Authed) -> Vec<u8> {
        let alloc = match self.owned_allocation(msg, client, &auth) {
            Ok(a) => a,
            Err(resp) => return resp,
        };
        let (Ok(Some(channel)), Ok(Some(peer))) = (
            msg.channel_number(),
            msg.xor_address(attr::XOR_PEER_ADDRESS),
        ) else {
            tracing::debug!(channel = ?msg.channel_number(), peer = ?msg.xor_address(attr::XOR_PEER_ADDRESS), "turn: bad ChannelBind");
            return self.error(msg, ErrorCode::BAD_REQUEST, Some(&auth), |_| {});
        };
        if !crate::stun::CHANNELS.contains(&channel) {
            return self.error(msg, ErrorCode::BAD_REQUEST, Some(&auth), |_| {});
        }
        if let Err(code) = self.check_peer(&alloc, peer) {
            return self.error(msg, code, Some(&auth), |_| {});
        }
        if alloc
            .with_peers(|st| st.bind(channel, peer, Instant::now()))
            .is_err()
        {
            tracing::debug!(channel, %peer, "turn: channel bind conflict");
            return self.error(msg, ErrorCode::BAD_REQUEST, Some(&auth), |_| {});
        }
        self.success(msg, &auth, |_| {})
    }

    // ---------------------------------------------------------------- data path

    fn send_indication(&self, msg: &Message<'_>, len: usize, tuple: &FiveTuple) {
        let Some(alloc) = self.allocations.get(tuple).map(|a| a.clone()) else {
            return;
        };
        alloc.counters.client_rx(len);
        let (Ok(Some(peer)), Some(data)) = (msg.xor_address(attr::XOR_PEER_ADDRESS), msg.data())
        else {
            m::dropped("bad_send");
            return;
        };
        if !alloc.with_peers(|st| st.permitted(peer.ip(), Instant::now())) {
            m::dropped("no_permission");
            return;
        }
        self.to_peer(&alloc, peer, data);
    }

    fn channel_data_from_client(&self, pkt: &[u8], tuple: &FiveTuple) {
        let Ok(cd) = ChannelData::decode(pkt) else {
            m::dropped("bad_channel_data");
            return;
        };
        let Some(alloc) = self.allocations.get(tuple).map(|a| a.clone()) else {
            return;
        };
        alloc.counters.client_rx(pkt.len());
        let now = Instant::now();
        let Some(peer) = alloc.with_peers(|st| {
            st.peer_of(cd.channel, now)
                .filter(|p| st.permitted(p.ip(), now))
        }) else {
            m::dropped("unbound_channel");
            return;
        };
        self.to_peer(&alloc, peer, cd.data);
    }

    fn to_peer(&self, alloc: &Allocation, peer: SocketAddr, data: &[u8]) {
        let Some(relay) = alloc.relay_for(peer) else {
            return;
        };
        if !alloc.admit(Direction::ToPeer, data.len()) {
            m::bandwidth_dropped(data.len());
            return;
        }
        if self.to_local_allocation(alloc, relay.announced, peer, data) {
            return;
        }
        // Non-blocking send: a full socket buffer drops the datagram (UDP semantics) instead of stalling.
        match relay.socket.try_send_to(data, peer) {
            Ok(_) => {
                alloc.counters.sent(data.len());
                self.data_metrics.to_peer(data.len());
            }
            Err(_) => m::dropped("peer_send_failed"),
        }
    }

    /// Reads one relayed socket: peer datagrams to the client, as ChannelData or Data indications.
    ///
    /// For a UDP client, `recvmmsg` of up to [`RELAY_BATCH`] datagrams into this thread's buffers
    /// ([`RELAY_IN`], shared by every relayed socket's task on the thread), each framed and sent with no await
    /// in between. A short batch means the queue was empty, so the readiness is cleared at once instead of
    /// one more receive that could only say EAGAIN (`recv_batch`, as on the listener): one receive call
    /// per wake-up instead of two. Stream clients, and sockets that cannot be set up for it, take
    /// `relay_loop_single`.
    async fn relay_loop(self: Arc<Self>, alloc: Arc<Allocation>, index: usize) {
        let socket = alloc.relays[index].socket.clone();
        let ClientSink::Udp {
            socket: to_client,
            client,
        } = &alloc.sink
        else {
            return self.relay_loop_single(alloc, index).await;
        };
        let Some(state) = alloc.relays[index].recv.as_ref() else {
            return self.relay_loop_single(alloc.clone(), index).await;
        };
        // Client datagrams that met a full send buffer, with their payload sizes: sent after the batch.
        let mut pending: Vec<(Vec<u8>, usize)> = Vec::new();
        // No cancellation branch: the allocation's expiry task aborts this one when the allocation ends.
        loop {
            let Ok(mut ready) = socket.readable().await else {
                continue;
            };
            RELAY_IN.with_borrow_mut(|RelayIn { bufs, meta }| {
                LOCAL_OUT.with_borrow_mut(|out| {
                    let n = recv_batch(&mut ready, state, bufs, meta);
                    for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
                        for data in datagrams(m, buf) {
                            if !alloc.admit(Direction::ToClient, data.len()) {
                                m::bandwidth_dropped(data.len());
                                continue;
                            }
                            if !frame_for_client(&alloc, m.addr, data, false, out) {
                                continue;
                            }
                            match to_client.try_send_to(out, *client) {
                                Ok(_) => self.delivered_to_client(&alloc, data.len(), out.len()),
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                    pending.push((out.clone(), data.len()));
                                }
                                Err(_) => m::dropped("client_send_failed"),
                            }
                        }
                    }
                });
            });
            drop(ready);
            for (framed, n) in pending.drain(..) {
                match to_client.send_to(&framed, *client).await {
                    Ok(_) => self.delivered_to_client(&alloc, n, framed.len()),
                    Err(_) => m::dropped("client_send_failed"),
                }
            }
        }
    }

    /// `relay_loop` one datagram at a time, for stream clients (whose writes are awaited) and sockets that
    /// cannot be set up for batched receives.
    async fn relay_loop_single(self: Arc<Self>, alloc: Arc<Allocation>, index: usize) {
        let socket = alloc.relays[index].socket.clone();
        let stream = alloc.sink.is_stream();
        let mut buf = vec![0_u8; MAX_DATAGRAM];
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            if !alloc.admit(Direction::ToClient, n) {
                m::bandwidth_dropped(n);
                continue;
            }
            if !frame_for_client(&alloc, peer, &buf[..n], stream, &mut out) {
                continue;
            }
            if alloc.sink.send(&out).await.is_ok() {
                self.delivered_to_client(&alloc, n, out.len());
            }
        }
    }

    /// Counts a peer datagram of `n` bytes delivered to `alloc`'s client as `framed` bytes.
    fn delivered_to_client(&self, alloc: &Allocation, n: usize, framed: usize) {
        alloc.counters.received(n);
        alloc.counters.client_tx(framed);
        self.data_metrics.to_client(n);
    }

    /// The in-process fast path: `peer` is another allocation's relayed address on this node, so deliver to
    /// that allocation's client directly instead of through two relayed sockets. Everything observable is
    /// the same: the target's permission for the source is checked, both allocations' counters move, and
    /// the target's client gets the same ChannelData or Data indication. Returns false (take the socket path)
    /// for stream clients, which need an async write.
    fn to_local_allocation(
        &self,
        from: &Allocation,
        source: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Some(target) = self.by_relayed.get(&peer).and_then(|w| w.upgrade()) else {
            return false;
        };
        let ClientSink::Udp { socket, client } = &target.sink else {
            return false;
        };
        from.counters.sent(data.len());
        self.data_metrics.to_peer(data.len());
        if !target.admit(Direction::ToClient, data.len()) {
            m::bandwidth_dropped(data.len());
            return true;
        }
        LOCAL_OUT.with_borrow_mut(|out| {
            if frame_for_client(&target, source, data, false, out)
                && socket.try_send_to(out, *client).is_ok()
            {
                self.delivered_to_client(&target, data.len(), out.len());
                self.data_metrics.fast_path();
            }
        });
        true
    }

    /// Deletes the allocation when its lifetime runs out (unless refreshed meanwhile).
    /// Ends the allocation's relay tasks (`relay_tasks`) when it ends, however it ends.
    async fn expiry_loop(self: Arc<Self>, alloc: Arc<Allocation>, relay_tasks: AbortOnDrop) {
        let _relay_tasks = relay_tasks;
        loop {
            let deadline = alloc.expires_at();
            tokio::select! {
                () = alloc.cancel.cancelled() => break,
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep_until(deadline) => {
                    if alloc.expires_at() <= Instant::now() {
                        self.delete(&alloc, "expired");
                        return;
                    }
                }
            }
        }
        self.delete(
            &alloc,
            if self.shutdown.is_cancelled() {
                "shutdown"
            } else {
                "closed"
            },
        );
    }

    /// Allocations as the admin API shows them, of one user if given, oldest first.
    pub(crate) fn views(&self, user: Option<&str>) -> Vec<crate::http::AllocationView> {
        let now = Instant::now();
        let mut out: Vec<(u64, crate::http::AllocationView)> = self
            .allocations
            .iter()
            .filter(|a| user.is_none_or(|u| a.username == u))
            .map(|a| {
                (
                    a.id,
                    crate::http::AllocationView {
                        id: a.id.to_string(),
                        user: a.username.clone(),
                        realm: a.realm.clone(),
                        client: a.tuple.client.to_string(),
                        server: a.tuple.server.to_string(),
                        transport: a.tuple.transport.as_str().to_owned(),
                        relayed: a.relays.iter().map(|r| r.announced.to_string()).collect(),
                        age_secs: a.created.elapsed().as_secs(),
                        expires_in_secs: a.expires_at().saturating_duration_since(now).as_secs(),
                        counters: a.counters.json(),
                    },
                )
            })
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// Ends allocation `id` now (admin); false if there is none.
    pub(crate) fn kill(&self, id: u64) -> bool {
        let found = self
            .allocations
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.value().clone());
        match found {
            Some(alloc) => {
                self.delete(&alloc, "admin");
                true
            }
            None => false,
        }
    }

    /// Removes an allocation (once), stops its tasks and announces its totals.
    pub(crate) fn delete(&self, alloc: &Arc<Allocation>, reason: &str) {
        let removed = self
            .allocations
            .remove_if(&alloc.tuple, |_, a| Arc::ptr_eq(a, alloc))
            .is_some();
        alloc.cancel.cancel();
        for r in &alloc.relays {
            self.by_relayed.remove_if(&r.announced, |_, w| {
                std::ptr::eq(w.as_ptr(), Arc::as_ptr(alloc))
            });
        }
        if !removed {
            return;
        }
        self.release(&alloc.account, &alloc.user);
        m::allocation_deleted(self.allocations.len());
        tracing::info!(id = alloc.id, user = %alloc.username, reason, "turn: allocation deleted");
        let (last, totals) = alloc
            .counters
            .report(0)
            .unwrap_or_else(|| (Default::default(), alloc.counters.traffic()));
        let info = alloc.info();
        for o in &self.observers {
            o.allocation_removed(&info, reason, &last, &totals);
        }
    }

    /// Reports the traffic of allocations that moved 4096 packets or more since their last report.
    pub(crate) fn report_traffic(&self) {
        let due: Vec<(Arc<Allocation>, crate::observer::Traffic)> = self
            .allocations
            .iter()
            .filter_map(|a| {
                a.counters
                    .report(TRAFFIC_REPORT_PACKETS)
                    .map(|(delta, _)| (a.value().clone(), delta))
            })
            .collect();
        for (alloc, delta) in due {
            let info = alloc.info();
            for o in &self.observers {
                o.traffic(&info, &delta);
            }
        }
    }

    // ---------------------------------------------------------------- quotas and limits

    /// Replaces the per-user overrides (from the database).
    pub(crate) fn set_overrides(
        &self,
        map: std::collections::HashMap<(String, String), UserLimits>,
    ) {
        if let Ok(mut o) = self.overrides.write() {
            *o = map;
        }
    }

    /// Quota, per-allocation and per-user bandwidth for an authenticated user: what its provider said,
    /// else its database override, else the configuration.
    fn effective_limits(&self, auth: &Authed) -> (usize, u64, u64) {
        let stored = self
            .overrides
            .read()
            .ok()
            .and_then(|o| {
                o.get(&(
                    self.creds.realm().to_owned(),
                    account(&auth.username).to_owned(),
                ))
                .copied()
            })
            .unwrap_or_default();
        let quota = auth
            .limits
            .quota
            .or(stored.quota)
            .map_or(self.limits.user_quota, |q| q as usize);
        let max_bps = auth
            .limits
            .max_bps
            .or(stored.max_bps)
            .unwrap_or(self.limits.max_bps);
        let user_max_bps = auth
            .limits
            .user_max_bps
            .or(stored.user_max_bps)
            .unwrap_or(self.limits.user_max_bps);
        (quota, max_bps, user_max_bps)
    }

    /// Counts one more allocation for `account` unless that exceeds `quota` (0 = unlimited).
    fn reserve(&self, account: &str, quota: usize, user_max_bps: u64) -> Option<QuotaSlot<'_>> {
        // The count moves under the map entry's lock, so `release` cannot remove an entry being joined.
        let (entry, before) = {
            let guard = self.users.entry(account.to_owned()).or_insert_with(|| {
                Arc::new(UserEntry {
                    allocations: std::sync::atomic::AtomicUsize::new(0),
                    buckets: Buckets::new(user_max_bps),
                })
            });
            let before = guard.allocations.fetch_add(1, Ordering::SeqCst);
            (Arc::clone(&guard), before)
        };
        let slot = QuotaSlot {
            server: self,
            account: account.to_owned(),
            entry,
            armed: true,
        };
        if quota > 0 && before >= quota {
            return None; // dropping the slot gives it back
        }
        Some(slot)
    }

    fn release(&self, account: &str, entry: &Arc<UserEntry>) {
        entry.allocations.fetch_sub(1, Ordering::SeqCst);
        self.users.remove_if(account, |_, e| {
            Arc::ptr_eq(e, entry) && e.allocations.load(Ordering::SeqCst) == 0
        });
    }

    // ---------------------------------------------------------------- relay ports

    /// The address announced for a relayed socket bound to `local` (`external_ip` for IPv4, if set).
    fn announced(&self, local: SocketAddr) -> SocketAddr {
        match (local.ip(), self.relay.external4) {
            (IpAddr::V4(_), Some(ext)) => SocketAddr::new(ext, local.port()),
            _ => local,
        }
    }

    /// A relayed address of a new allocation on `socket`: set up for batched receives (keeping the socket's
    /// fragmentation), and with `dont_fragment` made to send with DF. None if DF cannot be set.
    fn relay_for(&self, socket: Arc<UdpSocket>, dont_fragment: bool) -> Option<Relay> {
        let local = socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let ipv6 = local.is_ipv6();
        if dont_fragment && let Err(e) = crate::sockopt::forbid_fragmentation(&*socket, ipv6) {
            tracing::warn!(error = %e, "turn: cannot set DF on a relayed socket");
            return None;
        }
        let recv = match crate::sockopt::batched_receive(&*socket, ipv6) {
            Ok(state) => Some(state),
            Err(e) => {
                tracing::debug!(error = %e, "turn: no batched receive on a relayed socket");
                None
            }
        };
        let announced = self.announced(local);
        Some(Relay {
            socket,
            announced,
            recv,
        })
    }

    /// Binds a relayed socket on a port of the range; with EVEN-PORT an even one, and with its R bit also
    /// the next port, returned for a reservation.
    async fn bind_relay(
        &self,
        ip: IpAddr,
        even: Option<bool>,
    ) -> Option<(Arc<UdpSocket>, Option<Arc<UdpSocket>>)> {
        let (min, max) = (
            u64::from(self.relay.min_port),
            u64::from(self.relay.max_port),
        );
        let span = max - min + 1;
        for _ in 0..span.min(4096) {
            let offset = self.next_port.fetch_add(1, Ordering::Relaxed) % span;
            let port = (min + offset) as u16;
            if even.is_some() && !port.is_multiple_of(2) {
                continue;
            }
            let Ok(socket) = UdpSocket::bind(SocketAddr::new(ip, port)) else {
                continue;
            };
            if even == Some(true) {
                if u64::from(port) + 1 > max {
                    continue;
                }
                let Ok(next) = UdpSocket::bind(SocketAddr::new(ip, port + 1)) else {
                    continue;
                };
                return Some((Arc::new(socket), Some(Arc::new(next))));
            }
            return Some((Arc::new(socket), None));
        }
        None
    }

    /// Drops expired port reservations (called periodically).
    pub(crate) fn sweep_reservations(&self) {
        let now = Instant::now();
        self.reservations.retain(|_, (_, until)| *until > now);
    }
}

thread_local! {
    /// Output buffer for framing peer datagrams for clients, on the in-process fast path and in the relayed
    /// sockets' tasks (one per runtime thread, reused: no allocation per packet; used between awaits only).
    static LOCAL_OUT: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(MAX_DATAGRAM + 64));
    /// Receive buffers of the relayed sockets' tasks on this runtime thread (see `relay_loop`).
    static RELAY_IN: std::cell::RefCell<RelayIn> = std::cell::RefCell::new(RelayIn::new());
}

/// Buffers for reading a relayed socket: one set per runtime thread, shared by all of the thread's relayed
/// sockets (a task uses them between two awaits only), instead of 64 KiB per socket.
struct RelayIn {
    bufs: [Vec<u8>; RELAY_BATCH],
    meta: [quinn_udp::RecvMeta; RELAY_BATCH],
}

impl RelayIn {
    fn new() -> Self {
        Self {
            bufs: std::array::from_fn(|_| vec![0_u8; MAX_DATAGRAM]),
            meta: [quinn_udp::RecvMeta::default(); RELAY_BATCH],
        }
    }
}

/// The datagrams in one received buffer: with GRO one buffer holds several of `stride` bytes (the last may be
/// shorter), else just one.
fn datagrams<'a>(m: &quinn_udp::RecvMeta, buf: &'a [u8]) -> std::slice::Chunks<'a, u8> {
    buf[..m.len.min(buf.len())].chunks(m.stride.max(1))
}

/// One `recvmmsg` of up to N datagrams from `socket` into `bufs`: how many were read (0 for none, or on an
/// error, which is logged; ICMP errors surface here on some systems and the socket keeps serving).
///
/// A short batch means the queue was empty when the kernel looked, so tokio is told WouldBlock and clears
/// the readiness now, instead of one more call that could only answer EAGAIN (a system call per wake-up under
/// light load). tokio clears only if no readiness event arrived since the call started (its tick check), so
/// a datagram landing meanwhile still wakes the task.
fn recv_batch<const N: usize>(
    ready: &mut crate::udp::Readable<'_>,
    state: &quinn_udp::UdpSocketState,
    bufs: &mut [Vec<u8>; N],
    meta: &mut [quinn_udp::RecvMeta; N],
) -> usize {
    let mut got = 0;
    let received = ready.try_io(|socket| {
        let mut slices = bufs.each_mut().map(|b| std::io::IoSliceMut::new(b));
        got = state.recv(
            quinn_udp::UdpSockRef::from(socket.get_ref()),
            &mut slices,
            meta,
        )?;
        if got < N {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(got)
    });
    match received {
        Ok(Ok(n)) => n,
        // WouldBlock: the readiness is cleared (a short batch, or nothing to read).
        Err(_) => got,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "turn: udp receive error");
            0
        }
    }
}

/// Frames `data` from `peer` for `alloc`'s client into `out`: ChannelData if a channel is bound to the peer,
/// else a Data indication. False (drop, counted) without a permission for the peer.
fn frame_for_client(
    alloc: &Allocation,
    peer: SocketAddr,
    data: &[u8],
    stream: bool,
    out: &mut Vec<u8>,
) -> bool {
    let now = Instant::now();
    let Some(channel) = alloc.with_peers(|st| {
        st.permitted(peer.ip(), now)
            .then(|| st.channel_of(peer, now))
    }) else {
        m::dropped("no_permission");
        return false;
    };
    match channel {
        Some(ch) => ChannelData::encode(ch, data, stream, out).is_ok(),
        None => {
            let tid: TransactionId = rand::random();
            let mut e = Encoder::new(out, Method::DATA, Class::Indication, tid);
            e.xor_address(attr::XOR_PEER_ADDRESS, peer)
                .attr(attr::DATA, data);
            e.finish().is_ok()
        }
    }
}

/// Aborts tasks when dropped.
pub(crate) struct AbortOnDrop(pub(crate) Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A 400/… answer built from a header alone, for requests too malformed to decode.
fn bare_error(pkt: &[u8], code: ErrorCode) -> Option<Vec<u8>> {
    if pkt.len() < 20 || pkt[0] & 0xC0 != 0 {
        return None;
    }
    let (method, class) = crate::stun::split_message_type(u16::from_be_bytes([pkt[0], pkt[1]]));
    if class != Class::Request {
        return None;
    }
    let mut tid = [0_u8; 12];
    tid.copy_from_slice(&pkt[8..20]);
    let mut buf = Vec::with_capacity(64);
    let mut e = Encoder::new(&mut buf, method, Class::Error, tid);
    e.error_code(code).fingerprint();
    e.finish().ok().map(<[u8]>::to_vec)
}
