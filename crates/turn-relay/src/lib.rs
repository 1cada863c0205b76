//! rtcplane's TURN relay subsystem: a coturn replacement speaking RFC 8656 TURN over RFC 8489 STUN.
//!
//! What is here now is the protocol core we own: [`stun`], a pure codec (bytes in, values out, no I/O, no
//! allocation while decoding) for every STUN/TURN method and attribute, message integrity (HMAC-SHA1 and
//! HMAC-SHA256, compared in constant time), fingerprints, long-term credential keys, ChannelData and stream
//! framing. The server (listeners, authentication, allocations, relay loops) is built on it next; until then
//! this crate is not wired into the binary and `[turn] enabled` stays false.

pub mod stun;
