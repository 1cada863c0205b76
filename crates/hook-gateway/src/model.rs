//! The one normalized model every dialect is read into, and the decision every dialect writes back.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Which media server called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    /// SRS HTTP callbacks.
    Srs,
    /// nginx-rtmp `on_*` notify.
    NginxRtmp,
    /// MediaMTX external HTTP authentication.
    Mediamtx,
}

impl ServerKind {
    /// As in metrics and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Srs => "srs",
            Self::NginxRtmp => "nginx-rtmp",
            Self::Mediamtx => "mediamtx",
        }
    }
}

/// What the client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Connects to an app (SRS on_connect, nginx-rtmp connect).
    Connect,
    /// Starts publishing a stream.
    Publish,
    /// Starts playing a stream (MediaMTX `read` and `playback`).
    Play,
    /// Still publishing or playing (nginx-rtmp update_publish / update_play): a deny drops the client.
    Update,
    /// Stops publishing (SRS on_unpublish, nginx-rtmp publish_done).
    Unpublish,
    /// Stops playing (SRS on_stop, nginx-rtmp play_done).
    Stop,
    /// nginx-rtmp `done`: stops publishing or playing.
    Done,
    /// Disconnects (SRS on_close, nginx-rtmp disconnect).
    Close,
    /// A recording segment is done (SRS on_dvr, nginx-rtmp record_done).
    Record,
    /// An HLS segment is ready (SRS on_hls).
    Hls,
    /// MediaMTX `api`, `metrics`, `pprof`.
    Api,
}

impl Action {
    /// As in metrics and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Publish => "publish",
            Self::Play => "play",
            Self::Update => "update",
            Self::Unpublish => "unpublish",
            Self::Stop => "stop",
            Self::Done => "done",
            Self::Close => "close",
            Self::Record => "record",
            Self::Hls => "hls",
            Self::Api => "api",
        }
    }

    /// Whether the policy decides it; the others are notifications, always answered "allow".
    pub fn is_decided(self) -> bool {
        matches!(
            self,
            Self::Connect | Self::Publish | Self::Play | Self::Update | Self::Api
        )
    }
}

/// Publisher or player, for `update` and `done`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Publishes.
    Publisher,
    /// Plays.
    Player,
}

/// A hook request in the one model.
#[derive(Clone, PartialEq, Eq)]
pub struct HookRequest {
    /// Dialect.
    pub server: ServerKind,
    /// The media server instance: SRS's `server_id`, else the address it called from.
    pub server_id: String,
    /// What happens.
    pub action: Action,
    /// For `update`: which role the client is in.
    pub role: Option<Role>,
    /// The media server's id of the client connection.
    pub client_id: Option<String>,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// Vhost (SRS; empty elsewhere).
    pub vhost: String,
    /// App (`live`); for MediaMTX the path up to its last `/`.
    pub app: String,
    /// Stream name, without query.
    pub stream: String,
    /// The client's query parameters (from the stream or tcUrl query), in order.
    pub query: Vec<(String, String)>,
    /// Transport for MediaMTX (`rtmp`, `rtsp`, `webrtc`, …).
    pub protocol: Option<String>,
    /// User name (MediaMTX).
    pub user: Option<String>,
    /// Password or token (MediaMTX); never logged.
    pub password: Option<String>,
}

impl std::fmt::Debug for HookRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRequest")
            .field("server", &self.server)
            .field("server_id", &self.server_id)
            .field("action", &self.action)
            .field("role", &self.role)
            .field("client_id", &self.client_id)
            .field("ip", &self.ip)
            .field("vhost", &self.vhost)
            .field("app", &self.app)
            .field("stream", &self.stream)
            .field(
                "query_keys",
                &self.query.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("protocol", &self.protocol)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl HookRequest {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the gateway answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Refused, with the reason (logged, and returned where the dialect has a body for it).
    Deny(String),
    /// Allowed under another name (`Location: <name>`) or relayed (`Location: rtmp://…`): nginx-rtmp only;
    /// other dialects treat it as allow.
    Redirect(String),
}

impl Decision {
    /// As in metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny(_) => "deny",
            Self::Redirect(_) => "redirect",
        }
    }
}

/// Why a hook request could not be read: answered 400 with this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Splits `a=1&b=2` into pairs, percent-decoded, keeping order and duplicates.
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    let q = q.strip_prefix('?').unwrap_or(q);
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// `name?query` into the name and the parsed query.
pub(crate) fn split_stream(s: &str) -> (String, Vec<(String, String)>) {
    match s.split_once('?') {
        Some((name, q)) => (name.to_owned(), parse_query(q)),
        None => (s.to_owned(), Vec::new()),
    }
}

/// A JSON field as text: strings as they are, numbers printed (SRS sent `client_id` as a number before v4).
pub(crate) fn json_text(v: &serde_json::Value, key: &str) -> Option<String> {
    match v.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `ip` field of a JSON hook: absent or empty is none, anything else must be an address.
pub(crate) fn json_ip(v: &serde_json::Value) -> Result<Option<IpAddr>, BadRequest> {
    match json_text(v, "ip") {
        Some(s) if !s.is_empty() => s
            .parse()
            .map(Some)
            .map_err(|_| BadRequest(format!("`ip` {s:?} is not an IP address"))),
        _ => Ok(None),
    }
}
