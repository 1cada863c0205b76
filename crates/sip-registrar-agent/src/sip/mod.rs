//! SIP for a registering UAC: [`message`] (REGISTER out, responses in) and [`digest`] are pure functions
//! over bytes and strings, fuzzed; [`transport`] and [`resolve`] do the I/O.

pub mod digest;
pub mod message;
pub mod resolve;
pub mod transport;
pub mod uri;
