//! The three dialects: each reads its request into a [`crate::model::HookRequest`] (pure functions over bytes,
//! no I/O) and writes a [`crate::model::Decision`] back the way its media server understands.

pub mod mediamtx;
pub mod nginx_rtmp;
pub mod srs;
