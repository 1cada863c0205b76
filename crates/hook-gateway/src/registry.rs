//! The live registry: clients, publishers and players per stream, kept from the hooks themselves, with the
//! bus events `hooks.client.connected|disconnected`, `hooks.stream.published|unpublished`,
//! `hooks.play.started|stopped`. Entries of a media server that stops calling expire after
//! `hooks.registry_ttl` (their "ended" events say `reason: expired`).
//!
//! It is per node and in memory: what one node's media servers told it. Order of notifications is not
//! trusted (nginx-rtmp may send `disconnect` before `publish_done`, `done` before either): every removal is
//! idempotent and `done` removes whatever role the client held.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use rtcplane_event_bus::Publisher;
use serde::Serialize;
use serde_json::json;
use sha2::Digest;
use utoipa::ToSchema;

use crate::model::{Action, Decision, HookRequest, ServerKind};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StreamId {
    server: ServerKind,
    server_id: String,
    vhost: String,
    app: String,
    stream: String,
}

impl StreamId {
    fn of(req: &HookRequest, stream: &str) -> Self {
        Self {
            server: req.server,
            server_id: req.server_id.clone(),
            vhost: req.vhost.clone(),
            app: req.app.clone(),
            stream: stream.to_owned(),
        }
    }

    fn public_id(&self) -> String {
        let d = sha2::Sha256::digest(
            format!(
                "{}\0{}\0{}\0{}\0{}",
                self.server.as_str(),
                self.server_id,
                self.vhost,
                self.app,
                self.stream
            )
            .as_bytes(),
        );
        d.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientId {
    server: ServerKind,
    server_id: String,
    client: String,
}

#[derive(Clone, Debug)]
struct Member {
    client_id: Option<String>,
    ip: Option<IpAddr>,
    protocol: Option<String>,
    since: i64,
    last_seen: i64,
}

#[derive(Clone, Debug, Default)]
struct StreamEntry {
    publisher: Option<Member>,
    players: HashMap<String, Member>,
    renamed_from: Option<String>,
}

#[derive(Clone, Debug)]
struct ClientEntry {
    ip: Option<IpAddr>,
    vhost: String,
    app: String,
    since: i64,
    last_seen: i64,
}

#[derive(Debug, Default)]
struct State {
    streams: HashMap<StreamId, StreamEntry>,
    clients: HashMap<ClientId, ClientEntry>,
    servers: HashMap<(ServerKind, String), i64>,
    /// nginx-rtmp renames: (server, server_id, app, name the client used) → public name.
    renames: HashMap<(ServerKind, String, String, String), String>,
    /// Clients to drop at their next `update` (nginx-rtmp kick).
    kicks: HashSet<ClientId>,
}

/// One publisher or player, as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct MemberView {
    /// The media server's client id.
    pub client_id: Option<String>,
    /// Client address.
    pub ip: Option<String>,
    /// Transport (MediaMTX).
    pub protocol: Option<String>,
    /// Unix ms.
    pub since: i64,
    /// Unix ms of the last hook about it.
    pub last_seen: i64,
}

/// One stream, as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StreamView {
    /// Stable id for `/api/v1/streams/{id}`.
    pub id: String,
    /// `srs`, `nginx-rtmp` or `mediamtx`.
    pub server: String,
    /// The media server instance.
    pub server_id: String,
    /// Vhost (SRS).
    pub vhost: String,
    /// App.
    pub app: String,
    /// Stream name (the public name after a stream-key rename).
    pub stream: String,
    /// The name the publisher used, when renamed.
    pub renamed_from: Option<String>,
    /// The publisher, if publishing.
    pub publisher: Option<MemberView>,
    /// Players.
    pub players: Vec<MemberView>,
}

fn member_view(m: &Member) -> MemberView {
    MemberView {
        client_id: m.client_id.clone(),
        ip: m.ip.map(|i| i.to_string()),
        protocol: m.protocol.clone(),
        since: m.since,
        last_seen: m.last_seen,
    }
}

/// How a kick is carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KickPlan {
    /// nginx-rtmp: the publisher's next `update` is answered 403 and nginx drops it.
    NextUpdate,
    /// SRS: `DELETE <srs_api_url>/api/v1/clients/<client_id>`.
    SrsApi(String),
}

/// The registry.
#[derive(Debug)]
pub struct Registry {
    state: Mutex<State>,
    events: Publisher,
    ttl: Duration,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Registry {
    /// An empty registry publishing on `events`.
    pub fn new(events: Publisher, ttl: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            events,
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, ty: &str, id: &StreamId, extra: serde_json::Value) {
        let mut data = json!({
            "server": id.server.as_str(),
            "server_id": id.server_id,
            "vhost": id.vhost,
            "app": id.app,
            "stream": id.stream,
        });
        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                d.insert(k.clone(), v.clone());
            }
        }
        let _ = self
            .events
            .publish(ty, Some(format!("{}/{}", id.app, id.stream)), data);
    }

    fn client_event(&self, ty: &str, cid: &ClientId, c: &ClientEntry, reason: &str) {
        let _ = self.events.publish(
            ty,
            Some(cid.client.clone()),
            json!({
                "server": cid.server.as_str(),
                "server_id": cid.server_id,
                "client_id": cid.client,
                "ip": c.ip.map(|i| i.to_string()),
                "vhost": c.vhost,
                "app": c.app,
                "since": c.since,
                "reason": reason,
            }),
        );
    }

    /// Records that a media server is alive (SRS heartbeat), keeping its entries from expiring.
    pub fn touch_server(&self, server: ServerKind, server_id: &str) {
        self.lock()
            .servers
            .insert((server, server_id.to_owned()), now_ms());
    }

    /// True if this client is to be dropped at its next update.
    pub fn is_kicked(&self, req: &HookRequest) -> bool {
        let Some(client) = &req.client_id else {
            return false;
        };
        self.lock().kicks.contains(&ClientId {
            server: req.server,
            server_id: req.server_id.clone(),
            client: client.clone(),
        })
    }

    /// Applies a request that was answered with `decision`; `public` is the public name and key fingerprint
    /// when a stream key was the stream name (the key is never recorded).
    pub fn apply(&self, req: &HookRequest, decision: &Decision, public: Option<&(String, String)>) {
        let now = now_ms();
        let mut st = self.lock();
        st.servers.insert((req.server, req.server_id.clone()), now);
        let allowed = !matches!(decision, Decision::Deny(_));
        let cid = req.client_id.as_ref().map(|c| ClientId {
            server: req.server,
            server_id: req.server_id.clone(),
            client: c.clone(),
        });
        // Any allowed request from a known client id makes the client known (nginx-rtmp's connect has no id).
        if allowed
            && let Some(cid) = &cid
            && !matches!(req.action, Action::Close)
        {
            match st.clients.get_mut(cid) {
                Some(c) => c.last_seen = now,
                None => {
                    let entry = ClientEntry {
                        ip: req.ip,
                        vhost: req.vhost.clone(),
                        app: req.app.clone(),
                        since: now,
                        last_seen: now,
                    };
                    self.client_event("hooks.client.connected", cid, &entry, "hook");
                    st.clients.insert(cid.clone(), entry);
                }
            }
        }
        let member = || Member {
            client_id: req.client_id.clone(),
            ip: req.ip,
            protocol: req.protocol.clone(),
            since: now,
            last_seen: now,
        };
        let rename_key = (
            req.server,
            req.server_id.clone(),
            req.app.clone(),
            req.stream.clone(),
        );
        let public_name = st
            .renames
            .get(&rename_key)
            .cloned()
            .unwrap_or_else(|| req.stream.clone());
        match (req.action, allowed) {
            (Action::Publish, true) => {
                let (name, renamed_from) = match (public, decision) {
                    (Some((name, fingerprint)), _) => {
                        st.renames.insert(rename_key, name.clone());
                        (name.clone(), Some(format!("stream key {fingerprint}")))
                    }
                    (None, Decision::Redirect(to)) if !to.contains("://") => {
                        st.renames.insert(rename_key, to.clone());
                        (to.clone(), Some(req.stream.clone()))
                    }
                    _ => (req.stream.clone(), None),
                };
                let id = StreamId::of(req, &name);
                let entry = st.streams.entry(id.clone()).or_default();
                entry.publisher = Some(member());
                entry.renamed_from = renamed_from;
                drop(st);
                self.publish(
                    "hooks.stream.published",
                    &id,
                    json!({"client_id": req.client_id, "ip": req.ip.map(|i| i.to_string()), "protocol": req.protocol, "query_keys": req.query.iter().map(|(k, _)| k).collect::<Vec<_>>()}),
                );
            }
            (Action::Play, true) => {
                let id = StreamId::of(req, &public_name);
                let key = req
                    .client_id
                    .clone()
                    .or_else(|| req.ip.map(|i| i.to_string()))
                    .unwrap_or_default();
                st.streams
                    .entry(id.clone())
                    .or_default()
                    .players
                    .insert(key, member());
                drop(st);
                self.publish(
                    "hooks.play.started",
                    &id,
                    json!({"client_id": req.client_id, "ip": req.ip.map(|i| i.to_string()), "protocol": req.protocol}),
                );
            }
            (Action::Update, true) => {
                let id = StreamId::of(req, &public_name);
                if let Some(e) = st.streams.get_mut(&id) {
                    if let Some(p) = e
                        .publisher
                        .as_mut()
                        .filter(|p| p.client_id == req.client_id)
                    {
                        p.last_seen = now;
                    }
                    if let Some(c) = &req.client_id
                        && let Some(p) = e.players.get_mut(c)
                    {
                        p.last_seen = now;
                    }
                }
            }
            (Action::Unpublish, _) => {
                let id = StreamId::of(req, &public_name);
                st.renames.remove(&rename_key);
                self.end_publisher(st, &id, req.client_id.as_deref(), "unpublished");
            }
            (Action::Stop, _) => {
                let id = StreamId::of(req, &public_name);
                self.end_player(st, &id, req.client_id.as_deref(), "stopped");
            }
            (Action::Done, _) => {
                let id = StreamId::of(req, &public_name);
                let is_publisher = st
                    .streams
                    .get(&id)
                    .and_then(|e| e.publisher.as_ref())
                    .is_some_and(|p| p.client_id == req.client_id);
                if is_publisher {
                    st.renames.remove(&rename_key);
                    self.end_publisher(st, &id, req.client_id.as_deref(), "unpublished");
                } else {
                    self.end_player(st, &id, req.client_id.as_deref(), "stopped");
                }
            }
            (Action::Close, _) => {
                if let Some(cid) = cid {
                    st.kicks.remove(&cid);
                    self.end_client(st, &cid, "closed");
                }
            }
            _ => {}
        }
    }

    fn end_publisher(
        &self,
        mut st: std::sync::MutexGuard<'_, State>,
        id: &StreamId,
        client: Option<&str>,
        reason: &str,
    ) {
        let Some(entry) = st.streams.get_mut(id) else {
            return;
        };
        let removed = match &entry.publisher {
            Some(p) if client.is_none() || p.client_id.as_deref() == client => {
                entry.publisher.take()
            }
            _ => None,
        };
        if entry.publisher.is_none() && entry.players.is_empty() {
            st.streams.remove(id);
        }
        drop(st);
        if let Some(p) = removed {
            self.publish(
                "hooks.stream.unpublished",
                id,
                json!({"client_id": p.client_id, "reason": reason, "duration_ms": now_ms() - p.since}),
            );
        }
    }

    fn end_player(
        &self,
        mut st: std::sync::MutexGuard<'_, State>,
        id: &StreamId,
        client: Option<&str>,
        reason: &str,
    ) {
        let Some(entry) = st.streams.get_mut(id) else {
            return;
        };
        let removed = client.and_then(|c| entry.players.remove(c));
        if entry.publisher.is_none() && entry.players.is_empty() {
            st.streams.remove(id);
        }
        drop(st);
        if let Some(p) = removed {
            self.publish(
                "hooks.play.stopped",
                id,
                json!({"client_id": p.client_id, "reason": reason, "duration_ms": now_ms() - p.since}),
            );
        }
    }

    fn end_client(&self, mut st: std::sync::MutexGuard<'_, State>, cid: &ClientId, reason: &str) {
        let client = st.clients.remove(cid);
        // Roles the client still holds end with it.
        let mut ended = Vec::new();
        st.streams.retain(|id, e| {
            if id.server != cid.server || id.server_id != cid.server_id {
                return true;
            }
            if e.publisher.as_ref().and_then(|p| p.client_id.as_deref())
                == Some(cid.client.as_str())
            {
                ended.push(("hooks.stream.unpublished", id.clone(), e.publisher.take()));
            }
            if let Some(p) = e.players.remove(&cid.client) {
                ended.push(("hooks.play.stopped", id.clone(), Some(p)));
            }
            e.publisher.is_some() || !e.players.is_empty()
        });
        drop(st);
        for (ty, id, m) in ended {
            let since = m.map_or(0, |m| m.since);
            self.publish(
                ty,
                &id,
                json!({"client_id": cid.client, "reason": reason, "duration_ms": now_ms() - since}),
            );
        }
        if let Some(c) = client {
            self.client_event("hooks.client.disconnected", cid, &c, reason);
        }
    }

    /// Drops what the TTL says is gone; called periodically.
    pub fn expire(&self) {
        let now = now_ms();
        let ttl = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut st = self.lock();
        // A call from its media server keeps an entry alive, except for MediaMTX, which never says when a
        // client leaves: its entries live `ttl` from their own last hook.
        let alive = |st: &State, server: ServerKind, server_id: &str, last_seen: i64| {
            let server_seen = if server == ServerKind::Mediamtx {
                0
            } else {
                st.servers
                    .get(&(server, server_id.to_owned()))
                    .copied()
                    .unwrap_or(0)
            };
            now - last_seen.max(server_seen) <= ttl
        };
        let stale_clients: Vec<ClientId> = st
            .clients
            .iter()
            .filter(|(id, c)| !alive(&st, id.server, &id.server_id, c.last_seen))
            .map(|(id, _)| id.clone())
            .collect();
        let mut ended = Vec::new();
        let snapshot: Vec<StreamId> = st.streams.keys().cloned().collect();
        for id in snapshot {
            let (pub_stale, stale_players) = {
                let Some(e) = st.streams.get(&id) else {
                    continue;
                };
                let pub_stale = e
                    .publisher
                    .as_ref()
                    .is_some_and(|p| !alive(&st, id.server, &id.server_id, p.last_seen));
                let players: Vec<String> = e
                    .players
                    .iter()
                    .filter(|(_, p)| !alive(&st, id.server, &id.server_id, p.last_seen))
                    .map(|(k, _)| k.clone())
                    .collect();
                (pub_stale, players)
            };
            if let Some(e) = st.streams.get_mut(&id) {
                if pub_stale && let Some(p) = e.publisher.take() {
                    ended.push(("hooks.stream.unpublished", id.clone(), p));
                }
                for k in stale_players {
                    if let Some(p) = e.players.remove(&k) {
                        ended.push(("hooks.play.stopped", id.clone(), p));
                    }
                }
                if e.publisher.is_none() && e.players.is_empty() {
                    st.streams.remove(&id);
                }
            }
        }
        let mut gone_clients = Vec::new();
        for id in stale_clients {
            if let Some(c) = st.clients.remove(&id) {
                st.kicks.remove(&id);
                gone_clients.push((id, c));
            }
        }
        st.servers.retain(|_, seen| now - *seen <= ttl);
        let servers: HashSet<(ServerKind, String)> = st.servers.keys().cloned().collect();
        st.renames
            .retain(|(kind, id, _, _), _| servers.contains(&(*kind, id.clone())));
        st.kicks
            .retain(|c| servers.contains(&(c.server, c.server_id.clone())));
        let (publishers, players) = st.streams.values().fold((0usize, 0usize), |(p, l), e| {
            (p + usize::from(e.publisher.is_some()), l + e.players.len())
        });
        let clients = st.clients.len();
        drop(st);
        metrics::gauge!(crate::metrics::PUBLISHERS).set(publishers as f64);
        metrics::gauge!(crate::metrics::PLAYERS).set(players as f64);
        metrics::gauge!(crate::metrics::CLIENTS).set(clients as f64);
        for (ty, id, m) in ended {
            self.publish(
                ty,
                &id,
                json!({"client_id": m.client_id, "reason": "expired", "duration_ms": now - m.since}),
            );
        }
        for (id, c) in gone_clients {
            self.client_event("hooks.client.disconnected", &id, &c, "expired");
        }
    }

    /// Every stream, by app and name.
    pub fn streams(&self) -> Vec<StreamView> {
        let st = self.lock();
        let mut out: Vec<StreamView> = st
            .streams
            .iter()
            .map(|(id, e)| {
                let mut players: Vec<MemberView> = e.players.values().map(member_view).collect();
                players.sort_by_key(|a| a.since);
                StreamView {
                    id: id.public_id(),
                    server: id.server.as_str().into(),
                    server_id: id.server_id.clone(),
                    vhost: id.vhost.clone(),
                    app: id.app.clone(),
                    stream: id.stream.clone(),
                    renamed_from: e.renamed_from.clone(),
                    publisher: e.publisher.as_ref().map(member_view),
                    players,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.app, &a.stream, &a.server_id).cmp(&(&b.app, &b.stream, &b.server_id))
        });
        out
    }

    /// How to kick the publisher of stream `id`; marks nginx-rtmp publishers for their next update.
    pub fn plan_kick(&self, id: &str, srs_api_url: &str) -> Result<KickPlan, String> {
        let mut st = self.lock();
        let Some((sid, entry)) = st.streams.iter().find(|(s, _)| s.public_id() == id) else {
            return Err("not_found".into());
        };
        let Some(client) = entry.publisher.as_ref().and_then(|p| p.client_id.clone()) else {
            return Err("the stream has no publisher with a client id".into());
        };
        let cid = ClientId {
            server: sid.server,
            server_id: sid.server_id.clone(),
            client: client.clone(),
        };
        match sid.server {
            ServerKind::NginxRtmp => {
                st.kicks.insert(cid);
                Ok(KickPlan::NextUpdate)
            }
            ServerKind::Srs if !srs_api_url.is_empty() => Ok(KickPlan::SrsApi(format!(
                "{}/api/v1/clients/{}",
                srs_api_url.trim_end_matches('/'),
                form_urlencoded::byte_serialize(client.as_bytes()).collect::<String>()
            ))),
            ServerKind::Srs => Err("set hooks.srs_api_url to kick SRS clients".into()),
            ServerKind::Mediamtx => {
                Err("MediaMTX clients cannot be kicked from its auth hook".into())
            }
        }
    }
}
