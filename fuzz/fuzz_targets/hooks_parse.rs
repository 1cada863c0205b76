//! The hook gateway's three adapters on arbitrary bytes: SRS JSON, nginx-rtmp forms (for every hook name),
//! MediaMTX JSON. Any panic is a bug; a parsed request must name an app.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use rtcplane_hook_gateway::adapters::{mediamtx, nginx_rtmp, srs};
    if let Ok(r) = srs::parse(data, "fuzz") {
        let _ = srs::answer(&rtcplane_hook_gateway::Decision::Allow);
        assert!(!r.server_id.is_empty());
    }
    for call in ["on_connect", "on_publish", "on_play", "on_update", "on_done", "on_publish_done", "on_play_done", "on_record_done", "on_disconnect"] {
        let _ = nginx_rtmp::parse(data, call, "fuzz");
    }
    let _ = mediamtx::parse(data, "fuzz");
});
