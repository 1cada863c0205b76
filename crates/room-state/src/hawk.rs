//! Hawk as Loop uses it: pure functions over values (no clock, no I/O).
//!
//! - The session token (32 random bytes, 64 hex characters, handed out in `Hawk-Session-Token`) is run
//!   through HKDF-SHA256 (empty salt, info `identity.mozilla.com/picl/v1/sessionToken`, 64 bytes): the id
//!   is the hex of the first half, the key the hex of the second half, and **the HMAC key is that hex
//!   string's ASCII bytes** (express-hawkauth's `Token`, bug 1032738).
//! - The request MAC is HMAC-SHA256 over the normalized string `hawk.1.header\n ts\n nonce\n METHOD\n
//!   path?query\n host\n port\n hash\n ext\n [app\n dlg\n]`, base64.
//! - The payload hash is SHA-256 over `hawk.1.payload\n <content type>\n <body>\n`, base64.
//! - A stale timestamp is answered with `WWW-Authenticate: Hawk ts="…", tsm="…", error="Stale timestamp"`,
//!   where `tsm` is the HMAC of `hawk.1.ts\n<ts>\n`.
//! - Responses are signed in `Server-Authorization` (`hawk.1.response`, the request's ts and nonce).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// HKDF info string of Loop's (and Firefox Accounts') session tokens.
const TOKEN_INFO: &[u8] = b"identity.mozilla.com/picl/v1/sessionToken";

/// Hawk credentials derived from a session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// 64 hex characters.
    pub id: String,
    /// 64 hex characters; its ASCII bytes are the HMAC key.
    pub key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Derives the Hawk id and key of a session token (64 hex characters); None if it is not hex.
pub fn derive(session_token: &str) -> Option<Credentials> {
    let ikm = unhex(session_token)?;
    let hk = hkdf::Hkdf::<Sha256>::new(None, &ikm);
    let mut okm = [0u8; 64];
    hk.expand(TOKEN_INFO, &mut okm).ok()?;
    Some(Credentials {
        id: hex(&okm[..32]),
        key: hex(&okm[32..]),
    })
}

/// A new session token: 32 random bytes as hex.
pub fn new_session_token() -> String {
    hex(&rand::random::<[u8; 32]>())
}

/// The attributes of a `Hawk` Authorization header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Key id.
    pub id: String,
    /// Unix seconds, as sent.
    pub ts: String,
    /// Client nonce.
    pub nonce: String,
    /// Payload hash, base64.
    pub hash: Option<String>,
    /// Application data.
    pub ext: Option<String>,
    /// Request MAC, base64.
    pub mac: String,
    /// Oz application id.
    pub app: Option<String>,
    /// Oz delegated-by.
    pub dlg: Option<String>,
}

/// Why a header could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadHeader(pub &'static str);

fn allowed_value_char(c: char) -> bool {
    // The hawk library's attribute value alphabet: printable ASCII except `"` and `\`.
    c.is_ascii() && (' '..='~').contains(&c) && c != '"' && c != '\\'
}

impl Header {
    /// Parses `Hawk id="…", ts="…", nonce="…", [hash="…",] [ext="…",] mac="…"` (the scheme is matched
    /// case-insensitively; unknown or repeated attributes are errors, as in the hawk library).
    pub fn parse(value: &str) -> Result<Self, BadHeader> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("hawk") {
            return Err(BadHeader("not a Hawk header"));
        }
        let mut h = Header::default();
        let mut seen: Vec<&str> = Vec::new();
        let mut rest = rest.trim_start();
        while !rest.is_empty() {
            let Some((name, after)) = rest.split_once("=\"") else {
                return Err(BadHeader("Bad header format"));
            };
            let name = name.trim();
            let Some(end) = after.find('"') else {
                return Err(BadHeader("Bad header format"));
            };
            let v = &after[..end];
            if !v.chars().all(allowed_value_char) {
                return Err(BadHeader("Bad attribute value"));
            }
            if seen.contains(&name) {
                return Err(BadHeader("Duplicate attribute"));
            }
            seen.push(name);
            let v = v.to_owned();
            match name {
                "id" => h.id = v,
                "ts" => h.ts = v,
                "nonce" => h.nonce = v,
                "hash" => h.hash = Some(v),
                "ext" => h.ext = Some(v),
                "mac" => h.mac = v,
                "app" => h.app = Some(v),
                "dlg" => h.dlg = Some(v),
                _ => return Err(BadHeader("Unknown attribute")),
            }
            rest = after[end + 1..].trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r.trim_start();
            } else if !rest.is_empty() {
                return Err(BadHeader("Bad header format"));
            }
        }
        if h.id.is_empty() || h.ts.is_empty() || h.nonce.is_empty() || h.mac.is_empty() {
            return Err(BadHeader("Missing attributes"));
        }
        Ok(h)
    }

    /// `ts` as a number.
    pub fn ts(&self) -> Option<i64> {
        if self.ts.is_empty() || !self.ts.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.ts.parse().ok()
    }
}

/// What a MAC covers besides the header's own attributes.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// `GET`, `POST`, … (upper-cased when normalized).
    pub method: &'a str,
    /// Path and query, as sent.
    pub resource: &'a str,
    /// Host name, lower-cased when normalized.
    pub host: &'a str,
    /// Port.
    pub port: u16,
}

fn escape_ext(ext: &str) -> String {
    ext.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The normalized string of type `header` or `response`.
pub fn normalized(kind: &str, h: &Header, t: &Target<'_>, hash: Option<&str>) -> String {
    let mut s = format!(
        "hawk.1.{kind}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        h.ts,
        h.nonce,
        t.method.to_ascii_uppercase(),
        t.resource,
        t.host.to_ascii_lowercase(),
        t.port,
        hash.unwrap_or_default(),
        escape_ext(h.ext.as_deref().unwrap_or_default()),
    );
    if let Some(app) = &h.app {
        s.push_str(app);
        s.push('\n');
        s.push_str(h.dlg.as_deref().unwrap_or_default());
        s.push('\n');
    }
    s
}

fn hmac(key: &str, data: &[u8]) -> Option<HmacSha256> {
    let mut m = HmacSha256::new_from_slice(key.as_bytes()).ok()?;
    m.update(data);
    Some(m)
}

/// base64(HMAC-SHA256(key, text)).
pub fn mac(key: &str, text: &str) -> String {
    hmac(key, text.as_bytes())
        .map_or_else(String::new, |m| STANDARD.encode(m.finalize().into_bytes()))
}

/// Checks a base64 MAC against `text` in constant time.
pub fn verify_mac(key: &str, text: &str, presented: &str) -> bool {
    let Ok(bytes) = STANDARD.decode(presented) else {
        return false;
    };
    hmac(key, text.as_bytes()).is_some_and(|m| m.verify_slice(&bytes).is_ok())
}

/// The payload hash of a body of `content_type` (parameters dropped, lower-cased).
pub fn payload_hash(content_type: &str, body: &[u8]) -> String {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let mut d = Sha256::new();
    d.update(b"hawk.1.payload\n");
    d.update(ct.as_bytes());
    d.update(b"\n");
    d.update(body);
    d.update(b"\n");
    STANDARD.encode(d.finalize())
}

/// Constant-time comparison of two base64 texts (length leaks, content does not).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The `WWW-Authenticate` value that tells a client with a skewed clock the server's time.
pub fn stale_challenge(key: &str, now_secs: i64) -> String {
    let tsm = mac(key, &format!("hawk.1.ts\n{now_secs}\n"));
    format!("Hawk ts=\"{now_secs}\", tsm=\"{tsm}\", error=\"Stale timestamp\"")
}

/// The `Server-Authorization` value for a response to an authenticated request.
pub fn server_authorization(key: &str, h: &Header, t: &Target<'_>, hash: Option<&str>) -> String {
    let resp = Header {
        ext: None,
        app: h.app.clone(),
        dlg: h.dlg.clone(),
        ..h.clone()
    };
    let m = mac(key, &normalized("response", &resp, t, hash));
    match hash {
        Some(hash) => format!("Hawk mac=\"{m}\", hash=\"{hash}\""),
        None => format!("Hawk mac=\"{m}\""),
    }
}

/// The host and port clients sign for, from `rooms.public_origin` or a `Host` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Host name (IPv6 in brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Origin {
    /// `http[s]://host[:port]` (a trailing `/` allowed).
    pub fn parse(origin: &str) -> Option<Self> {
        let (scheme, rest) = origin.split_once("://")?;
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return None;
        }
        Self::from_host(rest, default_port)
    }

    /// A `Host` header value: `name[:port]`, `[v6][:port]`.
    pub fn from_host(host: &str, default_port: u16) -> Option<Self> {
        let host = host.trim();
        if host.is_empty() {
            return None;
        }
        let (name, port) = if let Some(rest) = host.strip_prefix('[') {
            let (v6, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default_port,
                None => return None,
            };
            (format!("[{v6}]"), port)
        } else {
            match host.split_once(':') {
                Some((n, p)) => (n.to_owned(), p.parse().ok()?),
                None => (host.to_owned(), default_port),
            }
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return None;
        }
        Some(Self { host: name, port })
    }
}

/// HMAC-SHA256 of `value` under `secret`, hex; plain SHA-256 when the secret is empty. Used to store Hawk
/// ids and link-clicker tokens without keeping the values themselves.
pub fn keyed_hash(secret: &str, value: &str) -> String {
    if secret.is_empty() {
        return hex(&Sha256::digest(value.as_bytes()));
    }
    match hmac(secret, value.as_bytes()) {
        Some(m) => hex(&m.finalize().into_bytes()),
        None => hex(&Sha256::digest(value.as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_rfc5869_hkdf_with_hex_halves() {
        // RFC 5869 test case 3 (empty salt and info) checks the primitive; here the info is Loop's.
        let hk = hkdf::Hkdf::<Sha256>::new(None, &[0x0b; 22]);
        let mut okm = [0u8; 42];
        hk.expand(b"", &mut okm).expect("42 bytes");
        assert_eq!(
            hex(&okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
        );
        let c = derive(&"00".repeat(32)).expect("hex");
        assert_eq!(c.id.len(), 64);
        assert_eq!(c.key.len(), 64);
        assert_ne!(c.id, c.key);
        assert!(derive("zz").is_none());
        assert!(derive("abc").is_none());
    }

    #[test]
    fn headers_parse_and_reject() {
        let h = Header::parse(r#"Hawk id="abc", ts="1353832234", nonce="j4h3g2", hash="Yi9LfIIFRtBEPt74PVmbTF/xVAwPn7ub15ePICfgnuY=", ext="some-app-ext-data", mac="aSe1DERmZuRl3pI36/9BdZmnErTw3sNzOOAUlfeKjVw=""#)
            .expect("valid");
        assert_eq!(h.id, "abc");
        assert_eq!(h.ts(), Some(1_353_832_234));
        assert_eq!(h.ext.as_deref(), Some("some-app-ext-data"));
        for bad in [
            "Basic abc",
            "Hawk",
            r#"Hawk id="a", ts="1", nonce="n""#,
            r#"Hawk id="a", ts="1", nonce="n", mac="m", zz="1""#,
            r#"Hawk id="a", id="b", ts="1", nonce="n", mac="m""#,
            r#"Hawk id="a\b", ts="1", nonce="n", mac="m""#,
            r#"Hawk id="a" ts="1", nonce="n", mac="m""#,
        ] {
            assert!(Header::parse(bad).is_err(), "{bad}");
        }
    }

    /// The hawk library's own README example: key `werxhqb98rpaxn39848xrunpaw3489ruxnpa98w4rxn`, normalized
    /// string and MAC.
    #[test]
    fn mac_matches_the_hawk_reference_example() {
        let h = Header {
            id: "dh37fgj492je".into(),
            ts: "1353832234".into(),
            nonce: "j4h3g2".into(),
            ext: Some("some-app-ext-data".into()),
            ..Header::default()
        };
        let t = Target {
            method: "GET",
            resource: "/resource/1?b=1&a=2",
            host: "example.com",
            port: 8000,
        };
        let n = normalized("header", &h, &t, None);
        assert_eq!(
            n,
            "hawk.1.header\n1353832234\nj4h3g2\nGET\n/resource/1?b=1&a=2\nexample.com\n8000\n\nsome-app-ext-data\n"
        );
        let key = "werxhqb98rpaxn39848xrunpaw3489ruxnpa98w4rxn";
        assert_eq!(mac(key, &n), "6R4rV5iE+NPoym+WwjeHzjAGXUtLNIxmo1vpMofpLAE=");
        assert!(verify_mac(
            key,
            &n,
            "6R4rV5iE+NPoym+WwjeHzjAGXUtLNIxmo1vpMofpLAE="
        ));
        assert!(!verify_mac(
            key,
            &n,
            "6R4rV5iE+NPoym+WwjeHzjAGXUtLNIxmo1vpMofpLAA="
        ));
        assert_eq!(
            payload_hash("text/plain; charset=utf-8", b"Thank you for flying Hawk"),
            "Yi9LfIIFRtBEPt74PVmbTF/xVAwPn7ub15ePICfgnuY="
        );
    }

    #[test]
    fn origins() {
        let o = Origin::parse("https://Loop.example.com").expect("origin");
        assert_eq!((o.host.as_str(), o.port), ("Loop.example.com", 443));
        assert_eq!(
            Origin::from_host("[::1]:8080", 80),
            Some(Origin {
                host: "[::1]".into(),
                port: 8080
            })
        );
        assert_eq!(Origin::from_host("a:b", 80), None);
        assert_eq!(Origin::parse("ftp://x"), None);
        assert_eq!(Origin::parse("http://x/path"), None);
    }
}
