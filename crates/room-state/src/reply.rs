//! Answers of the Loop routes: a status, an optional JSON body, extra headers. Errors have Loop's shape
//! `{code, errno, error[, message]}` (loop-server `utils.sendError`) and its errno values (`errno.json`).
//! The Hawk signature and the `Timestamp` header are added in one place, `api::finish`.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};

/// Loop's errno values (`loop/errno.json`).
pub mod errno {
    /// 404 "Token not found." / "Room not found.".
    pub const INVALID_TOKEN: u16 = 105;
    /// Unreadable JSON, or a non-JSON `Accept` (406).
    pub const BADJSON: u16 = 106;
    /// A parameter with a wrong value.
    pub const INVALID_PARAMETERS: u16 = 107;
    /// "Missing: a, b".
    pub const MISSING_PARAMETERS: u16 = 108;
    /// Every 401.
    pub const INVALID_AUTH_TOKEN: u16 = 110;
    /// 410 "Participation has expired.".
    pub const EXPIRED: u16 = 111;
    /// 413.
    pub const REQUEST_TOO_LARGE: u16 = 113;
    /// The joiner's client cannot handle that many participants.
    pub const CLIENT_REACHED_CAPACITY: u16 = 121;
    /// 503.
    pub const BACKEND: u16 = 201;
    /// "The room is full.".
    pub const ROOM_FULL: u16 = 202;
    /// The caller is not in the room.
    pub const NOT_ROOM_PARTICIPANT: u16 = 203;
    /// The 403 owner/participant checks and unknown resources.
    pub const UNDEFINED: u16 = 999;
}

/// One answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    /// An answer without a body (204, or loop-server's empty 200).
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    /// A Loop error.
    pub fn error(status: StatusCode, errno: u16, error: impl Into<Value>) -> Self {
        Self::json(
            status,
            json!({"code": status.as_u16(), "errno": errno, "error": error.into()}),
        )
    }

    /// 400 with errno 107.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::error(
            StatusCode::BAD_REQUEST,
            errno::INVALID_PARAMETERS,
            message.into(),
        )
    }

    /// 400 with errno 108 `Missing: a, b`.
    pub fn missing(params: &[&str]) -> Self {
        Self::error(
            StatusCode::BAD_REQUEST,
            errno::MISSING_PARAMETERS,
            format!("Missing: {}", params.join(", ")),
        )
    }

    /// 404 errno 105 "Token not found.".
    pub fn token_not_found() -> Self {
        Self::error(
            StatusCode::NOT_FOUND,
            errno::INVALID_TOKEN,
            "Token not found.",
        )
    }

    /// 403 errno 999.
    pub fn forbidden(message: &str) -> Self {
        Self::error(StatusCode::FORBIDDEN, errno::UNDEFINED, message)
    }

    /// 401 errno 110 with `WWW-Authenticate` (loop-server `auth.unauthorized`: the schemes joined by
    /// commas, then ` error="…"` when there is a message).
    pub fn unauthorized(schemes: &str, message: Option<&str>) -> Self {
        let header = match message {
            Some(m) => format!("{schemes} error=\"{}\"", m.replace('"', "'")),
            None => schemes.to_owned(),
        };
        Self::error(
            StatusCode::UNAUTHORIZED,
            errno::INVALID_AUTH_TOKEN,
            message.unwrap_or("Unauthorized"),
        )
        .with_header("www-authenticate", &header)
    }

    /// A Hawk failure as express-hawkauth reports it: 401 errno 110 whose `error` is the hawk library's
    /// `{statusCode, error, message}` payload, and its `WWW-Authenticate` challenge.
    pub fn hawk_unauthorized(message: Option<&str>, challenge: &str) -> Self {
        let mut payload = json!({"statusCode": 401, "error": "Unauthorized"});
        if let Some(m) = message {
            payload["message"] = json!(m);
        }
        Self::error(StatusCode::UNAUTHORIZED, errno::INVALID_AUTH_TOKEN, payload)
            .with_header("www-authenticate", challenge)
    }

    /// 503 errno 201 with `Retry-After` (a storage failure; the cause goes to the log).
    pub fn backend(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "rooms: {context}");
        Self::error(
            StatusCode::SERVICE_UNAVAILABLE,
            errno::BACKEND,
            "Service Unavailable",
        )
        .with_header("retry-after", "30")
    }

    /// Adds a header (ignored if the value is not a valid header value).
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }
}

/// A Reply is also how handlers stop early: `Err(Reply)` is answered as is.
pub type Result<T> = std::result::Result<T, Reply>;
