//! `rtcplane_turn_*` metrics (bounded labels: methods, results, reasons, directions).

use std::time::Duration;

const ALLOCATIONS: &str = "rtcplane_turn_allocations";
const CREATED: &str = "rtcplane_turn_allocations_created_total";
const DELETED: &str = "rtcplane_turn_allocations_deleted_total";
const REQUESTS: &str = "rtcplane_turn_requests_total";
const REQUEST_DURATION: &str = "rtcplane_turn_request_duration_seconds";
const ERRORS: &str = "rtcplane_turn_error_responses_total";
const AUTH_FAILURES: &str = "rtcplane_turn_auth_failures_total";
const PEER_DENIED: &str = "rtcplane_turn_peer_denied_total";
const DROPPED: &str = "rtcplane_turn_packets_dropped_total";
const PACKETS: &str = "rtcplane_turn_relayed_packets_total";
const BYTES: &str = "rtcplane_turn_relayed_bytes_total";
const FAST_PATH: &str = "rtcplane_turn_fast_path_packets_total";
const QUOTA_REJECTIONS: &str = "rtcplane_turn_quota_rejections_total";
const BANDWIDTH_DROPPED: &str = "rtcplane_turn_bandwidth_dropped_bytes_total";
const CALLOUT_ERRORS: &str = "rtcplane_turn_auth_callout_errors_total";
pub(crate) const REDIS_DROPPED: &str = "rtcplane_turn_redis_events_dropped_total";
pub(crate) const REDIS_WRITTEN: &str = "rtcplane_turn_redis_events_written_total";
pub(crate) const REDIS_CONNECTED: &str = "rtcplane_turn_redis_connected";

pub(crate) fn describe() {
    metrics::describe_gauge!(ALLOCATIONS, "Active TURN allocations.");
    metrics::describe_counter!(CREATED, "TURN allocations created.");
    metrics::describe_counter!(
        DELETED,
        "TURN allocations deleted (expired, refreshed to 0, closed)."
    );
    metrics::describe_counter!(
        REQUESTS,
        "STUN/TURN requests answered, by method and result."
    );
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time to answer a STUN/TURN request."
    );
    metrics::describe_counter!(ERRORS, "Error responses sent, by code.");
    metrics::describe_counter!(AUTH_FAILURES, "Authentication failures, by reason.");
    metrics::describe_counter!(
        PEER_DENIED,
        "Permissions or channels refused by the peer policy (403)."
    );
    metrics::describe_counter!(DROPPED, "Packets dropped, by reason.");
    metrics::describe_counter!(
        PACKETS,
        "Packets relayed, by direction (to_peer, to_client)."
    );
    metrics::describe_counter!(BYTES, "Application bytes relayed, by direction.");
    metrics::describe_counter!(
        FAST_PATH,
        "Packets delivered in process from one local allocation to another (no relayed sockets crossed)."
    );
    metrics::describe_counter!(
        QUOTA_REJECTIONS,
        "Allocations refused with 486, by scope (user, total, provider)."
    );
    metrics::describe_counter!(
        BANDWIDTH_DROPPED,
        metrics::Unit::Bytes,
        "Application bytes dropped for exceeding max_bps or user_max_bps (the packets count under packets_dropped_total{reason=bandwidth})."
    );
    metrics::describe_counter!(
        CALLOUT_ERRORS,
        "HTTP auth callouts that failed (timeout, connection error, unexpected status or body)."
    );
    metrics::describe_counter!(
        REDIS_DROPPED,
        "coturn Redis statistics commands dropped (Redis down or the queue full)."
    );
    metrics::describe_counter!(REDIS_WRITTEN, "coturn Redis statistics commands written.");
    metrics::describe_gauge!(
        REDIS_CONNECTED,
        "1 while the coturn Redis statistics connection is up."
    );
    metrics::gauge!(ALLOCATIONS).set(0.0);
}

pub(crate) fn quota_rejected(scope: &'static str) {
    metrics::counter!(QUOTA_REJECTIONS, "scope" => scope).increment(1);
}

pub(crate) fn callout_error() {
    metrics::counter!(CALLOUT_ERRORS).increment(1);
}

/// A packet over a bandwidth limit (handles registered once: this runs per dropped packet).
pub(crate) fn bandwidth_dropped(bytes: usize) {
    static HANDLES: std::sync::OnceLock<(metrics::Counter, metrics::Counter)> =
        std::sync::OnceLock::new();
    let (packets, total) = HANDLES.get_or_init(|| {
        (
            metrics::counter!(DROPPED, "reason" => "bandwidth"),
            metrics::counter!(BANDWIDTH_DROPPED),
        )
    });
    packets.increment(1);
    total.increment(bytes as u64);
}

pub(crate) fn allocation_created(now: usize) {
    metrics::counter!(CREATED).increment(1);
    metrics::gauge!(ALLOCATIONS).set(now as f64);
}

pub(crate) fn allocation_deleted(now: usize) {
    metrics::counter!(DELETED).increment(1);
    metrics::gauge!(ALLOCATIONS).set(now as f64);
}

pub(crate) fn request(method: &'static str, ok: bool, took: Duration) {
    let result = if ok { "success" } else { "error" };
    metrics::counter!(REQUESTS, "method" => method, "result" => result).increment(1);
    metrics::histogram!(REQUEST_DURATION, "method" => method).record(took.as_secs_f64());
}

pub(crate) fn error(code: u16) {
    metrics::counter!(ERRORS, "code" => code.to_string()).increment(1);
}

pub(crate) fn auth_failure(reason: &'static str) {
    metrics::counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

pub(crate) fn peer_denied() {
    metrics::counter!(PEER_DENIED).increment(1);
}

pub(crate) fn dropped(reason: &'static str) {
    metrics::counter!(DROPPED, "reason" => reason).increment(1);
}

/// Per-packet counters, registered once: incrementing a handle is an atomic add, where the `counter!`
/// macro would look the labelled key up in the registry on every packet.
#[derive(Clone)]
pub(crate) struct DataPath {
    to_peer_packets: metrics::Counter,
    to_peer_bytes: metrics::Counter,
    to_client_packets: metrics::Counter,
    to_client_bytes: metrics::Counter,
    fast_path: metrics::Counter,
}

impl DataPath {
    pub(crate) fn new() -> Self {
        Self {
            to_peer_packets: metrics::counter!(PACKETS, "direction" => "to_peer"),
            to_peer_bytes: metrics::counter!(BYTES, "direction" => "to_peer"),
            to_client_packets: metrics::counter!(PACKETS, "direction" => "to_client"),
            to_client_bytes: metrics::counter!(BYTES, "direction" => "to_client"),
            fast_path: metrics::counter!(FAST_PATH),
        }
    }

    pub(crate) fn to_peer(&self, bytes: usize) {
        self.to_peer_packets.increment(1);
        self.to_peer_bytes.increment(bytes as u64);
    }

    pub(crate) fn fast_path(&self) {
        self.fast_path.increment(1);
    }

    pub(crate) fn to_client(&self, bytes: usize) {
        self.to_client_packets.increment(1);
        self.to_client_bytes.increment(bytes as u64);
    }
}
