//! The agent: every binding, its timers and its transactions, owned by one task.
//!
//! One task holds all state, so there is no lock anywhere: commands (RPC/REST), responses (parsed by the
//! socket tasks) and DNS answers arrive on channels; timers (refresh, retry, RFC 3261 Timer E and F) sit in
//! one binary heap. New REGISTERs wait in one queue that is drained at an even pace (`ratelimit_rate` per
//! `ratelimit_per`); answers to challenges, 423 retries and retransmissions are not rate limited (as in
//! SEMS). Status rows go to a writer task that coalesces them into batched transactions.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rtcplane_event_bus::Publisher;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Transport};
use crate::db::{StatusRow, Subscription};
use crate::metrics as m;
use crate::sip::digest::Challenge;
use crate::sip::message::{self, Register, Response};
use crate::sip::resolve;
use crate::sip::transport::{Dest, Inbound, Sockets};
use crate::sip::uri::{ProxyUri, bracket};
use crate::status::Status;
use crate::writer::WriteOp;

/// A SIP account to keep registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Account {
    /// subscriber_id.
    pub subscriber_id: i64,
    /// Auth user (and AOR user).
    pub user: String,
    /// Password.
    #[serde(skip_serializing)]
    pub pass: String,
    /// Realm / registrar domain.
    pub realm: String,
    /// Contact to register instead of the default, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
}

/// A binding as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct BindingView {
    /// subscriber_id.
    pub subscriber_id: i64,
    /// user.
    pub user: String,
    /// realm.
    pub realm: String,
    /// The contact registered.
    pub contact: String,
    /// Status name (`active`, …).
    pub status: Status,
    /// Status number as in the database (0–5).
    pub registration_status: i16,
    /// Last final response code.
    pub last_code: Option<u16>,
    /// Its reason phrase.
    pub last_reason: Option<String>,
    /// Last successful registration, RFC 3339.
    pub last_registration: Option<String>,
    /// When the registrar's binding expires, RFC 3339.
    pub expiry: Option<String>,
    /// Contacts from the last positive reply.
    pub contacts: Option<String>,
    /// A request is in flight.
    pub in_flight: bool,
    /// Seconds until the next scheduled REGISTER / de-REGISTER, if any.
    pub next_action_in: Option<u64>,
}

/// Filters of a list.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this user.
    pub user: Option<String>,
    /// Only this realm.
    pub realm: Option<String>,
    /// At most this many (default 1000).
    pub limit: Option<usize>,
    /// Skip this many (by subscriber_id order).
    pub offset: Option<usize>,
}

/// What control calls can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such subscriber.
    #[error("no registration with subscriber_id {0}")]
    NotFound(i64),
    /// Bad argument.
    #[error("{0}")]
    Invalid(String),
    /// The agent is stopping.
    #[error("the SIP agent is stopping")]
    Stopping,
}

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// A control command.
#[derive(Debug)]
pub(crate) enum Command {
    Create(Account, Reply<()>),
    Update(Account, Reply<()>),
    Refresh(i64, Reply<()>),
    Remove(i64, Reply<()>),
    List(ListFilter, oneshot::Sender<(usize, Vec<BindingView>)>),
    Get(i64, oneshot::Sender<Option<BindingView>>),
    Counts(oneshot::Sender<[u64; 6]>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Register,
    Deregister,
}

#[derive(Debug)]
struct Binding {
    acc: Account,
    contact: String,
    call_id: String,
    from_tag: String,
    cseq: u32,
    status: Status,
    last_code: Option<u16>,
    last_reason: Option<String>,
    last_registration: Option<i64>,
    expiry: Option<i64>,
    contacts: Option<String>,
    requested_expires: u32,
    /// Bumped whenever what is scheduled changes; stale timers and queue entries are skipped.
    epoch: u64,
    next: Option<(Action, Instant)>,
    tx: Option<u64>,
    /// The last challenge answered, reused (nc + 1) for 423 retries.
    challenge: Option<(Challenge, bool, u32)>,
}

#[derive(Debug)]
struct Tx {
    id: i64,
    action: Action,
    dest: Dest,
    cseq: u32,
    bytes: Vec<u8>,
    interval: Duration,
    provisional: bool,
    auth_attempts: u8,
    interval_attempts: u8,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// A scheduled REGISTER / de-REGISTER (enters the rate-limited queue). The second is the load slot.
    Fire { id: i64, epoch: u64, slot: i64 },
    /// Timer E (UDP retransmission).
    Retransmit { tx: u64 },
    /// Timer F (transaction timeout).
    Timeout { tx: u64 },
}

/// DNS answers for a target key.
#[derive(Debug)]
struct Resolved {
    key: String,
    result: Result<Vec<Dest>, String>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn rfc3339(unix: Option<i64>) -> Option<String> {
    unix.and_then(|u| chrono::DateTime::from_timestamp(u, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The agent's state machine.
pub(crate) struct Engine {
    cfg: Arc<Config>,
    sockets: Arc<Sockets>,
    writes: mpsc::UnboundedSender<WriteOp>,
    events: Publisher,
    bindings: HashMap<i64, Binding>,
    txs: HashMap<u64, Tx>,
    next_tx: u64,
    branch_prefix: String,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
    timer_seq: u64,
    queue: VecDeque<(i64, u64)>,
    next_send: Instant,
    pace: Option<Duration>,
    proxy: Option<ProxyUri>,
    dns: HashMap<String, (Vec<Dest>, Instant)>,
    waiting: HashMap<String, Vec<(i64, u64)>>,
    resolver: Option<Arc<hickory_resolver::TokioResolver>>,
    resolved_tx: mpsc::UnboundedSender<Resolved>,
    resolved_rx: Option<mpsc::UnboundedReceiver<Resolved>>,
    load: HashMap<i64, u32>,
    counts: [u64; 6],
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("bindings", &self.bindings.len())
            .field("txs", &self.txs.len())
            .finish_non_exhaustive()
    }
}

const DNS_TTL: Duration = Duration::from_secs(300);
/// Most sending credit the rate limiter keeps when its wake-up is late.
const CATCH_UP: Duration = Duration::from_millis(5);
const DNS_FAIL_TTL: Duration = Duration::from_secs(30);

impl Engine {
    pub(crate) fn new(
        cfg: Arc<Config>,
        sockets: Arc<Sockets>,
        writes: mpsc::UnboundedSender<WriteOp>,
        events: Publisher,
    ) -> Self {
        let pace = (cfg.ratelimit_rate > 0).then(|| cfg.ratelimit_per / cfg.ratelimit_rate);
        let proxy = (!cfg.outbound_proxy.is_empty())
            .then(|| ProxyUri::parse(&cfg.outbound_proxy).ok())
            .flatten();
        let (resolved_tx, resolved_rx) = mpsc::unbounded_channel();
        let cfg_dns = cfg.dns_servers.clone();
        Self {
            pace,
            proxy,
            cfg,
            sockets,
            writes,
            events,
            bindings: HashMap::new(),
            txs: HashMap::new(),
            next_tx: 1,
            branch_prefix: format!("z9hG4bK{:08x}-", rand::random::<u32>()),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            queue: VecDeque::new(),
            next_send: Instant::now(),
            dns: HashMap::new(),
            waiting: HashMap::new(),
            resolver: resolve::resolver(&cfg_dns).map(Arc::new),
            resolved_tx,
            resolved_rx: Some(resolved_rx),
            load: HashMap::new(),
            counts: [0; 6],
        }
    }

    fn default_contact(&self, user: &str, realm_dest_ip: Option<std::net::IpAddr>) -> String {
        let user = self.aor_user(user);
        if !self.cfg.contact_hostport.is_empty() {
            return format!("sip:{user}@{}", self.cfg.contact_hostport);
        }
        let local = self.sockets.local_addr();
        let ip = match realm_dest_ip {
            Some(to) => self.sockets.local_ip_for(to),
            None => local.ip(),
        };
        let mut c = format!("sip:{user}@{}:{}", bracket(&ip.to_string()), local.port());
        if self.transport_default() == Transport::Tcp {
            c.push_str(";transport=tcp");
        }
        c
    }

    fn transport_default(&self) -> Transport {
        self.proxy
            .as_ref()
            .and_then(|p| p.transport)
            .unwrap_or(self.cfg.transport)
    }

    fn aor_user<'a>(&self, user: &'a str) -> &'a str {
        if self.cfg.username_with_domain {
            user.split('@').next().unwrap_or(user)
        } else {
            user
        }
    }

    fn set_status(&mut self, id: i64, status: Status) {
        let Some(b) = self.bindings.get_mut(&id) else {
            return;
        };
        let previous = b.status;
        if previous == status {
            return;
        }
        b.status = status;
        self.counts[previous.code() as usize] =
            self.counts[previous.code() as usize].saturating_sub(1);
        self.counts[status.code() as usize] += 1;
        metrics::gauge!(m::REGISTRATIONS, "status" => previous.name()).decrement(1.0);
        metrics::gauge!(m::REGISTRATIONS, "status" => status.name()).increment(1.0);
        let data = serde_json::json!({
            "subscriber_id": id,
            "user": b.acc.user,
            "realm": b.acc.realm,
            "status": status.name(),
            "registration_status": status.code(),
            "previous": previous.name(),
            "last_code": b.last_code,
            "last_reason": b.last_reason,
            "expiry": rfc3339(b.expiry),
            "contact": b.contact,
        });
        let subject = format!("{}@{}", b.acc.user, b.acc.realm);
        let _ = self
            .events
            .publish("sip.registration.changed", Some(subject), data);
    }

    fn save(&self, id: i64) {
        if let Some(b) = self.bindings.get(&id) {
            let _ = self.writes.send(WriteOp::Row(StatusRow {
                subscriber_id: id,
                status: b.status.code(),
                last_code: b.last_code.map(|c| c as i16),
                last_reason: b.last_reason.as_deref().map(|r| truncate(r, 256)),
                last_registration: b.last_registration,
                expiry: b.expiry,
                contacts: b.contacts.as_deref().map(|c| truncate(c, 512)),
            }));
        }
    }

    fn insert_binding(&mut self, acc: Account, status: Status) -> &mut Binding {
        let contact = acc.contact.clone().unwrap_or_else(|| {
            let ip = acc.realm.parse().ok();
            let ip = self.proxy.as_ref().and_then(|p| p.host.parse().ok()).or(ip);
            self.default_contact(&acc.user, ip)
        });
        self.counts[status.code() as usize] += 1;
        metrics::gauge!(m::REGISTRATIONS, "status" => status.name()).increment(1.0);
        let id = acc.subscriber_id;
        if let Some(old) = self.bindings.remove(&id) {
            self.counts[old.status.code() as usize] =
                self.counts[old.status.code() as usize].saturating_sub(1);
            metrics::gauge!(m::REGISTRATIONS, "status" => old.status.name()).decrement(1.0);
            if let Some(tx) = old.tx {
                self.txs.remove(&tx);
            }
        }
        self.bindings.entry(id).or_insert(Binding {
            acc,
            contact,
            call_id: format!("{}@rtcplane", message::new_token()),
            from_tag: message::new_token(),
            cseq: 0,
            status,
            last_code: None,
            last_reason: None,
            last_registration: None,
            expiry: None,
            contacts: None,
            requested_expires: self.cfg.expires,
            epoch: 0,
            next: None,
            tx: None,
            challenge: None,
        })
    }

    /// Loads the subscriptions read at start (SEMS `loadRegistrations`).
    pub(crate) fn load(&mut self, subs: Vec<Subscription>) {
        let now = unix_now();
        let mut initial = 0usize;
        let mut kept = 0usize;
        for s in subs {
            let status = s
                .status
                .and_then(Status::from_code)
                .unwrap_or(Status::Inactive);
            let acc = Account {
                subscriber_id: s.subscriber_id,
                user: s.user,
                pass: s.pass,
                realm: s.realm,
                contact: if self.cfg.db_read_contact {
                    s.contact
                } else {
                    None
                },
            };
            let id = acc.subscriber_id;
            let invalid = acc.validate().err();
            let b = self.insert_binding(acc, status);
            b.expiry = s.expiry;
            b.last_registration = s.last_registration;
            if let Some(e) = invalid {
                // Never put it into a SIP message: recorded, not retried, until the row is fixed and
                // updateRegistration is called (or the agent restarts).
                tracing::warn!(subscriber_id = id, error = %e, "subscriber row cannot be registered");
                b.last_code = Some(400);
                b.last_reason = Some(format!("invalid subscriber: {e}"));
                self.set_status(id, Status::Failed);
                self.save(id);
                continue;
            }
            match status {
                Status::Inactive | Status::Pending | Status::Failed => {
                    self.enqueue(id, Action::Register);
                    initial += 1;
                }
                Status::Active => match s.expiry {
                    Some(expiry) if expiry > now => {
                        let start = s.last_registration.filter(|t| *t <= now).unwrap_or(now);
                        self.schedule_refresh(id, start, expiry, now);
                        kept += 1;
                    }
                    _ => {
                        self.enqueue(id, Action::Register);
                        initial += 1;
                    }
                },
                Status::Removed => {}
                Status::ToBeRemoved => self.enqueue(id, Action::Deregister),
            }
        }
        tracing::info!(
            registering = initial,
            still_valid = kept,
            total = self.bindings.len(),
            "sip agent loaded subscriptions"
        );
    }

    fn push_timer(&mut self, at: Instant, kind: TimerKind) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, kind)));
    }

    /// Queues an action now (rate limited).
    fn enqueue(&mut self, id: i64, action: Action) {
        if let Some(b) = self.bindings.get_mut(&id) {
            b.epoch += 1;
            b.next = Some((action, Instant::now()));
            self.queue.push_back((id, b.epoch));
        }
    }

    /// Schedules an action at `at` (then rate limited).
    fn schedule(&mut self, id: i64, action: Action, at: Instant, slot: i64) {
        if let Some(b) = self.bindings.get_mut(&id) {
            b.epoch += 1;
            b.next = Some((action, at));
            let epoch = b.epoch;
            self.push_timer(at, TimerKind::Fire { id, epoch, slot });
        }
    }

    /// Picks the refresh second: the least loaded of three random seconds in the window between
    /// `minimum_reregister_interval` and `reregister_interval` of the registration's life, never in the
    /// past and never after the expiry.
    fn schedule_refresh(&mut self, id: i64, start: i64, expiry: i64, now: i64) {
        let life = (expiry - start).max(1) as f64;
        let mut lo = start + (life * self.cfg.minimum_reregister_interval) as i64;
        let mut hi = start + (life * self.cfg.reregister_interval) as i64;
        let latest = (expiry - 1).max(now + 1);
        if hi <= now {
            // The window has passed but the binding is still valid: spread over what remains.
            lo = now + 1;
            hi = now + ((expiry - now) as f64 * self.cfg.reregister_interval) as i64;
        }
        lo = lo.max(now + 1);
        hi = hi.clamp(lo, latest);
        let mut best = lo;
        let mut best_load = u32::MAX;
        for _ in 0..3 {
            let t = if hi > lo {
                rand::random_range(lo..=hi)
            } else {
                lo
            };
            let l = self.load.get(&t).copied().unwrap_or(0);
            if l < best_load {
                best = t;
                best_load = l;
            }
        }
        *self.load.entry(best).or_insert(0) += 1;
        let at = Instant::now()
            + Duration::from_secs((best - now).max(0) as u64)
            + Duration::from_millis(rand::random_range(0..1000));
        self.schedule(id, Action::Register, at, best);
    }

    fn schedule_retry(&mut self, id: i64, after: Duration) {
        if after.is_zero() {
            if let Some(b) = self.bindings.get_mut(&id) {
                b.next = None;
                b.epoch += 1;
            }
            return;
        }
        self.schedule(id, Action::Register, Instant::now() + after, 0);
    }

    /// Runs until shutdown, then lets in-flight transactions finish (bounded by `shutdown_grace`).
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
        shutdown: CancellationToken,
    ) {
        let mut resolved = self
            .resolved_rx
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let mut deadline: Option<Instant> = None;
        let mut housekeeping = tokio::time::interval(Duration::from_secs(60));
        loop {
            let stopping = deadline.is_some();
            if let Some(d) = deadline
                && (self.txs.is_empty() || Instant::now() >= d)
            {
                break;
            }
            let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
            let next_pump = if !stopping && !self.queue.is_empty() {
                Some(self.next_send.max(Instant::now()))
            } else {
                None
            };
            let wake = [next_timer, next_pump, deadline]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !stopping => {
                    deadline = Some(Instant::now() + self.cfg.shutdown_grace);
                    tracing::info!(in_flight = self.txs.len(), "sip agent stopping");
                }
                Some(msg) = inbound.recv() => {
                    self.on_inbound(msg);
                    // Drain what is already there without another trip through select.
                    for _ in 0..256 {
                        match inbound.try_recv() {
                            Ok(msg) => self.on_inbound(msg),
                            Err(_) => break,
                        }
                    }
                }
                Some(r) = resolved.recv() => self.on_resolved(r),
                Some(cmd) = commands.recv(), if !stopping => self.on_command(cmd),
                _ = housekeeping.tick() => {
                    let now = unix_now();
                    self.load.retain(|t, _| *t >= now);
                    self.dns.retain(|_, (_, until)| *until > Instant::now());
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            self.fire_timers(stopping);
            if !stopping {
                self.pump();
            }
        }
        // Status is already queued for the writer; dropping the sender lets it flush and stop.
        tracing::info!(unfinished = self.txs.len(), "sip agent stopped");
    }

    fn fire_timers(&mut self, stopping: bool) {
        let now = Instant::now();
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, kind))) = self.timers.pop() else {
                break;
            };
            match kind {
                TimerKind::Fire { id, epoch, slot } => {
                    if let Some(l) = self.load.get_mut(&slot) {
                        *l = l.saturating_sub(1);
                    }
                    if stopping {
                        continue;
                    }
                    if self.bindings.get(&id).is_some_and(|b| b.epoch == epoch) {
                        self.queue.push_back((id, epoch));
                    }
                }
                TimerKind::Retransmit { tx } => self.retransmit(tx),
                TimerKind::Timeout { tx } => {
                    if let Some(t) = self.txs.remove(&tx) {
                        metrics::counter!(m::TIMEOUTS).increment(1);
                        self.record_failure(t.id, t.action, 408, "Request Timeout", None);
                    }
                }
            }
        }
    }

    fn retransmit(&mut self, tx: u64) {
        let t2 = self.cfg.timer_t2;
        let Some(t) = self.txs.get_mut(&tx) else {
            return;
        };
        if t.dest.transport != Transport::Udp {
            return;
        }
        let _ = self.sockets.send(t.dest, t.bytes.clone());
        metrics::counter!(m::REQUESTS, "kind" => "retransmission").increment(1);
        t.interval = if t.provisional {
            t2
        } else {
            (t.interval * 2).min(t2)
        };
        let at = Instant::now() + t.interval;
        self.push_timer(at, TimerKind::Retransmit { tx });
    }

    /// Starts queued actions at the configured pace.
    fn pump(&mut self) {
        let now = Instant::now();
        if self.pace.is_some() {
            // Timers fire with millisecond granularity, so a wake-up is usually a little late: keep up to
            // CATCH_UP of credit (the sends due meanwhile go now), but no more, so that after a quiet spell
            // the pace restarts instead of bursting. (Resetting on any lateness capped 2,000/s at ~1,100/s.)
            if self.next_send + CATCH_UP < now {
                self.next_send = now - CATCH_UP;
            }
        }
        while let Some(&(id, epoch)) = self.queue.front() {
            if self.pace.is_some() && self.next_send > now {
                break;
            }
            self.queue.pop_front();
            let Some(b) = self.bindings.get_mut(&id) else {
                continue;
            };
            if b.epoch != epoch {
                continue;
            }
            let Some((action, _)) = b.next.take() else {
                continue;
            };
            if let Some(pace) = self.pace {
                self.next_send += pace;
            }
            self.start(id, epoch, action);
        }
    }

    fn target_of(&self, realm: &str) -> Result<(String, ProxyUri), String> {
        match &self.proxy {
            Some(p) => Ok((format!("proxy|{}", self.cfg.outbound_proxy), p.clone())),
            None => ProxyUri::parse(realm).map(|u| (format!("realm|{realm}"), u)),
        }
    }

    fn start(&mut self, id: i64, epoch: u64, action: Action) {
        let Some(b) = self.bindings.get(&id) else {
            return;
        };
        let (key, target) = match self.target_of(&b.acc.realm) {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(subscriber_id = id, error = %e, "unusable realm");
                self.fail_unsent(id, action);
                return;
            }
        };
        if let Some((dests, _)) = self.dns.get(&key) {
            match self.pick(dests) {
                Some(dest) => self.send_request(id, action, dest, 0, 0, None),
                None => self.fail_unsent(id, action),
            }
            return;
        }
        // Restore the action: it runs when the answer comes.
        if let Some(b) = self.bindings.get_mut(&id) {
            b.next = Some((action, Instant::now()));
        }
        let waiters = self.waiting.entry(key.clone()).or_default();
        waiters.push((id, epoch));
        if waiters.len() == 1 {
            let resolver = self.resolver.clone();
            let tx = self.resolved_tx.clone();
            let default = self.cfg.transport;
            tokio::spawn(async move {
                let result = resolve::resolve(resolver.as_deref(), &target, default).await;
                let _ = tx.send(Resolved { key, result });
            });
        }
    }

    fn on_resolved(&mut self, r: Resolved) {
        let ttl = if r.result.as_ref().is_ok_and(|d| !d.is_empty()) {
            DNS_TTL
        } else {
            DNS_FAIL_TTL
        };
        if let Err(e) = &r.result {
            tracing::warn!(target = %r.key, error = %e, "sip destination did not resolve");
        }
        let dests = r.result.unwrap_or_default();
        self.dns
            .insert(r.key.clone(), (dests.clone(), Instant::now() + ttl));
        for (id, epoch) in self.waiting.remove(&r.key).unwrap_or_default() {
            let Some(b) = self.bindings.get_mut(&id) else {
                continue;
            };
            if b.epoch != epoch {
                continue;
            }
            let Some((action, _)) = b.next.take() else {
                continue;
            };
            match self.pick(&dests) {
                Some(dest) => self.send_request(id, action, dest, 0, 0, None),
                None => self.fail_unsent(id, action),
            }
        }
    }

    /// The first destination the local socket can reach (an IPv4 socket cannot send to IPv6).
    fn pick(&self, dests: &[Dest]) -> Option<Dest> {
        let local = self.sockets.local_addr().ip();
        dests
            .iter()
            .find(|d| {
                d.addr.is_ipv4() == local.is_ipv4() || (local.is_unspecified() && local.is_ipv6())
            })
            .copied()
    }

    /// Builds and sends a REGISTER (a new transaction); `challenge` is answered when given, the attempt
    /// counters carry over from the transaction it follows.
    fn send_request(
        &mut self,
        id: i64,
        action: Action,
        dest: Dest,
        auth_attempts: u8,
        interval_attempts: u8,
        challenge: Option<(Challenge, bool, u32)>,
    ) {
        let tx_id = self.next_tx;
        self.next_tx += 1;
        let branch = format!("{}{tx_id:x}", self.branch_prefix);
        let local = self.sockets.local_addr();
        let sent_by = format!(
            "{}:{}",
            bracket(&self.sockets.local_ip_for(dest.addr.ip()).to_string()),
            local.port()
        );
        let route = self.proxy.as_ref().map(|p| {
            format!(
                "<sip:{}{};lr>",
                bracket(&p.host),
                p.port.map(|p| format!(":{p}")).unwrap_or_default()
            )
        });
        let user_agent = self.cfg.user_agent.clone();
        let Some(b) = self.bindings.get_mut(&id) else {
            return;
        };
        if let Some(old) = b.tx.take() {
            self.txs.remove(&old);
        }
        b.cseq = b.cseq.wrapping_add(1).max(1);
        let expires = match action {
            Action::Register => b.requested_expires,
            Action::Deregister => 0,
        };
        let user = if self.cfg.username_with_domain {
            b.acc
                .user
                .split('@')
                .next()
                .unwrap_or(&b.acc.user)
                .to_string()
        } else {
            b.acc.user.clone()
        };
        let domain = b.acc.realm.clone();
        let mut auth_value = None;
        let authorized = challenge.is_some();
        if let Some((ch, proxy, nc)) = &challenge {
            let uri = format!("sip:{}", bracket(&domain));
            let value = ch.authorization(
                &b.acc.user,
                &b.acc.pass,
                "REGISTER",
                &uri,
                *nc,
                &message::new_token(),
            );
            auth_value = Some((
                if *proxy {
                    "Proxy-Authorization"
                } else {
                    "Authorization"
                },
                value,
            ));
        }
        b.challenge = challenge;
        let req = Register {
            domain: &domain,
            user: &user,
            contact: &b.contact,
            call_id: &b.call_id,
            from_tag: &b.from_tag,
            cseq: b.cseq,
            branch: &branch,
            transport: dest.transport,
            sent_by: &sent_by,
            expires,
            authorization: auth_value.as_ref().map(|(n, v)| (*n, v.as_str())),
            route: route.as_deref(),
            user_agent: &user_agent,
        };
        let bytes = req.to_bytes();
        let cseq = b.cseq;
        if let Err(e) = self.sockets.send(dest, bytes.clone()) {
            tracing::info!(subscriber_id = id, dest = %dest.addr, error = %e, "cannot send REGISTER");
            self.fail_unsent(id, action);
            return;
        }
        let kind = match (action, authorized) {
            (Action::Deregister, _) => "deregister",
            (Action::Register, true) => "authenticated",
            (Action::Register, false) => "register",
        };
        metrics::counter!(m::REQUESTS, "kind" => kind).increment(1);
        if let Some(b) = self.bindings.get_mut(&id) {
            b.tx = Some(tx_id);
        }
        self.txs.insert(
            tx_id,
            Tx {
                id,
                action,
                dest,
                cseq,
                bytes,
                interval: self.cfg.timer_t1,
                provisional: false,
                auth_attempts,
                interval_attempts,
            },
        );
        let now = Instant::now();
        if dest.transport == Transport::Udp {
            self.push_timer(now + self.cfg.timer_t1, TimerKind::Retransmit { tx: tx_id });
        }
        self.push_timer(now + self.cfg.timer_f(), TimerKind::Timeout { tx: tx_id });
    }

    /// A request that could not be sent: 480 "unable to send request" (SEMS).
    fn fail_unsent(&mut self, id: i64, action: Action) {
        metrics::counter!(m::SEND_FAILURES).increment(1);
        self.record_failure(id, action, 480, "unable to send request", None);
    }

    fn record_failure(
        &mut self,
        id: i64,
        action: Action,
        code: u16,
        reason: &str,
        retry_after: Option<u32>,
    ) {
        let Some(b) = self.bindings.get_mut(&id) else {
            return;
        };
        b.last_code = Some(code);
        b.last_reason = Some(reason.to_string());
        b.tx = None;
        match action {
            Action::Register => {
                self.set_status(id, Status::Failed);
                self.save(id);
                let after = match retry_after {
                    Some(s) if s > 0 => Duration::from_secs(u64::from(s)),
                    _ => self.cfg.retry_interval,
                };
                self.schedule_retry(id, after);
            }
            Action::Deregister => {
                // Failed de-REGISTERs are not retried (SEMS).
                if let Some(b) = self.bindings.get_mut(&id) {
                    b.next = None;
                    b.epoch += 1;
                }
                if self.cfg.delete_removed_registrations && self.cfg.delete_failed_deregistrations {
                    self.set_status(id, Status::Removed);
                    let _ = self.writes.send(WriteOp::Delete(id));
                } else {
                    self.set_status(id, Status::ToBeRemoved);
                    self.save(id);
                }
            }
        }
    }

    fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Response(r) => self.on_response(*r),
            Inbound::Broken(dest) => {
                let broken: Vec<u64> = self
                    .txs
                    .iter()
                    .filter(|(_, t)| t.dest == dest)
                    .map(|(k, _)| *k)
                    .collect();
                for k in broken {
                    if let Some(t) = self.txs.remove(&k) {
                        let action = t.action;
                        let id = t.id;
                        metrics::counter!(m::SEND_FAILURES).increment(1);
                        self.record_failure(id, action, 480, "unable to send request", None);
                    }
                }
            }
        }
    }

    fn on_response(&mut self, r: Response) {
        let Some(tx_id) = r
            .branch
            .strip_prefix(self.branch_prefix.as_str())
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            metrics::counter!(m::STRAY).increment(1);
            return;
        };
        let Some(t) = self.txs.get_mut(&tx_id) else {
            // A retransmitted final response, or one for a transaction that has ended.
            metrics::counter!(m::STRAY).increment(1);
            return;
        };
        let Some(b) = self.bindings.get(&t.id) else {
            return;
        };
        if r.method != "REGISTER" || r.cseq != t.cseq || r.call_id != b.call_id {
            metrics::counter!(m::STRAY).increment(1);
            return;
        }
        metrics::counter!(m::RESPONSES, "class" => m::class(r.code)).increment(1);
        if r.code < 200 {
            t.provisional = true;
            return;
        }
        let Some(t) = self.txs.remove(&tx_id) else {
            return;
        };
        let id = t.id;
        if let Some(b) = self.bindings.get_mut(&id) {
            b.tx = None;
        }
        match r.code {
            200..=299 => self.on_success(t, &r),
            401 | 407 => self.on_challenge(t, &r),
            423 => {
                let min = r.min_expires.unwrap_or(0);
                if t.action == Action::Register && min > 0 && t.interval_attempts < 2 {
                    let challenge = self.bindings.get_mut(&id).and_then(|b| {
                        b.requested_expires = b.requested_expires.max(min);
                        b.challenge.take().map(|(c, p, nc)| (c, p, nc + 1))
                    });
                    self.send_request(
                        id,
                        t.action,
                        t.dest,
                        t.auth_attempts,
                        t.interval_attempts + 1,
                        challenge,
                    );
                } else {
                    self.record_failure(t.id, t.action, r.code, &r.reason, None);
                }
            }
            503 => {
                let after = r.retry_after;
                self.record_failure(t.id, t.action, r.code, &r.reason, after);
            }
            _ => self.record_failure(t.id, t.action, r.code, &r.reason, None),
        }
    }

    fn on_challenge(&mut self, t: Tx, r: &Response) {
        let proxy = r.code == 407;
        let values = if proxy {
            &r.proxy_authenticate
        } else {
            &r.www_authenticate
        };
        let parsed = Challenge::best(values.iter().map(String::as_str));
        let retry = match &parsed {
            Ok(ch) => t.auth_attempts == 0 || (ch.stale && t.auth_attempts < 3),
            Err(e) => {
                tracing::info!(subscriber_id = t.id, error = %e, "cannot answer challenge");
                false
            }
        };
        match parsed {
            Ok(ch) if retry => {
                if self.cfg.save_auth_replies
                    && let Some(b) = self.bindings.get_mut(&t.id)
                {
                    b.last_code = Some(r.code);
                    b.last_reason = Some(r.reason.clone());
                    self.save(t.id);
                }
                metrics::counter!(m::CHALLENGES, "stale" => if ch.stale { "true" } else { "false" }).increment(1);
                self.send_request(
                    t.id,
                    t.action,
                    t.dest,
                    t.auth_attempts + 1,
                    t.interval_attempts,
                    Some((ch, proxy, 1)),
                );
            }
            _ => self.record_failure(t.id, t.action, r.code, &r.reason, None),
        }
    }

    fn on_success(&mut self, t: Tx, r: &Response) {
        let id = t.id;
        let now = unix_now();
        let delete_removed = self.cfg.delete_removed_registrations;
        let save_contacts = self.cfg.save_contacts;
        let Some(b) = self.bindings.get_mut(&id) else {
            return;
        };
        b.last_code = Some(r.code);
        b.last_reason = Some(r.reason.clone());
        if save_contacts {
            b.contacts = Some(r.contacts.join(", "));
        }
        match t.action {
            Action::Register => {
                let granted = message::granted_expiry(r, &b.contact).unwrap_or(b.requested_expires);
                if granted == 0 {
                    // The registrar answered 2xx but holds no binding for our contact.
                    self.record_failure(
                        id,
                        Action::Register,
                        r.code,
                        "binding not kept by registrar",
                        None,
                    );
                    return;
                }
                b.last_registration = Some(now);
                b.expiry = Some(now + i64::from(granted));
                self.set_status(id, Status::Active);
                self.save(id);
                self.schedule_refresh(id, now, now + i64::from(granted), now);
            }
            Action::Deregister => {
                b.next = None;
                b.epoch += 1;
                b.expiry = None;
                self.set_status(id, Status::Removed);
                if delete_removed {
                    let _ = self.writes.send(WriteOp::Delete(id));
                } else {
                    self.save(id);
                }
            }
        }
    }

    fn view(&self, b: &Binding) -> BindingView {
        let now = Instant::now();
        BindingView {
            subscriber_id: b.acc.subscriber_id,
            user: b.acc.user.clone(),
            realm: b.acc.realm.clone(),
            contact: b.contact.clone(),
            status: b.status,
            registration_status: b.status.code(),
            last_code: b.last_code,
            last_reason: b.last_reason.clone(),
            last_registration: rfc3339(b.last_registration),
            expiry: rfc3339(b.expiry),
            contacts: b.contacts.clone(),
            in_flight: b.tx.is_some(),
            next_action_in: b
                .next
                .map(|(_, at)| at.saturating_duration_since(now).as_secs()),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Create(acc, reply) => {
                let id = acc.subscriber_id;
                if self.bindings.contains_key(&id) {
                    tracing::warn!(subscriber_id = id, "registration exists; replacing it");
                }
                self.insert_binding(acc, Status::Inactive);
                self.save(id);
                self.enqueue(id, Action::Register);
                let _ = reply.send(Ok(()));
            }
            Command::Update(acc, reply) => {
                let id = acc.subscriber_id;
                let Some(b) = self.bindings.get_mut(&id) else {
                    tracing::warn!(
                        subscriber_id = id,
                        "updateRegistration of an unknown registration: creating it"
                    );
                    self.insert_binding(acc, Status::Inactive);
                    self.save(id);
                    self.enqueue(id, Action::Register);
                    let _ = reply.send(Ok(()));
                    return;
                };
                let reregister = b.acc.user != acc.user
                    || b.acc.realm != acc.realm
                    || b.acc.contact != acc.contact
                    || b.status == Status::Removed;
                if reregister {
                    // A new AOR: a new binding (new Call-ID); the old one is not de-registered (SEMS).
                    let status = b.status;
                    let b = self.insert_binding(acc, status);
                    let _ = b;
                    self.enqueue(id, Action::Register);
                } else {
                    b.acc = acc;
                }
                let _ = reply.send(Ok(()));
            }
            Command::Refresh(id, reply) => {
                let r = match self.bindings.get(&id) {
                    None => Err(ControlError::NotFound(id)),
                    Some(b) if b.status == Status::Removed => Err(ControlError::Invalid(format!(
                        "registration {id} is removed; update or create it to register again"
                    ))),
                    Some(_) => {
                        self.enqueue(id, Action::Register);
                        Ok(())
                    }
                };
                let _ = reply.send(r);
            }
            Command::Remove(id, reply) => {
                let r = match self.bindings.get(&id) {
                    None => Err(ControlError::NotFound(id)),
                    Some(_) => {
                        // Restart-safe: TO_BE_REMOVED is stored before the de-REGISTER is sent.
                        self.set_status(id, Status::ToBeRemoved);
                        self.save(id);
                        self.enqueue(id, Action::Deregister);
                        Ok(())
                    }
                };
                let _ = reply.send(r);
            }
            Command::List(filter, reply) => {
                let mut ids: Vec<i64> = self
                    .bindings
                    .values()
                    .filter(|b| filter.status.is_none_or(|s| s == b.status))
                    .filter(|b| filter.user.as_ref().is_none_or(|u| *u == b.acc.user))
                    .filter(|b| filter.realm.as_ref().is_none_or(|r| *r == b.acc.realm))
                    .map(|b| b.acc.subscriber_id)
                    .collect();
                ids.sort_unstable();
                let total = ids.len();
                let views = ids
                    .into_iter()
                    .skip(filter.offset.unwrap_or(0))
                    .take(filter.limit.unwrap_or(1000))
                    .filter_map(|id| self.bindings.get(&id).map(|b| self.view(b)))
                    .collect();
                let _ = reply.send((total, views));
            }
            Command::Get(id, reply) => {
                let _ = reply.send(self.bindings.get(&id).map(|b| self.view(b)));
            }
            Command::Counts(reply) => {
                let _ = reply.send(self.counts);
            }
        }
    }
}
