//! REGISTER requests out, responses in (pure: bytes in, values out; no I/O). rsip tokenizes and prints the
//! messages; this module picks out what a registering UAC needs.

use std::fmt::Write as _;

use rsip::Header;
use rsip::headers::UntypedHeader;
use rsip::message::HasHeaders;

use crate::config::Transport;
use crate::sip::uri::bracket;

/// Largest response accepted (UDP datagram or TCP message).
pub const MAX_MESSAGE: usize = 65_535;

/// Everything that varies in a REGISTER.
#[derive(Clone, Debug)]
pub struct Register<'a> {
    /// Request-URI host (the account's realm / registrar domain).
    pub domain: &'a str,
    /// The AOR user part.
    pub user: &'a str,
    /// Contact URI, without angle brackets.
    pub contact: &'a str,
    /// Call-ID, kept for the binding's life.
    pub call_id: &'a str,
    /// From tag, kept with the Call-ID.
    pub from_tag: &'a str,
    /// CSeq number.
    pub cseq: u32,
    /// Via branch (starts with the RFC 3261 magic cookie).
    pub branch: &'a str,
    /// Via transport.
    pub transport: Transport,
    /// Via sent-by (`ip:port`).
    pub sent_by: &'a str,
    /// Expires (0 to de-register).
    pub expires: u32,
    /// `(header name, value)` of an Authorization or Proxy-Authorization.
    pub authorization: Option<(&'a str, &'a str)>,
    /// Route header for an outbound proxy (`<sip:proxy;lr>`).
    pub route: Option<&'a str>,
    /// User-Agent.
    pub user_agent: &'a str,
}

impl Register<'_> {
    /// The Request-URI (also the digest `uri`).
    pub fn request_uri(&self) -> String {
        format!("sip:{}", bracket(self.domain))
    }

    /// The message bytes.
    /// The message bytes. Written directly into one buffer: printing through rsip's `Display` cost about
    /// 30,000 instructions per REGISTER (callgrind), a sixth of the agent's CPU; the result is the same text
    /// (the tests parse it back with rsip).
    pub fn to_bytes(&self) -> Vec<u8> {
        use std::fmt::Write as _;
        let domain = bracket(self.domain);
        let mut m =
            String::with_capacity(512 + self.authorization.map_or(0, |(n, v)| n.len() + v.len()));
        // Writing into a String cannot fail.
        let _ = write!(
            m,
            "REGISTER sip:{domain} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={};rport\r\n",
            self.transport.via(),
            self.sent_by,
            self.branch
        );
        if let Some(route) = self.route {
            let _ = write!(m, "Route: {route}\r\n");
        }
        let _ = write!(
            m,
            "Max-Forwards: 70\r\nFrom: <sip:{user}@{domain}>;tag={tag}\r\nTo: <sip:{user}@{domain}>\r\n\
             Call-ID: {}\r\nCSeq: {} REGISTER\r\nContact: <{}>{}\r\nExpires: {}\r\n",
            self.call_id,
            self.cseq,
            self.contact,
            if self.expires == 0 { ";expires=0" } else { "" },
            self.expires,
            user = self.user,
            tag = self.from_tag,
        );
        if let Some((name, value)) = self.authorization {
            let _ = write!(m, "{name}: {value}\r\n");
        }
        let _ = write!(
            m,
            "User-Agent: {}\r\nContent-Length: 0\r\n\r\n",
            self.user_agent
        );
        m.into_bytes()
    }
}

/// What a registering UAC needs from a response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub code: u16,
    /// Reason phrase as sent.
    pub reason: String,
    /// Branch of the top Via.
    pub branch: String,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method.
    pub method: String,
    /// WWW-Authenticate values.
    pub www_authenticate: Vec<String>,
    /// Proxy-Authenticate values.
    pub proxy_authenticate: Vec<String>,
    /// Min-Expires.
    pub min_expires: Option<u32>,
    /// Retry-After, seconds.
    pub retry_after: Option<u32>,
    /// Expires header.
    pub expires: Option<u32>,
    /// Contact values, one per contact (comma lists split).
    pub contacts: Vec<String>,
}

/// Why bytes are not a usable response.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Not a SIP response at all, or malformed.
    #[error("malformed SIP response: {0}")]
    Malformed(String),
    /// A request (we act only as a client).
    #[error("a request, not a response")]
    Request,
    /// A required header is missing or unreadable.
    #[error("missing or bad {0}")]
    Header(&'static str),
    /// Larger than any SIP message we accept.
    #[error("message too large")]
    TooLarge,
}

/// Splits a header value list at commas outside quotes and angle brackets.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0u32, false, 0);
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => depth += 1,
            b'>' if !quoted => depth = depth.saturating_sub(1),
            b',' if !quoted && depth == 0 => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&value[start.min(value.len())..]);
    parts.into_iter().map(str::trim).filter(|s| !s.is_empty())
}

fn first_number(s: &str) -> Option<u32> {
    let s = s.trim_start();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// Parses a response. Unknown headers are ignored; compact header names (`v`, `i`, `m`) are understood.
pub fn parse_response(bytes: &[u8]) -> Result<Response, ParseError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    if !bytes.starts_with(b"SIP/") {
        return Err(if bytes.first().is_some_and(u8::is_ascii_uppercase) {
            ParseError::Request
        } else {
            ParseError::Malformed("no SIP status line".into())
        });
    }
    let line_end = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| ParseError::Malformed("no CRLF".into()))?;
    let status_line = std::str::from_utf8(&bytes[..line_end])
        .map_err(|_| ParseError::Malformed("status line is not UTF-8".into()))?;
    let mut sl = status_line.splitn(3, ' ');
    let _version = sl.next();
    let code: u16 = sl
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|c| (100..700).contains(c))
        .ok_or(ParseError::Header("status code"))?;
    let reason = sl.next().unwrap_or_default().trim().to_string();
    let parsed =
        rsip::Response::try_from(bytes).map_err(|e| ParseError::Malformed(e.to_string()))?;
    let mut out = Response {
        code,
        reason,
        ..Response::default()
    };
    let mut via_seen = false;
    for header in parsed.headers().iter() {
        let (name, value): (&str, &str) = match header {
            Header::Via(h) => ("via", h.value()),
            Header::CallId(h) => ("call-id", h.value()),
            Header::CSeq(h) => ("cseq", h.value()),
            Header::WwwAuthenticate(h) => ("www-authenticate", h.value()),
            Header::ProxyAuthenticate(h) => ("proxy-authenticate", h.value()),
            Header::MinExpires(h) => ("min-expires", h.value()),
            Header::RetryAfter(h) => ("retry-after", h.value()),
            Header::Expires(h) => ("expires", h.value()),
            Header::Contact(h) => ("contact", h.value()),
            Header::Other(n, v) => (n.as_str(), v.as_str()),
            _ => continue,
        };
        let name = name.trim();
        let value = value.trim();
        let is = |long: &str, short: &str| {
            name.eq_ignore_ascii_case(long)
                || (!short.is_empty() && name.eq_ignore_ascii_case(short))
        };
        if is("via", "v") {
            if !via_seen {
                via_seen = true;
                let top = split_list(value).next().unwrap_or_default();
                out.branch = top
                    .split(';')
                    .skip(1)
                    .filter_map(|p| p.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("branch"))
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_default();
            }
        } else if is("call-id", "i") {
            out.call_id = value.to_string();
        } else if is("cseq", "") {
            let mut it = value.split_whitespace();
            out.cseq = it
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or(ParseError::Header("CSeq"))?;
            out.method = it.next().unwrap_or_default().to_ascii_uppercase();
        } else if is("www-authenticate", "") {
            out.www_authenticate.push(value.to_string());
        } else if is("proxy-authenticate", "") {
            out.proxy_authenticate.push(value.to_string());
        } else if is("min-expires", "") {
            out.min_expires = first_number(value);
        } else if is("retry-after", "") {
            out.retry_after = first_number(value);
        } else if is("expires", "") {
            out.expires = first_number(value);
        } else if is("contact", "m") {
            out.contacts.extend(split_list(value).map(str::to_string));
        }
    }
    if !via_seen || out.branch.is_empty() {
        return Err(ParseError::Header("Via branch"));
    }
    if out.call_id.is_empty() {
        return Err(ParseError::Header("Call-ID"));
    }
    if out.method.is_empty() {
        return Err(ParseError::Header("CSeq"));
    }
    Ok(out)
}

/// A TCP stream that cannot be framed: a message over [`MAX_MESSAGE`] or an unreadable Content-Length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unframeable SIP stream (message too large or bad Content-Length)")]
pub struct FrameError;

/// One message's length at the start of a TCP stream buffer: headers up to the blank line plus
/// Content-Length. `Ok(None)`: incomplete; `Err`: not a frame we accept (too large, bad length).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_MESSAGE {
            Err(FrameError)
        } else {
            Ok(None)
        };
    };
    let head = &buf[..end];
    let mut body = 0usize;
    for line in head.split(|b| *b == b'\n') {
        let line = std::str::from_utf8(line).unwrap_or_default().trim();
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") || name == "l" {
                body = value.trim().parse().map_err(|_| FrameError)?;
            }
        }
    }
    let total = end + 4 + body;
    if total > MAX_MESSAGE {
        return Err(FrameError);
    }
    Ok((buf.len() >= total).then_some(total))
}

/// The URI inside a Contact value (`<sip:…>;params` or a bare `sip:…;params`).
pub fn contact_uri(contact: &str) -> &str {
    if let Some(start) = contact.find('<') {
        let rest = &contact[start + 1..];
        rest.split('>').next().unwrap_or(rest)
    } else {
        contact.split(';').next().unwrap_or(contact).trim()
    }
}

/// The `expires` parameter of a Contact value.
pub fn contact_expires(contact: &str) -> Option<u32> {
    let params = match contact.rfind('>') {
        Some(i) => &contact[i + 1..],
        None => contact.split_once(';').map_or("", |(_, p)| p),
    };
    params
        .split(';')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("expires"))
        .and_then(|(_, v)| first_number(v))
}

/// The expiry the registrar granted to `our_contact`: its Contact's `expires`, else the Expires header.
pub fn granted_expiry(response: &Response, our_contact: &str) -> Option<u32> {
    let ours = response
        .contacts
        .iter()
        .find(|c| uri_eq(contact_uri(c), our_contact));
    ours.and_then(|c| contact_expires(c)).or(response.expires)
}

/// SIP URIs compared loosely: scheme and host case-insensitive, user exact, parameters ignored.
fn uri_eq(a: &str, b: &str) -> bool {
    let strip = |u: &str| -> String {
        let u = u.split(';').next().unwrap_or(u);
        match u.rsplit_once('@') {
            Some((user, host)) => {
                let (scheme, user) = user.split_once(':').unwrap_or(("sip", user));
                format!(
                    "{}:{user}@{}",
                    scheme.to_ascii_lowercase(),
                    host.to_ascii_lowercase()
                )
            }
            None => u.to_ascii_lowercase(),
        }
    };
    strip(a) == strip(b)
}

/// A fresh RFC 3261 branch.
pub fn new_branch() -> String {
    let mut s = String::with_capacity(32);
    s.push_str("z9hG4bK");
    let _ = write!(s, "{:016x}", rand::random::<u64>());
    s
}

/// A fresh tag / cnonce token.
pub fn new_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport=5060;received=127.0.0.1\r\n\
From: <sip:alice@example.org>;tag=t1\r\n\
To: <sip:alice@example.org>;tag=x\r\n\
Call-ID: c1@host\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:alice@127.0.0.1:5060>;expires=300, <sip:alice@10.0.0.1:5060>;expires=20\r\n\
Server: kamailio\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn reads_a_registrar_ok() {
        let r = parse_response(OK.as_bytes()).expect("parse");
        assert_eq!(
            (r.code, r.reason.as_str(), r.branch.as_str()),
            (200, "OK", "z9hG4bKabc")
        );
        assert_eq!(
            (r.call_id.as_str(), r.cseq, r.method.as_str()),
            ("c1@host", 2, "REGISTER")
        );
        assert_eq!(r.contacts.len(), 2);
        assert_eq!(granted_expiry(&r, "sip:alice@127.0.0.1:5060"), Some(300));
        assert_eq!(granted_expiry(&r, "sip:alice@10.0.0.1:5060"), Some(20));
        assert_eq!(granted_expiry(&r, "sip:alice@192.0.2.1"), None);
    }

    #[test]
    fn reads_challenges_and_retry_headers() {
        let text = "SIP/2.0 423 Interval Too Brief\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\ni: c\r\nCSeq: 7 REGISTER\r\nMin-Expires: 60\r\nRetry-After: 5 (busy);duration=10\r\nWWW-Authenticate: Digest realm=\"a\", nonce=\"b\"\r\nContent-Length: 0\r\n\r\n";
        let r = parse_response(text.as_bytes()).expect("parse");
        assert_eq!((r.code, r.reason.as_str()), (423, "Interval Too Brief"));
        assert_eq!((r.min_expires, r.retry_after), (Some(60), Some(5)));
        assert_eq!(r.www_authenticate.len(), 1);
        assert_eq!(r.call_id, "c");
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"SIP/2.0 200 OK",
            b"SIP/2.0 abc OK\r\n\r\n",
            b"SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\n\r\n",
            b"REGISTER sip:x SIP/2.0\r\n\r\n",
            b"\xff\xfe",
            b"SIP/2.0 200 OK\r\nVia: x\r\nCall-ID: a\r\nCSeq: x REGISTER\r\n\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn builds_a_register_rsip_reads_back() {
        let reg = Register {
            domain: "example.org",
            user: "alice",
            contact: "sip:alice@127.0.0.1:5060",
            call_id: "cid",
            from_tag: "ft",
            cseq: 3,
            branch: "z9hG4bKx",
            transport: Transport::Udp,
            sent_by: "127.0.0.1:5060",
            expires: 0,
            authorization: Some(("Authorization", "Digest username=\"alice\"")),
            route: Some("<sip:127.0.0.1:5070;lr>"),
            user_agent: "rtcplane",
        };
        let bytes = reg.to_bytes();
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        assert!(
            text.starts_with("REGISTER sip:example.org SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Contact: <sip:alice@127.0.0.1:5060>;expires=0\r\n"),
            "{text}"
        );
        assert!(text.contains("Expires: 0\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        let parsed = rsip::Request::try_from(&bytes[..]).expect("rsip parses it");
        assert_eq!(parsed.method, rsip::Method::Register);
    }

    #[test]
    fn frames_tcp_messages() {
        assert_eq!(
            frame_len(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\nSIP"),
            Ok(Some(37))
        );
        assert_eq!(frame_len(b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nab"), Ok(None));
        assert_eq!(
            frame_len(b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nabc"),
            Ok(Some(27))
        );
        assert_eq!(
            frame_len(b"SIP/2.0 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(FrameError)
        );
        assert_eq!(
            frame_len(b"SIP/2.0 200 OK\r\nContent-Length: 999999\r\n\r\n"),
            Err(FrameError)
        );
    }

    #[test]
    fn contact_helpers() {
        assert_eq!(
            contact_uri("\"A\" <sip:a@b;transport=tcp>;expires=5"),
            "sip:a@b;transport=tcp"
        );
        assert_eq!(contact_expires("<sip:a@b>;q=0.5;expires=60"), Some(60));
        assert_eq!(contact_expires("sip:a@b;expires=30"), Some(30));
        assert!(uri_eq(
            "sip:alice@EXAMPLE.org;transport=udp",
            "SIP:alice@example.org"
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_response(&bytes);
            let mut framed = b"SIP/2.0 200 OK\r\n".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = parse_response(&framed);
        }
    }
}
