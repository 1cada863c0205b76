//! ICE servers for the join answer: an interface the binary implements (from the TURN relay's REST
//! secret), so this crate needs no TURN code.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// One entry of WebRTC's `iceServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// `turn:` / `turns:` / `stun:` URIs.
    pub urls: Vec<String>,
    /// TURN REST username (`<expiry>:<user>`).
    pub username: String,
    /// TURN REST password.
    pub credential: String,
}

/// Given a user id (the room connection id) and a lifetime, the ICE servers to hand out; empty for none.
pub type IceServers = Arc<dyn Fn(&str, Duration) -> Vec<IceServer> + Send + Sync>;
