//! MESSAGE-INTEGRITY (HMAC-SHA1) and MESSAGE-INTEGRITY-SHA256, and long-term credential keys (RFC 8489 §9.2).

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

/// Which integrity attribute a message was checked with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegrityKind {
    /// MESSAGE-INTEGRITY, HMAC-SHA1.
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256.
    Sha256,
}

/// Why integrity did not check out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// No integrity attribute.
    #[error("no MESSAGE-INTEGRITY")]
    Missing,
    /// The MAC does not match.
    #[error("MESSAGE-INTEGRITY does not match")]
    Mismatch,
    /// The attribute has an invalid size (SHA1: 20; SHA256: 16–32, a multiple of 4).
    #[error("MESSAGE-INTEGRITY has an invalid size")]
    BadLength,
}

/// PASSWORD-ALGORITHM values (RFC 8489 §18.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PasswordAlgorithm {
    /// 0x0001: key = MD5(username ":" realm ":" password), 16 bytes.
    Md5,
    /// 0x0002: key = SHA-256(username ":" realm ":" password), 32 bytes.
    Sha256,
}

impl PasswordAlgorithm {
    /// The number on the wire.
    pub fn number(self) -> u16 {
        match self {
            Self::Md5 => 0x0001,
            Self::Sha256 => 0x0002,
        }
    }

    /// From the number on the wire.
    pub fn from_number(n: u16) -> Option<Self> {
        match n {
            0x0001 => Some(Self::Md5),
            0x0002 => Some(Self::Sha256),
            _ => None,
        }
    }
}

/// A long-term credential key: 16 bytes (MD5) or 32 bytes (SHA-256).
#[derive(Clone, PartialEq, Eq)]
pub struct LongTermKey {
    bytes: [u8; 32],
    len: usize,
}

impl std::fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are secrets: never print them.
        f.debug_struct("LongTermKey")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl LongTermKey {
    /// Derives the key from `username:realm:password` (the password as configured; no SASLprep/OpaqueString
    /// normalisation is applied, which is exact for ASCII passwords).
    pub fn derive(
        algorithm: PasswordAlgorithm,
        username: &str,
        realm: &str,
        password: &str,
    ) -> Self {
        let parts: [&[u8]; 5] = [
            username.as_bytes(),
            b":",
            realm.as_bytes(),
            b":",
            password.as_bytes(),
        ];
        let mut bytes = [0_u8; 32];
        let len = match algorithm {
            PasswordAlgorithm::Md5 => {
                let mut h = Md5::new();
                for p in parts {
                    h.update(p);
                }
                bytes[..16].copy_from_slice(&h.finalize());
                16
            }
            PasswordAlgorithm::Sha256 => {
                let mut h = <Sha256 as Digest>::new();
                for p in parts {
                    Digest::update(&mut h, p);
                }
                bytes.copy_from_slice(&h.finalize());
                32
            }
        };
        Self { bytes, len }
    }

    /// A key given directly, e.g. coturn's `0x…` HA1 form (16 bytes for MD5) or a stored SHA-256 key.
    pub fn from_bytes(key: &[u8]) -> Option<Self> {
        if key.len() != 16 && key.len() != 32 {
            return None;
        }
        let mut bytes = [0_u8; 32];
        bytes[..key.len()].copy_from_slice(key);
        Some(Self {
            bytes,
            len: key.len(),
        })
    }

    /// Parses coturn's hex key form (`0x` followed by 32 or 64 hex digits).
    pub fn from_hex(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
        if hex.len() % 2 != 0 {
            return None;
        }
        let mut out = [0_u8; 32];
        let n = hex.len() / 2;
        if n != 16 && n != 32 {
            return None;
        }
        for (i, slot) in out.iter_mut().take(n).enumerate() {
            *slot = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Self::from_bytes(&out[..n])
    }

    /// The key bytes, as the HMAC key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// HMAC-SHA1 over the concatenation of `parts`.
pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Verifies `tag` in constant time (the `hmac` crate's comparison).
pub(crate) fn verify(
    kind: IntegrityKind,
    key: &[u8],
    parts: &[&[u8]],
    tag: &[u8],
) -> Result<(), IntegrityError> {
    match kind {
        IntegrityKind::Sha1 => {
            if tag.len() != 20 {
                return Err(IntegrityError::BadLength);
            }
            let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
            for p in parts {
                mac.update(p);
            }
            mac.verify_slice(tag).map_err(|_| IntegrityError::Mismatch)
        }
        IntegrityKind::Sha256 => {
            // RFC 8489 §14.6: 16 to 32 bytes, a multiple of 4, the leftmost bytes of the HMAC.
            if tag.len() < 16 || tag.len() > 32 || !tag.len().is_multiple_of(4) {
                return Err(IntegrityError::BadLength);
            }
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
            for p in parts {
                mac.update(p);
            }
            mac.verify_truncated_left(tag)
                .map_err(|_| IntegrityError::Mismatch)
        }
    }
}
