//! MediaMTX external HTTP authentication (`authMethod: http`): a JSON POST
//! `{user, password, token, ip, action, path, protocol, id, query, userAgent}` for every publish, read,
//! playback (and api/metrics/pprof unless excluded). Any 2xx allows; we answer 401 to deny, which also makes
//! RTSP clients retry with credentials.

use serde_json::Value;

use crate::model::{
    Action, BadRequest, Decision, HookRequest, ServerKind, json_ip, json_text, parse_query,
};

/// Reads one authentication request; `peer` identifies the MediaMTX instance.
pub fn parse(body: &[u8], peer: &str) -> Result<HookRequest, BadRequest> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("MediaMTX auth body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(BadRequest(
            "MediaMTX auth body must be a JSON object".into(),
        ));
    }
    let action_name =
        json_text(&v, "action").ok_or_else(|| BadRequest("missing `action`".into()))?;
    let action = match action_name.as_str() {
        "publish" => Action::Publish,
        "read" | "playback" => Action::Play,
        "api" | "metrics" | "pprof" => Action::Api,
        other => {
            return Err(BadRequest(format!(
                "unknown MediaMTX action {other:?} (expected publish, read, playback, api, metrics or pprof)"
            )));
        }
    };
    let path = json_text(&v, "path").unwrap_or_default();
    let path = path.trim_matches('/');
    if matches!(action, Action::Publish | Action::Play) && path.is_empty() {
        return Err(BadRequest(format!("`{action_name}` needs a `path`")));
    }
    let (app, stream) = match path.rsplit_once('/') {
        Some((app, stream)) => (app.to_owned(), stream.to_owned()),
        None => (String::new(), path.to_owned()),
    };
    let ip = json_ip(&v)?;
    let password = json_text(&v, "password")
        .filter(|p| !p.is_empty())
        .or_else(|| json_text(&v, "token").filter(|t| !t.is_empty()));
    Ok(HookRequest {
        server: ServerKind::Mediamtx,
        server_id: peer.to_owned(),
        action,
        role: None,
        client_id: json_text(&v, "id").filter(|s| !s.is_empty()),
        ip,
        vhost: String::new(),
        app,
        stream,
        query: parse_query(&json_text(&v, "query").unwrap_or_default()),
        protocol: json_text(&v, "protocol").filter(|s| !s.is_empty()),
        user: json_text(&v, "user").filter(|s| !s.is_empty()),
        password,
    })
}

/// The status to answer.
pub fn answer(decision: &Decision) -> u16 {
    match decision {
        Decision::Allow | Decision::Redirect(_) => 200,
        Decision::Deny(_) => 401,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_payload() {
        let r = parse(
            br#"{"user":"u","password":"p","token":"","ip":"192.0.2.7","action":"publish","path":"live/cam1","protocol":"rtmp","id":"2b4e1c4e-4d2f-4a8e-9c1d-1a2b3c4d5e6f","query":"token=abc&expires=9","userAgent":"x"}"#,
            "10.1.1.1",
        )
        .expect("publish");
        assert_eq!(r.action, Action::Publish);
        assert_eq!((r.app.as_str(), r.stream.as_str()), ("live", "cam1"));
        assert_eq!(r.param("token"), Some("abc"));
        assert_eq!(r.password.as_deref(), Some("p"));
        assert_eq!(r.protocol.as_deref(), Some("rtmp"));
        let r = parse(
            br#"{"user":"","password":"","ip":"127.0.0.1","action":"read","path":"cam","protocol":"rtsp","id":null,"query":""}"#,
            "p",
        )
        .expect("read");
        assert_eq!(r.action, Action::Play);
        assert_eq!((r.app.as_str(), r.stream.as_str()), ("", "cam"));
        assert_eq!(r.client_id, None);
        let r = parse(br#"{"action":"api","path":"","ip":"127.0.0.1"}"#, "p").expect("api");
        assert_eq!(r.action, Action::Api);
    }

    #[test]
    fn malformed() {
        for body in [
            &b"nope"[..],
            b"[1]",
            br#"{"action":"dance","path":"x"}"#,
            br#"{"action":"publish","path":""}"#,
            br#"{"path":"x"}"#,
            br#"{"action":"read","path":"x","ip":"300.1.1.1"}"#,
        ] {
            assert!(
                parse(body, "p").is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
