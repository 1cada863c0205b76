//! ChannelData messages (RFC 8656 §12.4) and stream framing for TCP/TLS (RFC 8656 §12.5).

use super::message::DecodeError;
use super::{HEADER_LEN, MAGIC_COOKIE};

/// A ChannelData message: a 4-byte header (channel, length) and the application data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number, 0x4000–0x7FFF (see [`CHANNELS`]).
    pub channel: u16,
    /// The data (without padding).
    pub data: &'a [u8],
}

/// Channel numbers accepted: RFC 5766's 0x4000–0x7FFF. RFC 8656 §12 narrowed new channels to 0x4000–0x4FFF,
/// but deployed clients (coturn's own tools among them) still pick numbers up to 0x7FFF, and coturn accepts
/// them; refusing them would break clients an operator cannot change.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

impl<'a> ChannelData<'a> {
    /// Whether a message starts like ChannelData (first two bits `01`; STUN's are `00`), before decoding.
    pub fn looks_like(buf: &[u8]) -> bool {
        buf.first().is_some_and(|b| b >> 6 == 0b01)
    }

    /// Decodes a ChannelData message; over UDP the datagram may carry padding after the data.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < 4 {
            return Err(DecodeError::TooShort);
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        if !CHANNELS.contains(&channel) {
            return Err(DecodeError::NotChannelData);
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let data = buf.get(4..4 + len).ok_or(DecodeError::Truncated)?;
        Ok(Self { channel, data })
    }

    /// The 4-byte header for `len` bytes of data on `channel`.
    pub fn header(channel: u16, len: u16) -> [u8; 4] {
        let c = channel.to_be_bytes();
        let l = len.to_be_bytes();
        [c[0], c[1], l[0], l[1]]
    }

    /// Writes the message into `out` (cleared first); `pad` adds the zero padding streams require.
    pub fn encode(
        channel: u16,
        data: &[u8],
        pad: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        let len = u16::try_from(data.len()).map_err(|_| DecodeError::Truncated)?;
        out.clear();
        out.extend_from_slice(&Self::header(channel, len));
        out.extend_from_slice(data);
        if pad {
            out.resize(4 + ((data.len() + 3) & !3), 0);
        }
        Ok(())
    }
}

/// The length of the first message in a stream buffer: `Ok(None)` until 4 bytes are there; STUN messages
/// are `20 + length`, ChannelData `4 + length` rounded up to 4 (RFC 8656 §12.5). Anything else cannot be
/// framed and the connection should be closed.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    match buf[0] >> 6 {
        0b00 => {
            if len % 4 != 0 {
                return Err(DecodeError::BadLength);
            }
            if buf.len() >= 8
                && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE
            {
                return Err(DecodeError::NotStun);
            }
            Ok(Some(HEADER_LEN + len))
        }
        0b01 => {
            let channel = u16::from_be_bytes([buf[0], buf[1]]);
            if !CHANNELS.contains(&channel) {
                return Err(DecodeError::NotChannelData);
            }
            Ok(Some(4 + ((len + 3) & !3)))
        }
        _ => Err(DecodeError::NotStun),
    }
}
