//! The STUN/TURN decoder on arbitrary bytes: message, every attribute accessor, integrity, ChannelData and
//! stream framing. Any panic is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rtcplane_turn_relay::stun::exercise_decoder(data);
});
