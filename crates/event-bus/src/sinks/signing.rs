//! Standard Webhooks signing (<https://www.standardwebhooks.com/>): the signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`, the MAC is HMAC-SHA256 keyed with the base64-decoded secret
//! (after its `whsec_` prefix), and the header value is `v1,<base64 of the MAC>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};

/// The prefix of secrets in their printable form.
pub const SECRET_PREFIX: &str = "whsec_";

/// A parsed signing key.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// Reads `whsec_<base64>`; the key must be 24 to 64 bytes, as the specification asks.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(b64) = text.strip_prefix(SECRET_PREFIX) else {
            return Err(format!(
                "must be `{SECRET_PREFIX}` followed by base64 (generate one with: echo {SECRET_PREFIX}$(head -c 32 /dev/urandom | base64))"
            ));
        };
        let key = STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("the part after `{SECRET_PREFIX}` is not base64: {e}"))?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!(
                "the key is {} bytes; Standard Webhooks asks for 24 to 64",
                key.len()
            ));
        }
        Ok(Self(key))
    }

    /// A fresh random secret in printable form (32 random bytes).
    pub fn generate() -> String {
        let bytes: [u8; 32] = rand::random();
        format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
    }

    /// The `webhook-signature` header value for one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC accepts keys of any length; the error arm cannot happen.
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification and its reference libraries' tests.
    #[test]
    fn specification_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rejects_malformed_secrets() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_!!!").is_err());
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err());
        let generated = Secret::generate();
        assert!(Secret::parse(&generated).is_ok(), "{generated}");
        assert_eq!(
            format!("{:?}", Secret::parse(&generated).expect("ok")),
            "Secret(<redacted>)"
        );
    }
}
