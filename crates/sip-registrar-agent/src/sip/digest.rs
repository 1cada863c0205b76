//! HTTP Digest for SIP (RFC 3261 §22, RFC 7616, RFC 8760): challenge parsing and the Authorization value
//! (pure). MD5, SHA-256 and SHA-512/256, their `-sess` variants, qop `auth` (or none). `auth-int` is not
//! offered by registrars for REGISTER and is not supported: such a challenge without `auth` is refused.

use md5::Md5;
use sha2::{Digest as _, Sha256, Sha512_256};

/// Hash algorithm of a challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    /// MD5 (the default when absent).
    Md5,
    /// SHA-256 (RFC 8760).
    Sha256,
    /// SHA-512/256 (RFC 8760).
    Sha512_256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
            Self::Sha512_256 => "SHA-512-256",
        }
    }

    fn hash(self, data: &str) -> String {
        fn hex(bytes: &[u8]) -> String {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut s = String::with_capacity(bytes.len() * 2);
            for b in bytes {
                s.push(HEX[(b >> 4) as usize] as char);
                s.push(HEX[(b & 15) as usize] as char);
            }
            s
        }
        match self {
            Self::Md5 => hex(&Md5::digest(data.as_bytes())),
            Self::Sha256 => hex(&Sha256::digest(data.as_bytes())),
            Self::Sha512_256 => hex(&Sha512_256::digest(data.as_bytes())),
        }
    }
}

/// A parsed `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// realm.
    pub realm: String,
    /// nonce.
    pub nonce: String,
    /// opaque, echoed back.
    pub opaque: Option<String>,
    /// algorithm.
    pub algorithm: Algorithm,
    /// `-sess` variant.
    pub sess: bool,
    /// qop=auth offered (then used).
    pub qop_auth: bool,
    /// stale=true: the credentials were right, the nonce was old.
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// Not `Digest`.
    #[error("authentication scheme is not Digest")]
    NotDigest,
    /// A required parameter is missing.
    #[error("challenge has no {0}")]
    Missing(&'static str),
    /// An algorithm we do not implement.
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    /// qop offered without `auth`.
    #[error("unsupported qop {0:?} (only auth)")]
    Qop(String),
    /// Unparseable.
    #[error("malformed challenge")]
    Malformed,
}

/// `key=value` / `key="quoted"` pairs separated by commas.
fn params(s: &str) -> Result<Vec<(String, String)>, ChallengeError> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t' || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            return Ok(out);
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[start..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' || key.is_empty() {
            return Err(ChallengeError::Malformed);
        }
        i += 1;
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut closed = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 < b.len() => {
                        value.push(b[i + 1] as char);
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        closed = true;
                        break;
                    }
                    c => {
                        value.push(c as char);
                        i += 1;
                    }
                }
            }
            if !closed {
                return Err(ChallengeError::Malformed);
            }
        } else {
            let start = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            value = s[start..i].trim().to_string();
        }
        out.push((key, value));
    }
}

impl Challenge {
    /// Parses one header value.
    pub fn parse(value: &str) -> Result<Self, ChallengeError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(ChallengeError::NotDigest);
        }
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = (Algorithm::Md5, false);
        let mut qop = None;
        let mut stale = false;
        for (k, v) in params(rest)? {
            match k.as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => opaque = Some(v),
                "stale" => stale = v.eq_ignore_ascii_case("true"),
                "qop" => qop = Some(v),
                "algorithm" => {
                    let upper = v.to_ascii_uppercase();
                    let (base, sess) = match upper.strip_suffix("-SESS") {
                        Some(b) => (b.to_string(), true),
                        None => (upper.clone(), false),
                    };
                    let alg = match base.as_str() {
                        "MD5" => Algorithm::Md5,
                        "SHA-256" => Algorithm::Sha256,
                        "SHA-512-256" => Algorithm::Sha512_256,
                        _ => return Err(ChallengeError::Algorithm(v)),
                    };
                    algorithm = (alg, sess);
                }
                _ => {}
            }
        }
        let qop_auth = match qop {
            None => false,
            Some(q) if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) => true,
            Some(q) => return Err(ChallengeError::Qop(q)),
        };
        Ok(Self {
            realm: realm.ok_or(ChallengeError::Missing("realm"))?,
            nonce: nonce.ok_or(ChallengeError::Missing("nonce"))?,
            opaque,
            algorithm: algorithm.0,
            sess: algorithm.1,
            qop_auth,
            stale,
        })
    }

    /// The strongest challenge we can answer among several (RFC 8760 §2.4: a server may offer one per
    /// algorithm).
    pub fn best<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, ChallengeError> {
        let mut best: Option<Self> = None;
        let mut first_err = None;
        for v in values {
            match Self::parse(v) {
                Ok(c) => {
                    if best.as_ref().is_none_or(|b| c.algorithm > b.algorithm) {
                        best = Some(c);
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        best.ok_or(first_err.unwrap_or(ChallengeError::Malformed))
    }

    /// The `Authorization` (or `Proxy-Authorization`) value answering this challenge. `nc` is the nonce
    /// count (1 for a fresh nonce), `cnonce` a fresh client nonce.
    pub fn authorization(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let alg = self.algorithm;
        let mut ha1 = alg.hash(&format!("{user}:{}:{password}", self.realm));
        if self.sess {
            ha1 = alg.hash(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let nc_hex = format!("{nc:08x}");
        let response = if self.qop_auth {
            alg.hash(&format!(
                "{ha1}:{}:{nc_hex}:{cnonce}:auth:{ha2}",
                self.nonce
            ))
        } else {
            alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}{}",
            quote(user),
            quote(&self.realm),
            quote(&self.nonce),
            alg.name(),
            if self.sess { "-sess" } else { "" }
        );
        if self.qop_auth {
            out.push_str(&format!(
                ", qop=auth, nc={nc_hex}, cnonce=\"{}\"",
                quote(cnonce)
            ));
        }
        if let Some(opaque) = &self.opaque {
            out.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
        }
        out
    }
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_of(auth: &str) -> String {
        params(auth.trim_start_matches("Digest "))
            .expect("params")
            .into_iter()
            .find(|(k, _)| k == "response")
            .map(|(_, v)| v)
            .expect("response")
    }

    /// RFC 2617 §3.5.
    #[test]
    fn rfc2617_md5_vector() {
        let c = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .expect("parse");
        assert!(c.qop_auth);
        let a = c.authorization(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert_eq!(response_of(&a), "6629fae49393a05397450978507c4ef1");
        assert!(a.contains("nc=00000001"), "{a}");
        assert!(
            a.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#),
            "{a}"
        );
    }

    /// RFC 7616 §3.9.1 (MD5 and SHA-256).
    #[test]
    fn rfc7616_vectors() {
        let base = r#"realm="http-auth@example.org", qop="auth, auth-int", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let md5 = Challenge::parse(&format!("Digest {base}, algorithm=MD5")).expect("md5");
        let a = md5.authorization(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            cnonce,
        );
        assert_eq!(response_of(&a), "8ca523f5e9506fed4657c9700eebdbec");
        let sha = Challenge::parse(&format!("Digest {base}, algorithm=SHA-256")).expect("sha");
        let a = sha.authorization(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            cnonce,
        );
        assert_eq!(
            response_of(&a),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert!(a.contains("algorithm=SHA-256"));
    }

    #[test]
    fn picks_strongest_and_reads_stale() {
        let c = Challenge::best([
            r#"Digest realm="example.org", nonce="a", algorithm=MD5"#,
            r#"Digest realm="example.org", nonce="b", algorithm=SHA-256, stale=TRUE"#,
        ])
        .expect("best");
        assert_eq!(
            (c.algorithm, c.nonce.as_str(), c.stale),
            (Algorithm::Sha256, "b", true)
        );
    }

    #[test]
    fn refuses_what_it_cannot_answer() {
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Err(ChallengeError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"x\""),
            Err(ChallengeError::Missing("realm"))
        );
        assert!(matches!(
            Challenge::parse("Digest realm=\"x\", nonce=\"y\", algorithm=SHA-1"),
            Err(ChallengeError::Algorithm(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"x\", nonce=\"y\", qop=\"auth-int\""),
            Err(ChallengeError::Qop(_))
        ));
        assert_eq!(
            Challenge::parse("Digest realm=\"x"),
            Err(ChallengeError::Malformed)
        );
        assert_eq!(
            Challenge::parse("Digest realm"),
            Err(ChallengeError::Malformed)
        );
    }
}
