//! nginx-rtmp notify (`on_connect`, `on_publish`, `on_play`, `on_update`, `on_publish_done`, `on_play_done`,
//! `on_done`, `on_record_done`, `on_disconnect`): a form POST (or GET with `notify_method get`). 2xx allows,
//! 3xx with `Location` renames (a name) or relays (`rtmp://…`), anything else denies and drops the client.
//!
//! nginx writes its own fields first, in a fixed order, and then appends the client's RTMP query unescaped:
//! `rtmp://host/live/cam3?name=evil&call=play&addr=10.9.9.9` arrives as
//! `app=live&…&addr=127.0.0.1&clientid=59&call=publish&name=cam3&type=live&name=evil&call=play&addr=10.9.9.9`.
//! So the server's fields are read by position (the known prefix, then the fields of that `call`), and
//! everything after them is the client's query, used for tokens and keys but never for `app`, `name`,
//! `addr` or `call`. If a body does not have the expected layout (another nginx-rtmp version), the first
//! occurrence of every field is taken.

use std::net::IpAddr;

use crate::model::{Action, BadRequest, Decision, HookRequest, Role, ServerKind, parse_query};

/// A form field.
type Pair = (String, String);

/// The fields nginx-rtmp sends before `call`, on every call but `connect` (netcall session prefix).
const SESSION: [&str; 7] = [
    "app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "clientid",
];
/// The same for `connect`.
const CONNECT: [&str; 7] = [
    "app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "epoch",
];

/// The fields nginx-rtmp sends after `call=<call>`, before the client's query.
fn fields_after(call: &str) -> Option<&'static [&'static str]> {
    Some(match call {
        "connect" => &[],
        "publish" => &["name", "type"],
        "play" => &["name", "start", "duration", "reset"],
        "update_publish" | "update_play" => &["time", "timestamp", "name"],
        "publish_done" | "play_done" | "done" => &["name"],
        "record_done" => &["recorder", "name", "path"],
        "disconnect" => &["app"],
        _ => return None,
    })
}

/// The `call` a hook path expects (`on_publish` → `publish`); `on_update` accepts both update calls.
fn path_accepts(path_call: &str, call: &str) -> bool {
    let p = path_call.strip_prefix("on_").unwrap_or(path_call);
    match p {
        "update" => call == "update_publish" || call == "update_play",
        _ => p == call,
    }
}

/// Reads one notify. `form` is the POST body or the GET query; `path_call` the last path segment of the
/// hook URL (`on_publish`); `peer` the address nginx called from (the server's identity).
pub fn parse(form: &[u8], path_call: &str, peer: &str) -> Result<HookRequest, BadRequest> {
    let text = std::str::from_utf8(form)
        .map_err(|_| BadRequest("nginx-rtmp notify body is not UTF-8 form data".into()))?;
    let pairs = parse_query(text);
    let (server, client) = split_server_fields(&pairs);
    let get = |k: &str| {
        server
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let call = get("call").ok_or_else(|| BadRequest("missing `call`".into()))?;
    if !path_accepts(path_call, call) {
        return Err(BadRequest(format!(
            "this hook URL is for `{path_call}` but nginx-rtmp sent call={call:?}; check the on_* URLs in nginx.conf"
        )));
    }
    let (action, role) = match call {
        "connect" => (Action::Connect, None),
        "publish" => (Action::Publish, Some(Role::Publisher)),
        "play" => (Action::Play, Some(Role::Player)),
        "update_publish" => (Action::Update, Some(Role::Publisher)),
        "update_play" => (Action::Update, Some(Role::Player)),
        "publish_done" => (Action::Unpublish, Some(Role::Publisher)),
        "play_done" => (Action::Stop, Some(Role::Player)),
        "done" => (Action::Done, None),
        "record_done" => (Action::Record, None),
        "disconnect" => (Action::Close, None),
        other => return Err(BadRequest(format!("unknown nginx-rtmp call {other:?}"))),
    };
    let app = get("app").ok_or_else(|| BadRequest("missing `app`".into()))?;
    let stream = get("name").unwrap_or_default();
    if matches!(action, Action::Publish | Action::Play) && stream.is_empty() {
        return Err(BadRequest(format!("call={call} needs a `name`")));
    }
    let ip: Option<IpAddr> = match get("addr") {
        Some(a) if !a.is_empty() => Some(
            a.parse()
                .map_err(|_| BadRequest(format!("`addr` {a:?} is not an IP address")))?,
        ),
        _ => None,
    };
    Ok(HookRequest {
        server: ServerKind::NginxRtmp,
        server_id: peer.to_owned(),
        action,
        role,
        client_id: get("clientid").map(str::to_owned),
        ip,
        vhost: String::new(),
        app: app.to_owned(),
        stream: stream.to_owned(),
        query: client.to_vec(),
        protocol: Some("rtmp".into()),
        user: None,
        password: None,
    })
}

/// Splits pairs into nginx's own fields and the client's query (see the module docs).
fn split_server_fields(pairs: &[Pair]) -> (Vec<Pair>, &[Pair]) {
    let prefix = if pairs.get(6).is_some_and(|(k, _)| k == "epoch") {
        &CONNECT
    } else {
        &SESSION
    };
    let positional = pairs.len() > prefix.len()
        && pairs
            .iter()
            .zip(prefix.iter())
            .all(|((k, _), want)| k == want)
        && pairs[prefix.len()].0 == "call";
    if positional && let Some(after) = fields_after(&pairs[prefix.len()].1) {
        let mut end = prefix.len() + 1;
        let mut expected = after.iter();
        // Fields are in order; one may be missing (nginx omits an empty `name` on the done calls).
        while let Some((k, _)) = pairs.get(end) {
            match expected.clone().position(|e| e == k) {
                Some(skip) => {
                    for _ in 0..=skip {
                        expected.next();
                    }
                    end += 1;
                }
                None => break,
            }
        }
        return (pairs[..end].to_vec(), &pairs[end..]);
    }
    // Unknown layout: the first occurrence of every field wins; the query is what follows the first `call`.
    let mut first: Vec<Pair> = Vec::new();
    for (k, v) in pairs {
        if !first.iter().any(|(f, _)| f == k) {
            first.push((k.clone(), v.clone()));
        }
    }
    let tail = pairs
        .iter()
        .position(|(k, _)| k == "call")
        .map_or(&pairs[pairs.len()..], |i| &pairs[i + 1..]);
    (first, tail)
}

/// Status and `Location` for a decision.
pub fn answer(decision: &Decision) -> (u16, Option<&str>) {
    match decision {
        Decision::Allow => (200, None),
        Decision::Redirect(location) => (302, Some(location.as_str())),
        Decision::Deny(_) => (403, None),
    }
}

/// How nginx-rtmp reads an upstream hook server's answer.
pub fn upstream_decision(status: u16, location: Option<&str>) -> Decision {
    match status {
        200..=299 => Decision::Allow,
        300..=399 => match location {
            Some(l) if !l.is_empty() => Decision::Redirect(l.to_owned()),
            _ => Decision::Allow,
        },
        _ => Decision::Deny(format!("upstream answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoofed_fields_in_the_query_do_not_count() {
        let body = "app=live&flashver=FMLE/3.0%20(compatible%3B%20Lavf59.27&swfurl=&tcurl=rtmp://127.0.0.1:19350/live&pageurl=&addr=127.0.0.1&clientid=59&call=publish&name=cam3&type=live&name=evil&call=play&addr=10.9.9.9";
        let r = parse(body.as_bytes(), "on_publish", "127.0.0.1").expect("parse");
        assert_eq!(r.action, Action::Publish);
        assert_eq!(r.stream, "cam3");
        assert_eq!(r.ip, Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(r.client_id.as_deref(), Some("59"));
        assert_eq!(r.param("name"), Some("evil"));
        assert_eq!(r.param("call"), Some("play"));
    }

    #[test]
    fn a_client_cannot_add_fields_nginx_did_not_send() {
        // connect carries no clientid and done may carry no name: a client-supplied one is query, not field.
        let body = "app=live&flashver=x&swfurl=&tcurl=rtmp://h/live&pageurl=&addr=127.0.0.1&epoch=1&call=connect&clientid=7";
        let r = parse(body.as_bytes(), "on_connect", "p").expect("connect");
        assert_eq!(r.client_id, None);
        assert_eq!(r.param("clientid"), Some("7"));
        let body = "app=live&flashver=x&swfurl=&tcurl=rtmp://h/live&pageurl=&addr=127.0.0.1&clientid=3&call=disconnect&app=live&app=other";
        let r = parse(body.as_bytes(), "on_disconnect", "p").expect("disconnect");
        assert_eq!(r.app, "live");
        assert_eq!(r.action, Action::Close);
    }

    #[test]
    fn update_and_record_done() {
        let body = "app=live&flashver=x&swfurl=&tcurl=rtmp://h/live&pageurl=&addr=127.0.0.1&clientid=1&call=update_publish&time=2&timestamp=1983&name=cam1&token=abc123&exp=1700000000";
        let r = parse(body.as_bytes(), "on_update", "p").expect("update");
        assert_eq!((r.action, r.role), (Action::Update, Some(Role::Publisher)));
        assert_eq!(r.stream, "cam1");
        assert_eq!(r.query.len(), 2);
        let body = "app=live&flashver=x&swfurl=&tcurl=rtmp://h/live&pageurl=&addr=127.0.0.1&clientid=1&call=record_done&recorder=&name=cam1&path=/tmp/rec/cam1.flv&token=abc123";
        let r = parse(body.as_bytes(), "on_record_done", "p").expect("record");
        assert_eq!(r.action, Action::Record);
        assert_eq!(r.query, vec![("token".to_owned(), "abc123".to_owned())]);
    }

    #[test]
    fn wrong_hook_url_and_malformed_bodies() {
        let body = "app=live&flashver=x&swfurl=&tcurl=t&pageurl=&addr=127.0.0.1&clientid=1&call=play&name=s&start=0&duration=0&reset=0";
        assert!(parse(body.as_bytes(), "on_publish", "p").is_err());
        assert!(parse(body.as_bytes(), "play", "p").is_ok());
        for bad in [
            "",
            "app=live",
            "call=publish&name=x",
            "app=live&call=publish",
            "app=live&call=fly&name=x",
            "app=live&addr=nope&call=publish&name=x",
        ] {
            assert!(parse(bad.as_bytes(), "on_publish", "p").is_err(), "{bad}");
        }
        assert!(parse(&[0xff, 0xfe], "on_publish", "p").is_err());
    }

    #[test]
    fn answers() {
        assert_eq!(answer(&Decision::Allow), (200, None));
        assert_eq!(
            answer(&Decision::Redirect("pub".into())),
            (302, Some("pub"))
        );
        assert_eq!(answer(&Decision::Deny("x".into())).0, 403);
        assert_eq!(upstream_decision(201, None), Decision::Allow);
        assert_eq!(
            upstream_decision(302, Some("rtmp://10.0.0.2/live/x")),
            Decision::Redirect("rtmp://10.0.0.2/live/x".into())
        );
        assert!(matches!(upstream_decision(500, None), Decision::Deny(_)));
    }
}
