//! Encoding into a caller-owned, reusable buffer.

use std::net::{IpAddr, SocketAddr};

use super::integrity::{LongTermKey, PasswordAlgorithm, hmac_sha1, hmac_sha256};
use super::{
    Class, ErrorCode, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE, Method, TransactionId, attr,
    message_type,
};

/// Writes one STUN message into `buf` (cleared first). Attributes are appended in call order; call
/// [`Encoder::message_integrity`] / [`Encoder::message_integrity_sha256`] and then [`Encoder::fingerprint`]
/// last. A value that would make the message exceed 65535 bytes is refused and [`Encoder::finish`] says so.
#[derive(Debug)]
pub struct Encoder<'b> {
    buf: &'b mut Vec<u8>,
    tid: TransactionId,
    overflow: bool,
}

/// The message would not fit STUN's 16-bit length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("STUN message too long")]
pub struct TooLong;

const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl<'b> Encoder<'b> {
    /// Starts a message.
    pub fn new(buf: &'b mut Vec<u8>, method: Method, class: Class, tid: TransactionId) -> Self {
        buf.clear();
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid);
        Self {
            buf,
            tid,
            overflow: false,
        }
    }

    /// Continues a message already in `buf` (its header and attributes as written so far).
    pub fn resume(buf: &'b mut Vec<u8>, tid: TransactionId) -> Self {
        let mut e = Self {
            buf,
            tid,
            overflow: false,
        };
        if e.buf.len() < HEADER_LEN {
            e.overflow = true;
        } else {
            e.set_length();
        }
        e
    }

    fn set_length(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends an attribute with a raw value (padded to 4 bytes with zeros).
    pub fn attr(&mut self, ty: u16, value: &[u8]) -> &mut Self {
        let total = self.buf.len() - HEADER_LEN + 4 + pad4(value.len());
        if value.len() > usize::from(u16::MAX) || total > usize::from(u16::MAX) {
            self.overflow = true;
            return self;
        }
        self.buf.extend_from_slice(&ty.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        self.buf
            .resize(self.buf.len() + pad4(value.len()) - value.len(), 0);
        self.set_length();
        self
    }

    /// A string attribute (USERNAME, REALM, NONCE, SOFTWARE).
    pub fn string(&mut self, ty: u16, value: &str) -> &mut Self {
        self.attr(ty, value.as_bytes())
    }

    /// A 32-bit attribute (LIFETIME, CONNECTION-ID).
    pub fn u32(&mut self, ty: u16, value: u32) -> &mut Self {
        self.attr(ty, &value.to_be_bytes())
    }

    /// LIFETIME.
    pub fn lifetime(&mut self, seconds: u32) -> &mut Self {
        self.u32(attr::LIFETIME, seconds)
    }

    /// CHANNEL-NUMBER.
    pub fn channel_number(&mut self, channel: u16) -> &mut Self {
        let b = channel.to_be_bytes();
        self.attr(attr::CHANNEL_NUMBER, &[b[0], b[1], 0, 0])
    }

    /// REQUESTED-TRANSPORT.
    pub fn requested_transport(&mut self, protocol: u8) -> &mut Self {
        self.attr(attr::REQUESTED_TRANSPORT, &[protocol, 0, 0, 0])
    }

    /// REQUESTED-ADDRESS-FAMILY or ADDITIONAL-ADDRESS-FAMILY.
    pub fn family(&mut self, ty: u16, family: u8) -> &mut Self {
        self.attr(ty, &[family, 0, 0, 0])
    }

    /// EVEN-PORT.
    pub fn even_port(&mut self, reserve_next: bool) -> &mut Self {
        self.attr(attr::EVEN_PORT, &[if reserve_next { 0x80 } else { 0 }])
    }

    /// RESERVATION-TOKEN.
    pub fn reservation_token(&mut self, token: [u8; 8]) -> &mut Self {
        self.attr(attr::RESERVATION_TOKEN, &token)
    }

    /// An XOR-…-ADDRESS attribute.
    pub fn xor_address(&mut self, ty: u16, addr: SocketAddr) -> &mut Self {
        let v = address_value(addr, Some(&self.tid));
        self.attr(ty, &v.0[..v.1])
    }

    /// MAPPED-ADDRESS or ALTERNATE-SERVER (not XORed).
    pub fn plain_address(&mut self, ty: u16, addr: SocketAddr) -> &mut Self {
        let v = address_value(addr, None);
        self.attr(ty, &v.0[..v.1])
    }

    /// ERROR-CODE.
    pub fn error_code(&mut self, e: ErrorCode) -> &mut Self {
        self.error_code_raw(e.code, e.reason)
    }

    /// ERROR-CODE with any code (300–699) and reason.
    pub fn error_code_raw(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = [0_u8; 4 + 128];
        v[2] = (code / 100) as u8 & 0x07;
        v[3] = (code % 100) as u8;
        // The reason is at most 127 characters; cut at a character boundary.
        let mut end = reason.len().min(127);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        v[4..4 + end].copy_from_slice(&reason.as_bytes()[..end]);
        self.attr(attr::ERROR_CODE, &v[..4 + end])
    }

    /// UNKNOWN-ATTRIBUTES.
    pub fn unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        let mut v = [0_u8; 64];
        let n = types.len().min(32);
        for (i, t) in types.iter().take(n).enumerate() {
            v[2 * i..2 * i + 2].copy_from_slice(&t.to_be_bytes());
        }
        self.attr(attr::UNKNOWN_ATTRIBUTES, &v[..2 * n])
    }

    /// PASSWORD-ALGORITHMS (no parameters, as for MD5 and SHA-256).
    pub fn password_algorithms(&mut self, algorithms: &[PasswordAlgorithm]) -> &mut Self {
        let mut v = [0_u8; 4 * 8];
        let n = algorithms.len().min(8);
        for (i, a) in algorithms.iter().take(n).enumerate() {
            v[4 * i..4 * i + 2].copy_from_slice(&a.number().to_be_bytes());
        }
        self.attr(attr::PASSWORD_ALGORITHMS, &v[..4 * n])
    }

    /// PASSWORD-ALGORITHM (no parameters).
    pub fn password_algorithm(&mut self, algorithm: PasswordAlgorithm) -> &mut Self {
        let b = algorithm.number().to_be_bytes();
        self.attr(attr::PASSWORD_ALGORITHM, &[b[0], b[1], 0, 0])
    }

    /// MESSAGE-INTEGRITY (HMAC-SHA1) over everything written so far.
    pub fn message_integrity(&mut self, key: &[u8]) -> &mut Self {
        self.integrity(
            attr::MESSAGE_INTEGRITY,
            20,
            |k, parts| {
                let mut out = [0_u8; 32];
                out[..20].copy_from_slice(&hmac_sha1(k, parts));
                out
            },
            key,
        )
    }

    /// MESSAGE-INTEGRITY-SHA256 (full 32 bytes) over everything written so far.
    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        self.integrity(attr::MESSAGE_INTEGRITY_SHA256, 32, hmac_sha256, key)
    }

    fn integrity(
        &mut self,
        ty: u16,
        size: usize,
        mac: impl Fn(&[u8], &[&[u8]]) -> [u8; 32],
        key: &[u8],
    ) -> &mut Self {
        // The length covers the integrity attribute itself while the MAC is computed.
        let covered = self.buf.len() - HEADER_LEN + 4 + size;
        if covered > usize::from(u16::MAX) {
            self.overflow = true;
            return self;
        }
        self.buf[2..4].copy_from_slice(&(covered as u16).to_be_bytes());
        let tag = mac(key, &[self.buf.as_slice()]);
        self.attr(ty, &tag[..size])
    }

    /// FINGERPRINT, last.
    pub fn fingerprint(&mut self) -> &mut Self {
        let covered = self.buf.len() - HEADER_LEN + 8;
        if covered > usize::from(u16::MAX) {
            self.overflow = true;
            return self;
        }
        self.buf[2..4].copy_from_slice(&(covered as u16).to_be_bytes());
        let crc = crc32fast::hash(self.buf) ^ FINGERPRINT_XOR;
        self.u32(attr::FINGERPRINT, crc)
    }

    /// The encoded message.
    pub fn finish(self) -> Result<&'b [u8], TooLong> {
        if self.overflow {
            Err(TooLong)
        } else {
            Ok(self.buf.as_slice())
        }
    }
}

/// Convenience for long-term keys.
impl LongTermKey {
    /// Signs with MESSAGE-INTEGRITY using this key.
    pub fn sign(&self, e: &mut Encoder<'_>) {
        e.message_integrity(self.as_bytes());
    }
}

/// An address attribute value and its length (8 for IPv4, 20 for IPv6).
fn address_value(addr: SocketAddr, tid: Option<&TransactionId>) -> ([u8; 20], usize) {
    let mut v = [0_u8; 20];
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = if tid.is_some() {
        addr.port() ^ (MAGIC_COOKIE >> 16) as u16
    } else {
        addr.port()
    };
    v[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            v[1] = attr::FAMILY_IPV4;
            let mut b = ip.octets();
            if tid.is_some() {
                for (x, c) in b.iter_mut().zip(cookie) {
                    *x ^= c;
                }
            }
            v[4..8].copy_from_slice(&b);
            (v, 8)
        }
        IpAddr::V6(ip) => {
            v[1] = attr::FAMILY_IPV6;
            let mut b = ip.octets();
            if let Some(tid) = tid {
                for (x, m) in b.iter_mut().zip(cookie.iter().chain(tid.iter())) {
                    *x ^= m;
                }
            }
            v[4..20].copy_from_slice(&b);
            (v, 20)
        }
    }
}
