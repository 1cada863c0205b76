//! Decoding: header checks, an attribute index without allocation, typed accessors.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::integrity::{self, IntegrityError, IntegrityKind};
use super::{
    Class, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE, Method, TransactionId, attr,
    split_message_type,
};

/// Most attributes indexed per message; a message with more is refused (real clients send about ten).
pub const MAX_ATTRIBUTES: usize = 40;

/// Why bytes are not a usable STUN message (the server drops them, or answers 400 where the RFC says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    #[error("shorter than a STUN header")]
    TooShort,
    /// The first two bits are not 0, or the magic cookie is wrong.
    #[error("not a STUN message")]
    NotStun,
    /// The header's length is not a multiple of 4 or does not match the bytes.
    #[error("message length does not match the datagram")]
    BadLength,
    /// An attribute claims more bytes than the message has.
    #[error("attribute {0:#06x} overruns the message")]
    AttributeOverrun(u16),
    /// More than [`MAX_ATTRIBUTES`] attributes.
    #[error("too many attributes")]
    TooManyAttributes,
    /// FINGERPRINT is not the last attribute, or has the wrong size.
    #[error("FINGERPRINT misplaced or malformed")]
    BadFingerprintPlacement,
    /// The FINGERPRINT value does not match the message.
    #[error("FINGERPRINT does not match")]
    FingerprintMismatch,
    /// An attribute's value is malformed (wrong size, bad family, invalid UTF-8, too long).
    #[error("malformed attribute {0:#06x}")]
    BadAttribute(u16),
    /// Not a ChannelData message (channel number outside 0x4000–0x7FFF).
    #[error("not a ChannelData message")]
    NotChannelData,
    /// ChannelData shorter than its length field says.
    #[error("ChannelData truncated")]
    Truncated,
}

/// One attribute's position in the message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawAttr {
    /// Its type.
    pub ty: u16,
    /// Offset of its TLV header from the start of the message.
    start: u16,
    /// Length of its value (without padding).
    len: u16,
}

/// A decoded STUN message borrowing the bytes it came from.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    /// The method.
    pub method: Method,
    /// The class.
    pub class: Class,
    /// The transaction id.
    pub transaction_id: TransactionId,
    raw: &'a [u8],
    attrs: [RawAttr; MAX_ATTRIBUTES],
    count: usize,
    integrity: Option<RawAttr>,
    integrity_sha256: Option<RawAttr>,
    fingerprint: bool,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl<'a> Message<'a> {
    /// Cheap test for "this datagram is STUN" (first two bits 0 and the magic cookie), as used to tell STUN
    /// from ChannelData and from garbage.
    pub fn looks_like_stun(buf: &[u8]) -> bool {
        buf.len() >= HEADER_LEN && buf[0] & 0xC0 == 0 && be32(buf, 4) == MAGIC_COOKIE
    }

    /// Length of the whole message in bytes (header included).
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// Decodes a whole message (exactly one: the length must match `buf`). Verifies FINGERPRINT if present.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::TooShort);
        }
        if !Self::looks_like_stun(buf) {
            return Err(DecodeError::NotStun);
        }
        let body = usize::from(be16(buf, 2));
        if body % 4 != 0 || HEADER_LEN + body != buf.len() {
            return Err(DecodeError::BadLength);
        }
        let (method, class) = split_message_type(be16(buf, 0));
        let mut transaction_id = [0_u8; 12];
        transaction_id.copy_from_slice(&buf[8..20]);

        let mut msg = Message {
            method,
            class,
            transaction_id,
            raw: buf,
            attrs: [RawAttr::default(); MAX_ATTRIBUTES],
            count: 0,
            integrity: None,
            integrity_sha256: None,
            fingerprint: false,
        };
        let mut at = HEADER_LEN;
        while at < buf.len() {
            if buf.len() - at < 4 {
                return Err(DecodeError::BadLength);
            }
            let ty = be16(buf, at);
            let len = usize::from(be16(buf, at + 2));
            let end = at + 4 + len;
            if end > buf.len() {
                return Err(DecodeError::AttributeOverrun(ty));
            }
            let a = RawAttr {
                ty,
                // Both fit: the whole message is at most 20 + 65535 bytes.
                start: at as u16,
                len: len as u16,
            };
            if msg.fingerprint {
                // Nothing may follow FINGERPRINT.
                return Err(DecodeError::BadFingerprintPlacement);
            }
            match ty {
                attr::FINGERPRINT => {
                    if len != 4 {
                        return Err(DecodeError::BadFingerprintPlacement);
                    }
                    let expected = crc32fast::hash(&buf[..at]) ^ FINGERPRINT_XOR;
                    // The CRC covers the header as sent, whose length already includes FINGERPRINT.
                    if be32(buf, at + 4) != expected {
                        return Err(DecodeError::FingerprintMismatch);
                    }
                    msg.fingerprint = true;
                }
                attr::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    msg.integrity_sha256 = Some(a);
                }
                attr::MESSAGE_INTEGRITY
                    if msg.integrity.is_none() && msg.integrity_sha256.is_none() =>
                {
                    msg.integrity = Some(a);
                }
                // RFC 8489 §14.5/§14.6: everything else after an integrity attribute is ignored.
                _ if msg.integrity.is_some() || msg.integrity_sha256.is_some() => {}
                _ => {
                    if msg.count == MAX_ATTRIBUTES {
                        return Err(DecodeError::TooManyAttributes);
                    }
                    msg.attrs[msg.count] = a;
                    msg.count += 1;
                }
            }
            // Attributes start 4-aligned and the body is a multiple of 4, so the padding always fits.
            at += 4 + pad4(len);
        }
        Ok(msg)
    }

    /// The whole message as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The attributes before any integrity attribute, in order (integrity and fingerprint excluded).
    pub fn attributes(&self) -> &[RawAttr] {
        &self.attrs[..self.count]
    }

    /// An attribute's value.
    pub fn value(&self, a: &RawAttr) -> &'a [u8] {
        let start = usize::from(a.start) + 4;
        &self.raw[start..start + usize::from(a.len)]
    }

    /// The first value of attribute `ty`.
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.attributes()
            .iter()
            .find(|a| a.ty == ty)
            .map(|a| self.value(a))
    }

    /// Every value of attribute `ty` (CreatePermission may carry several XOR-PEER-ADDRESS).
    pub fn get_all(&self, ty: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.attributes()
            .iter()
            .filter(move |a| a.ty == ty)
            .map(|a| self.value(a))
    }

    /// Is attribute `ty` present?
    pub fn has(&self, ty: u16) -> bool {
        self.attributes().iter().any(|a| a.ty == ty)
    }

    /// Comprehension-required attributes we do not understand (for 420 and UNKNOWN-ATTRIBUTES).
    pub fn unknown_comprehension_required(&self) -> impl Iterator<Item = u16> + '_ {
        self.attributes()
            .iter()
            .map(|a| a.ty)
            .filter(|&ty| attr::comprehension_required(ty) && !attr::is_known(ty))
    }

    /// Does the message carry MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256?
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some() || self.integrity_sha256.is_some()
    }

    /// Did the message carry a (valid) FINGERPRINT?
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint
    }

    /// Checks the message's integrity with `key` (the long-term key, or the short-term password), in
    /// constant time. MESSAGE-INTEGRITY-SHA256 is checked when present, else MESSAGE-INTEGRITY.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<IntegrityKind, IntegrityError> {
        let (a, kind) = match (self.integrity_sha256, self.integrity) {
            (Some(a), _) => (a, IntegrityKind::Sha256),
            (None, Some(a)) => (a, IntegrityKind::Sha1),
            (None, None) => return Err(IntegrityError::Missing),
        };
        let start = usize::from(a.start);
        let tag = self.value(&a);
        // The MAC covers the message up to the attribute, with the header length counting up to its end.
        let covered_len = (start + 4 + usize::from(a.len) - HEADER_LEN) as u16;
        let mut header = [0_u8; HEADER_LEN];
        header.copy_from_slice(&self.raw[..HEADER_LEN]);
        header[2..4].copy_from_slice(&covered_len.to_be_bytes());
        let parts: [&[u8]; 2] = [&header, &self.raw[HEADER_LEN..start]];
        integrity::verify(kind, key, &parts, tag)?;
        Ok(kind)
    }

    fn string(&self, ty: u16, max: usize) -> Result<Option<&'a str>, DecodeError> {
        match self.get(ty) {
            None => Ok(None),
            Some(v) if v.len() > max => Err(DecodeError::BadAttribute(ty)),
            Some(v) => std::str::from_utf8(v)
                .map(Some)
                .map_err(|_| DecodeError::BadAttribute(ty)),
        }
    }

    fn fixed<const N: usize>(&self, ty: u16) -> Result<Option<[u8; N]>, DecodeError> {
        match self.get(ty) {
            None => Ok(None),
            Some(v) => <[u8; N]>::try_from(v)
                .map(Some)
                .map_err(|_| DecodeError::BadAttribute(ty)),
        }
    }

    /// USERNAME (at most 513 bytes of UTF-8).
    pub fn username(&self) -> Result<Option<&'a str>, DecodeError> {
        self.string(attr::USERNAME, 513)
    }

    /// REALM (at most 763 bytes).
    pub fn realm(&self) -> Result<Option<&'a str>, DecodeError> {
        self.string(attr::REALM, 763)
    }

    /// NONCE (at most 763 bytes).
    pub fn nonce(&self) -> Result<Option<&'a str>, DecodeError> {
        self.string(attr::NONCE, 763)
    }

    /// SOFTWARE (at most 763 bytes).
    pub fn software(&self) -> Result<Option<&'a str>, DecodeError> {
        self.string(attr::SOFTWARE, 763)
    }

    /// USERHASH (32 bytes).
    pub fn userhash(&self) -> Result<Option<[u8; 32]>, DecodeError> {
        self.fixed(attr::USERHASH)
    }

    /// An XOR-…-ADDRESS attribute (XOR-MAPPED, XOR-PEER, XOR-RELAYED), first occurrence.
    pub fn xor_address(&self, ty: u16) -> Result<Option<SocketAddr>, DecodeError> {
        self.get(ty)
            .map(|v| {
                decode_address(v, Some(&self.transaction_id)).ok_or(DecodeError::BadAttribute(ty))
            })
            .transpose()
    }

    /// Every XOR-PEER-ADDRESS, decoded; fails on the first malformed one.
    pub fn xor_peer_addresses(&self) -> impl Iterator<Item = Result<SocketAddr, DecodeError>> + '_ {
        self.get_all(attr::XOR_PEER_ADDRESS).map(|v| {
            decode_address(v, Some(&self.transaction_id))
                .ok_or(DecodeError::BadAttribute(attr::XOR_PEER_ADDRESS))
        })
    }

    /// MAPPED-ADDRESS or ALTERNATE-SERVER (not XORed).
    pub fn plain_address(&self, ty: u16) -> Result<Option<SocketAddr>, DecodeError> {
        self.get(ty)
            .map(|v| decode_address(v, None).ok_or(DecodeError::BadAttribute(ty)))
            .transpose()
    }

    /// LIFETIME in seconds.
    pub fn lifetime(&self) -> Result<Option<u32>, DecodeError> {
        Ok(self.fixed::<4>(attr::LIFETIME)?.map(u32::from_be_bytes))
    }

    /// CHANNEL-NUMBER (the number; the RFFU half is ignored).
    pub fn channel_number(&self) -> Result<Option<u16>, DecodeError> {
        Ok(self
            .fixed::<4>(attr::CHANNEL_NUMBER)?
            .map(|b| u16::from_be_bytes([b[0], b[1]])))
    }

    /// REQUESTED-TRANSPORT protocol number (17 = UDP, 6 = TCP).
    pub fn requested_transport(&self) -> Result<Option<u8>, DecodeError> {
        Ok(self.fixed::<4>(attr::REQUESTED_TRANSPORT)?.map(|b| b[0]))
    }

    /// REQUESTED-ADDRESS-FAMILY (1 = IPv4, 2 = IPv6; other values are returned as is for 440).
    pub fn requested_address_family(&self) -> Result<Option<u8>, DecodeError> {
        Ok(self
            .fixed::<4>(attr::REQUESTED_ADDRESS_FAMILY)?
            .map(|b| b[0]))
    }

    /// ADDITIONAL-ADDRESS-FAMILY (only 2 = IPv6 is valid; checked by the server).
    pub fn additional_address_family(&self) -> Result<Option<u8>, DecodeError> {
        Ok(self
            .fixed::<4>(attr::ADDITIONAL_ADDRESS_FAMILY)?
            .map(|b| b[0]))
    }

    /// EVEN-PORT: `Some(reserve_next)` when present.
    pub fn even_port(&self) -> Result<Option<bool>, DecodeError> {
        Ok(self.fixed::<1>(attr::EVEN_PORT)?.map(|b| b[0] & 0x80 != 0))
    }

    /// RESERVATION-TOKEN (8 bytes).
    pub fn reservation_token(&self) -> Result<Option<[u8; 8]>, DecodeError> {
        self.fixed(attr::RESERVATION_TOKEN)
    }

    /// DONT-FRAGMENT present?
    pub fn dont_fragment(&self) -> bool {
        self.has(attr::DONT_FRAGMENT)
    }

    /// DATA.
    pub fn data(&self) -> Option<&'a [u8]> {
        self.get(attr::DATA)
    }

    /// CONNECTION-ID (RFC 6062).
    pub fn connection_id(&self) -> Result<Option<u32>, DecodeError> {
        Ok(self
            .fixed::<4>(attr::CONNECTION_ID)?
            .map(u32::from_be_bytes))
    }

    /// ERROR-CODE: the number and the reason phrase.
    pub fn error_code(&self) -> Result<Option<(u16, &'a str)>, DecodeError> {
        let Some(v) = self.get(attr::ERROR_CODE) else {
            return Ok(None);
        };
        let bad = DecodeError::BadAttribute(attr::ERROR_CODE);
        if v.len() < 4 || v.len() > 4 + 763 {
            return Err(bad);
        }
        let class = u16::from(v[2] & 0x07);
        let number = u16::from(v[3]);
        if !(3..=6).contains(&class) || number > 99 {
            return Err(bad);
        }
        let reason = std::str::from_utf8(&v[4..]).map_err(|_| bad)?;
        Ok(Some((class * 100 + number, reason)))
    }

    /// UNKNOWN-ATTRIBUTES: the listed types.
    pub fn unknown_attributes(
        &self,
    ) -> Result<Option<impl Iterator<Item = u16> + 'a>, DecodeError> {
        match self.get(attr::UNKNOWN_ATTRIBUTES) {
            None => Ok(None),
            Some(v) if v.len() % 2 != 0 => Err(DecodeError::BadAttribute(attr::UNKNOWN_ATTRIBUTES)),
            Some(v) => Ok(Some(
                v.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])),
            )),
        }
    }

    /// PASSWORD-ALGORITHM: the algorithm number (parameters, unused by MD5 and SHA-256, are checked for size).
    pub fn password_algorithm(&self) -> Result<Option<u16>, DecodeError> {
        let Some(v) = self.get(attr::PASSWORD_ALGORITHM) else {
            return Ok(None);
        };
        parse_algorithms(v)
            .and_then(|mut it| {
                let first = it.next()?;
                it.next().is_none().then_some(first)
            })
            .map(Some)
            .ok_or(DecodeError::BadAttribute(attr::PASSWORD_ALGORITHM))
    }

    /// PASSWORD-ALGORITHMS: the listed algorithm numbers, in order.
    pub fn password_algorithms(
        &self,
    ) -> Result<Option<impl Iterator<Item = u16> + 'a>, DecodeError> {
        match self.get(attr::PASSWORD_ALGORITHMS) {
            None => Ok(None),
            Some(v) => parse_algorithms(v)
                .map(Some)
                .ok_or(DecodeError::BadAttribute(attr::PASSWORD_ALGORITHMS)),
        }
    }
}

/// `algorithm(2) params-len(2) params(padded)` repeated; `None` if malformed.
fn parse_algorithms(v: &[u8]) -> Option<impl Iterator<Item = u16> + '_> {
    let mut at = 0;
    let mut n = 0;
    while at < v.len() {
        if v.len() - at < 4 {
            return None;
        }
        let plen = usize::from(u16::from_be_bytes([v[at + 2], v[at + 3]]));
        at += 4 + pad4(plen);
        n += 1;
    }
    if at != v.len() || n == 0 {
        return None;
    }
    let mut pos = 0;
    Some(std::iter::from_fn(move || {
        if pos >= v.len() {
            return None;
        }
        let alg = u16::from_be_bytes([v[pos], v[pos + 1]]);
        let plen = usize::from(u16::from_be_bytes([v[pos + 2], v[pos + 3]]));
        pos += 4 + pad4(plen);
        Some(alg)
    }))
}

/// Decodes an address attribute value; XORed with the cookie (and transaction id for IPv6) when `tid` is given.
pub(crate) fn decode_address(v: &[u8], tid: Option<&TransactionId>) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    if tid.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match (v[1], v.len()) {
        (attr::FAMILY_IPV4, 8) => {
            let mut b = [v[4], v[5], v[6], v[7]];
            if tid.is_some() {
                for (x, c) in b.iter_mut().zip(cookie) {
                    *x ^= c;
                }
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        (attr::FAMILY_IPV6, 20) => {
            let mut b = [0_u8; 16];
            b.copy_from_slice(&v[4..20]);
            if let Some(tid) = tid {
                let mask = cookie.iter().chain(tid.iter());
                for (x, m) in b.iter_mut().zip(mask) {
                    *x ^= m;
                }
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}
