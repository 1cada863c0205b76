//! SRS HTTP callbacks: a JSON POST with `action` (`on_connect`, `on_close`, `on_publish`, `on_unpublish`,
//! `on_play`, `on_stop`, `on_dvr`, `on_hls`). SRS wants HTTP 200 with the integer `0` to allow; any other
//! integer denies (and SRS drops the client). Fields per SRS v4–v6 (`client_id` a string since v4, a number
//! before: both are read).

use serde_json::Value;

use crate::model::{
    Action, BadRequest, Decision, HookRequest, ServerKind, json_ip, json_text, parse_query,
    split_stream,
};

/// The body SRS reads as "allowed".
pub const ALLOW_BODY: &str = "0";
/// The integer answered to deny (any non-zero integer denies; this one reads as "forbidden").
pub const DENY_BODY: &str = "403";

/// Reads one SRS callback. `peer` is the address the call came from, used when SRS sends no `server_id`.
pub fn parse(body: &[u8], peer: &str) -> Result<HookRequest, BadRequest> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("SRS callback body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(BadRequest("SRS callback body must be a JSON object".into()));
    }
    let action_name =
        json_text(&v, "action").ok_or_else(|| BadRequest("missing `action`".into()))?;
    let action = match action_name.as_str() {
        "on_connect" => Action::Connect,
        "on_close" => Action::Close,
        "on_publish" => Action::Publish,
        "on_unpublish" => Action::Unpublish,
        "on_play" => Action::Play,
        "on_stop" => Action::Stop,
        "on_dvr" => Action::Record,
        "on_hls" => Action::Hls,
        other => {
            return Err(BadRequest(format!(
                "unknown SRS action {other:?} (expected on_connect, on_close, on_publish, on_unpublish, on_play, on_stop, on_dvr or on_hls)"
            )));
        }
    };
    let app = json_text(&v, "app").ok_or_else(|| BadRequest("missing `app`".into()))?;
    let (stream, mut query) = split_stream(&json_text(&v, "stream").unwrap_or_default());
    let needs_stream = matches!(
        action,
        Action::Publish
            | Action::Unpublish
            | Action::Play
            | Action::Stop
            | Action::Record
            | Action::Hls
    );
    if needs_stream && stream.is_empty() {
        return Err(BadRequest(format!("`{action_name}` needs a `stream`")));
    }
    // The client's query: `param` (SRS v4+), else the query of tcUrl.
    if let Some(param) = json_text(&v, "param") {
        query.extend(parse_query(&param));
    }
    if let Some(tc) = json_text(&v, "tcUrl")
        && let Some((_, q)) = tc.split_once('?')
    {
        query.extend(parse_query(q));
    }
    let ip = json_ip(&v)?;
    let server_id = json_text(&v, "server_id")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| peer.to_owned());
    Ok(HookRequest {
        server: ServerKind::Srs,
        server_id,
        action,
        role: None,
        client_id: json_text(&v, "client_id"),
        ip,
        vhost: json_text(&v, "vhost").unwrap_or_default(),
        app,
        stream,
        query,
        protocol: None,
        user: None,
        password: None,
    })
}

/// Reads an SRS heartbeat (`heartbeat { url …; }`: `{"device_id", "ip", "server", "service", "pid", …}`,
/// no `action`); returns the server id it keeps alive (`server`, SRS v5+, else the caller's address), or
/// `None` if the body is not a heartbeat.
pub fn parse_heartbeat(body: &[u8], peer: &str) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("action").is_some() || v.get("device_id").is_none() {
        return None;
    }
    Some(
        json_text(&v, "server")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| peer.to_owned()),
    )
}

/// The body to answer with HTTP 200.
pub fn answer(decision: &Decision) -> &'static str {
    match decision {
        Decision::Allow | Decision::Redirect(_) => ALLOW_BODY,
        Decision::Deny(_) => DENY_BODY,
    }
}

/// How SRS reads an upstream hook server's answer: 200/201 and a body of exactly `0`, or a JSON object with
/// `"code": 0`.
pub fn upstream_allows(status: u16, body: &[u8]) -> bool {
    if !(status == 200 || status == 201) {
        return false;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text == "0" {
        return true;
    }
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("code").and_then(Value::as_i64))
        == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_payloads() {
        // The payloads of seed 004 (SRS wiki), client_id as a number.
        let r = parse(
            br#"{"action":"on_connect","client_id":1985,"ip":"192.168.1.10","vhost":"video.test.com","app":"live","tcUrl":"rtmp://x/x?key=xxx","pageUrl":"http://x/x.html"}"#,
            "10.0.0.1",
        )
        .expect("connect");
        assert_eq!(r.action, Action::Connect);
        assert_eq!(r.client_id.as_deref(), Some("1985"));
        assert_eq!(r.param("key"), Some("xxx"));
        assert_eq!(r.server_id, "10.0.0.1");
        for (action, want) in [
            ("on_publish", Action::Publish),
            ("on_unpublish", Action::Unpublish),
            ("on_play", Action::Play),
            ("on_stop", Action::Stop),
        ] {
            let body = format!(
                r#"{{"action":"{action}","client_id":1985,"ip":"192.168.1.10","vhost":"video.test.com","app":"live","stream":"livestream"}}"#
            );
            let r = parse(body.as_bytes(), "p").expect(action);
            assert_eq!(r.action, want);
            assert_eq!(r.stream, "livestream");
            assert_eq!(r.vhost, "video.test.com");
        }
        let r = parse(
            br#"{"action":"on_close","client_id":1985,"ip":"192.168.1.10","vhost":"video.test.com","app":"live"}"#,
            "p",
        )
        .expect("close");
        assert_eq!(r.action, Action::Close);
    }

    #[test]
    fn srs_v6_fields() {
        let r = parse(
            br#"{"server_id":"vid-0xk989d","service_id":"ab12cd34","action":"on_publish","client_id":"341w361a","ip":"127.0.0.1","vhost":"__defaultVhost__","app":"live","tcUrl":"rtmp://127.0.0.1:1935/live","stream":"livestream","param":"?token=abc&expires=1700000000","stream_url":"/live/livestream","stream_id":"vid-124q9y3"}"#,
            "p",
        )
        .expect("v6");
        assert_eq!(r.server_id, "vid-0xk989d");
        assert_eq!(r.client_id.as_deref(), Some("341w361a"));
        assert_eq!(r.param("token"), Some("abc"));
        assert_eq!(r.param("expires"), Some("1700000000"));
        let r = parse(
            br#"{"action":"on_hls","client_id":"x","ip":"127.0.0.1","vhost":"v","app":"live","stream":"s","duration":9.3,"cwd":"/srs","file":"./objs/nginx/html/live/s-1.ts","url":"live/s-1.ts","m3u8":"./objs/nginx/html/live/s.m3u8","m3u8_url":"live/s.m3u8","seq_no":1}"#,
            "p",
        )
        .expect("hls");
        assert_eq!(r.action, Action::Hls);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"0",
            br#"{"action":"on_fly","app":"live"}"#,
            br#"{"action":"on_publish","app":"live"}"#,
            br#"{"app":"live","stream":"s"}"#,
            br#"{"action":"on_publish","app":"live","stream":"s","ip":"not-an-ip"}"#,
            br#"{"action":7,"app":"live"}"#,
        ] {
            assert!(
                parse(body, "p").is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn heartbeats() {
        assert_eq!(
            parse_heartbeat(br#"{"device_id":"my-srs","ip":"10.0.0.5","server":"vid-1","service":"s","pid":"9"}"#, "p").as_deref(),
            Some("vid-1")
        );
        assert_eq!(
            parse_heartbeat(br#"{"device_id":"my-srs","ip":"10.0.0.5"}"#, "p").as_deref(),
            Some("p")
        );
        assert_eq!(
            parse_heartbeat(br#"{"action":"on_publish","device_id":"x"}"#, "p"),
            None
        );
        assert_eq!(parse_heartbeat(b"{", "p"), None);
    }

    #[test]
    fn upstream_answers() {
        assert!(upstream_allows(200, b"0"));
        assert!(upstream_allows(201, b"0\n"));
        assert!(upstream_allows(200, br#"{"code":0,"data":null}"#));
        assert!(!upstream_allows(200, b"1"));
        assert!(!upstream_allows(200, b""));
        assert!(!upstream_allows(200, br#"{"code":403}"#));
        assert!(!upstream_allows(500, b"0"));
    }
}
