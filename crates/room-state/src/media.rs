//! The media session credentials rtcplane issues itself, in place of TokBox: a `sessionId` per room (from
//! `rooms.media_session_id`) and a `sessionToken` per join, signed so a media server holding
//! `rooms.media_secret` can check it: `T1==` + base64url(JSON claims) + `.` + base64url(HMAC-SHA256).
//! The claims are `{sid, role, cid, iat, exp, nonce}`; `role` is `moderator` for the room owner,
//! `publisher` otherwise, as Loop asked TokBox.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};

/// Mints session ids and tokens.
#[derive(Clone)]
pub struct Media {
    template: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Media {
    /// From `rooms.media_session_id` and `rooms.media_secret` (random when empty).
    pub fn new(template: &str, secret: &str) -> Self {
        let secret = if secret.is_empty() {
            rand::random::<[u8; 32]>().to_vec()
        } else {
            secret.as_bytes().to_vec()
        };
        Self {
            template: template.to_owned(),
            secret,
        }
    }

    /// A session id for the room `token`.
    pub fn session_id(&self, token: &str) -> String {
        self.template
            .replace("{token}", token)
            .replace("{random}", &hex(&rand::random::<[u8; 16]>()))
    }

    /// A signed session token.
    pub fn session_token(
        &self,
        session_id: &str,
        role: &str,
        connection_id: &str,
        now_secs: i64,
        ttl_secs: i64,
    ) -> String {
        let claims = serde_json::json!({
            "sid": session_id,
            "role": role,
            "cid": connection_id,
            "iat": now_secs,
            "exp": now_secs.saturating_add(ttl_secs),
            "nonce": hex(&rand::random::<[u8; 8]>()),
        });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.secret) {
            Ok(mut m) => {
                m.update(payload.as_bytes());
                URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
            }
            Err(_) => String::new(),
        };
        format!("T1=={payload}.{sig}")
    }

    /// The claims of a token this `Media` signed, if the signature holds.
    pub fn verify(&self, token: &str) -> Option<serde_json::Value> {
        let rest = token.strip_prefix("T1==")?;
        let (payload, sig) = rest.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.secret).ok()?;
        m.update(payload.as_bytes());
        m.verify_slice(&sig).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_role_and_verify() {
        let m = Media::new("{token}-{random}", "k");
        let sid = m.session_id("abc");
        assert!(sid.starts_with("abc-") && sid.len() == 4 + 32, "{sid}");
        let t = m.session_token(&sid, "moderator", "cid", 100, 300);
        let claims = m.verify(&t).expect("valid");
        assert_eq!(claims["role"], "moderator");
        assert_eq!(claims["exp"], 400);
        assert!(Media::new("x", "other").verify(&t).is_none());
        assert!(m.verify("T1==abc.def").is_none());
    }
}
