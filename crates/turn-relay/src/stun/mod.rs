//! The STUN/TURN codec (RFC 8489, RFC 8656, RFC 6062 attributes): pure functions over byte slices.
//!
//! - [`Message::decode`] checks the header, walks the attributes without copying or allocating, applies the
//!   placement rules of MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, and verifies the
//!   fingerprint. Typed accessors read attributes on demand; [`Message::verify_integrity`] checks the MAC.
//! - [`Encoder`] writes a message into a caller-owned `Vec<u8>` (reused across messages, so steady-state
//!   encoding does not allocate), adding integrity and fingerprint last.
//! - [`ChannelData`] and [`frame_len`] handle the TURN data framing and stream (TCP/TLS) framing.
//!
//! Hand-written on purpose: this is the relay's hot path and a protocol core we must own (DESIGN.md).

pub mod attr;
mod channel;
mod encode;
mod error_code;
mod integrity;
mod message;

pub use channel::{CHANNELS, ChannelData, frame_len};
pub use encode::Encoder;
pub use error_code::ErrorCode;
pub use integrity::{IntegrityError, IntegrityKind, LongTermKey, PasswordAlgorithm};
pub use message::{DecodeError, Message, RawAttr};

/// The fixed value in every STUN header (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;
/// XOR value of the FINGERPRINT attribute (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// A transaction id: 96 random bits chosen by the client.
pub type TransactionId = [u8; 12];

/// The class of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request (expects a response).
    Request,
    /// An indication (no response).
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// A STUN method (12 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(pub u16);

impl Method {
    /// RFC 8489.
    pub const BINDING: Self = Self(0x001);
    /// RFC 8656.
    pub const ALLOCATE: Self = Self(0x003);
    /// RFC 8656.
    pub const REFRESH: Self = Self(0x004);
    /// RFC 8656 (indication only).
    pub const SEND: Self = Self(0x006);
    /// RFC 8656 (indication only).
    pub const DATA: Self = Self(0x007);
    /// RFC 8656.
    pub const CREATE_PERMISSION: Self = Self(0x008);
    /// RFC 8656.
    pub const CHANNEL_BIND: Self = Self(0x009);
    /// RFC 6062.
    pub const CONNECT: Self = Self(0x00A);
    /// RFC 6062.
    pub const CONNECTION_BIND: Self = Self(0x00B);
    /// RFC 6062.
    pub const CONNECTION_ATTEMPT: Self = Self(0x00C);

    /// The method's name, or `None` for one we do not implement.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::BINDING => "Binding",
            Self::ALLOCATE => "Allocate",
            Self::REFRESH => "Refresh",
            Self::SEND => "Send",
            Self::DATA => "Data",
            Self::CREATE_PERMISSION => "CreatePermission",
            Self::CHANNEL_BIND => "ChannelBind",
            Self::CONNECT => "Connect",
            Self::CONNECTION_BIND => "ConnectionBind",
            Self::CONNECTION_ATTEMPT => "ConnectionAttempt",
            _ => return None,
        })
    }
}

/// Combines method and class into the 14-bit message type (RFC 8489 §5: M11–M7 C1 M6–M4 C0 M3–M0).
pub fn message_type(method: Method, class: Class) -> u16 {
    let m = method.0 & 0x0FFF;
    let c: u16 = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::Success => 0b10,
        Class::Error => 0b11,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

/// Splits a message type into method and class.
pub fn split_message_type(t: u16) -> (Method, Class) {
    let m = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (Method(m), class)
}

/// Decodes `bytes` every way this codec can and runs every accessor on the result: the body of the fuzz
/// target (`cargo xtask fuzz turn`) and of the never-panics property tests.
#[doc(hidden)]
pub fn exercise_decoder(bytes: &[u8]) {
    if let Ok(m) = Message::decode(bytes) {
        let _ = (
            m.username(),
            m.realm(),
            m.nonce(),
            m.software(),
            m.userhash(),
        );
        for ty in [
            attr::XOR_MAPPED_ADDRESS,
            attr::XOR_PEER_ADDRESS,
            attr::XOR_RELAYED_ADDRESS,
        ] {
            let _ = m.xor_address(ty);
        }
        let _ = m.xor_peer_addresses().count();
        let _ = (
            m.plain_address(attr::MAPPED_ADDRESS),
            m.lifetime(),
            m.channel_number(),
            m.requested_transport(),
        );
        let _ = (
            m.requested_address_family(),
            m.additional_address_family(),
            m.even_port(),
            m.reservation_token(),
        );
        let _ = (
            m.dont_fragment(),
            m.data(),
            m.connection_id(),
            m.error_code(),
        );
        let _ = m.unknown_attributes().map(|o| o.map(Iterator::count));
        let _ = m.password_algorithm();
        let _ = m.password_algorithms().map(|o| o.map(Iterator::count));
        let _ = m.unknown_comprehension_required().count();
        let _ = m.verify_integrity(b"key");
    }
    let _ = ChannelData::decode(bytes);
    let _ = frame_len(bytes);
}

#[cfg(test)]
mod tests;
