//! `[rooms]`: the Loop rooms service's configuration (loop-server's `rooms.*`, `hawkSessionDuration`,
//! `hawkIdSecret`/`userMacSecret` and TokBox settings, under rtcplane names).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[rooms]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve the Loop rooms API (`/registration`, `/session`, `/rooms…`, also under `/v0/`) on the public
    /// listener.
    pub enabled: bool,
    /// The link handed out for a room (`roomUrl`); `{token}` is replaced by the room token (loop-server
    /// `rooms.webAppUrl`).
    pub web_app_url: String,
    /// The origin clients sign Hawk requests for (`https://loop.example.com`), used for the host and port
    /// of the Hawk MAC behind a TLS terminator or proxy; empty: the request's `Host` header (port 443 if
    /// absent and `X-Forwarded-Proto: https`, else 80).
    pub public_origin: String,
    /// Room lifetime when `expiresIn` is not given (`rooms.defaultTTL`); `expiresIn` is in hours.
    #[serde(with = "hours")]
    pub default_ttl: Duration,
    /// Largest `expiresIn` accepted (`rooms.maxTTL`), whole hours.
    #[serde(with = "hours")]
    pub max_ttl: Duration,
    /// A join or leave moves the room's expiry to now + this (`rooms.extendTTL`; sliding expiry).
    #[serde(with = "hours")]
    pub extend_ttl: Duration,
    /// A participant that does not `refresh` within this is dropped (`rooms.participantTTL`); the join and
    /// refresh answers carry it as `expires`, in seconds.
    #[serde(with = "humantime_serde")]
    pub participant_ttl: Duration,
    /// How long a deleted room's tombstone is listed by `GET /rooms?version=N` (`rooms.deletedTTL`).
    #[serde(with = "humantime_serde")]
    pub deleted_ttl: Duration,
    /// Largest `maxSize` of a room (`rooms.maxSize`).
    pub max_size: u32,
    /// Longest `roomName`, characters (`rooms.maxRoomNameSize`).
    pub max_room_name_size: usize,
    /// Longest `roomOwner`, characters (`rooms.maxRoomOwnerSize`).
    pub max_room_owner_size: usize,
    /// Random bytes in a room token (`rooms.tokenSize`); 8 gives Loop's 11 URL-safe characters.
    pub token_size: usize,
    /// A Hawk session unused for this long is forgotten (`hawkSessionDuration`); each use slides it.
    #[serde(with = "humantime_serde")]
    pub hawk_session_duration: Duration,
    /// Largest accepted difference between a Hawk request's `ts` and the server clock.
    #[serde(with = "humantime_serde")]
    pub hawk_skew: Duration,
    /// Keys the HMACs under which Hawk ids and link-clicker tokens are stored (`hawkIdSecret`,
    /// `userMacSecret`); empty: plain SHA-256. Changing it forgets every session and participant.
    pub hawk_id_secret: String,
    /// The `apiKey` handed to joiners (TokBox's API key in Loop); a room created under another key gets a
    /// new `sessionId` at its next join.
    pub media_api_key: String,
    /// Signs the `sessionToken`s rtcplane issues (HMAC-SHA256), so a media server can check them; empty: a
    /// random key per start (tokens are still checked against the store for Basic auth).
    pub media_secret: String,
    /// `sessionId` template of new rooms: `{token}` is the room token, `{random}` 16 random hex bytes.
    pub media_session_id: String,
    /// TTL of the TURN credentials in the join answer's `iceServers` (when the TURN relay is enabled with
    /// `turn.static_auth_secrets`).
    #[serde(with = "humantime_serde")]
    pub ice_ttl: Duration,
    /// Largest request body on the Loop routes; larger: 413 errno 113.
    pub max_body_bytes: usize,
    /// How often expired participants, rooms, tombstones and Hawk sessions are swept.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Timeout of one SimplePush `PUT` (fire-and-forget).
    #[serde(with = "humantime_serde")]
    pub push_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let eight_weeks = Duration::from_secs(1344 * 3600);
        Self {
            enabled: true,
            web_app_url: "http://localhost:3000/{token}".into(),
            public_origin: String::new(),
            default_ttl: eight_weeks,
            max_ttl: eight_weeks,
            extend_ttl: eight_weeks,
            participant_ttl: Duration::from_secs(300),
            deleted_ttl: Duration::from_secs(1620),
            max_size: 5,
            max_room_name_size: 100,
            max_room_owner_size: 255,
            token_size: 8,
            hawk_session_duration: Duration::from_secs(30 * 86400),
            hawk_skew: Duration::from_secs(60),
            hawk_id_secret: String::new(),
            media_api_key: "rtcplane".into(),
            media_secret: String::new(),
            media_session_id: "{random}".into(),
            ice_ttl: Duration::from_secs(86400),
            max_body_bytes: 64 * 1024,
            sweep_interval: Duration::from_secs(5),
            push_timeout: Duration::from_secs(5),
        }
    }
}

/// Room lifetimes: read as any humantime duration, written in hours when whole (`"1344h"`, Loop's unit),
/// because humantime would write eight weeks as months, days and minutes.
mod hours {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.as_secs() >= 3600 && d.as_secs().is_multiple_of(3600) && d.subsec_nanos() == 0 {
            s.serialize_str(&format!("{}h", d.as_secs() / 3600))
        } else {
            humantime_serde::serialize(d, s)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// A configuration problem under `[rooms]`, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// The key below `[rooms]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl Config {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if !self.web_app_url.contains("{token}") {
            return Err(err("web_app_url", "must contain `{token}`"));
        }
        if !self.public_origin.is_empty()
            && crate::hawk::Origin::parse(&self.public_origin).is_none()
        {
            return Err(err(
                "public_origin",
                format!(
                    "{:?} is not an origin like https://loop.example.com[:port]",
                    self.public_origin
                ),
            ));
        }
        for (key, d) in [
            ("default_ttl", self.default_ttl),
            ("max_ttl", self.max_ttl),
            ("extend_ttl", self.extend_ttl),
            ("participant_ttl", self.participant_ttl),
            ("deleted_ttl", self.deleted_ttl),
            ("hawk_session_duration", self.hawk_session_duration),
            ("sweep_interval", self.sweep_interval),
            ("push_timeout", self.push_timeout),
            ("ice_ttl", self.ice_ttl),
        ] {
            if d < Duration::from_millis(10) {
                return Err(err(key, "must be at least 10ms"));
            }
        }
        if self.max_size < 2 {
            return Err(err("max_size", "must be at least 2"));
        }
        if !(4..=64).contains(&self.token_size) {
            return Err(err("token_size", "must be 4 to 64 bytes"));
        }
        if self.max_room_name_size == 0 || self.max_room_owner_size == 0 {
            let key = if self.max_room_name_size == 0 {
                "max_room_name_size"
            } else {
                "max_room_owner_size"
            };
            return Err(err(key, "must be at least 1"));
        }
        if self.max_body_bytes < 1024 {
            return Err(err("max_body_bytes", "must be at least 1024"));
        }
        if self.media_api_key.is_empty() || self.media_api_key.len() > 255 {
            return Err(err("media_api_key", "must be 1 to 255 characters"));
        }
        if self.media_session_id.is_empty() || self.media_session_id.len() > 200 {
            return Err(err("media_session_id", "must be 1 to 200 characters"));
        }
        Ok(())
    }

    /// `max_ttl` in whole hours (the unit of `expiresIn`), at least 1.
    pub(crate) fn max_ttl_hours(&self) -> i64 {
        i64::try_from(self.max_ttl.as_secs() / 3600)
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// `participant_ttl` in seconds as the join and refresh answers carry it (`expires`): whole seconds
    /// as an integer, a shorter test value as a fraction.
    pub(crate) fn participant_ttl_json(&self) -> serde_json::Value {
        let secs = self.participant_ttl.as_secs_f64();
        if secs.fract() == 0.0 {
            serde_json::json!(self.participant_ttl.as_secs())
        } else {
            serde_json::json!(secs)
        }
    }
}
