//! The event envelope: CloudEvents 1.0 attributes in their JSON form, plus the `node` extension.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The CloudEvents specification version this envelope follows.
pub const SPEC_VERSION: &str = "1.0";

/// One event, as published on the bus, streamed over SSE and delivered to webhooks.
///
/// Serialized as CloudEvents JSON: `specversion`, `id` (UUIDv7, so ids sort by time), `time` (RFC 3339),
/// `source` (`/rtcplane/<node>/<subsystem>`), `type` (`<subsystem>.<noun>.<verb>`), optional `subject`,
/// `datacontenttype` and `data`. The `node` extension attribute names the publishing node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always [`SPEC_VERSION`].
    pub specversion: String,
    /// Unique id, a UUIDv7.
    pub id: Uuid,
    /// When the event happened.
    #[serde(with = "rfc3339")]
    pub time: DateTime<Utc>,
    /// `/rtcplane/<node>/<subsystem>`.
    pub source: String,
    /// Dotted lowercase type, e.g. `turn.allocation.created`.
    #[serde(rename = "type")]
    pub ty: String,
    /// What the event is about (an allocation id, a subscriber id, a stream name, a room token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The node that published the event (CloudEvents extension attribute).
    pub node: String,
    /// The payload.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Why an event could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The type is not dotted lowercase ASCII.
    #[error(
        "invalid event type {0:?}: expected dotted lowercase words such as `turn.allocation.created`"
    )]
    InvalidType(String),
    /// The bytes are not a valid event envelope.
    #[error("malformed event envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The envelope names a CloudEvents version we do not speak.
    #[error("unsupported CloudEvents specversion {0:?}")]
    SpecVersion(String),
}

impl Event {
    /// Builds an event now, with a fresh UUIDv7.
    pub fn new(
        node: &str,
        subsystem: &str,
        ty: &str,
        subject: Option<String>,
        data: serde_json::Value,
    ) -> Result<Self, EventError> {
        if !valid_type(ty) {
            return Err(EventError::InvalidType(ty.to_owned()));
        }
        Ok(Self {
            specversion: SPEC_VERSION.to_owned(),
            id: Uuid::now_v7(),
            // Microseconds, the precision the JSON form carries, so an event reads back equal.
            time: Utc::now().trunc_subsecs(6),
            source: format!("/rtcplane/{node}/{subsystem}"),
            ty: ty.to_owned(),
            subject,
            datacontenttype: "application/json".to_owned(),
            node: node.to_owned(),
            data,
        })
    }

    /// Reads an envelope from JSON bytes (as received from Redis), checking the spec version and type.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        let event: Event = serde_json::from_slice(bytes)?;
        if event.specversion != SPEC_VERSION {
            return Err(EventError::SpecVersion(event.specversion));
        }
        if !valid_type(&event.ty) {
            return Err(EventError::InvalidType(event.ty));
        }
        Ok(event)
    }

    /// The envelope as compact JSON.
    pub fn to_json(&self) -> String {
        // Serializing this struct cannot fail: every field is a string, a UUID, a timestamp or a JSON value.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// `a.b.c`: one or more dot-separated words of `[a-z0-9_-]`, starting with a letter.
fn valid_type(ty: &str) -> bool {
    !ty.is_empty()
        && ty.len() <= 128
        && ty.split('.').all(|word| {
            word.starts_with(|c: char| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        })
}

mod rfc3339 {
    use super::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envelope_has_cloudevents_attributes() {
        let e = Event::new(
            "node-a",
            "turn",
            "turn.allocation.created",
            Some("42".into()),
            serde_json::json!({"user": "alice"}),
        )
        .expect("valid event");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).expect("json");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "turn.allocation.created");
        assert_eq!(v["source"], "/rtcplane/node-a/turn");
        assert_eq!(v["subject"], "42");
        assert_eq!(v["node"], "node-a");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"]["user"], "alice");
        assert_eq!(e.id.get_version_num(), 7);
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn rejects_bad_types_and_envelopes() {
        for ty in ["", "Turn.x", "turn..x", ".turn", "turn.", "turn x", "1turn"] {
            assert!(
                Event::new("n", "s", ty, None, serde_json::Value::Null).is_err(),
                "{ty:?}"
            );
        }
        assert!(matches!(
            Event::from_json(b"{"),
            Err(EventError::Malformed(_))
        ));
        let mut e = Event::new("n", "s", "a.b", None, serde_json::Value::Null).expect("event");
        e.specversion = "0.3".into();
        assert!(matches!(
            Event::from_json(e.to_json().as_bytes()),
            Err(EventError::SpecVersion(_))
        ));
    }

    proptest! {
        #[test]
        fn json_round_trip(ty in "[a-z][a-z0-9_]{0,8}(\\.[a-z][a-z0-9_-]{0,8}){0,3}",
                           subject in proptest::option::of(".{0,20}"),
                           n in any::<i64>(), s in ".{0,30}") {
            let e = Event::new("node", "sub", &ty, subject, serde_json::json!({"n": n, "s": s})).expect("event");
            let back = Event::from_json(e.to_json().as_bytes()).expect("round trip");
            prop_assert_eq!(back, e);
        }

        #[test]
        fn from_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Event::from_json(&bytes);
        }
    }
}
